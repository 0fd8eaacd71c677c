//! Log benchmarks: append throughput per payload size and durability policy
//! against a `BufWriter<File>` baseline writing the same framing, replay
//! throughput, and reopen time of a 1 GiB log after SIGKILL. Prints a
//! markdown section for `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo build -p herald-benches --release --bin log_bench
//! target/release/log_bench            # full run
//! target/release/log_bench --quick    # smaller volumes, 1 run each
//! target/release/log_bench --append-only 64   # one Never append run (profiling)
//! target/release/log_bench --prefaulted       # 64 B appends into a prefaulted segment
//! ```
//! Files go to a temporary directory (`$TMPDIR`, default /tmp) and are deleted.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_benches::report::{machine_description, toolchain_and_revision};
use herald_core::log::{Durability, Log, LogConfig, ReadItem, RecordRef};

const EVENT_TYPE: &[u8] = b"bench.event";
const HEADER: usize = 56;
const SEG: u64 = 64 << 20;

fn framed_len(payload: usize) -> usize {
    (HEADER + EVENT_TYPE.len() + payload + 7) & !7
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_size: SEG,
        durability,
        ..LogConfig::default()
    }
}

fn rec(seq: u64, payload: &[u8]) -> RecordRef<'_> {
    RecordRef {
        seq,
        topic_id: seq & 1023,
        topic_seq: seq,
        timestamp_ns: seq,
        origin: 7,
        event_type: EVENT_TYPE,
        payload,
        key: b"",
    }
}

/// Records/s appending `n` records (or for `limit`, whichever comes first) from `threads` threads.
fn append_rate(
    durability: Durability,
    payload: usize,
    n: u64,
    limit: Duration,
    threads: usize,
) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config(durability)).unwrap();
    let data = vec![0x5a_u8; payload];
    let order = Mutex::new(());
    let start = Instant::now();
    let done = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let info = {
                    let _g = (threads > 1).then(|| order.lock().unwrap());
                    let seq = log.next_seq();
                    if seq > n || (seq & 255 == 0 && start.elapsed() > limit) {
                        break;
                    }
                    log.append_nowait(&rec(seq, &data)).unwrap()
                };
                if durability == Durability::Always {
                    log.wait_durable(info.seq).unwrap();
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let count = done.load(std::sync::atomic::Ordering::Relaxed) as f64;
    drop(log);
    count / secs
}

/// Records/s writing the same framing (header with CRC32C, type, payload,
/// padding) through a `BufWriter<File>`; with `sync`, `fdatasync` after each.
fn bufwriter_rate(payload: usize, n: u64, limit: Duration, sync: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let file = File::create(dir.path().join("baseline.log")).unwrap();
    let mut w = BufWriter::new(file);
    let data = vec![0x5a_u8; payload];
    let pad = [0u8; 8];
    let len = HEADER + EVENT_TYPE.len() + payload;
    let start = Instant::now();
    let mut count = 0u64;
    for seq in 1..=n {
        let mut h = [0u8; HEADER];
        h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..24].copy_from_slice(&(seq & 1023).to_le_bytes());
        h[24..32].copy_from_slice(&seq.to_le_bytes());
        h[32..40].copy_from_slice(&seq.to_le_bytes());
        h[40..48].copy_from_slice(&7u64.to_le_bytes());
        h[48] = EVENT_TYPE.len() as u8;
        h[52..56].copy_from_slice(&(payload as u32).to_le_bytes());
        let mut crc = crc32c::crc32c(&h[..4]);
        crc = crc32c::crc32c_append(crc, &h[8..]);
        crc = crc32c::crc32c_append(crc, EVENT_TYPE);
        crc = crc32c::crc32c_append(crc, &data);
        h[4..8].copy_from_slice(&crc.to_le_bytes());
        w.write_all(&h).unwrap();
        w.write_all(EVENT_TYPE).unwrap();
        w.write_all(&data).unwrap();
        w.write_all(&pad[..framed_len(payload) - len]).unwrap();
        count += 1;
        if sync {
            w.flush().unwrap();
            w.get_ref().sync_data().unwrap();
        }
        if seq & 255 == 0 && start.elapsed() > limit {
            break;
        }
    }
    w.flush().unwrap();
    count as f64 / start.elapsed().as_secs_f64()
}

fn replay_rate(payload: usize, n: u64, verify: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        verify_on_read: verify,
        ..config(Durability::Never)
    };
    let (log, _) = Log::open(dir.path(), cfg).unwrap();
    let data = vec![1u8; payload];
    for seq in 1..=n {
        log.append(&rec(seq, &data)).unwrap();
    }
    let start = Instant::now();
    let mut r = log.reader_from_seq(1).unwrap();
    let mut count = 0u64;
    let mut sum = 0u64;
    while let Some(item) = r.next_item() {
        if let Ok(ReadItem::Record(v)) = item {
            sum = sum.wrapping_add(v.payload.len() as u64);
            count += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(count, n);
    std::hint::black_box(sum);
    count as f64 / secs
}

/// The child side of the reopen benchmark: fill `dir` past `bytes`, print
/// READY, keep appending until killed.
fn reopen_child(dir: &str, bytes: u64, payload: usize) {
    let (log, _) = Log::open(dir, config(Durability::Never)).unwrap();
    let data = vec![3u8; payload];
    let per = framed_len(payload) as u64;
    let mut printed = false;
    loop {
        let seq = log.next_seq();
        log.append(&rec(seq, &data)).unwrap();
        if !printed && seq * per >= bytes {
            println!("READY {seq}");
            std::io::stdout().flush().unwrap();
            printed = true;
        }
        if printed {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

fn drop_caches() -> bool {
    // Root only; needs the data on disk first.
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Seconds to `Log::open` a ~`bytes` log left by a SIGKILLed writer:
/// `(warm page cache, cold page cache if it could be dropped, records)`.
fn reopen_times(bytes: u64, payload: usize, runs: usize) -> (Vec<f64>, Vec<f64>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--reopen-child",
            dir.path().to_str().unwrap(),
            &bytes.to_string(),
            &payload.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("READY"), "child: {line}");
    std::thread::sleep(Duration::from_millis(20));
    child.kill().unwrap(); // SIGKILL, mid-append
    child.wait().unwrap();
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    let mut records = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let (log, report) = Log::open(dir.path(), config(Durability::Never)).unwrap();
        warm.push(t.elapsed().as_secs_f64());
        records = report.records;
        drop(log);
    }
    for _ in 0..runs {
        if !drop_caches() {
            break;
        }
        let t = Instant::now();
        let (log, _) = Log::open(dir.path(), config(Durability::Never)).unwrap();
        cold.push(t.elapsed().as_secs_f64());
        drop(log);
    }
    (warm, cold, records)
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |d| {
        d.filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--reopen-child") {
        reopen_child(&args[2], args[3].parse().unwrap(), args[4].parse().unwrap());
        return;
    }
    if args.get(1).map(String::as_str) == Some("--reopen-only") {
        // One reopen measurement: --reopen-only MIB PAYLOAD
        let mib: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1024);
        let payload: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(256);
        let (mut warm, mut cold, records) = reopen_times(mib << 20, payload, 3);
        println!(
            "{records} records: warm {:.3} s, cold {:.3} s",
            median(&mut warm),
            median(&mut cold)
        );
        return;
    }
    if args.get(1).map(String::as_str) == Some("--prefaulted") {
        // Append cost without page faults: 64 B records into a segment the
        // prefault thread has finished populating.
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), config(Durability::Never)).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let data = vec![0x5a_u8; 64];
        let n = 400_000u64;
        let t = Instant::now();
        for seq in 1..=n {
            log.append(&rec(seq, &data)).unwrap();
        }
        println!(
            "{} rec/s in a prefaulted segment",
            fmt(n as f64 / t.elapsed().as_secs_f64())
        );
        return;
    }
    if args.get(1).map(String::as_str) == Some("--append-only") {
        // For profiling: one Never append run at the given payload size.
        let payload: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
        let n = (256u64 << 20) / framed_len(payload) as u64;
        let r = append_rate(Durability::Never, payload, n, Duration::from_secs(3600), 1);
        println!("{} rec/s", fmt(r));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let runs = if quick { 1 } else { 3 };
    let volume: u64 = if quick { 32 << 20 } else { 256 << 20 };
    let sync_limit = Duration::from_millis(if quick { 300 } else { 1000 });
    let _ = dir_size;

    println!("Machine: {}  ", machine_description());
    println!(
        "Build: {}, `--release` (fat LTO)  ",
        toolchain_and_revision()
    );
    println!(
        "Storage: the temp dir's file system ({})  ",
        std::env::temp_dir().display()
    );
    println!("Command: `cargo build -p herald-benches --release --bin log_bench && target/release/log_bench`  ");
    println!("Median of {runs} run(s) each. Rates count whole framed records (56 B header + 11 B type + payload, padded to 8 B).\n");

    println!("### Append throughput\n");
    println!(
        "| payload | policy | writers | herald log | GB/s | BufWriter<File> baseline | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for payload in [64usize, 256, 4096] {
        let n = volume / framed_len(payload) as u64;
        let big = Duration::from_secs(3600);
        let mut base: Vec<f64> = (0..runs)
            .map(|_| bufwriter_rate(payload, n, big, false))
            .collect();
        let base = median(&mut base);
        let mut base_sync: Vec<f64> = (0..runs)
            .map(|_| bufwriter_rate(payload, u64::MAX, sync_limit, true))
            .collect();
        let base_sync = median(&mut base_sync);
        let cases: [(&str, Durability, usize, f64); 4] = [
            ("Never", Durability::Never, 1, base),
            (
                "Interval(100 ms)",
                Durability::Interval(Duration::from_millis(100)),
                1,
                base,
            ),
            ("Always", Durability::Always, 1, base_sync),
            ("Always", Durability::Always, 2, base_sync),
        ];
        for (name, pol, threads, baseline) in cases {
            let limit = if pol == Durability::Always {
                sync_limit
            } else {
                big
            };
            let n = if pol == Durability::Always {
                u64::MAX
            } else {
                n
            };
            let mut v: Vec<f64> = (0..runs)
                .map(|_| append_rate(pol, payload, n, limit, threads))
                .collect();
            let r = median(&mut v);
            let gbs = r * framed_len(payload) as f64 / 1e9;
            let base_name = if pol == Durability::Always {
                "(+ fdatasync each)"
            } else {
                ""
            };
            println!(
                "| {payload} B | {name} | {threads} | {} rec/s | {gbs:.2} | {} rec/s {base_name} | {:.2}× |",
                fmt(r),
                fmt(baseline),
                r / baseline
            );
        }
    }

    println!("\n### Replay (one reader, borrowed records, from seq 1)\n");
    println!("| payload | CRC checked on read | records/s |");
    println!("|---|---|---|");
    let n = if quick { 500_000 } else { 4_000_000 };
    for verify in [true, false] {
        let mut v: Vec<f64> = (0..runs).map(|_| replay_rate(64, n, verify)).collect();
        println!(
            "| 64 B | {} | {} |",
            if verify { "yes (default)" } else { "no" },
            fmt(median(&mut v))
        );
    }

    println!("\n### Reopen after SIGKILL\n");
    println!("| log size | payload | records | open, warm page cache | open, cold page cache |");
    println!("|---|---|---|---|---|");
    let size: u64 = if quick { 128 << 20 } else { 1 << 30 };
    for payload in [256usize, 64] {
        let (mut warm, mut cold, records) = reopen_times(size, payload, runs);
        let cold_s = if cold.is_empty() {
            "not measured (needs root)".to_string()
        } else {
            format!("{:.3} s", median(&mut cold))
        };
        println!(
            "| {} MiB | {payload} B | {records} | {:.3} s | {cold_s} |",
            size >> 20,
            median(&mut warm)
        );
    }
}

fn fmt(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}
