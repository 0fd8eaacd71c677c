//! How long the slowest publishes wait: one thread publishes `--events`
//! (default 10 M) 64-byte events to one topic as fast as it can, through the
//! broker with its default configuration (16 MiB ring, 64 MiB prefaulted
//! segments, durability `interval:100`), and records every publish call's
//! time in an HDR histogram. Log maintenance done on the publisher's path
//! (segment rolls, index growth, retention) shows up as the maximum and as
//! the count of publishes over 1 ms.
//!
//! ```text
//! cargo run --release -p herald-benches --bin publish_stalls [-- --events N] [--topics N] [--rate R] [--max-bytes B] [--sync-ms MS] [--why 1]
//! ```
//! `--max-bytes B` sets retention by total bytes (default: none), so that
//! rolls also delete segments. `--sync-ms MS` sets the durability to
//! `interval:MS` (default 100; 0: `never`). `--why 1` also reads the
//! thread's resource usage around every publish (two `getrusage` calls,
//! which slow each publish a little) and says of each publish over 1 ms
//! whether the thread slept in it (a voluntary context switch: a page
//! fault waiting for a page under write-back, a lock), was preempted (only
//! involuntary switches: the scheduler ran something else), or neither,
//! with its page faults. `--rate R` paces the publisher at R
//! events/s (default: flat out). Flat
//! out, the log is written faster than the kernel writes dirty pages back,
//! and the kernel throttles the writer: stalls then measure the disk, not
//! Herald; a paced run below the disk's rate isolates Herald's own.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald_benches::report::{fmt_ns, machine_description, toolchain_and_revision};
use herald_core::broker::PublishOptions;
use herald_core::log::Durability;
use herald_core::{Broker, BrokerConfig};

fn main() {
    let mut events: u64 = 10_000_000;
    let mut topics: u64 = 1;
    let mut rate: u64 = 0;
    let mut max_bytes: Option<u64> = None;
    let mut why = false;
    let mut sync_ms: u64 = 100;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--events", Some(v)) => events = v,
            ("--topics", Some(v)) => topics = v.max(1),
            ("--rate", Some(v)) => rate = v,
            ("--max-bytes", Some(v)) => max_bytes = Some(v),
            ("--why", Some(v)) => why = v != 0,
            ("--sync-ms", Some(v)) => sync_ms = v,
            _ => {
                eprintln!(
                    "usage: publish_stalls [--events N] [--topics N] [--rate R] [--max-bytes B] [--sync-ms MS] [--why 1]"
                );
                std::process::exit(2);
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("herald-publish-stalls")
        .tempdir()
        .expect("temp dir");
    let mut config = BrokerConfig::new(dir.path());
    config.log.durability = match sync_ms {
        0 => Durability::Never,
        ms => Durability::Interval(Duration::from_millis(ms)),
    };
    config.log.retention.max_bytes = max_bytes;
    let broker = Broker::open(config).expect("open broker");
    let publishers: Vec<_> = (0..topics)
        .map(|t| broker.publisher(&format!("bench.t{t}")).expect("publisher"))
        .collect();
    let payload = [b'x'; 64];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let mut over_1ms = 0u64;
    let mut slowest: Vec<(u64, u64)> = Vec::new();
    let mut stalls: Vec<Stall> = Vec::new();
    let start = Instant::now();
    for i in 0..events {
        if let Some(offset) = (i * 1_000_000_000).checked_div(rate) {
            let due = start + Duration::from_nanos(offset);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        let p = &publishers[(i % topics) as usize];
        let before = why.then(Usage::now);
        let t = Instant::now();
        p.publish("e", &payload, PublishOptions::default())
            .expect("publish");
        let ns = t.elapsed().as_nanos() as u64;
        hist.record(ns.max(1)).expect("record");
        if ns > 1_000_000 {
            over_1ms += 1;
            if let Some(before) = before {
                stalls.push(Stall {
                    event: i,
                    ns,
                    usage: Usage::now().minus(&before),
                });
            }
        }
        if slowest.len() < 5 || ns > slowest[4].1 {
            slowest.push((i, ns));
            slowest.sort_by_key(|s| std::cmp::Reverse(s.1));
            slowest.truncate(5);
        }
    }
    let elapsed = start.elapsed();
    println!("- **Machine**: {}", machine_description());
    println!("- **Build**: {}", toolchain_and_revision());
    let retention = max_bytes.map_or(String::new(), |b| format!(" --max-bytes {b}"));
    println!(
        "- **Command**: `cargo run --release -p herald-benches --bin publish_stalls -- --events {events} --topics {topics} --rate {rate} --sync-ms {sync_ms}{retention}{}`",
        if why { " --why 1" } else { "" }
    );
    println!();
    println!("| events | topics | publishes/s | p50 | p99 | p99.9 | p99.99 | max | publishes over 1 ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let q = |p: f64| fmt_ns(hist.value_at_quantile(p) as f64);
    println!(
        "| {events} | {topics} | {:.0} | {} | {} | {} | {} | {} | {over_1ms} |",
        events as f64 / elapsed.as_secs_f64(),
        q(0.5),
        q(0.99),
        q(0.999),
        q(0.9999),
        fmt_ns(hist.max() as f64),
    );
    let list: Vec<String> = slowest
        .iter()
        .map(|(i, ns)| format!("#{i}: {}", fmt_ns(*ns as f64)))
        .collect();
    println!(
        "\nSlowest publishes (event index: time): {}",
        list.join(", ")
    );
    if why {
        print_stalls(&stalls);
    }
}

/// The calling thread's resource usage (`getrusage(RUSAGE_THREAD)`).
#[derive(Debug, Clone, Copy)]
struct Usage {
    voluntary: u64,
    involuntary: u64,
    minor_faults: u64,
    major_faults: u64,
}

impl Usage {
    fn now() -> Usage {
        // SAFETY: `getrusage` writes one `rusage` into the zeroed value it
        // is given, which lives for the call.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
            ru
        };
        Usage {
            voluntary: ru.ru_nvcsw as u64,
            involuntary: ru.ru_nivcsw as u64,
            minor_faults: ru.ru_minflt as u64,
            major_faults: ru.ru_majflt as u64,
        }
    }

    fn minus(&self, earlier: &Usage) -> Usage {
        Usage {
            voluntary: self.voluntary - earlier.voluntary,
            involuntary: self.involuntary - earlier.involuntary,
            minor_faults: self.minor_faults - earlier.minor_faults,
            major_faults: self.major_faults - earlier.major_faults,
        }
    }

    /// Why a publish took long: it slept, it was preempted, or neither.
    fn verdict(&self) -> &'static str {
        if self.voluntary > 0 {
            "slept"
        } else if self.involuntary > 0 {
            "preempted"
        } else {
            "on CPU"
        }
    }
}

/// A publish over 1 ms and the thread's resource usage during it.
struct Stall {
    event: u64,
    ns: u64,
    usage: Usage,
}

fn print_stalls(stalls: &[Stall]) {
    println!("\nPublishes over 1 ms, by what the thread did during them (`getrusage`):\n");
    println!("| verdict | publishes | with page faults |");
    println!("|---|---:|---:|");
    for verdict in ["slept", "preempted", "on CPU"] {
        let of: Vec<&Stall> = stalls
            .iter()
            .filter(|s| s.usage.verdict() == verdict)
            .collect();
        let faulted = of
            .iter()
            .filter(|s| s.usage.minor_faults + s.usage.major_faults > 0)
            .count();
        println!("| {verdict} | {} | {faulted} |", of.len());
    }
    println!("\n| event | time | voluntary / involuntary switches | minor / major faults |");
    println!("|---:|---:|---:|---:|");
    for s in stalls {
        let u = &s.usage;
        println!(
            "| {} | {} | {} / {} | {} / {} |",
            s.event,
            fmt_ns(s.ns as f64),
            u.voluntary,
            u.involuntary,
            u.minor_faults,
            u.major_faults
        );
    }
}
