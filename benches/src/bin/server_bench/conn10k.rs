//! Latency with many connections open.

use std::time::Duration;

use herald_benches::load::{Peer, Plan, TOPIC};
use herald_benches::report::fmt_ns;

use crate::config::Config;
use crate::fixture::{Fixture, Notes};
use crate::measure::{paced_step, Lat};

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConnRun {
    pub(crate) open: usize,
    pub(crate) measured: u64,
    pub(crate) lat: Lat,
    pub(crate) complete: bool,
    pub(crate) cpu: (f64, f64),
}

/// `cfg.connections` connections, `m` of them on the
/// measured topic, a paced publisher at `cfg.rate_10k`.
pub(crate) fn conn10k_run(peer: Peer, cfg: &Config, m: usize, notes: &mut Notes) -> ConnRun {
    let total = cfg.connections;
    let stride = (total / m).max(1);
    let plans: Vec<Plan> = (0..total)
        .map(|i| {
            if i % stride == 0 && i / stride < m {
                Plan::Sub(TOPIC.into())
            } else if i % 2 == 0 {
                Plan::Sub(format!("bench.idle.{i}"))
            } else {
                Plan::Idle
            }
        })
        .collect();
    let mut fx = Fixture::new(peer, cfg, plans);
    let warmup = Duration::from_millis(500);
    let dur = Duration::from_secs_f64(cfg.seconds) + warmup;
    let step = paced_step(&mut fx, cfg.rate_10k, dur, warmup);
    eprintln!(
        "  {}: {} connections open, {} measured; p50 {} p99 {} p99.9 {} max {} ({} samples)",
        peer.name(),
        fx.opened.ok + 1,
        fx.per_event,
        fmt_ns(step.lat.p50),
        fmt_ns(step.lat.p99),
        fmt_ns(step.lat.p999),
        fmt_ns(step.lat.max),
        step.lat.count
    );
    let run = ConnRun {
        open: fx.opened.ok + 1,
        measured: fx.per_event,
        lat: step.lat,
        complete: step.drain.is_some() && step.missing == 0,
        cpu: step.cpu,
    };
    fx.finish(notes);
    run
}
