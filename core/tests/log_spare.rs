//! The spare segment made ahead of a roll: a roll takes it (the file made
//! in the background becomes the next segment, with a valid header and
//! every record readable, before and after reopening), a new spare is made
//! for the next roll, a clean close removes a ready spare, and a spare left
//! behind (a crash) is removed by recovery without touching the log.

use std::path::Path;
use std::time::{Duration, Instant};

use herald_core::log::{Durability, Log, LogConfig, LogItem, RecordRef};

/// The smallest segments that get a spare (and a prefaulter).
const SEG: u64 = 4 << 20;
const SPARE: &str = "spare.seg.tmp";

fn cfg(durability: Durability) -> LogConfig {
    LogConfig {
        segment_size: SEG,
        durability,
        ..LogConfig::default()
    }
}

fn append(log: &Log, n: u64) {
    let payload = [b'x'; 1000];
    for _ in 0..n {
        let seq = log.next_seq();
        log.append(&RecordRef {
            seq,
            topic_id: 1,
            topic_seq: seq,
            timestamp_ns: seq,
            origin: 0,
            event_type: b"e",
            payload: &payload,
        })
        .expect("append");
    }
}

/// Appends until the log has `segments` segments.
fn append_until(log: &Log, segments: usize) {
    while log.stats().segments < segments {
        append(log, 100);
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no spare appeared at {path:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check_all(log: &Log) {
    let last = log.next_seq() - 1;
    let mut want = 1;
    for item in log.reader_from_seq(1).unwrap() {
        match item.expect("read") {
            LogItem::Record(r) => {
                assert_eq!(r.seq, want);
                assert_eq!(r.payload.len(), 1000);
                want += 1;
            }
            LogItem::Gap { from, to } => panic!("gap {from}..={to}"),
        }
    }
    assert_eq!(want, last + 1, "every record read back");
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".seg")
        })
        .count()
}

#[test]
fn rolls_take_the_spare_and_a_new_one_is_made() {
    for durability in [Durability::Never, Durability::Always] {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(SPARE);
        {
            let (log, _) = Log::open(dir.path(), cfg(durability)).unwrap();
            assert!(!spare.exists(), "no spare before the first roll");
            append_until(&log, 2);
            // Made after the first roll, in the background.
            wait_for(&spare);
            let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&spare).unwrap());
            append_until(&log, 3);
            // The third segment is the spare's file, renamed.
            let third = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .max()
                .unwrap();
            let third_inode =
                std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&third).unwrap());
            assert_eq!(third_inode, inode, "the roll named the spare");
            wait_for(&spare);
            append_until(&log, 4);
            check_all(&log);
            assert_eq!(segment_files(dir.path()), 4);
        }
        // A clean close removes a ready spare (one may still have been in
        // the making: give it a moment, then it is the next open's).
        std::thread::sleep(Duration::from_millis(200));
        let (log, report) = Log::open(dir.path(), cfg(durability)).unwrap();
        assert!(!spare.exists(), "recovery removes a leftover spare");
        assert!(report.truncated.is_empty());
        check_all(&log);
        assert_eq!(segment_files(dir.path()), 4);
    }
}

#[test]
fn a_spare_left_by_a_crash_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(dir.path(), cfg(Durability::Never)).unwrap();
        append(&log, 10);
    }
    // What a crash leaves: a preallocated file, never named.
    let spare = dir.path().join(SPARE);
    let f = std::fs::File::create(&spare).unwrap();
    f.set_len(SEG).unwrap();
    drop(f);
    let (log, _) = Log::open(dir.path(), cfg(Durability::Never)).unwrap();
    assert!(!spare.exists());
    assert_eq!(log.next_seq(), 11);
    check_all(&log);
}
