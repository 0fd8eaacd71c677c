//! Connections and I/O: the worker event loops, each connection's state
//! and unsent output, WebSocket framing, TLS, connection admission.

pub(crate) mod connection;
pub(crate) mod limits;
pub(crate) mod output;
pub(crate) mod tls;
pub(crate) mod websocket;
pub(crate) mod worker;
