//! Client requests. Every transport decodes what a client asks into one
//! typed operation ([`ops`]), validated once, executed once ([`exec`])
//! within the client's grants ([`auth`]), refused with one error type
//! ([`error`]), after the configured schemas ([`schema`]) have checked
//! published payloads and the rate limits ([`rate`]) have let it through. HTTP ([`http`]) fills operations from the path, the query
//! and the body; WebSocket ([`ws`]) from its JSON messages; STOMP over
//! WebSocket ([`stomp`]) from its frames' headers and bodies.

pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod exec;
mod fast_publish;
pub(crate) mod http;
pub(crate) mod ops;
pub(crate) mod origins;
pub(crate) mod rate;
pub(crate) mod schema;
pub(crate) mod stomp;
pub(crate) mod tickets;
pub(crate) mod ws;
