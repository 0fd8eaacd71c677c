//! The worker's bound on the pattern trie counts every stream, live or
//! catching up, and frees what a removed stream held.

use herald_core::broker::{Filter, StartAt};
use herald_core::{Broker, BrokerConfig};

use super::{Encoding, Router, MAX_WORKER_PATTERN_TOKENS};

#[test]
fn the_worker_refuses_patterns_past_its_token_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.log.prefault = false;
    let broker = Broker::open(config).unwrap();
    let mut router = Router::new(broker.clone(), 1 << 20).unwrap();
    // 32 patterns of 128 tokens (255 bytes): 4096 tokens a stream.
    let first = ('a'..='z').chain('A'..='F');
    let long: Vec<String> = first
        .map(|c| format!("{c}.{}.*", ["a"; 126].join(".")))
        .collect();
    assert!(long.iter().all(|p| p.len() == 255));
    let refs: Vec<&str> = long.iter().map(String::as_str).collect();
    let wide = Filter::patterns(&refs).unwrap();
    let plain = Filter::topic("a").unwrap();
    let mut ids = Vec::new();
    while router.admits(&wide) {
        let sub = broker.subscribe(wide.clone(), StartAt::Now).unwrap();
        ids.push(router.add(0, sub, Encoding::ws("s"), 0));
    }
    assert_eq!(ids.len(), MAX_WORKER_PATTERN_TOKENS / 4096);
    assert_eq!(router.wildcards(ids[0]), 32);
    // Single-topic streams are not in the trie.
    assert!(router.admits(&plain));
    router.remove(ids.pop().unwrap());
    assert!(router.admits(&wide));
}
