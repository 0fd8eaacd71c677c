//! Soak run: starts a release `herald serve` on a free loopback port (its
//! own temporary data directory; stopped by PID at the end, on failure too)
//! and drives a bounded mixed load against it for `--seconds`, checking
//! that nothing is lost, duplicated or reordered and that the server's
//! memory and descriptors stay bounded.
//!
//! ```text
//! cargo build --release -p herald-server --bin herald
//! cargo run --release -p herald-benches --bin soak -- [--seconds 600] [--out target/soak]
//!     [--rate 300] [--seed N] [--herald PATH] [--inject loss|dup]
//! ```
//! (`scripts/soak [SECONDS]` builds both and runs it.)
//!
//! The load, all in this process, one thread per client:
//! - **Publishers** (bounded total `--rate` events/s over six topics): HTTP
//!   keep-alive single events, HTTP batches to one topic, WebSocket single
//!   events and batches across topics. Every acknowledgement goes into a
//!   ledger (global seq → topic, topic seq, payload key); each payload
//!   names its publisher and a counter, so an event is identified by its
//!   content as well as its sequences. One event in 16 carries ~3 KiB.
//! - **Subscribers** over SSE (one topic; several topics or a pattern) and
//!   WebSocket (one topic; several), each living through many sessions:
//!   it reads for 1–8 s, disconnects (abruptly, or unsubscribing and
//!   closing), and resumes (SSE: `Last-Event-ID`, over a URL whose stale
//!   `after` it must override; WebSocket: `after`). Now and then it
//!   starts over as a new subscriber from the current position.
//! - **Slow clients** (one SSE, one WebSocket; a small receive buffer):
//!   trickle-read, then stall past the slow-client deadline, so that the
//!   server parks them and closes them (SSE: end of stream; WebSocket:
//!   4008, whose reason must name exactly the last event received), and
//!   they resume.
//! - **Presence churn**: heartbeats, leaves and abandoned sessions (which
//!   expire) of 200 client ids over HTTP, and of 40 over WebSockets that are
//!   dropped every 5–20 s (their sessions must be left). Every `joined` and
//!   `left` answer is checked against a model of the sessions.
//! - **A presence watcher** (WebSocket, `$presence.>`) receives the presence
//!   events, so that the publishers' acknowledged sequences and the watcher's
//!   cover every global sequence exactly once.
//!
//! At the end the publishers stop, an end marker is published, every
//! subscriber catches up to the ledger's last sequence of its topics, and
//! each subscriber's deliveries, life by life, are compared with the ledger:
//! every event of its topics after its starting position, exactly once, in
//! order, with the acknowledged sequences and payload. Every second the
//! server's VmRSS, RssAnon, RssFile, the resident pages of its log segment
//! mappings and its open descriptors are sampled.
//!
//! Written to `--out`: `samples.csv`, `resources.svg` (RSS and descriptors
//! over time), `summary.txt` (what is printed), `server.log`. The exit
//! status is nonzero if anything was lost, duplicated or mismatched, on any
//! unexpected error (the server's warnings included), if VmRSS without the
//! log's mapped pages grew past the bound after warm-up (the log's pages
//! grow with the log and are reported apart), if the server's sockets are
//! not back to their count at the start once every client has closed, if
//! its other descriptors grew by more than the log files it created, or if
//! it does not exit cleanly on SIGTERM. `--inject loss|dup` makes one
//! subscriber drop (or record twice) one event it received, to show that
//! the checks fail.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald_benches::report::{
    fmt_ns, machine_description, proc_fds, proc_mapped_rss_kib, proc_status_kib, CpuMeter,
};
use herald_benches::ws::{find, free_port, push_ws_frame, upgrade_request, ws_frame};
use serde_json::{json, Value};

/// The published topics (`soak.t0` …).
const TOPICS: usize = 6;
const EVENT_TYPE: &str = "soak.e";
/// The end marker's topic, which only the presence watcher subscribes to.
const END_TOPIC: &str = "soak-end";
/// How long a subscriber may take to catch up once the publishers stopped.
const CATCH_UP: Duration = Duration::from_secs(90);
/// Settings that differ from the defaults, so that a short run passes
/// through every path a long one would: a small ring (laps and catch-up
/// from the log), small segments (rotation), a small output bound and a
/// short slow-client deadline (parking and 4008 closes), frequent SSE
/// keep-alives. The ring must hold 4 × the largest record.
const SERVER_CONFIG: &str = "ring_capacity = 2097152
max_payload = 65536
segment_size = 4194304
max_output = 262144
slow_client_deadline_secs = 3
keepalive_secs = 2
";

fn topic(t: usize) -> String {
    format!("soak.t{t}")
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inject {
    Loss,
    Dup,
}

#[derive(Debug)]
struct Args {
    seconds: u64,
    out: PathBuf,
    herald: PathBuf,
    rate: f64,
    seed: u64,
    inject: Option<Inject>,
}

const USAGE: &str =
    "usage: soak [--seconds N (600)] [--out DIR (target/soak)] [--rate EVENTS_PER_S (300)]
    [--seed N] [--herald PATH (target/release/herald)] [--inject loss|dup]";

fn parse_args() -> Args {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut a = Args {
        seconds: 600,
        out: root.join("target/soak"),
        herald: root.join("target/release/herald"),
        rate: 300.0,
        seed: 0x5eed,
        inject: None,
    };
    let mut it = std::env::args().skip(1);
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
        match v.as_deref().map(str::parse) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("{flag} needs a valid value\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => a.seconds = value::<u64>(&arg, it.next()).max(10),
            "--out" => a.out = value(&arg, it.next()),
            "--herald" => a.herald = value(&arg, it.next()),
            "--rate" => a.rate = value::<f64>(&arg, it.next()).clamp(10.0, 5000.0),
            "--seed" => a.seed = value(&arg, it.next()),
            "--inject" => {
                a.inject = match value::<String>(&arg, it.next()).as_str() {
                    "loss" => Some(Inject::Loss),
                    "dup" => Some(Inject::Dup),
                    _ => {
                        eprintln!("--inject takes loss or dup\n{USAGE}");
                        std::process::exit(2);
                    }
                }
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
    a
}

/// splitmix64: reproducible choices without a dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range_ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

// ---------------------------------------------------------------------------
// What every thread shares: the ledger, errors, phase
// ---------------------------------------------------------------------------

/// An acknowledged event.
#[derive(Debug, Clone, Copy)]
struct Entry {
    topic: usize,
    tseq: u64,
    key: u64,
}

/// Every acknowledged publish.
#[derive(Debug, Default)]
struct Ledger {
    entries: HashMap<u64, Entry>,
    /// Per topic: topic seq → global seq.
    by_topic: Vec<BTreeMap<u64, u64>>,
    max_seq: u64,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            by_topic: vec![BTreeMap::new(); TOPICS],
            ..Ledger::default()
        }
    }

    fn record(&mut self, seq: u64, e: Entry) -> Result<(), String> {
        if let Some(old) = self.entries.insert(seq, e) {
            return Err(format!("seq {seq} acknowledged twice ({old:?}, {e:?})"));
        }
        if let Some(old) = self.by_topic[e.topic].insert(e.tseq, seq) {
            return Err(format!(
                "{} topic seq {} acknowledged twice (seqs {old}, {seq})",
                topic(e.topic),
                e.tseq
            ));
        }
        self.max_seq = self.max_seq.max(seq);
        Ok(())
    }

    fn topic_max(&self, t: usize) -> u64 {
        self.by_topic
            .get(t)
            .and_then(|m| m.keys().next_back().copied())
            .unwrap_or(0)
    }
}

/// Where every subscriber must get to, once the publishers stopped.
#[derive(Debug)]
struct Targets {
    /// Per topic: last topic seq, and last global seq.
    topic_tseq: [u64; TOPICS],
    topic_seq: [u64; TOPICS],
    /// The end marker's global seq.
    end_seq: u64,
    deadline: Instant,
}

#[derive(Debug)]
struct Shared {
    addr: SocketAddr,
    start: Instant,
    ledger: Mutex<Ledger>,
    errors: Mutex<Vec<String>>,
    error_count: AtomicU64,
    stop: AtomicBool,
    targets: OnceLock<Targets>,
    published: AtomicU64,
    delivered: AtomicU64,
    sessions: AtomicU64,
    /// Server-initiated closes seen by subscribers: WebSocket 4008, SSE end of stream.
    ws_slow_closes: AtomicU64,
    ws_eof_closes: AtomicU64,
    sse_closes: AtomicU64,
    presence_ops: AtomicU64,
    inject: Option<Inject>,
}

impl Shared {
    fn error(&self, who: &str, msg: impl std::fmt::Display) {
        let n = self.error_count.fetch_add(1, Ordering::Relaxed);
        let t = self.start.elapsed().as_secs_f64();
        let line = format!("[{t:7.1}s] {who}: {msg}");
        if n < 20 {
            eprintln!("error {line}");
        }
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 200 {
            errors.push(line);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, waking early when the publishers are told to stop.
    fn nap(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            thread::sleep((until - now).min(Duration::from_millis(100)));
        }
    }
}

// ---------------------------------------------------------------------------
// Client plumbing: HTTP requests, streamed responses, WebSocket frames
// ---------------------------------------------------------------------------

/// Connects to `addr`; with `rcvbuf`, the receive buffer is set before the
/// connection exists (afterwards it would not shrink the advertised window).
fn connect(addr: SocketAddr, rcvbuf: Option<i32>) -> io::Result<TcpStream> {
    let Some(size) = rcvbuf else {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        return Ok(s);
    };
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::other("IPv4 only"));
    };
    // SAFETY: plain system call with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just created and owned by nothing else; the
    // stream closes it on drop, on the error paths below too.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    // SAFETY: the option value points to a live c_int of the length given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // A small MSS as well: the server's send buffer grows with its
    // congestion window in segments, and loopback's 64 KiB segments would
    // let it hold megabytes before the server's own output bound is reached.
    let mss: i32 = 1024;
    // SAFETY: as above.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mss as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sa` is a valid sockaddr_in of the length given; `fd` is open.
    let r = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One keep-alive HTTP/1.1 connection, reconnected when needed.
#[derive(Debug)]
struct Http {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            stream: None,
            buf: Vec::new(),
        }
    }

    /// Sends one request and reads its answer: (status, body).
    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        close: bool,
    ) -> Result<(u16, Vec<u8>), String> {
        let r = self.exchange(method, path, body, close);
        if r.is_err() || close {
            self.stream = None;
        }
        r
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        close: bool,
    ) -> Result<(u16, Vec<u8>), String> {
        if self.stream.is_none() {
            let s = connect(self.addr, None).map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(15)))
                .map_err(|e| e.to_string())?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let s = self.stream.as_mut().unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {}\r\n",
            if close { "close" } else { "keep-alive" }
        )
        .into_bytes();
        if let Some(b) = body {
            write!(
                req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
            .unwrap();
        }
        req.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            req.extend_from_slice(b);
        }
        s.write_all(&req).map_err(|e| format!("write: {e}"))?;
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            read_more(s, &mut self.buf)?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line: {head:?}"))?;
        let mut len = 0;
        let mut server_closes = false;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = value.trim().parse().map_err(|_| "bad length")?,
                "connection" => server_closes = value.trim().eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        while self.buf.len() < head_end + len {
            read_more(s, &mut self.buf)?;
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        if server_closes {
            self.stream = None;
        }
        Ok((status, body))
    }

    /// A request whose answer must be 200 with a JSON body.
    fn json(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Value, String> {
        let (status, body) = self.request(method, path, body, false)?;
        if status != 200 {
            return Err(format!(
                "{method} {path}: HTTP {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{method} {path}: bad JSON: {e}"))
    }
}

fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 16 << 10];
    match s.read(&mut chunk) {
        Ok(0) => Err("connection closed by the server".into()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

/// A streamed response (SSE or WebSocket) being read.
#[derive(Debug)]
struct Sock {
    s: TcpStream,
    buf: Vec<u8>,
}

enum Fill {
    Data,
    Timeout,
    Eof,
}

impl Sock {
    /// Reads at most `max` bytes more, waiting up to the read timeout.
    fn fill(&mut self, max: usize) -> io::Result<Fill> {
        let old = self.buf.len();
        self.buf.resize(old + max, 0);
        let r = self.s.read(&mut self.buf[old..]);
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        match r {
            Ok(0) => Ok(Fill::Eof),
            Ok(_) => Ok(Fill::Data),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Fill::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(Fill::Eof),
            Err(e) => Err(e),
        }
    }

    /// Opens a connection, sends `request` and reads the response head,
    /// which must start with `expect`; what follows the head stays in `buf`.
    fn open(
        addr: SocketAddr,
        rcvbuf: Option<i32>,
        request: &[u8],
        expect: &str,
    ) -> Result<Sock, String> {
        let mut s = connect(addr, rcvbuf).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        s.write_all(request).map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        let end = loop {
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            read_more(&mut s, &mut buf)?;
        };
        if !buf.starts_with(expect.as_bytes()) {
            let line = String::from_utf8_lossy(&buf[..end]).to_string();
            return Err(format!("refused: {line:?}"));
        }
        buf.drain(..end);
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        Ok(Sock { s, buf })
    }

    fn send_ws(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut f = Vec::new();
        push_ws_frame(&mut f, opcode, payload);
        self.s.write_all(&f)
    }

    /// Complete WebSocket frames at the front of the buffer: (opcode,
    /// payload), removed from it.
    fn ws_frames(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some((op, start, end)) = ws_frame(&self.buf[pos..]) {
            out.push((op, self.buf[pos + start..pos + end].to_vec()));
            pos += end;
        }
        self.buf.drain(..pos);
        out
    }
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Default)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Parses complete lines of an event stream; returns the events dispatched
/// (a blank line ends one) and the bytes consumed.
fn parse_sse(pending: &mut SseEvent, has_data: &mut bool, buf: &[u8]) -> (Vec<SseEvent>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(nl) = buf[pos..].iter().position(|&c| c == b'\n') {
        let line = String::from_utf8_lossy(&buf[pos..pos + nl]);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        pos += nl + 1;
        if line.is_empty() {
            if *has_data {
                out.push(std::mem::take(pending));
            } else {
                *pending = SseEvent::default();
            }
            *has_data = false;
            continue;
        }
        if line.starts_with(':') {
            continue; // keep-alive comment
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => pending.id = Some(value.to_string()),
            "event" => pending.event = Some(value.to_string()),
            "data" => {
                if *has_data {
                    pending.data.push('\n');
                }
                pending.data.push_str(value);
                *has_data = true;
            }
            _ => {} // retry
        }
    }
    (out, pos)
}

// ---------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PubMode {
    HttpSingle,
    HttpBatch,
    Ws,
}

#[derive(Debug)]
struct PubResult {
    name: String,
    hist: Histogram<u64>,
    requests: u64,
    events: u64,
    /// Requests slower than 100 ms: (start, seconds into the run; duration).
    slow: Vec<(f64, Duration)>,
}

/// The payload key: publisher in the high bits, its counter below.
fn key(k: u64, n: u64) -> u64 {
    (k << 40) | n
}

fn payload(rng: &mut Rng, k: u64, n: u64) -> String {
    // One event in 16 is large: slow clients fill their buffers quickly.
    let pad = if rng.below(16) == 0 {
        3000
    } else {
        16 + rng.below(180) as usize
    };
    format!(r#"{{"k":{k},"n":{n},"pad":"{}"}}"#, "x".repeat(pad))
}

/// (seq, topic_seq) of one acknowledgement object.
fn ack_pair(v: &Value) -> Option<(u64, u64)> {
    Some((v.get("seq")?.as_u64()?, v.get("topic_seq")?.as_u64()?))
}

fn publisher(sh: Arc<Shared>, k: u64, mode: PubMode, rate: f64, seed: u64) -> PubResult {
    let name = format!("publisher {k} ({mode:?})");
    let mut rng = Rng(seed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut requests, mut events, mut n) = (0u64, 0u64, 0u64);
    let mut http = Http::new(sh.addr);
    let mut ws: Option<Sock> = None;
    let mut slow = Vec::new();
    let mut t0 = Instant::now();
    let mut paced = 0u64;
    while !sh.stopping() {
        let count = match mode {
            PubMode::HttpSingle => 1,
            PubMode::HttpBatch => 2 + rng.below(19),
            PubMode::Ws => {
                if rng.below(2) == 0 {
                    1
                } else {
                    2 + rng.below(9)
                }
            }
        };
        // Paced: never more than `rate` on average; after a stall, no burst.
        let due = t0 + Duration::from_secs_f64((paced + count) as f64 / rate);
        let now = Instant::now();
        if now < due {
            sh.nap(due - now);
            if sh.stopping() {
                break;
            }
        } else if now - due > Duration::from_secs(1) {
            t0 = now;
            paced = 0;
        }
        paced += count;
        // (topic, key) of each event of this request.
        let mut evs: Vec<(usize, u64, String)> = Vec::new();
        let one_topic = rng.below(TOPICS as u64) as usize;
        for _ in 0..count {
            n += 1;
            let t = if mode == PubMode::Ws {
                rng.below(TOPICS as u64) as usize
            } else {
                one_topic
            };
            evs.push((t, key(k, n), payload(&mut rng, k, n)));
        }
        let started = Instant::now();
        let acks: Result<Vec<(u64, u64)>, String> = match mode {
            PubMode::HttpSingle | PubMode::HttpBatch => {
                let body = if mode == PubMode::HttpSingle {
                    format!(r#"{{"type":"{EVENT_TYPE}","data":{}}}"#, evs[0].2)
                } else {
                    let items: Vec<String> = evs
                        .iter()
                        .map(|e| format!(r#"{{"type":"{EVENT_TYPE}","data":{}}}"#, e.2))
                        .collect();
                    format!("[{}]", items.join(","))
                };
                let path = format!("/v1/topics/{}/events", topic(one_topic));
                // Every 200th request closes its connection: connection churn.
                let close = requests % 200 == 199;
                match http.request("POST", &path, Some(body.as_bytes()), close) {
                    Ok((200, b)) => match serde_json::from_slice::<Value>(&b) {
                        Ok(v) if mode == PubMode::HttpSingle => {
                            ack_pair(&v).map(|a| vec![a]).ok_or(format!("bad ack {v}"))
                        }
                        Ok(v) => v["events"]
                            .as_array()
                            .map(|a| a.iter().filter_map(ack_pair).collect())
                            .ok_or(format!("bad ack {v}")),
                        Err(e) => Err(format!("bad JSON: {e}")),
                    },
                    Ok((status, b)) => {
                        Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&b)))
                    }
                    Err(e) => Err(e),
                }
            }
            PubMode::Ws => ws_publish(&sh, &mut ws, requests, &evs),
        };
        let micros = started.elapsed().as_micros() as u64;
        requests += 1;
        match acks {
            Ok(acks) if acks.len() == evs.len() => {
                hist.saturating_record(micros.max(1));
                if micros > 100_000 && slow.len() < 1000 {
                    let at = started.duration_since(sh.start).as_secs_f64();
                    slow.push((at, started.elapsed()));
                }
                let mut ledger = sh.ledger.lock().unwrap();
                for ((t, key, _), (seq, tseq)) in evs.iter().zip(acks) {
                    if let Err(e) = ledger.record(
                        seq,
                        Entry {
                            topic: *t,
                            tseq,
                            key: *key,
                        },
                    ) {
                        sh.error(&name, e);
                    }
                }
                drop(ledger);
                events += evs.len() as u64;
                sh.published.fetch_add(evs.len() as u64, Ordering::Relaxed);
            }
            Ok(acks) => sh.error(
                &name,
                format!("{} acknowledgements for {} events", acks.len(), evs.len()),
            ),
            Err(e) => {
                sh.error(&name, e);
                ws = None;
            }
        }
        // WebSocket publishers reconnect every 300 requests.
        if mode == PubMode::Ws && requests % 300 == 0 {
            if let Some(mut s) = ws.take() {
                let _ = s.send_ws(8, &1000u16.to_be_bytes());
            }
        }
    }
    PubResult {
        name,
        hist,
        requests,
        events,
        slow,
    }
}

/// One `publish` op (a single event or a batch across topics) and its reply.
fn ws_publish(
    sh: &Shared,
    ws: &mut Option<Sock>,
    r: u64,
    evs: &[(usize, u64, String)],
) -> Result<Vec<(u64, u64)>, String> {
    if ws.is_none() {
        *ws = Some(Sock::open(
            sh.addr,
            None,
            &upgrade_request(sh.addr),
            "HTTP/1.1 101",
        )?);
    }
    let s = ws.as_mut().unwrap();
    let msg = if evs.len() == 1 {
        format!(
            r#"{{"op":"publish","ref":{r},"topic":"{}","type":"{EVENT_TYPE}","data":{}}}"#,
            topic(evs[0].0),
            evs[0].2
        )
    } else {
        let items: Vec<String> = evs
            .iter()
            .map(|e| {
                format!(
                    r#"{{"topic":"{}","type":"{EVENT_TYPE}","data":{}}}"#,
                    topic(e.0),
                    e.2
                )
            })
            .collect();
        format!(
            r#"{{"op":"publish","ref":{r},"events":[{}]}}"#,
            items.join(",")
        )
    };
    s.send_ws(1, msg.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for (op, payload) in s.ws_frames() {
            if op == 9 {
                let _ = s.send_ws(10, &payload);
                continue;
            }
            if op == 8 {
                return Err(format!("closed: {}", close_text(&payload)));
            }
            let v: Value = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
            if v["type"] != "published" || v["ref"] != r {
                return Err(format!("unexpected reply {v}"));
            }
            return if evs.len() == 1 {
                ack_pair(&v).map(|a| vec![a]).ok_or(format!("bad ack {v}"))
            } else {
                v["events"]
                    .as_array()
                    .map(|a| a.iter().filter_map(ack_pair).collect())
                    .ok_or(format!("bad ack {v}"))
            };
        }
        if Instant::now() > deadline {
            return Err("no reply in 15 s".into());
        }
        match s.fill(64 << 10).map_err(|e| e.to_string())? {
            Fill::Eof => return Err("connection closed".into()),
            Fill::Data | Fill::Timeout => {}
        }
    }
}

fn close_text(payload: &[u8]) -> String {
    if payload.len() < 2 {
        return "no code".into();
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    format!("{code} {:?}", String::from_utf8_lossy(&payload[2..]))
}

// ---------------------------------------------------------------------------
// Subscribers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// SSE on one topic; ids are topic seqs.
    SseTopic(usize),
    /// SSE on several topics (`/v1/events?topics=`), listed or by a pattern.
    SseMulti(Vec<usize>, bool),
    /// WebSocket, one topic: `after` is a topic seq.
    WsTopic(usize),
    /// WebSocket, several topics (listed or a pattern): `after` is global.
    WsMulti(Vec<usize>, bool),
    /// WebSocket on `$presence.>` and the end marker's topic.
    Presence,
}

impl Kind {
    fn topics(&self) -> Vec<usize> {
        match self {
            Kind::SseTopic(t) | Kind::WsTopic(t) => vec![*t],
            Kind::SseMulti(ts, _) | Kind::WsMulti(ts, _) => ts.clone(),
            Kind::Presence => Vec::new(),
        }
    }
    /// Ids are topic seqs (dense: every gap is a loss at once).
    fn by_topic(&self) -> bool {
        matches!(self, Kind::SseTopic(_) | Kind::WsTopic(_))
    }
    fn sse(&self) -> bool {
        matches!(self, Kind::SseTopic(_) | Kind::SseMulti(..))
    }
    /// The topics as the subscription names them.
    fn names(&self) -> Vec<String> {
        match self {
            Kind::SseMulti(_, true) | Kind::WsMulti(_, true) => vec!["soak.*".into()],
            Kind::Presence => vec!["$presence.>".into(), END_TOPIC.into()],
            k => k.topics().into_iter().map(topic).collect(),
        }
    }
}

/// A run of deliveries from one starting position: a subscriber that
/// starts over begins a new life.
#[derive(Debug, Default)]
struct Life {
    start: u64,
    /// The last id it had to get (a life that ended: its last delivery).
    end: Option<u64>,
    /// (id, payload key, the other sequence or 0 where not delivered).
    got: Vec<(u64, u64, u64)>,
}

#[derive(Debug)]
struct Sub {
    name: String,
    kind: Kind,
    slow: bool,
    lives: Vec<Life>,
    /// The last id delivered (or the life's start).
    last: u64,
    /// The other sequence of the last delivery (WebSocket only).
    last_other: u64,
    received: u64,
    slow_closes: u64,
    voluntary: u64,
    online_errors: u64,
}

/// How a session ended.
enum Ended {
    /// The client left (or its session was over).
    Left,
    /// The server closed it (slow client).
    ServerClosed,
    /// Failed: reconnect after a pause.
    Failed,
    /// Caught up with the final targets.
    Done,
}

impl Sub {
    fn new(name: &str, kind: Kind, slow: bool) -> Sub {
        Sub {
            name: name.to_string(),
            kind,
            slow,
            lives: vec![Life::default()],
            last: 0,
            last_other: 0,
            received: 0,
            slow_closes: 0,
            voluntary: 0,
            online_errors: 0,
        }
    }

    fn life(&mut self) -> &mut Life {
        self.lives.last_mut().unwrap()
    }

    fn target(&self, t: &Targets) -> u64 {
        match &self.kind {
            Kind::SseTopic(x) | Kind::WsTopic(x) => t.topic_tseq[*x],
            Kind::Presence => t.end_seq,
            k => k
                .topics()
                .iter()
                .map(|x| t.topic_seq[*x])
                .max()
                .unwrap_or(0),
        }
    }

    /// Starts over as a new subscriber from the current position.
    fn new_life(&mut self, sh: &Shared) {
        let end = self.last;
        self.life().end = Some(end);
        let ledger = sh.ledger.lock().unwrap();
        let start = match &self.kind {
            Kind::SseTopic(t) | Kind::WsTopic(t) => ledger.topic_max(*t),
            _ => ledger.max_seq,
        };
        drop(ledger);
        // Never behind what it already has: ids only grow within a subscriber.
        let start = start.max(end);
        self.lives.push(Life {
            start,
            end: None,
            got: Vec::new(),
        });
        self.last = start;
        self.last_other = 0;
    }

    fn on_event(&mut self, sh: &Shared, id: u64, key: u64, other: u64) {
        self.received += 1;
        sh.delivered.fetch_add(1, Ordering::Relaxed);
        if id <= self.last {
            self.online_errors += 1;
            sh.error(
                &self.name,
                format!("id {id} after {}: duplicate or out of order", self.last),
            );
        } else if self.kind.by_topic() && id != self.last + 1 {
            self.online_errors += 1;
            sh.error(
                &self.name,
                format!("id {id} after {}: {} lost", self.last, id - self.last - 1),
            );
        }
        self.last = self.last.max(id);
        if other != 0 {
            self.last_other = other;
        }
        // Fault injection (the checks' own test): the second subscriber
        // loses, or gets twice, its 1000th delivery.
        if self.name == "sub-1" && self.received == 1000 {
            match sh.inject {
                Some(Inject::Loss) => return,
                Some(Inject::Dup) => self.life().got.push((id, key, other)),
                None => {}
            }
        }
        self.life().got.push((id, key, other));
    }
}

/// The payload key in an event's data.
fn data_key(data: &Value) -> Option<u64> {
    Some(key(data.get("k")?.as_u64()?, data.get("n")?.as_u64()?))
}

fn subscriber(sh: Arc<Shared>, mut sub: Sub, seed: u64) -> Sub {
    let mut rng = Rng(seed);
    loop {
        if let Some(t) = sh.targets.get() {
            if sub.last >= sub.target(t) {
                break;
            }
            if Instant::now() > t.deadline {
                sh.error(
                    &sub.name,
                    format!(
                        "did not catch up: at {} of {} after the publishers stopped",
                        sub.last,
                        sub.target(t)
                    ),
                );
                break;
            }
        } else if !sub.slow
            && sub.kind != Kind::Presence
            && !sub.life().got.is_empty()
            && rng.below(5) == 0
        {
            sub.new_life(&sh);
        }
        sh.sessions.fetch_add(1, Ordering::Relaxed);
        let length = (!sub.slow).then(|| rng.range_ms(1000, 8000));
        let ended = if sub.kind.sse() {
            sse_session(&sh, &mut sub, length)
        } else {
            ws_session(&sh, &mut sub, &mut rng, length)
        };
        match ended {
            Ended::Done => {}
            Ended::ServerClosed => sub.slow_closes += 1,
            Ended::Left => {
                sub.voluntary += 1;
                if sh.targets.get().is_none() {
                    sh.nap(rng.range_ms(0, 1000));
                }
            }
            Ended::Failed => thread::sleep(Duration::from_millis(500)),
        }
    }
    sub
}

/// The slow client's reading pattern: trickle for 3 s, stall, drain for
/// 3 s; the stalls vary (7, 10, 2, 5 s; the deadline is 3 s) so that the server sometimes only
/// parks the client, sometimes closes it while the client still reads the
/// close frame in time, sometimes after the client's stall outlasted the
/// deadline the server gives the close frame. `None`: stalled. Once the
/// final catch-up started it reads at full speed.
fn slow_read_size(sub: &Sub, sh: &Shared, since: Instant) -> Option<usize> {
    if !sub.slow || sh.targets.get().is_some() {
        return Some(64 << 10);
    }
    let (trickle, drain) = (Duration::from_secs(3), Duration::from_secs(3));
    let stalls = [7, 10, 2, 5].map(Duration::from_secs);
    let mut at = since.elapsed();
    let mut i = sub.slow_closes as usize;
    let stall = loop {
        let stall = stalls[i % stalls.len()];
        if at < trickle + stall + drain {
            break stall;
        }
        at -= trickle + stall + drain;
        i += 1;
    };
    if at < trickle {
        thread::sleep(Duration::from_millis(100));
        Some(1024)
    } else if at < trickle + stall {
        thread::sleep(Duration::from_millis(100));
        None
    } else {
        Some(64 << 10)
    }
}

fn sse_session(sh: &Shared, sub: &mut Sub, length: Option<Duration>) -> Ended {
    let names = sub.kind.names().join(",");
    let start = sub.life().start;
    // As a browser: the URL it opened (with the life's starting `after`);
    // on reconnects `Last-Event-ID`, which must win over the query.
    let path = match sub.kind {
        Kind::SseTopic(_) => format!("/v1/topics/{names}/events?after={start}"),
        _ => format!("/v1/events?topics={names}&after={start}"),
    };
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n");
    if sub.last > start {
        write!(req, "Last-Event-ID: {}\r\n", sub.last).unwrap();
    }
    req.push_str("\r\n");
    let rcvbuf = sub.slow.then_some(4096);
    let mut sock = match Sock::open(sh.addr, rcvbuf, req.as_bytes(), "HTTP/1.1 200") {
        Ok(s) => s,
        Err(e) => {
            sh.error(&sub.name, format!("SSE open: {e}"));
            return Ended::Failed;
        }
    };
    let opened = Instant::now();
    let mut heard = Instant::now();
    let (mut pending, mut has_data) = (SseEvent::default(), false);
    loop {
        if let Some(t) = sh.targets.get() {
            if sub.last >= sub.target(t) {
                return Ended::Done;
            }
            if Instant::now() > t.deadline {
                return Ended::Failed;
            }
        } else if length.is_some_and(|l| opened.elapsed() > l) {
            return Ended::Left;
        }
        let Some(size) = slow_read_size(sub, sh, opened) else {
            continue;
        };
        let fill = match sock.fill(size) {
            Ok(f) => f,
            Err(e) => {
                sh.error(&sub.name, format!("SSE read: {e}"));
                return Ended::Failed;
            }
        };
        match fill {
            Fill::Eof => {
                sh.sse_closes.fetch_add(1, Ordering::Relaxed);
                return Ended::ServerClosed;
            }
            Fill::Timeout => {
                // Keep-alive comments come every 2 s.
                if heard.elapsed() > Duration::from_secs(20) && !sub.slow {
                    sh.error(&sub.name, "SSE stream silent for 20 s");
                    return Ended::Failed;
                }
                continue;
            }
            Fill::Data => heard = Instant::now(),
        }
        let (events, used) = parse_sse(&mut pending, &mut has_data, &sock.buf);
        sock.buf.drain(..used);
        for ev in events {
            if ev.event.as_deref() == Some("connected") {
                // Where the stream starts: the position it resumed from.
                let position = serde_json::from_str::<Value>(&ev.data)
                    .ok()
                    .and_then(|d| d.get("position")?.as_u64());
                if position != Some(sub.last) {
                    sh.error(
                        &sub.name,
                        format!("connected at {position:?}, resumed after {}", sub.last),
                    );
                }
                continue;
            }
            if ev.event.as_deref() != Some(EVENT_TYPE) {
                sh.error(
                    &sub.name,
                    format!("unexpected SSE event {:?}: {}", ev.event, ev.data),
                );
                continue;
            }
            let id = ev.id.as_deref().and_then(|i| i.parse::<u64>().ok());
            // Streams on several topics carry the event object.
            let key = serde_json::from_str::<Value>(&ev.data)
                .ok()
                .and_then(|d| match sub.kind {
                    Kind::SseTopic(_) => data_key(&d),
                    _ => data_key(d.get("data")?),
                });
            match (id, key) {
                (Some(id), Some(key)) => sub.on_event(sh, id, key, 0),
                _ => sh.error(&sub.name, format!("bad SSE event {ev:?}")),
            }
        }
    }
}

fn ws_session(sh: &Shared, sub: &mut Sub, rng: &mut Rng, length: Option<Duration>) -> Ended {
    let rcvbuf = sub.slow.then_some(4096);
    let mut sock = match Sock::open(sh.addr, rcvbuf, &upgrade_request(sh.addr), "HTTP/1.1 101") {
        Ok(s) => s,
        Err(e) => {
            sh.error(&sub.name, format!("WebSocket open: {e}"));
            return Ended::Failed;
        }
    };
    let mut op = json!({"op": "subscribe", "id": "s1", "after": sub.last, "ref": 1});
    match &sub.kind {
        Kind::WsTopic(t) => op["topic"] = json!(topic(*t)),
        _ => op["topics"] = json!(sub.kind.names()),
    }
    if let Err(e) = sock.send_ws(1, op.to_string().as_bytes()) {
        sh.error(&sub.name, format!("subscribe: {e}"));
        return Ended::Failed;
    }
    let opened = Instant::now();
    let session_start = sub.last;
    // Leaving politely: unsubscribed at (after which nothing may arrive).
    let mut unsubscribing = false;
    let mut unsubscribed = false;
    let polite = rng.below(2) == 0;
    loop {
        if let Some(t) = sh.targets.get() {
            if sub.last >= sub.target(t) {
                return Ended::Done;
            }
            if Instant::now() > t.deadline {
                return Ended::Failed;
            }
        } else if length.is_some_and(|l| opened.elapsed() > l) && !unsubscribing {
            if !polite {
                return Ended::Left; // dropped abruptly
            }
            let _ = sock.send_ws(1, br#"{"op":"unsubscribe","id":"s1","ref":2}"#);
            unsubscribing = true;
        }
        if unsubscribing && opened.elapsed() > length.unwrap_or_default() + Duration::from_secs(15)
        {
            sh.error(&sub.name, "no answer to unsubscribe in 15 s");
            return Ended::Failed;
        }
        let Some(size) = slow_read_size(sub, sh, opened) else {
            continue;
        };
        match sock.fill(size) {
            Ok(Fill::Data | Fill::Timeout) => {}
            // The server gives a slow client's close frame the slow-client
            // deadline to get through; a client stalled longer finds the
            // connection closed. Any other client must get a close frame.
            Ok(Fill::Eof) if sub.slow => {
                sh.ws_eof_closes.fetch_add(1, Ordering::Relaxed);
                return Ended::ServerClosed;
            }
            Ok(Fill::Eof) => {
                sh.error(&sub.name, "WebSocket closed without a close frame");
                return Ended::Failed;
            }
            Err(e) => {
                sh.error(&sub.name, format!("WebSocket read: {e}"));
                return Ended::Failed;
            }
        }
        for (opcode, payload) in sock.ws_frames() {
            match opcode {
                9 => {
                    let _ = sock.send_ws(10, &payload);
                }
                8 => return ws_closed(sh, sub, &payload, session_start),
                1 => {
                    let v: Value = match serde_json::from_slice(&payload) {
                        Ok(v) => v,
                        Err(e) => {
                            sh.error(&sub.name, format!("bad JSON: {e}"));
                            continue;
                        }
                    };
                    match v["type"].as_str() {
                        Some("subscribed") if v["id"] == "s1" => {}
                        Some("unsubscribed") if v["id"] == "s1" => {
                            unsubscribed = true;
                            // A polite close: ours, then the server's reply.
                            let _ = sock.send_ws(8, &1000u16.to_be_bytes());
                        }
                        Some("event") if !unsubscribed => ws_event(sh, sub, &v),
                        _ => sh.error(&sub.name, format!("unexpected message {v}")),
                    }
                }
                _ => {}
            }
        }
    }
}

fn ws_closed(sh: &Shared, sub: &mut Sub, payload: &[u8], session_start: u64) -> Ended {
    let code = if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        0
    };
    if code == 1000 {
        return Ended::Left; // the reply to our close
    }
    if code != 4008 {
        sh.error(
            &sub.name,
            format!("closed by the server: {}", close_text(payload)),
        );
        return Ended::Failed;
    }
    sh.ws_slow_closes.fetch_add(1, Ordering::Relaxed);
    // The reason names the last (global/topic) seq sent for `s1`: it must
    // be exactly the last event received, or a client resuming from it
    // would lose or repeat events.
    let reason = String::from_utf8_lossy(&payload[2..]).to_string();
    let named = reason
        .split_whitespace()
        .find_map(|w| w.strip_prefix("s1="))
        .and_then(|p| p.split_once('/'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    let ours = if sub.kind.by_topic() {
        (sub.last_other, sub.last)
    } else {
        (sub.last, sub.last_other)
    };
    match named {
        // Nothing delivered in this session: nothing to compare with.
        Some(_) if sub.last == session_start => {}
        Some(n) if n == ours => {}
        _ => sh.error(
            &sub.name,
            format!(
                "4008 reason {reason:?} does not name the last event received (seq/topic_seq {}/{})",
                ours.0, ours.1
            ),
        ),
    }
    Ended::ServerClosed
}

fn ws_event(sh: &Shared, sub: &mut Sub, v: &Value) {
    let seq = v["seq"].as_u64().unwrap_or(0);
    let tseq = v["topic_seq"].as_u64().unwrap_or(0);
    let topic_name = v["topic"].as_str().unwrap_or("");
    let ty = v["event_type"].as_str().unwrap_or("");
    if v["sub"] != "s1" || seq == 0 || tseq == 0 {
        sh.error(&sub.name, format!("bad event {v}"));
        return;
    }
    if sub.kind == Kind::Presence {
        if topic_name == END_TOPIC {
            let k = data_key(&v["data"]).unwrap_or(0);
            sub.on_event(sh, seq, k, tseq);
        } else if topic_name.starts_with("$presence.soak.t") && ty.starts_with("presence.") {
            sub.on_event(sh, seq, 0, tseq);
        } else {
            sh.error(&sub.name, format!("unexpected event {v}"));
        }
        return;
    }
    if ty != EVENT_TYPE {
        sh.error(&sub.name, format!("unexpected event type {v}"));
        return;
    }
    let Some(k) = data_key(&v["data"]) else {
        sh.error(&sub.name, format!("bad payload {v}"));
        return;
    };
    if sub.kind.by_topic() {
        sub.on_event(sh, tseq, k, seq);
    } else {
        sub.on_event(sh, seq, k, tseq);
    }
}

// ---------------------------------------------------------------------------
// Presence churn
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Session {
    Out,
    In(Instant),
    /// No heartbeat since then: it must expire (TTL 30 s).
    Abandoned(Instant),
}

/// Past this, a session may have expired: either answer is right.
const MAYBE_EXPIRED: Duration = Duration::from_secs(25);
/// Past this, an abandoned session has expired (TTL 30 s, expiry every 1 s).
const EXPIRED: Duration = Duration::from_secs(40);

/// Checks a `joined` (heartbeat) or `left` (leave) answer against the
/// model; returns the new state.
fn presence_check(
    sh: &Shared,
    who: &str,
    id: &str,
    state: Session,
    heartbeat: bool,
    answer: Option<bool>,
) -> Session {
    let was_in = match state {
        Session::Out => Some(false),
        Session::In(t) if t.elapsed() < MAYBE_EXPIRED => Some(true),
        Session::Abandoned(t) if t.elapsed() >= EXPIRED => Some(false),
        Session::In(_) | Session::Abandoned(_) => None,
    };
    // heartbeat: `joined` is true when it was not in; leave: `left` when in.
    let expected = was_in.map(|was_in| if heartbeat { !was_in } else { was_in });
    match answer {
        None => sh.error(who, format!("{id}: bad answer")),
        Some(a) if expected.is_some_and(|e| e != a) => sh.error(
            who,
            format!(
                "{id}: {} answered {a}, expected {} (state {state:?})",
                if heartbeat {
                    "heartbeat joined"
                } else {
                    "leave left"
                },
                !a
            ),
        ),
        _ => {}
    }
    if heartbeat {
        Session::In(Instant::now())
    } else {
        Session::Out
    }
}

fn presence_http(sh: Arc<Shared>, seed: u64) {
    const IDS: usize = 200;
    let who = "presence (HTTP)";
    let mut rng = Rng(seed);
    let mut http = Http::new(sh.addr);
    let mut state = vec![Session::Out; IDS];
    let mut n = 0u64;
    while !sh.stopping() {
        sh.nap(Duration::from_millis(25));
        let i = rng.below(IDS as u64) as usize;
        let id = format!("h{i}");
        let t = topic(i % 4);
        if let Session::Abandoned(since) = state[i] {
            if since.elapsed() < EXPIRED {
                continue;
            }
            state[i] = Session::Out;
        }
        let roll = rng.below(100);
        if roll >= 95 {
            if let Session::In(t) = state[i] {
                state[i] = Session::Abandoned(t);
            }
            continue;
        }
        let heartbeat = roll < 80;
        n += 1;
        let r = if heartbeat {
            let body = format!(
                r#"{{"topic":"{t}","client_id":"{id}","user":"u{i}","device":"soak","metadata":{{"n":{n}}}}}"#
            );
            http.json("POST", "/v1/presence/heartbeat", Some(body.as_bytes()))
                .map(|v| v["joined"].as_bool())
        } else {
            let body = format!(r#"{{"topic":"{t}","client_id":"{id}"}}"#);
            http.json("POST", "/v1/presence/leave", Some(body.as_bytes()))
                .map(|v| v["left"].as_bool())
        };
        sh.presence_ops.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(a) => state[i] = presence_check(&sh, who, &id, state[i], heartbeat, a),
            Err(e) => sh.error(who, e),
        }
    }
}

/// WebSocket presence: sessions joined over a connection must be left when
/// it closes.
fn presence_ws(sh: Arc<Shared>, seed: u64) {
    const IDS: usize = 40;
    let who = "presence (WebSocket)";
    let t = topic(5);
    let mut rng = Rng(seed);
    let mut http = Http::new(sh.addr);
    while !sh.stopping() {
        let mut sock = match Sock::open(sh.addr, None, &upgrade_request(sh.addr), "HTTP/1.1 101") {
            Ok(s) => s,
            Err(e) => {
                sh.error(who, e);
                sh.nap(Duration::from_secs(1));
                continue;
            }
        };
        let mut state = vec![Session::Out; IDS];
        let until = Instant::now() + rng.range_ms(5000, 20000);
        let mut r = 0u64;
        'conn: while Instant::now() < until && !sh.stopping() {
            sh.nap(Duration::from_millis(100));
            let i = rng.below(IDS as u64) as usize;
            let heartbeat = rng.below(10) < 8;
            r += 1;
            let id = format!("w{i}");
            let op = if heartbeat {
                format!(
                    r#"{{"op":"heartbeat","topic":"{t}","client_id":"{id}","device":"ws","ref":{r}}}"#
                )
            } else {
                format!(r#"{{"op":"leave","topic":"{t}","client_id":"{id}","ref":{r}}}"#)
            };
            if let Err(e) = sock.send_ws(1, op.as_bytes()) {
                sh.error(who, e);
                break;
            }
            sh.presence_ops.fetch_add(1, Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(15);
            let answer = loop {
                if let Some((_, p)) = sock.ws_frames().into_iter().find(|(op, _)| *op == 1) {
                    break serde_json::from_slice::<Value>(&p).ok();
                }
                if Instant::now() > deadline
                    || !matches!(sock.fill(4096), Ok(Fill::Data | Fill::Timeout))
                {
                    sh.error(who, format!("no answer to {op}"));
                    break 'conn;
                }
            };
            let a = answer
                .filter(|v| v["ref"] == r)
                .and_then(|v| v[if heartbeat { "joined" } else { "left" }].as_bool());
            state[i] = presence_check(&sh, who, &id, state[i], heartbeat, a);
        }
        // Half the time a close frame, half a dropped connection: either
        // way the sessions it joined must be left.
        if rng.below(2) == 0 {
            let _ = sock.send_ws(8, &1000u16.to_be_bytes());
        }
        drop(sock);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let path = format!("/v1/topics/{t}/presence");
            let left = match http.json("GET", &path, None) {
                Ok(v) => v["present"].as_array().is_some_and(|p| p.is_empty()),
                Err(e) => {
                    sh.error(who, e);
                    break;
                }
            };
            if left {
                break;
            }
            if Instant::now() > deadline {
                sh.error(
                    who,
                    "sessions of a closed WebSocket still present after 15 s",
                );
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---------------------------------------------------------------------------
// The server and its resources
// ---------------------------------------------------------------------------

/// The server process: SIGTERM (then SIGKILL) by PID on drop, so that it
/// never outlives the run, also on a panic.
#[derive(Debug)]
struct Server {
    child: Child,
    pid: String,
    _data: tempfile::TempDir,
    data_dir: PathBuf,
}

impl Server {
    fn start(herald: &Path, out: &Path, addr: SocketAddr) -> Result<Server, String> {
        let data = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let conf = data.path().join("herald.toml");
        fs::write(&conf, SERVER_CONFIG).map_err(|e| e.to_string())?;
        let log = File::create(out.join("server.log")).map_err(|e| e.to_string())?;
        let data_dir = data.path().join("data");
        let child = Command::new(herald)
            .arg("serve")
            .arg("--config")
            .arg(&conf)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data")
            .arg(&data_dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", herald.display()))?;
        let pid = child.id().to_string();
        let mut server = Server {
            child,
            pid,
            _data: data,
            data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("herald exited during start-up ({status})"));
            }
            if let Ok((200, _)) = Http::new(addr).request("GET", "/readyz", None, true) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err("herald not ready after 30 s".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then up to 10 s for a clean exit; SIGKILL after that.
    fn stop(&mut self) -> Result<(), String> {
        if !self.alive() {
            return Err(format!("herald had exited: {:?}", self.child.try_wait()));
        }
        // SAFETY: signals our own child, whose PID cannot be reused before we wait for it.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("herald exited with {status} after SIGTERM"))
                };
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err("herald did not exit within 10 s of SIGTERM (killed)".into())
    }

    /// Files in the data directory (log segments and their index).
    fn data_files(&self) -> usize {
        fn count(p: &Path) -> usize {
            fs::read_dir(p).map_or(0, |d| {
                d.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        count(&self.data_dir)
    }
}

/// Bytes of the files under `p`.
fn dir_bytes(p: &Path) -> u64 {
    fs::read_dir(p).map_or(0, |d| {
        d.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.alive() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.alive() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    rss: u64,
    anon: u64,
    file: u64,
    /// Resident pages of the log's segment mappings (part of `file`).
    log: u64,
    fds: usize,
    sockets: usize,
    published: u64,
    delivered: u64,
}

fn sample(pid: &str, sh: &Shared, log_dir: &str) -> Option<Sample> {
    let (fds, sockets) = proc_fds(pid)?;
    Some(Sample {
        t: sh.start.elapsed().as_secs_f64(),
        rss: proc_status_kib(pid, "VmRSS")?,
        anon: proc_status_kib(pid, "RssAnon").unwrap_or(0),
        file: proc_status_kib(pid, "RssFile").unwrap_or(0),
        log: proc_mapped_rss_kib(pid, log_dir).unwrap_or(0),
        fds,
        sockets,
        published: sh.published.load(Ordering::Relaxed),
        delivered: sh.delivered.load(Ordering::Relaxed),
    })
}

fn metrics(addr: SocketAddr) -> HashMap<String, f64> {
    let Ok((200, body)) = Http::new(addr).request("GET", "/metrics", None, true) else {
        return HashMap::new();
    };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("herald_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
struct Verdict {
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    unexpected: u64,
    mismatched: u64,
}

impl Verdict {
    fn add(&mut self, o: Verdict) {
        self.expected += o.expected;
        self.received += o.received;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.unexpected += o.unexpected;
        self.mismatched += o.mismatched;
    }
    fn bad(&self) -> u64 {
        self.lost + self.duplicates + self.unexpected + self.mismatched
    }
}

/// Compares what `sub` received, life by life, with the ledger: `all` is
/// every acknowledged event as (seq, entry), sorted by seq.
fn verify(sub: &Sub, ledger: &Ledger, all: &[(u64, Entry)], targets: &Targets) -> Verdict {
    let mut v = Verdict::default();
    let topics = sub.kind.topics();
    let n = sub.lives.len();
    for (i, life) in sub.lives.iter().enumerate() {
        let end = if i + 1 == n {
            sub.target(targets)
        } else {
            life.end.unwrap_or(life.start)
        };
        // Expected (id, key, other) in order.
        let expected: Vec<(u64, u64, u64)> = if let Kind::SseTopic(t) | Kind::WsTopic(t) = sub.kind
        {
            ledger.by_topic[t]
                .range(life.start + 1..=end.max(life.start))
                .map(|(&tseq, seq)| (tseq, ledger.entries[seq].key, *seq))
                .collect()
        } else {
            let from = all.partition_point(|(s, _)| *s <= life.start);
            all[from..]
                .iter()
                .take_while(|(s, _)| *s <= end)
                .filter(|(_, e)| topics.contains(&e.topic))
                .map(|(s, e)| (*s, e.key, e.tseq))
                .collect()
        };
        v.expected += expected.len() as u64;
        v.received += life.got.len() as u64;
        let mut prev = life.start;
        let mut got: Vec<(u64, u64, u64)> = Vec::with_capacity(life.got.len());
        for &g in &life.got {
            if g.0 <= prev {
                v.duplicates += 1; // or out of order
            } else {
                got.push(g);
                prev = g.0;
            }
        }
        let (mut a, mut b) = (0, 0);
        while a < expected.len() || b < got.len() {
            match (expected.get(a), got.get(b)) {
                (Some(e), Some(g)) if e.0 == g.0 => {
                    // SSE delivers one of the two sequences: 0 for the other.
                    if e.1 != g.1 || (g.2 != 0 && g.2 != e.2) {
                        v.mismatched += 1;
                    }
                    a += 1;
                    b += 1;
                }
                (Some(e), Some(g)) if e.0 < g.0 => {
                    v.lost += 1;
                    a += 1;
                }
                (Some(_), Some(_)) | (None, Some(_)) => {
                    v.unexpected += 1;
                    b += 1;
                }
                (Some(_), None) => {
                    v.lost += 1;
                    a += 1;
                }
                (None, None) => unreachable!(),
            }
        }
    }
    v
}

/// The presence watcher's global seqs and the acknowledged ones must cover
/// 1..=end_seq exactly once: every global sequence accounted for.
fn verify_global(watcher: &Sub, all: &[(u64, Entry)], end_seq: u64) -> (u64, u64, u64) {
    let mut seen = vec![0u8; end_seq as usize + 1];
    for (s, _) in all {
        if *s <= end_seq {
            seen[*s as usize] += 1;
        }
    }
    let mut presence = 0;
    for life in &watcher.lives {
        for (s, _, _) in &life.got {
            // The end marker is counted here: it is not in the ledger.
            if *s <= end_seq {
                seen[*s as usize] += 1;
                presence += 1;
            }
        }
    }
    let missing = seen[1..].iter().filter(|&&c| c == 0).count() as u64;
    let twice = seen[1..].iter().filter(|&&c| c > 1).count() as u64;
    (presence, missing, twice)
}

// ---------------------------------------------------------------------------
// Output: CSV, SVG
// ---------------------------------------------------------------------------

fn write_csv(path: &Path, samples: &[Sample]) -> io::Result<()> {
    let mut s =
        String::from("t_s,rss_kib,rss_anon_kib,rss_file_kib,log_mapped_rss_kib,fds,socket_fds,published,delivered\n");
    for x in samples {
        writeln!(
            s,
            "{:.1},{},{},{},{},{},{},{},{}",
            x.t, x.rss, x.anon, x.file, x.log, x.fds, x.sockets, x.published, x.delivered
        )
        .unwrap();
    }
    fs::write(path, s)
}

/// RSS (MiB, left axis) and descriptors (right axis) over time, with the
/// warm-up's end and the RSS bound.
fn svg(samples: &[Sample], warmup: f64, bound_mib: f64, title: &str) -> String {
    let (w, h) = (960.0, 420.0);
    let (l, r, t, b) = (70.0, 70.0, 40.0, 50.0);
    let (pw, ph) = (w - l - r, h - t - b);
    // Round seconds on the time axis: a multiple of 50 (10 for short runs).
    let tmax = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let step = if tmax > 100.0 { 50.0 } else { 10.0 };
    let tmax = (tmax / step).ceil() * step;
    let mib = |k: u64| k as f64 / 1024.0;
    let ymax = nice(samples.iter().map(|s| mib(s.rss)).fold(bound_mib, f64::max) * 1.1);
    let fmax = nice(samples.iter().map(|s| s.fds as f64).fold(10.0, f64::max) * 1.2);
    let x = |v: f64| l + v / tmax * pw;
    let y = |v: f64| t + ph - v / ymax * ph;
    let yf = |v: f64| t + ph - v / fmax * ph;
    let mut s = String::new();
    writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#).unwrap();
    writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#).unwrap();
    writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        w / 2.0,
        xml(title)
    )
    .unwrap();
    writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
    )
    .unwrap();
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let (yy, xx) = (t + ph - f * ph, l + f * pw);
        writeln!(
            s,
            r##"<line x1="{l}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eee"/>"##,
            l + pw
        )
        .unwrap();
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}</text>"#,
            l - 6.0,
            yy + 4.0,
            f * ymax
        )
        .unwrap();
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{:.0}</text>"#,
            l + pw + 6.0,
            yy + 4.0,
            f * fmax
        )
        .unwrap();
        writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>"#,
            t + ph + 16.0,
            f * tmax
        )
        .unwrap();
    }
    writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text>"#,
        l + pw / 2.0,
        h - 12.0
    )
    .unwrap();
    writeln!(s, r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">RSS (MiB)</text>"#, t + ph / 2.0).unwrap();
    writeln!(s, r#"<text transform="translate({:.1} {:.1}) rotate(90)" text-anchor="middle">open descriptors</text>"#, w - 16.0, t + ph / 2.0).unwrap();
    let line = |s: &mut String, pts: Vec<(f64, f64)>, color: &str, dash: &str| {
        let p: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        writeln!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" stroke-dasharray="{dash}" points="{}"/>"#, p.join(" ")).unwrap();
    };
    line(
        &mut s,
        samples.iter().map(|p| (x(p.t), y(mib(p.rss)))).collect(),
        "#1f5fbf",
        "none",
    );
    line(
        &mut s,
        samples
            .iter()
            .map(|p| (x(p.t), y(mib(p.rss - p.log))))
            .collect(),
        "#7fa7e0",
        "4 3",
    );
    line(
        &mut s,
        samples.iter().map(|p| (x(p.t), yf(p.fds as f64))).collect(),
        "#e07b00",
        "none",
    );
    line(
        &mut s,
        vec![(x(warmup), t), (x(warmup), t + ph)],
        "#666",
        "2 4",
    );
    line(
        &mut s,
        vec![(l, y(bound_mib)), (l + pw, y(bound_mib))],
        "#c00",
        "6 4",
    );
    let legend = [
        ("#1f5fbf", "none", "VmRSS (MiB)"),
        (
            "#7fa7e0",
            "4 3",
            "VmRSS without the log's mapped pages (MiB)",
        ),
        ("#e07b00", "none", "open descriptors (right axis)"),
        ("#c00", "6 4", "bound on VmRSS without the log's pages"),
        ("#666", "2 4", "end of warm-up"),
    ];
    for (i, (c, d, label)) in legend.iter().enumerate() {
        let yy = t + 14.0 + i as f64 * 16.0;
        writeln!(s, r#"<line x1="{:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{c}" stroke-width="2" stroke-dasharray="{d}"/>"#, l + 10.0, l + 36.0).unwrap();
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{label}</text>"#,
            l + 42.0,
            yy + 4.0
        )
        .unwrap();
    }
    s.push_str("</svg>\n");
    s
}

/// A round axis maximum ≥ `v`: 1, 2 or 5 × 10^n.
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.max(1.0).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    let args = parse_args();
    if let Err(e) = fs::create_dir_all(&args.out) {
        eprintln!("cannot create {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut server = Server::start(&args.herald, &args.out, addr)?;
    let pid = server.pid.clone();
    let log_dir = server.data_dir.to_string_lossy().to_string();
    let meter = CpuMeter::start();
    let sh = Arc::new(Shared {
        addr,
        start: Instant::now(),
        ledger: Mutex::new(Ledger::new()),
        errors: Mutex::new(Vec::new()),
        error_count: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        targets: OnceLock::new(),
        published: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        sessions: AtomicU64::new(0),
        ws_slow_closes: AtomicU64::new(0),
        ws_eof_closes: AtomicU64::new(0),
        sse_closes: AtomicU64::new(0),
        presence_ops: AtomicU64::new(0),
        inject: args.inject,
    });
    // The readiness probe's connection closes first: it is no part of the baseline.
    thread::sleep(Duration::from_millis(500));
    let first = sample(&pid, &sh, &log_dir).ok_or("cannot read the server's /proc entries")?;
    let files0 = server.data_files();
    eprintln!(
        "soak: herald (pid {pid}) on {addr}, {} s at {} events/s; at start: RSS {:.1} MiB, {} descriptors ({} sockets)",
        args.seconds,
        args.rate,
        first.rss as f64 / 1024.0,
        first.fds,
        first.sockets
    );

    // Sampler: every second until told to stop.
    let samples = Arc::new(Mutex::new(vec![first]));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sh, samples, sampling) = (sh.clone(), samples.clone(), sampling.clone());
        let (pid, log_dir) = (pid.clone(), log_dir.clone());
        thread::spawn(move || {
            let mut next = Instant::now();
            while sampling.load(Ordering::Relaxed) {
                next += Duration::from_secs(1);
                thread::sleep(next.saturating_duration_since(Instant::now()));
                match sample(&pid, &sh, &log_dir) {
                    Some(s) => samples.lock().unwrap().push(s),
                    None => {
                        sh.error(
                            "sampler",
                            "the server's /proc entries are gone (did it exit?)",
                        );
                        return;
                    }
                }
            }
        })
    };

    let all = || (0..TOPICS).collect::<Vec<_>>();
    let subs = vec![
        Sub::new("sub-0", Kind::SseTopic(0), false),
        Sub::new("sub-1", Kind::WsMulti(all(), false), false),
        Sub::new("sub-2", Kind::SseMulti(all(), true), false),
        Sub::new("sub-3", Kind::WsTopic(2), false),
        Sub::new("sub-4", Kind::SseMulti(vec![1, 3], false), false),
        Sub::new("sub-5", Kind::WsMulti(all(), true), false),
        Sub::new("slow-sse", Kind::SseMulti(all(), true), true),
        Sub::new("slow-ws", Kind::WsMulti(all(), false), true),
        Sub::new("presence-watcher", Kind::Presence, false),
    ];
    let sub_threads: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let sh = sh.clone();
            let seed = args.seed ^ (0x100 + i as u64);
            thread::spawn(move || subscriber(sh, s, seed))
        })
        .collect();
    let churn = vec![
        {
            let sh = sh.clone();
            let seed = args.seed ^ 0x200;
            thread::spawn(move || presence_http(sh, seed))
        },
        {
            let sh = sh.clone();
            let seed = args.seed ^ 0x201;
            thread::spawn(move || presence_ws(sh, seed))
        },
    ];
    let shares = [
        (PubMode::HttpSingle, 0.3),
        (PubMode::HttpBatch, 0.4),
        (PubMode::Ws, 0.3),
    ];
    let pubs: Vec<_> = shares
        .iter()
        .enumerate()
        .map(|(k, &(mode, share))| {
            let sh = sh.clone();
            let rate = args.rate * share;
            let seed = args.seed ^ (0x300 + k as u64);
            thread::spawn(move || publisher(sh, k as u64 + 1, mode, rate, seed))
        })
        .collect();

    // The run itself: progress every 10 s.
    let run_end = sh.start + Duration::from_secs(args.seconds);
    let mut next_report = sh.start + Duration::from_secs(10);
    while Instant::now() < run_end {
        thread::sleep(Duration::from_millis(200));
        if !server.alive() {
            sh.error("server", "herald exited during the run");
            break;
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            let last = *samples.lock().unwrap().last().unwrap();
            eprintln!(
                "soak: {:4.0} s: {} published, {} delivered, {} sessions, RSS {:.1} MiB, {} fds, {} errors",
                last.t,
                last.published,
                last.delivered,
                sh.sessions.load(Ordering::Relaxed),
                last.rss as f64 / 1024.0,
                last.fds,
                sh.error_count.load(Ordering::Relaxed)
            );
        }
    }
    let load_end = sh.start.elapsed().as_secs_f64();
    sh.stop.store(true, Ordering::Relaxed);
    let pub_results: Vec<PubResult> = pubs
        .into_iter()
        .filter_map(|h| {
            h.join()
                .map_err(|_| sh.error("main", "a publisher panicked"))
                .ok()
        })
        .collect();
    for h in churn {
        if h.join().is_err() {
            sh.error("main", "a presence thread panicked");
        }
    }

    // The end marker, then every subscriber catches up to the ledger.
    let marker = Http::new(addr).json(
        "POST",
        &format!("/v1/topics/{END_TOPIC}/events"),
        Some(format!(r#"{{"type":"{EVENT_TYPE}","data":{{"k":0,"n":1}}}}"#).as_bytes()),
    );
    let end_seq = match marker.as_ref().map(ack_pair) {
        Ok(Some((seq, _))) => seq,
        _ => {
            sh.error("main", format!("end marker: {marker:?}"));
            0
        }
    };
    {
        let ledger = sh.ledger.lock().unwrap();
        let mut topic_tseq = [0; TOPICS];
        let mut topic_seq = [0; TOPICS];
        for t in 0..TOPICS {
            topic_tseq[t] = ledger.topic_max(t);
            topic_seq[t] = ledger.by_topic[t].values().copied().max().unwrap_or(0);
        }
        sh.targets
            .set(Targets {
                topic_tseq,
                topic_seq,
                end_seq,
                deadline: Instant::now() + CATCH_UP,
            })
            .unwrap();
    }
    let caught_up_from = Instant::now();
    let subs: Vec<Sub> = sub_threads
        .into_iter()
        .filter_map(|h| {
            h.join()
                .map_err(|_| sh.error("main", "a subscriber panicked"))
                .ok()
        })
        .collect();
    let catch_up = caught_up_from.elapsed();
    let clients_closed = sh.start.elapsed().as_secs_f64();

    // Every client has closed: the server's sockets must go back to what
    // they were at the start (closes are asynchronous: allow 15 s).
    let settle = Instant::now() + Duration::from_secs(15);
    let mut end_fds = sample(&pid, &sh, &log_dir);
    while end_fds.is_some_and(|s| s.sockets > first.sockets) && Instant::now() < settle {
        thread::sleep(Duration::from_millis(250));
        end_fds = sample(&pid, &sh, &log_dir);
    }
    let m = metrics(addr);
    let files1 = server.data_files();
    let log_bytes = dir_bytes(&server.data_dir);
    thread::sleep(Duration::from_millis(1100));
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let stopped = server.stop();
    let others_busy = meter.others_busy();
    let samples = samples.lock().unwrap().clone();

    // ------------------------------------------------------------------
    // Verdicts
    // ------------------------------------------------------------------
    let mut failures: Vec<String> = Vec::new();
    let mut report = String::new();
    let ledger = sh.ledger.lock().unwrap();
    let mut all: Vec<(u64, Entry)> = ledger.entries.iter().map(|(s, e)| (*s, *e)).collect();
    all.sort_by_key(|(s, _)| *s);
    let targets = sh.targets.get().unwrap();
    let published: u64 = pub_results.iter().map(|p| p.events).sum();
    let requests: u64 = pub_results.iter().map(|p| p.requests).sum();

    writeln!(report, "# Soak run").unwrap();
    writeln!(report).unwrap();
    writeln!(report, "- machine: {}", machine_description()).unwrap();
    writeln!(
        report,
        "- command: soak --seconds {} --rate {} --seed {}{}",
        args.seconds,
        args.rate,
        args.seed,
        match args.inject {
            Some(Inject::Loss) => " --inject loss",
            Some(Inject::Dup) => " --inject dup",
            None => "",
        }
    )
    .unwrap();
    writeln!(
        report,
        "- server settings: {}",
        SERVER_CONFIG.trim().replace('\n', ", ")
    )
    .unwrap();
    if let Some(o) = others_busy {
        writeln!(
            report,
            "- other processes used {:.0}% of the machine's CPU time",
            o * 100.0
        )
        .unwrap();
    }
    writeln!(report).unwrap();

    // Publishing.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    writeln!(report, "## Publishing ({load_end:.0} s of load)").unwrap();
    writeln!(report).unwrap();
    writeln!(
        report,
        "| publisher | requests | events | p50 | p99 | max |"
    )
    .unwrap();
    writeln!(report, "|---|---:|---:|---:|---:|---:|").unwrap();
    for p in &pub_results {
        hist.add(&p.hist).unwrap();
        writeln!(
            report,
            "| {} | {} | {} | {} | {} | {} |",
            p.name,
            p.requests,
            p.events,
            fmt_ns(p.hist.value_at_quantile(0.5) as f64 * 1e3),
            fmt_ns(p.hist.value_at_quantile(0.99) as f64 * 1e3),
            fmt_ns(p.hist.max() as f64 * 1e3)
        )
        .unwrap();
    }
    let p99 = hist.value_at_quantile(0.99) as f64 * 1e3;
    writeln!(
        report,
        "| all | {requests} | {published} | {} | {} | {} |",
        fmt_ns(hist.value_at_quantile(0.5) as f64 * 1e3),
        fmt_ns(p99),
        fmt_ns(hist.max() as f64 * 1e3)
    )
    .unwrap();
    writeln!(report, "\n(latency: request written → acknowledgement read, per request; a batch is one request)\n").unwrap();
    // When the slowest publishes started, to line them up with samples.csv
    // (a step in log_mapped_rss_kib is a new log segment).
    let mut slow: Vec<(f64, Duration)> = pub_results.iter().flat_map(|p| p.slow.clone()).collect();
    if !slow.is_empty() {
        slow.sort_by_key(|s| std::cmp::Reverse(s.1));
        let list: Vec<String> = slow
            .iter()
            .take(8)
            .map(|(at, d)| format!("{} at {at:.1} s", fmt_ns(d.as_nanos() as f64)))
            .collect();
        writeln!(
            report,
            "Publishes slower than 100 ms: {}; the slowest: {}.\n",
            slow.len(),
            list.join(", ")
        )
        .unwrap();
    }
    if published == 0 {
        failures.push("nothing was published".into());
    }

    // The ledger: topic seqs dense; with the presence watcher, global seqs.
    for t in 0..TOPICS {
        let keys = &ledger.by_topic[t];
        let n = keys.len() as u64;
        if keys.keys().next_back().copied().unwrap_or(0) != n {
            failures.push(format!(
                "{}: {} acknowledged topic seqs, highest {:?}: not dense",
                topic(t),
                n,
                keys.keys().next_back()
            ));
        }
    }

    // Subscribers.
    writeln!(report, "## Subscribers").unwrap();
    writeln!(report).unwrap();
    writeln!(
        report,
        "| subscriber | kind | lives | sessions ended by it / by the server | received | expected | lost | duplicates | unexpected | mismatched |"
    )
    .unwrap();
    writeln!(report, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    let mut total = Verdict::default();
    let mut watcher = None;
    for sub in &subs {
        let v = if sub.kind == Kind::Presence {
            watcher = Some(sub);
            let got: u64 = sub.lives.iter().map(|l| l.got.len() as u64).sum();
            Verdict {
                received: got,
                ..Verdict::default()
            }
        } else {
            verify(sub, &ledger, &all, targets)
        };
        total.add(v);
        writeln!(
            report,
            "| {} | {:?}{} | {} | {} / {} | {} | {} | {} | {} | {} | {} |",
            sub.name,
            sub.kind,
            if sub.slow { ", slow" } else { "" },
            sub.lives.len(),
            sub.voluntary,
            sub.slow_closes,
            v.received,
            if sub.kind == Kind::Presence {
                "(below)".into()
            } else {
                v.expected.to_string()
            },
            v.lost,
            v.duplicates,
            v.unexpected,
            v.mismatched
        )
        .unwrap();
        if v.bad() > 0 {
            failures.push(format!(
                "{}: {} lost, {} duplicates, {} unexpected, {} mismatched",
                sub.name, v.lost, v.duplicates, v.unexpected, v.mismatched
            ));
        }
    }
    writeln!(report).unwrap();
    if let Some(w) = watcher {
        let (presence, missing, twice) = verify_global(w, &all, targets.end_seq);
        writeln!(
            report,
            "Global sequence 1..={}: {} acknowledged publishes + {} presence events seen by the watcher; {} sequences accounted for by neither, {} twice.",
            targets.end_seq,
            all.len(),
            presence,
            missing,
            twice
        )
        .unwrap();
        if targets.end_seq == 0 || missing > 0 || twice > 0 {
            failures.push(format!(
                "global sequence: {missing} missing, {twice} twice (up to {})",
                targets.end_seq
            ));
        }
    }
    let slow_ws = sh.ws_slow_closes.load(Ordering::Relaxed);
    let slow_sse = sh.sse_closes.load(Ordering::Relaxed);
    let slow_eof = sh.ws_eof_closes.load(Ordering::Relaxed);
    let metric = |n: &str| m.get(n).copied().unwrap_or(f64::NAN);
    writeln!(
        report,
        "Deliveries: {} in all ({} by the server's count), caught up {:.1} s after the publishers stopped; {} subscriber sessions; slow-client closes seen: {slow_ws} WebSocket 4008, {slow_eof} WebSocket closed while the client stalled past the deadline, {slow_sse} SSE (server: {} closes, {} streams parked); {} presence operations.",
        total.received,
        metric("herald_server_deliveries_total"),
        catch_up.as_secs_f64(),
        sh.sessions.load(Ordering::Relaxed),
        metric("herald_server_slow_client_closes_total"),
        metric("herald_server_slow_streams_total"),
        sh.presence_ops.load(Ordering::Relaxed),
    )
    .unwrap();
    writeln!(report).unwrap();
    if m.is_empty() {
        failures.push("the server's /metrics could not be read".into());
    }
    // Every close a subscriber saw must be one the server made as slow.
    if (slow_ws + slow_eof + slow_sse) as f64 > metric("herald_server_slow_client_closes_total") {
        failures.push(format!(
            "subscribers saw {} server closes, the server counts {} slow-client closes",
            slow_ws + slow_eof + slow_sse,
            metric("herald_server_slow_client_closes_total")
        ));
    }

    // Resources.
    let warmup = (args.seconds as f64 * 0.2).max(10.0);
    let warm: Vec<&Sample> = samples.iter().filter(|s| s.t <= warmup).collect();
    let rest: Vec<&Sample> = samples.iter().filter(|s| s.t > warmup).collect();
    // The log's segments are mapped: every page written stays resident
    // (file-backed, reclaimable) while its segment is mapped, so VmRSS grows
    // with the log. The bound is on the rest, where the server's own
    // allocations (and leaks) are.
    let own = |s: &Sample| s.rss.saturating_sub(s.log);
    let warm_rss = warm.iter().map(|s| own(s)).max().unwrap_or(0);
    let rest_max = rest.iter().map(|s| own(s)).max().unwrap_or(0);
    let bound = warm_rss as f64 * 1.5 + 16.0 * 1024.0;
    let last = samples.last().copied().unwrap_or(first);
    let mib = |k: u64| k as f64 / 1024.0;
    writeln!(report, "## Server resources").unwrap();
    writeln!(report).unwrap();
    writeln!(
        report,
        "- VmRSS: {:.1} MiB at start, {:.1} MiB at the end, {:.1} MiB at most (RssAnon {:.1} → {:.1} MiB, RssFile {:.1} → {:.1} MiB, of which the log's mapped segments {:.1} → {:.1} MiB)",
        mib(first.rss),
        mib(last.rss),
        mib(samples.iter().map(|s| s.rss).max().unwrap_or(0)),
        mib(first.anon),
        mib(last.anon),
        mib(first.file),
        mib(last.file),
        mib(first.log),
        mib(last.log),
    )
    .unwrap();
    writeln!(
        report,
        "- VmRSS without the log's mapped pages: {:.1} MiB at start, {:.1} MiB at most during warm-up (first {warmup:.0} s), {:.1} MiB at most after it, {:.1} MiB at the end",
        mib(own(&first)),
        mib(warm_rss),
        mib(rest_max),
        mib(own(&last)),
    )
    .unwrap();
    writeln!(
        report,
        "- bound after warm-up: at most warm-up max × 1.5 + 16 MiB = {:.1} MiB: {}",
        bound / 1024.0,
        if (rest_max as f64) <= bound {
            "met"
        } else {
            "EXCEEDED"
        }
    )
    .unwrap();
    writeln!(
        report,
        "  (warm-up has seen every kind of client, the ring's first laps and segment rolls; under the same steady load after it the server should need no more memory. The slack absorbs allocator noise on a noisy machine; a leak of 1 KiB per publish request, or of 64 KiB per client session, grows past it in a 10-minute run.)"
    )
    .unwrap();
    if (rest_max as f64) > bound {
        failures.push(format!(
            "VmRSS without the log's pages grew to {:.1} MiB after warm-up (bound {:.1} MiB)",
            mib(rest_max),
            bound / 1024.0
        ));
    }
    // Not a failure (clean file pages the kernel reclaims under pressure)
    // but worth seeing: docs/DESIGN.md targets a bounded working set of
    // mapped pages, not the whole log.
    if last.log > 24 * 1024 {
        writeln!(
            report,
            "- note: the log's resident mapped pages grew with the log, to {:.1} MiB ({:.1} MiB of log files): written segments stay resident while mapped",
            mib(last.log),
            log_bytes as f64 / (1 << 20) as f64
        )
        .unwrap();
    }
    let peak_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    match end_fds {
        Some(e) => {
            writeln!(
                report,
                "- descriptors: {} at start ({} sockets), {peak_fds} at peak, {} after the clients closed ({} sockets); data files {files0} → {files1}",
                first.fds, first.sockets, e.fds, e.sockets
            )
            .unwrap();
            if e.sockets > first.sockets {
                failures.push(format!(
                    "socket descriptors leaked: {} at start, {} 15 s after every client closed",
                    first.sockets, e.sockets
                ));
            }
            // Other descriptors may grow by the log files created, not more.
            let other0 = first.fds - first.sockets;
            let other1 = e.fds - e.sockets;
            if other1 > other0 + files1.saturating_sub(files0) + 2 {
                failures.push(format!(
                    "non-socket descriptors grew from {other0} to {other1} (data files {files0} → {files1})"
                ));
            }
        }
        None => failures.push("the server's descriptors could not be read at the end".into()),
    }
    match &stopped {
        Ok(()) => writeln!(report, "- shutdown: clean exit on SIGTERM").unwrap(),
        Err(e) => failures.push(e.clone()),
    }
    writeln!(report).unwrap();

    // Unexpected errors, the server's warnings included.
    let log = fs::read_to_string(args.out.join("server.log")).unwrap_or_default();
    for l in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| !l.contains("anonymous clients have full access"))
    {
        sh.error("server log", l);
    }
    let errors = sh.errors.lock().unwrap().clone();
    let n_errors = sh.error_count.load(Ordering::Relaxed);
    if n_errors > 0 {
        failures.push(format!("{n_errors} unexpected errors"));
        writeln!(report, "## Errors ({n_errors})\n").unwrap();
        for e in &errors {
            writeln!(report, "- {e}").unwrap();
        }
        writeln!(report).unwrap();
    }

    write_csv(&args.out.join("samples.csv"), &samples).map_err(|e| e.to_string())?;
    let title = format!(
        "herald soak: {} s, {published} events published, {} delivered",
        args.seconds, total.received
    );
    fs::write(
        args.out.join("resources.svg"),
        svg(&samples, warmup, bound / 1024.0, &title),
    )
    .map_err(|e| e.to_string())?;

    writeln!(report, "## Verdict\n").unwrap();
    writeln!(
        report,
        "{} events published, {} deliveries, {} lost, {} duplicated, {} unexpected, {} mismatched; publish p99 {}; VmRSS {:.1} → {:.1} MiB, without the log's mapped pages at most {:.1} MiB after warm-up (bound {:.1}); descriptors {} → {}; load {load_end:.0} s, clients closed at {clients_closed:.0} s.",
        published,
        total.received,
        total.lost,
        total.duplicates,
        total.unexpected,
        total.mismatched,
        fmt_ns(p99),
        mib(first.rss),
        mib(last.rss),
        mib(rest_max),
        bound / 1024.0,
        first.fds,
        end_fds.map_or(0, |e| e.fds),
    )
    .unwrap();
    if failures.is_empty() {
        writeln!(report, "\nPASS").unwrap();
    } else {
        writeln!(report, "\nFAIL:").unwrap();
        for f in &failures {
            writeln!(report, "- {f}").unwrap();
        }
    }
    print!("{report}");
    fs::write(args.out.join("summary.txt"), &report).map_err(|e| e.to_string())?;
    eprintln!(
        "soak: wrote {}, {}, {}",
        args.out.join("summary.txt").display(),
        args.out.join("samples.csv").display(),
        args.out.join("resources.svg").display()
    );
    Ok(failures.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_on_blank_lines_and_skip_comments() {
        let stream = b"retry: 2000\n\n: keep-alive\n\nid: 7\nevent: soak.e\ndata: {\"k\":1,\"n\":2}\n\nid: 8\nevent: soak.e\ndata: {\"k\":1,";
        let (mut pending, mut has_data) = (SseEvent::default(), false);
        let (events, used) = parse_sse(&mut pending, &mut has_data, stream);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[0].event.as_deref(), Some(EVENT_TYPE));
        assert_eq!(events[0].data, r#"{"k":1,"n":2}"#);
        // The incomplete last line stays unread.
        assert_eq!(&stream[used..], b"data: {\"k\":1,");
    }

    /// A ledger of 10 events, alternating between topics 0 and 1.
    fn ledger() -> (Ledger, Vec<(u64, Entry)>, Targets) {
        let mut l = Ledger::new();
        for seq in 1..=10u64 {
            let topic = (seq % 2) as usize;
            let tseq = seq.div_ceil(2);
            l.record(
                seq,
                Entry {
                    topic,
                    tseq,
                    key: key(1, seq),
                },
            )
            .unwrap();
        }
        let mut all: Vec<(u64, Entry)> = l.entries.iter().map(|(s, e)| (*s, *e)).collect();
        all.sort_by_key(|(s, _)| *s);
        let mut topic_tseq = [0; TOPICS];
        let mut topic_seq = [0; TOPICS];
        for t in 0..2 {
            topic_tseq[t] = l.topic_max(t);
            topic_seq[t] = *l.by_topic[t].values().max().unwrap();
        }
        let targets = Targets {
            topic_tseq,
            topic_seq,
            end_seq: 11,
            deadline: Instant::now(),
        };
        (l, all, targets)
    }

    #[test]
    fn verify_counts_losses_duplicates_and_mismatches() {
        let (l, all, targets) = ledger();
        let mut sub = Sub::new("s", Kind::WsMulti(vec![0, 1], false), false);
        // Two lives: 1..=4, then from 6 on; 5 is not expected.
        sub.lives[0].got = (1..=4).map(|s| (s, key(1, s), s.div_ceil(2))).collect();
        sub.lives[0].end = Some(4);
        let got = |s: u64| (s, key(1, s), s.div_ceil(2));
        sub.lives.push(Life {
            start: 5,
            end: None,
            got: (6..=10).map(got).collect(),
        });
        let v = verify(&sub, &l, &all, &targets);
        assert_eq!((v.expected, v.bad()), (9, 0), "{v:?}");

        // 8 lost, 9 twice, 10 with another payload.
        sub.lives[1].got = vec![got(6), got(7), got(9), got(9), (10, key(2, 10), 5)];
        let v = verify(&sub, &l, &all, &targets);
        assert_eq!(
            (v.lost, v.duplicates, v.mismatched, v.unexpected),
            (1, 1, 1, 0)
        );

        // One topic: ids are topic seqs; an event beyond the target is unexpected.
        let mut one = Sub::new("t", Kind::SseTopic(1), false);
        one.lives[0].got = (1..=6).map(|t| (t, key(1, 2 * t - 1), 0)).collect();
        let v = verify(&one, &l, &all, &targets);
        assert_eq!((v.expected, v.lost, v.unexpected), (5, 0, 1), "{v:?}");
    }

    #[test]
    fn global_sequence_needs_every_seq_once() {
        let (_, all, _) = ledger();
        let mut w = Sub::new("w", Kind::Presence, false);
        w.lives[0].got = vec![(11, 0, 0)];
        assert_eq!(verify_global(&w, &all, 11), (1, 0, 0));
        w.lives[0].got = vec![(10, 0, 0), (12, 0, 0)];
        assert_eq!(verify_global(&w, &all, 11), (1, 1, 1));
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice(0.5), 1.0);
        assert_eq!(nice(34.0), 50.0);
        assert_eq!(nice(101.0), 200.0);
    }
}
