//! Retention with an injected clock: by age, by bytes, by record count;
//! segments pinned by readers and retention floors are kept; forced deletion
//! gives readers an explicit gap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_core::log::{
    Clock, Durability, Log, LogConfig, LogItem, ReadItem, RecordRef, Retention,
};

#[derive(Debug, Default)]
struct ManualClock(AtomicU64);
impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

const SEG: u64 = 4096;

fn open(dir: &std::path::Path, retention: Retention, clock: Arc<ManualClock>) -> Log {
    let cfg = LogConfig {
        segment_size: SEG,
        durability: Durability::Never,
        retention,
        clock,
        ..LogConfig::default()
    };
    Log::open(dir, cfg).unwrap().0
}

/// Appends `n` records of ~100 bytes (two topics) stamped with the clock's time.
fn fill(log: &Log, clock: &ManualClock, n: u64) {
    for _ in 0..n {
        let seq = log.next_seq();
        let p = [seq as u8; 60];
        log.append(&RecordRef {
            seq,
            topic_id: seq % 2,
            topic_seq: seq,
            timestamp_ns: clock.now_ns(),
            origin: 0,
            event_type: b"e",
            payload: &p,
            key: b"",
        })
        .unwrap();
    }
}

fn segment_files(log: &Log) -> usize {
    let files = std::fs::read_dir(log.dir()).unwrap();
    files
        .filter(|f| f.as_ref().unwrap().path().extension() == Some("seg".as_ref()))
        .count()
}

const SECOND: u64 = 1_000_000_000;

/// A log whose records older than `max_age_secs` go, with a clock at 1000 s.
fn aged_log(dir: &std::path::Path, max_age_secs: u64) -> (Log, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    clock.0.store(1000 * SECOND, Ordering::SeqCst);
    let retention = Retention {
        max_age: Some(Duration::from_secs(max_age_secs)),
        ..Default::default()
    };
    (open(dir, retention, clock.clone()), clock)
}

#[test]
fn ttl_deletes_segments_whose_newest_record_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = aged_log(dir.path(), 60);
    fill(&log, &clock, 200); // several segments at t=1000s
    let before = segment_files(&log);
    assert!(before >= 4);
    clock.0.store(1030 * SECOND, Ordering::SeqCst);
    assert!(
        log.enforce_retention().unwrap().deleted.is_empty(),
        "30 s old: kept"
    );
    fill(&log, &clock, 100); // newer records at t=1030s
    clock.0.store(1070 * SECOND, Ordering::SeqCst);
    let r = log.enforce_retention().unwrap();
    assert!(!r.deleted.is_empty());
    // Every record stamped 1000 s is gone (its segment is older than 60 s) unless it
    // shares a segment with a newer record; nothing stamped 1030 s is gone.
    let first = log.first_seq();
    assert!(first > 150 && first <= 201, "first_seq {first}");
    // A reader from the start gets an explicit gap, then the records.
    let mut rd = log.reader_from_seq(1).unwrap();
    assert_eq!(
        rd.next().map(Result::unwrap),
        Some(LogItem::Gap {
            from: 1,
            to: first - 1
        })
    );
    assert!(matches!(rd.next(), Some(Ok(LogItem::Record(r))) if r.seq == first));
    // From time: records before the cut may have been that recent → gap first.
    let mut rt = log.reader_from_time(0).unwrap();
    assert_eq!(
        rt.next().map(Result::unwrap),
        Some(LogItem::Gap {
            from: 1,
            to: first - 1
        })
    );
}

#[test]
fn expire_on_a_timer_deletes_old_records_of_a_log_that_does_not_roll() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = aged_log(dir.path(), 80);
    // A few records, far from filling the segment: no roll will come.
    fill(&log, &clock, 5);
    clock.0.store(1005 * SECOND, Ordering::SeqCst);
    let r = log.expire().unwrap();
    assert!(r.deleted.is_empty(), "5 s old: not sealed, not deleted");
    assert_eq!(segment_files(&log), 1);
    // Older than max_age / 8 (10 s): the tail is sealed, a new one begins.
    clock.0.store(1011 * SECOND, Ordering::SeqCst);
    assert!(log.expire().unwrap().deleted.is_empty(), "sealed, not old");
    assert_eq!(segment_files(&log), 2);
    fill(&log, &clock, 3); // t=1011 s, in the new tail
                           // The first five pass max_age: deleted without any append or roll.
    clock.0.store(1081 * SECOND, Ordering::SeqCst);
    let r = log.expire().unwrap();
    assert_eq!(r.deleted_records, 5);
    assert_eq!(log.first_seq(), 6);
    // An empty tail is never sealed again: an idle log keeps one segment.
    clock.0.store(2000 * SECOND, Ordering::SeqCst);
    log.expire().unwrap();
    log.expire().unwrap();
    assert_eq!(log.first_seq(), 9);
    assert_eq!(segment_files(&log), 1);
    assert_eq!(log.next_seq(), 9);
}

#[test]
fn expire_does_not_seal_a_tail_that_a_floor_still_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = aged_log(dir.path(), 80);
    fill(&log, &clock, 5);
    log.set_retention_floor("consumer", 3);
    clock.0.store(1020 * SECOND, Ordering::SeqCst);
    log.expire().unwrap();
    assert_eq!(segment_files(&log), 1, "pinned: no new segment");
    log.set_retention_floor("consumer", 6);
    log.expire().unwrap();
    assert_eq!(segment_files(&log), 2, "no longer needed: sealed");
}

#[test]
fn byte_limit_keeps_at_least_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let log = open(
        dir.path(),
        Retention {
            max_bytes: Some(4 * SEG),
            ..Default::default()
        },
        clock.clone(),
    );
    fill(&log, &clock, 2000); // retention runs on every roll
    let n = log.stats().segments;
    assert!((4..=5).contains(&n), "{n} segments");
    // Each roll's pass removes its files in the background; closing the
    // log waits for them.
    drop(log);
    let retention = Retention {
        max_bytes: Some(4 * SEG),
        ..Default::default()
    };
    let log = open(dir.path(), retention, clock.clone());
    assert_eq!(segment_files(&log), n);
    assert!(log.first_seq() > 1);
    let kept: u64 = log.reader_from_seq(log.first_seq()).unwrap().count() as u64;
    assert_eq!(kept, log.next_seq() - log.first_seq());
}

#[test]
fn record_limit_keeps_at_least_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let log = open(
        dir.path(),
        Retention {
            max_records: Some(300),
            ..Default::default()
        },
        clock.clone(),
    );
    fill(&log, &clock, 3000);
    let kept = log.next_seq() - log.first_seq();
    // Retention runs on each roll: at most one segment beyond the limit plus the tail (33 records each).
    assert!((300..=300 + 2 * 34).contains(&kept), "kept {kept}");
}

#[test]
fn segments_pinned_by_a_reader_or_a_floor_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let log = open(
        dir.path(),
        Retention {
            max_records: Some(10),
            ..Default::default()
        },
        clock.clone(),
    );
    let reader = log.reader_from_seq(1).unwrap();
    fill(&log, &clock, 500);
    assert_eq!(log.first_seq(), 1, "a reader at seq 1 pins everything");
    let r = log.enforce_retention().unwrap();
    assert!(r.blocked_by_pin && r.deleted.is_empty());
    log.set_retention_floor("consumer-a", 250);
    drop(reader);
    let r = log.enforce_retention().unwrap();
    assert!(!r.deleted.is_empty() && r.blocked_by_pin);
    assert!(
        log.first_seq() <= 250 && log.first_seq() > 1,
        "floor keeps seq 250: first {}",
        log.first_seq()
    );
    assert_eq!(log.clear_retention_floor("consumer-a"), Some(250));
    log.enforce_retention().unwrap();
    assert!(log.first_seq() > 250);
}

#[test]
fn forced_deletion_reports_gaps_to_readers_and_floors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let ret = Retention {
        max_records: Some(10),
        override_pins: true,
        ..Default::default()
    };
    let log = open(dir.path(), ret, clock.clone());
    let mut seq_reader = log.reader_from_seq(1).unwrap();
    let mut topic_reader = log.reader_from_topic(1, 1);
    log.set_retention_floor("consumer-b", 1);
    fill(&log, &clock, 500);
    let r = log.enforce_retention().unwrap();
    let first = log.first_seq();
    assert!(first > 400, "forced deletion ignores pins: first {first}");
    let _ = r; // deletions happened on the rolls; check the last report names nobody new
               // The global reader: an explicit gap, then the records, none missing.
    let mut items = Vec::new();
    while let Some(i) = seq_reader.next_item() {
        items.push(i.unwrap().to_owned_item());
    }
    assert_eq!(
        items[0],
        LogItem::Gap {
            from: 1,
            to: first - 1
        }
    );
    assert_eq!(items.len() as u64, 1 + 501 - first);
    // The topic reader (topic 1 = odd seqs, topic_seq = seq): a gap in topic sequences.
    match topic_reader.next_item() {
        Some(Ok(ReadItem::Gap { from, to })) => {
            assert_eq!(from, 1);
            assert!(to >= first - 2 && to < first, "to {to}, first {first}");
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    match topic_reader.next_item() {
        Some(Ok(ReadItem::Record(v))) => assert!(v.seq >= first && v.topic_id == 1),
        other => panic!("expected a record, got {other:?}"),
    }
}

#[test]
fn forced_deletion_names_the_overridden_holders() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    // No policy while filling, so the deletion happens in the explicit call.
    let log = open(dir.path(), Retention::default(), clock.clone());
    fill(&log, &clock, 300);
    drop(log);
    let ret = Retention {
        max_records: Some(10),
        override_pins: true,
        ..Default::default()
    };
    let log = open(dir.path(), ret, clock.clone());
    log.set_retention_floor("consumer-c", 5);
    let r = log.enforce_retention().unwrap();
    assert_eq!(r.forced.len(), 1, "{r:?}");
    assert_eq!(r.forced[0].holder, "floor:consumer-c");
    assert_eq!((r.forced[0].from, r.forced[0].to), (5, r.first_seq - 1));
}

#[test]
fn emptied_topics_keep_their_high_water_mark_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let ret = Retention {
        max_records: Some(10),
        ..Default::default()
    };
    let cfg = || LogConfig {
        segment_size: SEG,
        durability: Durability::Never,
        retention: ret,
        clock: clock.clone(),
        ..LogConfig::default()
    };
    {
        let (log, _) = Log::open(dir.path(), cfg()).unwrap();
        // Topic 77 gets 5 records first, then only topic 1 traffic.
        for (topic_id, records) in [(77, 5u64), (1, 400)] {
            for topic_seq in 1..=records {
                log.append(&RecordRef {
                    seq: log.next_seq(),
                    topic_id,
                    topic_seq,
                    timestamp_ns: 0,
                    origin: 0,
                    event_type: b"e",
                    payload: &[0; 60],
                    key: b"",
                })
                .unwrap();
            }
        }
        assert!(log.first_seq() > 5, "topic 77's records were deleted");
        assert_eq!(log.last_topic_seq(77), Some(5));
    }
    assert!(dir.path().join("topics.hwm").exists());
    let (log, _) = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(
        log.last_topic_seq(77),
        Some(5),
        "high-water mark survives the restart"
    );
    let seq = log.next_seq();
    let stale = RecordRef {
        seq,
        topic_id: 77,
        topic_seq: 3,
        timestamp_ns: 0,
        origin: 0,
        event_type: b"e",
        payload: b"",
        key: b"",
    };
    assert!(matches!(
        log.append(&stale),
        Err(herald_core::log::LogError::TopicSequenceRegression { last: 5, .. })
    ));
    let mut r = log.reader_from_topic(77, 1);
    assert_eq!(
        r.next().map(Result::unwrap),
        Some(LogItem::Gap { from: 1, to: 5 })
    );
    log.append(&RecordRef {
        topic_seq: 6,
        ..stale
    })
    .unwrap();
    assert!(matches!(r.next(), Some(Ok(LogItem::Record(rec))) if rec.topic_seq == 6));
    assert!(herald_core::log::verify_dir(dir.path()).unwrap().is_clean());
    // A damaged high-water-mark file is corruption; repair drops it.
    drop(r);
    drop(log);
    let p = dir.path().join("topics.hwm");
    let mut b = std::fs::read(&p).unwrap();
    b[17] ^= 1;
    std::fs::write(&p, b).unwrap();
    assert!(matches!(
        Log::open(dir.path(), cfg()),
        Err(herald_core::log::LogError::Corrupt { .. })
    ));
    assert!(!herald_core::log::verify_dir(dir.path()).unwrap().is_clean());
    let (_log, report) = Log::open(
        dir.path(),
        LogConfig {
            repair: true,
            ..cfg()
        },
    )
    .unwrap();
    assert!(report.removed_files.contains(&p));
}

#[test]
fn a_pin_keeps_segments_only_up_to_the_maximum_pinned_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let log = open(dir.path(), Retention::default(), clock.clone());
    fill(&log, &clock, 300); // written at time 0
    clock.0.store(100 * 1_000_000_000, Ordering::SeqCst);
    fill(&log, &clock, 300); // written at 100 s
    drop(log);
    let ret = Retention {
        max_records: Some(10),
        max_pinned_age: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    };
    let log = open(dir.path(), ret, clock.clone());
    log.set_retention_floor("stalled-consumer", 5);
    let r = log.enforce_retention().unwrap();
    // The segments older than 60 s go despite the floor, with a named gap;
    // the younger ones it still needs stay.
    assert!(r.blocked_by_pin, "{r:?}");
    assert_eq!(r.forced.len(), 1, "{r:?}");
    assert_eq!(r.forced[0].holder, "floor:stalled-consumer");
    assert_eq!(r.forced[0].from, 5);
    assert!(r.first_seq > 250 && r.first_seq <= 301, "{r:?}");
}
