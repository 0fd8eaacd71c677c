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
//!    system's own maximum and at 1, 10, 25 and 50 % of the lower of the two
//!    maxima (the same load for both).
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
//! already writes every due `PUB` in one `write`.
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

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald_benches::load::{now_ns, Clients, Peer, Plan, Publisher, Ready, PAYLOAD, TOPIC};
use herald_benches::report::{
    fmt_ns, fmt_rate, fmt_ratio, locked_version, machine_description, machine_ticks, median,
    proc_status_kib, proc_ticks,
};
use herald_benches::ws::free_port;

const COMMAND: &str = "cargo run --release -p herald-benches --bin server_bench";

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Config {
    runs: usize,
    subscribers: usize,
    /// Length of the saturated window and of each latency measurement.
    seconds: f64,
    /// Length of each step of the maximum-rate search.
    step_seconds: f64,
    search_steps: usize,
    /// Saturated runs: events in flight per subscriber (on average).
    window: u64,
    connections: usize,
    /// Subscribers of the measured topic among the connections; one case each.
    latency_subscribers: Vec<usize>,
    rate_10k: f64,
    mem_connections: usize,
    client_threads: usize,
    /// Herald's publisher: events per `publish` op (`--publish-batch`).
    publish_batch: usize,
    herald: PathBuf,
    nats: PathBuf,
    herald_workers: Option<usize>,
    /// Extra lines for Herald's configuration file (`--herald-config`).
    herald_config: Vec<String>,
    /// `--connections` / `--mem-connections` given explicitly (not clamped to
    /// the open-file limit).
    connections_set: bool,
    mem_connections_set: bool,
    /// The systems measured (`--peers`; both by default).
    peers: Vec<Peer>,
    fanout: bool,
    conn10k: bool,
    memory: bool,
    argv: String,
}

impl Config {
    fn full() -> Config {
        Config {
            runs: 3,
            subscribers: 1_000,
            seconds: 3.0,
            step_seconds: 1.5,
            search_steps: 6,
            window: 256,
            connections: 10_000,
            latency_subscribers: vec![100, 1],
            rate_10k: 1_000.0,
            mem_connections: 10_000,
            client_threads: 1,
            publish_batch: 1,
            herald: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/release/herald"
            )),
            nats: PathBuf::from("nats-server"),
            herald_workers: None,
            herald_config: Vec::new(),
            connections_set: false,
            mem_connections_set: false,
            peers: vec![Peer::Herald, Peer::Nats],
            fanout: true,
            conn10k: true,
            memory: true,
            argv: String::new(),
        }
    }

    fn quick(mut self) -> Config {
        self.runs = 1;
        self.subscribers = 100;
        self.seconds = 1.0;
        self.step_seconds = 0.5;
        self.search_steps = 3;
        self.connections = 1_000;
        self.latency_subscribers = vec![20, 1];
        self.mem_connections = 1_000;
        self
    }
}

const USAGE: &str = "usage: server_bench [--quick] [--runs N] [--only fanout,conn10k,memory]
    [--subscribers N] [--seconds S] [--step-seconds S] [--search-steps N] [--window N]
    [--connections N] [--latency-subscribers N,N…] [--rate-10k R] [--mem-connections N]
    [--client-threads N] [--publish-batch N] [--herald PATH] [--nats-server PATH] [--herald-workers N]
    [--herald-config 'key = value']  (repeatable: a line added to Herald's configuration file)
    [--peers herald,nats]  (conn10k and memory only: the fan-out case always runs both)";

fn parse_args() -> Config {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = if argv.iter().any(|a| a == "--quick") {
        Config::full().quick()
    } else {
        Config::full()
    };
    cfg.argv = argv.join(" ");
    let mut args = argv.into_iter();
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
        match v.as_deref().map(str::parse) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("{flag} needs a valid value\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {}
            "--runs" => cfg.runs = value::<usize>(&arg, args.next()).max(1),
            "--subscribers" => cfg.subscribers = value::<usize>(&arg, args.next()).max(1),
            "--seconds" => cfg.seconds = value(&arg, args.next()),
            "--step-seconds" => cfg.step_seconds = value(&arg, args.next()),
            "--search-steps" => cfg.search_steps = value::<usize>(&arg, args.next()).max(1),
            "--window" => cfg.window = value::<u64>(&arg, args.next()).max(1),
            "--connections" => {
                cfg.connections = value::<usize>(&arg, args.next()).max(1);
                cfg.connections_set = true;
            }
            "--latency-subscribers" => {
                let list: String = value(&arg, args.next());
                cfg.latency_subscribers = list
                    .split(',')
                    .map(|v| value::<usize>(&arg, Some(v.to_string())).max(1))
                    .collect();
            }
            "--rate-10k" => cfg.rate_10k = value(&arg, args.next()),
            "--mem-connections" => {
                cfg.mem_connections = value::<usize>(&arg, args.next()).max(1);
                cfg.mem_connections_set = true;
            }
            "--client-threads" => cfg.client_threads = value::<usize>(&arg, args.next()).max(1),
            "--publish-batch" => {
                cfg.publish_batch = value::<usize>(&arg, args.next()).clamp(1, 1000)
            }
            "--herald" => cfg.herald = value(&arg, args.next()),
            "--nats-server" => cfg.nats = value(&arg, args.next()),
            "--herald-workers" => cfg.herald_workers = Some(value(&arg, args.next())),
            "--herald-config" => cfg.herald_config.push(value(&arg, args.next())),
            "--peers" => {
                let list: String = value(&arg, args.next());
                cfg.peers = [Peer::Herald, Peer::Nats]
                    .into_iter()
                    .filter(|p| {
                        list.split(',')
                            .any(|w| w == p.name() || (w == "nats" && *p == Peer::Nats))
                    })
                    .collect();
            }
            "--only" => {
                let only: String = value(&arg, args.next());
                let wants = |w: &str| only.split(',').any(|o| o == w);
                cfg.fanout = wants("fanout");
                cfg.conn10k = wants("conn10k");
                cfg.memory = wants("memory");
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    cfg
}

// ---------------------------------------------------------------------------
// The systems measured
// ---------------------------------------------------------------------------

/// Run `r` measures the peers in this order (alternating between runs).
fn order(r: usize) -> [Peer; 2] {
    if r % 2 == 0 {
        [Peer::Herald, Peer::Nats]
    } else {
        [Peer::Nats, Peer::Herald]
    }
}

/// CPU ticks used by server processes that have exited (for the noise
/// estimate: they are not "other" load).
static SERVER_TICKS: AtomicU64 = AtomicU64::new(0);

/// A server process on a free loopback port, in its own temporary
/// directory; killed on drop.
struct ServerProc {
    peer: Peer,
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl ServerProc {
    /// Starts `peer` allowing `max_connections` clients, and waits until it
    /// is ready (Herald: `GET /readyz` answers 200; NATS: the `INFO` line).
    fn start(peer: Peer, cfg: &Config, max_connections: usize) -> ServerProc {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = File::create(dir.path().join("server.log")).expect("server log");
        let mut cmd = match peer {
            Peer::Herald => {
                // The defaults admit 10 000 connections in all and 1 000 per
                // IP address: every client here is 127.0.0.1.
                let conf = dir.path().join("herald.toml");
                let mut text = format!(
                    "max_connections = {max_connections}\nmax_connections_per_ip = {max_connections}\n"
                );
                for line in &cfg.herald_config {
                    text.push_str(line);
                    text.push('\n');
                }
                fs::write(&conf, text).expect("herald config");
                let mut c = Command::new(&cfg.herald);
                c.arg("serve")
                    .arg("--config")
                    .arg(&conf)
                    .arg("--listen")
                    .arg(addr.to_string())
                    .arg("--data")
                    .arg(dir.path().join("data"))
                    .env("NO_COLOR", "1");
                if let Some(w) = cfg.herald_workers {
                    c.arg("--workers").arg(w.to_string());
                }
                c
            }
            Peer::Nats => {
                let mut c = Command::new(&cfg.nats);
                c.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {}: {e}", peer.name());
        });
        let mut server = ServerProc {
            peer,
            child,
            addr,
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited during start-up ({status}); its log:\n{}",
                    self.peer.name(),
                    self.log()
                );
            }
            if self.probe().unwrap_or(false) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after 20 s; its log:\n{}",
                self.peer.name(),
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn probe(&self) -> io::Result<bool> {
        let mut s = StdTcpStream::connect_timeout(&self.addr, Duration::from_millis(200))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        if self.peer == Peer::Herald {
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        }
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = s.read(&mut buf[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(match self.peer {
            Peer::Herald => buf[..got].starts_with(b"HTTP/1.1 200"),
            Peer::Nats => buf[..got].starts_with(b"INFO "),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Herald's `/metrics` as (name, value) pairs; empty for NATS or if the
    /// scrape fails.
    fn metrics(&self) -> Vec<(String, f64)> {
        if self.peer != Peer::Herald {
            return Vec::new();
        }
        let scrape = || -> io::Result<String> {
            let mut s = StdTcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        };
        scrape()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("herald_"))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// One of Herald's counters (0 if absent).
    fn metric(&self, name: &str) -> f64 {
        counter(&self.metrics(), name)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident set size in KiB (`VmRSS`).
    fn rss_kib(&self) -> u64 {
        proc_status_kib(&self.pid().to_string(), "VmRSS").unwrap_or(0)
    }

    fn ticks(&self) -> u64 {
        proc_ticks(&self.pid().to_string())
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Warning and error lines of the server's log.
    fn log_warnings(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| !l.contains("anonymous clients have full access"))
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("[ERR]")
                    || l.contains("[WRN]")
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        SERVER_TICKS.fetch_add(self.ticks(), Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value; no pointers involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Raises this process's soft limit of open files to the hard limit (the
/// servers, started from here, inherit it); returns the soft limit now.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit read by the call; raising the
        // soft limit up to the hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

// ---------------------------------------------------------------------------
// A server, its subscribers and a publisher
// ---------------------------------------------------------------------------

struct Fixture {
    peer: Peer,
    plans: Vec<Plan>,
    // Drop order: publisher, clients, then the server.
    publ: Publisher,
    clients: Clients,
    server: ServerProc,
    /// Deliveries expected per published event (open measured subscribers).
    per_event: u64,
    opened: Ready,
}

impl Fixture {
    fn new(peer: Peer, cfg: &Config, plans: Vec<Plan>) -> Fixture {
        let server = ServerProc::start(peer, cfg, plans.len() + 1_000);
        let mut clients = Clients::new(peer, server.addr, cfg.client_threads);
        let t = Instant::now();
        let opened = clients.open(plans.clone());
        eprintln!(
            "  {}: {} connections ready, {} failed, in {:.1} s",
            peer.name(),
            opened.ok,
            opened.failed,
            t.elapsed().as_secs_f64()
        );
        let per_event = clients.snapshot().measured as u64;
        let publ = Publisher::connect(peer, server.addr, cfg.publish_batch)
            .unwrap_or_else(|e| panic!("{}: publisher cannot connect: {e}", peer.name()));
        Fixture {
            peer,
            plans,
            publ,
            clients,
            server,
            per_event,
            opened,
        }
    }

    /// Stops everything and starts afresh (after a run that left a backlog
    /// or lost connections).
    fn restart(self, cfg: &Config, notes: &mut Notes) -> Fixture {
        let (peer, plans) = (self.peer, self.plans.clone());
        self.finish(notes);
        Fixture::new(peer, cfg, plans)
    }

    fn expected(&self) -> u64 {
        self.publ.sent * self.per_event
    }

    /// Waits until every published event reached every measured subscriber;
    /// how long that took, or `None` after `limit`.
    fn drain(&self, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        while self.clients.delivered() < self.expected() {
            if t.elapsed() > limit || self.clients.dead() > 0 {
                return None;
            }
            thread::sleep(Duration::from_micros(200));
        }
        Some(t.elapsed())
    }

    fn broken(&mut self) -> bool {
        self.clients.dead() > 0
            || self.publ.shared.closed.load(Ordering::Relaxed)
            || !self.server.alive()
    }

    /// Records what went wrong, if anything, then stops everything.
    fn finish(mut self, notes: &mut Notes) {
        let name = self.peer.name();
        let _ = self.drain(Duration::from_secs(5));
        let snap = self.clients.snapshot();
        for m in self.opened.messages.iter().chain(&snap.messages) {
            notes.add(format!("{name}: subscriber {m}"));
        }
        if snap.dead > 0 {
            notes.add(format!(
                "{name}: {} subscriber connection(s) closed by the server",
                snap.dead
            ));
        }
        for e in self.publ.errors() {
            notes.add(format!("{name}: publisher received {e}"));
        }
        if self.peer == Peer::Herald {
            thread::sleep(Duration::from_millis(50));
            if self.publ.acks() != self.publ.sent {
                notes.add(format!(
                    "herald: {} publishes sent, {} acknowledged at the end of a fixture",
                    self.publ.sent,
                    self.publ.acks()
                ));
            }
        }
        if !self.server.alive() {
            notes.add(format!("{name}: the server process exited during the run"));
        }
        let m = self.server.metrics();
        for name in [
            "herald_server_slow_client_closes_total",
            "herald_gap_notices_total",
        ] {
            let value = counter(&m, name);
            if value > 0.0 {
                notes.add(format!("herald: {name} = {value} at the end of a fixture"));
            }
        }
        for w in self.server.log_warnings() {
            notes.add(format!("{name} log: {w}"));
        }
    }
}

/// Observations worth reporting (deduplicated, counted).
#[derive(Debug, Default)]
struct Notes(Vec<(String, usize)>);

impl Notes {
    fn add(&mut self, note: String) {
        // Connection ids and sequence numbers differ; compare without digits.
        let key = |s: &str| {
            s.chars()
                .filter(|c| !c.is_ascii_digit())
                .collect::<String>()
        };
        let k = key(&note);
        if let Some(e) = self.0.iter_mut().find(|(n, _)| key(n) == k) {
            e.1 += 1;
        } else if self.0.len() < 40 {
            eprintln!("  note: {note}");
            self.0.push((note, 1));
        }
    }
}

// ---------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct Lat {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    count: u64,
}

impl Lat {
    fn of(h: &Histogram<u64>) -> Lat {
        if h.is_empty() {
            return Lat {
                p50: f64::NAN,
                p99: f64::NAN,
                p999: f64::NAN,
                max: f64::NAN,
                count: 0,
            };
        }
        Lat {
            p50: h.value_at_quantile(0.5) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
            count: h.len(),
        }
    }
}

#[derive(Debug)]
struct Step {
    kept_up: bool,
    sent_rate: f64,
    drain: Option<Duration>,
    lat: Lat,
    /// Events each measured subscriber fell short of, at worst.
    missing: u64,
    /// CPU (cores) of the server and of this process while publishing.
    cpu: (f64, f64),
}

/// Publishes at `rate` events/s for `dur` (batches of what is due, each
/// stamped when written), records latency after `warmup`, then waits for
/// the subscribers to receive everything.
fn paced_step(fx: &mut Fixture, rate: f64, dur: Duration, warmup: Duration) -> Step {
    let _ = fx.clients.snapshot(); // resets the histogram
    let s0 = fx.publ.sent;
    let (srv0, own0) = (fx.server.ticks(), proc_ticks("self"));
    let t0 = Instant::now();
    let mut recording = false;
    let mut failed = false;
    loop {
        let el = t0.elapsed();
        if el >= dur {
            break;
        }
        if !recording && el >= warmup {
            fx.clients.record(true);
            recording = true;
        }
        let done = fx.publ.sent - s0;
        let due = (el.as_secs_f64() * rate) as u64 + 1;
        if due > done {
            if fx.publ.publish((due - done).min(256) as usize).is_err() {
                failed = true;
                break;
            }
        } else {
            let next = Duration::from_secs_f64(done as f64 / rate);
            thread::sleep(next.saturating_sub(el).max(Duration::from_micros(20)));
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let (srv1, own1) = (fx.server.ticks(), proc_ticks("self"));
    let tck = clock_ticks_per_sec();
    let cpu = (
        (srv1 - srv0) as f64 / tck / el,
        (own1 - own0) as f64 / tck / el,
    );
    let sent = fx.publ.sent - s0;
    // Kept up: everything arrived within 5 % of the step (100 ms at least)
    // after the last publish, and the publisher could send at the rate.
    let limit = Duration::from_secs_f64((0.05 * dur.as_secs_f64()).max(0.1));
    let drain = fx.drain(limit.max(Duration::from_secs(3)));
    fx.clients.record(false);
    let snap = fx.clients.snapshot();
    let kept_up = !failed
        && drain.is_some_and(|d| d <= limit)
        && sent as f64 >= 0.97 * rate * dur.as_secs_f64()
        && !fx.broken();
    Step {
        kept_up,
        sent_rate: sent as f64 / el,
        drain,
        lat: Lat::of(&snap.hist),
        missing: fx.publ.sent.saturating_sub(snap.measured_min_events),
        cpu,
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Saturated {
    deliveries: f64,
    publishes: f64,
    /// CPU used, in cores (1.0 = one core busy all the time).
    server_cpu: f64,
    client_cpu: f64,
}

/// Publishes as fast as the subscribers receive: at most `window` events
/// in flight per subscriber (on average).
fn saturated(fx: &mut Fixture, window: u64, dur: Duration) -> Saturated {
    let per = fx.per_event.max(1);
    let d0 = fx.clients.delivered();
    let s0 = fx.publ.sent;
    let (srv0, own0) = (fx.server.ticks(), proc_ticks("self"));
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        let received = (fx.clients.delivered() - d0) / per;
        let in_flight = (fx.publ.sent - s0).saturating_sub(received);
        if in_flight < window {
            if fx
                .publ
                .publish((window - in_flight).min(64) as usize)
                .is_err()
            {
                break;
            }
        } else {
            thread::sleep(Duration::from_micros(50));
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let (srv1, own1) = (fx.server.ticks(), proc_ticks("self"));
    let tck = clock_ticks_per_sec();
    Saturated {
        deliveries: (fx.clients.delivered() - d0) as f64 / el,
        publishes: (fx.publ.sent - s0) as f64 / el,
        server_cpu: (srv1 - srv0) as f64 / tck / el,
        client_cpu: (own1 - own0) as f64 / tck / el,
    }
}

/// The highest paced rate (events/s) at which the subscribers keep up,
/// searched from `start`: up by 1.3× while passing, down by 0.7× while
/// failing, then bisected (geometric mean) until within 6 %.
fn search_max_rate(
    mut fx: Fixture,
    cfg: &Config,
    start: f64,
    notes: &mut Notes,
) -> (Fixture, f64, Vec<(f64, bool)>) {
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let mut rate = start.max(10.0);
    let mut tried = Vec::new();
    let dur = Duration::from_secs_f64(cfg.step_seconds);
    for _ in 0..cfg.search_steps {
        let step = paced_step(&mut fx, rate, dur, dur);
        eprintln!(
            "    {} at {:.0}/s: {} (sent {:.0}/s, drained in {})",
            fx.peer.name(),
            rate,
            if step.kept_up {
                "kept up"
            } else {
                "fell behind"
            },
            step.sent_rate,
            step.drain
                .map_or("> 3 s".to_string(), |d| fmt_ns(d.as_nanos() as f64)),
        );
        tried.push((rate, step.kept_up));
        if step.kept_up {
            lo = lo.max(rate);
        } else {
            hi = hi.min(rate);
            if step.drain.is_none() || fx.broken() {
                eprintln!(
                    "    restarting {} (backlog or lost connections)",
                    fx.peer.name()
                );
                fx = fx.restart(cfg, notes);
            }
        }
        if lo > 0.0 && hi / lo < 1.06 {
            break;
        }
        rate = if hi.is_infinite() {
            rate * 1.3
        } else if lo == 0.0 {
            rate * 0.7
        } else {
            (lo * hi).sqrt()
        };
    }
    (fx, lo, tried)
}

#[derive(Debug, Default, Clone)]
struct FanoutRun {
    sat: Saturated,
    max_rate: f64,
    /// Latency runs, in the order of [`latency_cases`].
    lat: Vec<LatCase>,
    missing: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct LatCase {
    rate: f64,
    lat: Lat,
    /// CPU (cores) of the server and of the load generator.
    cpu: (f64, f64),
}

/// Fractions of the lower of the two maxima at which both systems are also
/// measured (the same load for both).
const COMMON_FRACTIONS: [f64; 4] = [0.01, 0.1, 0.25, 0.5];

/// The latency cases: half of each system's own maximum, then the common
/// rates.
fn latency_cases() -> Vec<String> {
    let mut cases = vec!["half of its own max".to_string()];
    cases.extend(
        COMMON_FRACTIONS
            .iter()
            .map(|f| format!("{:.0} % of the lower max", f * 100.0)),
    );
    cases
}

/// One run of the fan-out case for both peers (order as given).
fn fanout_run(peers: [Peer; 2], cfg: &Config, notes: &mut Notes) -> [FanoutRun; 2] {
    let n = cfg.subscribers;
    let plans = vec![Plan::Sub(TOPIC.into()); n];
    let mut results: [FanoutRun; 2] = Default::default();
    let mut fixtures: Vec<Fixture> = Vec::new();
    let sat_dur = Duration::from_secs_f64(cfg.seconds);
    for (i, &peer) in peers.iter().enumerate() {
        let mut fx = Fixture::new(peer, cfg, plans.clone());
        assert!(
            fx.per_event == n as u64,
            "{}: only {} of {n} subscribers ready",
            peer.name(),
            fx.per_event
        );
        // Warm-up, then the saturated window.
        saturated(&mut fx, cfg.window, Duration::from_millis(500));
        let _ = fx.drain(Duration::from_secs(5));
        let sat = saturated(&mut fx, cfg.window, sat_dur);
        if fx.drain(Duration::from_secs(5)).is_none() {
            fx = fx.restart(cfg, notes);
        }
        eprintln!(
            "  {} saturated: {} deliveries, {} publishes; server {:.0} % CPU, load generator {:.0} %",
            peer.name(),
            fmt_rate(sat.deliveries),
            fmt_rate(sat.publishes),
            sat.server_cpu * 100.0,
            sat.client_cpu * 100.0
        );
        let (fx, max_rate, _) = search_max_rate(fx, cfg, sat.publishes, notes);
        eprintln!(
            "  {} keeps up at {:.0} events/s = {} deliveries",
            peer.name(),
            max_rate,
            fmt_rate(max_rate * n as f64)
        );
        results[i].sat = sat;
        results[i].max_rate = max_rate;
        fixtures.push(fx);
    }
    let lower = results[0].max_rate.min(results[1].max_rate);
    let dur = Duration::from_secs_f64(cfg.seconds);
    let warmup = Duration::from_millis(500);
    for (case, label) in latency_cases().iter().enumerate() {
        for (i, fx) in fixtures.iter_mut().enumerate() {
            let rate = match case {
                0 => results[i].max_rate / 2.0,
                c => lower * COMMON_FRACTIONS[c - 1],
            };
            if rate <= 0.0 {
                results[i].lat.push(LatCase::default());
                continue;
            }
            if fx.broken() {
                notes.add(format!(
                    "{}: fixture broken before a latency run",
                    fx.peer.name()
                ));
            }
            let parked0 = fx.server.metric("herald_server_slow_streams_total");
            let lagged0 = fx.server.metric("herald_lagged_fallbacks_total");
            let step = paced_step(fx, rate, dur + warmup, warmup);
            let parked = fx.server.metric("herald_server_slow_streams_total") - parked0;
            let lagged = fx.server.metric("herald_lagged_fallbacks_total") - lagged0;
            if parked > 0.0 || lagged > 0.0 {
                notes.add(format!(
                    "herald: {parked} stream(s) parked as slow and {lagged} lagged fallback(s) during a latency run at \
                     {rate:.0} events/s ({label}), p99 {}",
                    fmt_ns(step.lat.p99)
                ));
            }
            eprintln!(
                "  {} at {:.0}/s ({label}): p50 {} p99 {} p99.9 {} max {} ({} samples, kept up: {}; CPU server {:.2}, load generator {:.2})",
                fx.peer.name(),
                rate,
                fmt_ns(step.lat.p50),
                fmt_ns(step.lat.p99),
                fmt_ns(step.lat.p999),
                fmt_ns(step.lat.max),
                step.lat.count,
                step.kept_up,
                step.cpu.0,
                step.cpu.1
            );
            let r = &mut results[i];
            r.missing = r.missing.max(step.missing);
            r.lat.push(LatCase {
                rate,
                lat: step.lat,
                cpu: step.cpu,
            });
        }
    }
    for fx in fixtures {
        fx.finish(notes);
    }
    results
}

#[derive(Debug, Default, Clone, Copy)]
struct ConnRun {
    open: usize,
    measured: u64,
    lat: Lat,
    complete: bool,
    cpu: (f64, f64),
}

/// `cfg.connections` connections, `m` of them on the
/// measured topic, a paced publisher at `cfg.rate_10k`.
fn conn10k_run(peer: Peer, cfg: &Config, m: usize, notes: &mut Notes) -> ConnRun {
    let total = cfg.connections;
    let stride = (total / m).max(1);
    let plans: Vec<Plan> = (0..total)
        .map(|i| {
            if i % stride == 0 && i / stride < m {
                Plan::Sub(TOPIC.into())
            } else if i % 2 == 0 {
                Plan::Sub(format!("bench.idle.{i}"))
            } else {
                Plan::Idle
            }
        })
        .collect();
    let mut fx = Fixture::new(peer, cfg, plans);
    let warmup = Duration::from_millis(500);
    let dur = Duration::from_secs_f64(cfg.seconds) + warmup;
    let step = paced_step(&mut fx, cfg.rate_10k, dur, warmup);
    eprintln!(
        "  {}: {} connections open, {} measured; p50 {} p99 {} p99.9 {} max {} ({} samples)",
        peer.name(),
        fx.opened.ok + 1,
        fx.per_event,
        fmt_ns(step.lat.p50),
        fmt_ns(step.lat.p99),
        fmt_ns(step.lat.p999),
        fmt_ns(step.lat.max),
        step.lat.count
    );
    let run = ConnRun {
        open: fx.opened.ok + 1,
        measured: fx.per_event,
        lat: step.lat,
        complete: step.drain.is_some() && step.missing == 0,
        cpu: step.cpu,
    };
    fx.finish(notes);
    run
}

#[derive(Debug, Default, Clone, Copy)]
struct MemRun {
    n: usize,
    base_kib: u64,
    /// Bytes per connection: handshake only, then subscribed.
    handshake: f64,
    subscribed: f64,
}

/// The server's RSS growth per idle connection.
fn memory_run(peer: Peer, cfg: &Config, distinct: bool, notes: &mut Notes) -> MemRun {
    let n = cfg.mem_connections;
    let mut server = ServerProc::start(peer, cfg, n + 1_000);
    let settle = || thread::sleep(Duration::from_millis(500));
    settle();
    let rss0 = server.rss_kib();
    let mut clients = Clients::new(peer, server.addr, cfg.client_threads);
    let opened = clients.open(vec![Plan::Idle; n]);
    settle();
    let rss1 = server.rss_kib();
    let subscribed = clients.subscribe(distinct);
    settle();
    let rss2 = server.rss_kib();
    let per = |kib: u64| (kib.saturating_sub(rss0) * 1024) as f64 / opened.ok.max(1) as f64;
    let run = MemRun {
        n: opened.ok,
        base_kib: rss0,
        handshake: per(rss1),
        subscribed: per(rss2),
    };
    eprintln!(
        "  {} ({}): {} connections ({} subscribed); RSS {} → {} → {} KiB: {:.0} B/conn handshake only, {:.0} B/conn subscribed",
        peer.name(),
        if distinct { "a topic each" } else { "one topic" },
        opened.ok,
        subscribed.ok,
        rss0,
        rss1,
        rss2,
        run.handshake,
        run.subscribed
    );
    for m in opened.messages.iter().chain(&subscribed.messages) {
        notes.add(format!("{} (memory): {m}", peer.name()));
    }
    if opened.failed > 0 || subscribed.failed > 0 {
        notes.add(format!(
            "{} (memory): {} connections and {} subscriptions failed",
            peer.name(),
            opened.failed,
            subscribed.failed
        ));
    }
    if !server.alive() {
        notes.add(format!(
            "{}: the server process exited during the memory run",
            peer.name()
        ));
    }
    drop(clients);
    for w in server.log_warnings() {
        notes.add(format!("{} log: {w}", peer.name()));
    }
    run
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

/// `median (min–max)` of `values` formatted by `f`.
fn spread(values: &[f64], f: impl Fn(f64) -> String) -> String {
    let m = median(values);
    if values.len() < 2 {
        return f(m);
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} ({}–{})", f(m), f(lo), f(hi))
}

fn fmt_bytes(b: f64) -> String {
    if !b.is_finite() {
        "–".into()
    } else if b >= 10.0 * 1024.0 * 1024.0 {
        format!("{:.0} MiB", b / (1024.0 * 1024.0))
    } else if b >= 10_240.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn version_of(cmd: &std::path::Path, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn git(args: &[&str]) -> String {
    Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Whether a source file under `server/src` or `core/src` is newer than
/// `binary`.
fn binary_is_stale(binary: &std::path::Path) -> bool {
    fn newest(dir: &std::path::Path) -> Option<std::time::SystemTime> {
        let mut best = None;
        for entry in fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let t = if path.is_dir() {
                newest(&path)
            } else {
                entry.metadata().and_then(|m| m.modified()).ok()
            };
            best = best.max(t);
        }
        best
    }
    let Ok(built) = fs::metadata(binary).and_then(|m| m.modified()) else {
        return false;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["server/src", "core/src"]
        .iter()
        .filter_map(|d| newest(&root.join(d)))
        .any(|t| t > built)
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn yes(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

fn main() {
    let mut cfg = parse_args();
    let _ = now_ns();
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
    let load_before = loadavg();
    let machine0 = machine_ticks();
    let own0 = proc_ticks("self");
    let started = Instant::now();
    let mut notes = Notes::default();

    let mut fanout: Vec<[FanoutRun; 2]> = Vec::new(); // [herald, nats] per run
                                                      // Per number of measured subscribers: [herald, nats] per run.
    let mut conn: Vec<Vec<[ConnRun; 2]>> = vec![Vec::new(); cfg.latency_subscribers.len()];
    let mut mem: Vec<[[MemRun; 2]; 2]> = Vec::new(); // [peer][one topic, a topic each]
    let idx = |p: Peer| usize::from(p == Peer::Nats);
    if cfg.fanout {
        for r in 0..cfg.runs {
            eprintln!("fan-out (run {} of {})", r + 1, cfg.runs);
            let peers = order(r);
            let res = fanout_run(peers, &cfg, &mut notes);
            let mut row: [FanoutRun; 2] = Default::default();
            for (p, x) in peers.iter().zip(res) {
                row[idx(*p)] = x;
            }
            fanout.push(row);
        }
    }
    if cfg.conn10k {
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
                    row[idx(p)] = conn10k_run(p, &cfg, m, &mut notes);
                }
                conn[k].push(row);
            }
        }
    }
    if cfg.memory {
        for r in 0..cfg.runs {
            eprintln!("memory (run {} of {})", r + 1, cfg.runs);
            let mut row = [[MemRun::default(); 2]; 2];
            for p in order(r).into_iter().filter(|p| cfg.peers.contains(p)) {
                for (j, distinct) in [false, true].into_iter().enumerate() {
                    row[idx(p)][j] = memory_run(p, &cfg, distinct, &mut notes);
                }
            }
            mem.push(row);
        }
    }

    let elapsed = started.elapsed().as_secs_f64();
    let machine1 = machine_ticks();
    let own = proc_ticks("self") - own0;
    let servers = SERVER_TICKS.load(Ordering::Relaxed);
    let others = (machine1.0 - machine0.0).saturating_sub(own + servers) as f64
        / (machine1.1 - machine0.1).max(1) as f64;

    // ---- the report ----
    let mut out = String::new();
    let w = &mut out;
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

    let col = |runs: &[[FanoutRun; 2]], p: usize, f: &dyn Fn(&FanoutRun) -> f64| -> Vec<f64> {
        runs.iter().map(|r| f(&r[p])).collect()
    };
    if !fanout.is_empty() {
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
                spread(&col(&fanout, p, &|r| r.sat.deliveries), fmt_rate),
                median(&col(&fanout, p, &|r| r.sat.server_cpu)),
                median(&col(&fanout, p, &|r| r.sat.client_cpu)),
                spread(&col(&fanout, p, &|r| r.max_rate), |v| format!("{v:.0}")),
                fmt_rate(median(&col(&fanout, p, &|r| r.max_rate)) * n),
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
                let pick = |f: &dyn Fn(&LatCase) -> f64| col(&fanout, p, &|r| f(&r.lat[c]));
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
        let ratio = |f: &dyn Fn(&FanoutRun) -> f64| {
            median(
                &fanout
                    .iter()
                    .map(|r| f(&r[0]) / f(&r[1]))
                    .collect::<Vec<_>>(),
            )
        };
        writeln!(
            w,
            "| Herald / nats-server (median of per-run ratios; for latency, below 1 means Herald is faster) | ratio |"
        )
        .unwrap();
        writeln!(w, "|---|---:|").unwrap();
        writeln!(
            w,
            "| saturated deliveries/s | {} |",
            fmt_ratio(ratio(&|r| r.sat.deliveries))
        )
        .unwrap();
        writeln!(
            w,
            "| max sustainable deliveries/s | {} |",
            fmt_ratio(ratio(&|r| r.max_rate))
        )
        .unwrap();
        writeln!(
            w,
            "| deliveries per server CPU-second, saturated | {} |",
            fmt_ratio(ratio(&|r| r.sat.deliveries / r.sat.server_cpu))
        )
        .unwrap();
        for (c, label) in latency_cases().iter().enumerate() {
            for (q, f) in [
                ("p50", &(|l: &Lat| l.p50) as &dyn Fn(&Lat) -> f64),
                ("p99", &|l: &Lat| l.p99),
            ] {
                writeln!(
                    w,
                    "| {q} at {label} | {} |",
                    fmt_ratio(ratio(&|r| f(&r.lat[c].lat)))
                )
                .unwrap();
            }
        }
        writeln!(w).unwrap();
    }
    if cfg.conn10k {
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
            let c =
                |f: &dyn Fn(&ConnRun) -> f64| conn.iter().map(|r| f(&r[p])).collect::<Vec<f64>>();
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
    if !mem.is_empty() {
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
        let h = median(&col(&fanout, 0, &|r| r.lat[0].lat.p99));
        let n = median(&col(&fanout, 1, &|r| r.lat[0].lat.p99));
        writeln!(
            w,
            "| p99 at half of max load ≤ nats-server's | {} vs {} | {} |",
            fmt_ns(h),
            fmt_ns(n),
            yes(h <= n)
        )
        .unwrap();
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
    if !notes.0.is_empty() {
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
    print!("{out}");
}

/// The counter sample `name` (`…_total`) of a scrape, 0 if absent. A build
/// from before counters were named `…_total` (`--herald PATH`) exposed the
/// same value as a gauge without the suffix.
fn counter(metrics: &[(String, f64)], name: &str) -> f64 {
    let old = name.strip_suffix("_total").unwrap_or(name);
    [name, old]
        .iter()
        .find_map(|n| metrics.iter().find(|(k, _)| k == n))
        .map_or(0.0, |(_, v)| *v)
}
