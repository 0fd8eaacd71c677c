//! Prints the server benchmark (`docs/DESIGN.md`, "Performance targets", server rows) as markdown
//! tables: Herald's server against `nats-server`, each started by this
//! program as a separate process on a free loopback port (and killed at the
//! end), both driven by the same load generator in this process.
//!
//! 1. **Fan-out**: 1 publisher → N subscribers (default 1 000) of one topic,
//!    128-byte payloads. Herald: WebSocket subscribers (`/v1/ws`, one
//!    `subscribe` each) and one WebSocket publisher sending pipelined
//!    `publish` ops (acks counted by a reader thread, never waited for).
//!    nats-server: plain NATS text protocol over TCP (`CONNECT`, `SUB`,
//!    `PUB`). Measured: saturated deliveries/s (closed loop: the publisher
//!    keeps at most `--window` events in flight per subscriber, on average),
//!    the highest paced publish rate the subscribers keep up with (searched:
//!    a step keeps up if everything arrives within 5 % of the step, 100 ms at
//!    least, after its last publish), and end-to-end latency at half of each
//!    system's own maximum, at 1, 10, 25 and 50 % of the lower of the two
//!    maxima (the same load for both), and at a steady 100 000 events/s
//!    where both keep up with it (skipped otherwise, with a note).
//! 2. **Latency at 10k connections**: `--connections` open (default 10 000,
//!    lowered to what the open-file limit allows: one descriptor per
//!    connection in each process); `--latency-subscribers` of them
//!    (one case per value, default 100 and 1) subscribe to the measured
//!    topic, half of the rest to a topic each that never receives anything,
//!    the others only handshake; a paced publisher at `--rate-10k`.
//! 3. **Memory per idle connection**: the server's VmRSS before and after
//!    `--mem-connections` idle connections, handshake only, then subscribed
//!    (all to one topic; in a second server process, each to its own topic).
//!
//! `--subscribers 1` measures ingest (one connection publishing flat out);
//! `--publish-batch N` makes Herald's publisher send `N` events per
//! `publish` op (`"events":[…]`, one acknowledgement), NATS's publisher
//! already writes every due `PUB` in one `write`. `--ws-batch N,D` makes
//! Herald's WebSocket subscribers ask for batched delivery (up to `N`
//! events per `events` message, waiting up to `D` ms to fill one); NATS
//! has no such mode and delivers one `MSG` per event.
//!
//! Every server is a fresh process per fixture, with its own temporary data
//! directory. Herald runs `herald serve` with a configuration file that only
//! raises its connection limits (every client comes from 127.0.0.1), plus
//! `--herald-config` lines if given; nats-server runs with its defaults.
//! Peers alternate order between runs; figures are medians of `--runs`.
//!
//! ```text
//! cargo build --release -p herald-server --bin herald
//! cargo run --release -p herald-benches --bin server_bench [-- [--quick] [--runs N]
//!     [--only fanout,conn10k,memory] [--subscribers N] [--connections N] ...]
//! ```
//! (`--help` lists every option.) Progress goes to stderr, the tables to
//! stdout. Results and method: `docs/BENCHMARKS.md`, "Server".
//!
//! Load generator: `--client-threads` threads (default 1), each driving its
//! share of the subscriber connections with one `mio` poll: a minimal
//! WebSocket client (fixed `Sec-WebSocket-Key`, masked client frames with a
//! fixed mask, a parser for the server's unmasked frames) and a minimal NATS
//! client. The publisher runs on the main thread with a blocking socket.
//! Every payload is the JSON object `{"p":"xx…","t":<19 digits>}` (128 bytes,
//! keys in sorted order so Herald's JSON re-encoding leaves it byte for byte
//! as sent); `t` is 10^18 + nanoseconds since this process's clock origin,
//! taken just before the publisher's `write` (one `write` per batch of what
//! is due). Receivers read the clock once per `read` call and record
//! `now − t` for every event in an hdrhistogram: latency is end-to-end,
//! publisher's write to subscriber's read, queueing in either process
//! included.

mod config;
mod conn10k;
mod fanout;
mod fixture;
mod measure;
mod memory;
mod report;
mod servers;

use std::fmt::Write as _;
use std::fs;
use std::sync::atomic::Ordering;
use std::time::Instant;

use herald_benches::load::{now_ns, Peer, PAYLOAD};
use herald_benches::report::{
    fmt_ns, fmt_rate, fmt_ratio, locked_version, machine_description, machine_ticks, median,
    proc_ticks,
};

use config::{parse_args, Config};
use conn10k::{conn10k_run, ConnRun};
use fanout::{fanout_run, latency_cases, FanoutRun, LatCase, STEADY_RATE};
use fixture::Notes;
use measure::Lat;
use memory::{memory_run, MemRun};
use report::{binary_is_stale, fmt_bytes, git, loadavg, spread, version_of, yes};
use servers::{order, raise_nofile, SERVER_TICKS};

const COMMAND: &str = "cargo run --release -p herald-benches --bin server_bench";

fn main() {
    let mut cfg = parse_args();
    // Sets the clock origin of the payload stamps before any client runs.
    let _ = now_ns();
    let files = fit_open_files(&mut cfg);
    let build = Build::check(&mut cfg);
    let mut noise = Noise::start();
    let mut notes = Notes::default();

    let fanout = if cfg.fanout {
        fanout_runs(&cfg, &mut notes)
    } else {
        Vec::new()
    };
    let conn = if cfg.conn10k {
        conn10k_runs(&cfg, &mut notes)
    } else {
        Vec::new()
    };
    let mem = if cfg.memory {
        memory_runs(&cfg, &mut notes)
    } else {
        Vec::new()
    };
    noise.stop();

    let mut out = String::new();
    header(&mut out, &cfg, &files, &build, &noise);
    if !fanout.is_empty() {
        fanout_tables(&mut out, &cfg, &fanout);
    }
    if cfg.conn10k {
        conn10k_table(&mut out, &cfg, &conn);
    }
    if !mem.is_empty() {
        memory_table(&mut out, &cfg, &mem);
    }
    targets(&mut out, &cfg, &fanout, &conn, &mem);
    observations(&mut out, &notes);
    print!("{out}");
}

/// The open-file limit and the connection count it imposed, if any.
struct OpenFiles {
    limit: u64,
    /// The count asked for, when it did not fit.
    clamped: Option<usize>,
}

/// Raises the open-file limit and lowers the connection counts not given
/// explicitly to what fits under it.
fn fit_open_files(cfg: &mut Config) -> OpenFiles {
    let nofile = raise_nofile();
    // One descriptor per connection in the server and in this process: at
    // most this many fit under the open-file limit.
    let fit = (nofile.saturating_sub(200) / 100 * 100) as usize;
    let mut clamped = None;
    for (n, set) in [
        (&mut cfg.connections, cfg.connections_set),
        (&mut cfg.mem_connections, cfg.mem_connections_set),
    ] {
        if !set && *n > fit {
            clamped = Some(*n);
            *n = fit;
        }
    }
    if let Some(asked) = clamped {
        eprintln!("open-file limit {nofile}: {fit} connections instead of {asked}");
    }
    let total = cfg.connections;
    cfg.latency_subscribers
        .iter_mut()
        .for_each(|m| *m = (*m).min(total));
    let want_fds = 2 * cfg
        .connections
        .max(cfg.mem_connections)
        .max(cfg.subscribers) as u64
        + 200;
    if nofile < want_fds {
        eprintln!(
            "warning: the open-file limit is {nofile}; {want_fds} are needed, connections will fail"
        );
    }
    OpenFiles {
        limit: nofile,
        clamped,
    }
}

/// The binaries measured and the revision Herald's was built from.
struct Build {
    herald_version: String,
    nats_version: String,
    rev: String,
    /// `git status` of server/, core/ and benches/: empty if clean.
    dirty: String,
    stale: bool,
    /// Holds the private copy of Herald's binary.
    _bin_dir: tempfile::TempDir,
}

impl Build {
    /// Exits if a binary is missing; otherwise runs Herald from a private
    /// copy (`cfg.herald` then points at it).
    fn check(cfg: &mut Config) -> Build {
        if !cfg.herald.exists() {
            eprintln!(
                "no herald binary at {}: build it with `cargo build --release -p herald-server --bin herald` (or pass --herald PATH)",
                cfg.herald.display()
            );
            std::process::exit(2);
        }
        let nats_version = version_of(&cfg.nats, "--version");
        if nats_version == "unknown" {
            eprintln!("cannot run {}: install it (`apt-get install -y nats-server`) or pass --nats-server PATH", cfg.nats.display());
            std::process::exit(2);
        }
        let herald_version = version_of(&cfg.herald, "--version");
        // The revision the binary is measured at (read now: the tree may move
        // during the run), and a private copy of the binary (a concurrent
        // `cargo build` may replace target/release/herald while this runs).
        let rev = git(&["rev-parse", "--short", "HEAD"]);
        let dirty = git(&[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "server",
            "core",
            "benches",
        ]);
        let stale = binary_is_stale(&cfg.herald);
        if stale {
            eprintln!(
                "warning: {} is older than the sources in server/ or core/: rebuild it",
                cfg.herald.display()
            );
        }
        let bin_dir = tempfile::tempdir().expect("temporary directory");
        let private = bin_dir.path().join("herald");
        match fs::copy(&cfg.herald, &private) {
            Ok(_) => cfg.herald = private,
            Err(e) => eprintln!(
                "cannot copy {}: {e}; running it in place",
                cfg.herald.display()
            ),
        }
        Build {
            herald_version,
            nats_version,
            rev,
            dirty,
            stale,
            _bin_dir: bin_dir,
        }
    }
}

/// The whole run's duration and the CPU time other processes used meanwhile.
struct Noise {
    load_before: String,
    machine0: (u64, u64),
    own0: u64,
    started: Instant,
    elapsed: f64,
    /// Share of the machine's CPU time used by processes other than this
    /// one and the servers it started.
    others: f64,
}

impl Noise {
    fn start() -> Noise {
        Noise {
            load_before: loadavg(),
            machine0: machine_ticks(),
            own0: proc_ticks("self"),
            started: Instant::now(),
            elapsed: 0.0,
            others: 0.0,
        }
    }

    fn stop(&mut self) {
        self.elapsed = self.started.elapsed().as_secs_f64();
        let machine1 = machine_ticks();
        let own = proc_ticks("self") - self.own0;
        let servers = SERVER_TICKS.load(Ordering::Relaxed);
        self.others = (machine1.0 - self.machine0.0).saturating_sub(own + servers) as f64
            / (machine1.1 - self.machine0.1).max(1) as f64;
    }
}

/// The column of `p` in a row of results: herald first, then nats-server.
fn idx(p: Peer) -> usize {
    usize::from(p == Peer::Nats)
}

/// The fan-out case, `cfg.runs` times: [herald, nats] per run.
fn fanout_runs(cfg: &Config, notes: &mut Notes) -> Vec<[FanoutRun; 2]> {
    let mut fanout = Vec::new();
    for r in 0..cfg.runs {
        eprintln!("fan-out (run {} of {})", r + 1, cfg.runs);
        let peers = order(r);
        let res = fanout_run(peers, cfg, notes);
        let mut row: [FanoutRun; 2] = Default::default();
        for (p, x) in peers.iter().zip(res) {
            row[idx(*p)] = x;
        }
        fanout.push(row);
    }
    fanout
}

/// The many-connections case, `cfg.runs` times: per number of measured
/// subscribers, [herald, nats] per run.
fn conn10k_runs(cfg: &Config, notes: &mut Notes) -> Vec<Vec<[ConnRun; 2]>> {
    let mut conn = vec![Vec::new(); cfg.latency_subscribers.len()];
    for r in 0..cfg.runs {
        eprintln!(
            "{} connections (run {} of {})",
            cfg.connections,
            r + 1,
            cfg.runs
        );
        for (k, &m) in cfg.latency_subscribers.iter().enumerate() {
            let mut row = [ConnRun::default(); 2];
            for p in order(r).into_iter().filter(|p| cfg.peers.contains(p)) {
                row[idx(p)] = conn10k_run(p, cfg, m, notes);
            }
            conn[k].push(row);
        }
    }
    conn
}

/// The memory case, `cfg.runs` times: [peer][one topic, a topic each] per run.
fn memory_runs(cfg: &Config, notes: &mut Notes) -> Vec<[[MemRun; 2]; 2]> {
    let mut mem = Vec::new();
    for r in 0..cfg.runs {
        eprintln!("memory (run {} of {})", r + 1, cfg.runs);
        let mut row = [[MemRun::default(); 2]; 2];
        for p in order(r).into_iter().filter(|p| cfg.peers.contains(p)) {
            for (j, distinct) in [false, true].into_iter().enumerate() {
                row[idx(p)][j] = memory_run(p, cfg, distinct, notes);
            }
        }
        mem.push(row);
    }
    mem
}

/// The bullet list that opens the report: machine, build, peers, command, noise.
fn header(w: &mut String, cfg: &Config, files: &OpenFiles, build: &Build, noise: &Noise) {
    let OpenFiles {
        limit: nofile,
        clamped,
    } = *files;
    let Build {
        herald_version,
        nats_version,
        rev,
        dirty,
        ..
    } = build;
    let stale = build.stale;
    let (elapsed, others, load_before) = (noise.elapsed, noise.others, &noise.load_before);
    let args = if cfg.argv.is_empty() {
        String::new()
    } else {
        format!(" -- {}", cfg.argv)
    };
    writeln!(w, "- **Machine**: {}", machine_description()).unwrap();
    writeln!(
        w,
        "- **Build**: herald at git {rev}{}{}; `{herald_version}`",
        if dirty.is_empty() {
            ""
        } else {
            " (+ uncommitted changes in server/, core/ or benches/)"
        },
        if stale {
            " (**the binary is older than the sources**)"
        } else {
            ""
        }
    )
    .unwrap();
    writeln!(
        w,
        "- **Peer**: {nats_version} (Debian package, default configuration: `nats-server -a 127.0.0.1 -p PORT`)"
    )
    .unwrap();
    writeln!(
        w,
        "- **Herald**: `herald serve --listen 127.0.0.1:PORT --data TMPDIR --config F` (F raises the connection limits: \
         `max_connections` and `max_connections_per_ip`{}), {} workers, otherwise default settings (durability `interval:100`)",
        if cfg.herald_config.is_empty() {
            String::new()
        } else {
            format!("; and sets `{}`", cfg.herald_config.join("`, `"))
        },
        cfg.herald_workers
            .map_or("default (one per core)".to_string(), |n| n.to_string())
    )
    .unwrap();
    writeln!(
        w,
        "- **Load generator**: this process, {} mio client thread(s) for the subscribers, the publisher on the main thread; \
         hdrhistogram {}, mio {}; open-file limit {nofile}",
        cfg.client_threads,
        locked_version("hdrhistogram").unwrap_or("?"),
        locked_version("mio").unwrap_or("?")
    )
    .unwrap();
    if let Some(asked) = clamped {
        writeln!(
            w,
            "- **Connections**: {} instead of {asked} for both systems: the open-file limit is {nofile} (the hard limit; this \
             container cannot raise it)",
            cfg.connections.max(cfg.mem_connections)
        )
        .unwrap();
    }
    writeln!(
        w,
        "- **Command**: `{COMMAND}{args}` ({} run(s), peers interleaved, whole run {elapsed:.0} s)",
        cfg.runs
    )
    .unwrap();
    writeln!(
        w,
        "- **Noise**: load average {load_before} before, {} after; other processes used {:.0}% of the machine's CPU time",
        loadavg(),
        others * 100.0
    )
    .unwrap();
    writeln!(w).unwrap();
}

/// `f` of every run's result for peer `p`.
fn col(runs: &[[FanoutRun; 2]], p: usize, f: &dyn Fn(&FanoutRun) -> f64) -> Vec<f64> {
    runs.iter().map(|r| f(&r[p])).collect()
}

/// The median over `runs` of Herald's `f` ÷ nats-server's.
fn ratio(runs: &[[FanoutRun; 2]], f: &dyn Fn(&FanoutRun) -> f64) -> f64 {
    median(&runs.iter().map(|r| f(&r[0]) / f(&r[1])).collect::<Vec<_>>())
}

/// The runs in which latency case `c` ran for both systems (the steady
/// rate is skipped where either cannot keep up with it).
fn ran(runs: &[[FanoutRun; 2]], c: usize) -> Vec<[FanoutRun; 2]> {
    runs.iter()
        .filter(|r| r.iter().all(|p| p.lat[c].rate > 0.0))
        .cloned()
        .collect()
}

/// The fan-out tables: throughput, latency per load, Herald / nats-server ratios.
fn fanout_tables(w: &mut String, cfg: &Config, fanout: &[[FanoutRun; 2]]) {
    let n = cfg.subscribers as f64;
    writeln!(
        w,
        "#### Fan-out: 1 publisher → {} subscribers, one topic, {PAYLOAD}-byte payloads",
        cfg.subscribers
    )
    .unwrap();
    writeln!(w).unwrap();
    writeln!(
        w,
        "Medians of {} runs (min–max in parentheses).",
        fanout.len()
    )
    .unwrap();
    writeln!(w).unwrap();
    writeln!(w, "| system | saturated deliveries/s (window {}) | server CPU (cores) | load-generator CPU | max sustainable publishes/s | = deliveries/s |", cfg.window).unwrap();
    writeln!(w, "|---|---:|---:|---:|---:|---:|").unwrap();
    for (p, peer) in [Peer::Herald, Peer::Nats].into_iter().enumerate() {
        writeln!(
            w,
            "| {} | {} | {:.2} | {:.2} | {} | {} |",
            peer.name(),
            spread(&col(fanout, p, &|r| r.sat.deliveries), fmt_rate),
            median(&col(fanout, p, &|r| r.sat.server_cpu)),
            median(&col(fanout, p, &|r| r.sat.client_cpu)),
            spread(&col(fanout, p, &|r| r.max_rate), |v| format!("{v:.0}")),
            fmt_rate(median(&col(fanout, p, &|r| r.max_rate)) * n),
        )
        .unwrap();
    }
    writeln!(w).unwrap();
    writeln!(
        w,
        "| system | load | rate (events/s) | p50 | p99 | p99.9 | max | CPU: server / load generator (cores) |"
    )
    .unwrap();
    writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for (p, peer) in [Peer::Herald, Peer::Nats].into_iter().enumerate() {
        for (c, label) in latency_cases().iter().enumerate() {
            let ran = ran(fanout, c);
            if ran.is_empty() {
                continue;
            }
            let pick = |f: &dyn Fn(&LatCase) -> f64| col(&ran, p, &|r| f(&r.lat[c]));
            writeln!(
                w,
                "| {} | {label} | {:.0} | {} | {} | {} | {} | {:.2} / {:.2} |",
                peer.name(),
                median(&pick(&|l| l.rate)),
                spread(&pick(&|l| l.lat.p50), fmt_ns),
                spread(&pick(&|l| l.lat.p99), fmt_ns),
                fmt_ns(median(&pick(&|l| l.lat.p999))),
                fmt_ns(median(&pick(&|l| l.lat.max))),
                median(&pick(&|l| l.cpu.0)),
                median(&pick(&|l| l.cpu.1)),
            )
            .unwrap();
        }
    }
    writeln!(w).unwrap();
    writeln!(
        w,
        "| Herald / nats-server (median of per-run ratios; for latency, below 1 means Herald is faster) | ratio |"
    )
    .unwrap();
    writeln!(w, "|---|---:|").unwrap();
    writeln!(
        w,
        "| saturated deliveries/s | {} |",
        fmt_ratio(ratio(fanout, &|r| r.sat.deliveries))
    )
    .unwrap();
    writeln!(
        w,
        "| max sustainable deliveries/s | {} |",
        fmt_ratio(ratio(fanout, &|r| r.max_rate))
    )
    .unwrap();
    writeln!(
        w,
        "| deliveries per server CPU-second, saturated | {} |",
        fmt_ratio(ratio(fanout, &|r| r.sat.deliveries / r.sat.server_cpu))
    )
    .unwrap();
    for (c, label) in latency_cases().iter().enumerate() {
        let ran = ran(fanout, c);
        if ran.is_empty() {
            continue;
        }
        for (q, f) in [
            ("p50", &(|l: &Lat| l.p50) as &dyn Fn(&Lat) -> f64),
            ("p99", &|l: &Lat| l.p99),
        ] {
            let r = ratio(&ran, &|r| f(&r.lat[c].lat));
            writeln!(w, "| {q} at {label} | {} |", fmt_ratio(r)).unwrap();
        }
    }
    writeln!(w).unwrap();
}

/// The latency table of the many-connections case.
fn conn10k_table(w: &mut String, cfg: &Config, conn: &[Vec<[ConnRun; 2]>]) {
    writeln!(
        w,
        "#### Latency with {} connections open ({} events/s to the measured topic)",
        cfg.connections, cfg.rate_10k
    )
    .unwrap();
    writeln!(w).unwrap();
    writeln!(w, "| system | connections open | measured subscribers | p50 | p99 | p99.9 | max | everything delivered | CPU: server / load generator (cores) |").unwrap();
    writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---|---:|").unwrap();
    for (conn, (p, peer)) in conn.iter().flat_map(|c| {
        [Peer::Herald, Peer::Nats]
            .into_iter()
            .enumerate()
            .map(move |pp| (c, pp))
    }) {
        let c = |f: &dyn Fn(&ConnRun) -> f64| conn.iter().map(|r| f(&r[p])).collect::<Vec<f64>>();
        writeln!(
            w,
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:.2} / {:.2} |",
            peer.name(),
            median(&c(&|r| r.open as f64)),
            median(&c(&|r| r.measured as f64)),
            spread(&c(&|r| r.lat.p50), fmt_ns),
            spread(&c(&|r| r.lat.p99), fmt_ns),
            fmt_ns(median(&c(&|r| r.lat.p999))),
            fmt_ns(median(&c(&|r| r.lat.max))),
            if conn.iter().all(|r| r[p].complete) {
                "yes"
            } else {
                "no"
            },
            median(&c(&|r| r.cpu.0)),
            median(&c(&|r| r.cpu.1)),
        )
        .unwrap();
    }
    writeln!(w).unwrap();
}

/// The memory-per-connection table.
fn memory_table(w: &mut String, cfg: &Config, mem: &[[[MemRun; 2]; 2]]) {
    writeln!(
        w,
        "#### Server memory per idle connection ({} connections, VmRSS growth ÷ connections)",
        cfg.mem_connections
    )
    .unwrap();
    writeln!(w).unwrap();
    writeln!(w, "| system | connections open | RSS at start | handshake only | subscribed, one topic | subscribed, a topic each |").unwrap();
    writeln!(w, "|---|---:|---:|---:|---:|---:|").unwrap();
    for (p, peer) in [Peer::Herald, Peer::Nats].into_iter().enumerate() {
        let c = |j: usize, f: &dyn Fn(&MemRun) -> f64| {
            mem.iter().map(|r| f(&r[p][j])).collect::<Vec<f64>>()
        };
        let hs: Vec<f64> = c(0, &|m| m.handshake)
            .into_iter()
            .chain(c(1, &|m| m.handshake))
            .collect();
        writeln!(
            w,
            "| {} | {:.0} | {} | {} | {} | {} |",
            peer.name(),
            median(&c(0, &|m| m.n as f64)),
            fmt_bytes(median(&c(0, &|m| m.base_kib as f64)) * 1024.0),
            spread(&hs, fmt_bytes),
            spread(&c(0, &|m| m.subscribed), fmt_bytes),
            spread(&c(1, &|m| m.subscribed), fmt_bytes),
        )
        .unwrap();
    }
    writeln!(w).unwrap();
}

/// The design's server targets, each met or missed.
fn targets(
    w: &mut String,
    cfg: &Config,
    fanout: &[[FanoutRun; 2]],
    conn: &[Vec<[ConnRun; 2]>],
    mem: &[[[MemRun; 2]; 2]],
) {
    writeln!(w, "#### Targets (docs/DESIGN.md, server rows)").unwrap();
    writeln!(w).unwrap();
    writeln!(w, "| target | measured | |").unwrap();
    writeln!(w, "|---|---|---|").unwrap();
    if !fanout.is_empty() {
        let r = median(
            &fanout
                .iter()
                .map(|r| r[0].max_rate / r[1].max_rate)
                .collect::<Vec<_>>(),
        );
        let rs = median(
            &fanout
                .iter()
                .map(|r| r[0].sat.deliveries / r[1].sat.deliveries)
                .collect::<Vec<_>>(),
        );
        writeln!(
            w,
            "| fan-out deliveries/s ≥ 2× nats-server | max sustainable {}, saturated {} | {} |",
            fmt_ratio(r),
            fmt_ratio(rs),
            yes(r >= 2.0)
        )
        .unwrap();
        let h = median(&col(fanout, 0, &|r| r.lat[0].lat.p99));
        let n = median(&col(fanout, 1, &|r| r.lat[0].lat.p99));
        writeln!(
            w,
            "| p99 at half of max load ≤ nats-server's | {} vs {} | {} |",
            fmt_ns(h),
            fmt_ns(n),
            yes(h <= n)
        )
        .unwrap();
        let steady = latency_cases().len() - 1;
        let ran = ran(fanout, steady);
        let subscribers = cfg.subscribers;
        if ran.is_empty() {
            writeln!(
                w,
                "| p99 at a steady {STEADY_RATE:.0} events/s ≤ nats-server's, {subscribers} subscriber(s) | not run: a maximum below that rate | – |"
            )
            .unwrap();
        } else {
            let at_steady =
                |p: usize, q: fn(&Lat) -> f64| median(&col(&ran, p, &|r| q(&r.lat[steady].lat)));
            let (h, n) = (at_steady(0, |l| l.p99), at_steady(1, |l| l.p99));
            let (h999, n999) = (at_steady(0, |l| l.p999), at_steady(1, |l| l.p999));
            writeln!(
                w,
                "| p99 at a steady {STEADY_RATE:.0} events/s ≤ nats-server's, {subscribers} subscriber(s) (p99.9: {} vs {}; {} of {} runs) | {} vs {} | {} |",
                fmt_ns(h999),
                fmt_ns(n999),
                ran.len(),
                fanout.len(),
                fmt_ns(h),
                fmt_ns(n),
                yes(h <= n)
            )
            .unwrap();
        }
    }
    if cfg.conn10k {
        for (runs, m) in conn.iter().zip(&cfg.latency_subscribers) {
            let p50 = median(&runs.iter().map(|r| r[0].lat.p50).collect::<Vec<_>>());
            let p99 = median(&runs.iter().map(|r| r[0].lat.p99).collect::<Vec<_>>());
            let open = median(&runs.iter().map(|r| r[0].open as f64).collect::<Vec<_>>());
            writeln!(
                w,
                "| p50 ≤ 100 µs at 10k connections | {} ({open:.0} open, {m} subscriber(s)) | {} |",
                fmt_ns(p50),
                yes(p50 <= 100_000.0)
            )
            .unwrap();
            writeln!(
                w,
                "| p99 ≤ 1 ms at 10k connections | {} ({open:.0} open, {m} subscriber(s)) | {} |",
                fmt_ns(p99),
                yes(p99 <= 1_000_000.0)
            )
            .unwrap();
        }
    }
    if !mem.is_empty() {
        let s = median(&mem.iter().map(|r| r[0][0].subscribed).collect::<Vec<_>>());
        let h = median(
            &mem.iter()
                .flat_map(|r| [r[0][0].handshake, r[0][1].handshake])
                .collect::<Vec<_>>(),
        );
        writeln!(
            w,
            "| ≤ 8 KiB per idle WebSocket connection | {} subscribed, {} handshake only | {} |",
            fmt_bytes(s),
            fmt_bytes(h),
            yes(s <= 8192.0)
        )
        .unwrap();
    }
    writeln!(w).unwrap();
}

/// Deduplicated notes of what went wrong during the run, if anything.
fn observations(w: &mut String, notes: &Notes) {
    if notes.0.is_empty() {
        return;
    }
    writeln!(w, "#### Observations during the run").unwrap();
    writeln!(w).unwrap();
    for (n, count) in &notes.0 {
        if *count > 1 {
            writeln!(w, "- {n} (×{count}, similar)").unwrap();
        } else {
            writeln!(w, "- {n}").unwrap();
        }
    }
}
