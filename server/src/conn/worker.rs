//! One event loop (its own mio `Poll`) serving a share of the connections.
//!
//! The worker's [`Router`] is its subscriber: it reads each event once and
//! routes it to the SSE and WebSocket streams of this worker's connections
//! (see `fanout`). A waiting long-poll owns a broker subscription of its
//! own. The worker arms the broker's doorbell (an eventfd registered in its
//! `Poll`) whenever it has drained everything, so a publish wakes it with one
//! eventfd write and an idle worker costs nothing.
//!
//! Requests are answered by `api` (typed operations); the worker frames
//! bytes, applies what `api` decided (answer, stream, poll, upgrade) and
//! keeps each connection's lifecycle.
//!
//! Slow clients: a connection whose unsent output reaches the bound stops
//! being fed; it is caught up from the log when it drains (nothing is lost),
//! and closed if it stays full past the deadline.
//!
//! TLS: with a TLS configuration every connection gets a rustls session at
//! accept (see `tls`); the rest of the worker sees plaintext.

use std::io::{self, Read};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::ring::Doorbell;
use herald_core::Broker;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::connection::{Conn, Lifecycle, Mode};
use super::limits::{ConnLimits, Refusal};
use super::output::{self, Output};
use super::tls::TlsConn;
use super::websocket::{WsStatus, READ_AHEAD};
use crate::api::auth::Authenticator;
use crate::api::exec::HoldState;
use crate::api::http::{self as endpoints, Action, HttpContext};
use crate::api::origins::Origins;
use crate::api::rate::RateLimits;
use crate::api::schema::Schemas;
use crate::api::tickets::Tickets;
use crate::api::ws::{pattern_capacity, WsContext};
use crate::cluster::Cluster;
use crate::config::ServerConfig;
use crate::fanout::encode::{sse_expired, PollBody};
use crate::fanout::{Encoding, Outputs, Router};
use crate::metrics::ServerStats;
use crate::wire::http::{self, Response};

/// How often rate limits forget clients whose buckets are full again, and
/// expired stream tickets are dropped.
const RATE_SWEEP: Duration = Duration::from_secs(10);
const WAKER: Token = Token(0);
const DOORBELL: Token = Token(1);
const FIRST_CONN: usize = 2;
/// How long a closing connection may take to close its side.
const LINGER: Duration = Duration::from_secs(2);
/// How often timers run.
const TIMER_TICK: Duration = Duration::from_millis(50);
/// Longest an idle worker waits for its sockets.
const IDLE_WAIT: Duration = Duration::from_millis(250);

impl Outputs for Vec<Option<Conn>> {
    fn output(&mut self, conn: usize) -> Option<&mut Output> {
        self.get_mut(conn)?.as_mut().map(|c| &mut c.output)
    }

    fn write_now(&mut self, conn: usize) {
        if let Some(c) = self.get_mut(conn).and_then(Option::as_mut) {
            let _ = c.flush();
        }
    }
}

/// What every worker shares with the others and the acceptor.
#[derive(Clone)]
pub(crate) struct WorkerShared {
    pub(crate) broker: Broker,
    /// Terminate TLS on every connection.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) tickets: Arc<Tickets>,
    pub(crate) limits: Arc<ConnLimits>,
    pub(crate) stats: Arc<ServerStats>,
    pub(crate) origins: Arc<Origins>,
    pub(crate) schemas: Arc<Schemas>,
    pub(crate) rate: Arc<RateLimits>,
    /// Cluster mode: where publishes go.
    pub(crate) cluster: Option<Cluster>,
}

/// When the periodic work is due.
struct Clock {
    next_tick: Instant,
    /// This worker expires presence sessions (one worker does).
    expires_presence: bool,
    next_presence_expiry: Instant,
    /// The same worker forgets rate-limited clients whose buckets are full
    /// again, every [`RATE_SWEEP`].
    next_rate_sweep: Instant,
    /// The earliest instant a connection's token has something due (a
    /// warning, an end): the worker wakes for it as for batch deadlines.
    token_deadline: Option<Instant>,
}

pub(crate) struct Worker {
    poll: Poll,
    /// Connections by index (token − `FIRST_CONN`), and the free indexes.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    incoming: Receiver<(TcpStream, IpAddr, Option<Refusal>)>,
    doorbell: Doorbell,
    router: Router,
    /// Connections with new output (reused buffer).
    dirty: Vec<usize>,
    /// Connections whose reading was paused and may resume.
    resume_reads: Vec<usize>,
    polls_waiting: usize,
    /// Connections with publishes awaiting the cluster's stream (entries
    /// may be stale: each is checked against its connection).
    publishing: Vec<usize>,
    /// Connections with a stream held for this node's replica (an SSE head,
    /// WebSocket subscriptions; entries may be stale, as above).
    holding: Vec<usize>,
    clock: Clock,
    /// Lent to each plain WebSocket connection's read (see `websocket`).
    read_ahead: Vec<u8>,
    shared: WorkerShared,
}

impl Worker {
    pub(crate) fn new(
        poll: Poll,
        incoming: Receiver<(TcpStream, IpAddr, Option<Refusal>)>,
        shared: WorkerShared,
        expires_presence: bool,
    ) -> io::Result<Worker> {
        let doorbell = shared.broker.doorbell()?;
        let router = Router::new(shared.broker.clone(), shared.config.max_output)
            .map_err(io::Error::other)?;
        poll.registry().register(
            &mut SourceFd(&doorbell.as_raw_fd()),
            DOORBELL,
            Interest::READABLE,
        )?;
        let now = Instant::now();
        Ok(Worker {
            poll,
            conns: Vec::new(),
            free: Vec::new(),
            incoming,
            doorbell,
            router,
            dirty: Vec::new(),
            resume_reads: Vec::new(),
            polls_waiting: 0,
            publishing: Vec::new(),
            holding: Vec::new(),
            clock: Clock {
                next_tick: now,
                expires_presence,
                next_presence_expiry: now,
                next_rate_sweep: now + RATE_SWEEP,
                token_deadline: None,
            },
            read_ahead: vec![0; READ_AHEAD],
            shared,
        })
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut busy = false;
        loop {
            let timeout = if busy {
                Duration::ZERO
            } else {
                // Woken in time for the next batched delivery or token
                // deadline that is due.
                let due = match (self.router.batch_deadline(), self.clock.token_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let due = due.map(|d| d.saturating_duration_since(Instant::now()));
                let wait = due.map_or(IDLE_WAIT, |d| d.min(IDLE_WAIT));
                // An answer wakes the worker; its deadline is the tick's,
                // as is a held stream's look at the replica.
                if self.publishing.is_empty() && self.holding.is_empty() {
                    wait
                } else {
                    wait.min(TIMER_TICK)
                }
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("poll failed: {e}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => self.accept(),
                    DOORBELL => self.doorbell.clear(),
                    Token(t) => self.on_io(t - FIRST_CONN),
                }
            }
            if self.shared.shutdown.load(Ordering::Acquire) {
                self.close_all();
                return;
            }
            busy = self.pump();
            if !self.publishing.is_empty() {
                self.finish_publishes();
            }
            if !self.holding.is_empty() {
                self.finish_holds();
            }
            while let Some(index) = self.resume_reads.pop() {
                self.on_io(index);
                busy = true;
            }
            self.timers();
        }
    }

    fn conn(&mut self, index: usize) -> Option<&mut Conn> {
        self.conns.get_mut(index).and_then(Option::as_mut)
    }

    /// Folds a connection's token deadline (new, or moved by a refresh)
    /// into the worker's.
    fn note_token_deadline(&mut self, index: usize) {
        let due = self.conn(index).and_then(|c| c.token_deadline());
        if let Some(due) = due {
            let earliest = self.clock.token_deadline.map_or(due, |d| d.min(due));
            self.clock.token_deadline = Some(earliest);
        }
    }

    fn accept(&mut self) {
        while let Ok((mut stream, peer, refused)) = self.incoming.try_recv() {
            let tls = match &self.shared.tls {
                None => None,
                // A 503 would need a handshake first, which a silent client
                // could hold up: over the limit, a TLS connection is closed.
                Some(_) if refused.is_some() => continue,
                Some(config) => match TlsConn::new(config.clone()) {
                    Ok(tls) => Some(Box::new(tls)),
                    Err(e) => {
                        tracing::warn!("cannot start a TLS session: {e}");
                        self.shared.limits.release(peer);
                        continue;
                    }
                },
            };
            let index = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let token = Token(index + FIRST_CONN);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!("cannot register a connection: {e}");
                self.free.push(index);
                if refused.is_none() {
                    self.shared.limits.release(peer);
                }
                continue;
            }
            self.shared
                .stats
                .connections
                .fetch_add(1, Ordering::Relaxed);
            let conn = Conn::new(stream, tls, peer, refused.is_some());
            let answer = match &refused {
                None => None,
                Some(Refusal::Capacity(why)) => Some(Response::error(
                    503,
                    "Service Unavailable",
                    "unavailable",
                    why,
                )),
                Some(Refusal::Rate(e)) => Some(endpoints::error(e)),
            };
            self.conns[index] = Some(conn);
            if let Some(answer) = answer {
                // Answered at once, not after a request: a refused
                // connection must not hold a descriptor while it stays
                // silent. It then lingers briefly so that the answer is
                // not destroyed by a reset.
                if let Some(conn) = self.conns[index].as_mut() {
                    conn.respond(&answer.closing(), false);
                }
                self.flush_or_close(index);
            }
        }
    }

    /// Takes a connection's streams off the router (it is closing, or its
    /// poll is over).
    fn retire_streams(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        match std::mem::replace(&mut conn.mode, Mode::Http) {
            Mode::Sse { stream, .. } => self.router.remove(stream),
            Mode::Ws(mut ws) => {
                for stream in ws.session.streams() {
                    self.router.remove(stream);
                }
                // Keeps the framing state (closing) without its streams.
                ws.session
                    .retire(&self.shared.broker, self.shared.cluster.as_ref());
                conn.mode = Mode::Ws(ws);
            }
            Mode::Poll { .. } => self.polls_waiting -= 1,
            // (Its answer, if it comes, finds no one waiting.)
            Mode::Http | Mode::Publishing { .. } | Mode::Held { .. } => {}
        }
    }

    fn close(&mut self, index: usize) {
        self.retire_streams(index);
        if let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            if let Some(tls) = &mut conn.tls {
                let stats = &self.shared.stats;
                if tls.handshake_completed() {
                    stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
                } else if tls.handshake_failed() {
                    stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.shared
                .stats
                .connections
                .fetch_sub(1, Ordering::Relaxed);
            if !conn.refused {
                self.shared.limits.release(conn.peer);
            }
            self.free.push(index);
        }
    }

    fn close_all(&mut self) {
        for index in 0..self.conns.len() {
            if let Some(conn) = self.conn(index) {
                if let Mode::Ws(ws) = &mut conn.mode {
                    ws.close_and_drain(1001, "server shutting down", &mut conn.output);
                }
                let _ = conn.flush();
                if let Some(tls) = &mut conn.tls {
                    tls.send_close_notify();
                    let _ = tls.flush_records(&mut conn.stream);
                }
            }
            self.close(index);
        }
    }

    fn on_io(&mut self, index: usize) {
        // What this read publishes wakes the other workers once, when it is
        // done (or every 64 events): woken at its first event, a worker
        // delivers the rest a few events per wake-up, and wakes again.
        let broker = self.shared.broker.clone();
        broker.with_held_wakes(|| self.read_and_answer(index));
    }

    /// [`Worker::on_io`]'s work: reads what the connection sent, answers
    /// it, writes what the socket takes.
    fn read_and_answer(&mut self, index: usize) {
        let max_output = self.shared.config.max_output;
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if let Lifecycle::Lingering { .. } = conn.lifecycle {
            if !conn.discard_input() {
                self.close(index);
            }
            return;
        }
        // Backpressure on input: answers pile up in the output only as far
        // as the output bound.
        let writable = conn.flush().is_ok();
        if !writable || conn.pending() >= max_output {
            conn.read_paused = writable;
            self.flush_or_close(index);
            return;
        }
        conn.read_paused = false;
        if let Mode::Ws(_) = conn.mode {
            self.read_websocket(index);
            self.note_publishing(index);
            self.flush_or_close(index);
            return;
        }
        let limits = self.shared.config.limits;
        let open = conn.read_available(limits.max_head + limits.max_body + 16 * 1024);
        if conn
            .tls
            .as_mut()
            .is_some_and(|tls| tls.handshake_completed())
        {
            let stats = &self.shared.stats;
            stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
        }
        if !open {
            self.close(index);
            return;
        }
        self.handle_requests(index);
        self.flush_or_close(index);
    }

    /// Reads and answers a WebSocket connection's messages; after its close
    /// frame, retires its streams (nothing may follow the close frame).
    fn read_websocket(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let Mode::Ws(ws) = &mut conn.mode else {
            return;
        };
        let mut cx = WsContext {
            broker: &self.shared.broker,
            cluster: self.shared.cluster.as_ref(),
            schemas: &self.shared.schemas,
            rate: &self.shared.rate,
            peer: conn.peer,
            auth: &self.shared.auth,
            stats: &self.shared.stats,
            router: &mut self.router,
            conn: index,
        };
        let mut tls = conn.tls.as_mut().map(|tls| tls.stream(&mut conn.stream));
        let tls = tls.as_mut().map(|tls| tls as &mut dyn Read);
        let read_ahead = &mut self.read_ahead;
        if let WsStatus::Closed = ws.on_readable(&mut cx, &mut conn.output, tls, read_ahead) {
            conn.close_when_flushed();
            self.retire_streams(index);
        }
        self.note_token_deadline(index);
    }

    /// Writes what the socket takes; closes the connection if that failed,
    /// or starts lingering if it is closing and done.
    fn flush_or_close(&mut self, index: usize) {
        let max_output = self.shared.config.max_output;
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if conn.flush().is_err() {
            self.close(index);
            return;
        }
        if conn.read_paused && conn.pending() < max_output / 2 {
            conn.read_paused = false;
            self.resume_reads.push(index);
        }
        if !matches!(conn.lifecycle, Lifecycle::Closing { .. }) || conn.pending() > 0 {
            return;
        }
        match conn.start_lingering() {
            Ok(true) => self.retire_streams(index),
            Ok(false) => {} // TLS records still to write
            Err(_) => self.close(index),
        }
    }

    /// Parses and answers every complete request in the input buffer.
    fn handle_requests(&mut self, index: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                return;
            };
            if !matches!(conn.mode, Mode::Http) || !conn.is_open() || conn.input.is_empty() {
                return;
            }
            conn.request_started.get_or_insert_with(Instant::now);
            let (request, used) = match http::parse(&conn.input, self.shared.config.limits) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return,
                Err(e) => return conn.respond(&e.response(), false),
            };
            conn.input.drain(..used);
            conn.request_started = None;
            let cx = HttpContext {
                broker: &self.shared.broker,
                cluster: self.shared.cluster.as_ref(),
                schemas: &self.shared.schemas,
                rate: &self.shared.rate,
                peer: conn.peer,
                auth: &self.shared.auth,
                tickets: &self.shared.tickets,
                origins: &self.shared.origins,
                stats: &self.shared.stats,
                sse_retry_ms: self.shared.config.sse_retry_ms,
                max_body: self.shared.config.max_body,
                stomp_heartbeat: self.shared.config.stomp_heartbeat,
                stomp_destinations: &self.shared.config.stomp_destinations,
            };
            let keep_alive = request.keep_alive;
            match endpoints::handle(&cx, &request) {
                Action::Respond(response) => conn.respond(&response, keep_alive),
                Action::Stream(s) if !self.router.admits(s.sub.filter()) => {
                    let refused = endpoints::error(&pattern_capacity());
                    conn.respond(&refused, keep_alive);
                }
                Action::Stream(start) if start.hold.is_some() => {
                    conn.mode = Mode::Held { start, keep_alive };
                    self.holding.push(index);
                }
                Action::Stream(start) => self.start_sse(index, start),
                Action::Poll(poll) => {
                    self.polls_waiting += 1;
                    conn.mode = Mode::Poll {
                        deadline: Instant::now() + poll.wait,
                        poll,
                        keep_alive,
                    };
                }
                Action::Publishing(pending, cors) => {
                    conn.mode = Mode::Publishing {
                        pending,
                        cors,
                        keep_alive,
                    };
                    self.publishing.push(index);
                }
                Action::Upgrade(switching, session) => {
                    conn.respond(&switching, true);
                    conn.upgrade(*session);
                    // Messages that came with the upgrade request.
                    self.read_websocket(index);
                    return self.note_publishing(index);
                }
            }
        }
    }

    /// Sends an SSE stream's head and first frames, and routes events to it.
    fn start_sse(&mut self, index: usize, s: Box<endpoints::Stream>) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        conn.respond(&s.head, true);
        conn.output.extend(&s.preamble);
        let encoding = Encoding::Sse(s.form);
        let stream = self.router.add(index, s.sub, encoding, s.prefix_len);
        conn.mode = Mode::Sse {
            stream,
            next_keepalive: Instant::now() + self.shared.config.keepalive,
            form: s.form,
            expiry: s.expiry,
        };
        self.note_token_deadline(index);
    }

    /// Starts the held streams whose start this node's replica has reached,
    /// and answers 503 to those held past their hold (an SSE head; a
    /// WebSocket subscription ends with an error).
    fn finish_holds(&mut self) {
        let now = Instant::now();
        let broker = self.shared.broker.clone();
        for index in std::mem::take(&mut self.holding) {
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let state = match &mut conn.mode {
                Mode::Ws(ws) => {
                    if ws.finish_holds(now, &broker, &mut self.router, &mut conn.output) {
                        self.holding.push(index);
                    }
                    self.flush_or_close(index);
                    continue;
                }
                Mode::Held { start, .. } => start.hold.as_ref().map(|h| h.state(&broker, now)),
                _ => continue,
            };
            if state == Some(HoldState::Waiting) {
                self.holding.push(index);
                continue;
            }
            let Mode::Held { start, keep_alive } = std::mem::replace(&mut conn.mode, Mode::Http)
            else {
                continue;
            };
            match (state, &start.hold) {
                (Some(HoldState::Expired), Some(hold)) => {
                    conn.respond(&endpoints::hold_expired(hold), keep_alive);
                    // Requests pipelined behind it (one may be held too).
                    self.handle_requests(index);
                }
                _ => self.start_sse(index, start),
            }
            self.flush_or_close(index);
        }
    }

    /// Notes a WebSocket connection that has publishes awaiting the
    /// cluster's stream, or subscriptions held for this node's replica.
    fn note_publishing(&mut self, index: usize) {
        let (waiting, holding) = match self.conns[index].as_ref().map(|c| &c.mode) {
            Some(Mode::Ws(ws)) => (ws.publishes_pending(), ws.holds_pending()),
            _ => (false, false),
        };
        if waiting && !self.publishing.contains(&index) {
            self.publishing.push(index);
        }
        if holding && !self.holding.contains(&index) {
            self.holding.push(index);
        }
    }

    /// Answers the publishes whose answers came from the cluster's stream
    /// (or whose deadline passed); an HTTP connection then goes on with
    /// the requests pipelined behind its publish.
    fn finish_publishes(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.publishing.len() {
            let index = self.publishing[i];
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                self.publishing.swap_remove(i);
                continue;
            };
            let (done, http) = match &mut conn.mode {
                Mode::Ws(ws) => (!ws.finish_publishes(now, &mut conn.output), false),
                Mode::Publishing {
                    pending,
                    cors,
                    keep_alive,
                } => match pending.try_finish(now) {
                    None => (false, false),
                    Some(answer) => {
                        let response = endpoints::published(answer, cors.as_deref());
                        let keep_alive = *keep_alive;
                        conn.mode = Mode::Http;
                        conn.respond(&response, keep_alive);
                        (true, true)
                    }
                },
                _ => (true, false),
            };
            if done {
                self.publishing.swap_remove(i);
            } else {
                i += 1;
            }
            if http {
                self.handle_requests(index);
            }
            self.flush_or_close(index);
        }
    }

    /// Routes events to streams, catches streams up, answers long-polls
    /// that have events, and writes what that produced. Returns true if
    /// there may be more to do right away (poll again at once).
    fn pump(&mut self) -> bool {
        let mut busy = self.router.route(&mut self.conns);
        busy |= self.router.catch_up(&mut self.conns);
        self.router.flush_batches(&mut self.conns);
        if self.polls_waiting > 0 {
            busy |= self.pump_polls();
        }
        // Counted before clients can see what they count.
        self.router.report(&self.shared.stats);
        let mut dirty = std::mem::take(&mut self.dirty);
        self.router.take_dirty(&mut dirty);
        for index in dirty.drain(..) {
            self.flush_or_close(index);
        }
        self.dirty = dirty;
        busy || !self.router.arm(&self.doorbell, &mut self.conns)
    }

    /// Answers the long-polls that have events. Returns whether one may
    /// have more right away.
    fn pump_polls(&mut self) -> bool {
        let mut busy = false;
        for index in 0..self.conns.len() {
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            let Mode::Poll {
                poll,
                deadline,
                keep_alive,
            } = &mut conn.mode
            else {
                continue;
            };
            // Encoded as they come (created with the first delivery).
            let mut body: Option<PollBody> = None;
            while body.as_ref().map_or(0, PollBody::len) < poll.limit {
                let new = || PollBody::new(poll.after, poll.topic_ids, poll.prefix_len);
                match poll
                    .sub
                    .try_next_with(|d| body.get_or_insert_with(new).push(&d))
                {
                    Ok(Some(())) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("poll failed: {e}");
                        break;
                    }
                }
            }
            // Held for this node's replica (its start is ahead): past the
            // hold, with nothing to answer, 503.
            let now = Instant::now();
            let held_out = (poll.hold.as_ref()).filter(|h| {
                body.is_none() && h.state(&self.shared.broker, now) == HoldState::Expired
            });
            if body.is_none() && now < *deadline && held_out.is_none() {
                busy |= !poll.sub.arm(&self.doorbell);
                continue;
            }
            let mut answer = match held_out {
                Some(hold) => endpoints::hold_expired(hold),
                None => {
                    let body = body
                        .unwrap_or_else(|| {
                            PollBody::new(poll.after, poll.topic_ids, poll.prefix_len)
                        })
                        .finish();
                    Response::new(200, "OK", "application/json", body)
                }
            };
            if let Some(origin) = &poll.cors {
                answer = endpoints::with_cors(answer, origin);
            }
            let keep_alive = *keep_alive;
            conn.mode = Mode::Http;
            conn.respond(&answer, keep_alive);
            self.polls_waiting -= 1;
            self.flush_or_close(index);
            // Requests that arrived while the poll waited (maybe a poll).
            self.handle_requests(index);
            self.flush_or_close(index);
            busy = true;
        }
        busy
    }

    /// Keep-alive comments, long-poll deadlines, idle, slow or closing
    /// connections, and (on the first worker) presence expiry.
    fn timers(&mut self) {
        let now = Instant::now();
        let token_due = self.clock.token_deadline.is_some_and(|d| now >= d);
        if now < self.clock.next_tick && !token_due {
            return;
        }
        self.clock.next_tick = now + TIMER_TICK;
        if self.clock.expires_presence && now >= self.clock.next_presence_expiry {
            self.clock.next_presence_expiry = now + Duration::from_secs(1);
            if let Err(e) = self.shared.broker.presence_expire() {
                tracing::warn!("presence expiry failed: {e}");
            }
        }
        if self.clock.expires_presence && now >= self.clock.next_rate_sweep {
            self.clock.next_rate_sweep = now + RATE_SWEEP;
            self.shared.rate.sweep();
            self.shared.tickets.sweep(now);
        }
        // Every connection's deadline is looked at: the earliest is
        // found again.
        self.clock.token_deadline = None;
        for index in 0..self.conns.len() {
            if self.conns[index].is_some() && self.timers_of(index, now) {
                self.close(index);
            }
            self.note_token_deadline(index);
        }
        // After the idle connections gave their blocks back.
        output::trim_pool();
    }

    /// One connection's timers. Returns true to close it now.
    fn timers_of(&mut self, index: usize, now: Instant) -> bool {
        let config = self.shared.config.clone();
        let deadline = config.slow_client_deadline;
        let Some(conn) = self.conns[index].as_mut() else {
            return false;
        };
        match conn.lifecycle {
            Lifecycle::Lingering { since } => return now - since > LINGER,
            // Its last bytes get the slow-client deadline to leave.
            Lifecycle::Closing { since } => return now - since > deadline.max(LINGER),
            Lifecycle::Open => {}
        }
        conn.output.release_if_idle();
        if let Mode::Ws(ws) = &mut conn.mode {
            ws.release_reply();
        }
        let streaming = matches!(conn.mode, Mode::Sse { .. } | Mode::Ws(_));
        if !streaming || conn.pending() < config.max_output {
            conn.stalled_since = None;
        } else if now - *conn.stalled_since.get_or_insert(now) > deadline {
            tracing::info!("closing a slow client after {deadline:?}");
            let stats = &self.shared.stats;
            stats.slow_client_closes.fetch_add(1, Ordering::Relaxed);
            let Mode::Ws(ws) = &mut conn.mode else {
                // SSE: it resumes with Last-Event-ID.
                return true;
            };
            // Everything queued, then a close frame naming the last
            // sequence queued per subscription.
            ws.close_slow(&self.router, &mut conn.output);
            conn.close_when_flushed();
            self.retire_streams(index);
            self.flush_or_close(index);
            return false;
        }
        match &mut conn.mode {
            Mode::Ws(ws) => {
                // Written only if a STOMP heart-beat or close was queued.
                let queued = conn.output.pending();
                let status = ws.timers(now, &mut conn.output);
                let wrote = conn.output.pending() > queued;
                let closed = matches!(status, WsStatus::Closed | WsStatus::Expired);
                if let WsStatus::Expired = status {
                    let stats = &self.shared.stats;
                    stats.token_expiry_closes.fetch_add(1, Ordering::Relaxed);
                }
                if closed {
                    conn.close_when_flushed();
                    self.retire_streams(index);
                }
                if wrote || closed {
                    self.flush_or_close(index);
                }
                false
            }
            Mode::Sse {
                expiry: Some(expiry),
                form,
                ..
            } if expiry.expired(now) => {
                // The client reconnects with a fresh token and resumes with
                // Last-Event-ID.
                conn.output.extend(&sse_expired(*form, expiry.exp));
                let stats = &self.shared.stats;
                stats.token_expiry_closes.fetch_add(1, Ordering::Relaxed);
                conn.close_when_flushed();
                self.retire_streams(index);
                self.flush_or_close(index);
                false
            }
            Mode::Sse { next_keepalive, .. } if now >= *next_keepalive => {
                conn.output.extend(b": keep-alive\n\n");
                *next_keepalive = now + config.keepalive;
                conn.flush().is_err()
            }
            Mode::Http => {
                let slow_head = conn
                    .request_started
                    .is_some_and(|t| now - t > config.header_timeout);
                if slow_head {
                    let why = "request head not received in time";
                    let answer = Response::error(408, "Request Timeout", "timeout", why);
                    conn.respond(&answer, false);
                    let _ = conn.flush();
                    return true;
                }
                conn.input.is_empty()
                    && conn.pending() == 0
                    && now - conn.last_activity > config.idle_timeout
            }
            _ => false,
        }
    }
}
