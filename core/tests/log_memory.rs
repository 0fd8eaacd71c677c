//! The log's resident memory does not grow with the log: a sealed segment's
//! pages are dropped from the process (the page cache keeps them), a reader
//! of the sealed segment still reads every record, and drops the pages it
//! faulted in once it has read past the segment. The part of the tail
//! still to be written is read ahead of by no fault; a sealed segment is.
//! What the interval flusher wrote back of the tail leaves the process too.

use std::time::{Duration, Instant};

use herald_core::log::{Durability, Log, LogConfig, RecordRef};

#[path = "shared/records.rs"]
mod records;
use records::append_next;

/// The value of `field` in each mapping of `path` in this process, from
/// smaps, in address order (a segment's mapping is split where advice
/// differs along it).
fn smaps_field(path: &std::path::Path, field: &str) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_str().unwrap();
    let prefix = format!("{field}:");
    let mut found = Vec::new();
    let mut lines = smaps.lines();
    while let Some(line) = lines.next() {
        if line.ends_with(name) {
            if let Some(value) = lines.by_ref().find_map(|l| l.strip_prefix(prefix.as_str())) {
                found.push(value.trim().to_string());
            }
        }
    }
    found
}

/// Resident KiB of the mappings of `path` in this process.
fn resident_kib(path: &std::path::Path) -> Option<u64> {
    let rss = smaps_field(path, "Rss");
    if rss.is_empty() {
        return None;
    }
    let kib = |v: &String| v.trim_end_matches(" kB").trim().parse::<u64>().ok();
    rss.iter().map(kib).sum()
}

/// Whether each mapping of `path` in this process is advised
/// `MADV_RANDOM` (its `VmFlags` hold `rr`).
fn random_advice(path: &std::path::Path) -> Vec<bool> {
    let flags = smaps_field(path, "VmFlags");
    flags
        .iter()
        .map(|f| f.split_whitespace().any(|f| f == "rr"))
        .collect()
}

/// Whether the log in `dir` has rolled: two segment files at least (the
/// spare's temporary name does not count).
fn rolled(dir: &std::path::Path) -> bool {
    let names = std::fs::read_dir(dir).unwrap();
    let names = names.map(|e| e.unwrap().file_name().into_string().unwrap());
    names.filter(|n| n.ends_with(".seg")).count() >= 2
}

/// The smallest segments that get a prefault thread (which releases a
/// sealed segment's pages), no syncs.
fn prefaulted() -> LogConfig {
    LogConfig {
        segment_size: 4 << 20,
        durability: Durability::Never,
        prefault: true,
        ..LogConfig::default()
    }
}

#[test]
fn a_sealed_segment_leaves_resident_memory_and_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let config = prefaulted();
    let (log, _) = Log::open(dir.path(), config).unwrap();
    let payload = vec![7u8; 1000];
    // Fill the first segment and roll into the second.
    let first = dir.path().join("00000000000000000001.seg");
    while log.next_seq() < 5000 {
        append_next(&log, &payload);
    }
    let seq = log.next_seq();
    assert!(rolled(dir.path()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let resident = loop {
        let kib = resident_kib(&first).expect("the first segment is mapped");
        if kib <= 64 || Instant::now() > deadline {
            break kib;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        resident <= 64,
        "the sealed segment keeps {resident} KiB resident"
    );
    // Still readable, every byte, from the page cache.
    let mut reader = log.reader_from_seq(1).unwrap();
    for want in 1..seq {
        let item = reader.next_item().unwrap().unwrap().to_owned_item();
        match item {
            herald_core::log::LogItem::Record(r) => {
                assert_eq!((r.seq, r.payload.as_slice()), (want, payload.as_slice()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The reader faulted the first segment back in, and released it when it
    // read past its end.
    let after_reading = resident_kib(&first).unwrap();
    assert!(
        after_reading <= 64,
        "a reader left {after_reading} KiB of the sealed segment resident"
    );
}

/// A sealed segment's offset table leaves memory with its pages (an offset
/// every 64 records stays): every way of reading still finds each record,
/// from any position, before and after a reopen.
#[test]
fn records_of_a_segment_whose_offset_table_was_released_are_found_from_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let config = prefaulted();
    // Records of varying sizes, so that a wrong walk lands off a record.
    let payload = |seq: u64| vec![b'a' + (seq % 26) as u8; 40 + (seq as usize * 7) % 300];
    let total = {
        let (log, _) = Log::open(dir.path(), config.clone()).unwrap();
        let mut seq = 1;
        let segments = || {
            let names = std::fs::read_dir(dir.path()).unwrap();
            let names = names.map(|e| e.unwrap().file_name().into_string().unwrap());
            names.filter(|n| n.ends_with(".seg")).count()
        };
        while segments() < 3 {
            log.append(&RecordRef {
                seq,
                topic_id: seq % 3,
                topic_seq: seq / 3 + 1,
                timestamp_ns: seq * 10,
                origin: 0,
                event_type: b"e",
                payload: &payload(seq),
                key: b"",
            })
            .unwrap();
            seq += 1;
        }
        // Give the prefaulter of the first segment time to release it.
        std::thread::sleep(Duration::from_millis(300));
        check_every_way(&log, seq - 1, &payload);
        seq - 1
    };
    // Recovery releases the sealed segments it scanned, too.
    let (log, _) = Log::open(dir.path(), config).unwrap();
    check_every_way(&log, total, &payload);
}

fn check_every_way(log: &Log, total: u64, payload: &dyn Fn(u64) -> Vec<u8>) {
    use herald_core::log::ReadItem;
    let record = |item: Option<Result<ReadItem<'_>, _>>| match item {
        Some(Ok(ReadItem::Record(r))) => (r.seq, r.payload.to_vec()),
        other => panic!("unexpected {other:?}"),
    };
    for from in [1, 2, 63, 64, 65, 1000, total / 2, total - 1, total] {
        let mut reader = log.reader_from_seq(from).unwrap();
        for seq in from..(from + 200).min(total + 1) {
            assert_eq!(record(reader.next_item()), (seq, payload(seq)));
        }
        let mut reader = log.reader_from_time(from * 10).unwrap();
        assert_eq!(record(reader.next_item()), (from, payload(from)));
    }
    for topic in 0..3 {
        let mut reader = log.reader_from_topic(topic, 1);
        let mut n = 0;
        while let Some(item) = reader.next_item() {
            let (seq, bytes) = record(Some(item));
            assert_eq!((seq % 3, bytes), (topic, payload(seq)));
            n += 1;
        }
        assert_eq!(n, (1..=total).filter(|s| s % 3 == topic).count());
    }
}

/// A write fault ahead of the appender reads nothing ahead: the part of the
/// tail not yet written when it became the tail is advised `MADV_RANDOM`
/// (readahead there zero-filled megabytes of the file's hole in one
/// fault); the part written before, and the whole segment once sealed,
/// keep the normal advice, for readers.
#[test]
fn only_the_unwritten_part_of_the_tail_is_advised_against_readahead() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("00000000000000000001.seg");
    let payload = vec![7u8; 1000];
    // The prefault thread gives the advice: waited for, up to 10 s.
    let wait_for = |path: &std::path::Path, done: &dyn Fn(&[bool]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = random_advice(path);
            if done(&got) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let append_until = |log: &Log, next: u64| {
        while log.next_seq() < next {
            append_next(log, &payload);
        }
    };
    {
        let (log, _) = Log::open(dir.path(), prefaulted()).unwrap();
        // A new log's first segment: not a byte of it to read ahead.
        assert_eq!(wait_for(&first, &|a| a == [true]), [true]);
        append_until(&log, 100);
    }
    // Reopened, the written part (recovery read it) keeps the normal
    // advice; the rest, from the page of the end on, is random.
    let (log, _) = Log::open(dir.path(), prefaulted()).unwrap();
    assert_eq!(wait_for(&first, &|a| a == [false, true]), [false, true]);
    // Sealed: normal advice over the whole segment, for readers.
    append_until(&log, 5000);
    assert!(rolled(dir.path()));
    let normal = |a: &[bool]| !a.is_empty() && a.iter().all(|&random| !random);
    let sealed = wait_for(&first, &normal);
    assert!(normal(&sealed), "{sealed:?}");
}

/// A 64 MiB tail flushed every `interval`, with no window populated ahead
/// of the appender: what is resident is what was written.
fn flushed_tail(interval: Duration) -> LogConfig {
    LogConfig {
        segment_size: 64 << 20,
        durability: Durability::Interval(interval),
        prefault: false,
        ..LogConfig::default()
    }
}

/// The interval flusher drops the pages it writes back of the tail from the
/// process (the page cache keeps them): the tail's resident part stays
/// within the last MiB the flusher holds back, not all that was written of
/// it, and every record still reads back.
#[test]
fn what_the_flusher_wrote_back_of_the_tail_leaves_resident_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), flushed_tail(Duration::from_millis(10))).unwrap();
    let payload = vec![7u8; 1000];
    let records = 16_000; // 16.2 MiB of the tail (1 064 bytes a record)
    while log.next_seq() <= records {
        append_next(&log, &payload);
    }
    assert!(!rolled(dir.path()));
    let tail = dir.path().join("00000000000000000001.seg");
    let bound_kib = 1024 + 64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let resident = loop {
        let kib = resident_kib(&tail).expect("the tail is mapped");
        if kib <= bound_kib || Instant::now() > deadline {
            break kib;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        resident <= bound_kib,
        "the tail keeps {resident} KiB resident after the flusher's rounds"
    );
    let mut reader = log.reader_from_seq(1).unwrap();
    for want in 1..=records {
        match reader.next_item().unwrap().unwrap().to_owned_item() {
            herald_core::log::LogItem::Record(r) => {
                assert_eq!((r.seq, r.payload.as_slice()), (want, payload.as_slice()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A reader behind the appender reads every record intact, in order, while
/// the flusher drops the pages behind the appender from the process, pages
/// the reader is reading among them (it lags in bursts).
#[test]
fn a_reader_behind_the_appender_reads_every_record_while_the_flusher_releases_its_pages() {
    let dir = tempfile::tempdir().unwrap();
    let config = flushed_tail(Duration::from_millis(1));
    let log = std::sync::Arc::new(Log::open(dir.path(), config).unwrap().0);
    let records = 30_000u64; // 30 MiB, in one segment
    let payload = |seq: u64| vec![seq as u8; 1000];
    let appender = {
        let log = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for seq in 1..=records {
                append_next(&log, &payload(seq));
            }
        })
    };
    let mut reader = log.reader_from_seq(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut want = 1;
    while want <= records {
        match reader.next_item() {
            Some(item) => match item.expect("a record reads back intact") {
                herald_core::log::ReadItem::Record(r) => {
                    assert_eq!((r.seq, r.payload), (want, &payload(want)[..]));
                    want += 1;
                    if want % 2_000 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                other => panic!("unexpected {other:?}"),
            },
            None => {
                assert!(Instant::now() < deadline, "stuck at {want}");
                std::thread::yield_now();
            }
        }
    }
    appender.join().unwrap();
    assert!(!rolled(dir.path()));
}
