//! Connections and I/O: the worker event loops, connection admission, and
//! each connection's unsent output.

pub(crate) mod limits;
pub(crate) mod output;
pub(crate) mod worker;
