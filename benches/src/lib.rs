//! Shared harness code for Herald's benchmarks.
