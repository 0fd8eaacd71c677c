//! Skips: a replica's log moved past sequences its stream dropped before the
//! replica saw them. Readers crossing a skip get a gap (global sequences for
//! sequence readers, topic sequences for topic readers), recovery accepts a
//! skip only where its segment says so, and `verify_dir` reports it.

use herald_core::log::{
    verify_dir, Durability, Log, LogConfig, LogError, LogItem, Record, RecordRef,
};

fn cfg() -> LogConfig {
    LogConfig {
        segment_size: 1 << 16,
        durability: Durability::Never,
        ..LogConfig::default()
    }
}

fn append(log: &Log, topic_id: u64, topic_seq: u64) {
    let seq = log.next_seq();
    log.append(&RecordRef {
        seq,
        topic_id,
        topic_seq,
        timestamp_ns: seq,
        origin: 0,
        event_type: b"t",
        payload: b"{}",
        key: b"",
    })
    .expect("append");
}

/// What a reader yields: `Ok(key of the record)` for a record,
/// `Err((from, to))` for a gap.
fn read(
    items: impl Iterator<Item = Result<LogItem, LogError>>,
    key: fn(&Record) -> u64,
) -> Vec<Result<u64, (u64, u64)>> {
    items
        .map(|i| match i.expect("read") {
            LogItem::Record(r) => Ok(key(&r)),
            LogItem::Gap { from, to } => Err((from, to)),
        })
        .collect()
}

/// Records by global sequence.
fn read_all(
    items: impl Iterator<Item = Result<LogItem, LogError>>,
) -> Vec<Result<u64, (u64, u64)>> {
    read(items, |r| r.seq)
}

/// Records by topic sequence.
fn topic_seqs(
    items: impl Iterator<Item = Result<LogItem, LogError>>,
) -> Vec<Result<u64, (u64, u64)>> {
    read(items, |r| r.topic_seq)
}

#[test]
fn readers_crossing_a_skip_get_a_gap_before_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(dir.path(), cfg()).unwrap();
        append(&log, 1, 1); // seq 1
        append(&log, 2, 1); // seq 2
        append(&log, 1, 2); // seq 3
        log.skip_to(10).unwrap();
        assert_eq!(log.next_seq(), 10);
        assert_eq!(log.last_skip(), 10);
        // Topic 1's events 3..=5 were among the dropped sequences.
        append(&log, 1, 6); // seq 10
        append(&log, 2, 2); // seq 11: topic 2 lost nothing
        let mut live = log.reader_from_seq(4).unwrap();
        assert_eq!(read_all(&mut live), vec![Err((4, 9)), Ok(10), Ok(11)]);
    }
    let (log, report) = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!(report.next_seq, 12);
    assert_eq!(log.last_skip(), 10);
    assert_eq!(
        read_all(log.reader_from_seq(1).unwrap()),
        vec![Ok(1), Ok(2), Ok(3), Err((4, 9)), Ok(10), Ok(11)]
    );
    assert_eq!(
        read_all(log.reader_from_seq(7).unwrap()),
        vec![Err((7, 9)), Ok(10), Ok(11)]
    );
    assert_eq!(
        topic_seqs(log.reader_from_topic(1, 1)),
        vec![Ok(1), Ok(2), Err((3, 5)), Ok(6)]
    );
    assert_eq!(
        topic_seqs(log.reader_from_topic(1, 4)),
        vec![Err((4, 5)), Ok(6)]
    );
    assert_eq!(topic_seqs(log.reader_from_topic(2, 1)), vec![Ok(1), Ok(2)]);
    let verified = verify_dir(dir.path()).unwrap();
    assert!(verified.is_clean(), "{verified:?}");
    assert_eq!(verified.skips, vec![(4, 9)]);
    // Appends go on after the skip; a skip backwards is refused.
    assert!(matches!(
        log.skip_to(5),
        Err(LogError::SequenceMismatch {
            expected: 12,
            got: 5
        })
    ));
    log.skip_to(12).unwrap();
    append(&log, 1, 7);
    assert_eq!(log.next_seq(), 13);
}

#[test]
fn an_empty_log_skipped_to_a_stream_s_first_message_starts_there() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(dir.path(), cfg()).unwrap();
        log.skip_to(500).unwrap();
        assert_eq!((log.first_seq(), log.next_seq()), (500, 500));
        append(&log, 1, 40);
        assert_eq!(
            read_all(log.reader_from_seq(1).unwrap()),
            vec![Err((1, 499)), Ok(500)]
        );
    }
    let (log, report) = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!((report.first_seq, report.next_seq), (500, 501));
    assert_eq!(
        topic_seqs(log.reader_from_topic(1, 1)),
        vec![Err((1, 39)), Ok(40)]
    );
    assert_eq!(verify_dir(dir.path()).unwrap().segments, 1);
}

#[test]
fn a_hole_between_segments_without_the_skip_flag_is_still_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(dir.path(), cfg()).unwrap();
        append(&log, 1, 1);
        log.skip_to(10).unwrap();
        append(&log, 1, 2);
    }
    // Clear the flag (and fix the header's CRC): the hole is unexplained.
    let path = dir.path().join(format!("{:020}.seg", 10));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[12..16].copy_from_slice(&0u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = Log::open(dir.path(), cfg()).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { reason, .. } if reason.contains("sequence gap")),
        "{err:?}"
    );
    let verified = verify_dir(dir.path()).unwrap();
    assert!(!verified.is_clean());
    assert!(verified.skips.is_empty());
}

#[test]
fn a_skip_with_nothing_appended_after_it_survives_a_reopen() {
    // The skip's segment is its record: made durable like any new segment,
    // it stands after a reopen (as after a crash) before any append.
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(dir.path(), cfg()).unwrap();
        append(&log, 1, 1);
        log.skip_to(50).unwrap();
    }
    let (log, report) = Log::open(dir.path(), cfg()).unwrap();
    assert_eq!((report.next_seq, log.last_skip()), (50, 50));
    append(&log, 1, 9);
    assert_eq!(
        read_all(log.reader_from_seq(1).unwrap()),
        vec![Ok(1), Err((2, 49)), Ok(50)]
    );
    assert_eq!(verify_dir(dir.path()).unwrap().skips, vec![(2, 49)]);
}
