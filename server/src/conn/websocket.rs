//! WebSocket framing (RFC 6455, tungstenite on the non-blocking socket, or
//! on the plaintext of its TLS session):
//! reads client messages and hands each to the connection's [`Protocol`]
//! (Herald's JSON messages or STOMP frames); writes replies, STOMP
//! heart-beats and close frames into the connection's output. Event frames
//! are written by the router, not here.

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::TcpStream as StdTcpStream;
use std::time::Instant;

use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::api::auth::Due;
use crate::api::error::ApiError;
use crate::api::ops::Envelope;
use crate::api::stomp::Flow;
use crate::api::ws::{error_reply, Protocol, WsContext};
use crate::conn::output::Output;
use crate::fanout::encode::ws_text_header;
use crate::fanout::Router;

/// Largest message a client may send.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

/// Size of a worker's read-ahead buffer (see [`ReadAhead`]).
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// Where tungstenite's reads come from.
pub(crate) enum Inbound {
    /// The connection's socket, borrowed: the worker's `TcpStream` owns and
    /// closes it (see `Conn::upgrade`).
    Socket(ManuallyDrop<StdTcpStream>),
    /// Plaintext of the connection's TLS session, decrypted by
    /// `WsConn::on_readable` when tungstenite has read all before.
    Decrypted {
        bytes: Vec<u8>,
        read: usize,
        /// The peer ended the session: reads give 0 once `bytes` are read.
        eof: bool,
    },
}

impl Inbound {
    pub(crate) fn decrypted() -> Inbound {
        Inbound::Decrypted {
            bytes: Vec::new(),
            read: 0,
            eof: false,
        }
    }
}

/// Bytes read from a plain socket ahead of tungstenite, which reads at
/// most 4 KiB at a time (its buffer is per connection, so it stays small):
/// one `recv` into the worker's [`READ_AHEAD`] buffer serves sixteen of
/// those reads. The worker lends the buffer for one
/// [`WsConn::on_readable`]; bytes it still holds when that returns stay
/// with the connection, in a buffer of their own.
#[derive(Default)]
struct ReadAhead {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
    /// `bytes` is the worker's buffer.
    lent: bool,
}

impl ReadAhead {
    /// Fills `buf` from the unread bytes, reading `socket` into the buffer
    /// first when they are all read (or straight into `buf` when no buffer
    /// is lent).
    fn read(&mut self, socket: &mut StdTcpStream, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.start == self.end {
            if !self.lent {
                // A connection's own buffer (unread bytes only) is done.
                self.bytes = Vec::new();
                return socket.read(buf);
            }
            self.start = 0;
            self.end = 0; // nothing buffered if the read fails
            self.end = socket.read(&mut self.bytes)?;
        }
        let n = buf.len().min(self.end - self.start);
        buf[..n].copy_from_slice(&self.bytes[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }

    /// Takes the worker's `buffer` (`READ_AHEAD` initialised bytes), unless
    /// unread bytes of an earlier read come first.
    fn lend(&mut self, buffer: &mut Vec<u8>) {
        if self.start == self.end && buffer.len() == READ_AHEAD {
            self.bytes = std::mem::take(buffer);
            self.start = 0;
            self.end = 0;
            self.lent = true;
        }
    }

    /// Gives the worker's buffer back, keeping a copy of what is unread.
    fn give_back(&mut self, buffer: &mut Vec<u8>) {
        if !self.lent {
            return;
        }
        let unread = self.bytes[self.start..self.end].to_vec();
        *buffer = std::mem::replace(&mut self.bytes, unread);
        self.end -= self.start;
        self.start = 0;
        self.lent = false;
    }
}

/// tungstenite's stream: reads come from [`Inbound`]; writes land in a
/// buffer that the worker moves into the connection's output, behind or
/// between the event frames that it writes itself.
struct Duplex {
    inbound: Inbound,
    /// For [`Inbound::Socket`].
    ahead: ReadAhead,
    written: Vec<u8>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inbound {
            Inbound::Socket(socket) => self.ahead.read(socket, buf),
            Inbound::Decrypted { bytes, read, eof } => {
                let n = buf.len().min(bytes.len() - *read);
                buf[..n].copy_from_slice(&bytes[*read..*read + n]);
                *read += n;
                if *read == bytes.len() {
                    bytes.clear();
                    *read = 0;
                }
                match n {
                    0 if !*eof && !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                }
            }
        }
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A WebSocket connection: framing plus its session.
pub(crate) struct WsConn {
    ws: WebSocket<Duplex>,
    /// Our close frame is sent: nothing more may follow it.
    closing: bool,
    /// The reply being written (empty between messages; its buffer reused,
    /// and freed by the worker's timer so an idle connection keeps none).
    reply: Vec<u8>,
    pub(crate) session: Protocol,
}

/// What a read left the connection in.
pub(crate) enum WsStatus {
    Open,
    /// Close once the output (a close frame last) is written.
    Closed,
    /// Closed (as `Closed`) because its token expired.
    Expired,
}

/// The close code and reason of a connection whose token expired.
const TOKEN_EXPIRED: (u16, &str) = (4001, "token expired");

impl WsConn {
    /// Wraps a connection already upgraded (its socket non-blocking).
    pub(crate) fn new(inbound: Inbound, already_read: Vec<u8>, session: Protocol) -> WsConn {
        // A small read buffer: tungstenite allocates it whole per connection
        // (128 KiB by default) and grows it for larger messages as needed.
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE))
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let duplex = Duplex {
            inbound,
            ahead: ReadAhead::default(),
            written: Vec::new(),
        };
        let ws = WebSocket::from_partially_read(duplex, already_read, Role::Server, Some(config));
        WsConn {
            ws,
            closing: false,
            reply: Vec::new(),
            session,
        }
    }

    /// Reads and answers every message available; `tls`: the connection's
    /// TLS session, whose plaintext tungstenite reads; `read_ahead`: the
    /// worker's buffer of [`READ_AHEAD`] bytes, lent for this call (a
    /// plain connection reads its socket through it, see [`ReadAhead`]).
    pub(crate) fn on_readable(
        &mut self,
        cx: &mut WsContext<'_>,
        out: &mut Output,
        tls: Option<&mut dyn Read>,
        read_ahead: &mut Vec<u8>,
    ) -> WsStatus {
        let duplex = self.ws.get_mut();
        if let Inbound::Socket(_) = duplex.inbound {
            duplex.ahead.lend(read_ahead);
        }
        let status = self.read_messages(cx, out, tls);
        self.ws.get_mut().ahead.give_back(read_ahead);
        status
    }

    /// [`WsConn::on_readable`]'s loop.
    fn read_messages(
        &mut self,
        cx: &mut WsContext<'_>,
        out: &mut Output,
        mut tls: Option<&mut dyn Read>,
    ) -> WsStatus {
        let status = loop {
            match self.ws.read() {
                // After our close frame, messages are read and dropped.
                Ok(Message::Text(_) | Message::Binary(_)) if self.closing => {}
                Ok(Message::Text(text)) => match &mut self.session {
                    Protocol::Json(s) => {
                        let follow = s.handle(cx, text.as_str(), &mut self.reply);
                        self.send_reply(out);
                        for message in follow {
                            self.reply = message;
                            self.send_reply(out);
                        }
                    }
                    Protocol::Stomp(_) => {
                        if let WsStatus::Closed = self.stomp(cx, text.as_bytes()) {
                            break WsStatus::Closed;
                        }
                    }
                },
                Ok(Message::Binary(bytes)) => match &mut self.session {
                    Protocol::Json(_) => {
                        let e =
                            ApiError::invalid("binary messages are not supported: send JSON text");
                        error_reply(&mut self.reply, &Envelope::default(), &e);
                        self.send_reply(out);
                    }
                    Protocol::Stomp(_) => {
                        if let WsStatus::Closed = self.stomp(cx, &bytes) {
                            break WsStatus::Closed;
                        }
                    }
                },
                Ok(_) => {} // ping/pong/close handled by tungstenite
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(source) = tls.as_deref_mut() {
                        match self.decrypt(source) {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(_) => break WsStatus::Closed,
                        }
                    }
                    let _ = self.ws.flush();
                    break if self.closing {
                        WsStatus::Closed
                    } else {
                        WsStatus::Open
                    };
                }
                Err(WsError::Capacity(e)) => {
                    break self.close_with(1009, &format!("message too big: {e}"))
                }
                Err(WsError::Utf8(_)) => {
                    break self.close_with(1007, "invalid UTF-8 in a text message")
                }
                Err(WsError::Protocol(e)) => {
                    break self.close_with(1002, &format!("protocol error: {e}"))
                }
                Err(_) => break WsStatus::Closed,
            }
            self.drain(out);
        };
        self.drain(out);
        status
    }

    /// Hands tungstenite the next plaintext of a TLS session. Ok(false)
    /// once the socket has nothing more.
    fn decrypt(&mut self, source: &mut dyn Read) -> io::Result<bool> {
        let Inbound::Decrypted { bytes, eof, .. } = &mut self.ws.get_mut().inbound else {
            return Ok(false);
        };
        let mut chunk = [0u8; 8192];
        match source.read(&mut chunk) {
            Ok(0) => *eof = true,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// Frees the reply buffer and the decrypted input if read (the worker's
    /// timer, as for the output's).
    pub(crate) fn release_reply(&mut self) {
        self.reply = Vec::new();
        if let Inbound::Decrypted { bytes, .. } = &mut self.ws.get_mut().inbound {
            if bytes.is_empty() {
                *bytes = Vec::new();
            }
        }
    }

    /// Hands a message to the STOMP session and sends its frames; after an
    /// ERROR or DISCONNECT, closes.
    fn stomp(&mut self, cx: &mut WsContext<'_>, bytes: &[u8]) -> WsStatus {
        let Protocol::Stomp(session) = &mut self.session else {
            return WsStatus::Open;
        };
        let mut frames = Vec::new();
        let flow = session.feed(cx, bytes, &mut frames);
        for frame in frames {
            self.send_frame(frame);
        }
        match flow {
            Flow::Continue => WsStatus::Open,
            Flow::Close => self.close_with(1000, ""),
        }
    }

    /// When the token's warning or end is due next (`None`: never, or
    /// closing already).
    pub(crate) fn token_deadline(&self) -> Option<Instant> {
        match &self.session {
            _ if self.closing => None,
            Protocol::Json(s) => s.token_deadline(),
            Protocol::Stomp(s) => s.token_deadline(),
        }
    }

    /// Timers due at `now`: the token's warning (JSON) or end (close code
    /// 4001, after an ERROR frame on STOMP); STOMP heart-beats, one sent if
    /// due, and a client silent for twice its promised interval closed.
    pub(crate) fn timers(&mut self, now: Instant, out: &mut Output) -> WsStatus {
        if self.closing {
            return WsStatus::Open;
        }
        let session = match &mut self.session {
            Protocol::Json(s) => {
                let status = match s.token_due(now, &mut self.reply) {
                    Some(Due::Warn) => {
                        self.send_reply(out);
                        WsStatus::Open
                    }
                    Some(Due::Expired) => {
                        self.close_and_drain(TOKEN_EXPIRED.0, TOKEN_EXPIRED.1, out);
                        WsStatus::Expired
                    }
                    None => WsStatus::Open,
                };
                return status;
            }
            Protocol::Stomp(session) => session,
        };
        if session.expired(now) {
            let e = ApiError::Unauthenticated(TOKEN_EXPIRED.1.into());
            self.send_frame(crate::api::stomp::error_frame(&e, None));
            self.close_and_drain(TOKEN_EXPIRED.0, TOKEN_EXPIRED.1, out);
            return WsStatus::Expired;
        }
        let status = match session.heart_beat(now) {
            (_, true) => {
                let e = ApiError::invalid("no heart-beat from the client in twice its interval");
                self.send_frame(crate::api::stomp::error_frame(&e, None));
                self.close_with(1000, "")
            }
            (Some(beat), false) => {
                self.send_frame(beat.to_vec());
                WsStatus::Open
            }
            (None, false) => WsStatus::Open,
        };
        self.drain(out);
        status
    }

    /// Moves what tungstenite wrote into the connection's output.
    fn drain(&mut self, out: &mut Output) {
        let written = &mut self.ws.get_mut().written;
        if !written.is_empty() {
            out.extend(written);
            written.clear();
        }
    }

    fn close_with(&mut self, code: u16, reason: &str) -> WsStatus {
        // A close frame's reason is at most 123 bytes.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame {
            code: code.into(),
            reason: reason[..end].to_owned().into(),
        };
        let _ = self.ws.close(Some(frame));
        let _ = self.ws.flush();
        self.closing = true;
        WsStatus::Closed
    }

    /// Closes a client too slow to drain its output (code 4008). The reason
    /// names, per subscription, the last global and topic sequence sent, so
    /// that a reconnect resumes with `after` exactly. What is still unsent
    /// is dropped: the close frame must get through.
    pub(crate) fn close_slow(&mut self, router: &Router, out: &mut Output) {
        let mut reason = String::from("slow consumer; last sent");
        for (id, stream) in self.session.subscriptions() {
            let (seq, topic_seq) = router.last(stream);
            reason.push_str(&format!(" {id}={seq}/{topic_seq}"));
        }
        if let Protocol::Stomp(_) = self.session {
            // STOMP clients read ERROR frames, not close reasons.
            let e = ApiError::Unavailable(reason.clone());
            self.send_frame(crate::api::stomp::error_frame(&e, None));
        }
        self.close_and_drain(4008, &reason, out);
    }

    /// Sends a close frame with `code` (e.g. 1001 on shutdown).
    pub(crate) fn close_and_drain(&mut self, code: u16, reason: &str, out: &mut Output) {
        let _ = self.close_with(code, reason);
        self.drain(out);
    }

    /// Frames the JSON reply in `self.reply` as a text message straight
    /// into the output (through tungstenite it would be copied twice more),
    /// behind anything tungstenite queued (a pong).
    fn send_reply(&mut self, out: &mut Output) {
        self.drain(out);
        // (Empty: the message's answer is to come, see `finish_publishes`.)
        if !self.closing && !self.reply.is_empty() {
            ws_text_header(out.tail(), self.reply.len());
            out.extend(&self.reply);
        }
        self.reply.clear();
    }

    /// Whether publishes of this connection await the cluster's stream.
    pub(crate) fn publishes_pending(&self) -> bool {
        matches!(&self.session, Protocol::Json(s) if s.publishes_pending())
    }

    /// Writes the answers of publishes that have them (see
    /// `WsSession::finish_publishes`); true if some are still to come.
    pub(crate) fn finish_publishes(&mut self, now: Instant, out: &mut Output) -> bool {
        let Protocol::Json(session) = &mut self.session else {
            return false;
        };
        let mut answers = Vec::new();
        let more = session.finish_publishes(now, &mut answers);
        for answer in answers {
            self.reply = answer;
            self.send_reply(out);
        }
        more
    }

    /// Ends the subscriptions held past their hold (see
    /// `WsSession::finish_holds`); true if some are still held.
    pub(crate) fn finish_holds(
        &mut self,
        now: Instant,
        broker: &herald_core::Broker,
        router: &mut crate::fanout::Router,
        out: &mut Output,
    ) -> bool {
        let Protocol::Json(session) = &mut self.session else {
            return false;
        };
        let mut errors = Vec::new();
        let more = session.finish_holds(now, broker, router, &mut errors);
        for error in errors {
            self.reply = error;
            self.send_reply(out);
        }
        more
    }

    /// Whether subscriptions are held for this node's replica.
    pub(crate) fn holds_pending(&self) -> bool {
        matches!(&self.session, Protocol::Json(s) if s.holds_pending())
    }

    /// A STOMP frame as a text message (frames are UTF-8: their headers
    /// are text and Herald's bodies JSON or text).
    fn send_frame(&mut self, frame: Vec<u8>) {
        let text = String::from_utf8(frame)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        self.send(text);
    }

    fn send(&mut self, text: String) {
        // Writes into `Duplex`, which never refuses.
        if self.ws.send(Message::text(text)).is_err() {
            self.closing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::{ReadAhead, READ_AHEAD};

    /// A loopback connection: (the client's end, the server's end,
    /// non-blocking).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    fn pattern(from: usize, len: usize) -> Vec<u8> {
        (from..from + len).map(|i| (i % 251) as u8).collect()
    }

    /// Reads 4 KiB at a time, as tungstenite does, until `want` bytes or
    /// the socket has had nothing more for five seconds.
    fn read_4k(ahead: &mut ReadAhead, socket: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut idle = 0;
        while got.len() < want && idle < 5_000 {
            let room = buf.len().min(want - got.len());
            match ahead.read(socket, &mut buf[..room]) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    idle = 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    idle += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn bytes_read_ahead_come_out_in_order_and_unread_ones_stay_with_the_connection() {
        let (mut client, mut server) = pair();
        let total = 3 * READ_AHEAD + 1234;
        let sent = pattern(0, total);
        // What the first read finds: more than it takes.
        let early = READ_AHEAD + 4096;
        client.write_all(&sent[..early]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let writer = {
            let sent = sent.clone();
            std::thread::spawn(move || client.write_all(&sent[early..]).map(|_| client))
        };
        let mut worker_buffer = vec![0u8; READ_AHEAD];
        let mut ahead = ReadAhead::default();

        // A first read that stops in the middle of a buffered read.
        ahead.lend(&mut worker_buffer);
        assert!(worker_buffer.is_empty(), "the buffer is lent");
        let first = read_4k(&mut ahead, &mut server, READ_AHEAD + 100);
        assert_eq!(first, sent[..READ_AHEAD + 100]);
        ahead.give_back(&mut worker_buffer);
        assert_eq!(worker_buffer.len(), READ_AHEAD, "the buffer is back, whole");
        let unread = ahead.end - ahead.start;
        assert!(unread > 0, "the last recv read ahead of the reader");
        assert_eq!(
            ahead.bytes.len(),
            unread,
            "the connection keeps only what is unread"
        );

        // The unread bytes come first, even with the buffer lent again;
        // then the socket, straight into the reader's buffer.
        ahead.lend(&mut worker_buffer);
        assert_eq!(
            worker_buffer.len(),
            READ_AHEAD,
            "not lent over unread bytes"
        );
        let second = read_4k(&mut ahead, &mut server, unread + 10_000);
        assert_eq!(second, sent[first.len()..first.len() + unread + 10_000]);
        assert!(
            ahead.bytes.is_empty(),
            "the connection's own buffer is freed"
        );
        ahead.give_back(&mut worker_buffer);

        // Then the socket, through the buffer again.
        ahead.lend(&mut worker_buffer);
        let done = first.len() + second.len();
        let rest = read_4k(&mut ahead, &mut server, total - done);
        ahead.give_back(&mut worker_buffer);
        assert_eq!(rest, sent[done..]);
        assert_eq!(worker_buffer.len(), READ_AHEAD);
        assert!(ahead.bytes.is_empty(), "nothing unread, nothing kept");

        // The peer's end still reads as the end.
        let client = writer.join().unwrap().unwrap();
        drop(client);
        let mut buf = [0u8; 16];
        ahead.lend(&mut worker_buffer);
        let mut eof = None;
        for _ in 0..500 {
            match ahead.read(&mut server, &mut buf) {
                Ok(n) => {
                    eof = Some(n);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(eof, Some(0));
    }
}
