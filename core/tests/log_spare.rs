//! The spare segment made ahead of a roll: made once the tail is half full
//! (not before), taken by the roll (the file made in the background becomes
//! the next segment, with a valid header and every record readable, before
//! and after reopening), made again for the next roll; a clean close
//! removes a ready spare, and a spare left behind (a crash) is removed by
//! recovery without touching the log.

use std::path::Path;
use std::time::{Duration, Instant};

use herald_core::log::{Durability, Log, LogConfig, LogItem};

#[path = "shared/records.rs"]
mod records;
use records::append_next;

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
    for _ in 0..n {
        append_next(log, &[b'x'; 1000]);
    }
}

/// Appends until the log has `segments` segments.
fn append_until(log: &Log, segments: usize) {
    while log.stats().segments < segments {
        append(log, 100);
    }
}

/// Waits until the log's spare is ready (made, not merely begun).
fn wait_for_spare(log: &Log, path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.stats().spare_ready {
        assert!(Instant::now() < deadline, "no spare became ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(path.exists(), "a ready spare is the file {path:?}");
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

fn inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

/// The newest segment file.
fn last_segment(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap()
}

#[test]
fn rolls_take_the_spare_made_once_the_tail_is_half_full() {
    for durability in [Durability::Never, Durability::Always] {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(SPARE);
        {
            let (log, _) = Log::open(dir.path(), cfg(durability)).unwrap();
            // 1 000 records of ~1 KiB: under a quarter of the segment.
            append(&log, 1000);
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                !spare.exists() && !log.stats().spare_ready,
                "no spare while the tail is less than half full"
            );
            // Past half: made in the background.
            append(&log, 1500);
            wait_for_spare(&log, &spare);
            for segments in [2, 3] {
                let made = inode(&spare);
                append_until(&log, segments);
                assert_eq!(
                    inode(&last_segment(dir.path())),
                    made,
                    "roll {segments}: the new segment is the spare's file, renamed"
                );
                assert!(!log.stats().spare_ready, "taken by the roll");
                append(&log, 2500);
                wait_for_spare(&log, &spare);
            }
            check_all(&log);
            assert_eq!(segment_files(dir.path()), 3);
        }
        // A clean close removes a ready spare.
        assert!(!spare.exists());
        let (log, report) = Log::open(dir.path(), cfg(durability)).unwrap();
        assert!(report.truncated.is_empty());
        check_all(&log);
        assert_eq!(segment_files(dir.path()), 3);
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
