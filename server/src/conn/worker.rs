//! One event loop (its own mio `Poll`) serving a share of the connections.
//!
//! The worker's [`Router`] is its subscriber: it reads each event once and
//! routes it to the SSE and WebSocket streams of this worker's connections
//! (see `fanout`). A waiting long-poll owns a broker subscription of its
//! own. The worker arms the broker's doorbell (an eventfd registered in its
//! `Poll`) whenever it has drained everything, so a publish wakes it with one
//! eventfd write and an idle worker costs nothing.
//!
//! Slow clients: a connection whose unsent output reaches the bound stops
//! being fed; it is caught up from the log when it drains (nothing is lost),
//! and closed if it stays full past the deadline.

use std::io::{self, Read};
use std::net::{IpAddr, Shutdown};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::broker::Subscription;
use herald_core::ring::Doorbell;
use herald_core::Broker;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::api::auth::{Authenticator, Grants};
use crate::api::origins::{add_cors_headers, preflight_response, Origins, Verdict};
use crate::api::routes::{denied, route, Action};
use crate::api::ws::{upgrade_response, WsConn, WsContext, WsStatus};
use crate::config::ServerConfig;
use crate::conn::limits::ConnLimits;
use crate::conn::output::Output;
use crate::fanout::encode::PollBody;
use crate::fanout::{Encoding, Outputs, Router, StreamId};
use crate::metrics::ServerStats;
use crate::wire::http::{self, error_response};

const WAKER: Token = Token(0);
const DOORBELL: Token = Token(1);
const FIRST_CONN: usize = 2;
/// How long a closing connection may take to close its side.
const LINGER: Duration = Duration::from_secs(2);

enum State {
    /// Reading requests.
    Http,
    /// A WebSocket connection (after the upgrade).
    Ws(Box<WsConn>),
    /// Streaming Server-Sent Events.
    Sse {
        stream: StreamId,
        next_keepalive: Instant,
    },
    /// A poll waiting for its first event or its deadline.
    Poll {
        sub: Box<Subscription>,
        deadline: Instant,
        limit: usize,
        topic_ids: bool,
        after: u64,
        keep_alive: bool,
        prefix_len: usize,
    },
}

struct Conn {
    stream: TcpStream,
    peer: IpAddr,
    /// Over a connection limit: every request gets 503 (and the slot was
    /// never counted).
    refused: Option<&'static str>,
    /// Since when the output has been at its bound (slow client).
    stalled_since: Option<Instant>,
    input: Vec<u8>,
    output: Output,
    state: State,
    /// When the current request started arriving (header timeout).
    request_started: Option<Instant>,
    last_activity: Instant,
    close_when_flushed: bool,
    /// Since when the connection, its answer sent and its write side shut,
    /// discards input until the peer closes (closing with unread input
    /// would reset the connection and could destroy the answer in flight).
    lingering: Option<Instant>,
    /// The current request's cross-origin page, if allowed (CORS headers).
    cors: Option<String>,
    /// Not read while its output is full (a client that sends but does not
    /// read its answers); resumed when the output drains.
    read_paused: bool,
    /// Since when it has been closing (`close_when_flushed`).
    closing_since: Option<Instant>,
}

impl Conn {
    fn pending(&self) -> usize {
        self.output.pending()
    }

    /// Queues an HTTP response, with CORS headers for an allowed page.
    fn answer(&mut self, mut response: Vec<u8>) {
        if let Some(origin) = &self.cors {
            add_cors_headers(&mut response, origin);
        }
        self.output.extend(&response);
    }
}

impl Outputs for Vec<Option<Conn>> {
    fn output(&mut self, conn: usize) -> Option<&mut Output> {
        self.get_mut(conn)?.as_mut().map(|c| &mut c.output)
    }

    fn write_now(&mut self, conn: usize) {
        if let Some(c) = self.get_mut(conn).and_then(Option::as_mut) {
            let _ = flush(c);
        }
    }
}

/// What every worker shares with the others and the acceptor.
#[derive(Clone)]
pub(crate) struct WorkerShared {
    pub(crate) broker: Broker,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) limits: Arc<ConnLimits>,
    pub(crate) stats: Arc<ServerStats>,
    pub(crate) origins: Arc<Origins>,
}

pub(crate) struct Worker {
    poll: Poll,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    broker: Broker,
    incoming: Receiver<(TcpStream, IpAddr, Option<&'static str>)>,
    shutdown: Arc<AtomicBool>,
    doorbell: Doorbell,
    router: Router,
    /// Connections with new output (reused buffer).
    dirty: Vec<usize>,
    /// Connections whose reading was paused and may resume.
    resume_reads: Vec<usize>,
    /// Connections waiting in a long-poll.
    polls_waiting: usize,
    next_timers: Instant,
    config: Arc<ServerConfig>,
    auth: Arc<Authenticator>,
    limits: Arc<ConnLimits>,
    stats: Arc<ServerStats>,
    origins: Arc<Origins>,
    /// This worker expires presence sessions (one worker does).
    expires_presence: bool,
    next_presence_expiry: Instant,
}

impl Worker {
    pub(crate) fn new(
        poll: Poll,
        incoming: Receiver<(TcpStream, IpAddr, Option<&'static str>)>,
        shared: WorkerShared,
        expires_presence: bool,
    ) -> io::Result<Worker> {
        let WorkerShared {
            broker,
            shutdown,
            config,
            auth,
            limits,
            stats,
            origins,
        } = shared;
        let doorbell = broker.doorbell()?;
        let router = Router::new(broker.clone(), config.max_output).map_err(io::Error::other)?;
        poll.registry().register(
            &mut SourceFd(&doorbell.as_raw_fd()),
            DOORBELL,
            Interest::READABLE,
        )?;
        Ok(Worker {
            poll,
            conns: Vec::new(),
            free: Vec::new(),
            broker,
            incoming,
            shutdown,
            doorbell,
            router,
            dirty: Vec::new(),
            resume_reads: Vec::new(),
            polls_waiting: 0,
            next_timers: Instant::now(),
            config,
            auth,
            limits,
            stats,
            origins,
            expires_presence,
            next_presence_expiry: Instant::now(),
        })
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut busy = false;
        loop {
            let timeout = if busy {
                Duration::ZERO
            } else {
                Duration::from_millis(250)
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
            if self.shutdown.load(Ordering::Acquire) {
                self.close_all();
                return;
            }
            busy = self.pump();
            while let Some(index) = self.resume_reads.pop() {
                self.on_io(index);
                busy = true;
            }
            self.timers();
        }
    }

    fn accept(&mut self) {
        while let Ok((mut stream, peer, refused)) = self.incoming.try_recv() {
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
                    self.limits.release(peer);
                }
                continue;
            }
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            self.conns[index] = Some(Conn {
                stream,
                peer,
                refused,
                stalled_since: None,
                input: Vec::new(),
                output: Output::default(),
                state: State::Http,
                request_started: None,
                last_activity: now,
                close_when_flushed: false,
                lingering: None,
                cors: None,
                read_paused: false,
                closing_since: None,
            });
        }
    }

    /// Takes a connection's streams off the router.
    fn retire_streams(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        match std::mem::replace(&mut conn.state, State::Http) {
            State::Sse { stream, .. } => self.router.remove(stream),
            State::Ws(ws) => {
                for stream in ws.streams() {
                    self.router.remove(stream);
                }
                // Keeps the protocol state (closing) without its streams.
                let mut ws = ws;
                ws.retire(&self.broker);
                conn.state = State::Ws(ws);
            }
            State::Poll { .. } => self.polls_waiting -= 1,
            State::Http => {}
        }
    }

    fn close(&mut self, index: usize) {
        self.retire_streams(index);
        if let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.stats.connections.fetch_sub(1, Ordering::Relaxed);
            if conn.refused.is_none() {
                self.limits.release(conn.peer);
            }
            self.free.push(index);
        }
    }

    fn close_all(&mut self) {
        for index in 0..self.conns.len() {
            if let Some(conn) = self.conns[index].as_mut() {
                if let State::Ws(ws) = &mut conn.state {
                    ws.close_and_drain(1001, "server shutting down", &mut conn.output);
                }
                let _ = flush(conn);
            }
            self.close(index);
        }
    }

    fn on_io(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if conn.lingering.is_some() {
            if !discard_input(&mut conn.stream) {
                self.close(index);
            }
            return;
        }
        // Backpressure on input: answers pile up in the output only as far
        // as the output bound.
        let writable = flush(conn).is_ok();
        if !writable || conn.pending() >= self.config.max_output {
            conn.read_paused = writable;
            self.flush_or_close(index);
            return;
        }
        conn.read_paused = false;
        if let State::Ws(ws) = &mut conn.state {
            let mut cx = WsContext {
                broker: &self.broker,
                router: &mut self.router,
                conn: index,
                out: &mut conn.output,
            };
            if let WsStatus::Closed = ws.on_readable(&mut cx) {
                // Nothing may follow the close frame.
                conn.close_when_flushed = true;
                self.retire_streams(index);
            }
            self.flush_or_close(index);
            return;
        }
        let open = read_available(
            conn,
            self.config.limits.max_head + self.config.limits.max_body,
        );
        if !open {
            self.close(index);
            return;
        }
        self.handle_requests(index);
        self.flush_or_close(index);
    }

    /// Writes what the socket takes; closes the connection if that failed
    /// or if it is done.
    fn flush_or_close(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if flush(conn).is_err() {
            self.close(index);
            return;
        }
        if conn.read_paused && conn.pending() < self.config.max_output / 2 {
            conn.read_paused = false;
            self.resume_reads.push(index);
        }
        if !conn.close_when_flushed || conn.pending() > 0 || conn.lingering.is_some() {
            return;
        }
        if conn.stream.shutdown(Shutdown::Write).is_err() || !discard_input(&mut conn.stream) {
            self.close(index);
            return;
        }
        conn.lingering = Some(Instant::now());
        self.retire_streams(index);
    }

    /// Parses and answers every complete request in the input buffer.
    fn handle_requests(&mut self, index: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                return;
            };
            if !matches!(conn.state, State::Http)
                || conn.close_when_flushed
                || conn.input.is_empty()
            {
                return;
            }
            conn.request_started.get_or_insert_with(Instant::now);
            conn.cors = None;
            let (request, used) = match http::parse(&conn.input, self.config.limits) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return,
                Err(e) => {
                    conn.answer(e.response());
                    conn.close_when_flushed = true;
                    return;
                }
            };
            conn.input.drain(..used);
            conn.request_started = None;
            let keep_alive = request.keep_alive;
            if let Some(why) = conn.refused {
                conn.answer(error_response(503, "Service Unavailable", why, false));
                conn.close_when_flushed = true;
                return;
            }
            match self
                .origins
                .check(request.header("origin"), request.header("host"))
            {
                Verdict::Pass => {}
                Verdict::Cors(origin) => conn.cors = Some(origin.to_owned()),
                Verdict::Refuse(why) => {
                    conn.answer(error_response(403, "Forbidden", why, keep_alive));
                    if !keep_alive {
                        conn.close_when_flushed = true;
                    }
                    continue;
                }
            }
            if request.method == "OPTIONS" {
                if let Some(origin) = &conn.cors {
                    let preflight = preflight_response(origin);
                    conn.output.extend(&preflight);
                    if !keep_alive {
                        conn.close_when_flushed = true;
                    }
                    continue;
                }
            }
            let public = matches!(request.path.as_str(), "/healthz" | "/readyz" | "/metrics");
            let grants = if public {
                Grants::anonymous()
            } else {
                match self.auth.authenticate(&request) {
                    Ok(g) => g,
                    Err(d) => {
                        conn.answer(denied(&d, keep_alive));
                        if !keep_alive {
                            conn.close_when_flushed = true;
                        }
                        continue;
                    }
                }
            };
            match upgrade_response(&request) {
                None => {}
                Some(Err(why)) => {
                    conn.answer(error_response(400, "Bad Request", why, false));
                    conn.close_when_flushed = true;
                    return;
                }
                Some(Ok(switching)) => {
                    conn.output.extend(&switching);
                    let mut ws = websocket_over(conn, grants);
                    // Messages that came with the upgrade request.
                    let mut cx = WsContext {
                        broker: &self.broker,
                        router: &mut self.router,
                        conn: index,
                        out: &mut conn.output,
                    };
                    let closed = matches!(ws.on_readable(&mut cx), WsStatus::Closed);
                    conn.state = State::Ws(Box::new(ws));
                    if closed {
                        conn.close_when_flushed = true;
                        self.retire_streams(index);
                    }
                    return;
                }
            }
            match route(&self.broker, &request, &grants, &self.stats) {
                Action::Respond(bytes) => {
                    conn.answer(bytes);
                    if !keep_alive {
                        conn.close_when_flushed = true;
                    }
                }
                Action::Stream(s) => match self.broker.subscribe(s.filter, s.start) {
                    Ok(sub) => {
                        let stream = self.router.add(
                            index,
                            sub,
                            Encoding::Sse {
                                topic_ids: s.topic_ids,
                            },
                            s.prefix_len,
                        );
                        conn.answer(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\nX-Accel-Buffering: no\r\n\r\nretry: {}\n\n",
                                self.config.sse_retry_ms
                            )
                            .into_bytes(),
                        );
                        conn.state = State::Sse {
                            stream,
                            next_keepalive: Instant::now() + self.config.keepalive,
                        };
                    }
                    Err(e) => {
                        conn.answer(error_response(400, "Bad Request", &e.to_string(), false));
                        conn.close_when_flushed = true;
                    }
                },
                Action::LongPoll {
                    filter,
                    start,
                    limit,
                    wait_ms,
                    topic_ids,
                    prefix_len,
                } => {
                    let after = match start {
                        herald_core::broker::StartAt::TopicSeq(s)
                        | herald_core::broker::StartAt::Seq(s) => s.saturating_sub(1),
                        _ => 0,
                    };
                    match self.broker.subscribe(filter, start) {
                        Ok(sub) => {
                            self.polls_waiting += 1;
                            conn.state = State::Poll {
                                sub: Box::new(sub),
                                deadline: Instant::now() + Duration::from_millis(wait_ms),
                                limit,
                                topic_ids,
                                after,
                                keep_alive,
                                prefix_len,
                            };
                        }
                        Err(e) => {
                            conn.answer(error_response(
                                400,
                                "Bad Request",
                                &e.to_string(),
                                keep_alive,
                            ));
                            if !keep_alive {
                                conn.close_when_flushed = true;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Routes events to streams, catches streams up, answers long-polls
    /// that have events, and writes what that produced. Returns true if
    /// there may be more to do right away (poll again at once).
    fn pump(&mut self) -> bool {
        let mut busy = self.router.route(&mut self.conns);
        busy |= self.router.catch_up(&mut self.conns);
        if self.polls_waiting > 0 {
            busy |= self.pump_polls();
        }
        // Counted before clients can see what they count.
        self.router.report(&self.stats);
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
            let State::Poll {
                sub,
                deadline,
                limit,
                topic_ids,
                after,
                keep_alive,
                prefix_len,
            } = &mut conn.state
            else {
                continue;
            };
            // Encoded as they come (created with the first delivery).
            let mut body: Option<PollBody> = None;
            while body.as_ref().map_or(0, PollBody::len) < *limit {
                let new = || PollBody::new(*after, *topic_ids, *prefix_len);
                match sub.try_next_with(|d| body.get_or_insert_with(new).push(&d)) {
                    Ok(Some(())) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("poll failed: {e}");
                        break;
                    }
                }
            }
            if body.is_none() && Instant::now() < *deadline {
                busy |= !sub.arm(&self.doorbell);
                continue;
            }
            let keep_alive = *keep_alive;
            let body = body
                .unwrap_or_else(|| PollBody::new(*after, *topic_ids, *prefix_len))
                .finish();
            let response = http::response(200, "OK", "application/json", &body, keep_alive);
            conn.answer(response);
            if !keep_alive {
                conn.close_when_flushed = true;
            }
            conn.state = State::Http;
            self.polls_waiting -= 1;
            self.flush_or_close(index);
            // Requests that arrived while the poll waited (maybe a poll).
            self.handle_requests(index);
            self.flush_or_close(index);
            busy = true;
        }
        busy
    }

    /// Keep-alive comments, long-poll deadlines, idle or slow requests, and
    /// (on the first worker) presence expiry.
    fn timers(&mut self) {
        let now = Instant::now();
        if now < self.next_timers {
            return;
        }
        self.next_timers = now + Duration::from_millis(50);
        if self.expires_presence && now >= self.next_presence_expiry {
            self.next_presence_expiry = now + Duration::from_secs(1);
            if let Err(e) = self.broker.presence_expire() {
                tracing::warn!("presence expiry failed: {e}");
            }
        }
        let deadline = self.config.slow_client_deadline;
        for index in 0..self.conns.len() {
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            if let Some(since) = conn.lingering {
                if now - since > LINGER {
                    self.close(index);
                }
                continue;
            }
            if conn.close_when_flushed {
                // Its last bytes get the slow-client deadline to leave.
                let since = *conn.closing_since.get_or_insert(now);
                if now - since > deadline.max(LINGER) {
                    self.close(index);
                }
                continue;
            }
            conn.output.release_if_idle();
            let mut close = false;
            let streaming = matches!(conn.state, State::Sse { .. } | State::Ws(_));
            if streaming && conn.pending() >= self.config.max_output {
                let since = *conn.stalled_since.get_or_insert(now);
                if now - since > deadline {
                    tracing::info!("closing a slow client after {deadline:?}");
                    self.stats
                        .slow_client_closes
                        .fetch_add(1, Ordering::Relaxed);
                    match &mut conn.state {
                        // It resumes with Last-Event-ID.
                        State::Sse { .. } => close = true,
                        // Everything queued, then a close frame naming the
                        // last sequence queued per subscription.
                        State::Ws(ws) => {
                            ws.close_slow(&self.router, &mut conn.output);
                            conn.close_when_flushed = true;
                            self.retire_streams(index);
                            self.flush_or_close(index);
                            continue;
                        }
                        _ => {}
                    }
                }
            } else {
                conn.stalled_since = None;
            }
            match &mut conn.state {
                State::Sse { next_keepalive, .. } if now >= *next_keepalive && !close => {
                    conn.output.extend(b": keep-alive\n\n");
                    *next_keepalive = now + self.config.keepalive;
                    close = flush(conn).is_err();
                }
                State::Http => {
                    let slow_head = conn
                        .request_started
                        .is_some_and(|t| now - t > self.config.header_timeout);
                    let idle = conn.input.is_empty()
                        && conn.pending() == 0
                        && now - conn.last_activity > self.config.idle_timeout;
                    if slow_head {
                        conn.output.extend(&error_response(
                            408,
                            "Request Timeout",
                            "request head not received in time",
                            false,
                        ));
                        let _ = flush(conn);
                        close = true;
                    } else if idle {
                        close = true;
                    }
                }
                _ => {}
            }
            if close {
                self.close(index);
            }
        }
    }
}

/// A WebSocket over the connection's socket. tungstenite reads the same
/// descriptor through a `TcpStream` that never closes it (no second
/// descriptor per connection); the worker's `TcpStream` stays registered in
/// the poller and owns it.
fn websocket_over(conn: &mut Conn, grants: Grants) -> WsConn {
    use std::os::fd::FromRawFd;
    // SAFETY: the descriptor stays open as long as `conn.stream`, which lives
    // in the same `Conn` as the WebSocket and is dropped with it; the
    // `ManuallyDrop` never closes it, and nothing reads through it after the
    // connection is dropped.
    let socket = std::mem::ManuallyDrop::new(unsafe {
        std::net::TcpStream::from_raw_fd(conn.stream.as_raw_fd())
    });
    let already_read = std::mem::take(&mut conn.input);
    WsConn::new(socket, already_read, grants)
}

/// Reads everything available. Returns false if the peer closed or failed.
fn read_available(conn: &mut Conn, cap: usize) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match conn.stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                conn.last_activity = Instant::now();
                // (A waiting long-poll keeps what follows it: pipelining.)
                if matches!(conn.state, State::Http | State::Poll { .. }) {
                    conn.input.extend_from_slice(&chunk[..n]);
                    if conn.input.len() > cap + 16 * 1024 {
                        // The parser will refuse it; do not buffer more.
                        return true;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Reads and drops what the peer sent. Returns false once it closed.
fn discard_input(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Writes as much pending output as the socket takes.
fn flush(conn: &mut Conn) -> io::Result<()> {
    if conn.output.write_to(&mut conn.stream)? {
        conn.last_activity = Instant::now();
    }
    Ok(())
}
