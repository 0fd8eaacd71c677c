//! Corruption: random bit flips, truncations and zeroed ranges anywhere in the
//! segment files. Opening (with and without repair) never panics, never
//! returns a record that is not exactly what was appended, and returns
//! contiguous sequences.

use std::fs;
use std::path::{Path, PathBuf};

use herald_core::log::{verify_dir, Durability, Log, LogConfig, LogError, LogItem, RecordRef};
use proptest::prelude::*;

const SEG: u64 = 4096;

fn cfg(repair: bool) -> LogConfig {
    LogConfig {
        segment_size: SEG,
        durability: Durability::Never,
        repair,
        ..LogConfig::default()
    }
}

fn payload(seq: u64) -> Vec<u8> {
    (0..(seq * 7 % 150) as usize)
        .map(|i| (seq as u8).wrapping_mul(3) ^ i as u8)
        .collect()
}

fn build(dir: &Path, n: u64) {
    let (log, _) = Log::open(dir, cfg(false)).unwrap();
    for _ in 0..n {
        let seq = log.next_seq();
        let p = payload(seq);
        log.append(&RecordRef {
            seq,
            topic_id: seq % 3,
            topic_seq: seq,
            timestamp_ns: seq,
            origin: 1,
            event_type: b"ev",
            payload: &p,
            key: b"",
        })
        .unwrap();
    }
    log.close().unwrap();
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[derive(Debug, Clone)]
enum Damage {
    Flip {
        file: usize,
        at: u64,
        bit: u8,
    },
    Truncate {
        file: usize,
        at: u64,
    },
    Zero {
        file: usize,
        at: u64,
        len: u64,
    },
    Garbage {
        file: usize,
        at: u64,
        bytes: Vec<u8>,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<usize>(), 0..SEG, 0u8..8).prop_map(|(file, at, bit)| Damage::Flip { file, at, bit }),
        1 => (any::<usize>(), 0..SEG).prop_map(|(file, at)| Damage::Truncate { file, at }),
        2 => (any::<usize>(), 0..SEG, 1u64..600).prop_map(|(file, at, len)| Damage::Zero { file, at, len }),
        1 => (any::<usize>(), 0..SEG, proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(file, at, bytes)| Damage::Garbage { file, at, bytes }),
    ]
}

fn apply(dir: &Path, d: &Damage) {
    let files = segment_files(dir);
    if files.is_empty() {
        return;
    }
    let pick = |i: usize| &files[i % files.len()];
    match d {
        Damage::Flip { file, at, bit } => {
            let p = pick(*file);
            let mut b = fs::read(p).unwrap();
            if let Some(x) = b.get_mut(*at as usize) {
                *x ^= 1 << bit;
            }
            fs::write(p, b).unwrap();
        }
        Damage::Truncate { file, at } => {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(pick(*file))
                .unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len((*at).min(len)).unwrap();
        }
        Damage::Zero { file, at, len } => {
            let p = pick(*file);
            let mut b = fs::read(p).unwrap();
            let s = (*at as usize).min(b.len());
            let e = (s + *len as usize).min(b.len());
            b[s..e].fill(0);
            fs::write(p, b).unwrap();
        }
        Damage::Garbage { file, at, bytes } => {
            let p = pick(*file);
            let mut b = fs::read(p).unwrap();
            for (i, x) in bytes.iter().enumerate() {
                if let Some(y) = b.get_mut(*at as usize + i) {
                    *y = *x;
                }
            }
            fs::write(p, b).unwrap();
        }
    }
}

/// Reads everything; every record must be exactly the original, in order.
fn check_contents(log: &Log) -> u64 {
    let mut expect = log.first_seq();
    for item in log.reader_from_seq(expect).unwrap() {
        match item {
            Ok(LogItem::Record(r)) => {
                assert_eq!(r.seq, expect, "contiguous");
                assert_eq!(
                    r.payload,
                    payload(r.seq),
                    "record {} differs from what was appended",
                    r.seq
                );
                assert_eq!(
                    (r.topic_id, r.topic_seq, r.timestamp_ns),
                    (r.seq % 3, r.seq, r.seq)
                );
                expect += 1;
            }
            Ok(LogItem::Gap { from, to }) => panic!("gap {from}..={to} without retention"),
            Err(e) => panic!("read error after a successful open: {e}"),
        }
    }
    assert_eq!(expect, log.next_seq());
    expect - log.first_seq()
}

fn cases() -> u32 {
    if std::env::var("HERALD_LONG").is_ok_and(|v| v == "1") {
        2000
    } else {
        128
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn damaged_segments_never_yield_bad_records(n in 1u64..200, damages in proptest::collection::vec(damage(), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), n);
        for d in &damages {
            apply(dir.path(), d);
        }
        // Without repair: either an explicit error or a valid log.
        let copy = tempfile::tempdir().unwrap();
        for f in segment_files(dir.path()) {
            fs::copy(&f, copy.path().join(f.file_name().unwrap())).unwrap();
        }
        match Log::open(copy.path(), cfg(false)) {
            Ok((log, _)) => {
                let kept = check_contents(&log);
                prop_assert!(kept <= n);
                let v = verify_dir(copy.path()).unwrap();
                prop_assert!(v.is_clean(), "{v:?}");
            }
            Err(LogError::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error kind: {e}"),
        }
        // With repair: always opens, to a valid prefix.
        let (log, report) = Log::open(dir.path(), cfg(true)).unwrap();
        let kept = check_contents(&log);
        prop_assert!(kept <= n);
        // Appending after repair works and survives a reopen.
        let seq = log.next_seq();
        let p = payload(seq);
        log.append(&RecordRef { seq, topic_id: seq % 3, topic_seq: seq, timestamp_ns: seq, origin: 1, event_type: b"ev", payload: &p, key: b"" }).unwrap();
        log.close().unwrap();
        let (log, _) = Log::open(dir.path(), cfg(false)).unwrap();
        prop_assert_eq!(check_contents(&log), kept + 1, "{:?}", report);
        let v = verify_dir(dir.path()).unwrap();
        prop_assert!(v.is_clean(), "{v:?}");
    }
}

#[test]
fn mid_log_corruption_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 200);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let victim = &files[1];
    let mut b = fs::read(victim).unwrap();
    b[64 + 20] ^= 0x40; // inside the first record's header
    fs::write(victim, b).unwrap();
    match Log::open(dir.path(), cfg(false)) {
        Err(LogError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(&path, victim);
            assert_eq!(offset, 64);
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let (log, report) = Log::open(dir.path(), cfg(true)).unwrap();
    assert!(report.repaired);
    assert_eq!(report.truncated.first().map(|t| t.offset), Some(64));
    assert!(!report.removed_files.is_empty());
    assert_eq!(
        log.last_seq(),
        Some(log.first_seq() + check_contents(&log) - 1)
    );
}

#[test]
fn torn_tail_is_truncated_without_repair() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 50);
    let files = segment_files(dir.path());
    let tail = files.last().unwrap();
    let (before, _) = Log::open(dir.path(), cfg(false)).unwrap();
    let last = before.last_seq().unwrap();
    drop(before);
    // Overwrite the last record's bytes partially with garbage, as a torn write would.
    let v = verify_dir(dir.path()).unwrap();
    assert!(v.is_clean());
    let mut b = fs::read(tail).unwrap();
    let end = b.iter().rposition(|&x| x != 0).unwrap();
    b[end] ^= 0xff;
    fs::write(tail, b).unwrap();
    let (log, report) = Log::open(dir.path(), cfg(false)).unwrap();
    assert_eq!(report.truncated.len(), 1, "{report:?}");
    assert_eq!(log.last_seq(), Some(last - 1));
    assert!(verify_dir(dir.path()).unwrap().is_clean());
}

#[test]
fn short_empty_tail_left_by_damage_is_replaced_on_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 100);
    let files = segment_files(dir.path());
    let tail = files.last().unwrap();
    // Cut the tail right after its header plus a few bytes: no record left.
    let f = fs::OpenOptions::new().write(true).open(tail).unwrap();
    f.set_len(100).unwrap();
    drop(f);
    let (log, report) = Log::open(dir.path(), cfg(false)).unwrap();
    let next = log.next_seq();
    assert!(report.truncated.len() <= 1);
    let p = payload(next);
    log.append(&RecordRef {
        seq: next,
        topic_id: next % 3,
        topic_seq: next,
        timestamp_ns: next,
        origin: 1,
        event_type: b"ev",
        payload: &p,
        key: b"",
    })
    .unwrap();
    assert!(check_contents(&log) > 0);
    // One in-memory segment per file: the empty tail was replaced, not shadowed.
    assert_eq!(log.stats().segments, segment_files(dir.path()).len());
    drop(log);
    let (log, _) = Log::open(dir.path(), cfg(false)).unwrap();
    assert_eq!(log.last_seq(), Some(next));
    check_contents(&log);
    assert!(verify_dir(dir.path()).unwrap().is_clean());
}
