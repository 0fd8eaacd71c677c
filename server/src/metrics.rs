//! `GET /metrics`: the broker's and the server's counters in the
//! OpenMetrics text format, encoded by prometheus-client.
//!
//! Totals that only grow are counters (the encoder names their samples
//! `…_total`), so rates and resets work in Prometheus; values that go up
//! and down (open connections and subscriptions, latency percentiles) are
//! gauges.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::api::rate::RateLimits;
use crate::api::schema::Schemas;
use crate::api::tickets::Tickets;
use crate::cluster::ClusterState;
use crate::webhook::WebhookStats;
use herald_core::Broker;

/// The server's own counters, shared by its workers.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    /// Events written to client connections (SSE and WebSocket).
    pub(crate) deliveries: AtomicU64,
    /// Streams taken off their worker's feed because their client was slow.
    pub(crate) slow_streams: AtomicU64,
    /// Clients closed for staying slow past the deadline.
    pub(crate) slow_client_closes: AtomicU64,
    /// Open client connections.
    pub(crate) connections: AtomicU64,
    /// TLS handshakes completed.
    pub(crate) tls_handshakes: AtomicU64,
    /// TLS connections closed before their handshake completed.
    pub(crate) tls_handshake_failures: AtomicU64,
    /// Events the retention timer deleted (by age).
    pub(crate) expired: AtomicU64,
    /// WebSocket batch messages (`events`) written.
    pub(crate) ws_batches: AtomicU64,
    /// Tokens replaced on open WebSocket connections (`auth`).
    pub(crate) token_refreshes: AtomicU64,
    /// Connections closed because their token expired.
    pub(crate) token_expiry_closes: AtomicU64,
    /// Each webhook's counters.
    pub(crate) webhooks: Vec<Arc<WebhookStats>>,
}

/// Renders a snapshot. A fresh registry per scrape: the values come from the
/// broker's and the server's own counters, so nothing needs registering
/// ahead of time.
pub(crate) fn render_metrics(
    broker: &Broker,
    server: &ServerStats,
    rate: &RateLimits,
    schemas: &Schemas,
    tickets: &Tickets,
    cluster: Option<&ClusterState>,
) -> String {
    let m = &broker.metrics();
    let mut registry = Registry::with_prefix("herald");
    let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
    // Names without `_total`: the encoder appends it to counter samples.
    let counters: [(&str, &str, u64); 19] = [
        ("published_events", "Events published", m.published),
        ("delivered_events", "Events delivered to subscriptions", m.delivered),
        ("replayed_events", "Events delivered from the log", m.replayed),
        (
            "lagged_fallbacks",
            "Subscriptions lapped on the ring that fell back to the log",
            m.lagged_fallbacks,
        ),
        ("gap_notices", "Gap notices delivered", m.gaps),
        (
            "duplicate_publishes",
            "Publishes whose idempotency key was used within the window: answered, nothing stored",
            m.duplicates,
        ),
        (
            "server_deliveries",
            "Events written to client connections",
            read(&server.deliveries),
        ),
        (
            "server_slow_streams",
            "Client streams taken off the live feed because the client was slow (caught up from the log later)",
            read(&server.slow_streams),
        ),
        (
            "server_slow_client_closes",
            "Clients closed for staying slow past the deadline",
            read(&server.slow_client_closes),
        ),
        (
            "server_retention_expired_events",
            "Events deleted by the retention timer for their age (deletions at segment rolls are not counted)",
            read(&server.expired),
        ),
        (
            "server_ws_batches",
            "WebSocket batch messages (type events) written; their events count in server_deliveries",
            read(&server.ws_batches),
        ),
        (
            "server_schema_refusals",
            "Events refused because their data did not match a configured JSON Schema",
            schemas.refused(),
        ),
        (
            "server_tickets_issued",
            "Stream tickets issued",
            read(&tickets.issued),
        ),
        (
            "server_tickets_redeemed",
            "Stream tickets used to open a stream",
            read(&tickets.redeemed),
        ),
        (
            "server_tickets_refused",
            "Stream tickets presented unknown, used or expired",
            read(&tickets.refused),
        ),
        (
            "server_token_refreshes",
            "Tokens replaced on open WebSocket connections (auth)",
            read(&server.token_refreshes),
        ),
        (
            "server_token_expiry_closes",
            "Connections (WebSocket, STOMP, SSE) closed because their token expired",
            read(&server.token_expiry_closes),
        ),
        (
            "server_tls_handshakes",
            "TLS handshakes completed",
            read(&server.tls_handshakes),
        ),
        (
            "server_tls_handshake_failures",
            "TLS connections closed before their handshake completed (not TLS, refused by the TLS layer, timed out, or left)",
            read(&server.tls_handshake_failures),
        ),
    ];
    for (name, help, value) in counters {
        registry.register(name, help, ConstCounter::new(value));
    }
    for (limit, value) in ["publish", "subscribe", "connect"]
        .into_iter()
        .zip(rate.refused())
    {
        let by_limit = registry.sub_registry_with_label(("limit".into(), limit.into()));
        by_limit.register(
            "server_rate_limited",
            "Requests refused by a rate limit (publish: events; subscribe: subscription requests; connect: connection attempts)",
            ConstCounter::new(value),
        );
    }
    for hook in &server.webhooks {
        let by_hook =
            registry.sub_registry_with_label(("webhook".into(), hook.name.clone().into()));
        for (outcome, value) in [("ok", &hook.requests_ok), ("failed", &hook.requests_failed)] {
            by_hook
                .sub_registry_with_label(("outcome".into(), outcome.into()))
                .register(
                    "server_webhook_requests",
                    "Webhook requests (ok: answered 2xx; failed: a network error, a timeout or another status)",
                    ConstCounter::new(read(value)),
                );
        }
        by_hook.register(
            "server_webhook_delivered_events",
            "Events a webhook's receiver acknowledged (2xx)",
            ConstCounter::new(read(&hook.delivered)),
        );
        by_hook.register(
            "server_webhook_dead_lettered_events",
            "Events a webhook gave up and published to its dead-letter topic",
            ConstCounter::new(read(&hook.dead_lettered)),
        );
        by_hook.register(
            "server_webhook_last_seq",
            "Global sequence of the last event a webhook finished (delivered or dead-lettered)",
            ConstGauge::new(read(&hook.last_seq)),
        );
    }
    let consumers = broker.consumers();
    let head = broker.next_seq().saturating_sub(1);
    let max_lag = consumers.iter().map(|(_, c)| head.saturating_sub(*c)).max();
    let gauges: [(&str, &str, u64); 8] = [
        (
            "durable_consumers",
            "Durable consumers (webhooks' included)",
            consumers.len() as u64,
        ),
        (
            "durable_consumer_max_lag",
            "Global sequences published after the checkpoint of the durable consumer furthest behind",
            max_lag.unwrap_or(0),
        ),
        (
            "active_subscriptions",
            "Open subscriptions",
            m.active_subscribers,
        ),
        (
            "delivery_latency_p50_ns",
            "Publish to deliver latency, median",
            m.latency_p50_ns,
        ),
        (
            "delivery_latency_p95_ns",
            "Publish to deliver latency, 95th percentile",
            m.latency_p95_ns,
        ),
        (
            "delivery_latency_p99_ns",
            "Publish to deliver latency, 99th percentile",
            m.latency_p99_ns,
        ),
        (
            "delivery_latency_max_ns",
            "Publish to deliver latency, maximum",
            m.latency_max_ns,
        ),
        (
            "server_connections",
            "Open client connections",
            read(&server.connections),
        ),
    ];
    for (name, help, value) in gauges {
        registry.register(name, help, ConstGauge::new(value));
    }
    if let Some(c) = cluster {
        let stream_last = c.stream_last.load(Ordering::Acquire);
        let lag = stream_last.saturating_sub(head);
        let lag_seconds = match lag {
            0 => 0,
            _ => crate::cluster::now_ns().saturating_sub(read(&c.applied_ns)) / 1_000_000_000,
        };
        for (name, help, value) in [
            (
                "cluster_published_events",
                "Events this node published to the cluster's stream (acknowledged)",
                read(&c.published),
            ),
            (
                "cluster_publish_round_trip_ns",
                "Time from handing a publish to NATS to its acknowledgement, summed (divide by cluster_published_events)",
                read(&c.publish_ns),
            ),
            (
                "cluster_cas_retries",
                "Publishes retried because another node wrote their topic first",
                read(&c.cas_retries),
            ),
            (
                "cluster_skipped_sequences",
                "Stream sequences this replica skipped because the stream's retention removed them before the replica had them (its readers got a gap)",
                read(&c.skipped),
            ),
        ] {
            registry.register(name, help, ConstCounter::new(value));
        }
        for (name, help, value) in [
            (
                "cluster_connected",
                "1 while the node is connected to NATS",
                u64::from(c.connected.load(Ordering::Acquire)),
            ),
            (
                "cluster_replication_lag",
                "Stream sequences this node's replica has not appended yet (of those it has seen)",
                lag,
            ),
            (
                "cluster_replication_lag_seconds",
                "While the replica lags: seconds since the last event it appended was published (0 when caught up)",
                lag_seconds,
            ),
        ] {
            registry.register(name, help, ConstGauge::new(value));
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
