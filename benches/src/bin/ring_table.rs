//! Prints the ring benchmark as a markdown table: Herald's ring against
//! `tokio::sync::broadcast`, `bus`, `disruptor` and `crossbeam-channel`,
//! 1 publisher → 1, 4, 16 subscribers, 64-byte messages; throughput and
//! one-way latency flat-out and paced; publish cost at 1 vs 64 subscribers.
//!
//! ```text
//! cargo run --release -p herald-benches --bin ring_table [-- [--quick] [--runs N] [--systems ID,..] [--subs N,..]]
//! ```
//! Progress goes to stderr, the table to stdout.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use herald_benches::report::{
    fmt_ns, fmt_rate, fmt_ratio, locked_version, machine_description, median,
    toolchain_and_revision, CpuMeter,
};
use herald_benches::ring::{publish_cost, run, Pace, System, Workload, CAPACITY, MSG_LEN};

const COMMAND: &str = "cargo run --release -p herald-benches --bin ring_table";
const SUBSCRIBERS: [usize; 3] = [1, 4, 16];
const COST_SUBSCRIBERS: [usize; 2] = [1, 64];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    FlatOut,
    Paced,
}

/// The figures of one run, kept to take medians over runs.
#[derive(Debug, Clone, Copy)]
struct Figures {
    per_sub: f64,
    aggregate: f64,
    publish: f64,
    delivered: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

const FIELDS: [fn(&Figures) -> f64; 8] = [
    |f| f.per_sub,
    |f| f.aggregate,
    |f| f.publish,
    |f| f.delivered,
    |f| f.p50,
    |f| f.p99,
    |f| f.p999,
    |f| f.max,
];

fn median_figures(runs: &[Figures]) -> Figures {
    let m: Vec<f64> = FIELDS
        .iter()
        .map(|field| median(&runs.iter().map(field).collect::<Vec<_>>()))
        .collect();
    Figures {
        per_sub: m[0],
        aggregate: m[1],
        publish: m[2],
        delivered: m[3],
        p50: m[4],
        p99: m[5],
        p999: m[6],
        max: m[7],
    }
}

struct Config {
    quick: bool,
    systems: Vec<System>,
    subscribers: Vec<usize>,
    runs: usize,
    flat_messages: u64,
    rate: u64,
    paced_messages: u64,
    cost_rounds: usize,
    cost_batch: usize,
}

fn parse_args() -> Config {
    let mut quick = false;
    let mut runs = None;
    let mut systems = System::ALL.to_vec();
    let mut subscribers = SUBSCRIBERS.to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()),
            "--systems" => {
                let list = args.next().unwrap_or_default();
                systems = System::ALL
                    .into_iter()
                    .filter(|s| list.split(',').any(|id| id == s.id()))
                    .collect();
            }
            "--subs" => {
                let list = args.next().unwrap_or_default();
                subscribers = list.split(',').filter_map(|n| n.parse().ok()).collect();
            }
            "-h" | "--help" => {
                eprintln!("usage: ring_table [--quick] [--runs N] [--systems ID,..] [--subs N,..]");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other:?}; usage: ring_table [--quick] [--runs N] [--systems ID,..] [--subs N,..]");
                std::process::exit(2);
            }
        }
    }
    if quick {
        Config {
            quick,
            systems,
            subscribers,
            runs: runs.unwrap_or(1),
            flat_messages: 20_000,
            rate: 100_000,
            paced_messages: 10_000,
            cost_rounds: 4,
            cost_batch: 1024,
        }
    } else {
        Config {
            quick,
            systems,
            subscribers,
            runs: runs.unwrap_or(5).max(1),
            flat_messages: 1_000_000,
            rate: 100_000,
            paced_messages: 150_000,
            cost_rounds: 40,
            cost_batch: 4096,
        }
    }
}

fn main() {
    let cfg = parse_args();
    let began = Instant::now();
    let meter = CpuMeter::start();
    let mut cases: HashMap<(Mode, usize, System), Vec<Figures>> = HashMap::new();
    let mut lost: HashMap<(Mode, usize, System), Vec<u64>> = HashMap::new();
    let mut failures = Vec::new();
    // Repetitions outermost and systems innermost: every system sees the same
    // spread of machine noise.
    for rep in 0..cfg.runs {
        for &subs in &cfg.subscribers {
            for mode in [Mode::FlatOut, Mode::Paced] {
                for &system in &cfg.systems {
                    let workload = match mode {
                        Mode::FlatOut => Workload {
                            subscribers: subs,
                            messages: cfg.flat_messages,
                            pace: Pace::FlatOut,
                            sample_every: 8,
                        },
                        Mode::Paced => Workload {
                            subscribers: subs,
                            messages: cfg.paced_messages,
                            pace: Pace::PerSecond(cfg.rate),
                            sample_every: 1,
                        },
                    };
                    let outcome = run(system, &workload);
                    if let Err(e) = outcome.check() {
                        failures.push(format!("{mode:?} {subs} subscribers: {e}"));
                    }
                    let f = Figures {
                        per_sub: outcome.per_subscriber_rate(),
                        aggregate: outcome.aggregate_rate(),
                        publish: outcome.publish_rate(),
                        delivered: outcome.delivered_fraction(),
                        p50: outcome.latency_ns(0.5),
                        p99: outcome.latency_ns(0.99),
                        p999: outcome.latency_ns(0.999),
                        max: outcome.latency.max() as f64,
                    };
                    eprintln!(
                        "[{:>5.1}s] run {}/{} {:?} {:>2} subs {:<20} {:>11}/sub  delivered {:>6.2}%  p50 {:>9} p99.9 {:>9} max {:>9}",
                        began.elapsed().as_secs_f64(),
                        rep + 1,
                        cfg.runs,
                        mode,
                        subs,
                        system.name(),
                        fmt_rate(f.per_sub),
                        f.delivered * 100.0,
                        fmt_ns(f.p50),
                        fmt_ns(f.p999),
                        fmt_ns(f.max)
                    );
                    cases.entry((mode, subs, system)).or_default().push(f);
                    lost.entry((mode, subs, system))
                        .or_default()
                        .push(outcome.lost());
                }
            }
        }
    }
    let mut costs: HashMap<(usize, System), Vec<f64>> = HashMap::new();
    for _ in 0..cfg.runs {
        for &system in &cfg.systems {
            for subs in COST_SUBSCRIBERS {
                let ns = median(&publish_cost(system, subs, cfg.cost_rounds, cfg.cost_batch));
                eprintln!(
                    "[{:>5.1}s] publish cost {:<20} {subs:>2} subs: {}",
                    began.elapsed().as_secs_f64(),
                    system.name(),
                    fmt_ns(ns)
                );
                costs.entry((subs, system)).or_default().push(ns);
            }
        }
    }
    let medians: HashMap<_, _> = cases.iter().map(|(k, v)| (*k, median_figures(v))).collect();
    let cost: HashMap<_, _> = costs.iter().map(|(k, v)| (*k, median(v))).collect();
    let others = meter.others_busy();
    print!(
        "{}",
        render(
            &cfg,
            &medians,
            &lost,
            &cost,
            began.elapsed().as_secs_f64(),
            others
        )
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}

fn render(
    cfg: &Config,
    m: &HashMap<(Mode, usize, System), Figures>,
    lost: &HashMap<(Mode, usize, System), Vec<u64>>,
    cost: &HashMap<(usize, System), f64>,
    seconds: f64,
    others: Option<f64>,
) -> String {
    let mut out = String::new();
    let v = |name| locked_version(name).unwrap_or("?");
    let cmd = if cfg.quick {
        format!("{COMMAND} -- --quick")
    } else {
        COMMAND.to_string()
    };
    let _ = writeln!(out, "- **Machine**: {}", machine_description());
    let _ = writeln!(out, "- **Toolchain**: {}", toolchain_and_revision());
    let _ = writeln!(
        out,
        "- **Peers**: tokio {} (`sync::broadcast`), bus {}, disruptor {}, crossbeam-channel {}; histograms: hdrhistogram {}",
        v("tokio"),
        v("bus"),
        v("disruptor"),
        v("crossbeam-channel"),
        v("hdrhistogram")
    );
    let _ = writeln!(
        out,
        "- **Command**: `{cmd}` ({} run(s) per case, medians; whole run {seconds:.0} s)",
        cfg.runs
    );
    if let Some(others) = others {
        let _ = writeln!(
            out,
            "- **Noise**: other processes used {:.0}% of the machine's CPU time during the run",
            others * 100.0
        );
    }
    let _ = writeln!(
        out,
        "- **Workload**: 1 publisher thread → 1/4/16 subscriber threads, {MSG_LEN}-byte messages, every system holding {CAPACITY} messages. \
         Flat-out: {} messages as fast as accepted, latency sampled on every 8th message. \
         Paced: {} msg/s for {} messages, latency of every message. \
         One-way latency = receive time − timestamp taken just before the publish call (same `Instant` origin). \
         Every wait, in every system, is `try_*` + crossbeam `Backoff::snooze` (Herald's default `SpinYield`).",
        cfg.flat_messages,
        cfg.rate,
        cfg.paced_messages
    );
    let _ = writeln!(out);

    // Flat-out table.
    let _ = writeln!(out, "#### Flat-out throughput and latency");
    let _ = writeln!(out);
    let _ = writeln!(out, "| subs | system | delivery | msg/s per subscriber | aggregate | publish rate | delivered | p50 | p99 | p99.9 | max |");
    let _ = writeln!(
        out,
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for subs in SUBSCRIBERS {
        for system in System::ALL {
            let Some(f) = m.get(&(Mode::FlatOut, subs, system)) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {subs} | {} | {} | {} | {} | {} | {:.1}% | {} | {} | {} | {} |",
                system.name(),
                if system.is_lossy() {
                    "lossy"
                } else {
                    "lossless"
                },
                fmt_rate(f.per_sub),
                fmt_rate(f.aggregate),
                fmt_rate(f.publish),
                f.delivered * 100.0,
                fmt_ns(f.p50),
                fmt_ns(f.p99),
                fmt_ns(f.p999),
                fmt_ns(f.max)
            );
        }
    }
    let _ = writeln!(out);

    // Paced table.
    let _ = writeln!(out, "#### Paced latency ({} msg/s)", cfg.rate);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| subs | system | p50 | p99 | p99.9 | max | lost (all runs) |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|");
    for subs in SUBSCRIBERS {
        for system in System::ALL {
            let Some(f) = m.get(&(Mode::Paced, subs, system)) else {
                continue;
            };
            let l: u64 = lost
                .get(&(Mode::Paced, subs, system))
                .map_or(0, |v| v.iter().sum());
            let _ = writeln!(
                out,
                "| {subs} | {} | {} | {} | {} | {} | {l} |",
                system.name(),
                fmt_ns(f.p50),
                fmt_ns(f.p99),
                fmt_ns(f.p999),
                fmt_ns(f.max)
            );
        }
    }
    let _ = writeln!(out);

    // Ratios.
    let _ = writeln!(out, "#### Ratios Herald / peer");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Throughput: above 1× means Herald delivers more per second. Latency: below 1× means Herald is faster. \
         Lossless peers are compared with tethered Herald, lossy tokio with both."
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| subs | peer | Herald | throughput | flat p50 | flat p99 | flat p99.9 | flat max | paced p50 | paced p99 | paced p99.9 | paced max |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for subs in SUBSCRIBERS {
        for (peer, herald) in pairs() {
            let get = |mode, s| m.get(&(mode, subs, s));
            let (Some(hf), Some(pf), Some(hp), Some(pp)) = (
                get(Mode::FlatOut, herald),
                get(Mode::FlatOut, peer),
                get(Mode::Paced, herald),
                get(Mode::Paced, peer),
            ) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {subs} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                peer.name(),
                herald_label(herald),
                fmt_ratio(hf.per_sub / pf.per_sub),
                fmt_ratio(hf.p50 / pf.p50),
                fmt_ratio(hf.p99 / pf.p99),
                fmt_ratio(hf.p999 / pf.p999),
                fmt_ratio(hf.max / pf.max),
                fmt_ratio(hp.p50 / pp.p50),
                fmt_ratio(hp.p99 / pp.p99),
                fmt_ratio(hp.p999 / pp.p999),
                fmt_ratio(hp.max / pp.max)
            );
        }
    }
    let _ = writeln!(out);

    // Publish cost.
    let _ = writeln!(out, "#### Publish cost, 1 vs 64 subscribers");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Single thread: the subscribers exist but do not run while the publisher does. Each round publishes {} messages \
         (timed; never enough to make any system wait or overwrite), then the same thread drains every subscriber (not timed); \
         {} rounds, median ns per publish, median of runs.",
        cfg.cost_batch, cfg.cost_rounds
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| system | 1 subscriber | 64 subscribers | 64 vs 1 |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for system in System::ALL {
        let (Some(&one), Some(&many)) = (cost.get(&(1, system)), cost.get(&(64, system))) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:+.1}% |",
            system.name(),
            fmt_ns(one),
            fmt_ns(many),
            (many / one - 1.0) * 100.0
        );
    }
    let _ = writeln!(out);

    // Targets.
    let _ = writeln!(out, "#### Targets (docs/DESIGN.md, ring rows)");
    let _ = writeln!(out);
    let _ = writeln!(out, "| target | subs | Herald | measured | status |");
    let _ = writeln!(out, "|---|---:|---|---:|---|");
    let status = |ok: bool| if ok { "met" } else { "**missed**" };
    for subs in SUBSCRIBERS {
        let f = |mode, s| m.get(&(mode, subs, s)).copied();
        for herald in [System::Herald, System::HeraldTethered] {
            let label = herald_label(herald);
            if let (Some(h), Some(t)) = (f(Mode::FlatOut, herald), f(Mode::FlatOut, System::Tokio))
            {
                let r = h.per_sub / t.per_sub;
                let _ = writeln!(
                    out,
                    "| throughput ≥ 2× tokio::broadcast | {subs} | {label} | {} | {} |",
                    fmt_ratio(r),
                    status(r >= 2.0)
                );
            }
        }
        for herald in [System::HeraldTethered, System::HeraldTetheredShared] {
            if let (Some(h), Some(d)) = (
                f(Mode::FlatOut, herald),
                f(Mode::FlatOut, System::Disruptor),
            ) {
                let r = h.per_sub / d.per_sub;
                let _ = writeln!(
                    out,
                    "| throughput ≥ disruptor | {subs} | {} | {} | {} |",
                    herald_label(herald),
                    fmt_ratio(r),
                    status(r >= 1.0)
                );
            }
        }
        for (peer, herald) in [
            (System::Tokio, System::Herald),
            (System::Disruptor, System::HeraldTethered),
        ] {
            let label = herald_label(herald);
            for (mode, name) in [(Mode::Paced, "paced"), (Mode::FlatOut, "flat-out")] {
                if let (Some(h), Some(p)) = (f(mode, herald), f(mode, peer)) {
                    let r = h.p999 / p.p999;
                    let _ = writeln!(
                        out,
                        "| p99.9 latency ≤ {} ({name}) | {subs} | {label} | {} vs {} ({}) | {} |",
                        peer.name(),
                        fmt_ns(h.p999),
                        fmt_ns(p.p999),
                        fmt_ratio(r),
                        status(r <= 1.0)
                    );
                }
            }
        }
    }
    for herald in [System::Herald, System::HeraldTethered] {
        if let (Some(&one), Some(&many)) = (cost.get(&(1, herald)), cost.get(&(64, herald))) {
            let d = (many / one - 1.0) * 100.0;
            let _ = writeln!(
                out,
                "| publish cost 1 vs 64 subscribers within 10% | 1→64 | {} | {d:+.1}% | {} |",
                herald_label(herald),
                status(d.abs() <= 10.0)
            );
        }
    }
    out
}

/// How the tables name a Herald configuration.
fn herald_label(herald: System) -> &'static str {
    match herald {
        System::Herald => "untethered",
        System::HeraldTetheredShared => "tethered, shared publisher",
        _ => "tethered",
    }
}

/// (peer, the Herald configuration it is compared with).
fn pairs() -> Vec<(System, System)> {
    vec![
        (System::Tokio, System::Herald),
        (System::Tokio, System::HeraldTethered),
        (System::Disruptor, System::HeraldTethered),
        (System::Disruptor, System::HeraldTetheredShared),
        (System::Bus, System::HeraldTethered),
        (System::Crossbeam, System::HeraldTethered),
    ]
}
