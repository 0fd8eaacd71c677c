//! One event loop (its own mio `Poll`) serving a share of the connections.
//!
//! Each streaming connection (SSE or a waiting long-poll) owns a broker
//! subscription. The worker arms the broker's doorbell (an eventfd registered
//! in its `Poll`) for those subscriptions whenever it has drained them, so a
//! publish wakes it with one eventfd write and an idle worker costs nothing.
//!
//! Slow clients: a connection whose unsent output exceeds the bound stops
//! being fed; its subscription falls behind, falls back to the log by itself
//! and catches up when the client drains (nothing is lost).

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::broker::{Delivery, Subscription};
use herald_core::ring::Doorbell;
use herald_core::Broker;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::auth::{Authenticator, Grants};
use crate::encode::sse_frame;
use crate::http::{self, error_response};
use crate::limits::ConnLimits;
use crate::routes::{denied, poll_body, route, Action};
use crate::ws::{upgrade_response, WsConn, WsStatus};
use crate::ServerConfig;

const WAKER: Token = Token(0);
const DOORBELL: Token = Token(1);
const FIRST_CONN: usize = 2;

enum State {
    /// Reading requests.
    Http,
    /// A WebSocket connection (after the upgrade).
    Ws(Box<WsConn>),
    /// Streaming Server-Sent Events.
    Sse {
        sub: Subscription,
        topic_ids: bool,
        prefix_len: usize,
        next_keepalive: Instant,
    },
    /// A poll waiting for its first event or its deadline.
    Poll {
        sub: Subscription,
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
    output: Vec<u8>,
    /// Bytes of `output` already written.
    sent: usize,
    state: State,
    /// When the current request started arriving (header timeout).
    request_started: Option<Instant>,
    last_activity: Instant,
    close_when_flushed: bool,
}

impl Conn {
    fn pending(&self) -> usize {
        self.output.len() - self.sent
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
}

pub(crate) struct Worker {
    poll: Poll,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    broker: Broker,
    incoming: Receiver<(TcpStream, IpAddr, Option<&'static str>)>,
    shutdown: Arc<AtomicBool>,
    doorbell: Doorbell,
    config: Arc<ServerConfig>,
    auth: Arc<Authenticator>,
    limits: Arc<ConnLimits>,
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
        } = shared;
        let doorbell = broker.doorbell()?;
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
            config,
            auth,
            limits,
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
            let now = Instant::now();
            self.conns[index] = Some(Conn {
                stream,
                peer,
                refused,
                stalled_since: None,
                input: Vec::new(),
                output: Vec::new(),
                sent: 0,
                state: State::Http,
                request_started: None,
                last_activity: now,
                close_when_flushed: false,
            });
        }
    }

    fn close(&mut self, index: usize) {
        if let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            if conn.refused.is_none() {
                self.limits.release(conn.peer);
            }
            self.free.push(index);
        }
    }

    fn close_all(&mut self) {
        for index in 0..self.conns.len() {
            if let Some(conn) = self.conns[index].as_mut() {
                let _ = flush(conn);
                if let State::Ws(ws) = &mut conn.state {
                    ws.shutdown(1001, "server shutting down");
                }
            }
            self.close(index);
        }
    }

    fn on_io(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if let State::Ws(ws) = &mut conn.state {
            if let WsStatus::Closed = ws.on_readable(&self.broker) {
                self.close(index);
            }
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
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if flush(conn).is_err() || (conn.close_when_flushed && conn.pending() == 0) {
            self.close(index);
        }
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
            let (request, used) = match http::parse(&conn.input, self.config.limits) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return,
                Err(e) => {
                    conn.output.extend_from_slice(&e.response());
                    conn.close_when_flushed = true;
                    return;
                }
            };
            conn.input.drain(..used);
            conn.request_started = None;
            let keep_alive = request.keep_alive;
            if let Some(why) = conn.refused {
                conn.output.extend_from_slice(&error_response(
                    503,
                    "Service Unavailable",
                    why,
                    false,
                ));
                conn.close_when_flushed = true;
                return;
            }
            let public = matches!(request.path.as_str(), "/healthz" | "/readyz" | "/metrics");
            let grants = if public {
                Grants::anonymous()
            } else {
                match self.auth.authenticate(&request) {
                    Ok(g) => g,
                    Err(d) => {
                        conn.output.extend_from_slice(&denied(&d, keep_alive));
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
                    conn.output
                        .extend_from_slice(&error_response(400, "Bad Request", why, false));
                    conn.close_when_flushed = true;
                    return;
                }
                Some(Ok(switching)) => {
                    conn.output.extend_from_slice(&switching);
                    match websocket_over(conn, self.config.max_output, grants) {
                        Ok(ws) => conn.state = State::Ws(Box::new(ws)),
                        Err(e) => {
                            tracing::warn!("cannot start a WebSocket: {e}");
                            conn.close_when_flushed = true;
                        }
                    }
                    return;
                }
            }
            match route(&self.broker, &request, &grants) {
                Action::Respond(bytes) => {
                    conn.output.extend_from_slice(&bytes);
                    if !keep_alive {
                        conn.close_when_flushed = true;
                    }
                }
                Action::Stream(s) => match self.broker.subscribe(s.filter, s.start) {
                    Ok(sub) => {
                        conn.output.extend_from_slice(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\nX-Accel-Buffering: no\r\n\r\nretry: {}\n\n",
                                self.config.sse_retry_ms
                            )
                            .as_bytes(),
                        );
                        conn.state = State::Sse {
                            sub,
                            topic_ids: s.topic_ids,
                            prefix_len: s.prefix_len,
                            next_keepalive: Instant::now() + self.config.keepalive,
                        };
                    }
                    Err(e) => {
                        conn.output.extend_from_slice(&error_response(
                            400,
                            "Bad Request",
                            &e.to_string(),
                            false,
                        ));
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
                            conn.state = State::Poll {
                                sub,
                                deadline: Instant::now() + Duration::from_millis(wait_ms),
                                limit,
                                topic_ids,
                                after,
                                keep_alive,
                                prefix_len,
                            };
                        }
                        Err(e) => {
                            conn.output.extend_from_slice(&error_response(
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

    /// Feeds every streaming connection from its subscription. Returns true
    /// if some subscription may have more right away (poll again at once).
    fn pump(&mut self) -> bool {
        let mut busy = false;
        let max_output = self.config.max_output;
        for index in 0..self.conns.len() {
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            let mut finished_poll = false;
            match &mut conn.state {
                State::Http => continue,
                State::Ws(_) => {
                    // The 101 answer must be out before any frame.
                    if flush(conn).is_err() {
                        self.close(index);
                        continue;
                    }
                    if conn.pending() > 0 {
                        continue;
                    }
                    let State::Ws(ws) = &mut conn.state else {
                        continue;
                    };
                    let (status, more) = ws.pump();
                    if let WsStatus::Closed = status {
                        self.close(index);
                        continue;
                    }
                    if ws.is_stalled() {
                        let since = *conn.stalled_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > self.config.slow_client_deadline {
                            ws.close_slow();
                            self.close(index);
                        }
                        continue;
                    }
                    conn.stalled_since = None;
                    busy |= more || !ws.arm(&self.doorbell);
                    continue;
                }
                State::Sse {
                    sub,
                    topic_ids,
                    prefix_len,
                    ..
                } => {
                    let (topic_ids, prefix_len) = (*topic_ids, *prefix_len);
                    while conn.output.len() - conn.sent < max_output {
                        let out = &mut conn.output;
                        match sub.try_next_with(|d| sse_frame(out, &d, topic_ids, prefix_len)) {
                            Ok(Some(())) => {}
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!("subscription failed: {e}");
                                conn.close_when_flushed = true;
                                break;
                            }
                        }
                    }
                }
                State::Poll {
                    sub,
                    deadline,
                    limit,
                    topic_ids,
                    after,
                    keep_alive,
                    prefix_len,
                } => {
                    let mut got: Vec<Delivery> = Vec::new();
                    while got.len() < *limit {
                        match sub.try_next() {
                            Ok(Some(d)) => got.push(d),
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!("poll failed: {e}");
                                break;
                            }
                        }
                    }
                    if !got.is_empty() || Instant::now() >= *deadline {
                        let body = poll_body(&got, *topic_ids, *after, *prefix_len);
                        conn.output.extend_from_slice(&http::response(
                            200,
                            "OK",
                            "application/json",
                            &body,
                            *keep_alive,
                        ));
                        if !*keep_alive {
                            conn.close_when_flushed = true;
                        }
                        finished_poll = true;
                    }
                }
            }
            if finished_poll {
                conn.state = State::Http;
            }
            let failed = flush(conn).is_err();
            if failed || (conn.close_when_flushed && conn.pending() == 0) {
                self.close(index);
                continue;
            }
            if finished_poll {
                // Requests that arrived while the poll waited.
                self.handle_requests(index);
                continue;
            }
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            if conn.pending() >= max_output {
                // Not fed until the socket drains (writable event); closed if
                // it stays full past the deadline. An SSE client resumes
                // exactly with Last-Event-ID.
                let since = *conn.stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > self.config.slow_client_deadline {
                    tracing::info!(
                        "closing a slow client after {:?}",
                        self.config.slow_client_deadline
                    );
                    self.close(index);
                }
                continue;
            }
            conn.stalled_since = None;
            let armed = match &conn.state {
                State::Sse { sub, .. } | State::Poll { sub, .. } => sub.arm(&self.doorbell),
                State::Http | State::Ws(_) => true,
            };
            busy |= !armed;
        }
        busy
    }

    /// Keep-alive comments, long-poll deadlines, idle or slow requests, and
    /// (on the first worker) presence expiry.
    fn timers(&mut self) {
        let now = Instant::now();
        if self.expires_presence && now >= self.next_presence_expiry {
            self.next_presence_expiry = now + Duration::from_secs(1);
            if let Err(e) = self.broker.presence_expire() {
                tracing::warn!("presence expiry failed: {e}");
            }
        }
        for index in 0..self.conns.len() {
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            let mut close = false;
            match &mut conn.state {
                State::Sse { next_keepalive, .. } if now >= *next_keepalive => {
                    conn.output.extend_from_slice(b": keep-alive\n\n");
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
                        conn.output.extend_from_slice(&error_response(
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

/// A WebSocket over the connection's socket: tungstenite gets its own
/// descriptor (a `dup` of the same socket, so the same non-blocking file
/// description) while the poller keeps the original registered.
fn websocket_over(conn: &mut Conn, max_output: usize, grants: Grants) -> io::Result<WsConn> {
    use std::os::fd::FromRawFd;
    // SAFETY: dup of a descriptor this connection owns; the result is checked.
    let fd = unsafe { libc::dup(conn.stream.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nothing else.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let already_read = std::mem::take(&mut conn.input);
    Ok(WsConn::new(stream, already_read, max_output, grants))
}

/// Reads everything available. Returns false if the peer closed or failed.
fn read_available(conn: &mut Conn, cap: usize) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match conn.stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                conn.last_activity = Instant::now();
                if matches!(conn.state, State::Http) {
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

/// Writes as much pending output as the socket takes.
fn flush(conn: &mut Conn) -> io::Result<()> {
    while conn.sent < conn.output.len() {
        match conn.stream.write(&conn.output[conn.sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.sent += n;
                conn.last_activity = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if conn.sent == conn.output.len() {
        conn.output.clear();
        conn.sent = 0;
    } else if conn.sent > 64 * 1024 {
        conn.output.drain(..conn.sent);
        conn.sent = 0;
    }
    Ok(())
}
