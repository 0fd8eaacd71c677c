//! Idempotent publishing: a key repeated within the window stores nothing
//! and gets the first publish's sequences, across a restart and between
//! racing threads; scopes keep keys apart; the window ends.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use herald_core::broker::{BatchEvent, BrokerError, Once, PublishOptions, Published};
use herald_core::log::Durability;
use herald_core::{Broker, BrokerConfig};

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = BrokerConfig::new(dir);
    c.ring_capacity = 1 << 16;
    c.max_payload = 4096;
    c.log.segment_size = 1 << 16;
    c.log.durability = Durability::Never;
    c.log.prefault = false;
    c
}

fn publish(
    broker: &Broker,
    scope: &str,
    key: &str,
    topics: &[&str],
) -> Result<(Once, Vec<Published>), BrokerError> {
    let publishers: Vec<_> = topics
        .iter()
        .map(|t| broker.publisher(t).unwrap())
        .collect();
    let events: Vec<_> = publishers
        .iter()
        .map(|publisher| BatchEvent {
            publisher,
            event_type: "t",
            payload: b"{}",
            options: PublishOptions::default(),
        })
        .collect();
    let mut out = Vec::new();
    let once = broker.publish_batch_once(scope, key, &events, &mut out)?;
    Ok((once, out))
}

fn head(broker: &Broker) -> u64 {
    broker.publish("other", "t", b"1").unwrap().seq
}

#[test]
fn a_repeated_key_stores_nothing_and_gets_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let (once, first) = publish(&broker, "acme", "k-1", &["a", "b", "a"]).unwrap();
    assert_eq!(once, Once::Stored);
    assert_eq!(
        first
            .iter()
            .map(|p| (p.seq, p.topic_seq))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 1), (3, 2)]
    );
    // A retry, even with other events, is answered from the window.
    let (once, again) = publish(&broker, "acme", "k-1", &["c"]).unwrap();
    assert_eq!((once, &again), (Once::Duplicate, &first));
    assert_eq!(head(&broker), 4, "the retry stored nothing");
    // The same key in another scope, and another key, are new publishes.
    assert_eq!(
        publish(&broker, "beta", "k-1", &["a"]).unwrap().0,
        Once::Stored
    );
    assert_eq!(
        publish(&broker, "acme", "k-2", &["a"]).unwrap().0,
        Once::Stored
    );
    assert_eq!(head(&broker), 7);
    let m = broker.metrics();
    // Five events published here and two by `head`; the retry is none.
    assert_eq!((m.duplicates, m.published), (1, 7));
}

#[test]
fn the_window_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let (_, first) = publish(&broker, "", "before-restart", &["a", "b"]).unwrap();
    publish(&broker, "", "other", &["a"]).unwrap();
    broker.close().unwrap();

    let broker = Broker::open(config(dir.path())).unwrap();
    let (once, again) = publish(&broker, "", "before-restart", &["a", "b"]).unwrap();
    assert_eq!((once, again), (Once::Duplicate, first));
    assert_eq!(head(&broker), 4);
}

/// Zeroes the log's last record, as a crash that lost it leaves the file.
fn cut_last_record(dir: &std::path::Path) {
    use herald_core::log::format::{SEG_HEADER_LEN, SEG_MAGIC};
    let mut segments: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.starts_with(&SEG_MAGIC)))
        .collect();
    segments.sort();
    let path = segments.last().expect("a segment");
    let mut bytes = std::fs::read(path).unwrap();
    let (mut off, mut last) = (SEG_HEADER_LEN, None);
    while let Ok(r) = herald_core::fuzzing::check_record(&bytes, off) {
        last = Some(off);
        off += r.len.div_ceil(8) * 8;
    }
    let last = last.expect("a record");
    bytes[last..off].fill(0);
    std::fs::write(path, bytes).unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

#[test]
fn a_batch_whose_tail_a_crash_lost_is_not_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    publish(&broker, "", "torn", &["a", "a", "a"]).unwrap();
    broker.close().unwrap();
    cut_last_record(dir.path());
    // The lost event's sequence goes to the next publish, without a key.
    let broker = Broker::open(config(dir.path())).unwrap();
    assert_eq!(head(&broker), 3);
    broker.close().unwrap();
    // Two records of the batch and one more after them are not the batch:
    // a retry stores it.
    let broker = Broker::open(config(dir.path())).unwrap();
    let (once, p) = publish(&broker, "", "torn", &["a", "a", "a"]).unwrap();
    assert_eq!((once, p[0].seq), (Once::Stored, 4));
}

#[test]
fn with_synced_durability_a_retry_is_answered_once_the_first_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.log.durability = Durability::Always;
    let broker = Broker::open(c).unwrap();
    let (_, first) = publish(&broker, "", "synced", &["a", "b"]).unwrap();
    let (once, again) = publish(&broker, "", "synced", &["a", "b"]).unwrap();
    assert_eq!((once, again), (Once::Duplicate, first));
}

#[test]
fn a_key_is_new_again_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.idempotency_window = Duration::from_millis(200);
    let broker = Broker::open(c).unwrap();
    publish(&broker, "", "k", &["a"]).unwrap();
    assert_eq!(
        publish(&broker, "", "k", &["a"]).unwrap().0,
        Once::Duplicate
    );
    thread::sleep(Duration::from_millis(300));
    let (once, p) = publish(&broker, "", "k", &["a"]).unwrap();
    assert_eq!((once, p[0].topic_seq), (Once::Stored, 2));
}

#[test]
fn racing_retries_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    for round in 0..50 {
        let key = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(4));
        let answers: Vec<_> = (0..4)
            .map(|_| {
                let (broker, barrier, key) = (broker.clone(), barrier.clone(), key.clone());
                thread::spawn(move || {
                    barrier.wait();
                    publish(&broker, "", &key, &["race"]).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let stored = answers.iter().filter(|(o, _)| *o == Once::Stored).count();
        assert_eq!(stored, 1, "round {round}");
        assert!(answers.iter().all(|(_, p)| *p == answers[0].1));
    }
    assert_eq!(head(&broker), 51);
}

#[test]
fn bad_keys_and_scopes_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    for (scope, key) in [
        ("", ""),
        ("", "with space"),
        ("", &*"k".repeat(129)),
        (&*"s".repeat(256), "k"),
    ] {
        let e = publish(&broker, scope, key, &["a"]).unwrap_err();
        assert!(
            matches!(e, BrokerError::InvalidIdempotencyKey(_)),
            "{scope:?}/{key:?}: {e}"
        );
    }
    assert_eq!(head(&broker), 1);
}

#[test]
fn keyed_events_read_back_unchanged_and_the_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    publish(&broker, "acme", "k", &["a", "a"]).unwrap();
    broker.close().unwrap();
    let report = herald_core::log::verify_dir(dir.path().join("log")).unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
    assert_eq!(report.records, 2);
    let broker = Broker::open(config(dir.path())).unwrap();
    let mut sub = broker
        .subscribe(
            herald_core::Filter::topic("a").unwrap(),
            herald_core::StartAt::TopicSeq(1),
        )
        .unwrap();
    for topic_seq in 1..=2 {
        match sub.try_next().unwrap() {
            Some(herald_core::Delivery::Event(e)) => {
                assert_eq!(
                    (e.topic_seq, &e.payload[..], e.correlation),
                    (topic_seq, &b"{}"[..], None)
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
