//! Appending and replaying: by sequence, by topic, by time; readers see later
//! appends; topic replay skips other topics; reopen keeps everything.

use herald_core::log::{Durability, Log, LogConfig, LogError, LogItem, ReadItem, RecordRef};

fn cfg(segment_size: u64) -> LogConfig {
    LogConfig {
        segment_size,
        durability: Durability::Never,
        ..LogConfig::default()
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let n = (seq % 97) as usize;
    (0..n).map(|i| (seq as u8).wrapping_add(i as u8)).collect()
}

/// Appends `n` records spread over `topics` topics (topic = seq % topics).
fn fill(log: &Log, n: u64, topics: u64, topic_seqs: &mut Vec<u64>) {
    topic_seqs.resize(topics as usize, 0);
    for _ in 0..n {
        let seq = log.next_seq();
        let t = seq % topics;
        topic_seqs[t as usize] += 1;
        let p = payload(seq);
        log.append(&RecordRef {
            seq,
            topic_id: t,
            topic_seq: topic_seqs[t as usize],
            timestamp_ns: seq * 10,
            origin: seq ^ 0xabc,
            event_type: b"thing.happened",
            payload: &p,
            key: b"",
        })
        .expect("append");
    }
}

fn records(
    items: impl Iterator<Item = Result<LogItem, LogError>>,
) -> Vec<herald_core::log::Record> {
    items
        .map(|i| match i.expect("read") {
            LogItem::Record(r) => r,
            LogItem::Gap { from, to } => panic!("unexpected gap {from}..={to}"),
        })
        .collect()
}

#[test]
fn replay_from_seq_returns_every_record_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), cfg(8192)).unwrap();
    let mut ts = Vec::new();
    fill(&log, 2000, 5, &mut ts);
    assert!(log.stats().segments > 10, "small segments must roll");
    let got = records(log.reader_from_seq(1).unwrap());
    assert_eq!(got.len(), 2000);
    for (i, r) in got.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(r.seq, seq);
        assert_eq!(r.payload, payload(seq));
        assert_eq!(r.origin, seq ^ 0xabc);
        assert_eq!(r.event_type, b"thing.happened");
    }
    let mid = records(log.reader_from_seq(1234).unwrap());
    assert_eq!(mid.first().map(|r| r.seq), Some(1234));
    assert_eq!(mid.len(), 2000 - 1233);
    assert!(matches!(
        log.reader_from_seq(2002),
        Err(LogError::OutOfRange { .. })
    ));
}

#[test]
fn reader_created_before_appends_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), cfg(4096)).unwrap();
    let mut r = log.reader_from_seq(1).unwrap();
    let mut t = log.reader_from_topic(1, 1);
    assert!(r.next_item().is_none());
    assert!(t.next_item().is_none());
    let mut ts = Vec::new();
    let mut seen = 0u64;
    for round in 0..20 {
        fill(&log, 50, 2, &mut ts);
        while let Some(item) = r.next_item() {
            match item.unwrap() {
                ReadItem::Record(v) => {
                    seen += 1;
                    assert_eq!(v.seq, seen);
                }
                ReadItem::Gap { .. } => panic!("gap"),
            }
        }
        assert_eq!(seen, (round + 1) * 50);
    }
    let topic1: Vec<_> = records(&mut t);
    assert_eq!(topic1.len(), 500);
    assert!(topic1
        .iter()
        .enumerate()
        .all(|(i, r)| r.topic_id == 1 && r.topic_seq == i as u64 + 1));
}

#[test]
fn concurrent_reader_follows_appender() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), cfg(16384)).unwrap();
    let total = 20_000u64;
    std::thread::scope(|s| {
        let mut r = log.reader_from_seq(1).unwrap();
        let h = s.spawn(move || {
            let mut next = 1u64;
            while next <= total {
                match r.next_item() {
                    Some(Ok(ReadItem::Record(v))) => {
                        assert_eq!(v.seq, next);
                        assert_eq!(v.payload, payload(next).as_slice());
                        next += 1;
                    }
                    Some(other) => panic!("unexpected {other:?}"),
                    None => std::thread::yield_now(),
                }
            }
        });
        let mut ts = Vec::new();
        fill(&log, total, 3, &mut ts);
        h.join().unwrap();
    });
}

#[test]
fn topic_replay_visits_only_that_topics_records() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), cfg(1 << 16)).unwrap();
    // Topic 0 gets 1 record in 100; the rest is other topics' traffic.
    let mut tseq = [0u64; 100];
    for _ in 0..10_000 {
        let seq = log.next_seq();
        let t = seq % 100;
        tseq[t as usize] += 1;
        log.append(&RecordRef {
            seq,
            topic_id: t,
            topic_seq: tseq[t as usize],
            timestamp_ns: seq,
            origin: 0,
            event_type: b"e",
            payload: b"x",
            key: b"",
        })
        .unwrap();
    }
    let mut r = log.reader_from_topic(0, 1);
    let got = records(&mut r);
    assert_eq!(got.len(), 100);
    assert_eq!(
        r.records_visited(),
        100,
        "must not visit other topics' records"
    );
    // From the middle of the topic.
    let mut r = log.reader_from_topic(0, 51);
    let got = records(&mut r);
    assert_eq!(got.first().map(|r| r.topic_seq), Some(51));
    assert_eq!(got.len(), 50);
    assert_eq!(r.records_visited(), 50);
    // A global reader, by contrast, visits everything from its start.
    let mut g = log.reader_from_seq(5001).unwrap();
    while g.next_item().is_some() {}
    assert_eq!(g.records_visited(), 5000);
}

#[test]
fn replay_from_time_starts_at_first_record_not_older() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), cfg(8192)).unwrap();
    let mut ts = Vec::new();
    fill(&log, 1000, 3, &mut ts); // timestamp = seq * 10
    let first = |ts: u64| match log.reader_from_time(ts).unwrap().next() {
        Some(Ok(LogItem::Record(r))) => Some(r.seq),
        None => None,
        other => panic!("{other:?}"),
    };
    assert_eq!(first(0), Some(1));
    assert_eq!(first(10), Some(1));
    assert_eq!(first(11), Some(2));
    assert_eq!(first(5000), Some(500));
    assert_eq!(first(5001), Some(501));
    assert_eq!(first(10_000), Some(1000));
    assert_eq!(first(10_001), None);
}

#[test]
fn append_rejects_out_of_order_input() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), cfg(8192)).unwrap();
    let rec = |seq, topic_seq, ts| RecordRef {
        seq,
        topic_id: 1,
        topic_seq,
        timestamp_ns: ts,
        origin: 0,
        event_type: b"e",
        payload: b"",
        key: b"",
    };
    log.append(&rec(1, 1, 100)).unwrap();
    assert!(matches!(
        log.append(&rec(3, 2, 100)),
        Err(LogError::SequenceMismatch {
            expected: 2,
            got: 3
        })
    ));
    assert!(matches!(
        log.append(&rec(2, 1, 100)),
        Err(LogError::TopicSequenceRegression { .. })
    ));
    assert!(matches!(
        log.append(&rec(2, 2, 99)),
        Err(LogError::TimestampRegression { .. })
    ));
    let big = vec![0u8; 9000];
    let r = RecordRef {
        payload: &big,
        ..rec(2, 2, 100)
    };
    assert!(matches!(
        log.append(&r),
        Err(LogError::RecordTooLarge { .. })
    ));
    let long_type = [b'x'; 256];
    let r = RecordRef {
        event_type: &long_type,
        ..rec(2, 2, 100)
    };
    assert!(matches!(
        log.append(&r),
        Err(LogError::RecordTooLarge { .. })
    ));
    log.append(&rec(2, 2, 100)).unwrap();
    assert_eq!(log.last_seq(), Some(2));
}

#[test]
fn reopen_restores_records_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = Vec::new();
    {
        let (log, rep) = Log::open(dir.path(), cfg(8192)).unwrap();
        assert_eq!(rep.records, 0);
        fill(&log, 777, 4, &mut ts);
        log.close().unwrap();
    }
    let (log, rep) = Log::open(dir.path(), cfg(8192)).unwrap();
    assert_eq!(rep.records, 777);
    assert!(rep.truncated.is_empty());
    assert_eq!(log.next_seq(), 778);
    assert_eq!(records(log.reader_from_seq(1).unwrap()).len(), 777);
    let t3 = records(log.reader_from_topic(3, 1));
    assert_eq!(t3.len() as u64, ts[3]);
    // Appends continue where they left off, including topic sequences.
    fill(&log, 10, 4, &mut ts);
    assert_eq!(log.last_seq(), Some(787));
    let report = herald_core::log::verify_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, 787);
}

#[test]
fn dump_dir_lists_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), cfg(8192)).unwrap();
    let mut ts = Vec::new();
    fill(&log, 300, 2, &mut ts);
    let mut seqs = Vec::new();
    let rep = herald_core::log::dump_dir(dir.path(), |r| seqs.push(r.seq)).unwrap();
    assert!(rep.is_clean());
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
}

#[test]
fn log_and_readers_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Log>();
    send::<herald_core::log::LogReader>();
    send::<herald_core::log::TopicReader>();
}
