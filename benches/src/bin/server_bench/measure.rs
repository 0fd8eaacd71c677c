//! Measurements on a fixture: a paced step, a saturated window, the
//! maximum-rate search.

use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald_benches::report::{fmt_ns, proc_ticks};

use crate::config::Config;
use crate::fixture::{Fixture, Notes};
use crate::servers::clock_ticks_per_sec;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Lat {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) count: u64,
}

impl Lat {
    fn of(h: &Histogram<u64>) -> Lat {
        if h.is_empty() {
            return Lat {
                p50: f64::NAN,
                p99: f64::NAN,
                p999: f64::NAN,
                max: f64::NAN,
                count: 0,
            };
        }
        Lat {
            p50: h.value_at_quantile(0.5) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
            count: h.len(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) kept_up: bool,
    sent_rate: f64,
    pub(crate) drain: Option<Duration>,
    pub(crate) lat: Lat,
    /// Events each measured subscriber fell short of, at worst.
    pub(crate) missing: u64,
    /// CPU (cores) of the server and of this process while publishing.
    pub(crate) cpu: (f64, f64),
}

/// Publishes at `rate` events/s for `dur` (batches of what is due, each
/// stamped when written), records latency after `warmup`, then waits for
/// the subscribers to receive everything.
pub(crate) fn paced_step(fx: &mut Fixture, rate: f64, dur: Duration, warmup: Duration) -> Step {
    let _ = fx.clients.snapshot(); // resets the histogram
    let s0 = fx.publ.sent;
    let (srv0, own0) = (fx.server.ticks(), proc_ticks("self"));
    let t0 = Instant::now();
    let mut recording = false;
    let mut failed = false;
    loop {
        let el = t0.elapsed();
        if el >= dur {
            break;
        }
        if !recording && el >= warmup {
            fx.clients.record(true);
            recording = true;
        }
        let done = fx.publ.sent - s0;
        let due = (el.as_secs_f64() * rate) as u64 + 1;
        if due > done {
            if fx.publ.publish((due - done).min(256) as usize).is_err() {
                failed = true;
                break;
            }
        } else {
            let next = Duration::from_secs_f64(done as f64 / rate);
            thread::sleep(next.saturating_sub(el).max(Duration::from_micros(20)));
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let (srv1, own1) = (fx.server.ticks(), proc_ticks("self"));
    let tck = clock_ticks_per_sec();
    let cpu = (
        (srv1 - srv0) as f64 / tck / el,
        (own1 - own0) as f64 / tck / el,
    );
    let sent = fx.publ.sent - s0;
    // Kept up: everything arrived within 5 % of the step (100 ms at least)
    // after the last publish, and the publisher could send at the rate.
    let limit = Duration::from_secs_f64((0.05 * dur.as_secs_f64()).max(0.1));
    let drain = fx.drain(limit.max(Duration::from_secs(3)));
    fx.clients.record(false);
    let snap = fx.clients.snapshot();
    let kept_up = !failed
        && drain.is_some_and(|d| d <= limit)
        && sent as f64 >= 0.97 * rate * dur.as_secs_f64()
        && !fx.broken();
    Step {
        kept_up,
        sent_rate: sent as f64 / el,
        drain,
        lat: Lat::of(&snap.hist),
        missing: fx.publ.sent.saturating_sub(snap.measured_min_events),
        cpu,
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Saturated {
    pub(crate) deliveries: f64,
    pub(crate) publishes: f64,
    /// CPU used, in cores (1.0 = one core busy all the time).
    pub(crate) server_cpu: f64,
    pub(crate) client_cpu: f64,
}

/// Publishes as fast as the subscribers receive: at most `window` events
/// in flight per subscriber (on average).
pub(crate) fn saturated(fx: &mut Fixture, window: u64, dur: Duration) -> Saturated {
    let per = fx.per_event.max(1);
    let d0 = fx.clients.delivered();
    let s0 = fx.publ.sent;
    let (srv0, own0) = (fx.server.ticks(), proc_ticks("self"));
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        let received = (fx.clients.delivered() - d0) / per;
        let in_flight = (fx.publ.sent - s0).saturating_sub(received);
        if in_flight < window {
            if fx
                .publ
                .publish((window - in_flight).min(64) as usize)
                .is_err()
            {
                break;
            }
        } else {
            thread::sleep(Duration::from_micros(50));
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let (srv1, own1) = (fx.server.ticks(), proc_ticks("self"));
    let tck = clock_ticks_per_sec();
    Saturated {
        deliveries: (fx.clients.delivered() - d0) as f64 / el,
        publishes: (fx.publ.sent - s0) as f64 / el,
        server_cpu: (srv1 - srv0) as f64 / tck / el,
        client_cpu: (own1 - own0) as f64 / tck / el,
    }
}

/// The highest paced rate (events/s) at which the subscribers keep up,
/// searched from `start`: up by 1.3× while passing, down by 0.7× while
/// failing, then bisected (geometric mean) until within 6 %.
pub(crate) fn search_max_rate(
    mut fx: Fixture,
    cfg: &Config,
    start: f64,
    notes: &mut Notes,
) -> (Fixture, f64, Vec<(f64, bool)>) {
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let mut rate = start.max(10.0);
    let mut tried = Vec::new();
    let dur = Duration::from_secs_f64(cfg.step_seconds);
    for _ in 0..cfg.search_steps {
        let step = paced_step(&mut fx, rate, dur, dur);
        eprintln!(
            "    {} at {:.0}/s: {} (sent {:.0}/s, drained in {})",
            fx.peer.name(),
            rate,
            if step.kept_up {
                "kept up"
            } else {
                "fell behind"
            },
            step.sent_rate,
            step.drain
                .map_or("> 3 s".to_string(), |d| fmt_ns(d.as_nanos() as f64)),
        );
        tried.push((rate, step.kept_up));
        if step.kept_up {
            lo = lo.max(rate);
        } else {
            hi = hi.min(rate);
            if step.drain.is_none() || fx.broken() {
                eprintln!(
                    "    restarting {} (backlog or lost connections)",
                    fx.peer.name()
                );
                fx = fx.restart(cfg, notes);
            }
        }
        if lo > 0.0 && hi / lo < 1.06 {
            break;
        }
        rate = if hi.is_infinite() {
            rate * 1.3
        } else if lo == 0.0 {
            rate * 0.7
        } else {
            (lo * hi).sqrt()
        };
    }
    (fx, lo, tried)
}
