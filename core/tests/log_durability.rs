//! Durability policies: `Always` shares syncs between concurrent appenders
//! (group commit), `Interval` syncs in the background, `Never` only on request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::log::{Durability, Log, LogConfig, RecordRef};

fn open(dir: &std::path::Path, durability: Durability) -> Log {
    Log::open(
        dir,
        LogConfig {
            segment_size: 1 << 20,
            durability,
            ..LogConfig::default()
        },
    )
    .unwrap()
    .0
}

#[test]
fn concurrent_appenders_under_always_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Durability::Always);
    let order = Mutex::new(());
    let acked = AtomicU64::new(0);
    let per_thread = 150;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..per_thread {
                    let info = {
                        let _g = order.lock().unwrap();
                        let seq = log.next_seq();
                        log.append_nowait(&RecordRef {
                            seq,
                            topic_id: 0,
                            topic_seq: seq,
                            timestamp_ns: 0,
                            origin: 0,
                            event_type: b"e",
                            payload: &[1; 100],
                            key: b"",
                        })
                        .unwrap()
                    };
                    log.wait_durable(info.seq).unwrap();
                    assert!(log.stats().durable_seq >= info.seq);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let stats = log.stats();
    let appends = acked.load(Ordering::Relaxed);
    assert_eq!(appends, 4 * per_thread);
    assert_eq!(stats.durable_seq, appends);
    assert!(
        stats.syncs < appends,
        "group commit: {} syncs for {appends} appends",
        stats.syncs
    );
    eprintln!("{} syncs for {appends} appends", stats.syncs);
}

#[test]
fn single_appender_under_always_is_durable_on_return() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Durability::Always);
    for _ in 0..20 {
        let seq = log.next_seq();
        log.append(&RecordRef {
            seq,
            topic_id: 0,
            topic_seq: seq,
            timestamp_ns: 0,
            origin: 0,
            event_type: b"",
            payload: b"x",
            key: b"",
        })
        .unwrap();
        assert_eq!(log.stats().durable_seq, seq);
    }
}

#[test]
fn interval_flusher_makes_appends_durable_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(
        dir.path(),
        Durability::Interval(Duration::from_millis(5)),
    ));
    for _ in 0..100 {
        let seq = log.next_seq();
        log.append(&RecordRef {
            seq,
            topic_id: 0,
            topic_seq: seq,
            timestamp_ns: 0,
            origin: 0,
            event_type: b"",
            payload: b"x",
            key: b"",
        })
        .unwrap();
    }
    let t = Instant::now();
    while log.stats().durable_seq < 100 {
        assert!(t.elapsed() < Duration::from_secs(5), "flusher never synced");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn never_syncs_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Durability::Never);
    for _ in 0..100 {
        let seq = log.next_seq();
        log.append(&RecordRef {
            seq,
            topic_id: 0,
            topic_seq: seq,
            timestamp_ns: 0,
            origin: 0,
            event_type: b"",
            payload: b"x",
            key: b"",
        })
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(log.stats().durable_seq, 0);
    log.sync().unwrap();
    assert_eq!(log.stats().durable_seq, 100);
}
