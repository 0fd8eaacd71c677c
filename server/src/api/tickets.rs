//! Stream tickets: short-lived, single-use stand-ins for a token, for the
//! requests a browser cannot put a header on (`EventSource`, `WebSocket`).
//! A ticket in a URL that leaks into a log is useless once used or a few
//! seconds old; the token it stands for never appears there.
//!
//! Kept in memory (a restart forgets them), bounded, shared by the workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parking_lot::Mutex;

use super::auth::{Expiry, Grants};
use super::error::ApiError;

/// Most tickets outstanding (issued, neither used nor swept).
pub(crate) const MAX_TICKETS: usize = 100_000;

/// The bounds of a ticket's lifetime (`ticket_ttl_ms`).
pub(crate) const TICKET_TTL_MS: std::ops::RangeInclusive<u64> = 1_000..=300_000;

/// The refusal of a ticket that cannot be used, whatever the reason (the
/// client's remedy is the same: a new ticket).
const REFUSED: &str = "ticket unknown, used or expired";

struct Ticket {
    grants: Grants,
    expires: Instant,
}

/// The outstanding tickets.
pub(crate) struct Tickets {
    ttl: Duration,
    bound: usize,
    live: Mutex<HashMap<String, Ticket>>,
    pub(crate) issued: AtomicU64,
    pub(crate) redeemed: AtomicU64,
    pub(crate) refused: AtomicU64,
}

/// A ticket issued: what `POST /v1/tickets` answers.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Issued {
    pub(crate) ticket: String,
    pub(crate) expires_in_ms: u64,
}

impl Tickets {
    /// Tickets valid for `ttl` (never past their token's `exp`).
    pub(crate) fn new(ttl: Duration) -> Tickets {
        Tickets::bounded(ttl, MAX_TICKETS)
    }

    fn bounded(ttl: Duration, bound: usize) -> Tickets {
        Tickets {
            ttl,
            bound,
            live: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
            redeemed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// A ticket for `grants` (a token's: anonymous requests have nothing
    /// to stand for).
    pub(crate) fn issue(&self, grants: &Grants, now: Instant) -> Result<Issued, ApiError> {
        let Some(expiry) = Expiry::of(grants, false) else {
            return Err(ApiError::invalid(
                "this request has no token: a ticket stands for one",
            ));
        };
        let expires = (now + self.ttl).min(expiry.at());
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| ApiError::Internal(format!("no randomness for a ticket: {e}")))?;
        let ticket = URL_SAFE_NO_PAD.encode(bytes);
        let mut live = self.live.lock();
        if live.len() >= self.bound {
            live.retain(|_, t| t.expires > now);
            if live.len() >= self.bound {
                return Err(ApiError::Unavailable(format!(
                    "{} stream tickets are outstanding, the most this server keeps; retry later",
                    self.bound
                )));
            }
        }
        live.insert(
            ticket.clone(),
            Ticket {
                grants: grants.clone(),
                expires,
            },
        );
        self.issued.fetch_add(1, Ordering::Relaxed);
        let left = expires.saturating_duration_since(now);
        Ok(Issued {
            ticket,
            expires_in_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The grants of `ticket`, which is used up.
    pub(crate) fn redeem(&self, ticket: &str, now: Instant) -> Result<Grants, ApiError> {
        let found = self.live.lock().remove(ticket);
        match found {
            Some(t) if t.expires > now => {
                self.redeemed.fetch_add(1, Ordering::Relaxed);
                Ok(t.grants)
            }
            _ => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::Unauthenticated(REFUSED.into()))
            }
        }
    }

    /// Forgets the expired tickets (a timer calls it).
    pub(crate) fn sweep(&self, now: Instant) {
        self.live.lock().retain(|_, t| t.expires > now);
    }

    #[cfg(test)]
    fn outstanding(&self) -> usize {
        self.live.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::{grants, Claims};

    fn token_grants(exp_in: u64) -> Grants {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        grants(Claims {
            sub: "s".into(),
            exp: now + exp_in,
            tenant: "acme".into(),
            publish: vec![],
            subscribe: vec!["a.>".into()],
        })
        .unwrap()
    }

    #[test]
    fn a_ticket_is_43_url_safe_characters_and_works_once() {
        let tickets = Tickets::new(Duration::from_secs(30));
        let now = Instant::now();
        let issued = tickets.issue(&token_grants(600), now).unwrap();
        assert_eq!(issued.ticket.len(), 43);
        assert!(issued
            .ticket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(issued.expires_in_ms, 30_000);
        let g = tickets.redeem(&issued.ticket, now).unwrap();
        assert_eq!(g.tenant(), Some("acme"));
        assert!(g.check_subscribe("acme.a.b").is_ok());
        let e = tickets.redeem(&issued.ticket, now).unwrap_err();
        assert_eq!(e, ApiError::Unauthenticated(REFUSED.into()));
        assert!(tickets.redeem("nope", now).is_err());
        assert_eq!(tickets.redeemed.load(Ordering::Relaxed), 1);
        assert_eq!(tickets.refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_ticket_expires_with_its_ttl_or_its_token() {
        let tickets = Tickets::new(Duration::from_secs(30));
        let now = Instant::now();
        let t = tickets.issue(&token_grants(600), now).unwrap().ticket;
        assert!(tickets.redeem(&t, now + Duration::from_secs(30)).is_err());
        // A token with 10 s left: the ticket lives 10 s, not 30.
        let issued = tickets.issue(&token_grants(10), now).unwrap();
        assert!(
            (9_000..=10_000).contains(&issued.expires_in_ms),
            "{issued:?}"
        );
        let late = now + Duration::from_millis(issued.expires_in_ms + 1);
        assert!(tickets.redeem(&issued.ticket, late).is_err());
        assert!(tickets.issue(&Grants::anonymous(), now).is_err());
    }

    #[test]
    fn outstanding_tickets_are_bounded_and_expired_ones_swept() {
        let tickets = Tickets::bounded(Duration::from_secs(1), 3);
        let now = Instant::now();
        let g = token_grants(600);
        for _ in 0..3 {
            tickets.issue(&g, now).unwrap();
        }
        let e = tickets.issue(&g, now).unwrap_err();
        assert_eq!(e.code(), "unavailable");
        // Expired ones make room at the bound.
        let later = now + Duration::from_secs(1);
        tickets.issue(&g, later).unwrap();
        assert_eq!(tickets.outstanding(), 1);
        tickets.sweep(later + Duration::from_secs(1));
        assert_eq!(tickets.outstanding(), 0);
    }
}
