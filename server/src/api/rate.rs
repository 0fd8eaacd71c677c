//! Rate limits: token buckets (governor's GCRA) per client, separately for
//! events published, subscription requests and connection attempts.
//!
//! A client is its token's tenant and subject, or its IP address when it
//! has no token (anonymous). Connection attempts are counted per IP address
//! before any request is read. A tenant may have its own publish and
//! subscribe rates, which replace the global ones for its clients. Unset
//! limits do not limit.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Deserialize;

use super::error::ApiError;

/// One limit as configured: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained operations per second (at least 1).
    pub per_second: u32,
    /// Operations allowed at once after a quiet period (default: one
    /// second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A tenant's own rates.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRates {
    /// Events published.
    pub publish: Option<Rate>,
    /// Subscription requests.
    pub subscribe: Option<Rate>,
}

/// `[rate_limits]` of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Events published (a batch counts each of its events).
    pub publish: Option<Rate>,
    /// Subscription requests: SSE streams, polls, WebSocket and STOMP
    /// subscriptions.
    pub subscribe: Option<Rate>,
    /// Connection attempts, per IP address.
    pub connect: Option<Rate>,
    /// Rates of named tenants, replacing the global publish and subscribe
    /// rates for their clients.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantRates>,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Publish,
    Subscribe,
    Connect,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Publish => "publish",
            Kind::Subscribe => "subscribe",
            Kind::Connect => "connect",
        }
    }
}

/// Whom a limit counts: a token's tenant and subject, or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Client {
    Subject(Arc<str>),
    Address(IpAddr),
}

/// A configured limit: its bucket per client, and its settings for messages.
struct Limit {
    buckets: DefaultKeyedRateLimiter<Client>,
    rate: Rate,
}

impl Limit {
    fn new(rate: Rate, what: &str) -> Result<Limit, String> {
        let per_second = NonZeroU32::new(rate.per_second)
            .ok_or_else(|| format!("rate_limits: {what}: per_second must be at least 1"))?;
        let burst = NonZeroU32::new(rate.burst.unwrap_or(rate.per_second))
            .ok_or_else(|| format!("rate_limits: {what}: burst must be at least 1"))?;
        Ok(Limit {
            buckets: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ),
            rate,
        })
    }

    /// Takes `n` operations from `client`'s bucket, or says when to retry.
    fn take(&self, client: &Client, n: u32, kind: Kind) -> Result<(), ApiError> {
        let refuse = |retry_after: Duration| {
            let burst = self.rate.burst.unwrap_or(self.rate.per_second);
            ApiError::RateLimited {
                message: format!(
                    "over the {} rate limit ({} per second, bursts of {burst}): retry in {} ms",
                    kind.name(),
                    self.rate.per_second,
                    retry_after.as_millis().max(1)
                ),
                retry_after,
            }
        };
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.buckets.check_key_n(client, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(refuse(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            // More than a whole burst at once: it can never pass as one.
            Err(_) => Err(ApiError::RateLimited {
                message: format!(
                    "{n} {} operations at once exceed the burst of the rate limit ({})",
                    kind.name(),
                    self.rate.burst.unwrap_or(self.rate.per_second)
                ),
                retry_after: Duration::from_secs(1),
            }),
        }
    }
}

/// The configured limits, shared by the workers and the acceptor.
#[derive(Default)]
pub(crate) struct RateLimits {
    publish: Option<Limit>,
    subscribe: Option<Limit>,
    connect: Option<Limit>,
    tenants: HashMap<String, (Option<Limit>, Option<Limit>)>,
    /// Refusals, by kind (publish, subscribe, connect), for `/metrics`.
    refused: [AtomicU64; 3],
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl RateLimits {
    pub(crate) fn new(config: &RateLimitConfig) -> Result<RateLimits, String> {
        let limit = |rate: Option<Rate>, what: &str| rate.map(|r| Limit::new(r, what)).transpose();
        let mut tenants = HashMap::new();
        for (tenant, rates) in &config.tenants {
            let publish = limit(rates.publish, &format!("tenants.{tenant}.publish"))?;
            let subscribe = limit(rates.subscribe, &format!("tenants.{tenant}.subscribe"))?;
            tenants.insert(tenant.clone(), (publish, subscribe));
        }
        Ok(RateLimits {
            publish: limit(config.publish, "publish")?,
            subscribe: limit(config.subscribe, "subscribe")?,
            connect: limit(config.connect, "connect")?,
            tenants,
            refused: Default::default(),
        })
    }

    /// Takes `n` operations of `kind` (publish or subscribe) from the
    /// client's bucket: its tenant's limit if it has one, else the global.
    pub(crate) fn take(
        &self,
        kind: Kind,
        tenant: Option<&str>,
        client: &Client,
        n: u32,
    ) -> Result<(), ApiError> {
        let own = tenant.and_then(|t| self.tenants.get(t));
        let limit = match (kind, own) {
            (Kind::Publish, Some((Some(l), _))) | (Kind::Subscribe, Some((_, Some(l)))) => Some(l),
            (Kind::Publish, _) => self.publish.as_ref(),
            (Kind::Subscribe, _) => self.subscribe.as_ref(),
            (Kind::Connect, _) => self.connect.as_ref(),
        };
        let Some(limit) = limit else { return Ok(()) };
        limit
            .take(client, n, kind)
            .inspect_err(|_| self.count(kind))
    }

    /// A connection attempt from `ip`.
    pub(crate) fn connect(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.take(Kind::Connect, None, &Client::Address(ip), 1)
    }

    fn count(&self, kind: Kind) {
        let i = match kind {
            Kind::Publish => 0,
            Kind::Subscribe => 1,
            Kind::Connect => 2,
        };
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far: publish, subscribe, connect.
    pub(crate) fn refused(&self) -> [u64; 3] {
        self.refused.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// Forgets clients whose buckets are full again (a periodic sweep, so
    /// that clients that came and went cost nothing).
    pub(crate) fn sweep(&self) {
        let limits = [&self.publish, &self.subscribe, &self.connect];
        let tenants = self.tenants.values().flat_map(|(p, s)| [p, s]);
        for limit in limits.into_iter().chain(tenants).flatten() {
            limit.buckets.retain_recent();
            limit.buckets.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> RateLimitConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn buckets_are_per_client_and_tenants_have_their_own() {
        let limits = RateLimits::new(&config(
            "publish = { per_second = 1, burst = 3 }\n\
             [tenants.big]\npublish = { per_second = 1, burst = 10 }",
        ))
        .unwrap();
        let ann: Client = Client::Subject("acme/ann".into());
        let bob: Client = Client::Subject("acme/bob".into());
        for _ in 0..3 {
            limits.take(Kind::Publish, Some("acme"), &ann, 1).unwrap();
        }
        let e = limits
            .take(Kind::Publish, Some("acme"), &ann, 1)
            .unwrap_err();
        assert_eq!(e.status().0, 429);
        assert!(
            e.message()
                .starts_with("over the publish rate limit (1 per second, bursts of 3): retry in "),
            "{e}"
        );
        assert_eq!(limits.refused(), [1, 0, 0]);
        // Another client is not affected; nor are subscriptions (unset).
        limits.take(Kind::Publish, Some("acme"), &bob, 3).unwrap();
        limits
            .take(Kind::Subscribe, Some("acme"), &ann, 100)
            .unwrap();
        // The tenant's own limit replaces the global one.
        let big = Client::Subject("big/ann".into());
        limits.take(Kind::Publish, Some("big"), &big, 10).unwrap();
        assert!(limits.take(Kind::Publish, Some("big"), &big, 1).is_err());
        // More than a burst at once can never pass.
        let carol = Client::Subject("acme/carol".into());
        let e = limits
            .take(Kind::Publish, Some("acme"), &carol, 4)
            .unwrap_err();
        assert!(e.message().contains("exceed the burst"), "{e}");
        limits.sweep();
    }

    #[test]
    fn zero_rates_are_refused() {
        let e = RateLimits::new(&config("connect = { per_second = 0 }")).unwrap_err();
        assert!(e.contains("connect: per_second must be at least 1"), "{e}");
        let e = RateLimits::new(&config(
            "[tenants.a]\nsubscribe = { per_second = 1, burst = 0 }",
        ))
        .unwrap_err();
        assert!(
            e.contains("tenants.a.subscribe: burst must be at least 1"),
            "{e}"
        );
    }
}
