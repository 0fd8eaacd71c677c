//! Wire formats: HTTP/1.1 request parsing and response values; STOMP frames.

pub(crate) mod http;
pub(crate) mod stomp;
