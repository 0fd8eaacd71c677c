//! HTTP/1.1 request parsing (httparse) and response writing, with limits.

use std::fmt::Write as _;

use bytes::BytesMut;

/// Most headers a request may carry.
pub(crate) const MAX_HEADERS: usize = 64;

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_head: usize,
    pub(crate) max_body: usize,
}

/// A parsed request. Header names are lower-cased.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) keep_alive: bool,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `name`, percent-decoded.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// Why a request could not be parsed: each maps to a status code.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// 400
    Malformed(&'static str),
    /// 431
    HeadTooLarge,
    /// 413
    BodyTooLarge,
    /// 501
    Unsupported(&'static str),
}

impl ParseError {
    /// The answer; the connection closes after it.
    pub(crate) fn response(&self) -> Response {
        let (status, reason, message) = match self {
            ParseError::Malformed(why) => (400, "Bad Request", *why),
            ParseError::HeadTooLarge => (
                431,
                "Request Header Fields Too Large",
                "request head too large",
            ),
            ParseError::BodyTooLarge => (413, "Payload Too Large", "request body too large"),
            ParseError::Unsupported(why) => (501, "Not Implemented", *why),
        };
        let code = if status == 413 {
            "too_large"
        } else {
            "invalid"
        };
        Response::error(status, reason, code, message).closing()
    }
}

/// Parses one request from the front of `buf`. `Ok(None)`: need more bytes.
/// On success returns the request and how many bytes it used.
pub(crate) fn parse(buf: &[u8], limits: Limits) -> Result<Option<(Request, usize)>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_head {
                Err(ParseError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::HeadTooLarge),
        Err(_) => return Err(ParseError::Malformed("malformed request head")),
    };
    if head_len > limits.max_head {
        return Err(ParseError::HeadTooLarge);
    }
    let method = req.method.unwrap_or("").to_owned();
    let target = req.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let version = req.version.unwrap_or(1);
    let mut headers_out = Vec::with_capacity(req.headers.len());
    let mut content_length: Option<usize> = None;
    let mut keep_alive = version == 1;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| ParseError::Malformed("header value is not UTF-8"))?;
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                // RFC 9112 §6.3: `1*DIGIT`, and a second, differing value is
                // a 400 that closes the connection. Taking either value
                // would let a proxy that takes the other one smuggle a
                // request past it.
                let n = parse_content_length(value)?;
                if content_length.is_some_and(|first| first != n) {
                    return Err(ParseError::Malformed("conflicting Content-Length headers"));
                }
                content_length = Some(n);
            }
            "transfer-encoding" => {
                return Err(ParseError::Unsupported(
                    "chunked request bodies are not supported",
                ))
            }
            "connection" if value.eq_ignore_ascii_case("close") => keep_alive = false,
            "connection" if value.eq_ignore_ascii_case("keep-alive") => keep_alive = true,
            _ => {}
        }
        headers_out.push((name, value.to_owned()));
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > limits.max_body {
        return Err(ParseError::BodyTooLarge);
    }
    if buf.len() < head_len + content_length {
        return Ok(None);
    }
    let body = buf[head_len..head_len + content_length].to_vec();
    let request = Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers: headers_out,
        body,
        keep_alive,
    };
    Ok(Some((request, head_len + content_length)))
}

/// A `Content-Length` value: `1*DIGIT` (RFC 9110), nothing else: no sign,
/// no list, no whitespace but the optional space and tab around it.
fn parse_content_length(value: &str) -> Result<usize, ParseError> {
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Malformed("bad Content-Length"));
    }
    // Only an overflow is left to fail, and it is over any body limit.
    value.parse().map_err(|_| ParseError::BodyTooLarge)
}

/// An HTTP response, a value until the worker writes it. `body: None`
/// is a head for what follows on the connection (an event stream, a
/// protocol switch): no `Content-Length`.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Vec<u8>>,
    /// The connection closes after this answer, whatever the request asked.
    pub(crate) close: bool,
}

impl Response {
    /// A complete response with a body.
    pub(crate) fn new(
        status: u16,
        reason: &'static str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Self {
        Response {
            status,
            reason,
            headers: vec![("Content-Type", content_type.to_owned())],
            body: Some(body),
            close: false,
        }
    }

    /// A JSON body.
    pub(crate) fn json(value: &impl serde::Serialize) -> Response {
        // Serializing the server's own plain types cannot fail.
        let body = serde_json::to_vec(value).unwrap_or_default();
        Response::new(200, "OK", "application/json", body)
    }

    /// A head for what follows (no body, no `Content-Length`).
    pub(crate) fn head(status: u16, reason: &'static str) -> Response {
        Response {
            status,
            reason,
            headers: Vec::new(),
            body: None,
            close: false,
        }
    }

    /// An error: `{"error": message, "code": kind}`.
    pub(crate) fn error(status: u16, reason: &'static str, code: &str, message: &str) -> Response {
        #[derive(serde::Serialize)]
        struct ErrorBody<'a> {
            error: &'a str,
            code: &'a str,
        }
        let body = serde_json::to_vec(&ErrorBody {
            error: message,
            code,
        })
        .unwrap_or_default();
        Response::new(status, reason, "application/json", body)
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Closes the connection after it.
    pub(crate) fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Serialises the response into `out`. `keep_alive`: the connection
    /// stays open after it (`Connection: keep-alive` rather than `close`),
    /// unless a header of its own says otherwise.
    pub(crate) fn write(&self, keep_alive: bool, out: &mut BytesMut) {
        // (Formatting into a BytesMut cannot fail.)
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, self.reason);
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if let Some(body) = &self.body {
            let _ = write!(out, "Content-Length: {}\r\n", body.len());
        }
        if !self.headers.iter().any(|(n, _)| *n == "Connection") {
            let connection = if keep_alive { "keep-alive" } else { "close" };
            let _ = write!(out, "Connection: {connection}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if let Some(body) = &self.body {
            out.extend_from_slice(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head: 1024,
        max_body: 16,
    };

    #[test]
    fn parses_a_request_with_a_body_and_query() {
        let raw = b"POST /v1/topics/a/events?x=1&y=a%20b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}rest";
        let (req, used) = parse(raw, LIMITS).unwrap().unwrap();
        assert_eq!(used, raw.len() - 4);
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/v1/topics/a/events")
        );
        assert_eq!(req.query_param("y").as_deref(), Some("a b"));
        assert_eq!(req.body, b"{}");
        assert!(req.keep_alive);
    }

    #[test]
    fn partial_requests_wait_and_limits_are_enforced() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost", LIMITS)
                .unwrap()
                .map(|_| ()),
            None
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", LIMITS)
                .unwrap()
                .map(|_| ()),
            None
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n", LIMITS).unwrap_err(),
            ParseError::BodyTooLarge
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(
            parse(long.as_bytes(), LIMITS).unwrap_err(),
            ParseError::HeadTooLarge
        );
        assert!(matches!(
            parse(b"\x00\x01garbage\r\n\r\n", LIMITS),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", LIMITS),
            Err(ParseError::Malformed(_))
        ));
    }

    /// Caught by the `http_head` fuzz target: a signed length and conflicting
    /// lengths were accepted (the last one won).
    #[test]
    fn content_length_is_digits_and_agrees_with_itself() {
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\nab"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 0\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: 2\u{85}\r\n\r\nab".as_bytes(),
        ] {
            assert!(
                matches!(parse(bad, LIMITS), Err(ParseError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let same = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length:  2\r\n\r\nab";
        assert_eq!(parse(same, LIMITS).unwrap().unwrap().0.body, b"ab");
    }

    #[test]
    fn content_length_is_digits_and_one_value() {
        let req = |cl: &str| format!("POST / HTTP/1.1\r\n{cl}\r\n\r\n{{}}");
        for bad in [
            "Content-Length: +2",
            "Content-Length: -2",
            "Content-Length: 2, 2",
            "Content-Length: 0x2",
            "Content-Length: 2 2",
            "Content-Length: 2\r\nContent-Length: 0",
            "Content-Length: 0\r\nContent-Length: 2",
        ] {
            assert!(
                matches!(
                    parse(req(bad).as_bytes(), LIMITS),
                    Err(ParseError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // The same value twice is one value.
        let raw = req("Content-Length: 2\r\nContent-Length: 2");
        let (request, used) = parse(raw.as_bytes(), LIMITS).unwrap().unwrap();
        assert_eq!((request.body.as_slice(), used), (&b"{}"[..], raw.len()));
        assert_eq!(
            parse(
                req("Content-Length: 99999999999999999999999").as_bytes(),
                LIMITS
            )
            .unwrap_err(),
            ParseError::BodyTooLarge
        );
    }

    #[test]
    fn percent_decoding_survives_bad_escapes() {
        let raw = b"GET /?a=a%2Fb%zz%&b=x+y HTTP/1.1\r\n\r\n";
        let (req, _) = parse(raw, LIMITS).unwrap().unwrap();
        assert_eq!(req.query_param("a").as_deref(), Some("a/b%zz%"));
        assert_eq!(req.query_param("b").as_deref(), Some("x y"));
    }

    #[test]
    fn a_response_decides_its_connection_header_once() {
        let mut out = BytesMut::new();
        Response::json(&serde_json::json!({"a": 1})).write(true, &mut out);
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\nConnection: keep-alive\r\n\r\n{\"a\":1}"
        );
        let mut out = BytesMut::new();
        Response::head(101, "Switching Protocols")
            .with_header("Connection", "Upgrade")
            .write(false, &mut out);
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n"
        );
    }
}
