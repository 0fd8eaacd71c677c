//! What a segment roll leaves to other threads: the new segment's header
//! and directory syncs (to the log's next sync) and the removal of the
//! files retention deletes (to a background thread). Each test holds those
//! calls at the I/O seam and checks that an append that rolls still
//! returns, then that the held work is done, in order, when it must be.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use herald_core::log::{Durability, Log, LogConfig, LogError, LogIo, RecordRef, Retention, StdIo};
use memmap2::MmapRaw;

#[path = "shared/records.rs"]
mod records;
use records::record;

/// Records every call, and holds the kinds in `held` until released.
#[derive(Debug, Default)]
struct GatedIo {
    held: Mutex<HashSet<&'static str>>,
    released: Condvar,
    calls: Mutex<Vec<(&'static str, String)>>,
}

impl GatedIo {
    fn hold(&self, kind: &'static str) {
        self.held.lock().unwrap().insert(kind);
    }
    fn release_all(&self) {
        self.held.lock().unwrap().clear();
        self.released.notify_all();
    }
    fn pass(&self, kind: &'static str, detail: String) {
        self.calls.lock().unwrap().push((kind, detail));
        let mut held = self.held.lock().unwrap();
        while held.contains(kind) {
            held = self.released.wait(held).unwrap();
        }
    }
    fn calls(&self) -> Vec<(&'static str, String)> {
        self.calls.lock().unwrap().clone()
    }
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

impl LogIo for GatedIo {
    fn create_segment(&self, path: &Path, len: u64, header: &[u8]) -> io::Result<File> {
        self.pass("create", name_of(path));
        StdIo.create_segment(path, len, header)
    }
    fn sync_range(&self, map: &MmapRaw, offset: usize, len: usize) -> io::Result<()> {
        self.pass("sync_range", format!("{:p}+{offset}", map.as_ptr()));
        StdIo.sync_range(map, offset, len)
    }
    fn sync_file(&self, file: &File) -> io::Result<()> {
        self.pass("sync_file", String::new());
        StdIo.sync_file(file)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.pass("sync_dir", String::new());
        StdIo.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.pass("rename", name_of(to));
        StdIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.pass("remove", name_of(path));
        StdIo.remove(path)
    }
}

fn append(log: &Log, payload: &[u8]) -> u64 {
    let seq = log.next_seq();
    // Over three topics.
    log.append(&RecordRef {
        topic_id: seq % 3,
        ..record(seq, payload)
    })
    .unwrap();
    seq
}

/// Runs `f` on another thread; fails the test if it has not returned
/// within a minute (it is held on something it should not wait for).
fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not return: it waits for held I/O"))
}

/// A log whose segments are big enough for a spare (4 MiB), whose
/// flusher never runs during a test (a test's `sync` is the next sync).
fn spare_config(io: &Arc<GatedIo>) -> LogConfig {
    LogConfig {
        segment_size: 4 << 20,
        durability: Durability::Interval(Duration::from_secs(3600)),
        io: io.clone(),
        ..LogConfig::default()
    }
}

/// The kinds of `calls`, a sync of a segment's first bytes named
/// `sync_header`.
fn kinds<'a>(calls: &'a [(&'static str, String)]) -> Vec<&'a str> {
    calls
        .iter()
        .map(|(k, d)| {
            if *k == "sync_range" && d.ends_with("+0") {
                "sync_header"
            } else {
                k
            }
        })
        .collect()
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|f| f.as_ref().unwrap().path().extension() == Some("seg".as_ref()))
        .count()
}

#[test]
fn a_roll_onto_the_spare_leaves_the_header_and_directory_syncs_to_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(GatedIo::default());
    let cfg = spare_config(&io);
    let log = Arc::new(Log::open(dir.path(), cfg).unwrap().0);
    let payload = vec![7u8; 4000];
    // Past half full: the spare is made in the background.
    for _ in 0..600 {
        append(&log, &payload);
    }
    wait_for_spare(&log);
    io.hold("sync_range");
    io.hold("sync_dir");
    let before = io.calls().len();
    let appender = Arc::clone(&log);
    let last = returns("an append that rolls onto the spare", move || {
        let mut last = 0;
        while appender.stats().segments < 2 {
            last = append(&appender, &payload);
        }
        last
    });
    let rolled = io.calls()[before..].to_vec();
    let new_name = format!("{:020}.seg", last);
    assert!(
        rolled.contains(&("rename", new_name.clone())),
        "the spare is named at the roll: {rolled:?}"
    );
    assert!(
        !rolled
            .iter()
            .any(|(k, _)| *k == "sync_range" || *k == "sync_dir"),
        "the roll synced on the appender's path: {rolled:?}"
    );
    let durable_before = log.stats().durable_seq;
    assert!(durable_before < last);

    io.release_all();
    log.sync().unwrap();
    assert_eq!(log.stats().durable_seq, last);
    let synced = io.calls()[before..].to_vec();
    let rename = synced
        .iter()
        .position(|c| *c == ("rename", new_name.clone()))
        .unwrap();
    let after: Vec<_> = synced[rename + 1..].iter().map(|(k, _)| *k).collect();
    // The new segment from its first byte (the header), then the directory
    // (its name), before the sync reports its records durable.
    let header = synced[rename + 1..]
        .iter()
        .position(|(k, d)| *k == "sync_range" && d.ends_with("+0"));
    let dir_sync = synced[rename + 1..]
        .iter()
        .position(|(k, _)| *k == "sync_dir");
    assert!(
        matches!((header, dir_sync), (Some(h), Some(d)) if h < d),
        "the next sync makes the header, then the name, durable: {after:?}"
    );
}

/// Waits until the background thread has made the next segment's file.
fn wait_for_spare(log: &Log) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.stats().spare_ready {
        assert!(Instant::now() < deadline, "no spare was made");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Appends 4 000-byte records until the log has `segments` segments,
/// waiting for the spare once the tail is past half full (a 4 MiB segment
/// holds about 1 000), so that the roll takes it. Returns the last seq.
fn roll_onto_spare(log: &Log, segments: usize) -> u64 {
    let payload = vec![7u8; 4000];
    let (mut last, mut in_segment) = (0, 0);
    while log.stats().segments < segments {
        if in_segment == 600 {
            wait_for_spare(log);
        }
        last = append(log, &payload);
        in_segment += 1;
    }
    last
}

#[test]
fn two_rolls_between_syncs_make_the_first_ones_header_and_name_durable_at_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(GatedIo::default());
    let log = Log::open(dir.path(), spare_config(&io)).unwrap().0;
    let first_roll = io.calls().len();
    roll_onto_spare(&log, 2);
    let second_roll = io.calls().len();
    let last = roll_onto_spare(&log, 3);
    let calls = io.calls();
    let between = |from: usize, to: usize| -> Vec<&str> {
        let named = kinds(&calls[from..to]);
        named
            .into_iter()
            .filter(|k| *k != "create" && *k != "sync_file")
            .collect()
    };
    assert_eq!(
        between(first_roll, second_roll),
        ["rename"],
        "the first roll syncs nothing"
    );
    assert_eq!(
        between(second_roll, calls.len()),
        ["sync_header", "sync_dir", "rename"],
        "the second roll first makes the first one's header and name durable"
    );
    log.sync().unwrap();
    drop(log);
    let log = Log::open(
        dir.path(),
        LogConfig {
            io: Arc::new(StdIo),
            ..spare_config(&io)
        },
    )
    .unwrap()
    .0;
    assert_eq!(log.next_seq(), last + 1);
}

#[test]
fn a_segment_whose_header_never_reached_the_disk_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || LogConfig {
        segment_size: 4096,
        durability: Durability::Always,
        ..LogConfig::default()
    };
    let next = {
        let log = Log::open(dir.path(), cfg()).unwrap().0;
        for _ in 0..10 {
            append(&log, b"kept");
        }
        log.next_seq()
    };
    // What a power loss after a roll can leave: the new segment's name on
    // disk, some of its record pages written back, its header not.
    let path = dir.path().join(format!("{next:020}.seg"));
    let mut bytes = vec![0u8; 4096];
    bytes[64..200].fill(0xab);
    std::fs::write(&path, &bytes).unwrap();

    let (log, report) = Log::open(dir.path(), cfg()).unwrap();
    assert!(report.removed_files.contains(&path), "{report:?}");
    assert!(!path.exists());
    assert_eq!(log.next_seq(), next);
    assert_eq!(
        log.reader_from_seq(1).unwrap().count() as u64,
        next - 1,
        "every earlier record is still there"
    );

    // Anywhere but last, the same file is corruption, as before.
    drop(log);
    std::fs::write(&path, &bytes).unwrap();
    let later = dir.path().join(format!("{:020}.seg", next + 5));
    std::fs::copy(dir.path().join(format!("{:020}.seg", 1)), &later).unwrap();
    match Log::open(dir.path(), cfg()) {
        Err(LogError::Corrupt { path: bad, .. }) => assert_eq!(bad, path),
        other => panic!("expected corruption at {path:?}, got {other:?}"),
    }
}

#[test]
fn records_whose_header_was_lost_keep_it_written_again_from_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || LogConfig {
        segment_size: 4096,
        durability: Durability::Always,
        ..LogConfig::default()
    };
    let (next, tail) = {
        let log = Log::open(dir.path(), cfg()).unwrap().0;
        for _ in 0..60 {
            append(&log, b"kept");
        }
        let tail = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|f| f.unwrap().path())
            .filter(|p| p.extension() == Some("seg".as_ref()))
            .max()
            .unwrap();
        (log.next_seq(), tail)
    };
    // The tail's records reached the disk, its header did not.
    let mut bytes = std::fs::read(&tail).unwrap();
    assert!(
        bytes[64..].iter().any(|&b| b != 0),
        "the tail holds records"
    );
    bytes[..64].fill(0);
    std::fs::write(&tail, &bytes).unwrap();

    let (log, report) = Log::open(dir.path(), cfg()).unwrap();
    assert!(report.removed_files.is_empty(), "{report:?}");
    assert_eq!(report.truncated.len(), 1, "{report:?}");
    assert_eq!(log.next_seq(), next, "every record kept");
    assert_eq!(log.reader_from_seq(1).unwrap().count() as u64, next - 1);
    drop(log);
    assert_eq!(Log::open(dir.path(), cfg()).unwrap().1.truncated.len(), 0);
}

#[test]
fn a_roll_without_a_spare_or_a_skip_first_makes_the_previous_header_durable() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(GatedIo::default());
    let cfg = spare_config(&io);
    let log = Log::open(dir.path(), cfg).unwrap().0;
    roll_onto_spare(&log, 2);
    let before = io.calls().len();
    // Not half full: no spare, and a skip never takes one anyway.
    let skip_to = log.next_seq() + 10;
    log.skip_to(skip_to).unwrap();
    let calls = io.calls();
    assert_eq!(
        kinds(&calls[before..]),
        [
            "sync_header",
            "sync_dir",
            "create",
            "sync_file",
            "rename",
            "sync_dir"
        ],
        "the previous segment's header and name, then the skip's segment, durable"
    );
    assert_eq!(calls[before + 2].1, format!("{skip_to:020}.seg.tmp"));
}

#[test]
fn retention_at_a_roll_removes_files_off_the_appenders_path() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(GatedIo::default());
    let cfg = LogConfig {
        segment_size: 4096,
        durability: Durability::Never,
        io: io.clone(),
        retention: Retention {
            max_records: Some(10),
            ..Retention::default()
        },
        ..LogConfig::default()
    };
    let log = Arc::new(Log::open(dir.path(), cfg).unwrap().0);
    io.hold("remove");
    let appender = Arc::clone(&log);
    returns("appends whose rolls delete segments", move || {
        for _ in 0..300 {
            append(&appender, &[1u8; 100]);
        }
    });
    // The log's memory already says so; the files are still there.
    let retained = log.stats().segments;
    assert!(log.first_seq() > 200, "first_seq {}", log.first_seq());
    assert!(
        segment_files(dir.path()) > retained,
        "files were removed on the appender's path"
    );

    io.release_all();
    // Closing the log waits for the removals.
    assert_eq!(Arc::strong_count(&log), 1);
    drop(log);
    assert_eq!(segment_files(dir.path()), retained);
}
