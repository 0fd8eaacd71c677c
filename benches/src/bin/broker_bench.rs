//! Prints the broker benchmark (the broker rows of `docs/DESIGN.md`, "Performance targets") as markdown tables:
//!
//! 1. **Publish→deliver latency**, one subscriber, 64 B payloads at a paced
//!    rate: the ring alone (`herald_core::ring::Ring`) against the broker with
//!    the log on, durability `Never` and `Interval(100 ms)`; then the same
//!    three publishing and reading back in one thread (no scheduler involved).
//! 2. **Publisher throughput**, one publisher flat out: 0 subscribers, 1
//!    stalled subscriber (drained afterwards: its catch-up rate), 100 live
//!    subscribers polled by a few reader threads; ratios against 0 subscribers,
//!    by wall clock and per publisher CPU-second.
//! 3. **Catch-up rate** of a subscriber that fell 1 M events behind, for a
//!    single-topic filter (per-topic index) and for a pattern filter (global
//!    log scan), with the events on one topic or spread over ten.
//!
//! ```text
//! cargo run --release -p herald-benches --bin broker_bench [-- [--quick] [--runs N]
//!     [--events N (throughput events per run)] [--only latency,inline,throughput,catchup] [--no-verify] [--no-prefault] [--segment-mib N]]
//! ```
//! Progress (and the slowest publishes of the same-thread runs) goes to
//! stderr, the tables to stdout. Every case checks that each subscriber
//! received every event it should have, once and in order. Results and method:
//! `docs/BENCHMARKS.md`, "Broker".
//!
//! Timing: latency stamps are nanoseconds since a shared `Instant`, written
//! into the first 8 payload bytes just before the publish call and compared
//! with `Instant::now()` in the subscriber's delivery callback; the latency
//! subscriber busy-spins on `try_next_with` / `try_read`. The throughput
//! readers poll with `try_next_with` and crossbeam's `Backoff::snooze` (a few
//! spins, then `yield`), as the ring benchmark does.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use hdrhistogram::Histogram;
use herald_benches::report::{
    fmt_ns, fmt_rate, fmt_ratio, machine_description, median, toolchain_and_revision, CpuMeter,
};
use herald_core::broker::{DeliveryRef, Filter, PublishOptions, StartAt, Subscription};
use herald_core::log::Durability;
use herald_core::ring::{RecvError, RingConfig};
use herald_core::{Broker, BrokerConfig, Ring};

const COMMAND: &str = "cargo run --release -p herald-benches --bin broker_bench";
const PAYLOAD: usize = 64;
const EVENT_TYPE: &str = "e";
const TOPIC: &str = "bench.t";
const INTERVAL: Duration = Duration::from_millis(100);

/// `--no-verify`: turn the log's CRC check on read off (to measure its share
/// of catch-up); not the default.
static NO_VERIFY: AtomicBool = AtomicBool::new(false);
/// `--no-prefault`: turn the log's segment prefaulting off (to see what it
/// does to the publisher's tail latency); not the default.
static NO_PREFAULT: AtomicBool = AtomicBool::new(false);
/// `--segment-mib N`: the log's segment size (default: the config default,
/// 64 MiB); moving the segment roll away from a power-of-two event count
/// separates roll stalls from index-growth stalls in the slowest-publish list.
static SEGMENT_MIB: AtomicU64 = AtomicU64::new(0);

/// Sizes of every case.
#[derive(Debug, Clone)]
struct Params {
    runs: usize,
    /// Latency: events per second and events per run.
    rate: u64,
    paced_events: u64,
    /// Latency: the first events of a run are not recorded (warm-up).
    warmup_events: u64,
    /// Throughput: events per run.
    flat_events: u64,
    live_subscribers: usize,
    /// Reader-thread counts tried for the live subscribers.
    reader_threads: Vec<usize>,
    /// Catch-up: events a subscriber falls behind, and topics they spread over.
    catchup_events: u64,
    topics: usize,
}

impl Params {
    fn full() -> Params {
        Params {
            runs: 3,
            rate: 50_000,
            paced_events: 100_000,
            warmup_events: 5_000,
            flat_events: 1_000_000,
            live_subscribers: 100,
            reader_threads: vec![4, 1],
            catchup_events: 1_000_000,
            topics: 10,
        }
    }

    fn quick() -> Params {
        Params {
            runs: 1,
            rate: 20_000,
            paced_events: 4_000,
            warmup_events: 200,
            flat_events: 20_000,
            live_subscribers: 10,
            reader_threads: vec![2],
            catchup_events: 20_000,
            topics: 10,
        }
    }
}

/// A broker in its own temporary data directory, deleted on drop (the broker
/// is dropped first: fields drop in declaration order).
struct Env {
    broker: Broker,
    _dir: tempfile::TempDir,
}

/// Defaults of `BrokerConfig::new` (16 MiB ring, 64 MiB prefaulted segments,
/// CRC check on read) except the durability.
fn open(durability: Durability) -> Env {
    let dir = tempfile::Builder::new()
        .prefix("herald-broker-bench")
        .tempdir()
        .expect("temp dir");
    let mut config = BrokerConfig::new(dir.path());
    config.log.durability = durability;
    config.log.verify_on_read = !NO_VERIFY.load(Ordering::Relaxed);
    if NO_PREFAULT.load(Ordering::Relaxed) {
        config.log.prefault = false;
    }
    match SEGMENT_MIB.load(Ordering::Relaxed) {
        0 => {}
        mib => config.log.segment_size = mib << 20,
    }
    let broker = Broker::open(config).expect("open broker");
    Env { broker, _dir: dir }
}

fn durability_name(d: Durability) -> String {
    match d {
        Durability::Never => "Never".into(),
        Durability::Interval(i) => format!("Interval({} ms)", i.as_millis()),
        Durability::Always => "Always".into(),
    }
}

fn payload_with(stamp: u64, index: u64) -> [u8; PAYLOAD] {
    let mut p = [0x5a_u8; PAYLOAD];
    p[..8].copy_from_slice(&stamp.to_le_bytes());
    p[8..16].copy_from_slice(&index.to_le_bytes());
    p
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

/// Linux's `CLOCK_THREAD_CPUTIME_ID`.
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

/// This thread's CPU time, ns (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`).
fn thread_cpu_ns() -> u64 {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec with the C layout (x86-64 and
    // aarch64 Linux: two 64-bit fields); the call writes only to it.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    } else {
        0
    }
}

/// This thread's (CPU time, time runnable but waiting for a CPU), ns; the
/// second from `/proc/thread-self/schedstat` (0 where it cannot be read).
fn thread_times() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let waiting = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (thread_cpu_ns(), waiting)
}

/// Wall time, and this thread's CPU and run-queue time, of `f`.
fn timed<R>(f: impl FnOnce() -> R) -> (R, Timing) {
    let (cpu0, wait0) = thread_times();
    let t = Instant::now();
    let r = f();
    let wall = t.elapsed();
    let (cpu1, wait1) = thread_times();
    let cpu = Duration::from_nanos(cpu1.saturating_sub(cpu0));
    (
        r,
        Timing {
            wall,
            cpu,
            waiting: Duration::from_nanos(wait1.saturating_sub(wait0)),
        },
    )
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: Duration,
    /// On a CPU.
    cpu: Duration,
    /// Runnable but descheduled (another thread had the CPU).
    waiting: Duration,
}

impl Timing {
    /// Events per second of wall time and per second of this thread's CPU time.
    fn rates(&self, n: u64) -> (f64, f64) {
        let cpu = self.cpu.as_secs_f64();
        (
            n as f64 / self.wall.as_secs_f64(),
            if cpu > 0.0 { n as f64 / cpu } else { f64::NAN },
        )
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

// ---------------------------------------------------------------------------
// 1. Publish→deliver latency

#[derive(Debug, Clone, Copy, PartialEq)]
enum LatencySystem {
    RingAlone,
    Broker(Durability),
}

impl LatencySystem {
    fn name(self) -> String {
        match self {
            LatencySystem::RingAlone => "ring alone (`Ring`, 1 pub → 1 sub)".into(),
            LatencySystem::Broker(d) => {
                format!("broker, log on, durability `{}`", durability_name(d))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    /// Events published more than 100 µs after their scheduled time.
    late: f64,
    delivered: u64,
    others_busy: f64,
}

/// A subscriber loop: `poll` hands the payload of the next record to its
/// callback and says whether there was one. Checks order and completeness.
fn consume_paced(
    n: u64,
    warmup: u64,
    base: Instant,
    mut poll: impl FnMut(&mut dyn FnMut(&[u8])) -> bool,
) -> (Histogram<u64>, u64) {
    let mut hist = new_histogram();
    let mut got = 0u64;
    while got < n {
        let mut on_record = |payload: &[u8]| {
            let now = base.elapsed().as_nanos() as u64;
            let (stamp, index) = (read_u64(payload, 0), read_u64(payload, 8));
            assert_eq!(index, got, "event missing, repeated or out of order");
            if index >= warmup {
                hist.saturating_record(now.saturating_sub(stamp).max(1));
            }
            got += 1;
        };
        // Busy spin, never yield: on a shared machine a yield hands the core
        // to another process for a whole time slice (milliseconds).
        if !poll(&mut on_record) {
            std::hint::spin_loop();
        }
    }
    (hist, got)
}

fn latency_run(system: LatencySystem, p: &Params) -> Latency {
    let n = p.paced_events;
    let interval_ns = 1_000_000_000 / p.rate;
    let base = Instant::now();
    let ready = Arc::new(Barrier::new(2));
    let meter = CpuMeter::start();
    let mut late = 0u64;
    // Paces the publisher: spins until each event's scheduled time, then
    // stamps and publishes it.
    let mut paced = |publish: &mut dyn FnMut(&[u8; PAYLOAD])| {
        let start = Instant::now();
        for i in 0..n {
            let due = start + Duration::from_nanos(i * interval_ns);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            if due.elapsed() > Duration::from_micros(100) {
                late += 1;
            }
            publish(&payload_with(base.elapsed().as_nanos() as u64, i));
        }
    };
    let warmup = p.warmup_events.min(n / 2);
    let (hist, delivered) = match system {
        LatencySystem::RingAlone => {
            let ring = Ring::new(RingConfig {
                capacity: 16 << 20,
                max_record: 64 << 10,
                slots: None,
                first_seq: 1,
            })
            .expect("ring config");
            let mut sub = ring.subscribe();
            let reader = {
                let ready = ready.clone();
                thread::spawn(move || {
                    ready.wait();
                    consume_paced(n, warmup, base, |f| {
                        match sub.try_read(|_, bytes| f(bytes)) {
                            Ok(()) => true,
                            Err(RecvError::Empty) => false,
                            Err(e) => panic!("ring subscriber lost records: {e}"),
                        }
                    })
                })
            };
            let mut publisher = ring.publisher();
            ready.wait();
            paced(&mut |payload| {
                publisher.publish(payload).expect("ring publish");
            });
            reader.join().expect("reader thread")
        }
        LatencySystem::Broker(durability) => {
            let env = open(durability);
            let mut sub = env
                .broker
                .subscribe(Filter::topic(TOPIC).expect("filter"), StartAt::Now)
                .expect("subscribe");
            let reader = {
                let ready = ready.clone();
                thread::spawn(move || {
                    ready.wait();
                    consume_paced(n, warmup, base, |f| {
                        let r = sub
                            .try_next_with(|d| match d {
                                DeliveryRef::Event(e) => f(e.payload),
                                DeliveryRef::Gap(g) => panic!("unexpected gap {g:?}"),
                            })
                            .expect("subscription");
                        r.is_some()
                    })
                })
            };
            let publisher = env.broker.publisher(TOPIC).expect("publisher");
            ready.wait();
            paced(&mut |payload| {
                publisher
                    .publish(EVENT_TYPE, payload, PublishOptions::default())
                    .expect("publish");
            });
            reader.join().expect("reader thread")
        }
    };
    Latency {
        p50: hist.value_at_quantile(0.5) as f64,
        p99: hist.value_at_quantile(0.99) as f64,
        p999: hist.value_at_quantile(0.999) as f64,
        max: hist.max() as f64,
        late: late as f64,
        delivered,
        others_busy: meter.others_busy().unwrap_or(f64::NAN),
    }
}

/// Publish→deliver in one thread: publish one event, then read it back
/// through the subscription; no other thread is involved, so this isolates
/// the work of publishing and delivering from scheduling (which dominates the
/// cross-thread figures on a loaded 2-core machine).
#[derive(Debug, Clone, Copy)]
struct Inline {
    publish_p50: f64,
    publish_p999: f64,
    deliver_p50: f64,
    deliver_p999: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    delivered: u64,
}

fn inline_run(system: LatencySystem, n: u64) -> Inline {
    let (mut total, mut publish, mut deliver) = (new_histogram(), new_histogram(), new_histogram());
    // The five slowest publishes (ns, event index), reported on stderr.
    let mut slowest = [(0u64, 0u64); 5];
    let mut record = |t0: Instant, t1: Instant, t2: Instant| {
        let p = (t1 - t0).as_nanos() as u64;
        if p > slowest[4].0 {
            slowest[4] = (p, publish.len());
            slowest.sort_by(|a, b| b.cmp(a));
        }
        publish.saturating_record((t1 - t0).as_nanos().max(1) as u64);
        deliver.saturating_record((t2 - t1).as_nanos().max(1) as u64);
        total.saturating_record((t2 - t0).as_nanos().max(1) as u64);
    };
    let mut delivered = 0u64;
    match system {
        LatencySystem::RingAlone => {
            let ring = Ring::new(RingConfig {
                capacity: 16 << 20,
                max_record: 64 << 10,
                slots: None,
                first_seq: 1,
            })
            .expect("ring config");
            let mut sub = ring.subscribe();
            let mut publisher = ring.publisher();
            for i in 0..n {
                let payload = payload_with(0, i);
                let t0 = Instant::now();
                publisher.publish(&payload).expect("ring publish");
                let t1 = Instant::now();
                let index = sub
                    .try_read(|_, bytes| read_u64(bytes, 8))
                    .expect("the record just published");
                let t2 = Instant::now();
                assert_eq!(index, i);
                delivered += 1;
                record(t0, t1, t2);
            }
        }
        LatencySystem::Broker(durability) => {
            let env = open(durability);
            let mut sub = env
                .broker
                .subscribe(Filter::topic(TOPIC).expect("filter"), StartAt::Now)
                .expect("subscribe");
            let publisher = env.broker.publisher(TOPIC).expect("publisher");
            for i in 0..n {
                let payload = payload_with(0, i);
                let t0 = Instant::now();
                publisher
                    .publish(EVENT_TYPE, &payload, PublishOptions::default())
                    .expect("publish");
                let t1 = Instant::now();
                let index = sub
                    .try_next_with(|d| match d {
                        DeliveryRef::Event(e) => read_u64(e.payload, 8),
                        DeliveryRef::Gap(g) => panic!("unexpected gap {g:?}"),
                    })
                    .expect("subscription")
                    .expect("the event just published");
                let t2 = Instant::now();
                assert_eq!(index, i);
                delivered += 1;
                record(t0, t1, t2);
            }
        }
    }
    eprintln!(
        "  slowest publishes (event index: time): {}",
        slowest
            .iter()
            .map(|(ns, i)| format!("#{i}: {}", fmt_ns(*ns as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Inline {
        publish_p50: publish.value_at_quantile(0.5) as f64,
        deliver_p50: deliver.value_at_quantile(0.5) as f64,
        publish_p999: publish.value_at_quantile(0.999) as f64,
        deliver_p999: deliver.value_at_quantile(0.999) as f64,
        p50: total.value_at_quantile(0.5) as f64,
        p99: total.value_at_quantile(0.99) as f64,
        p999: total.value_at_quantile(0.999) as f64,
        max: total.max() as f64,
        delivered,
    }
}

// ---------------------------------------------------------------------------
// 2. Publisher throughput

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fanout {
    None(Durability),
    Stalled,
    Live { subscribers: usize, threads: usize },
}

impl Fanout {
    fn name(self) -> String {
        match self {
            Fanout::None(Durability::Never) => "0 subscribers".into(),
            Fanout::None(d) => format!("0 subscribers, durability `{}`", durability_name(d)),
            Fanout::Stalled => "1 stalled subscriber (`StartAt::Now`, read only at the end)".into(),
            Fanout::Live {
                subscribers,
                threads,
            } => format!(
                "{subscribers} live subscribers, {threads} reader thread{} × {} subscriptions",
                if threads == 1 { "" } else { "s" },
                subscribers / threads
            ),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Throughput {
    /// Events per second published.
    publish: f64,
    /// Events per second of the publishing thread's CPU time.
    publish_cpu: f64,
    /// Share of the publish loop's wall time the publisher spent descheduled.
    publish_waiting: f64,
    /// Stalled: catch-up events/s. Live: deliveries/s over all subscribers,
    /// from the first publish until the last delivery.
    drain: f64,
    /// Times a subscription was lapped on the ring and fell back to the log.
    fallbacks: f64,
    /// Fraction of deliveries served from the log.
    replayed: f64,
    others_busy: f64,
}

/// Reads every available delivery of `sub` (up to `limit`), checking that
/// topic sequences are dense from `*got + 1`; returns how many it read.
fn read_checked(sub: &mut Subscription, got: &mut u64, limit: usize) -> usize {
    let mut n = 0;
    while n < limit {
        let r = sub
            .try_next_with(|d| match d {
                DeliveryRef::Event(e) => e.topic_seq,
                DeliveryRef::Gap(g) => panic!("unexpected gap {g:?}"),
            })
            .expect("subscription");
        match r {
            Some(topic_seq) => {
                assert_eq!(
                    topic_seq,
                    *got + 1,
                    "event missing, repeated or out of order"
                );
                *got += 1;
                n += 1;
            }
            None => break,
        }
    }
    n
}

/// Drains `sub` until it has delivered `expected` events in all; returns
/// the time it took.
fn drain(sub: &mut Subscription, expected: u64) -> Timing {
    let mut got = 0;
    timed(|| {
        while got < expected {
            if read_checked(sub, &mut got, usize::MAX) == 0 {
                panic!("subscription ran dry at {got} of {expected}");
            }
        }
    })
    .1
}

fn throughput_run(fanout: Fanout, n: u64) -> Throughput {
    let env = open(match fanout {
        Fanout::None(d) => d,
        _ => Durability::Never,
    });
    let broker = &env.broker;
    let publisher = broker.publisher(TOPIC).expect("publisher");
    let filter = || Filter::topic(TOPIC).expect("filter");
    let meter = CpuMeter::start();
    let publish_all = || {
        timed(|| {
            for i in 0..n {
                publisher
                    .publish(EVENT_TYPE, &payload_with(0, i), PublishOptions::default())
                    .expect("publish");
            }
        })
        .1
    };
    let (publish_time, drain_rate) = match fanout {
        Fanout::None(_) => (publish_all(), f64::NAN),
        Fanout::Stalled => {
            let mut sub = broker.subscribe(filter(), StartAt::Now).expect("subscribe");
            let publish_time = publish_all();
            let catch_up = drain(&mut sub, n);
            (publish_time, catch_up.rates(n).0)
        }
        Fanout::Live {
            subscribers,
            threads,
        } => {
            let start = Arc::new(Barrier::new(threads + 1));
            let finished = Arc::new(AtomicU64::new(0));
            let mut handles = Vec::new();
            for t in 0..threads {
                let mine = subscribers / threads + usize::from(t < subscribers % threads);
                let mut subs: Vec<Subscription> = (0..mine)
                    .map(|_| broker.subscribe(filter(), StartAt::Now).expect("subscribe"))
                    .collect();
                let (start, finished) = (start.clone(), finished.clone());
                handles.push(thread::spawn(move || {
                    let mut got = vec![0u64; subs.len()];
                    let mut done = 0;
                    let backoff = Backoff::new();
                    start.wait();
                    let t0 = Instant::now();
                    while done < subs.len() {
                        let mut progressed = false;
                        for (sub, got) in subs.iter_mut().zip(got.iter_mut()) {
                            if *got == n {
                                continue;
                            }
                            // Batches of 64, round robin.
                            if read_checked(sub, got, 64) > 0 {
                                progressed = true;
                                if *got == n {
                                    done += 1;
                                }
                            }
                        }
                        if progressed {
                            backoff.reset();
                        } else {
                            backoff.snooze();
                        }
                    }
                    finished.fetch_max(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    got.iter().sum::<u64>()
                }));
            }
            start.wait();
            let publish_time = publish_all();
            let delivered: u64 = handles
                .into_iter()
                .map(|h| h.join().expect("reader thread"))
                .sum();
            assert_eq!(delivered, n * subscribers as u64);
            let all = Duration::from_nanos(finished.load(Ordering::Relaxed)).max(publish_time.wall);
            (publish_time, delivered as f64 / all.as_secs_f64())
        }
    };
    let others_busy = meter.others_busy().unwrap_or(f64::NAN);
    let m = broker.metrics();
    assert_eq!(m.published, n);
    let (publish, publish_cpu) = publish_time.rates(n);
    Throughput {
        publish,
        publish_cpu,
        publish_waiting: publish_time.waiting.as_secs_f64() / publish_time.wall.as_secs_f64(),
        drain: drain_rate,
        fallbacks: m.lagged_fallbacks as f64,
        replayed: if m.delivered == 0 {
            f64::NAN
        } else {
            m.replayed as f64 / m.delivered as f64
        },
        others_busy,
    }
}

// ---------------------------------------------------------------------------
// 3. Catch-up

#[derive(Debug, Clone, Copy, PartialEq)]
enum CatchUp {
    /// Single-topic filter; `topics` topics share the events.
    Topic { topics: usize },
    /// Pattern filter selecting one topic of `topics`.
    Pattern { topics: usize },
}

impl CatchUp {
    fn name(self) -> String {
        match self {
            CatchUp::Topic { topics } => {
                format!("single-topic filter `t3.ev`, events over {topics} topic(s)")
            }
            CatchUp::Pattern { topics } => {
                format!("pattern filter `t3.*`, events over {topics} topic(s)")
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CatchUpFigures {
    /// Events delivered per second of draining.
    delivered_rate: f64,
    /// Per second of the draining thread's CPU time.
    delivered_cpu_rate: f64,
    /// Log records behind the subscriber (all topics) per second of draining.
    behind_rate: f64,
    delivered: u64,
    seconds: f64,
    others_busy: f64,
}

/// Publishes `n` events round robin over `topics` topics while a
/// single-topic and a pattern subscriber on `t3.ev` are stalled (subscribed
/// with `StartAt::Now` before the first publish), then drains each in turn.
fn catchup_run(topics: usize, n: u64) -> [(CatchUp, CatchUpFigures); 2] {
    assert!((1..=10).contains(&topics));
    let env = open(Durability::Never);
    let broker = &env.broker;
    let names: Vec<String> = (0..topics)
        .map(|i| format!("t{}.ev", if topics == 1 { 3 } else { i }))
        .collect();
    let publishers: Vec<_> = names
        .iter()
        .map(|t| broker.publisher(t).expect("publisher"))
        .collect();
    let mut single = broker
        .subscribe(Filter::topic("t3.ev").expect("filter"), StartAt::Now)
        .expect("subscribe");
    let mut pattern = broker
        .subscribe(Filter::patterns(&["t3.*"]).expect("filter"), StartAt::Now)
        .expect("subscribe");
    for i in 0..n {
        publishers[i as usize % topics]
            .publish(EVENT_TYPE, &payload_with(0, i), PublishOptions::default())
            .expect("publish");
    }
    let expected = (0..n)
        .filter(|i| names[*i as usize % topics] == "t3.ev")
        .count() as u64;
    let mut out = Vec::new();
    for (case, sub) in [
        (CatchUp::Topic { topics }, &mut single),
        (CatchUp::Pattern { topics }, &mut pattern),
    ] {
        let meter = CpuMeter::start();
        let took = drain(sub, expected);
        assert!(
            sub.try_next().expect("subscription").is_none(),
            "more than expected"
        );
        let (delivered_rate, delivered_cpu_rate) = took.rates(expected);
        out.push((
            case,
            CatchUpFigures {
                delivered_rate,
                delivered_cpu_rate,
                behind_rate: n as f64 / took.wall.as_secs_f64(),
                delivered: expected,
                seconds: took.wall.as_secs_f64(),
                others_busy: meter.others_busy().unwrap_or(f64::NAN),
            },
        ));
    }
    [out[0], out[1]]
}

// ---------------------------------------------------------------------------
// Report

fn pct(f: f64) -> String {
    if f.is_finite() {
        format!("{:.0} %", f * 100.0)
    } else {
        "–".into()
    }
}

fn med<T>(runs: &[T], field: impl Fn(&T) -> f64) -> f64 {
    median(&runs.iter().map(field).collect::<Vec<_>>())
}

fn machine() -> String {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let free = run("free", &["-h"]);
    let mem = free
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>();
    format!(
        "{}; nproc {}; free -h: total {}, available {}",
        machine_description(),
        run("nproc", &[]),
        mem.get(1).unwrap_or(&"?"),
        mem.get(6).unwrap_or(&"?")
    )
}

struct Args {
    params: Params,
    latency: bool,
    inline: bool,
    throughput: bool,
    catchup: bool,
}

fn parse_args() -> Args {
    let mut quick = false;
    let mut runs: Option<usize> = None;
    let mut flat_events: Option<u64> = None;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()),
            "--events" => flat_events = args.next().and_then(|v| v.parse().ok()),
            "--only" => only = args.next(),
            "--no-verify" => NO_VERIFY.store(true, Ordering::Relaxed),
            "--no-prefault" => NO_PREFAULT.store(true, Ordering::Relaxed),
            "--segment-mib" => {
                SEGMENT_MIB.store(
                    args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
                    Ordering::Relaxed,
                );
            }
            other => {
                eprintln!("unknown argument {other:?}\nusage: broker_bench [--quick] [--runs N] [--events N] [--only latency,inline,throughput,catchup] [--no-verify] [--no-prefault] [--segment-mib N]");
                std::process::exit(2);
            }
        }
    }
    let mut params = if quick {
        Params::quick()
    } else {
        Params::full()
    };
    if let Some(r) = runs {
        params.runs = r.max(1);
    }
    if let Some(n) = flat_events {
        params.flat_events = n.max(1);
    }
    let wants = |what: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|w| w == what))
    };
    Args {
        params,
        latency: wants("latency"),
        inline: wants("inline"),
        throughput: wants("throughput"),
        catchup: wants("catchup"),
    }
}

/// Runs `case` on every item of `cases`, `runs` times, interleaved (run 1 of
/// every case, then run 2, …) so slow drifts in the machine's load spread
/// over all cases; returns the runs per case.
fn interleaved<C: Copy, T>(
    cases: &[C],
    runs: usize,
    label: impl Fn(C) -> String,
    mut case: impl FnMut(C) -> T,
) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = cases.iter().map(|_| Vec::new()).collect();
    for r in 0..runs {
        for (i, &c) in cases.iter().enumerate() {
            eprintln!("{} (run {} of {runs})", label(c), r + 1);
            out[i].push(case(c));
        }
    }
    out
}

fn main() {
    let args = parse_args();
    let p = &args.params;
    let mut out = String::new();
    let quick = p.flat_events < Params::full().flat_events;
    writeln!(
        out,
        "Command: `{COMMAND}`{}",
        if quick { " -- --quick" } else { "" }
    )
    .unwrap();
    writeln!(out).unwrap();
    writeln!(out, "Machine: {}", machine()).unwrap();
    writeln!(out).unwrap();
    writeln!(out, "Build: {}", toolchain_and_revision()).unwrap();
    writeln!(out).unwrap();
    writeln!(
        out,
        "Medians of {} run(s), cases interleaved. Broker: `BrokerConfig::new(tempdir)` defaults (16 MiB ring, 64 MiB \
         segments, prefault on, CRC check on read) except the durability; event type `{EVENT_TYPE}`, {PAYLOAD} B payloads. \
         \"Others busy\": share of all cores' time used by other processes during the case (the machine is shared).",
        p.runs
    )
    .unwrap();
    if NO_VERIFY.load(Ordering::Relaxed) {
        writeln!(
            out,
            "**`--no-verify`: the log's CRC check on read is off.**\n"
        )
        .unwrap();
    }
    if NO_PREFAULT.load(Ordering::Relaxed) {
        writeln!(
            out,
            "**`--no-prefault`: the log's segment prefaulting is off.**\n"
        )
        .unwrap();
    }
    if SEGMENT_MIB.load(Ordering::Relaxed) != 0 {
        writeln!(
            out,
            "**`--segment-mib {}`: log segments of that size.**\n",
            SEGMENT_MIB.load(Ordering::Relaxed)
        )
        .unwrap();
    }
    writeln!(out).unwrap();

    let systems = [
        LatencySystem::RingAlone,
        LatencySystem::Broker(Durability::Never),
        LatencySystem::Broker(Durability::Interval(INTERVAL)),
    ];
    if args.latency {
        let all = interleaved(
            &systems,
            p.runs,
            |s| format!("latency: {}", s.name()),
            |s| {
                let l = latency_run(s, p);
                assert_eq!(l.delivered, p.paced_events);
                l
            },
        );
        writeln!(
            out,
            "### Publish→deliver latency, 1 publisher thread → 1 subscriber thread, {} events/s, {} events ({} not recorded as warm-up)\n",
            p.rate, p.paced_events, p.warmup_events
        )
        .unwrap();
        writeln!(out, "| system | p50 | p99 | p99.9 | max | p99.9 vs ring | published >100 µs late | others busy |").unwrap();
        writeln!(out, "|---|---|---|---|---|---|---|---|").unwrap();
        let ring_p999 = med(&all[0], |l| l.p999);
        for (system, runs) in systems.iter().zip(&all) {
            let p999 = med(runs, |l| l.p999);
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.0} | {} |",
                system.name(),
                fmt_ns(med(runs, |l| l.p50)),
                fmt_ns(med(runs, |l| l.p99)),
                fmt_ns(p999),
                fmt_ns(med(runs, |l| l.max)),
                fmt_ratio(p999 / ring_p999),
                med(runs, |l| l.late),
                pct(med(runs, |l| l.others_busy)),
            )
            .unwrap();
        }
        writeln!(out).unwrap();
    }
    if args.inline {
        let n = p.flat_events;
        let all = interleaved(
            &systems,
            p.runs,
            |s| format!("same-thread latency: {}", s.name()),
            |s| {
                let l = inline_run(s, n);
                assert_eq!(l.delivered, n);
                l
            },
        );
        writeln!(
            out,
            "### Publish→deliver in one thread (publish, then read it back), {n} events flat out\n"
        )
        .unwrap();
        writeln!(
            out,
            "| system | publish p50 | publish p99.9 | deliver p50 | deliver p99.9 | total p50 | total p99 | total p99.9 | total max | p50 vs ring |"
        )
        .unwrap();
        writeln!(out, "|---|---|---|---|---|---|---|---|---|---|").unwrap();
        let ring_p50 = med(&all[0], |l| l.p50);
        for (system, runs) in systems.iter().zip(&all) {
            let p50 = med(runs, |l| l.p50);
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                system.name(),
                fmt_ns(med(runs, |l| l.publish_p50)),
                fmt_ns(med(runs, |l| l.publish_p999)),
                fmt_ns(med(runs, |l| l.deliver_p50)),
                fmt_ns(med(runs, |l| l.deliver_p999)),
                fmt_ns(p50),
                fmt_ns(med(runs, |l| l.p99)),
                fmt_ns(med(runs, |l| l.p999)),
                fmt_ns(med(runs, |l| l.max)),
                fmt_ratio(p50 / ring_p50),
            )
            .unwrap();
        }
        writeln!(out).unwrap();
    }

    if args.throughput {
        let mut cases = vec![
            Fanout::None(Durability::Never),
            Fanout::None(Durability::Interval(INTERVAL)),
            Fanout::Stalled,
        ];
        for &threads in &p.reader_threads {
            cases.push(Fanout::Live {
                subscribers: p.live_subscribers,
                threads,
            });
        }
        let all = interleaved(
            &cases,
            p.runs,
            |f| format!("throughput: {}", f.name()),
            |f| throughput_run(f, p.flat_events),
        );
        writeln!(out, "### Publisher throughput, 1 publisher flat out, {} events, durability `Never` unless stated\n", p.flat_events)
            .unwrap();
        writeln!(
            out,
            "| subscribers | publish rate | vs 0 subscribers | per publisher CPU-second | vs 0 subscribers | publisher descheduled | \
             catch-up / delivery rate | lapped → log fallbacks | delivered from the log | others busy |"
        )
        .unwrap();
        writeln!(out, "|---|---|---|---|---|---|---|---|---|---|").unwrap();
        let base = med(&all[0], |t| t.publish);
        let base_cpu = med(&all[0], |t| t.publish_cpu);
        for (fanout, runs) in cases.iter().zip(&all) {
            let rate = med(runs, |t| t.publish);
            let cpu = med(runs, |t| t.publish_cpu);
            let drain = med(runs, |t| t.drain);
            let drain = match fanout {
                Fanout::None(_) => "–".to_string(),
                Fanout::Stalled => format!("catch-up {}", fmt_rate(drain)),
                Fanout::Live { .. } => format!("{} deliveries", fmt_rate(drain)),
            };
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
                fanout.name(),
                fmt_rate(rate),
                fmt_ratio(rate / base),
                fmt_rate(cpu),
                fmt_ratio(cpu / base_cpu),
                pct(med(runs, |t| t.publish_waiting)),
                drain,
                med(runs, |t| t.fallbacks),
                pct(med(runs, |t| t.replayed)),
                pct(med(runs, |t| t.others_busy)),
            )
            .unwrap();
        }
        writeln!(out).unwrap();
    }

    if args.catchup {
        let layouts = [1, p.topics];
        let all = interleaved(
            &layouts,
            p.runs,
            |t| format!("catch-up: events over {t} topic(s)"),
            |t| catchup_run(t, p.catchup_events),
        );
        writeln!(
            out,
            "### Catch-up of a subscriber {} events behind (stalled since before the first publish; log in the page cache)\n",
            p.catchup_events
        )
        .unwrap();
        writeln!(
            out,
            "| filter | events delivered | drain time | delivered/s | per CPU-second | log records behind/s | others busy |"
        )
        .unwrap();
        writeln!(out, "|---|---|---|---|---|---|---|").unwrap();
        for runs in &all {
            for i in 0..2 {
                let case = runs[0][i].0;
                let fig: Vec<CatchUpFigures> = runs.iter().map(|r| r[i].1).collect();
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    case.name(),
                    fig[0].delivered,
                    fmt_ns(med(&fig, |f| f.seconds) * 1e9),
                    fmt_rate(med(&fig, |f| f.delivered_rate)),
                    fmt_rate(med(&fig, |f| f.delivered_cpu_rate)),
                    fmt_rate(med(&fig, |f| f.behind_rate)),
                    pct(med(&fig, |f| f.others_busy)),
                )
                .unwrap();
            }
        }
        writeln!(out).unwrap();
    }
    print!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case at tiny sizes: each delivers every event, in order (the
    /// run functions assert it; the counts are checked here too).
    #[test]
    fn every_case_delivers_every_event() {
        let p = Params {
            paced_events: 2_000,
            warmup_events: 100,
            ..Params::quick()
        };
        for system in [
            LatencySystem::RingAlone,
            LatencySystem::Broker(Durability::Never),
            LatencySystem::Broker(Durability::Interval(INTERVAL)),
        ] {
            assert_eq!(latency_run(system, &p).delivered, 2_000);
            assert_eq!(inline_run(system, 2_000).delivered, 2_000);
        }
        for fanout in [
            Fanout::None(Durability::Never),
            Fanout::Stalled,
            Fanout::Live {
                subscribers: 6,
                threads: 2,
            },
        ] {
            let t = throughput_run(fanout, 5_000);
            assert!(t.publish > 0.0);
        }
        for (topics, expected) in [(1, 5_000), (10, 500)] {
            for (_, f) in catchup_run(topics, 5_000) {
                assert_eq!(f.delivered, expected);
            }
        }
    }
}
