//! HTTP/1.1 request parsing (httparse) and response writing, with limits.

use std::fmt::Write as _;

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
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
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
    pub(crate) fn response(&self) -> Vec<u8> {
        match self {
            ParseError::Malformed(why) => error_response(400, "Bad Request", why, false),
            ParseError::HeadTooLarge => error_response(
                431,
                "Request Header Fields Too Large",
                "request head too large",
                false,
            ),
            ParseError::BodyTooLarge => {
                error_response(413, "Payload Too Large", "request body too large", false)
            }
            ParseError::Unsupported(why) => error_response(501, "Not Implemented", why, false),
        }
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
    let mut content_length = 0usize;
    let mut keep_alive = version == 1;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| ParseError::Malformed("header value is not UTF-8"))?;
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                content_length = value
                    .trim()
                    .parse()
                    .map_err(|_| ParseError::Malformed("bad Content-Length"))?;
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

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A complete response with a body.
pub(crate) fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut head = String::with_capacity(128);
    let _ = write!(
        head,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON error body: `{"error": "..."}`.
pub(crate) fn error_response(
    status: u16,
    reason: &str,
    message: &str,
    keep_alive: bool,
) -> Vec<u8> {
    let body = serde_json::json!({ "error": message }).to_string();
    response(
        status,
        reason,
        "application/json",
        body.as_bytes(),
        keep_alive,
    )
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

    #[test]
    fn percent_decoding_survives_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
    }
}
