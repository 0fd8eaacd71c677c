//! Shared harness code for Herald's benchmarks.
//!
//! - [`ring`]: the ring fan-out workloads (1 publisher → N subscribers, 64 B
//!   messages), run identically against Herald's ring and its peers
//!   (`tokio::sync::broadcast`, `bus`, `disruptor`, `crossbeam-channel`).
//! - [`report`]: machine description, peer versions, medians and the
//!   number formatting used by the markdown tables; readers of a process's
//!   CPU time, memory and descriptors in `/proc`.
//! - [`load`]: the server benchmarks' load generator (subscriber client
//!   threads, a publisher, latency stamping), for Herald and nats-server.
//! - [`ws`]: the load generators' minimal WebSocket client and free ports.

pub mod load;
pub mod report;
pub mod ring;
pub mod ws;
