//! Wire formats: HTTP/1.1 request parsing and response values.

pub(crate) mod http;
