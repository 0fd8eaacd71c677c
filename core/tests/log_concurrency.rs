//! Readers racing the appender while segments roll and retention deletes them
//! (pins overridden): every reader sees records in order, each exactly once,
//! or an explicit gap, and never an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use herald_core::log::{Durability, Log, LogConfig, ReadItem, RecordRef, Retention};

#[test]
fn readers_race_appends_rolls_and_forced_retention() {
    let dir = tempfile::tempdir().unwrap();
    let ret = Retention {
        max_records: Some(200),
        override_pins: true,
        ..Default::default()
    };
    let cfg = LogConfig {
        segment_size: 4096,
        durability: Durability::Never,
        retention: ret,
        ..LogConfig::default()
    };
    let (log, _) = Log::open(dir.path(), cfg).unwrap();
    let log = Arc::new(log);
    let total: u64 = if std::env::var("HERALD_LONG").is_ok_and(|v| v == "1") {
        2_000_000
    } else {
        100_000
    };
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        // A global reader: contiguous sequences, gaps allowed only forward.
        let (l, d) = (log.clone(), done.clone());
        s.spawn(move || {
            let mut r = l.reader_from_seq(1).unwrap();
            let mut next = 1u64;
            let (mut records, mut gaps) = (0u64, 0u64);
            loop {
                match r.next_item() {
                    Some(Ok(ReadItem::Record(v))) => {
                        assert_eq!(v.seq, next, "out of order");
                        assert_eq!(v.payload, &v.seq.to_le_bytes()[..]);
                        next += 1;
                        records += 1;
                    }
                    Some(Ok(ReadItem::Gap { from, to })) => {
                        assert_eq!(from, next, "gap must start where the reader was");
                        assert!(to >= from);
                        next = to + 1;
                        gaps += 1;
                    }
                    Some(Err(e)) => panic!("read error: {e}"),
                    None => {
                        if d.load(Ordering::Acquire) && next == l.next_seq() {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            }
            eprintln!("global reader: {records} records, {gaps} gaps");
        });
        // A topic reader: increasing topic sequences, gaps allowed.
        let (l, d) = (log.clone(), done.clone());
        s.spawn(move || {
            let mut r = l.reader_from_topic(1, 1);
            let mut next = 1u64;
            loop {
                match r.next_item() {
                    Some(Ok(ReadItem::Record(v))) => {
                        assert_eq!(v.topic_id, 1);
                        assert_eq!(v.topic_seq, next, "topic out of order");
                        next += 1;
                    }
                    Some(Ok(ReadItem::Gap { from, to })) => {
                        assert_eq!(from, next);
                        next = to + 1;
                    }
                    Some(Err(e)) => panic!("topic read error: {e}"),
                    None => {
                        if d.load(Ordering::Acquire) && Some(next - 1) == l.last_topic_seq(1) {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            }
        });
        // The appender: topics 0..3, topic_seq = per-topic counter.
        let mut tseq = [0u64; 4];
        for _ in 0..total {
            let seq = log.next_seq();
            let t = (seq % 4) as usize;
            tseq[t] += 1;
            log.append(&RecordRef {
                seq,
                topic_id: t as u64,
                topic_seq: tseq[t],
                timestamp_ns: seq,
                origin: 0,
                event_type: b"c",
                payload: &seq.to_le_bytes(),
                key: b"",
            })
            .unwrap();
        }
        // Release: pairs with the readers' Acquire loads.
        done.store(true, Ordering::Release);
    });
}
