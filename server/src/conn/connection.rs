//! One client connection: its socket (and TLS session), buffers, what it
//! speaks (HTTP, an SSE stream, a waiting poll, WebSocket), where it is in
//! its life (open, closing, lingering), and its timers.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::TcpStream;

use super::output::Output;
use super::tls::TlsConn;
use super::websocket::{Inbound, WsConn};
use crate::api::auth::Expiry;
use crate::api::exec::PendingPublish;
use crate::api::http::{Poll, Stream as SseStream};
use crate::api::ws::Protocol;
use crate::fanout::encode::SseForm;
use crate::fanout::StreamId;
use crate::wire::http::Response;

/// What the connection speaks now.
pub(crate) enum Mode {
    /// Reading requests.
    Http,
    /// A WebSocket connection (after the upgrade).
    Ws(Box<WsConn>),
    /// Streaming Server-Sent Events.
    Sse {
        stream: StreamId,
        next_keepalive: Instant,
        form: SseForm,
        /// When the token runs out (`None`: anonymous).
        expiry: Option<Expiry>,
    },
    /// A poll waiting for its first event or its deadline; requests
    /// pipelined behind it wait in the input.
    Poll {
        poll: Box<Poll>,
        deadline: Instant,
        keep_alive: bool,
    },
    /// An SSE stream whose start is ahead of this cluster node's replica:
    /// its head waits for the replica (or the hold's end: 503); requests
    /// pipelined behind it wait in the input.
    Held {
        start: Box<SseStream>,
        keep_alive: bool,
    },
    /// A publish waiting for the cluster's stream; requests pipelined
    /// behind it wait in the input.
    Publishing {
        pending: Box<PendingPublish>,
        /// The CORS origin its answer names.
        cors: Option<String>,
        keep_alive: bool,
    },
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Serving.
    Open,
    /// Its last answer is queued: once written, the write side is shut.
    /// Given the slow-client deadline to leave.
    Closing { since: Instant },
    /// Its write side is shut; it discards input until the peer closes
    /// (closing with unread input would reset the connection and could
    /// destroy the answer in flight). Closed after a short linger.
    Lingering { since: Instant },
}

pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// The TLS session over `stream` (a TLS listener): every read and
    /// write but lingering's goes through it.
    pub(crate) tls: Option<Box<TlsConn>>,
    pub(crate) peer: IpAddr,
    /// Over a connection limit or the connection rate: answered at accept
    /// and closed (the slot was never counted).
    pub(crate) refused: bool,
    pub(crate) input: Vec<u8>,
    pub(crate) output: Output,
    pub(crate) mode: Mode,
    pub(crate) lifecycle: Lifecycle,
    /// Since when the current request head is awaited (header timeout):
    /// from the accept, then from the first byte after each answer.
    pub(crate) request_started: Option<Instant>,
    pub(crate) last_activity: Instant,
    /// Since when the output has been at its bound (slow client).
    pub(crate) stalled_since: Option<Instant>,
    /// Not read while its output is full (a client that sends but does not
    /// read its answers); resumed when the output drains.
    pub(crate) read_paused: bool,
}

impl Conn {
    pub(crate) fn new(
        stream: TcpStream,
        tls: Option<Box<TlsConn>>,
        peer: IpAddr,
        refused: bool,
    ) -> Conn {
        let now = Instant::now();
        Conn {
            stream,
            tls,
            peer,
            refused,
            input: Vec::new(),
            output: Output::default(),
            mode: Mode::Http,
            lifecycle: Lifecycle::Open,
            request_started: Some(now),
            last_activity: now,
            stalled_since: None,
            read_paused: false,
        }
    }

    /// When the token of its stream or WebSocket connection has something
    /// due next (a warning, the end).
    pub(crate) fn token_deadline(&self) -> Option<Instant> {
        match &self.mode {
            _ if !self.is_open() => None,
            Mode::Ws(ws) => ws.token_deadline(),
            Mode::Sse { expiry, .. } => expiry.as_ref().map(Expiry::next),
            Mode::Http | Mode::Poll { .. } | Mode::Publishing { .. } | Mode::Held { .. } => None,
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.output.pending()
    }

    pub(crate) fn is_open(&self) -> bool {
        self.lifecycle == Lifecycle::Open
    }

    /// Queues an HTTP answer. The one place that decides whether the
    /// connection stays open after it: the request asked for keep-alive and
    /// the answer does not end the connection.
    pub(crate) fn respond(&mut self, response: &Response, keep_alive: bool) {
        let keep_alive = keep_alive && !response.close;
        response.write(keep_alive, self.output.tail());
        if !keep_alive {
            self.close_when_flushed();
        }
    }

    /// Closes once what is queued is written.
    pub(crate) fn close_when_flushed(&mut self) {
        if self.lifecycle == Lifecycle::Open {
            self.lifecycle = Lifecycle::Closing {
                since: Instant::now(),
            };
        }
    }

    /// Switches to WebSocket. On a plain connection tungstenite reads the
    /// same descriptor through a `TcpStream` that never closes it (no
    /// second descriptor per connection); this connection's `TcpStream`
    /// stays registered in the poller and owns it. On a TLS connection it
    /// reads the plaintext that the worker decrypts for it.
    pub(crate) fn upgrade(&mut self, session: Protocol) {
        use std::os::fd::FromRawFd;
        let inbound = if self.tls.is_some() {
            Inbound::decrypted()
        } else {
            // SAFETY: the descriptor stays open as long as `self.stream`,
            // which lives in the same `Conn` as the WebSocket and is dropped
            // with it; the `ManuallyDrop` never closes it, and nothing reads
            // through it after the connection is dropped.
            Inbound::Socket(std::mem::ManuallyDrop::new(unsafe {
                std::net::TcpStream::from_raw_fd(self.stream.as_raw_fd())
            }))
        };
        let already_read = std::mem::take(&mut self.input);
        self.mode = Mode::Ws(Box::new(WsConn::new(inbound, already_read, session)));
    }

    /// Reads from the socket, or the plaintext of its TLS session.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(tls) => tls.stream(&mut self.stream).read(buf),
            None => self.stream.read(buf),
        }
    }

    /// Reads everything available into the input (HTTP, or requests
    /// pipelined behind a waiting poll or publish), at most `cap` bytes beyond which
    /// the parser refuses anyway. Returns false if the peer closed or failed.
    pub(crate) fn read_available(&mut self, cap: usize) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.read_some(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.last_activity = Instant::now();
                    if matches!(
                        self.mode,
                        Mode::Http
                            | Mode::Poll { .. }
                            | Mode::Publishing { .. }
                            | Mode::Held { .. }
                    ) {
                        self.input.extend_from_slice(&chunk[..n]);
                        if self.input.len() > cap {
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

    /// Reads and drops what the peer sent (a TLS peer's records are not
    /// even decrypted). Returns false once it closed.
    pub(crate) fn discard_input(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Writes as much pending output as the socket takes (with TLS, the
    /// records waiting first).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        let wrote = match &mut self.tls {
            None => self.output.write_to(&mut self.stream)?,
            Some(tls) => {
                let mut stream = tls.stream(&mut self.stream);
                let wrote = self.output.write_to(&mut stream)?;
                match stream.flush() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => wrote,
                }
            }
        };
        if wrote {
            self.last_activity = Instant::now();
        }
        Ok(())
    }

    /// A closing connection whose output is written: ends its TLS session
    /// (close_notify), shuts its write side and starts lingering. `Ok(false)`
    /// while TLS records still wait for the socket (called again when it is
    /// writable); an error if the socket failed or the peer left (close it).
    pub(crate) fn start_lingering(&mut self) -> io::Result<bool> {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            match tls.flush_records(&mut self.stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                r => r?,
            }
        }
        self.stream.shutdown(Shutdown::Write)?;
        if !self.discard_input() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.lifecycle = Lifecycle::Lingering {
            since: Instant::now(),
        };
        Ok(true)
    }
}
