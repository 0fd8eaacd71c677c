//! `GET /metrics`: the broker's counters in the OpenMetrics text format,
//! encoded by prometheus-client.

use herald_core::broker::MetricsSnapshot;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Renders a snapshot. A fresh registry per scrape: the values come from the
/// broker's own counters, so nothing needs registering ahead of time.
pub(crate) fn render_metrics(m: &MetricsSnapshot) -> String {
    let mut registry = Registry::with_prefix("herald");
    let mut gauge = |name: &str, help: &str, value: u64| {
        let g: Gauge<u64, std::sync::atomic::AtomicU64> = Gauge::default();
        g.set(value);
        registry.register(name, help, g);
    };
    gauge("published_events", "Events published", m.published);
    gauge(
        "delivered_events",
        "Events delivered to subscriptions",
        m.delivered,
    );
    gauge(
        "replayed_events",
        "Events delivered from the log",
        m.replayed,
    );
    gauge(
        "lagged_fallbacks",
        "Subscriptions lapped on the ring that fell back to the log",
        m.lagged_fallbacks,
    );
    gauge("gap_notices", "Gap notices delivered", m.gaps);
    gauge(
        "active_subscriptions",
        "Open subscriptions",
        m.active_subscribers,
    );
    gauge(
        "delivery_latency_p50_ns",
        "Publish to deliver latency, median",
        m.latency_p50_ns,
    );
    gauge(
        "delivery_latency_p95_ns",
        "Publish to deliver latency, 95th percentile",
        m.latency_p95_ns,
    );
    gauge(
        "delivery_latency_p99_ns",
        "Publish to deliver latency, 99th percentile",
        m.latency_p99_ns,
    );
    gauge(
        "delivery_latency_max_ns",
        "Publish to deliver latency, maximum",
        m.latency_max_ns,
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
