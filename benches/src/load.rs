//! The load generator of the server benchmarks: subscriber connections
//! driven by client threads (one `mio` poll each) and a publisher on a
//! blocking socket, for Herald (WebSocket, `/v1/ws`) and for nats-server
//! (the NATS text protocol). Every payload carries its send time; receivers
//! record end-to-end latency in an hdrhistogram.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use memchr::memmem::{Finder, FinderRev};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::ws::{contains, find, push_ws_frame, upgrade_request, ws_frame};

/// The measured topic (NATS subject).
pub const TOPIC: &str = "bench.fanout";
/// Payload bytes of every published event.
pub const PAYLOAD: usize = 128;
/// Added to every timestamp so that it always has 19 digits (valid JSON,
/// fixed width).
const TS_OFFSET: u64 = 1_000_000_000_000_000_000;
/// Connections being set up at once per client thread (keeps the servers'
/// accept backlogs from overflowing).
const MAX_CONNECTING: usize = 256;
/// Latency recording is off while the shared `record_from` holds this.
const NOT_RECORDING: u64 = u64::MAX;

/// This process's clock origin, and the wall clock (ns since the epoch)
/// at it.
static BASE: OnceLock<(Instant, u64)> = OnceLock::new();

fn base() -> &'static (Instant, u64) {
    BASE.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (Instant::now(), wall)
    })
}

/// Nanoseconds since this process's clock origin (publisher and receivers
/// share it: they are threads of one process).
pub fn now_ns() -> u64 {
    base().0.elapsed().as_nanos() as u64
}

/// A server's event timestamp (wall clock, ns since the epoch) on this
/// process's clock: meaningful when the server runs on this machine.
fn server_time(wall_ns: u64) -> u64 {
    wall_ns.saturating_sub(base().1)
}

/// What the Herald clients do beyond the server benchmark's defaults (its
/// topic, 128-byte payloads, no token, WebSocket both ways).
#[derive(Debug, Clone)]
pub struct Options {
    /// The topic published to and subscribed to.
    pub topic: String,
    /// Payload bytes of every event (at least 32: the stamp's JSON).
    pub size: usize,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Subscribers read Server-Sent Events instead of a WebSocket.
    pub sse: bool,
    /// The publisher POSTs over HTTP/1.1 (pipelined) instead of a WebSocket.
    pub http: bool,
    /// WebSocket subscribers ask for batched delivery: (max_events,
    /// max_delay_ms).
    pub ws_batch: Option<(u32, u32)>,
    /// Latencies are also split at the server's timestamp of each event
    /// (the snapshot's `ingress` and `egress`): a search and two records
    /// more per delivery, which a side-by-side run does not make for its
    /// other peer.
    pub split_latency: bool,
}

/// Parses a `--ws-batch` value, `MAX_EVENTS,MAX_DELAY_MS` (`MAX_EVENTS` at
/// least 1).
pub fn parse_ws_batch(v: &str) -> Option<(u32, u32)> {
    let (n, d) = v.split_once(',')?;
    let (n, d) = (n.parse().ok()?, d.parse().ok()?);
    (n > 0).then_some((n, d))
}

impl Default for Options {
    fn default() -> Options {
        Options {
            topic: TOPIC.to_string(),
            size: PAYLOAD,
            token: None,
            sse: false,
            http: false,
            ws_batch: None,
            split_latency: false,
        }
    }
}

impl Options {
    /// The `Authorization` header line, if there is a token.
    fn auth(&self) -> String {
        self.token
            .as_ref()
            .map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"))
    }

    /// The WebSocket upgrade request, with the token if there is one.
    fn upgrade(&self, addr: SocketAddr) -> Vec<u8> {
        let mut req = upgrade_request(addr);
        req.truncate(req.len() - 2);
        req.extend_from_slice(self.auth().as_bytes());
        req.extend_from_slice(b"\r\n");
        req
    }
}

/// The system a connection speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Herald's server, over WebSocket.
    Herald,
    /// nats-server, over the NATS text protocol.
    Nats,
}

impl Peer {
    /// The name in tables and notes.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Herald => "herald",
            Peer::Nats => "nats-server",
        }
    }
}

// ---------------------------------------------------------------------------
// Wire formats
// ---------------------------------------------------------------------------

/// Appends the 128-byte payload `{"p":"x…x","t":<10^18 + ts>}`.
pub fn push_payload(out: &mut Vec<u8>, ts: u64) {
    push_payload_sized(out, ts, PAYLOAD);
}

/// Appends a `size`-byte payload `{"p":"x…x","t":<10^18 + ts>}` (32 bytes
/// at least).
pub fn push_payload_sized(out: &mut Vec<u8>, ts: u64, size: usize) {
    out.extend_from_slice(br#"{"p":""#);
    out.resize(out.len() + size.saturating_sub(32), b'x');
    out.extend_from_slice(br#"","t":"#);
    let mut v = TS_OFFSET + ts;
    let mut digits = [0u8; 19];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'}');
}

/// The send timestamp in a message that ends with our payload (NATS: the
/// payload itself; Herald: an event whose last field is `data`).
pub fn stamp(msg: &[u8]) -> Option<u64> {
    let tail = &msg[msg.len().saturating_sub(40)..];
    let at = STAMP.rfind(tail)? + STAMP.needle().len();
    let (v, n) = leading_u64(&tail[at..])?;
    (n == 19).then(|| v.wrapping_sub(TS_OFFSET))
}

/// The unsigned integer `bytes` start with, and its number of digits; none
/// without a digit or past `u64::MAX`.
fn leading_u64(bytes: &[u8]) -> Option<(u64, usize)> {
    let n = bytes.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut value = None::<u64>;
    for &c in &bytes[..n] {
        let v = value.unwrap_or(0).checked_mul(10)?;
        value = Some(v.checked_add(u64::from(c - b'0'))?);
    }
    Some((value?, n))
}

/// The keys looked for in every delivery, each searcher built once
/// (building one per delivery cost more than the search).
static TOPIC_SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""topic_seq":"#));
static TIMESTAMP_NS: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(br#""timestamp_ns":"#));
static STAMP: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(br#""t":"#));
/// In the publisher's acknowledgements, once per event.
static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""seq":"#));
/// What marks an acknowledgement, looked for in every message to the publisher.
static PUBLISHED: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(br#""type":"published""#));

/// The unsigned integer after `key` in `msg` (a JSON field such as
/// `"topic_seq":`).
fn field_u64(msg: &[u8], key: &Finder) -> Option<u64> {
    let at = key.find(msg)? + key.needle().len();
    leading_u64(&msg[at..]).map(|(value, _)| value)
}

const NATS_CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n";

fn subscribe_message(topic: &str, opts: &Options) -> Vec<u8> {
    match opts.ws_batch {
        None => format!(r#"{{"op":"subscribe","id":"s","topic":"{topic}"}}"#),
        Some((n, d)) => format!(
            r#"{{"op":"subscribe","id":"s","topic":"{topic}","batch":{{"max_events":{n},"max_delay_ms":{d}}}}}"#
        ),
    }
    .into_bytes()
}

/// The events of a batched message (`{"type":"events",…,"events":[…]}`),
/// each as the fields of an event message (split where the next event's
/// `{"seq":` starts: no payload of ours contains it).
fn batch_events(msg: &[u8]) -> impl Iterator<Item = &[u8]> {
    const NEXT: &[u8] = br#",{"seq":"#;
    let start = find(msg, br#""events":["#).map_or(msg.len(), |at| at + 10);
    let body = msg
        .get(start..msg.len().saturating_sub(2))
        .unwrap_or_default();
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match find(rest, NEXT) {
            Some(at) => {
                let one = &rest[..at];
                rest = &rest[at + 1..];
                Some(one)
            }
            None => Some(std::mem::take(&mut rest)),
        }
    })
}

/// One item of the NATS server protocol.
#[derive(Debug, PartialEq)]
enum NatsItem<'a> {
    Msg(&'a [u8]),
    Ping,
    Pong,
    Err(&'a [u8]),
    Other,
}

/// The NATS item at the start of `b` and its length, or `None` if it is not
/// complete yet.
fn nats_item(b: &[u8]) -> Option<(NatsItem<'_>, usize)> {
    let nl = b.iter().position(|&c| c == b'\n')?;
    let line = b[..nl].strip_suffix(b"\r").unwrap_or(&b[..nl]);
    if let Some(rest) = line.strip_prefix(b"MSG ") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        let len: usize = std::str::from_utf8(rest.rsplit(|&c| c == b' ').next()?)
            .ok()?
            .parse()
            .ok()?;
        let start = nl + 1;
        let end = start + len;
        if b.len() < end + 2 {
            return None;
        }
        return Some((NatsItem::Msg(&b[start..end]), end + 2));
    }
    let item = match line {
        b"PING" => NatsItem::Ping,
        b"PONG" => NatsItem::Pong,
        l if l.starts_with(b"-ERR") => NatsItem::Err(l),
        _ => NatsItem::Other,
    };
    Some((item, nl + 1))
}

// ---------------------------------------------------------------------------
// Subscriber connections: client threads with one mio poll each
// ---------------------------------------------------------------------------

/// What a connection does once connected.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Handshake only (NATS: `CONNECT`).
    Idle,
    /// Subscribe to this topic.
    Sub(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Handshake,
    Open,
    Dead,
}

/// A connection's protocol state (everything but its socket and input).
#[derive(Debug)]
struct St {
    id: u64,
    state: State,
    plan: Plan,
    /// Counts towards a pending `open` or `subscribe` until ready or dead.
    awaiting: bool,
    wbuf: Vec<u8>,
    events: u64,
    /// The last topic sequence received (Herald), to check that they are
    /// dense and never repeat.
    last_seq: Option<u64>,
    /// Events with a sequence past the last one.
    unique: u64,
    /// Events with a sequence at or before the last one.
    dups: u64,
    /// SSE: the `id:` of the event being read.
    sse_id: Option<u64>,
    /// The SSE frame being read is the stream's `connected` notice.
    sse_connected: bool,
}

#[derive(Debug)]
struct Conn {
    stream: Option<TcpStream>,
    rbuf: Vec<u8>,
    st: St,
}

/// What happened while a thread processed its sockets.
#[derive(Debug)]
struct Sink {
    hist: Histogram<u64>,
    /// The same latencies split at the server's timestamp of the event:
    /// publisher to server, server to receiver.
    ingress: Histogram<u64>,
    egress: Histogram<u64>,
    /// Whether to fill `ingress` and `egress` ([`Options::split_latency`]).
    split: bool,
    record_from: u64,
    delivered: u64,
    ready: usize,
    failed: usize,
    /// Connections that left the connecting/handshake states.
    set_up: usize,
    /// Connections closed after they were ready.
    dead: u64,
    errors: u64,
    messages: Vec<String>,
}

impl Sink {
    fn note(&mut self, m: String) {
        if self.messages.len() < 8 {
            self.messages.push(m);
        }
    }

    fn event(&mut self, st: &mut St, msg: &[u8], seq: Option<u64>, now: u64) {
        st.events += 1;
        self.delivered += 1;
        if let Some(seq) = seq {
            if st.last_seq.is_some_and(|last| seq <= last) {
                st.dups += 1;
            } else {
                st.unique += 1;
                st.last_seq = Some(seq);
            }
        }
        if let Some(ts) = stamp(msg) {
            if ts >= self.record_from {
                self.hist.saturating_record(now.saturating_sub(ts).max(1));
                let split = self.split.then(|| field_u64(msg, &TIMESTAMP_NS)).flatten();
                if let Some(at) = split.map(server_time) {
                    self.ingress.saturating_record(at.saturating_sub(ts).max(1));
                    self.egress.saturating_record(now.saturating_sub(at).max(1));
                }
            }
        }
    }

    fn ready(&mut self, st: &mut St) {
        if st.awaiting {
            st.awaiting = false;
            self.ready += 1;
        }
    }

    fn error(&mut self, st: &mut St, text: &[u8]) {
        self.errors += 1;
        self.note(format!(
            "conn {}: {}",
            st.id,
            String::from_utf8_lossy(&text[..text.len().min(300)])
        ));
        if st.awaiting {
            st.awaiting = false;
            self.failed += 1;
        }
    }

    fn kill(&mut self, st: &mut St, why: String) {
        if st.state == State::Dead {
            return;
        }
        if matches!(st.state, State::Connecting | State::Handshake) {
            self.set_up += 1;
        }
        if st.awaiting {
            st.awaiting = false;
            self.failed += 1;
        } else {
            self.dead += 1;
        }
        self.note(format!("conn {} closed: {why}", st.id));
        st.state = State::Dead;
    }
}

/// Parses what the server sent; returns the bytes consumed.
fn parse(peer: Peer, opts: &Options, st: &mut St, data: &[u8], sink: &mut Sink, now: u64) -> usize {
    let sse = opts.sse;
    let mut pos = 0;
    if st.state == State::Handshake && peer == Peer::Herald {
        let Some(end) = find(data, b"\r\n\r\n") else {
            return 0;
        };
        if sse {
            // The server subscribes before it answers: ready now.
            if !data.starts_with(b"HTTP/1.1 200") {
                let line = data.split(|&c| c == b'\r').next().unwrap_or_default();
                sink.kill(
                    st,
                    format!("stream refused: {}", String::from_utf8_lossy(line)),
                );
                return data.len();
            }
            st.state = State::Open;
            sink.set_up += 1;
            sink.ready(st);
            return end + 4 + parse_sse(st, &data[end + 4..], sink, now);
        }
        if !data.starts_with(b"HTTP/1.1 101") {
            let line = data.split(|&c| c == b'\r').next().unwrap_or_default();
            sink.kill(
                st,
                format!("upgrade refused: {}", String::from_utf8_lossy(line)),
            );
            return data.len();
        }
        pos = end + 4;
        st.state = State::Open;
        sink.set_up += 1;
        match &st.plan {
            Plan::Idle => sink.ready(st),
            Plan::Sub(topic) => push_ws_frame(&mut st.wbuf, 1, &subscribe_message(topic, opts)),
        }
    }
    if sse && peer == Peer::Herald {
        return parse_sse(st, data, sink, now);
    }
    while pos < data.len() && st.state != State::Dead {
        let rest = &data[pos..];
        match peer {
            Peer::Herald => {
                let Some((opcode, start, end)) = ws_frame(rest) else {
                    break;
                };
                let msg = &rest[start..end];
                match opcode {
                    1 if msg.starts_with(br#"{"type":"event""#) => {
                        let seq = field_u64(msg, &TOPIC_SEQ);
                        sink.event(st, msg, seq, now)
                    }
                    1 if msg.starts_with(br#"{"type":"events""#) => {
                        for e in batch_events(msg) {
                            let seq = field_u64(e, &TOPIC_SEQ);
                            sink.event(st, e, seq, now)
                        }
                    }
                    1 if contains(msg, br#""type":"subscribed""#) => sink.ready(st),
                    1 if contains(msg, br#""type":"error""#)
                        || contains(msg, br#""type":"gap""#) =>
                    {
                        sink.error(st, msg)
                    }
                    8 => {
                        let code = if msg.len() >= 2 {
                            u16::from_be_bytes([msg[0], msg[1]])
                        } else {
                            1005
                        };
                        let reason = String::from_utf8_lossy(msg.get(2..).unwrap_or_default());
                        sink.kill(st, format!("close frame {code} {reason:?}"));
                    }
                    9 => push_ws_frame(&mut st.wbuf, 10, msg),
                    _ => {}
                }
                pos += end;
            }
            Peer::Nats => {
                let Some((item, used)) = nats_item(rest) else {
                    break;
                };
                match item {
                    NatsItem::Msg(payload) => sink.event(st, payload, None, now),
                    NatsItem::Ping => st.wbuf.extend_from_slice(b"PONG\r\n"),
                    NatsItem::Pong => {
                        if st.state == State::Handshake {
                            st.state = State::Open;
                            sink.set_up += 1;
                        }
                        sink.ready(st);
                    }
                    NatsItem::Err(line) => sink.error(st, line),
                    NatsItem::Other => {}
                }
                pos += used;
            }
        }
    }
    if st.state == State::Dead {
        data.len()
    } else {
        pos
    }
}

/// Parses complete Server-Sent Events lines; returns the bytes consumed.
fn parse_sse(st: &mut St, data: &[u8], sink: &mut Sink, now: u64) -> usize {
    let mut pos = 0;
    while let Some(nl) = data[pos..].iter().position(|&c| c == b'\n') {
        let line = &data[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(id) = line.strip_prefix(b"id: ") {
            st.sse_id = std::str::from_utf8(id).ok().and_then(|v| v.parse().ok());
        } else if line == b"event: connected" {
            st.sse_connected = true;
        } else if let Some(payload) = line.strip_prefix(b"data: ") {
            if std::mem::take(&mut st.sse_connected) {
                // Where the stream starts: nothing to count.
            } else if contains(payload, br#"{"gap":"#) || contains(payload, br#"{"reset":"#) {
                sink.error(st, payload);
            } else {
                let seq = st.sse_id.take();
                sink.event(st, payload, seq, now);
            }
        }
        pos += nl + 1;
    }
    pos
}

enum Cmd {
    Open(Vec<(u64, Plan)>),
    /// Subscribe every open connection that has no subscription: each to
    /// its own topic, or all to one.
    Subscribe {
        distinct: bool,
    },
    Snapshot(Sender<Snapshot>),
    /// Stop waiting for the pending command's connections: count them as
    /// failed and answer now.
    GiveUp,
    Stop,
}

/// Totals of one pending `Open` or `Subscribe`.
#[derive(Debug, Default, Clone)]
pub struct Ready {
    /// Connections ready.
    pub ok: usize,
    /// Connections that failed.
    pub failed: usize,
    /// The first few notes on what failed.
    pub messages: Vec<String>,
}

/// A thread's (or, merged, all threads') state, taken by `Clients::snapshot`;
/// taking it resets the latency histogram.
#[derive(Debug)]
pub struct Snapshot {
    /// Latencies recorded since the last snapshot (ns).
    pub hist: Histogram<u64>,
    /// Of them, events that carried the server's timestamp (WebSocket),
    /// with [`Options::split_latency`] only:
    /// from the publisher's stamp to the server's timestamp (the server's
    /// wall clock mapped onto this process's clock, so only meaningful with
    /// the server on this machine).
    pub ingress: Histogram<u64>,
    /// Likewise, from the server's timestamp to the receiver.
    pub egress: Histogram<u64>,
    /// Open connections subscribed to the measured topic.
    pub measured: usize,
    /// Fewest events one of them received.
    pub measured_min_events: u64,
    /// Most events one of them received.
    pub measured_max_events: u64,
    /// Connections closed after they were ready.
    pub dead: u64,
    /// Error replies received.
    pub errors: u64,
    /// Per measured connection: events with a new topic sequence.
    pub unique: Vec<u64>,
    /// Events whose topic sequence was not past the last one, in all.
    pub duplicates: u64,
    /// The first few notes on what went wrong.
    pub messages: Vec<String>,
}

/// An empty latency histogram: 1 ns to 120 s, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

/// Counters shared by the client threads and the controller.
#[derive(Debug, Default)]
struct Shared {
    delivered: AtomicU64,
    dead: AtomicU64,
    record_from: AtomicU64,
    /// Connections settled (ready or failed) for commands so far.
    settled: AtomicU64,
}

struct Driver {
    peer: Peer,
    addr: SocketAddr,
    opts: Arc<Options>,
    poll: Poll,
    conns: Vec<Conn>,
    to_open: VecDeque<(u64, Plan)>,
    connecting: usize,
    /// Connections still to become ready (or fail) for the pending command.
    pending: usize,
    /// A command waits for its connections.
    waiting: bool,
    dead_reported: u64,
    reply: Ready,
    replies: Sender<Ready>,
    sink: Sink,
    shared: Arc<Shared>,
    scratch: Vec<u8>,
}

impl Driver {
    fn run(mut self, commands: Receiver<Cmd>) {
        let mut events = Events::with_capacity(1024);
        loop {
            loop {
                match commands.try_recv() {
                    Ok(Cmd::Stop) | Err(TryRecvError::Disconnected) => return,
                    Ok(cmd) => self.command(cmd),
                    Err(TryRecvError::Empty) => break,
                }
            }
            self.open_more();
            self.sink.record_from = self.shared.record_from.load(Ordering::Relaxed);
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_millis(2))) {
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
            }
            for ev in events.iter() {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_error();
                self.handle(ev.token().0, readable, writable);
            }
            self.settle();
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Open(plans) => {
                self.waiting = true;
                self.pending += plans.len();
                self.to_open.extend(plans);
            }
            Cmd::Subscribe { distinct } => {
                self.waiting = true;
                for c in &mut self.conns {
                    if c.st.state != State::Open || c.st.plan != Plan::Idle {
                        continue;
                    }
                    let topic = if distinct {
                        format!("bench.mem.{}", c.st.id)
                    } else {
                        self.opts.topic.clone()
                    };
                    match self.peer {
                        Peer::Herald => {
                            let text = subscribe_message(&topic, &self.opts);
                            push_ws_frame(&mut c.st.wbuf, 1, &text)
                        }
                        Peer::Nats => {
                            c.st.wbuf
                                .extend_from_slice(format!("SUB {topic} 1\r\nPING\r\n").as_bytes())
                        }
                    }
                    c.st.plan = Plan::Sub(topic);
                    c.st.awaiting = true;
                    self.pending += 1;
                    if let Some(s) = c.stream.as_mut() {
                        flush(s, &mut c.st, &mut self.sink);
                    }
                }
            }
            Cmd::Snapshot(reply) => {
                let topic = Plan::Sub(self.opts.topic.clone());
                let open: Vec<&St> = self
                    .conns
                    .iter()
                    .filter(|c| c.st.state == State::Open && c.st.plan == topic)
                    .map(|c| &c.st)
                    .collect();
                let measured: Vec<u64> = open.iter().map(|st| st.events).collect();
                let unique = open.iter().map(|st| st.unique).collect();
                let duplicates = open.iter().map(|st| st.dups).sum();
                let hist = std::mem::replace(&mut self.sink.hist, new_hist());
                let ingress = std::mem::replace(&mut self.sink.ingress, new_hist());
                let egress = std::mem::replace(&mut self.sink.egress, new_hist());
                let _ = reply.send(Snapshot {
                    hist,
                    ingress,
                    egress,
                    measured: measured.len(),
                    measured_min_events: measured.iter().copied().min().unwrap_or(0),
                    measured_max_events: measured.iter().copied().max().unwrap_or(0),
                    dead: self.sink.dead,
                    errors: self.sink.errors,
                    messages: std::mem::take(&mut self.sink.messages),
                    unique,
                    duplicates,
                });
            }
            Cmd::GiveUp => {
                let mut states = [0usize; 3];
                for c in &mut self.conns {
                    if c.st.awaiting {
                        c.st.awaiting = false;
                        states[match c.st.state {
                            State::Connecting => 0,
                            State::Handshake => 1,
                            _ => 2,
                        }] += 1;
                    }
                }
                self.sink.note(format!(
                    "gave up waiting for {} connection(s): {} still connecting, {} in the handshake, \
                     {} waiting for the subscription's answer, {} not opened yet",
                    self.pending,
                    states[0],
                    states[1],
                    states[2],
                    self.to_open.len()
                ));
                self.reply.failed += self.pending;
                self.pending = 0;
                self.to_open.clear();
            }
            Cmd::Stop => {}
        }
        self.settle();
    }

    fn open_more(&mut self) {
        while self.connecting < MAX_CONNECTING {
            let Some((id, plan)) = self.to_open.pop_front() else {
                break;
            };
            let mut st = St {
                id,
                state: State::Connecting,
                plan,
                awaiting: true,
                wbuf: Vec::new(),
                events: 0,
                last_seq: None,
                unique: 0,
                dups: 0,
                sse_id: None,
                sse_connected: false,
            };
            let token = Token(self.conns.len());
            let stream = TcpStream::connect(self.addr).and_then(|mut s| {
                self.poll.registry().register(
                    &mut s,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(s)
            });
            match stream {
                Ok(s) => {
                    self.connecting += 1;
                    self.conns.push(Conn {
                        stream: Some(s),
                        rbuf: Vec::new(),
                        st,
                    });
                }
                Err(e) => {
                    st.state = State::Dead;
                    st.awaiting = false;
                    self.sink.failed += 1;
                    self.sink.note(format!("conn {id} closed: connect: {e}"));
                    self.conns.push(Conn {
                        stream: None,
                        rbuf: Vec::new(),
                        st,
                    });
                }
            }
        }
    }

    fn handle(&mut self, idx: usize, readable: bool, writable: bool) {
        let Driver {
            peer,
            addr,
            opts,
            poll,
            conns,
            sink,
            scratch,
            ..
        } = self;
        let Some(conn) = conns.get_mut(idx) else {
            return;
        };
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        let st = &mut conn.st;
        if st.state == State::Connecting {
            if !writable {
                return;
            }
            match stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    sink.kill(st, format!("connect: {e}"));
                }
            }
            if st.state == State::Connecting {
                match stream.peer_addr() {
                    Ok(_) => {
                        let _ = stream.set_nodelay(true);
                        st.state = State::Handshake;
                        match *peer {
                            Peer::Herald if opts.sse => {
                                let topic = match &st.plan {
                                    Plan::Sub(topic) => topic.as_str(),
                                    Plan::Idle => opts.topic.as_str(),
                                };
                                let req = format!(
                                    "GET /v1/topics/{topic}/events HTTP/1.1\r\nHost: {addr}\r\n\
                                     Accept: text/event-stream\r\n{}\r\n",
                                    opts.auth()
                                );
                                st.wbuf.extend_from_slice(req.as_bytes());
                            }
                            Peer::Herald => st.wbuf.extend_from_slice(&opts.upgrade(*addr)),
                            Peer::Nats => {
                                st.wbuf.extend_from_slice(NATS_CONNECT);
                                if let Plan::Sub(topic) = &st.plan {
                                    st.wbuf
                                        .extend_from_slice(format!("SUB {topic} 1\r\n").as_bytes());
                                }
                                st.wbuf.extend_from_slice(b"PING\r\n");
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => sink.kill(st, format!("connect: {e}")),
                }
            }
        }
        if readable && st.state != State::Dead {
            loop {
                match stream.read(scratch) {
                    Ok(0) => {
                        sink.kill(st, "end of stream".into());
                        break;
                    }
                    Ok(n) => {
                        let now = now_ns();
                        if conn.rbuf.is_empty() {
                            let used = parse(*peer, opts, st, &scratch[..n], sink, now);
                            conn.rbuf.extend_from_slice(&scratch[used..n]);
                        } else {
                            conn.rbuf.extend_from_slice(&scratch[..n]);
                            let used = parse(*peer, opts, st, &conn.rbuf, sink, now);
                            conn.rbuf.drain(..used);
                        }
                        // A short read emptied the socket: the next arrival
                        // raises a new edge, so this saves the read that
                        // would only say "would block".
                        if st.state == State::Dead || n < scratch.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        sink.kill(st, format!("read: {e}"));
                        break;
                    }
                }
            }
        }
        if st.state != State::Dead && !st.wbuf.is_empty() {
            flush(stream, st, sink);
        }
        if st.state == State::Dead {
            let _ = poll.registry().deregister(stream);
            conn.stream = None;
            conn.rbuf = Vec::new();
        }
    }

    /// Folds the sink's counters into the shared ones and answers the
    /// pending command once every connection it waits for is settled.
    fn settle(&mut self) {
        let s = &mut self.sink;
        if s.delivered > 0 {
            self.shared
                .delivered
                .fetch_add(s.delivered, Ordering::Relaxed);
            s.delivered = 0;
        }
        if s.dead > self.dead_reported {
            self.shared
                .dead
                .fetch_add(s.dead - self.dead_reported, Ordering::Relaxed);
            self.dead_reported = s.dead;
        }
        self.connecting -= s.set_up.min(self.connecting);
        s.set_up = 0;
        self.reply.ok += s.ready;
        self.reply.failed += s.failed;
        self.shared
            .settled
            .fetch_add((s.ready + s.failed) as u64, Ordering::Relaxed);
        self.pending -= (s.ready + s.failed).min(self.pending);
        s.ready = 0;
        s.failed = 0;
        if self.waiting && self.pending == 0 && self.to_open.is_empty() {
            self.waiting = false;
            let mut r = std::mem::take(&mut self.reply);
            r.messages.clone_from(&s.messages);
            let _ = self.replies.send(r);
        }
    }
}

/// Writes what `st.wbuf` holds until the socket refuses more.
fn flush(stream: &mut TcpStream, st: &mut St, sink: &mut Sink) {
    let mut done = 0;
    while done < st.wbuf.len() {
        match stream.write(&st.wbuf[done..]) {
            Ok(0) => {
                sink.kill(st, "write returned 0".into());
                return;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                sink.kill(st, format!("write: {e}"));
                return;
            }
        }
    }
    st.wbuf.drain(..done);
}

/// The client threads and their connections.
#[allow(missing_debug_implementations)] // channels and thread handles only
pub struct Clients {
    threads: Vec<(Sender<Cmd>, Receiver<Ready>, JoinHandle<()>)>,
    shared: Arc<Shared>,
    next_id: u64,
}

impl Clients {
    /// Starts `threads` client threads for connections to `peer` at `addr`.
    pub fn new(peer: Peer, addr: SocketAddr, threads: usize) -> Clients {
        Clients::with_options(peer, addr, threads, Options::default())
    }

    /// As [`Clients::new`], with the topic measured, the token and the
    /// subscribers' transport of `opts`.
    pub fn with_options(peer: Peer, addr: SocketAddr, threads: usize, opts: Options) -> Clients {
        let opts = Arc::new(opts);
        let shared = Arc::new(Shared {
            record_from: AtomicU64::new(NOT_RECORDING),
            ..Shared::default()
        });
        let threads = (0..threads)
            .map(|i| {
                let (cmd_tx, cmd_rx) = channel();
                let (ready_tx, ready_rx) = channel();
                let driver = Driver {
                    peer,
                    addr,
                    opts: Arc::clone(&opts),
                    poll: Poll::new().expect("mio poll"),
                    conns: Vec::new(),
                    to_open: VecDeque::new(),
                    connecting: 0,
                    pending: 0,
                    waiting: false,
                    dead_reported: 0,
                    reply: Ready::default(),
                    replies: ready_tx,
                    sink: Sink {
                        hist: new_hist(),
                        ingress: new_hist(),
                        egress: new_hist(),
                        split: opts.split_latency,
                        record_from: NOT_RECORDING,
                        delivered: 0,
                        ready: 0,
                        failed: 0,
                        set_up: 0,
                        dead: 0,
                        errors: 0,
                        messages: Vec::new(),
                    },
                    shared: Arc::clone(&shared),
                    scratch: vec![0; 256 * 1024],
                };
                let handle = thread::Builder::new()
                    .name(format!("client-{i}"))
                    .spawn(move || driver.run(cmd_rx))
                    .expect("client thread");
                (cmd_tx, ready_rx, handle)
            })
            .collect();
        Clients {
            threads,
            shared,
            next_id: 0,
        }
    }

    /// Opens a connection per plan (spread over the threads) and waits until
    /// each is ready (subscribed, if it subscribes) or failed.
    pub fn open(&mut self, plans: Vec<Plan>) -> Ready {
        let k = self.threads.len();
        let mut per: Vec<Vec<(u64, Plan)>> = vec![Vec::new(); k];
        for (i, p) in plans.into_iter().enumerate() {
            per[i % k].push((self.next_id, p));
            self.next_id += 1;
        }
        for ((tx, _, _), plans) in self.threads.iter().zip(per) {
            tx.send(Cmd::Open(plans)).expect("client thread gone");
        }
        self.collect()
    }

    /// Subscribes every connection that has no subscription yet.
    pub fn subscribe(&mut self, distinct: bool) -> Ready {
        for (tx, _, _) in &self.threads {
            tx.send(Cmd::Subscribe { distinct })
                .expect("client thread gone");
        }
        self.collect()
    }

    /// Waits for every thread's answer to an `Open` or `Subscribe`; gives
    /// up on connections (counted as failed) after 30 s without progress.
    pub fn collect(&self) -> Ready {
        let mut all = Ready::default();
        let start = Instant::now();
        let mut last = (self.shared.settled.load(Ordering::Relaxed), Instant::now());
        let mut last_print = Instant::now();
        for (tx, rx, _) in &self.threads {
            let mut gave_up = false;
            loop {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(r) => {
                        all.ok += r.ok;
                        all.failed += r.failed;
                        all.messages.extend(r.messages);
                        break;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        let settled = self.shared.settled.load(Ordering::Relaxed);
                        if settled != last.0 {
                            last = (settled, Instant::now());
                        }
                        if last_print.elapsed() > Duration::from_secs(5) {
                            eprintln!(
                                "    … {settled} connections settled after {:.0} s",
                                start.elapsed().as_secs_f64()
                            );
                            last_print = Instant::now();
                        }
                        if !gave_up && last.1.elapsed() > Duration::from_secs(30) {
                            eprintln!("    no progress for 30 s: giving up on the rest");
                            let _ = tx.send(Cmd::GiveUp);
                            gave_up = true;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => panic!("client thread died"),
                }
            }
        }
        all
    }

    /// Every thread's state, merged; resets the latency histograms.
    pub fn snapshot(&self) -> Snapshot {
        let mut all = Snapshot {
            hist: new_hist(),
            ingress: new_hist(),
            egress: new_hist(),
            measured: 0,
            measured_min_events: u64::MAX,
            measured_max_events: 0,
            dead: 0,
            errors: 0,
            messages: Vec::new(),
            unique: Vec::new(),
            duplicates: 0,
        };
        for (tx, _, _) in &self.threads {
            let (reply_tx, reply_rx) = channel();
            tx.send(Cmd::Snapshot(reply_tx))
                .expect("client thread gone");
            let s = reply_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("client thread does not answer");
            all.hist.add(&s.hist).expect("histogram merge");
            all.ingress.add(&s.ingress).expect("histogram merge");
            all.egress.add(&s.egress).expect("histogram merge");
            if s.measured > 0 {
                all.measured_min_events = all.measured_min_events.min(s.measured_min_events);
                all.measured_max_events = all.measured_max_events.max(s.measured_max_events);
            }
            all.measured += s.measured;
            all.dead += s.dead;
            all.errors += s.errors;
            all.messages.extend(s.messages);
            all.unique.extend(s.unique);
            all.duplicates += s.duplicates;
        }
        if all.measured == 0 {
            all.measured_min_events = 0;
        }
        all
    }

    /// Events received by all connections so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Connections closed after they were ready, so far.
    pub fn dead(&self) -> u64 {
        self.shared.dead.load(Ordering::Relaxed)
    }

    /// Records the latency of events sent from now on (or of none).
    pub fn record(&self, on: bool) {
        let from = if on { now_ns() } else { NOT_RECORDING };
        self.shared.record_from.store(from, Ordering::Relaxed);
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for (tx, _, _) in &self.threads {
            let _ = tx.send(Cmd::Stop);
        }
        for (_, _, handle) in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// The HTTP response at the start of `b`: (status, body, response end), or
/// `None` if it is not complete yet (bodies have a `Content-Length`).
fn http_response(b: &[u8]) -> Option<(u16, &[u8], usize)> {
    let head_end = find(b, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&b[..head_end]).ok()?;
    let status = head.get(9..12)?.parse().ok()?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let end = head_end + len;
    (b.len() >= end).then(|| (status, &b[head_end..end], end))
}

// ---------------------------------------------------------------------------
// The publisher: blocking writes on the main thread, a reader thread for
// the server's answers
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
/// What the publisher's reader thread tells the publisher.
pub struct PubShared {
    acks: AtomicU64,
    pong_due: AtomicBool,
    /// The server closed the connection.
    pub closed: AtomicBool,
    errors: Mutex<Vec<String>>,
}

impl PubShared {
    fn error(&self, e: String) {
        let mut errors = self.errors.lock().expect("errors");
        if errors.len() < 8 {
            errors.push(e);
        }
    }
}

/// A publisher connection (blocking writes) and its reader thread.
#[allow(missing_debug_implementations)] // a socket and a thread handle
pub struct Publisher {
    peer: Peer,
    opts: Options,
    addr: SocketAddr,
    /// Herald: events per `publish` op (1: one op per event).
    batch: usize,
    stream: StdTcpStream,
    buf: Vec<u8>,
    text: Vec<u8>,
    /// Events sent so far.
    pub sent: u64,
    /// Shared with the reader thread.
    pub shared: Arc<PubShared>,
    reader: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Connects and handshakes; `batch`: Herald's events per `publish` op.
    pub fn connect(peer: Peer, addr: SocketAddr, batch: usize) -> io::Result<Publisher> {
        Publisher::connect_with(peer, addr, batch, Options::default())
    }

    /// As [`Publisher::connect`], with the topic, payload size, token and
    /// transport of `opts`.
    pub fn connect_with(
        peer: Peer,
        addr: SocketAddr,
        batch: usize,
        opts: Options,
    ) -> io::Result<Publisher> {
        let mut s = StdTcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        let http = peer == Peer::Herald && opts.http;
        let (hello, done): (Vec<u8>, &[u8]) = match peer {
            // HTTP has no handshake: ask for readiness to learn that the
            // server answers.
            Peer::Herald if http => (
                format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes(),
                b"\r\n\r\n",
            ),
            Peer::Herald => (opts.upgrade(addr), b"\r\n\r\n"),
            Peer::Nats => ([NATS_CONNECT, b"PING\r\n"].concat(), b"PONG\r\n"),
        };
        s.write_all(&hello)?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::other("closed during the handshake"));
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(at) = find(&got, done) {
                break at + done.len();
            }
        };
        let expected: &[u8] = if http {
            b"HTTP/1.1 200"
        } else {
            b"HTTP/1.1 101"
        };
        if peer == Peer::Herald && !got.starts_with(expected) {
            return Err(io::Error::other(format!(
                "upgrade refused: {}",
                String::from_utf8_lossy(&got[..end])
            )));
        }
        let mut end = end;
        if http {
            // Skip the readiness answer's body.
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let body = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while got.len() < end + body {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Err(io::Error::other("closed during the handshake"));
                }
                got.extend_from_slice(&buf[..n]);
            }
            end += body;
        }
        s.set_read_timeout(None)?;
        let shared = Arc::new(PubShared::default());
        let reader = {
            let shared = Arc::clone(&shared);
            let s = s.try_clone()?;
            let rest = got[end..].to_vec();
            thread::Builder::new()
                .name("publisher-reader".into())
                .spawn(move || publisher_reader(peer, http, s, rest, &shared))?
        };
        Ok(Publisher {
            peer,
            opts,
            addr,
            batch,
            stream: s,
            buf: Vec::new(),
            text: Vec::new(),
            sent: 0,
            shared,
            reader: Some(reader),
        })
    }

    /// Sends `n` events, each stamped just before the `write` that sends
    /// them all.
    pub fn publish(&mut self, n: usize) -> io::Result<()> {
        self.buf.clear();
        if self.shared.pong_due.swap(false, Ordering::Relaxed) {
            self.buf.extend_from_slice(b"PONG\r\n");
        }
        let ts = now_ns();
        let (topic, size) = (self.opts.topic.as_str(), self.opts.size);
        if self.peer == Peer::Herald && self.opts.http {
            // One POST per batch, pipelined; a batch is a JSON array.
            let mut left = n;
            while left > 0 {
                let k = left.min(self.batch);
                left -= k;
                self.text.clear();
                if k > 1 {
                    self.text.push(b'[');
                }
                for i in 0..k {
                    if i > 0 {
                        self.text.push(b',');
                    }
                    self.text.extend_from_slice(br#"{"type":"e","data":"#);
                    push_payload_sized(&mut self.text, ts, size);
                    self.text.push(b'}');
                }
                if k > 1 {
                    self.text.push(b']');
                }
                let _ = write!(
                    self.buf,
                    "POST /v1/topics/{topic}/events HTTP/1.1\r\nHost: {}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
                    self.addr,
                    self.text.len(),
                    self.opts.auth()
                );
                self.buf.extend_from_slice(&self.text);
                self.sent += k as u64;
            }
            return self.stream.write_all(&self.buf);
        }
        if self.peer == Peer::Herald && self.batch > 1 {
            // `{"op":"publish","ref":R,"events":[{…},…]}`, acknowledged once.
            let mut left = n;
            while left > 0 {
                let k = left.min(self.batch);
                left -= k;
                self.text.clear();
                let _ = write!(
                    self.text,
                    r#"{{"op":"publish","ref":{},"events":["#,
                    self.sent + 1
                );
                for i in 0..k {
                    if i > 0 {
                        self.text.push(b',');
                    }
                    let _ = write!(self.text, r#"{{"topic":"{topic}","type":"e","data":"#);
                    push_payload_sized(&mut self.text, ts, size);
                    self.text.push(b'}');
                }
                self.text.extend_from_slice(b"]}");
                push_ws_frame(&mut self.buf, 1, &self.text);
                self.sent += k as u64;
            }
            return self.stream.write_all(&self.buf);
        }
        for _ in 0..n {
            self.sent += 1;
            match self.peer {
                Peer::Herald => {
                    self.text.clear();
                    let _ = write!(
                        self.text,
                        r#"{{"op":"publish","topic":"{topic}","type":"e","ref":{},"data":"#,
                        self.sent
                    );
                    push_payload_sized(&mut self.text, ts, size);
                    self.text.push(b'}');
                    push_ws_frame(&mut self.buf, 1, &self.text);
                }
                Peer::Nats => {
                    let _ = write!(self.buf, "PUB {topic} {size}\r\n");
                    push_payload_sized(&mut self.buf, ts, size);
                    self.buf.extend_from_slice(b"\r\n");
                }
            }
        }
        self.stream.write_all(&self.buf)
    }

    /// Events acknowledged (Herald) so far.
    pub fn acks(&self) -> u64 {
        self.shared.acks.load(Ordering::Relaxed)
    }

    /// The first few errors the server sent.
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().expect("errors").clone()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Counts Herald's `published` acks, notes errors, asks for a `PONG` when
/// NATS pings.
fn publisher_reader(
    peer: Peer,
    http: bool,
    mut s: StdTcpStream,
    mut acc: Vec<u8>,
    shared: &PubShared,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut pos = 0;
        loop {
            let rest = &acc[pos..];
            match peer {
                Peer::Herald if http => {
                    let Some((status, body, end)) = http_response(rest) else {
                        break;
                    };
                    if status == 200 {
                        // A batch's answer lists each event's sequences.
                        let events = SEQ.find_iter(body).count();
                        shared.acks.fetch_add(events as u64, Ordering::Relaxed);
                    } else {
                        shared.error(format!("{status} {}", String::from_utf8_lossy(body)));
                    }
                    pos += end;
                }
                Peer::Herald => {
                    let Some((opcode, start, end)) = ws_frame(rest) else {
                        break;
                    };
                    let msg = &rest[start..end];
                    if opcode == 1 && PUBLISHED.find(msg).is_some() {
                        // A batch's acknowledgement lists each event's sequences.
                        let events = SEQ.find_iter(msg).count();
                        shared.acks.fetch_add(events as u64, Ordering::Relaxed);
                    } else if opcode == 1 || opcode == 8 {
                        shared.error(String::from_utf8_lossy(msg).into_owned());
                    }
                    pos += end;
                }
                Peer::Nats => {
                    let Some((item, used)) = nats_item(rest) else {
                        break;
                    };
                    match item {
                        NatsItem::Ping => shared.pong_due.store(true, Ordering::Relaxed),
                        NatsItem::Err(line) => {
                            shared.error(String::from_utf8_lossy(line).into_owned())
                        }
                        _ => {}
                    }
                    pos += used;
                }
            }
        }
        acc.drain(..pos);
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {
                shared.closed.store(true, Ordering::Relaxed);
                return;
            }
            Ok(n) => acc.extend_from_slice(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_128_bytes_of_json_with_a_stamp() {
        let mut p = Vec::new();
        push_payload(&mut p, 123_456_789);
        assert_eq!(p.len(), PAYLOAD);
        assert_eq!(stamp(&p), Some(123_456_789));
        // As the last field of a Herald event.
        let mut event = br#"{"type":"event","sub":"s","seq":1,"topic":"t","topic_seq":1,"event_type":"e","timestamp_ns":5,"data":"#.to_vec();
        event.extend_from_slice(&p);
        event.push(b'}');
        assert_eq!(stamp(&event), Some(123_456_789));
    }

    #[test]
    fn batched_events_split_into_their_events() {
        let mut msg = br#"{"type":"events","sub":"s","events":["#.to_vec();
        for k in 1..=3u64 {
            if k > 1 {
                msg.push(b',');
            }
            msg.extend_from_slice(
                format!(r#"{{"seq":{k},"topic":"t","topic_seq":{k},"event_type":"e","timestamp_ns":5,"data":"#)
                    .as_bytes(),
            );
            push_payload(&mut msg, 40 + k);
            msg.push(b'}');
        }
        msg.extend_from_slice(b"]}");
        let events: Vec<&[u8]> = batch_events(&msg).collect();
        assert_eq!(events.len(), 3);
        for (k, e) in (1..=3u64).zip(&events) {
            assert_eq!(field_u64(e, &TOPIC_SEQ), Some(k));
            assert_eq!(stamp(e), Some(40 + k));
            let _: serde_json::Value = serde_json::from_slice(e).unwrap();
        }
        assert_eq!(
            batch_events(br#"{"type":"events","sub":"s","events":[]}"#).count(),
            0
        );
    }

    #[test]
    fn nats_items_parse() {
        let b = b"INFO {}\r\nMSG a.b 1 5\r\nhello\r\nPING\r\nMSG a 1 r 2\r\nhi\r\n-ERR 'x'\r\nMSG a 1 9\r\npart";
        let mut pos = 0;
        let mut items = Vec::new();
        while let Some((item, used)) = nats_item(&b[pos..]) {
            items.push(format!("{item:?}"));
            pos += used;
        }
        assert_eq!(items.len(), 5, "{items:?}");
        assert_eq!(
            nats_item(b"MSG a.b 1 5\r\nhello\r\n").unwrap().0,
            NatsItem::Msg(b"hello")
        );
        assert_eq!(
            nats_item(b"MSG a 1 r 2\r\nhi\r\n").unwrap().0,
            NatsItem::Msg(b"hi")
        );
        assert_eq!(nats_item(b"PONG\r\n").unwrap().0, NatsItem::Pong);
        assert!(nats_item(b"MSG a 1 9\r\npart").is_none());
    }
}
