//! The server's TOML configuration file. Every key is optional; flags and
//! environment variables override the file, which overrides the defaults.
//!
//! ```toml
//! listen = "127.0.0.1:7070"
//! data = "herald-data"
//! workers = 2
//! anonymous = false             # unset: on only while no token key is configured
//! allowed_origins = ["https://app.example"]   # web pages allowed cross-origin ("*": any)
//! jwt_secret_file = "secret.txt"
//! jwt_rs256_public_key = "public.pem"
//! ticket_ttl_ms = 30000         # stream tickets' lifetime (1000 to 300000)
//! query_token = true            # false: refuse access_token in URLs (use tickets or the cookie)
//! tls_cert = "cert.pem"         # TLS: the certificate chain (PEM), server's first
//! tls_key = "key.pem"           # TLS: its private key (PEM); both or neither
//! max_body = 1048576
//! max_output = 1048576
//! max_connections = 10000
//! max_connections_per_ip = 1000
//! keepalive_secs = 15
//! sse_retry_ms = 2000           # the reconnect delay SSE clients are told
//! header_timeout_secs = 10      # to send a whole request head
//! idle_timeout_secs = 120       # an idle keep-alive connection is closed
//! presence_expiry_secs = 30     # a presence session without a heartbeat ends
//! idempotency_window_secs = 120 # a publish repeating a key this recently is a duplicate
//! idempotency_max_events = 100000   # events whose keys are remembered, at most (~500 bytes each)
//! stomp_heartbeat_ms = 10000    # STOMP heart-beats offered (0: none)
//! stomp_destinations = ["/topic/", "/exchange/amq.topic/"]   # STOMP prefixes of topics
//! slow_client_deadline_secs = 30
//! ring_capacity = 16777216
//! max_payload = 1048576
//! segment_size = 67108864
//! durability = "interval:100"   # "never", "always" or "interval:<ms>"
//! retention_max_age_secs = 86400   # checked every minute, not only at segment rolls
//! retention_max_bytes = 10737418240
//! retention_max_pinned_age_secs = 604800   # what a stalled consumer may keep
//!
//! [[schemas]]                   # published payloads must satisfy (JSON Schema)
//! topics = "orders.>"           # topic name or pattern, as clients name it
//! type = "order.created"        # optional: only this event type
//! file = "schemas/order-created.json"
//!
//! [rate_limits]                 # token buckets per client (token subject, or address)
//! publish = { per_second = 100, burst = 200 }   # events
//! subscribe = { per_second = 10 }               # streams, polls, subscriptions
//! connect = { per_second = 20, burst = 50 }     # connection attempts, per address
//! [rate_limits.tenants.acme]    # a tenant's own publish and subscribe rates
//! publish = { per_second = 1000, burst = 2000 }
//!
//! [cluster]                     # cluster mode: nodes share a NATS JetStream stream (docs/CLUSTER.md)
//! nats = ["nats://127.0.0.1:4222"]   # NATS servers (or `--cluster URL`)
//! stream = "HERALD"             # the shared stream (created if missing)
//! node_id = "node-a"            # this node's connection name
//! credentials = "nats.creds"    # optional NATS credentials file
//! publish_timeout_ms = 5000     # a publish not acknowledged by then gets 503
//! replica_wait_ms = 5000        # a client ahead of this node's replica waits this long, then 503
//!
//! [[webhooks]]                  # POSTs matching events (docs/INTEGRATION.md)
//! name = "orders"               # its consumer, dead-letter topic, metrics
//! url = "https://hooks.example/herald"
//! topics = ["orders.>", "$presence.>"]   # as the tenant's clients name them
//! types = ["order.created"]     # optional: only these event types
//! tenant = "acme"               # optional: unset, names are the broker's
//! secret_file = "hook-secret.txt"        # HMAC-SHA256 key (>= 16 bytes)
//! batch = 1                     # events per request (1: the event alone)
//! timeout_ms = 10000
//! max_attempts = 10             # then the events go to $deadletter.<name>
//! backoff_initial_ms = 500      # doubles per attempt, with jitter
//! backoff_max_ms = 60000
//! start = "now"                 # a new webhook's start: "now" or "oldest"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_core::log::Durability;
use serde::Deserialize;

use herald_core::BrokerConfig;

use crate::api::auth::AuthConfig;
use crate::api::rate::RateLimitConfig;
use crate::api::schema::SchemaRule;
use crate::api::tickets::TICKET_TTL_MS;
use crate::cluster::{ClusterConfig, ClusterFile};
use crate::webhook::WebhookConfig;
use crate::wire::http;

/// The file's keys (see the module docs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Data directory.
    pub data: Option<PathBuf>,
    /// Event-loop threads.
    pub workers: Option<usize>,
    /// Serve clients without a token (loopback only). Unset: only while no
    /// token key is configured.
    pub anonymous: Option<bool>,
    /// Web origins whose pages may use the server cross-origin.
    pub allowed_origins: Option<Vec<String>>,
    /// File with the HS256 secret.
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM file with the RS256 public key.
    pub jwt_rs256_public_key: Option<PathBuf>,
    /// Stream tickets' lifetime, in milliseconds.
    pub ticket_ttl_ms: Option<u64>,
    /// Accept `access_token` in the query.
    pub query_token: Option<bool>,
    /// PEM file with the TLS certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the TLS private key.
    pub tls_key: Option<PathBuf>,
    /// Largest request body.
    pub max_body: Option<usize>,
    /// Unsent bytes per connection before it stops being fed.
    pub max_output: Option<usize>,
    /// Most open connections.
    pub max_connections: Option<usize>,
    /// Most open connections per IP address.
    pub max_connections_per_ip: Option<usize>,
    /// SSE keep-alive interval.
    pub keepalive_secs: Option<u64>,
    /// `retry:` sent to SSE clients, in milliseconds.
    pub sse_retry_ms: Option<u64>,
    /// Time allowed to send a whole request head.
    pub header_timeout_secs: Option<u64>,
    /// Idle keep-alive connections are closed after this long.
    pub idle_timeout_secs: Option<u64>,
    /// A presence session without a heartbeat this long expires.
    pub presence_expiry_secs: Option<u64>,
    /// A publish repeating an idempotency key used this recently is a
    /// duplicate.
    pub idempotency_window_secs: Option<u64>,
    /// Events whose idempotency keys are remembered, at most.
    pub idempotency_max_events: Option<usize>,
    /// STOMP heart-beat interval offered, in milliseconds.
    pub stomp_heartbeat_ms: Option<u64>,
    /// STOMP destination prefixes that name topics.
    pub stomp_destinations: Option<Vec<String>>,
    /// Slow-client deadline.
    pub slow_client_deadline_secs: Option<u64>,
    /// Ring bytes.
    pub ring_capacity: Option<usize>,
    /// Largest payload.
    pub max_payload: Option<usize>,
    /// Log segment size.
    pub segment_size: Option<u64>,
    /// `never`, `always` or `interval:<ms>`.
    pub durability: Option<String>,
    /// Retention by age.
    pub retention_max_age_secs: Option<u64>,
    /// Retention by total bytes.
    pub retention_max_bytes: Option<u64>,
    /// The oldest log segment a durable consumer or a stalled reader may
    /// keep from retention (it then gets a gap notice). Unset: no bound.
    pub retention_max_pinned_age_secs: Option<u64>,
    /// `[[schemas]]`: `topics`, optional `type`, `file`.
    pub schemas: Option<Vec<SchemaRule>>,
    /// `[rate_limits]`: `publish`, `subscribe`, `connect`, `tenants.<name>`.
    pub rate_limits: Option<RateLimitConfig>,
    /// `[[webhooks]]`: see the module docs.
    pub webhooks: Option<Vec<WebhookConfig>>,
    /// Cluster mode (`[cluster]`).
    pub cluster: Option<ClusterFile>,
}

impl FileConfig {
    /// Reads and parses `path`. Relative paths in it are relative to the
    /// file, not to the working directory the server happens to start in.
    pub fn load(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut file: FileConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let paths = [
            &mut file.data,
            &mut file.jwt_secret_file,
            &mut file.jwt_rs256_public_key,
            &mut file.tls_cert,
            &mut file.tls_key,
        ];
        let schema_files = file.schemas.iter_mut().flatten().map(|r| &mut r.file);
        let secrets = file
            .webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.secret_file);
        for p in paths
            .into_iter()
            .flatten()
            .chain(schema_files)
            .chain(secrets)
            .chain(file.cluster.iter_mut().flat_map(|c| c.credentials.as_mut()))
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }

    /// Applies the keys that are set to `config`.
    pub fn apply(self, config: &mut ServerConfig) -> Result<(), String> {
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.data {
            config.broker.data_dir = v;
        }
        if let Some(v) = self.workers {
            config.workers = v;
        }
        if let Some(v) = self.anonymous {
            config.anonymous = Some(v);
        }
        if let Some(v) = self.allowed_origins {
            config.allowed_origins = v;
        }
        if let Some(p) = self.jwt_secret_file {
            config.auth.hs256_secret = Some(read_key(&p)?);
        }
        if let Some(p) = self.jwt_rs256_public_key {
            config.auth.rs256_public_pem = Some(read_key(&p)?);
        }
        if let Some(v) = self.query_token {
            config.query_token = v;
        }
        if let Some(ms) = self.ticket_ttl_ms {
            if !TICKET_TTL_MS.contains(&ms) {
                return Err(format!(
                    "ticket_ttl_ms: {} to {}",
                    TICKET_TTL_MS.start(),
                    TICKET_TTL_MS.end()
                ));
            }
            config.ticket_ttl = Duration::from_millis(ms);
        }
        if let Some(p) = self.tls_cert {
            config.tls_cert = Some(p);
        }
        if let Some(p) = self.tls_key {
            config.tls_key = Some(p);
        }
        let set = |slot: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut config.max_body, self.max_body);
        set(&mut config.max_output, self.max_output);
        set(&mut config.max_connections, self.max_connections);
        set(
            &mut config.max_connections_per_ip,
            self.max_connections_per_ip,
        );
        set(&mut config.broker.ring_capacity, self.ring_capacity);
        set(&mut config.broker.max_payload, self.max_payload);
        if let Some(s) = self.keepalive_secs {
            config.keepalive = Duration::from_secs(s);
        }
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(format!("{key}: must be at least 1"))
            } else {
                Ok(v)
            }
        };
        if let Some(ms) = self.sse_retry_ms {
            config.sse_retry_ms = positive("sse_retry_ms", ms)?;
        }
        if let Some(s) = self.header_timeout_secs {
            config.header_timeout = Duration::from_secs(positive("header_timeout_secs", s)?);
        }
        if let Some(s) = self.idle_timeout_secs {
            config.idle_timeout = Duration::from_secs(positive("idle_timeout_secs", s)?);
        }
        if let Some(s) = self.presence_expiry_secs {
            config.broker.presence_ttl = Duration::from_secs(positive("presence_expiry_secs", s)?);
        }
        if let Some(s) = self.idempotency_window_secs {
            if !(1..=86_400).contains(&s) {
                return Err("idempotency_window_secs: 1 to 86400".into());
            }
            config.broker.idempotency_window = Duration::from_secs(s);
        }
        if let Some(n) = self.idempotency_max_events {
            config.broker.idempotency_max_events =
                positive("idempotency_max_events", n as u64)? as usize;
        }
        if let Some(ms) = self.stomp_heartbeat_ms {
            config.stomp_heartbeat = Duration::from_millis(ms);
        }
        if let Some(list) = self.stomp_destinations {
            let ok = (1..=8).contains(&list.len())
                && list.iter().all(|p| {
                    p.starts_with('/') && p.len() <= 64 && !p.contains(['\r', '\n', '\0'])
                });
            if !ok {
                return Err("stomp_destinations: 1 to 8 prefixes of at most 64 bytes, each starting with '/'".into());
            }
            config.stomp_destinations = list;
        }
        if let Some(s) = self.slow_client_deadline_secs {
            config.slow_client_deadline = Duration::from_secs(s);
        }
        if let Some(v) = self.segment_size {
            config.broker.log.segment_size = v;
        }
        if let Some(d) = self.durability {
            config.broker.log.durability = parse_durability(&d)?;
        }
        if let Some(s) = self.retention_max_pinned_age_secs {
            config.broker.log.retention.max_pinned_age = Some(Duration::from_secs(s));
        }
        if let Some(s) = self.retention_max_age_secs {
            config.broker.log.retention.max_age = Some(Duration::from_secs(s));
        }
        if let Some(b) = self.retention_max_bytes {
            config.broker.log.retention.max_bytes = Some(b);
        }
        if let Some(rules) = self.schemas {
            config.schemas = rules;
        }
        if let Some(limits) = self.rate_limits {
            config.rate_limits = limits;
        }
        if let Some(hooks) = self.webhooks {
            config.webhooks = hooks;
        }
        if let Some(cluster) = self.cluster {
            cluster.apply(&mut config.cluster)?;
        }
        Ok(())
    }
}

/// Reads a key file, without a trailing newline.
pub fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "never" => Ok(Durability::Never),
        "always" => Ok(Durability::Always),
        _ => s
            .strip_prefix("interval:")
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(|ms| Durability::Interval(Duration::from_millis(ms)))
            .ok_or_else(|| {
                format!("durability {s:?}: expected \"never\", \"always\" or \"interval:<ms>\"")
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_in_a_file_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "data = \"d\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        )
        .unwrap();
        let mut config = ServerConfig::new();
        FileConfig::load(&path).unwrap().apply(&mut config).unwrap();
        assert_eq!(config.broker.data_dir, dir.path().join("d"));
        assert_eq!(config.tls_cert, Some(dir.path().join("c.pem")));
        assert_eq!(config.tls_key, Some(dir.path().join("k.pem")));
        std::fs::write(&path, "data = \"/abs/d\"\n").unwrap();
        FileConfig::load(&path).unwrap().apply(&mut config).unwrap();
        assert_eq!(config.broker.data_dir, Path::new("/abs/d"));
    }

    #[test]
    fn timeouts_and_presence_expiry_are_configurable_and_positive() {
        let file: FileConfig = toml::from_str(
            "sse_retry_ms = 500\nheader_timeout_secs = 3\nidle_timeout_secs = 40\npresence_expiry_secs = 7",
        )
        .unwrap();
        let mut config = ServerConfig::new();
        file.apply(&mut config).unwrap();
        assert_eq!(config.sse_retry_ms, 500);
        assert_eq!(config.header_timeout, Duration::from_secs(3));
        assert_eq!(config.idle_timeout, Duration::from_secs(40));
        assert_eq!(config.broker.presence_ttl, Duration::from_secs(7));
        let zero: FileConfig = toml::from_str("idle_timeout_secs = 0").unwrap();
        let e = zero.apply(&mut config).unwrap_err();
        assert_eq!(e, "idle_timeout_secs: must be at least 1");
        let ttl: FileConfig = toml::from_str("ticket_ttl_ms = 1000").unwrap();
        ttl.apply(&mut config).unwrap();
        assert_eq!(config.ticket_ttl, Duration::from_secs(1));
        for bad in ["ticket_ttl_ms = 999", "ticket_ttl_ms = 300001"] {
            let file: FileConfig = toml::from_str(bad).unwrap();
            let e = file.apply(&mut config).unwrap_err();
            assert_eq!(e, "ticket_ttl_ms: 1000 to 300000");
        }
    }

    #[test]
    fn a_file_overrides_defaults_and_bad_keys_are_refused() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nworkers = 3\ndurability = \"interval:250\"\nmax_connections_per_ip = 7\nretention_max_age_secs = 60\nallowed_origins = [\"https://a.example\"]",
        )
        .unwrap();
        let mut config = ServerConfig::new();
        file.apply(&mut config).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.workers, 3);
        assert_eq!(config.max_connections_per_ip, 7);
        assert_eq!(config.allowed_origins, vec!["https://a.example".to_owned()]);
        assert_eq!(
            config.broker.log.durability,
            Durability::Interval(Duration::from_millis(250))
        );
        assert_eq!(
            config.broker.log.retention.max_age,
            Some(Duration::from_secs(60))
        );
        assert!(
            toml::from_str::<FileConfig>("listn = \"x\"").is_err(),
            "unknown keys are refused"
        );
        let bad: FileConfig = toml::from_str("durability = \"sometimes\"").unwrap();
        assert!(bad.apply(&mut ServerConfig::new()).is_err());
    }
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Event-loop threads.
    pub workers: usize,
    /// The broker underneath.
    pub broker: BrokerConfig,
    /// Largest request head (431 beyond).
    pub max_head: usize,
    /// Largest request body (413 beyond).
    pub max_body: usize,
    /// Unsent bytes per connection before it stops being fed (slow client).
    pub max_output: usize,
    /// A client whose unsent output stays at the bound this long is closed
    /// (SSE: it resumes with `Last-Event-ID`; WebSocket: close code 4008
    /// whose reason names the last sequence delivered per subscription).
    pub slow_client_deadline: Duration,
    /// Most open connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Most open connections from one IP address.
    pub max_connections_per_ip: usize,
    /// SSE keep-alive comment interval.
    pub keepalive: Duration,
    /// STOMP heart-beats: the server offers to send one at least this
    /// often and asks clients for the same (`heart-beat:` of CONNECTED;
    /// each side's interval is the larger of the two offers). A client
    /// silent for twice its interval is closed. Zero: none.
    pub stomp_heartbeat: Duration,
    /// STOMP destination prefixes that name topics: `/topic/orders.eu` is
    /// the topic `orders.eu`. The first that matches a destination wins;
    /// `MESSAGE` frames name their topic with the prefix their subscription
    /// used. 1 to 8 prefixes of at most 64 bytes, each starting with `/`.
    pub stomp_destinations: Vec<String>,
    /// `retry:` sent to SSE clients, in milliseconds.
    pub sse_retry_ms: u64,
    /// Time allowed to send a complete request head (slowloris).
    pub header_timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    pub idle_timeout: Duration,
    /// Keys accepted for JWT bearer tokens.
    pub auth: AuthConfig,
    /// How long a stream ticket (`POST /v1/tickets`) may wait for its
    /// stream, never past its token's `exp`: 1 s to 300 s.
    pub ticket_ttl: Duration,
    /// Accept the token as the `access_token` query parameter. Off, a
    /// request with one is refused (401): URLs end up in logs and browser
    /// history; pages use stream tickets or the `herald_token` cookie.
    pub query_token: bool,
    /// PEM file of the TLS certificate chain (the server's certificate
    /// first). With `tls_key`, the server speaks only TLS (`https://`,
    /// `wss://`); the two are set together or not at all.
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the TLS certificate's private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub tls_key: Option<PathBuf>,
    /// Serve clients without a token (full access, no tenant): allowed only
    /// on loopback addresses, and never to requests that came through a
    /// reverse proxy. `None` (the default): only while no token key is
    /// configured, so configuring a key turns it off; `Some(true)` keeps it
    /// on beside the keys (the server warns at startup).
    pub anonymous: Option<bool>,
    /// Web origins (`https://app.example`, or `*`) whose pages may use the
    /// server cross-origin (CORS). Pages from other origins get 403; clients
    /// that are not pages (no `Origin` header) are not affected.
    pub allowed_origins: Vec<String>,
    /// JSON Schemas that published payloads must satisfy, by topic
    /// pattern and event type (compiled at startup).
    pub schemas: Vec<SchemaRule>,
    /// Rate limits per client (token subject, or address) and per tenant.
    pub rate_limits: RateLimitConfig,
    /// Webhooks: durable consumers that POST events to URLs.
    pub webhooks: Vec<WebhookConfig>,
    /// Cluster mode: the NATS JetStream stream this node replicates and
    /// publishes to (`None`: a single node).
    pub cluster: Option<ClusterConfig>,
    pub(crate) limits: http::Limits,
}

impl ServerConfig {
    /// Embedded defaults: `127.0.0.1:7070`, data in `./herald-data`, one
    /// worker per core.
    pub fn new() -> ServerConfig {
        let max_head = 16 * 1024;
        let max_body = 1 << 20;
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            broker: BrokerConfig::new("herald-data"),
            max_head,
            max_body,
            max_output: 1 << 20,
            slow_client_deadline: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            keepalive: Duration::from_secs(15),
            stomp_heartbeat: Duration::from_secs(10),
            stomp_destinations: vec!["/topic/".into(), "/exchange/amq.topic/".into()],
            sse_retry_ms: 2_000,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            auth: AuthConfig::default(),
            ticket_ttl: Duration::from_secs(30),
            query_token: true,
            tls_cert: None,
            tls_key: None,
            anonymous: None,
            allowed_origins: Vec::new(),
            schemas: Vec::new(),
            rate_limits: RateLimitConfig::default(),
            webhooks: Vec::new(),
            cluster: None,
            limits: http::Limits { max_head, max_body },
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::new()
    }
}
