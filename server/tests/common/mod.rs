//! Helpers shared by the server's end-to-end tests.

use herald_server::ServerConfig;

/// A small server for tests: an ephemeral loopback port, a small ring and
/// log in `dir`, 8 KiB bodies.
pub(crate) fn test_config(dir: &std::path::Path, workers: usize) -> ServerConfig {
    let mut config = ServerConfig::new();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.workers = workers;
    config.broker = herald_core::BrokerConfig::new(dir);
    config.broker.ring_capacity = 1 << 16;
    config.broker.log.segment_size = 1 << 20;
    config.broker.log.prefault = false;
    config.max_body = 8192;
    config
}
