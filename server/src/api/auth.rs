//! Authentication (JWT, HS256 or RS256) and tenant-scoped authorisation.
//!
//! A token's claims name its subject, expiry, tenant, and the topic patterns
//! it may publish to and subscribe to, relative to the tenant:
//!
//! ```json
//! {"sub": "device-7", "exp": 1893456000, "tenant": "acme",
//!  "publish": ["orders.*"], "subscribe": ["orders.>", "presence.>"]}
//! ```
//!
//! Every topic lives in its tenant's namespace: the client says `orders.42`,
//! the broker stores `acme.orders.42`, and the client sees `orders.42` again
//! in what it receives. A client's names are always prefixed with its own
//! tenant, so no name it can write reaches another tenant's topics: isolation
//! holds by construction, whatever the grants say.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_core::broker::{split_system, TopicPattern, DEADLETTER_PREFIX};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::rate::Client as RateClient;
use super::tickets::Tickets;
use crate::wire::http::Request;

/// Keys the server accepts tokens signed with.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Shared secret for HS256 tokens.
    pub hs256_secret: Option<Vec<u8>>,
    /// PEM public key for RS256 tokens.
    pub rs256_public_pem: Option<Vec<u8>>,
}

/// A token's claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Subject (user or device).
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Tenant: one token of `[A-Za-z0-9_-]`.
    pub tenant: String,
    /// Patterns (relative to the tenant) the bearer may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Patterns (relative to the tenant) the bearer may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// Signs claims with an HS256 secret (for `herald token` and tests).
pub fn mint_hs256(claims: &Claims, secret: &[u8]) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

/// What a request may do.
#[derive(Debug, Clone)]
pub(crate) struct Grants {
    /// `None`: anonymous full access (loopback only, when configured).
    tenant: Option<String>,
    /// The token's tenant and subject, whose rate limits the bearer uses
    /// (`None`: anonymous, limited by address).
    subject: Option<Arc<str>>,
    publish: Vec<TopicPattern>,
    subscribe: Vec<TopicPattern>,
    /// The token's `exp` (`None`: anonymous, no token to expire).
    exp: Option<u64>,
}

impl Grants {
    pub(crate) fn anonymous() -> Grants {
        Grants {
            tenant: None,
            subject: None,
            publish: Vec::new(),
            subscribe: Vec::new(),
            exp: None,
        }
    }

    /// The token's expiry, seconds since the Unix epoch (`None`: anonymous).
    pub(crate) fn exp(&self) -> Option<u64> {
        self.exp
    }

    /// The broker's name for a client's topic or pattern. System topics
    /// (`$presence.<topic>`, `$deadletter.<webhook>`) keep their system
    /// prefix in front.
    pub(crate) fn internal<'n>(&self, name: &'n str) -> Cow<'n, str> {
        internal_name(self.tenant.as_deref(), name)
    }

    /// The client's name for an internal topic or pattern (for messages):
    /// without the tenant prefix, also after a system prefix.
    pub(crate) fn display<'n>(&self, internal: &'n str) -> std::borrow::Cow<'n, str> {
        let Some(t) = &self.tenant else {
            return internal.into();
        };
        let strip = |name: &'n str| name.strip_prefix(t.as_str())?.strip_prefix('.');
        match split_system(internal) {
            ("", name) => strip(name).unwrap_or(internal).into(),
            (system, rest) => {
                strip(rest).map_or(internal.into(), |r| format!("{system}{r}").into())
            }
        }
    }

    /// The tenant, if the grants come from a token.
    pub(crate) fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Whom rate limits count: the token's tenant and subject, or the
    /// client's address when it has no token.
    pub(crate) fn rate_client(&self, peer: IpAddr) -> RateClient {
        match &self.subject {
            Some(s) => RateClient::Subject(s.clone()),
            None => RateClient::Address(peer),
        }
    }

    /// Bytes of tenant prefix on internal names.
    pub(crate) fn prefix_len(&self) -> usize {
        self.tenant.as_ref().map_or(0, |t| t.len() + 1)
    }

    /// The client's name for one of its tenant's internal names (durable
    /// consumers); `None` if the name belongs to another tenant.
    pub(crate) fn external<'n>(&self, internal: &'n str) -> Option<&'n str> {
        match &self.tenant {
            Some(t) => internal.strip_prefix(t.as_str())?.strip_prefix('.'),
            None => Some(internal),
        }
    }

    /// Durable consumers are a subscriber's: using, listing or removing one
    /// needs some subscribe grant (and is confined to the tenant by name).
    pub(crate) fn check_consume(&self) -> Result<(), ApiError> {
        if self.tenant.is_none() || !self.subscribe.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "durable consumers need a token with a subscribe grant".into(),
            ))
        }
    }

    pub(crate) fn check_publish(&self, topic: &str) -> Result<(), ApiError> {
        if self.tenant.is_none() || self.publish.iter().any(|g| g.matches(topic)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the token may not publish to {:?}",
                self.display(topic)
            )))
        }
    }

    /// A subscription pattern is allowed if some grant covers every topic
    /// it can match. A topic's presence events go with the topic. A
    /// webhook's dead letters carry events of any topic it reads: only a
    /// token that may read every topic of its tenant reads them.
    pub(crate) fn check_subscribe(&self, pattern: &str) -> Result<(), ApiError> {
        let (system, rest) = split_system(pattern);
        let underlying: std::borrow::Cow<'_, str> = match &self.tenant {
            Some(t) if system == DEADLETTER_PREFIX => format!("{t}.>").into(),
            _ => rest.into(),
        };
        if self.tenant.is_none()
            || self
                .subscribe
                .iter()
                .any(|g| covers(g.as_str(), &underlying))
        {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the token may not subscribe to {:?}",
                self.display(pattern)
            )))
        }
    }
}

/// The broker's name for a topic or pattern of `tenant`'s clients (see
/// [`Grants::internal`]); `None`: names are the broker's own.
pub(crate) fn internal_name<'n>(tenant: Option<&str>, name: &'n str) -> Cow<'n, str> {
    match (tenant, split_system(name)) {
        (Some(t), ("", _)) => format!("{t}.{name}").into(),
        (Some(t), (system, rest)) => format!("{system}{t}.{rest}").into(),
        (None, _) => name.into(),
    }
}

/// Whether `name` is a valid tenant or webhook name: 1 to 64 letters,
/// digits, `_` or `-`.
pub(crate) fn valid_label(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Does grant pattern `grant` match every topic that `requested` matches?
pub(crate) fn covers(grant: &str, requested: &str) -> bool {
    let g: Vec<&str> = grant.split('.').collect();
    let r: Vec<&str> = requested.split('.').collect();
    for (i, gt) in g.iter().enumerate() {
        match *gt {
            ">" => return r.len() > i,
            "*" => match r.get(i) {
                Some(&">") | None => return false,
                Some(_) => {}
            },
            literal => match r.get(i) {
                Some(rt) if rt == &literal => {}
                _ => return false,
            },
        }
    }
    r.len() == g.len()
}

/// Request headers reverse proxies add: a request carrying one came through
/// a proxy, so its loopback address says nothing about its client. (Best
/// effort: a proxy that adds none of them is not detected.)
const PROXY_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-proto",
    "via",
];

/// The cookie that carries a page's token (`POST /v1/cookie`).
pub(crate) const TOKEN_COOKIE: &str = "herald_token";

/// The refusal of `access_token` when the configuration turns it off.
const QUERY_TOKEN_OFF: &str =
    "access_token in the query is turned off: use a ticket or the herald_token cookie";

/// The `Authorization: Bearer` header's token.
pub(crate) fn header_token(req: &Request) -> Option<&str> {
    req.header("authorization").and_then(|h| {
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
    })
}

/// The `herald_token` cookie's value.
fn cookie_token(req: &Request) -> Option<&str> {
    let prefix = format!("{TOKEN_COOKIE}=");
    (req.headers.iter())
        .filter(|(name, _)| name == "cookie")
        .flat_map(|(_, value)| value.split(';'))
        .find_map(|c| c.trim().strip_prefix(prefix.as_str()))
}

/// A request's bearer token: the `Authorization: Bearer` header, the
/// `access_token` query parameter (for browsers' `EventSource` and
/// `WebSocket`, which cannot set headers), or the `herald_token` cookie.
pub(crate) fn bearer_token(req: &Request) -> Option<String> {
    header_token(req)
        .map(str::to_owned)
        .or_else(|| req.query_param("access_token"))
        .or_else(|| cookie_token(req).map(str::to_owned))
}

/// Whether `req` carries a credential (a token, or a ticket where
/// `tickets_accepted`): it does not ask for anonymous access.
pub(crate) fn presents_credentials(req: &Request, tickets_accepted: bool) -> bool {
    bearer_token(req).is_some() || (tickets_accepted && req.query_param("ticket").is_some())
}

/// Checks tokens.
#[derive(Debug)]
pub(crate) struct Authenticator {
    keys: Vec<(Algorithm, DecodingKey)>,
    anonymous: bool,
    /// `access_token` in the query is accepted (`query_token`).
    query_token: bool,
}

impl Authenticator {
    /// `anonymous`: serve clients without a token; `None` means "only when
    /// no key is configured", so configuring a key turns anonymous access
    /// off unless the configuration asks for both.
    pub(crate) fn new(
        config: &AuthConfig,
        anonymous: Option<bool>,
    ) -> Result<Authenticator, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hs256_secret {
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret)));
        }
        if let Some(pem) = &config.rs256_public_pem {
            let key =
                DecodingKey::from_rsa_pem(pem).map_err(|e| format!("bad RS256 public key: {e}"))?;
            keys.push((Algorithm::RS256, key));
        }
        let anonymous = anonymous.unwrap_or(keys.is_empty());
        if keys.is_empty() && !anonymous {
            return Err(
                "no token key configured and anonymous access is off: nobody could connect".into(),
            );
        }
        Ok(Authenticator {
            keys,
            anonymous,
            query_token: true,
        })
    }

    /// Accepts `access_token` in the query, or refuses every request that
    /// has one (it leaks into logs and browser history).
    pub(crate) fn with_query_token(mut self, on: bool) -> Authenticator {
        self.query_token = on;
        self
    }

    /// Whether clients without a token are served.
    pub(crate) fn anonymous(&self) -> bool {
        self.anonymous
    }

    /// Whether token keys are configured.
    pub(crate) fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The grants of `req`'s bearer token (see [`bearer_token`]).
    /// `tickets`: `req` opens a
    /// stream, where a `ticket` parameter stands for a token (and is used
    /// up).
    pub(crate) fn authenticate(
        &self,
        req: &Request,
        tickets: Option<&Tickets>,
    ) -> Result<Grants, ApiError> {
        if !self.query_token && req.query_param("access_token").is_some() {
            return Err(ApiError::Unauthenticated(QUERY_TOKEN_OFF.into()));
        }
        if let Some((tickets, ticket)) = tickets.zip(req.query_param("ticket")) {
            return tickets.redeem(&ticket, Instant::now());
        }
        let Some(token) = bearer_token(req) else {
            if !self.anonymous {
                return Err(ApiError::Unauthenticated("missing bearer token".into()));
            }
            if let Some(h) = PROXY_HEADERS.iter().find(|h| req.header(h).is_some()) {
                return Err(ApiError::Unauthenticated(format!(
                    "missing bearer token: anonymous access is only for clients on this \
                     machine, and this request came through a proxy ({h})"
                )));
            }
            return Ok(Grants::anonymous());
        };
        self.claims(&token).and_then(grants)
    }

    /// The claims of a token signed with a configured key. The key is the
    /// one of the token's own `alg`, so the error is that key's verdict
    /// (expired, not yet valid, bad signature) rather than another key's.
    pub(crate) fn claims(&self, token: &str) -> Result<Claims, ApiError> {
        let invalid =
            |e: &dyn std::fmt::Display| ApiError::Unauthenticated(format!("invalid token: {e}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(&e))?;
        let Some((algorithm, key)) = self.keys.iter().find(|(a, _)| *a == header.alg) else {
            return Err(invalid(&format_args!(
                "no configured key verifies {:?} tokens",
                header.alg
            )));
        };
        let mut validation = Validation::new(*algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| invalid(&e))
    }
}

pub(crate) fn grants(claims: Claims) -> Result<Grants, ApiError> {
    if !valid_label(&claims.tenant) {
        return Err(ApiError::Unauthenticated(
            "the token's tenant must be 1-64 letters, digits, '_' or '-'".into(),
        ));
    }
    let parse = |list: &[String]| -> Result<Vec<TopicPattern>, ApiError> {
        list.iter()
            .map(|p| {
                TopicPattern::parse(&format!("{}.{p}", claims.tenant))
                    .map_err(|e| ApiError::Unauthenticated(format!("bad grant pattern {p:?}: {e}")))
            })
            .collect()
    };
    Ok(Grants {
        publish: parse(&claims.publish)?,
        subscribe: parse(&claims.subscribe)?,
        subject: Some(format!("{}/{}", claims.tenant, claims.sub).into()),
        tenant: Some(claims.tenant),
        exp: Some(claims.exp),
    })
}

/// How long before its token's `exp` a JSON WebSocket connection is warned.
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(30);

/// A token's `exp` further ahead than this is treated as this far (an
/// `Instant` that far out could overflow).
const FAR_FUTURE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A connection's token lifetime on the worker's clock: a warning due
/// (optional), then the end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expiry {
    /// The token's `exp`, seconds since the Unix epoch.
    pub(crate) exp: u64,
    /// When the warning is due; `None` once given, or if none is wanted.
    warn_at: Option<Instant>,
    at: Instant,
}

/// What a connection's [`Expiry`] asks for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    Warn,
    Expired,
}

impl Expiry {
    /// The lifetime of `grants`' token (`None`: anonymous), warned
    /// [`EXPIRY_WARNING`] ahead (at once if less remains) if `warn`.
    pub(crate) fn of(grants: &Grants, warn: bool) -> Option<Expiry> {
        let exp = grants.exp?;
        let now = Instant::now();
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(exp)
            .saturating_sub(since_epoch)
            .min(FAR_FUTURE);
        let at = now + left;
        let warn_at = warn.then(|| at.checked_sub(EXPIRY_WARNING).map_or(now, |w| w.max(now)));
        Some(Expiry { exp, warn_at, at })
    }

    /// When the token runs out.
    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// When something is due next.
    pub(crate) fn next(&self) -> Instant {
        self.warn_at.unwrap_or(self.at)
    }

    /// Whether the token has run out at `now`.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        now >= self.at
    }

    /// What is due at `now`; the warning is given once.
    pub(crate) fn due(&mut self, now: Instant) -> Option<Due> {
        if self.expired(now) {
            return Some(Due::Expired);
        }
        match self.warn_at {
            Some(w) if now >= w => {
                self.warn_at = None;
                Some(Due::Warn)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_of_patterns_is_conservative() {
        for (g, r, want) in [
            ("a.>", "a.b", true),
            ("a.>", "a.b.>", true),
            ("a.>", "a", false),
            ("a.>", "b.c", false),
            ("a.*", "a.b", true),
            ("a.*", "a.*", true),
            ("a.*", "a.>", false),
            ("a.*", "a.b.c", false),
            ("a.b", "a.b", true),
            ("a.b", "a.*", false),
            ("a.*.c", "a.x.c", true),
            ("a.*.c", "a.x.d", false),
        ] {
            assert_eq!(covers(g, r), want, "{g} covers {r}?");
        }
    }

    #[test]
    fn names_are_prefixed_and_stripped() {
        let g = grants(Claims {
            sub: "s".into(),
            exp: 0,
            tenant: "acme".into(),
            publish: vec!["orders.*".into()],
            subscribe: vec!["orders.>".into()],
        })
        .unwrap();
        assert_eq!(g.internal("orders.1"), "acme.orders.1");
        assert!(g.check_publish("acme.orders.1").is_ok());
        assert!(g.check_publish("acme.users.1").is_err());
        assert!(g.check_subscribe("acme.orders.*").is_ok());
        assert!(g.check_subscribe("acme.>").is_err());
        for (client, broker) in [
            ("$presence.orders.1", "$presence.acme.orders.1"),
            ("$deadletter.orders", "$deadletter.acme.orders"),
        ] {
            assert_eq!(g.internal(client), broker);
            assert_eq!(g.display(broker), client);
        }
        // A webhook's dead letters need a grant of every topic of the tenant.
        assert!(g.check_subscribe("$deadletter.acme.orders").is_err());
        let every = |subscribe: &str| {
            grants(Claims {
                sub: "s".into(),
                exp: 0,
                tenant: "acme".into(),
                publish: vec![],
                subscribe: vec![subscribe.into()],
            })
            .unwrap()
        };
        assert!(every("orders")
            .check_subscribe("$deadletter.acme.orders")
            .is_err());
        assert!(every(">")
            .check_subscribe("$deadletter.acme.orders")
            .is_ok());
    }
}
