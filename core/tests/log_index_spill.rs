//! The topic index does not grow in memory with the log: full chunks of
//! entries go to spill files, topic readers still read every record through
//! them, retention drops them, and the files go with the log.

use std::path::Path;
use std::time::{Duration, Instant};

use herald_core::log::{Durability, Log, LogConfig, LogItem, ReadItem, RecordRef, Retention};

/// Entries per chunk of the index (`log::index::CHUNK`).
const CHUNK: usize = 4096;

/// 1 MiB segments (no prefault thread), no syncs.
fn config() -> LogConfig {
    LogConfig {
        segment_size: 1 << 20,
        durability: Durability::Never,
        ..LogConfig::default()
    }
}

fn spill_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().ends_with(".spill")
        })
        .count()
}

fn append(log: &Log, topic_id: u64, topic_seq: u64) {
    let seq = log.next_seq();
    let payload = format!("{{\"seq\":{seq}}}");
    log.append(&RecordRef {
        seq,
        topic_id,
        topic_seq,
        timestamp_ns: seq,
        origin: 0,
        event_type: b"e",
        payload: payload.as_bytes(),
        key: b"",
    })
    .unwrap();
}

/// Waits until at most `max` index entries are in memory.
fn spilled_down_to(log: &Log, max: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = log.index_entries_in_memory();
        if n <= max || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `(topic_seq, seq)` of records; `(from, to)` of gaps.
type Pairs = Vec<(u64, u64)>;

/// Reads topic `topic` from `from` to its end: the records and the gaps.
fn read_topic(log: &Log, topic: u64, from: u64) -> (Pairs, Pairs) {
    let mut reader = log.reader_from_topic(topic, from);
    let (mut records, mut gaps) = (Vec::new(), Vec::new());
    while let Some(item) = reader.next_item() {
        match item.unwrap() {
            ReadItem::Record(r) => {
                assert_eq!(r.payload, format!("{{\"seq\":{}}}", r.seq).as_bytes());
                records.push((r.topic_seq, r.seq));
            }
            ReadItem::Gap { from, to } => gaps.push((from, to)),
        }
    }
    (records, gaps)
}

#[test]
fn full_index_chunks_leave_memory_and_topic_readers_still_read_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = config();
    let (log, _) = Log::open(dir.path(), config).unwrap();
    // Two topics interleaved, ten chunks each, and a third with a few.
    let per_topic = 10 * CHUNK as u64 + 100;
    for n in 1..=per_topic {
        append(&log, 1, n);
        append(&log, 2, n);
        if n % 1000 == 0 {
            append(&log, 3, n / 1000);
        }
    }
    let held = spilled_down_to(&log, 2 * CHUNK);
    assert!(
        held <= 2 * CHUNK,
        "{held} index entries still in memory: full chunks were not spilled"
    );
    assert!(spill_files(dir.path()) > 0);

    for topic in [1, 2] {
        let (records, gaps) = read_topic(&log, topic, 1);
        assert!(gaps.is_empty());
        let want: Vec<u64> = (1..=per_topic).collect();
        let got: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert_eq!(got, want, "topic {topic}");
        // From the middle of a spilled chunk.
        let (from_middle, _) = read_topic(&log, topic, 3 * CHUNK as u64 + 17);
        assert_eq!(from_middle[0].0, 3 * CHUNK as u64 + 17);
        assert_eq!(from_middle.len() as u64, per_topic - 3 * CHUNK as u64 - 16);
        assert_eq!(&records[3 * CHUNK + 16..], &from_middle[..]);
    }
    let (few, _) = read_topic(&log, 3, 1);
    assert_eq!(few.len() as u64, per_topic / 1000);
}

#[test]
fn retention_drops_spilled_chunks_and_readers_get_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention: Retention {
            max_records: Some(3 * CHUNK as u64),
            ..Retention::default()
        },
        ..config()
    };
    let (log, _) = Log::open(dir.path(), config).unwrap();
    // Past two spill files' worth of chunks (64 each); retention runs at
    // each segment roll. Each chunk is spilled before the next fills, so
    // chunk i is the i-th written, in file i / 64, and no chunk is dropped
    // before it is written (which would move the later ones down a place,
    // and could put the retained ones in two files).
    let total = 140 * CHUNK as u64;
    for n in 1..=total {
        append(&log, 1, n);
        if n % CHUNK as u64 == 0 {
            assert_eq!(spilled_down_to(&log, 0), 0);
        }
    }
    log.enforce_retention().unwrap();
    let first = log.first_seq();
    assert!(
        first > 1 && first <= total - 3 * CHUNK as u64,
        "first {first}"
    );
    // A reader never starts (nor pins retention) below the first retained
    // record, though a spilled chunk still lists deleted ones.
    assert!(log.reader_from_topic(1, 1).start_seq() >= first);
    let (records, gaps) = read_topic(&log, 1, 1);
    // One gap up to the first retained record, then every record after it,
    // whether its entry is spilled or in memory.
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0], (1, first - 1));
    let got: Vec<u64> = records.iter().map(|r| r.0).collect();
    assert_eq!(got, (first..=total).collect::<Vec<_>>());
    // Chunks wholly before the first retained record are gone, and so are
    // the spill files that held only them: the retained chunks fit in one.
    assert!(log.index_entries_in_memory() <= CHUNK);
    assert_eq!(spill_files(dir.path()), 1);
}

#[test]
fn spill_files_go_with_the_log_and_a_crash_leaves_none_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = config();
    {
        let (log, _) = Log::open(dir.path(), config.clone()).unwrap();
        for n in 1..=3 * CHUNK as u64 {
            append(&log, 1, n);
        }
        spilled_down_to(&log, CHUNK);
        assert!(spill_files(dir.path()) > 0);
    }
    assert_eq!(spill_files(dir.path()), 0, "closing the log removes them");
    // A spill file left by a crash is removed at open; the index is rebuilt
    // from the segments.
    std::fs::write(dir.path().join("topics-0000000007.spill"), b"junk").unwrap();
    let (log, _) = Log::open(dir.path(), config).unwrap();
    let mut n = 0;
    for item in log.reader_from_topic(1, 1) {
        match item.unwrap() {
            LogItem::Record(r) => {
                n += 1;
                assert_eq!(r.topic_seq, n);
            }
            LogItem::Gap { .. } => panic!("no gap"),
        }
    }
    assert_eq!(n, 3 * CHUNK as u64);
    assert!(!dir.path().join("topics-0000000007.spill").exists());
}
