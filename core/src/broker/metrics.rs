//! Broker counters and the publish→deliver latency histogram.
//!
//! Counters are relaxed atomics. A subscription counts its deliveries and
//! keeps its latency samples (one delivery in 16 reads the clock) locally,
//! and folds them into these when a read finds nothing to deliver, every
//! 100 ms while it keeps delivering, and when it is dropped: delivery takes
//! no shared lock and rarely reads the clock, yet the metrics lag a busy
//! subscription by at most that interval. Gap notices are counted at once.

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::sync::{AtomicI64, AtomicU64, Ordering};

/// A point-in-time copy of the broker's metrics. A subscription's
/// deliveries and latency samples are included once a read of it finds
/// nothing more to deliver, at least every 100 ms while it keeps delivering,
/// and when it is dropped; its gap notices at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Events published.
    pub published: u64,
    /// Events delivered to subscriptions (each subscription counts).
    pub delivered: u64,
    /// Times a subscription was lapped on the ring and fell back to the log.
    pub lagged_fallbacks: u64,
    /// Gap notices delivered.
    pub gaps: u64,
    /// Keyed publishes answered as duplicates (nothing stored).
    pub duplicates: u64,
    /// Events delivered from the log rather than the ring.
    pub replayed: u64,
    /// Subscriptions currently open.
    pub active_subscribers: u64,
    /// Publish→deliver latency percentiles, nanoseconds (wall clock).
    pub latency_p50_ns: u64,
    /// 95th percentile.
    pub latency_p95_ns: u64,
    /// 99th percentile.
    pub latency_p99_ns: u64,
    /// Maximum.
    pub latency_max_ns: u64,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    /// On a cache line of its own: the publisher adds to it on every
    /// publish, subscriptions to the counters below whenever they go idle.
    published: CachePadded<AtomicU64>,
    pub(crate) delivered: AtomicU64,
    pub(crate) lagged_fallbacks: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) active: AtomicI64,
    latency: Mutex<Histogram<u64>>,
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 1 minute, 2 significant digits (1% resolution).
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("static histogram bounds are valid")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            published: CachePadded::new(AtomicU64::new(0)),
            delivered: AtomicU64::new(0),
            lagged_fallbacks: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            active: AtomicI64::new(0),
            latency: Mutex::new(new_histogram()),
        }
    }
}

impl Metrics {
    pub(crate) fn published_n(&self, events: u64) {
        self.published.fetch_add(events, Ordering::Relaxed);
    }

    /// Adds latency samples (ns); ones past the histogram's range count as
    /// its maximum.
    pub(crate) fn record_latencies(&self, samples: &[u64]) {
        let mut h = self.latency.lock();
        for &ns in samples {
            h.saturating_record(ns);
        }
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let h = self.latency.lock();
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        MetricsSnapshot {
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            lagged_fallbacks: self.lagged_fallbacks.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            active_subscribers: self.active.load(Ordering::Relaxed).max(0) as u64,
            latency_p50_ns: q(0.5),
            latency_p95_ns: q(0.95),
            latency_p99_ns: q(0.99),
            latency_max_ns: if h.is_empty() { 0 } else { h.max() },
        }
    }
}
