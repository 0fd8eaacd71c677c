//! Helpers shared by integration tests.
pub(crate) mod counting_alloc;
