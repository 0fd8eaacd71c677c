//! STOMP 1.2 frames (1.1 and 1.0 read the same way), as they travel over a
//! WebSocket: parsing with bounds, and encoding.
//!
//! ```text
//! frame   = command EOL *(header EOL) EOL *OCTET NUL *(EOL)
//! EOL     = [CR] LF
//! header  = name ":" value        (escapes \r \n \c \\ except in CONNECT/CONNECTED)
//! ```
//! A lone EOL between frames is a heart-beat. A repeated header keeps its
//! first value. With `content-length`, the body is exactly that many octets
//! (NULs included) followed by a NUL; without it, the body ends at the
//! first NUL. The WebSocket messages of a connection are read as one byte
//! stream, so a frame may span messages or a message hold several frames.

use std::borrow::Cow;

/// Most headers a frame may carry.
pub(crate) const MAX_HEADERS: usize = 64;
/// Longest header line (name, colon and value, escaped), in bytes.
pub(crate) const MAX_HEADER_LINE: usize = 4096;
/// Longest command line (the longest command is `UNSUBSCRIBE`, `DISCONNECT`).
const MAX_COMMAND_LINE: usize = 16;

/// Bounds on what a client may send in one frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most body octets.
    pub(crate) max_body: usize,
}

impl Limits {
    /// The most bytes a whole frame may take: what a connection buffers
    /// before it refuses.
    pub(crate) fn max_frame(&self) -> usize {
        MAX_COMMAND_LINE + 1 + MAX_HEADERS * (MAX_HEADER_LINE + 1) + 1 + self.max_body + 1
    }
}

/// The client frames of STOMP 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
}

impl Command {
    fn parse(line: &[u8]) -> Option<Command> {
        Some(match line {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            _ => return None,
        })
    }

    /// The command as it is spelled on the wire.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
        }
    }

    /// Only frames that may carry a body (the spec's SEND, MESSAGE, ERROR;
    /// of the client's, SEND).
    fn may_have_body(self) -> bool {
        self == Command::Send
    }

    /// CONNECT and STOMP headers are not escaped (1.0 compatibility).
    fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp)
    }
}

/// One client frame, borrowing the connection's input where it can.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub(crate) command: Command,
    /// In order of appearance, repeats removed (the first value is kept).
    pub(crate) headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub(crate) body: &'a [u8],
}

impl Frame<'_> {
    /// The value of header `name` (its first occurrence).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// What the front of the input holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// A whole frame and the bytes it took (its trailing EOLs included).
    Frame(Frame<'a>, usize),
    /// A heart-beat (a lone EOL) of this many bytes.
    HeartBeat(usize),
    /// Not a whole frame yet, and parsing again cannot progress until this
    /// arrives: re-parsing only then keeps the cost of a frame sent a byte
    /// at a time linear in its size.
    Incomplete(Until),
}

/// What an incomplete frame waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Any byte.
    More,
    /// A line feed (the end of the command or of a header line).
    LineFeed,
    /// A NUL (the end of a body without `content-length`).
    Nul,
    /// The input to be this long in all (a `content-length` body and its NUL).
    Length(usize),
}

impl Until {
    /// Whether `added`, appended to an input now `len` bytes long, may let
    /// the frame progress.
    pub(crate) fn reached(self, added: &[u8], len: usize) -> bool {
        match self {
            Until::More => !added.is_empty(),
            Until::LineFeed => memchr::memchr(b'\n', added).is_some(),
            Until::Nul => memchr::memchr(0, added).is_some(),
            Until::Length(n) => len >= n,
        }
    }
}

/// Why a frame was refused. The connection gets an ERROR frame naming it
/// and is closed (STOMP has no way to resynchronise after a bad frame).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    UnknownCommand(String),
    Malformed(&'static str),
    TooLarge(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::UnknownCommand(c) => write!(f, "unknown command {c:?}"),
            FrameError::Malformed(why) => write!(f, "malformed frame: {why}"),
            FrameError::TooLarge(what) => write!(f, "frame too large: {what}"),
        }
    }
}

/// The index of the next LF at or after `from`, within `limit` bytes.
fn line_end(buf: &[u8], from: usize, limit: usize) -> Result<Option<usize>, ()> {
    let window = &buf[from..buf.len().min(from + limit + 1)];
    match memchr::memchr(b'\n', window) {
        Some(i) => Ok(Some(from + i)),
        None if window.len() > limit => Err(()),
        None => Ok(None),
    }
}

/// The line `buf[start..lf]` without a trailing CR.
fn line(buf: &[u8], start: usize, lf: usize) -> &[u8] {
    let l = &buf[start..lf];
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// Parses the front of `buf`.
pub(crate) fn parse(buf: &[u8], limits: Limits) -> Result<Parsed<'_>, FrameError> {
    match buf {
        [] => return Ok(Parsed::Incomplete(Until::More)),
        [b'\n', ..] => return Ok(Parsed::HeartBeat(1)),
        [b'\r', b'\n', ..] => return Ok(Parsed::HeartBeat(2)),
        [b'\r'] => return Ok(Parsed::Incomplete(Until::More)),
        _ => {}
    }
    let Some(lf) = line_end(buf, 0, MAX_COMMAND_LINE)
        .map_err(|()| FrameError::UnknownCommand(lossy_prefix(buf, MAX_COMMAND_LINE)))?
    else {
        return Ok(Parsed::Incomplete(Until::LineFeed));
    };
    let command_line = line(buf, 0, lf);
    let command = Command::parse(command_line)
        .ok_or_else(|| FrameError::UnknownCommand(lossy_prefix(command_line, MAX_COMMAND_LINE)))?;

    let mut headers: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    let mut at = lf + 1;
    let mut lines = 0usize;
    loop {
        let Some(lf) = line_end(buf, at, MAX_HEADER_LINE)
            .map_err(|()| FrameError::TooLarge("a header line is longer than 4096 bytes"))?
        else {
            return Ok(Parsed::Incomplete(Until::LineFeed));
        };
        let l = line(buf, at, lf);
        at = lf + 1;
        if l.is_empty() {
            break;
        }
        lines += 1;
        if lines > MAX_HEADERS {
            return Err(FrameError::TooLarge("more than 64 headers"));
        }
        let colon = memchr::memchr(b':', l).ok_or(FrameError::Malformed("a header without ':'"))?;
        let (name, value) = (&l[..colon], &l[colon + 1..]);
        let name = header_text(name, command.escapes_headers())?;
        let value = header_text(value, command.escapes_headers())?;
        if !headers.iter().any(|(n, _)| *n == name) {
            headers.push((name, value));
        }
    }

    let length = match headers.iter().find(|(n, _)| n == "content-length") {
        Some((_, v)) => Some(content_length(v)?),
        None => None,
    };
    if let Some(n) = length {
        if n > limits.max_body {
            return Err(FrameError::TooLarge(
                "the body is over the server's maximum payload",
            ));
        }
    }
    let (body, nul) = match length {
        Some(n) => {
            if buf.len() < at + n + 1 {
                return Ok(Parsed::Incomplete(Until::Length(at + n + 1)));
            }
            if buf[at + n] != 0 {
                return Err(FrameError::Malformed("no NUL after content-length octets"));
            }
            (&buf[at..at + n], at + n)
        }
        None => {
            let window = &buf[at..buf.len().min(at + limits.max_body + 1)];
            match memchr::memchr(0, window) {
                Some(i) => (&buf[at..at + i], at + i),
                None if window.len() > limits.max_body => {
                    return Err(FrameError::TooLarge(
                        "the body is over the server's maximum payload",
                    ))
                }
                None => return Ok(Parsed::Incomplete(Until::Nul)),
            }
        }
    };
    if !body.is_empty() && !command.may_have_body() {
        return Err(FrameError::Malformed("only SEND frames may have a body"));
    }
    // Trailing EOLs after the NUL belong to this frame.
    let mut end = nul + 1;
    loop {
        match &buf[end..] {
            [b'\n', ..] => end += 1,
            [b'\r', b'\n', ..] => end += 2,
            _ => break,
        }
    }
    Ok(Parsed::Frame(
        Frame {
            command,
            headers,
            body,
        },
        end,
    ))
}

fn lossy_prefix(b: &[u8], n: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(n)]).into_owned()
}

fn content_length(v: &str) -> Result<usize, FrameError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FrameError::Malformed("content-length is not a number"));
    }
    v.parse()
        .map_err(|_| FrameError::TooLarge("the body is over the server's maximum payload"))
}

/// A header name or value as text, unescaped if the frame escapes.
fn header_text(raw: &[u8], escaped: bool) -> Result<Cow<'_, str>, FrameError> {
    let text =
        std::str::from_utf8(raw).map_err(|_| FrameError::Malformed("a header is not UTF-8"))?;
    if !escaped || !text.contains('\\') {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('r') => '\r',
            Some('n') => '\n',
            Some('c') => ':',
            Some('\\') => '\\',
            // The spec makes an undefined escape a fatal protocol error.
            _ => return Err(FrameError::Malformed("an undefined escape in a header")),
        });
    }
    Ok(Cow::Owned(out))
}

/// `s` escaped as a header name or value of a server frame other than
/// CONNECTED (borrowed when there is nothing to escape, the usual case).
pub(crate) fn escaped(s: &str) -> Cow<'_, str> {
    if !s.contains(['\r', '\n', ':', '\\']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            ':' => out.push_str("\\c"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A server frame: `command`, the headers (escaped unless `CONNECTED`), a
/// `content-length` when there is a body, the body, the NUL.
pub(crate) fn encode(command: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + body.len());
    out.extend_from_slice(command.as_bytes());
    out.push(b'\n');
    let escape = command != "CONNECTED";
    for (name, value) in headers {
        let (name, value) = if escape {
            (escaped(name), escaped(value))
        } else {
            (Cow::Borrowed(*name), Cow::Borrowed(*value))
        };
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    if !body.is_empty() {
        out.extend_from_slice(b"content-length:");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_body: 1024 };

    fn frame(buf: &[u8]) -> (Frame<'_>, usize) {
        match parse(buf, LIMITS) {
            Ok(Parsed::Frame(f, n)) => (f, n),
            other => panic!("not a frame: {other:?}"),
        }
    }

    #[test]
    fn the_specs_connect_and_send_examples() {
        let buf = b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\0";
        let (f, n) = frame(buf);
        assert_eq!(f.command, Command::Connect);
        assert_eq!(f.header("accept-version"), Some("1.2"));
        assert_eq!(f.header("host"), Some("stomp.github.org"));
        assert_eq!(n, buf.len());
        let (f, _) =
            frame(b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\0");
        assert_eq!(f.command, Command::Send);
        assert_eq!(f.header("destination"), Some("/queue/a"));
        assert_eq!(f.body, b"hello queue a");
    }

    #[test]
    fn crlf_line_ends_and_trailing_eols_belong_to_the_frame() {
        let buf = b"SUBSCRIBE\r\nid:0\r\ndestination:/topic/a\r\n\r\n\0\r\n\nNEXT";
        let (f, n) = frame(buf);
        assert_eq!(f.header("id"), Some("0"));
        assert_eq!(f.header("destination"), Some("/topic/a"));
        assert_eq!(&buf[n..], b"NEXT");
    }

    #[test]
    fn heart_beats_are_lone_eols() {
        assert_eq!(parse(b"\n", LIMITS), Ok(Parsed::HeartBeat(1)));
        assert_eq!(parse(b"\r\nSEND", LIMITS), Ok(Parsed::HeartBeat(2)));
        assert_eq!(parse(b"\r", LIMITS), Ok(Parsed::Incomplete(Until::More)));
    }

    #[test]
    fn repeated_headers_keep_the_first_value() {
        let (f, _) = frame(b"SEND\ndestination:/topic/a\nfoo:World\nfoo:Hello\n\n\0");
        assert_eq!(f.header("foo"), Some("World"));
        assert_eq!(f.headers.len(), 2);
    }

    #[test]
    fn header_escapes_are_decoded_except_in_connect() {
        let (f, _) = frame(b"SEND\ndestination:/topic/a\nk\\cey:a\\nb\\rc\\\\d\\ce\n\n\0");
        assert_eq!(f.header("k:ey"), Some("a\nb\rc\\d:e"));
        let (f, _) = frame(b"CONNECT\nlogin:a\\cb\n\n\0");
        assert_eq!(f.header("login"), Some("a\\cb"));
        assert_eq!(
            parse(b"SEND\ndestination:/topic/a\nx:\\t\n\n\0", LIMITS),
            Err(FrameError::Malformed("an undefined escape in a header"))
        );
        assert_eq!(
            parse(b"SEND\ndestination:/topic/a\nx:a\\\n\n\0", LIMITS),
            Err(FrameError::Malformed("an undefined escape in a header"))
        );
    }

    #[test]
    fn content_length_bodies_may_hold_nuls() {
        let buf = b"SEND\ndestination:/topic/a\ncontent-length:5\n\na\0b\0c\0";
        let (f, n) = frame(buf);
        assert_eq!(f.body, b"a\0b\0c");
        assert_eq!(n, buf.len());
        assert_eq!(
            parse(b"SEND\ncontent-length:2\n\nabc\0", LIMITS),
            Err(FrameError::Malformed("no NUL after content-length octets"))
        );
        for bad in [
            &b"SEND\ncontent-length:-1\n\n\0"[..],
            b"SEND\ncontent-length:+1\n\na\0",
            b"SEND\ncontent-length:\n\n\0",
        ] {
            assert_eq!(
                parse(bad, LIMITS),
                Err(FrameError::Malformed("content-length is not a number")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        // Each cut says what it waits for, and that is what the rest brings
        // first: re-parsing on nothing else never misses the frame.
        for buf in [
            &b"SEND\r\ndestination:/topic/a\r\ncontent-length:3\r\n\r\na\0b\0\r\n"[..],
            b"SEND\ndestination:/topic/a\n\nabc\0",
        ] {
            let whole = buf.iter().rposition(|&b| b == 0).unwrap() + 1;
            for cut in 0..whole {
                let Ok(Parsed::Incomplete(until)) = parse(&buf[..cut], LIMITS) else {
                    panic!("cut at {cut}: not incomplete");
                };
                let next = (cut + 1..=whole)
                    .find(|&end| until.reached(&buf[cut..end], end))
                    .expect("what it waits for arrives");
                for end in cut + 1..next {
                    assert!(
                        matches!(parse(&buf[..end], LIMITS), Ok(Parsed::Incomplete(_))),
                        "cut at {cut}: whole before {until:?} arrived, at {end}"
                    );
                }
            }
            assert!(matches!(
                parse(&buf[..whole], LIMITS),
                Ok(Parsed::Frame(..))
            ));
        }
    }

    #[test]
    fn bounds_are_enforced_before_the_bytes_arrive() {
        let long = format!("SEND\nx:{}\n", "y".repeat(MAX_HEADER_LINE));
        assert_eq!(
            parse(long.as_bytes(), LIMITS),
            Err(FrameError::TooLarge(
                "a header line is longer than 4096 bytes"
            ))
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}:v\n")).collect();
        assert_eq!(
            parse(format!("SEND\n{many}\n\0").as_bytes(), LIMITS),
            Err(FrameError::TooLarge("more than 64 headers"))
        );
        let body = vec![b'a'; 1025];
        let mut open = b"SEND\ndestination:/topic/a\n\n".to_vec();
        open.extend_from_slice(&body);
        assert!(matches!(parse(&open, LIMITS), Err(FrameError::TooLarge(_))));
        assert!(matches!(
            parse(b"SEND\ncontent-length:1025\n\n", LIMITS),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            parse(b"SENDSENDSENDSENDSEND", LIMITS),
            Err(FrameError::UnknownCommand(_))
        ));
    }

    #[test]
    fn bad_frames_are_refused() {
        assert!(
            matches!(parse(b"MESSAGE\n\n\0", LIMITS), Err(FrameError::UnknownCommand(c)) if c == "MESSAGE")
        );
        assert!(matches!(
            parse(b"send\n\n\0", LIMITS),
            Err(FrameError::UnknownCommand(_))
        ));
        assert_eq!(
            parse(b"SEND\nnocolon\n\n\0", LIMITS),
            Err(FrameError::Malformed("a header without ':'"))
        );
        assert_eq!(
            parse(b"SUBSCRIBE\nid:1\n\nbody\0", LIMITS),
            Err(FrameError::Malformed("only SEND frames may have a body"))
        );
        assert_eq!(
            parse(b"SEND\nx:\xff\n\n\0", LIMITS),
            Err(FrameError::Malformed("a header is not UTF-8"))
        );
    }

    #[test]
    fn encoded_frames_parse_back() {
        let out = encode("RECEIPT", &[("receipt-id", "a:b\nc\\d")], b"");
        assert_eq!(out, b"RECEIPT\nreceipt-id:a\\cb\\nc\\\\d\n\n\0");
        let out = encode(
            "CONNECTED",
            &[("version", "1.2"), ("heart-beat", "0,0")],
            b"",
        );
        assert_eq!(out, b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0");
        let out = encode("ERROR", &[("message", "bad")], b"a\0b");
        assert_eq!(out, b"ERROR\nmessage:bad\ncontent-length:3\n\na\0b\0");
        // A client frame encoded the same way reads back to the same headers.
        let mut send = encode(
            "SEND",
            &[("destination", "/topic/x"), ("k:1", "v\n2")],
            b"{}",
        );
        send.extend_from_slice(b"\n");
        let (f, n) = frame(&send);
        assert_eq!(n, send.len());
        assert_eq!(f.header("k:1"), Some("v\n2"));
        assert_eq!(f.header("content-length"), Some("2"));
        assert_eq!(f.body, b"{}");
    }
}
