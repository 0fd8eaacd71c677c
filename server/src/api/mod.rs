//! Client requests: authentication, origins, the HTTP endpoints, the
//! WebSocket messages and presence.

pub(crate) mod auth;
pub(crate) mod origins;
pub(crate) mod presence;
pub(crate) mod routes;
pub(crate) mod ws;
