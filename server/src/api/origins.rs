//! Browser origins: which web pages may use the server, and the CORS
//! headers that let them.
//!
//! A request without an `Origin` header is not from a page (curl, the CLI,
//! backend clients) and passes. A page on the server's own origin passes.
//! A page on another origin passes only if configured (`allowed_origins`);
//! otherwise it gets 403. This matters most for anonymous access on
//! loopback: without it, any website the local user visits could publish
//! to the server with a form post or read it over a WebSocket (browsers
//! apply no CORS to WebSocket upgrades). An anonymous server also answers
//! only loopback `Host` names, or a page could rebind its own name to
//! 127.0.0.1 and be "same-origin" (DNS rebinding).

/// What to do with a request, by its `Origin`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict<'a> {
    /// Not from a page, or from the server's own origin: no CORS headers.
    Pass,
    /// From an allowed cross-origin page: answer with CORS headers for it.
    Cors(&'a str),
    /// From a page that is not allowed, or to a name that is not.
    Refuse(&'static str),
}

/// The configured origins (`*`: any).
#[derive(Debug, Default)]
pub(crate) struct Origins {
    allowed: Vec<String>,
    /// Answer only loopback `Host` names (anonymous servers).
    loopback_hosts_only: bool,
}

impl Origins {
    pub(crate) fn new(allowed: &[String], loopback_hosts_only: bool) -> Origins {
        Origins {
            allowed: allowed
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            loopback_hosts_only,
        }
    }

    /// Judges a request by its `Origin` and `Host` headers. `bearer`: it
    /// carries a token, so it is not asking for anonymous access (a
    /// rebinding page has no valid token), and the loopback-`Host` rule,
    /// which guards anonymous access, does not apply (a token client behind
    /// a proxy sends the public name).
    pub(crate) fn check<'a>(
        &self,
        origin: Option<&'a str>,
        host: Option<&str>,
        bearer: bool,
    ) -> Verdict<'a> {
        if self.loopback_hosts_only && !bearer && host.is_some_and(|h| !is_loopback_host(h)) {
            return Verdict::Refuse(
                "an anonymous server answers only loopback Host names (127.0.0.1, [::1], localhost)",
            );
        }
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
            Verdict::Refuse("requests from this web origin are not allowed (see allowed_origins)")
        }
    }
}

/// `127.0.0.1:7070`, `[::1]`, `localhost`, `app.localhost:80`…
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(v: Verdict<'_>) -> bool {
        matches!(v, Verdict::Refuse(_))
    }

    #[test]
    fn pages_pass_only_from_their_own_or_allowed_origins() {
        let none = Origins::new(&[], false);
        assert_eq!(
            none.check(None, Some("127.0.0.1:7070"), false),
            Verdict::Pass
        );
        assert_eq!(
            none.check(Some("http://127.0.0.1:7070"), Some("127.0.0.1:7070"), false),
            Verdict::Pass
        );
        assert!(refused(none.check(
            Some("http://evil.example"),
            Some("127.0.0.1:7070"),
            false
        )));
        // A different port is a different origin.
        assert!(refused(none.check(
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:7070"),
            false
        )));
        assert!(refused(none.check(Some("null"), Some("x"), false)));
        let some = Origins::new(&["https://App.example/".into()], false);
        assert_eq!(
            some.check(Some("https://app.example"), Some("herald:7070"), false),
            Verdict::Cors("https://app.example")
        );
        assert!(refused(some.check(
            Some("https://other.example"),
            Some("herald:7070"),
            false
        )));
        let any = Origins::new(&["*".into()], false);
        assert_eq!(
            any.check(Some("https://other.example"), Some("herald:7070"), false),
            Verdict::Cors("https://other.example")
        );
    }

    #[test]
    fn an_anonymous_server_answers_only_loopback_host_names() {
        let local = Origins::new(&[], true);
        for host in [
            "127.0.0.1:7070",
            "127.9.9.9",
            "[::1]:7070",
            "localhost:1",
            "a.localhost",
        ] {
            assert_eq!(
                local.check(None, Some(host), false),
                Verdict::Pass,
                "{host}"
            );
        }
        // A rebound name is "same-origin" for the page, but not loopback.
        for host in [
            "evil.example:7070",
            "10.0.0.1:7070",
            "localhost.evil.example",
        ] {
            assert!(refused(local.check(None, Some(host), false)), "{host}");
            assert!(
                refused(local.check(Some(&format!("http://{host}")), Some(host), false)),
                "{host}"
            );
            // A request with a token asks for no anonymous access: it is
            // judged by its token (a rebinding page has none that is valid).
            assert_eq!(local.check(None, Some(host), true), Verdict::Pass, "{host}");
        }
    }
}
