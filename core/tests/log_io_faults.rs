//! The I/O seam: fail the Nth sync / segment creation / rename / directory
//! sync and check that the append reports the error, that nothing
//! acknowledged is lost, and that the log reopens valid.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use herald_core::log::{verify_dir, Durability, Log, LogConfig, LogError, LogIo, LogItem, StdIo};
use memmap2::MmapRaw;

#[path = "shared/records.rs"]
mod records;
use records::record;

/// Fails the `fail_at`-th fallible call (counting only calls of the kinds in `kinds`).
#[derive(Debug)]
struct FaultyIo {
    calls: AtomicU64,
    fail_at: u64,
    kinds: &'static [&'static str],
}

impl FaultyIo {
    fn new(fail_at: u64, kinds: &'static [&'static str]) -> Arc<Self> {
        Arc::new(FaultyIo {
            calls: AtomicU64::new(0),
            fail_at,
            kinds,
        })
    }
    fn check(&self, kind: &str) -> io::Result<()> {
        if self.kinds.contains(&kind)
            && self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at
        {
            return Err(io::Error::other(format!("injected {kind} failure")));
        }
        Ok(())
    }
}

impl LogIo for FaultyIo {
    fn create_segment(&self, path: &Path, len: u64, header: &[u8]) -> io::Result<File> {
        self.check("create")?;
        StdIo.create_segment(path, len, header)
    }
    fn sync_range(&self, map: &MmapRaw, offset: usize, len: usize) -> io::Result<()> {
        self.check("sync")?;
        StdIo.sync_range(map, offset, len)
    }
    fn sync_file(&self, file: &File) -> io::Result<()> {
        self.check("sync_file")?;
        StdIo.sync_file(file)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check("sync_dir")?;
        StdIo.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check("rename")?;
        StdIo.rename(from, to)
    }
}

const ALL: &[&str] = &["create", "sync", "sync_file", "sync_dir", "rename"];

fn cfg(io: Arc<dyn LogIo>, durability: Durability) -> LogConfig {
    LogConfig {
        segment_size: 4096,
        durability,
        io,
        ..LogConfig::default()
    }
}

fn payload(seq: u64) -> Vec<u8> {
    vec![seq as u8; (seq % 200) as usize]
}

/// Reopens with the real file system and checks contents; returns the last seq.
fn reopen_and_check(dir: &Path, acked: u64) -> u64 {
    let (log, _) =
        Log::open(dir, cfg(Arc::new(StdIo), Durability::Never)).expect("reopen after fault");
    let mut expect = 1;
    for item in log.reader_from_seq(1).unwrap() {
        match item.unwrap() {
            LogItem::Record(r) => {
                assert_eq!(r.seq, expect);
                assert_eq!(r.payload, payload(r.seq));
                expect += 1;
            }
            LogItem::Gap { .. } => panic!("gap"),
        }
    }
    assert!(
        expect > acked,
        "acknowledged {acked} but the log ends at {}",
        expect - 1
    );
    assert!(verify_dir(dir).unwrap().is_clean());
    expect - 1
}

#[test]
fn failed_sync_under_always_fails_the_append_and_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(
        dir.path(),
        cfg(FaultyIo::new(5, &["sync"]), Durability::Always),
    )
    .unwrap();
    let mut acked = 0;
    let err = loop {
        let seq = log.next_seq();
        match log.append(&record(seq, &payload(seq))) {
            Ok(_) => acked = seq,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    assert_eq!(acked, 4);
    let seq = log.next_seq();
    assert!(matches!(
        log.append(&record(seq, &payload(seq))),
        Err(LogError::Poisoned)
    ));
    drop(log);
    reopen_and_check(dir.path(), acked);
}

#[test]
fn failed_segment_creation_fails_the_append_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // Call 1 creates the first segment; call 2 is the first roll.
    let (log, _) = Log::open(
        dir.path(),
        cfg(FaultyIo::new(2, &["create"]), Durability::Never),
    )
    .unwrap();
    let mut failures = 0;
    let mut acked = 0;
    while acked < 200 {
        let seq = log.next_seq();
        match log.append(&record(seq, &payload(seq))) {
            Ok(_) => acked = seq,
            Err(e) => {
                assert!(matches!(e, LogError::Io { .. }), "{e}");
                failures += 1;
                assert_eq!(log.next_seq(), seq, "a failed append consumes no sequence");
            }
        }
    }
    assert_eq!(failures, 1);
    log.close().unwrap();
    assert_eq!(reopen_and_check(dir.path(), acked), acked);
}

#[test]
fn any_single_failed_io_call_loses_nothing_acknowledged() {
    for durability in [Durability::Always, Durability::Never] {
        for n in 1..40 {
            let dir = tempfile::tempdir().unwrap();
            let io = FaultyIo::new(n, ALL);
            let opened = Log::open(dir.path(), cfg(io, durability));
            let Ok((log, _)) = opened else { continue }; // the fault hit open itself
            let mut acked = 0;
            let mut errors = 0;
            for _ in 0..150 {
                let seq = log.next_seq();
                match log.append(&record(seq, &payload(seq))) {
                    Ok(_) => acked = seq,
                    Err(_) => errors += 1,
                }
            }
            drop(log);
            let last = reopen_and_check(dir.path(), acked);
            assert!(last >= acked, "{durability:?} n={n}: errors={errors}");
        }
    }
}
