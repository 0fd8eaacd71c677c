//! The fan-out case: 1 publisher → N subscribers of one topic.

use std::time::Duration;

use herald_benches::load::{Peer, Plan, TOPIC};
use herald_benches::report::{fmt_ns, fmt_rate};

use crate::config::Config;
use crate::fixture::{Fixture, Notes};
use crate::measure::{paced_step, saturated, search_max_rate, Lat, Saturated};

#[derive(Debug, Default, Clone)]
pub(crate) struct FanoutRun {
    pub(crate) sat: Saturated,
    pub(crate) max_rate: f64,
    /// Latency runs, in the order of [`latency_cases`].
    pub(crate) lat: Vec<LatCase>,
    missing: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LatCase {
    pub(crate) rate: f64,
    pub(crate) lat: Lat,
    /// CPU (cores) of the server and of the load generator.
    pub(crate) cpu: (f64, f64),
}

/// Fractions of the lower of the two maxima at which both systems are also
/// measured (the same load for both).
pub(crate) const COMMON_FRACTIONS: [f64; 4] = [0.01, 0.1, 0.25, 0.5];

/// A fixed rate at which both systems are also measured, where both keep
/// up with it: the tail target's load (p99 at a steady 100 000 events/s).
pub(crate) const STEADY_RATE: f64 = 100_000.0;

/// The latency cases: half of each system's own maximum, then the common
/// rates, then [`STEADY_RATE`] (the last case).
pub(crate) fn latency_cases() -> Vec<String> {
    let mut cases = vec!["half of its own max".to_string()];
    cases.extend(
        COMMON_FRACTIONS
            .iter()
            .map(|f| format!("{:.0} % of the lower max", f * 100.0)),
    );
    cases.push(format!("a steady {STEADY_RATE:.0} events/s"));
    cases
}

/// One run of the fan-out case for both peers (order as given).
pub(crate) fn fanout_run(peers: [Peer; 2], cfg: &Config, notes: &mut Notes) -> [FanoutRun; 2] {
    let n = cfg.subscribers;
    let plans = vec![Plan::Sub(TOPIC.into()); n];
    let mut results: [FanoutRun; 2] = Default::default();
    let mut fixtures: Vec<Fixture> = Vec::new();
    let sat_dur = Duration::from_secs_f64(cfg.seconds);
    for (i, &peer) in peers.iter().enumerate() {
        let mut fx = Fixture::new(peer, cfg, plans.clone());
        assert!(
            fx.per_event == n as u64,
            "{}: only {} of {n} subscribers ready",
            peer.name(),
            fx.per_event
        );
        // Warm-up, then the saturated window.
        saturated(&mut fx, cfg.window, Duration::from_millis(500));
        let _ = fx.drain(Duration::from_secs(5));
        let sat = saturated(&mut fx, cfg.window, sat_dur);
        if fx.drain(Duration::from_secs(5)).is_none() {
            fx = fx.restart(cfg, notes);
        }
        eprintln!(
            "  {} saturated: {} deliveries, {} publishes; server {:.0} % CPU, load generator {:.0} %",
            peer.name(),
            fmt_rate(sat.deliveries),
            fmt_rate(sat.publishes),
            sat.server_cpu * 100.0,
            sat.client_cpu * 100.0
        );
        let (fx, max_rate, _) = search_max_rate(fx, cfg, sat.publishes, notes);
        eprintln!(
            "  {} keeps up at {:.0} events/s = {} deliveries",
            peer.name(),
            max_rate,
            fmt_rate(max_rate * n as f64)
        );
        results[i].sat = sat;
        results[i].max_rate = max_rate;
        fixtures.push(fx);
    }
    let lower = results[0].max_rate.min(results[1].max_rate);
    let dur = Duration::from_secs_f64(cfg.seconds);
    let warmup = Duration::from_millis(500);
    for (case, label) in latency_cases().iter().enumerate() {
        for (i, fx) in fixtures.iter_mut().enumerate() {
            let rate = match case {
                0 => results[i].max_rate / 2.0,
                c if c <= COMMON_FRACTIONS.len() => lower * COMMON_FRACTIONS[c - 1],
                _ if lower >= STEADY_RATE => STEADY_RATE,
                _ => 0.0, // one of the two cannot keep up with it
            };
            if rate <= 0.0 {
                if i == 0 && case > COMMON_FRACTIONS.len() {
                    notes.add(format!(
                        "latency at {label} not run: the lower maximum is {lower:.0} events/s"
                    ));
                }
                results[i].lat.push(LatCase::default());
                continue;
            }
            if fx.broken() {
                notes.add(format!(
                    "{}: fixture broken before a latency run",
                    fx.peer.name()
                ));
            }
            let parked0 = fx.server.metric("herald_server_slow_streams_total");
            let lagged0 = fx.server.metric("herald_lagged_fallbacks_total");
            let step = paced_step(fx, rate, dur + warmup, warmup);
            let parked = fx.server.metric("herald_server_slow_streams_total") - parked0;
            let lagged = fx.server.metric("herald_lagged_fallbacks_total") - lagged0;
            if parked > 0.0 || lagged > 0.0 {
                notes.add(format!(
                    "herald: {parked} stream(s) parked as slow and {lagged} lagged fallback(s) during a latency run at \
                     {rate:.0} events/s ({label}), p99 {}",
                    fmt_ns(step.lat.p99)
                ));
            }
            eprintln!(
                "  {} at {:.0}/s ({label}): p50 {} p99 {} p99.9 {} max {} ({} samples, kept up: {}; CPU server {:.2}, load generator {:.2})",
                fx.peer.name(),
                rate,
                fmt_ns(step.lat.p50),
                fmt_ns(step.lat.p99),
                fmt_ns(step.lat.p999),
                fmt_ns(step.lat.max),
                step.lat.count,
                step.kept_up,
                step.cpu.0,
                step.cpu.1
            );
            let r = &mut results[i];
            r.missing = r.missing.max(step.missing);
            r.lat.push(LatCase {
                rate,
                lat: step.lat,
                cpu: step.cpu,
            });
        }
    }
    for fx in fixtures {
        fx.finish(notes);
    }
    results
}
