//! Wire formats: HTTP/1.1 request parsing and responses.

pub(crate) mod http;
