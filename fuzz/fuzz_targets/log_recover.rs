//! Feeds arbitrary bytes to log recovery as segment files. Opening (with and
//! without repair), reading and verifying must never panic, and whatever
//! opens must read back as contiguous, CRC-valid records.
//!
//! The first input byte picks how the bytes become files:
//! - 0: the whole input is one segment file;
//! - 1: a valid segment header followed by the input (exercises the record walk);
//! - 2: a valid log of a few records, then the input as `(offset, xor)` pairs
//!   applied to its files (exercises torn tails and mid-log damage);
//! - 3: the input split into two consecutive segment files.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use herald_core::log::{verify_dir, Durability, Log, LogConfig, LogItem, RecordRef};
use libfuzzer_sys::fuzz_target;

const SEG: u64 = 4096;

fn cfg(repair: bool) -> LogConfig {
    LogConfig {
        segment_size: SEG,
        durability: Durability::Never,
        repair,
        ..LogConfig::default()
    }
}

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // tmpfs when available: file creation and removal dominate each run.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("herald-fuzz-log-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fn reset(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

fn seg_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// A valid log with records 1..=n in `dir` (segments of 4 KiB).
fn valid_log(dir: &Path, n: u64) {
    let (log, _) = Log::open(dir, cfg(false)).unwrap();
    for _ in 0..n {
        let seq = log.next_seq();
        let p = vec![seq as u8; (seq * 37 % 300) as usize];
        let rec = RecordRef {
            seq,
            topic_id: seq % 3,
            topic_seq: seq,
            timestamp_ns: seq,
            origin: 0,
            event_type: b"fz",
            payload: &p,
            key: b"",
        };
        log.append(&rec).unwrap();
    }
}

fn check(dir: &Path, repair: bool) {
    let Ok((log, _)) = Log::open(dir, cfg(repair)) else {
        assert!(!repair, "repair must always open");
        return;
    };
    let mut expect = log.first_seq();
    if let Ok(reader) = log.reader_from_seq(expect) {
        for item in reader {
            match item {
                Ok(LogItem::Record(r)) => {
                    assert_eq!(r.seq, expect);
                    expect += 1;
                }
                Ok(LogItem::Gap { .. }) => panic!("gap without retention"),
                Err(e) => panic!("read error after open: {e}"),
            }
        }
    }
    assert_eq!(expect, log.next_seq());
    drop(log);
    let report = verify_dir(dir).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    reset(dir);
    match mode % 4 {
        0 => std::fs::write(dir.join(seg_name(1)), rest).unwrap(),
        1 => {
            let (log, _) = Log::open(dir, cfg(false)).unwrap();
            drop(log);
            let path = dir.join(seg_name(1));
            let mut bytes = std::fs::read(&path).unwrap();
            let n = rest.len().min(bytes.len() - 64);
            bytes[64..64 + n].copy_from_slice(&rest[..n]);
            std::fs::write(&path, bytes).unwrap();
        }
        2 => {
            let n = rest.first().map_or(1, |&b| u64::from(b) % 64 + 1);
            valid_log(dir, n);
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            let mut contents: Vec<Vec<u8>> =
                files.iter().map(|f| std::fs::read(f).unwrap()).collect();
            for chunk in rest.get(1..).unwrap_or(&[]).chunks_exact(4) {
                let which = chunk[0] as usize % contents.len();
                let off = u16::from_le_bytes([chunk[1], chunk[2]]) as usize;
                let c = &mut contents[which];
                if chunk[3] == 0 {
                    c.truncate(off); // a zero xor byte means "truncate here"
                } else if let Some(b) = c.get_mut(off) {
                    *b ^= chunk[3];
                }
            }
            for (f, c) in files.iter().zip(&contents) {
                std::fs::write(f, c).unwrap();
            }
        }
        _ => {
            let mid = rest.len() / 2;
            std::fs::write(dir.join(seg_name(1)), &rest[..mid]).unwrap();
            std::fs::write(dir.join(seg_name(2)), &rest[mid..]).unwrap();
        }
    }
    check(dir, false);
    check(dir, true);
});
