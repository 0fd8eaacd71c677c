//! Webhooks: named durable consumers that POST the events matching their
//! patterns to a URL, at least once and in order, from the log.
//!
//! Each webhook runs on a thread of its own with a blocking HTTP client
//! (never on a worker): it reads its consumer's subscription, sends one
//! event (or a batch) per request with an HMAC-SHA256 signature, retries
//! network errors, timeouts, 408, 429 and 5xx answers with exponential
//! backoff and jitter (honouring `Retry-After`), and acknowledges (moves
//! its checkpoint) only after a 2xx. What still fails after `max_attempts`,
//! or gets another 4xx, goes to the dead-letter topic `$deadletter.<name>`
//! and delivery goes on. The consumer is durable, so a restart resumes
//! where it stopped and retention keeps what it has not delivered.
//! `docs/INTEGRATION.md` has the format and the receiver's side.

mod delivery;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use herald_core::broker::{validate_event_type, BrokerError, Filter, StartAt, DEADLETTER_PREFIX};
use herald_core::Broker;
use serde::Deserialize;

use crate::api::auth::{internal_name, valid_label};

/// Most webhooks a server runs (a thread each).
pub(crate) const MAX_WEBHOOKS: usize = 64;
/// Most topic patterns, and most event types, per webhook.
pub(crate) const MAX_WEBHOOK_PATTERNS: usize = 64;
/// Most events per request.
pub(crate) const MAX_WEBHOOK_BATCH: usize = 1000;
/// Longest wait a `Retry-After` answer can impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Durable consumers of webhooks are named `.webhook.<name>`: clients'
/// consumer names may not start with `.` ([`is_server_consumer`]), so they
/// never meet these.
const CONSUMER_PREFIX: &str = ".webhook.";

/// Whether a consumer name is the server's own (a webhook's), which
/// clients may neither use nor list.
pub(crate) fn is_server_consumer(name: &str) -> bool {
    name.starts_with('.')
}

/// A `[[webhooks]]` entry of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// 1 to 64 letters, digits, `_` or `-`: names its consumer, its
    /// dead-letter topic and its metrics.
    pub name: String,
    /// `http://` or `https://` (certificates checked against the Mozilla
    /// roots).
    pub url: String,
    /// Topic names or patterns, as the tenant's clients name them
    /// (`$presence.>` hooks presence changes).
    pub topics: Vec<String>,
    /// Only these event types (empty: all).
    #[serde(default)]
    pub types: Vec<String>,
    /// The tenant whose topics the webhook reads; unset: the broker's names.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The HMAC-SHA256 key of `X-Herald-Signature` (a file's content,
    /// without a trailing newline; at least 16 bytes).
    pub secret_file: PathBuf,
    /// Events per request: 1 sends the event object alone, more send
    /// `{"events":[…]}` with whatever is available, up to this many.
    #[serde(default = "defaults::batch")]
    pub batch: usize,
    /// Time for a whole request, connecting to reading the answer.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per request before its events are dead-lettered.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles per attempt, with jitter.
    #[serde(default = "defaults::backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest wait between attempts (a `Retry-After` may ask for more).
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Where a new webhook starts: with the next event (`"now"`) or with
    /// the oldest event retained (`"oldest"`). Later starts resume after
    /// its checkpoint.
    #[serde(default)]
    pub start: WebhookStart,
}

/// Where a webhook starts the first time it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStart {
    /// With the next event published.
    #[default]
    Now,
    /// With the oldest event the log still holds.
    Oldest,
}

mod defaults {
    pub(super) fn batch() -> usize {
        1
    }
    pub(super) fn timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn max_attempts() -> u32 {
        10
    }
    pub(super) fn backoff_initial_ms() -> u64 {
        500
    }
    pub(super) fn backoff_max_ms() -> u64 {
        60_000
    }
}

/// A webhook checked and ready to run. (`Debug` leaves the secret out.)
pub(crate) struct Hook {
    name: String,
    url: String,
    consumer: String,
    filter: Filter,
    /// Bytes of tenant prefix stripped from topics in bodies.
    prefix_len: usize,
    /// The broker's name of the dead-letter topic.
    deadletter: String,
    secret: Vec<u8>,
    batch: usize,
    timeout: Duration,
    max_attempts: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    start: WebhookStart,
    stats: Arc<WebhookStats>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// One webhook's counters, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct WebhookStats {
    pub(crate) name: String,
    /// Requests answered 2xx.
    pub(crate) requests_ok: AtomicU64,
    /// Requests that failed: a network error, a timeout or another status.
    pub(crate) requests_failed: AtomicU64,
    /// Events acknowledged by the receiver.
    pub(crate) delivered: AtomicU64,
    /// Events sent to the dead-letter topic.
    pub(crate) dead_lettered: AtomicU64,
    /// The global sequence of the last event acknowledged (or dead-lettered).
    pub(crate) last_seq: AtomicU64,
}

/// Removes the durable consumers of webhooks no longer configured: they
/// would keep their events from retention forever.
pub(crate) fn forget_removed(broker: &Broker, hooks: &[Hook]) -> Result<(), BrokerError> {
    for (name, checkpoint) in broker.consumers() {
        let Some(hook) = name.strip_prefix(CONSUMER_PREFIX) else {
            continue;
        };
        if hooks.iter().all(|h| h.name != hook) {
            broker.remove_consumer(&name)?;
            tracing::info!(
                webhook = hook,
                checkpoint,
                "the webhook is no longer configured: its consumer is removed"
            );
        }
    }
    Ok(())
}

/// Checks every webhook of the configuration and reads its secret.
pub(crate) fn prepare(configs: &[WebhookConfig]) -> Result<Vec<Hook>, String> {
    if configs.len() > MAX_WEBHOOKS {
        return Err(format!("at most {MAX_WEBHOOKS} webhooks"));
    }
    let mut hooks: Vec<Hook> = Vec::with_capacity(configs.len());
    for c in configs {
        let hook = Hook::new(c).map_err(|e| format!("webhook {:?}: {e}", c.name))?;
        if hooks.iter().any(|h| h.name == hook.name) {
            return Err(format!("two webhooks are named {:?}", c.name));
        }
        hooks.push(hook);
    }
    Ok(hooks)
}

impl Hook {
    fn new(c: &WebhookConfig) -> Result<Hook, String> {
        if !valid_label(&c.name) {
            return Err("the name must be 1 to 64 letters, digits, '_' or '-'".into());
        }
        let uri: ureq::http::Uri = c.url.parse().map_err(|e| format!("url: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err("url: must be an http:// or https:// address with a host".into());
        }
        if let Some(t) = &c.tenant {
            if !valid_label(t) {
                return Err("tenant: 1 to 64 letters, digits, '_' or '-'".into());
            }
        }
        if c.topics.is_empty() || c.topics.len() > MAX_WEBHOOK_PATTERNS {
            return Err(format!(
                "topics: 1 to {MAX_WEBHOOK_PATTERNS} names or patterns"
            ));
        }
        if c.types.len() > MAX_WEBHOOK_PATTERNS {
            return Err(format!("types: at most {MAX_WEBHOOK_PATTERNS}"));
        }
        for t in &c.types {
            validate_event_type(t).map_err(|e| format!("types: {e}"))?;
        }
        let tenant = c.tenant.as_deref();
        let internal: Vec<String> = c
            .topics
            .iter()
            .map(|t| internal_name(tenant, t).into_owned())
            .collect();
        let patterns: Vec<&str> = internal.iter().map(String::as_str).collect();
        let deadletter =
            internal_name(tenant, &format!("{DEADLETTER_PREFIX}{}", c.name)).into_owned();
        let filter = Filter::patterns(&patterns)
            .map_err(|e| format!("topics: {e}"))?
            .with_types(&c.types);
        if filter.matches_topic(&deadletter) {
            return Err(
                "topics: may not match the webhook's own dead-letter topic (it would feed itself)"
                    .into(),
            );
        }
        let secret = crate::config::read_key(&c.secret_file)?;
        if secret.len() < 16 {
            return Err("secret_file: the secret must be at least 16 bytes".into());
        }
        if c.batch == 0 || c.batch > MAX_WEBHOOK_BATCH {
            return Err(format!("batch: 1 to {MAX_WEBHOOK_BATCH}"));
        }
        if !(1..=300_000).contains(&c.timeout_ms) {
            return Err("timeout_ms: 1 to 300000".into());
        }
        if !(1..=1000).contains(&c.max_attempts) {
            return Err("max_attempts: 1 to 1000".into());
        }
        if c.backoff_initial_ms == 0 || c.backoff_max_ms < c.backoff_initial_ms {
            return Err("backoff_initial_ms must be at least 1 and at most backoff_max_ms".into());
        }
        Ok(Hook {
            name: c.name.clone(),
            url: c.url.clone(),
            consumer: format!("{CONSUMER_PREFIX}{}", c.name),
            filter,
            prefix_len: tenant.map_or(0, |t| t.len() + 1),
            deadletter,
            secret,
            batch: c.batch,
            timeout: Duration::from_millis(c.timeout_ms),
            max_attempts: c.max_attempts,
            backoff_initial: Duration::from_millis(c.backoff_initial_ms),
            backoff_max: Duration::from_millis(c.backoff_max_ms),
            start: c.start,
            stats: Arc::new(WebhookStats {
                name: c.name.clone(),
                ..WebhookStats::default()
            }),
        })
    }

    /// Where the consumer starts if it is new.
    fn start_at(&self) -> StartAt {
        match self.start {
            WebhookStart::Now => StartAt::Now,
            WebhookStart::Oldest => StartAt::Time(0),
        }
    }

    /// The counters `/metrics` shows for this webhook.
    pub(crate) fn stats(&self) -> Arc<WebhookStats> {
        self.stats.clone()
    }

    /// Starts the webhook's thread; it stops soon after `stop` is set (an
    /// HTTP request under way first ends, within its timeout).
    pub(crate) fn spawn(
        self,
        broker: Broker,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("herald-webhook-{}", self.name))
            .spawn(move || delivery::run(&self, &broker, &stop))
    }
}
