//! Browser origins: which web pages may use the server, and the CORS
//! headers that let them.
//!
//! A request without an `Origin` header is not from a page (curl, the CLI,
//! backend clients) and passes. A page on the server's own origin passes.
//! A page on another origin passes only if configured (`allowed_origins`);
//! otherwise it gets 403. This matters most for anonymous access on
//! loopback: without it, any website the local user visits could publish
//! to the server with a form post or read it over a WebSocket (browsers
//! apply no CORS to WebSocket upgrades).

/// What to do with a request, by its `Origin`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict<'a> {
    /// Not from a page, or from the server's own origin: no CORS headers.
    Pass,
    /// From an allowed cross-origin page: answer with CORS headers for it.
    Cors(&'a str),
    /// From a page that is not allowed.
    Refuse,
}

/// The configured origins (`*`: any).
#[derive(Debug, Default)]
pub(crate) struct Origins {
    allowed: Vec<String>,
}

impl Origins {
    pub(crate) fn new(allowed: &[String]) -> Origins {
        Origins {
            allowed: allowed
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Judges a request by its `Origin` and `Host` headers.
    pub(crate) fn check<'a>(&self, origin: Option<&'a str>, host: Option<&str>) -> Verdict<'a> {
        let Some(origin) = origin else {
            return Verdict::Pass;
        };
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if let (Some(authority), Some(host)) = (authority, host) {
            if authority.eq_ignore_ascii_case(host) {
                return Verdict::Pass;
            }
        }
        let allowed = self
            .allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin));
        if allowed {
            Verdict::Cors(origin)
        } else {
            Verdict::Refuse
        }
    }
}

/// Inserts CORS headers for `origin` into a complete response head.
pub(crate) fn add_cors_headers(response: &mut Vec<u8>, origin: &str) {
    let at = response
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(response.len(), |p| p + 2);
    let headers = format!(
        "Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\nAccess-Control-Expose-Headers: Content-Type\r\n"
    );
    response.splice(at..at, headers.into_bytes());
}

/// The answer to a CORS preflight (`OPTIONS`) from an allowed origin.
pub(crate) fn preflight_response(origin: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: {origin}\r\nVary: Origin\r\nAccess-Control-Allow-Methods: GET, POST, OPTIONS\r\nAccess-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID\r\nAccess-Control-Max-Age: 600\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_pass_only_from_their_own_or_allowed_origins() {
        let none = Origins::new(&[]);
        assert_eq!(none.check(None, Some("127.0.0.1:7070")), Verdict::Pass);
        assert_eq!(
            none.check(Some("http://127.0.0.1:7070"), Some("127.0.0.1:7070")),
            Verdict::Pass
        );
        assert_eq!(
            none.check(Some("http://evil.example"), Some("127.0.0.1:7070")),
            Verdict::Refuse
        );
        // A different port is a different origin.
        assert_eq!(
            none.check(Some("http://127.0.0.1:8080"), Some("127.0.0.1:7070")),
            Verdict::Refuse
        );
        assert_eq!(none.check(Some("null"), Some("x")), Verdict::Refuse);
        let some = Origins::new(&["https://App.example/".into()]);
        assert_eq!(
            some.check(Some("https://app.example"), Some("herald:7070")),
            Verdict::Cors("https://app.example")
        );
        assert_eq!(
            some.check(Some("https://other.example"), Some("herald:7070")),
            Verdict::Refuse
        );
        let any = Origins::new(&["*".into()]);
        assert_eq!(
            any.check(Some("https://other.example"), Some("herald:7070")),
            Verdict::Cors("https://other.example")
        );
    }

    #[test]
    fn cors_headers_go_right_after_the_status_line() {
        let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        add_cors_headers(&mut r, "https://a.example");
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with(
            "HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n"
        ));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }
}
