//! How long the slowest publishes wait: one thread publishes `--events`
//! (default 10 M) 64-byte events to one topic as fast as it can, through the
//! broker with its default configuration (16 MiB ring, 64 MiB prefaulted
//! segments, durability `interval:100`), and records every publish call's
//! time in an HDR histogram. Log maintenance done on the publisher's path
//! (segment rolls, index growth, retention) shows up as the maximum and as
//! the count of publishes over 1 ms.
//!
//! ```text
//! cargo run --release -p herald-benches --bin publish_stalls [-- --events N] [--topics N] [--rate R] [--max-bytes B]
//! ```
//! `--max-bytes B` sets retention by total bytes (default: none), so that
//! rolls also delete segments. `--rate R` paces the publisher at R
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
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--events", Some(v)) => events = v,
            ("--topics", Some(v)) => topics = v.max(1),
            ("--rate", Some(v)) => rate = v,
            ("--max-bytes", Some(v)) => max_bytes = Some(v),
            _ => {
                eprintln!(
                    "usage: publish_stalls [--events N] [--topics N] [--rate R] [--max-bytes B]"
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
    config.log.durability = Durability::Interval(Duration::from_millis(100));
    config.log.retention.max_bytes = max_bytes;
    let broker = Broker::open(config).expect("open broker");
    let publishers: Vec<_> = (0..topics)
        .map(|t| broker.publisher(&format!("bench.t{t}")).expect("publisher"))
        .collect();
    let payload = [b'x'; 64];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let mut over_1ms = 0u64;
    let mut slowest: Vec<(u64, u64)> = Vec::new();
    let start = Instant::now();
    for i in 0..events {
        if let Some(offset) = (i * 1_000_000_000).checked_div(rate) {
            let due = start + Duration::from_nanos(offset);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        let p = &publishers[(i % topics) as usize];
        let t = Instant::now();
        p.publish("e", &payload, PublishOptions::default())
            .expect("publish");
        let ns = t.elapsed().as_nanos() as u64;
        hist.record(ns.max(1)).expect("record");
        if ns > 1_000_000 {
            over_1ms += 1;
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
        "- **Command**: `cargo run --release -p herald-benches --bin publish_stalls -- --events {events} --topics {topics} --rate {rate}{retention}`"
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
}
