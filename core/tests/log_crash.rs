//! Crash test: a child process (this test binary, re-executed) appends under
//! each durability policy from two threads and is killed with SIGKILL at a
//! random moment. After each kill the log must reopen, verify clean, hold
//! contiguous sequences with the expected contents, and contain every record
//! whose append had returned (the child prints `ACK <seq>` after each).
//!
//! Default: 50 kills per policy. `HERALD_LONG=1`: 300.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_core::log::{verify_dir, Durability, Log, LogConfig, LogItem, RecordRef};

const CHILD_DIR: &str = "HERALD_LOG_CRASH_DIR";
const CHILD_POLICY: &str = "HERALD_LOG_CRASH_POLICY";
/// Segments of 4 MiB (they get a spare made ahead of each roll) rather
/// than 128 KiB.
const CHILD_LARGE: &str = "HERALD_LOG_CRASH_LARGE";

fn policy(name: &str) -> Durability {
    match name {
        "never" => Durability::Never,
        "interval" => Durability::Interval(Duration::from_millis(2)),
        _ => Durability::Always,
    }
}

fn config(name: &str, large: bool) -> LogConfig {
    LogConfig {
        segment_size: if large { 4 << 20 } else { 128 << 10 },
        durability: policy(name),
        ..LogConfig::default()
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let n = (seq.wrapping_mul(2654435761) % 700) as usize;
    (0..n)
        .map(|i| (seq as u8) ^ (i as u8).wrapping_mul(31))
        .collect()
}

/// The child: append forever from two threads, acknowledging each record on stdout.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(pol)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_POLICY)) else {
        return;
    };
    let (log, _) =
        Log::open(&dir, config(&pol, std::env::var(CHILD_LARGE).is_ok())).expect("child open");
    let order = Mutex::new(());
    let out = Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let info = {
                    let _g = order.lock().unwrap();
                    let seq = log.next_seq();
                    let p = payload(seq);
                    let rec = RecordRef {
                        seq,
                        topic_id: seq % 7,
                        topic_seq: seq,
                        timestamp_ns: seq,
                        origin: seq,
                        event_type: b"crash.test",
                        payload: &p,
                        key: b"",
                    };
                    log.append_nowait(&rec).expect("append")
                };
                if pol == "always" {
                    log.wait_durable(info.seq).expect("sync");
                }
                let mut o = out.lock().unwrap();
                writeln!(o, "ACK {}", info.seq).unwrap();
                o.flush().unwrap();
            });
        }
    });
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check_after_crash(dir: &Path, pol: &str, large: bool, acked: &[u64]) -> (u64, bool) {
    let (log, report) =
        Log::open(dir, config(pol, large)).unwrap_or_else(|e| panic!("{pol}: reopen failed: {e}"));
    let v = verify_dir(dir).unwrap();
    assert!(
        v.is_clean(),
        "{pol}: verify after recovery: {v:?} (recovery: {report:?})"
    );
    let mut expect = log.first_seq();
    for item in log.reader_from_seq(expect).unwrap() {
        match item.unwrap_or_else(|e| panic!("{pol}: read error {e}")) {
            LogItem::Record(r) => {
                assert_eq!(r.seq, expect, "{pol}: sequences must be contiguous");
                assert_eq!(r.payload, payload(r.seq), "{pol}: payload of {}", r.seq);
                assert_eq!(
                    (r.topic_id, r.topic_seq, r.origin),
                    (r.seq % 7, r.seq, r.seq)
                );
                expect += 1;
            }
            LogItem::Gap { from, to } => panic!("{pol}: gap {from}..={to} without retention"),
        }
    }
    let last = expect - 1;
    if let Some(&max_ack) = acked.iter().max() {
        assert!(
            max_ack <= last,
            "{pol}: acknowledged seq {max_ack} lost (log ends at {last}; {report:?})"
        );
    }
    (last, !report.truncated.is_empty())
}

fn run(pol: &str, kills: usize, seed: u64, large: bool) {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(seed);
    let mut total_acked = 0usize;
    let mut last = 0;
    let mut torn = 0;
    for i in 0..kills {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_POLICY, pol)
            .envs(large.then_some((CHILD_LARGE, "1")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut acked = Vec::new();
        let mut line = String::new();
        // Three kills in four land while appending; the rest at a random moment
        // from the start (possibly during recovery).
        if i % 4 != 3 {
            loop {
                line.clear();
                if out.read_line(&mut line).unwrap() == 0 {
                    let mut err = String::new();
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    panic!("{pol}: child exited before appending: {err}");
                }
                if let Some(s) = line.trim().strip_prefix("ACK ") {
                    acked.push(s.parse::<u64>().unwrap());
                    break;
                }
            }
        }
        // Large segments: longer runs, so that rolls (and spares) happen.
        let window = if large { 40_000 } else { 8000 };
        std::thread::sleep(Duration::from_micros(rng.next() % window));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for l in out.lines() {
            if let Some(s) = l.unwrap().trim().strip_prefix("ACK ") {
                acked.push(s.parse().unwrap());
            }
        }
        total_acked += acked.len();
        let (now, truncated) = check_after_crash(dir.path(), pol, large, &acked);
        torn += usize::from(truncated);
        assert!(now >= last, "{pol}: the log shrank from {last} to {now}");
        last = now;
    }
    assert!(
        total_acked > kills,
        "{pol}: the children barely appended ({total_acked} acks)"
    );
    eprintln!("{pol}: {kills} kills, {total_acked} acknowledged appends, {torn} torn tails truncated, log ends at {last}");
    if large {
        // The kills landed across rolls (spares exist only past the first
        // half of a segment).
        let (log, _) = Log::open(dir.path(), config(pol, true)).unwrap();
        let segments = log.stats().segments;
        assert!(
            segments >= 3,
            "{pol}: only {segments} segments: too few rolls"
        );
    }
}

fn kills() -> usize {
    if std::env::var("HERALD_LONG").is_ok_and(|v| v == "1") {
        300
    } else {
        50
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {t}");
    t | 1
}

#[test]
fn sigkill_under_never_keeps_every_returned_append() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let started = Instant::now();
    run("never", kills(), seed(), false);
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn sigkill_under_interval_keeps_every_returned_append() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    run("interval", kills(), seed(), false);
}

#[test]
fn sigkill_under_always_keeps_every_acknowledged_append() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    run("always", kills(), seed(), false);
}

#[test]
fn sigkill_across_rolls_onto_spare_segments_keeps_every_returned_append() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    run("interval", kills() / 2, seed(), true);
}
