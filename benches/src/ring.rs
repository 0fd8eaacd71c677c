//! The ring fan-out workload: one publisher thread, N subscriber threads,
//! 64-byte messages, run the same way against Herald's ring and its peers.
//!
//! # The workload
//! - Each message is 64 bytes: its sequence number (bytes 0..8, little
//!   endian), the publish timestamp in nanoseconds since a shared [`Instant`]
//!   origin (bytes 8..16, taken just before the publish call, so waiting for
//!   room counts as latency), and filler.
//! - Every subscriber checks the sequence numbers (no duplicate, no
//!   reordering; gaps are counted as losses) and records one-way latency
//!   (`now - timestamp`) into its own hdrhistogram, merged afterwards.
//! - [`Pace::FlatOut`] publishes as fast as the system lets it;
//!   [`Pace::PerSecond`] publishes on a fixed schedule so queues stay short.
//! - The run ends when every subscriber has seen the last message. Throughput
//!   is messages delivered per subscriber per second of that run.
//!
//! # Fairness
//! The machine may have fewer cores than threads, so nobody busy-spins: every
//! wait, in every system, is `try_*` followed by crossbeam's
//! [`Backoff::snooze`] (a few spins, then `yield`), reset after progress.
//! That is exactly Herald's default [`WaitStrategy::SpinYield`]. Each system
//! is sized to 16 384 messages: Herald's ring has 1 MiB of data and 16 384
//! slots, tokio's broadcast channel and `bus` hold 16 384 values, the
//! disruptor has 16 384 slots and each crossbeam channel is `bounded(16384)`.
//!
//! Herald's ring is published to by its single publisher
//! (`Ring::with_single_publisher`, as the broker uses it; the disruptor's
//! producer is single too), except in `herald (tethered, shared publisher)`,
//! which uses a shared `Publisher` (the compare-and-swap claim).
//!
//! [`WaitStrategy::SpinYield`]: herald_core::ring::WaitStrategy::SpinYield

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use disruptor::Producer as _;
use hdrhistogram::Histogram;
use herald_core::ring::{Publisher, SinglePublisher, Subscriber};
use herald_core::{Ring, RingConfig};

/// Message size in bytes.
pub const MSG_LEN: usize = 64;
/// Messages every system can hold before the publisher must wait or overwrite.
pub const CAPACITY: usize = 16_384;
/// Herald subscribers read at most this many records per `read_batch` call.
const READ_BATCH: usize = 256;

type Msg = [u8; MSG_LEN];

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    /// Herald's ring with tethered (lossless) subscribers; blocking `publish`.
    HeraldTethered,
    /// As `HeraldTethered`, but published to by a shared publisher.
    HeraldTetheredShared,
    /// Herald's ring with untethered (default, lossy) subscribers.
    Herald,
    /// `tokio::sync::broadcast` (lossy: slow receivers get `Lagged`).
    Tokio,
    /// `bus::Bus` (lossless: the publisher waits for the slowest reader).
    Bus,
    /// The `disruptor` crate, single producer, one `EventPoller` per subscriber.
    Disruptor,
    /// `crossbeam-channel`: one `bounded` channel per subscriber.
    Crossbeam,
}

impl System {
    /// Every system, Herald first.
    pub const ALL: [System; 7] = [
        System::HeraldTethered,
        System::HeraldTetheredShared,
        System::Herald,
        System::Tokio,
        System::Bus,
        System::Disruptor,
        System::Crossbeam,
    ];

    /// The name used in tables and benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            System::HeraldTethered => "herald (tethered)",
            System::HeraldTetheredShared => "herald (tethered, shared publisher)",
            System::Herald => "herald (untethered)",
            System::Tokio => "tokio::broadcast",
            System::Bus => "bus",
            System::Disruptor => "disruptor",
            System::Crossbeam => "crossbeam-channel",
        }
    }

    /// A short identifier (criterion ids, command-line filters).
    pub fn id(self) -> &'static str {
        match self {
            System::HeraldTethered => "herald_tethered",
            System::HeraldTetheredShared => "herald_tethered_shared",
            System::Herald => "herald",
            System::Tokio => "tokio_broadcast",
            System::Bus => "bus",
            System::Disruptor => "disruptor",
            System::Crossbeam => "crossbeam_channel",
        }
    }

    /// Whether slow subscribers lose messages instead of holding the publisher back.
    pub fn is_lossy(self) -> bool {
        matches!(self, System::Herald | System::Tokio)
    }

    /// Whether this is one of Herald's configurations.
    pub fn is_herald(self) -> bool {
        matches!(
            self,
            System::Herald | System::HeraldTethered | System::HeraldTetheredShared
        )
    }

    /// Whether this is Herald with tethered subscribers.
    fn is_tethered_herald(self) -> bool {
        matches!(self, System::HeraldTethered | System::HeraldTetheredShared)
    }
}

/// How fast the publisher goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As fast as the system accepts messages.
    FlatOut,
    /// On a fixed schedule of this many messages per second.
    PerSecond(u64),
}

/// One case of the fan-out benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Subscriber threads.
    pub subscribers: usize,
    /// Messages published.
    pub messages: u64,
    /// Publisher pacing.
    pub pace: Pace,
    /// Record the latency of every message whose sequence number is a
    /// multiple of this (a power of two; 1 records all).
    pub sample_every: u64,
}

/// What one run measured.
#[derive(Debug)]
pub struct Outcome {
    /// The system run.
    pub system: System,
    /// The case run.
    pub workload: Workload,
    /// From the first publish until every subscriber saw the last message.
    pub elapsed: Duration,
    /// From the first publish until the last publish returned.
    pub publish_elapsed: Duration,
    /// Messages delivered per subscriber (index = subscriber).
    pub delivered: Vec<u64>,
    /// Messages that arrived out of order or twice, summed over subscribers
    /// (must be zero for every system).
    pub misordered: u64,
    /// Merged one-way latency, nanoseconds.
    pub latency: Histogram<u64>,
}

impl Outcome {
    /// Messages delivered per subscriber per second (mean over subscribers).
    pub fn per_subscriber_rate(&self) -> f64 {
        self.total_delivered() as f64 / self.delivered.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Messages delivered per second, all subscribers together.
    pub fn aggregate_rate(&self) -> f64 {
        self.total_delivered() as f64 / self.elapsed.as_secs_f64()
    }

    /// Messages accepted by the publisher per second.
    pub fn publish_rate(&self) -> f64 {
        self.workload.messages as f64 / self.publish_elapsed.as_secs_f64()
    }

    /// Deliveries summed over subscribers.
    pub fn total_delivered(&self) -> u64 {
        self.delivered.iter().sum()
    }

    /// Messages lost, summed over subscribers.
    pub fn lost(&self) -> u64 {
        self.workload.messages * self.delivered.len() as u64 - self.total_delivered()
    }

    /// Fraction of the published messages an average subscriber received.
    pub fn delivered_fraction(&self) -> f64 {
        self.total_delivered() as f64
            / (self.workload.messages * self.delivered.len() as u64) as f64
    }

    /// Latency at `quantile` (0..=1), nanoseconds.
    pub fn latency_ns(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64
    }

    /// Checks that every subscriber got its messages in order and, for a
    /// lossless system, all of them.
    pub fn check(&self) -> Result<(), String> {
        let n = self.workload.messages;
        if self.misordered != 0 {
            return Err(format!(
                "{}: {} messages out of order or duplicated",
                self.system.name(),
                self.misordered
            ));
        }
        for (i, &got) in self.delivered.iter().enumerate() {
            if got > n || (!self.system.is_lossy() && got != n) || got == 0 {
                return Err(format!(
                    "{}: subscriber {i} received {got} of {n} messages",
                    self.system.name()
                ));
            }
        }
        Ok(())
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// A subscriber's view of the messages it receives.
struct Tracker {
    origin: Instant,
    total: u64,
    sample_mask: u64,
    next: u64,
    received: u64,
    misordered: u64,
    done: bool,
    hist: Histogram<u64>,
}

impl Tracker {
    fn new(origin: Instant, workload: &Workload) -> Self {
        assert!(
            workload.sample_every.is_power_of_two(),
            "sample_every must be a power of two"
        );
        Tracker {
            origin,
            total: workload.messages,
            sample_mask: workload.sample_every - 1,
            next: 0,
            received: 0,
            misordered: 0,
            done: workload.messages == 0,
            hist: new_histogram(),
        }
    }

    #[inline]
    fn on_message(&mut self, msg: &[u8]) {
        let seq = u64::from_le_bytes(msg[0..8].try_into().expect("8 bytes"));
        if seq < self.next {
            self.misordered += 1;
            return;
        }
        self.next = seq + 1;
        self.received += 1;
        if seq & self.sample_mask == 0 {
            let sent = u64::from_le_bytes(msg[8..16].try_into().expect("8 bytes"));
            let now = self.origin.elapsed().as_nanos() as u64;
            self.hist.saturating_record(now.saturating_sub(sent).max(1));
        }
        if self.next == self.total {
            self.done = true;
        }
    }
}

/// Fills in the sequence number and the publish timestamp.
#[inline]
fn stamp(msg: &mut Msg, seq: u64, origin: Instant) {
    msg[0..8].copy_from_slice(&seq.to_le_bytes());
    msg[8..16].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_le_bytes());
}

/// Waits for the publisher's next scheduled send (yields while far away).
#[inline]
fn pace(start: Instant, pace: Pace, seq: u64) {
    if let Pace::PerSecond(rate) = pace {
        let due = start + Duration::from_nanos(seq * 1_000_000_000 / rate);
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            if due - now > Duration::from_micros(5) {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs the subscribers (`read` loops until its tracker is done) and the
/// publisher (`publish` must not return before the message is accepted).
fn drive<R: Send>(
    system: System,
    workload: &Workload,
    readers: Vec<R>,
    read: impl Fn(R, &mut Tracker) + Sync,
    mut publish: impl FnMut(&Msg),
) -> Outcome {
    let origin = Instant::now();
    let barrier = Barrier::new(readers.len() + 1);
    let (stats, publish_elapsed, start) = thread::scope(|s| {
        let handles: Vec<_> = readers
            .into_iter()
            .map(|r| {
                let (read, barrier) = (&read, &barrier);
                s.spawn(move || {
                    let mut tracker = Tracker::new(origin, workload);
                    barrier.wait();
                    read(r, &mut tracker);
                    (tracker, Instant::now())
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut msg = [0xA5u8; MSG_LEN];
        for seq in 0..workload.messages {
            pace(start, workload.pace, seq);
            stamp(&mut msg, seq, origin);
            publish(&msg);
        }
        let publish_elapsed = start.elapsed();
        let stats: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("subscriber panicked"))
            .collect();
        (stats, publish_elapsed, start)
    });
    let mut latency = new_histogram();
    let mut end = start;
    let mut delivered = Vec::with_capacity(stats.len());
    let mut misordered = 0;
    for (tracker, done) in stats {
        latency.add(&tracker.hist).expect("same histogram bounds");
        end = end.max(done);
        delivered.push(tracker.received);
        misordered += tracker.misordered;
    }
    Outcome {
        system,
        workload: *workload,
        elapsed: end - start,
        publish_elapsed,
        delivered,
        misordered,
        latency,
    }
}

/// Runs one case against one system.
pub fn run(system: System, workload: &Workload) -> Outcome {
    let n = workload.subscribers;
    match system {
        System::HeraldTethered | System::HeraldTetheredShared | System::Herald => {
            let (ring, mut publisher) = herald_ring(system);
            let readers: Vec<Subscriber> = (0..n)
                .map(|_| {
                    if system.is_tethered_herald() {
                        ring.subscribe_tethered()
                            .expect("at most MAX_TETHERED subscribers")
                    } else {
                        ring.subscribe()
                    }
                })
                .collect();
            drive(system, workload, readers, herald_read, |msg| {
                publisher.publish(msg);
            })
        }
        System::Tokio => {
            let (tx, _) = tokio::sync::broadcast::channel::<Msg>(CAPACITY);
            let readers: Vec<_> = (0..n).map(|_| tx.subscribe()).collect();
            drive(system, workload, readers, tokio_read, |msg| {
                tx.send(*msg).expect("receivers alive");
            })
        }
        System::Bus => {
            let mut bus = bus::Bus::<Msg>::new(CAPACITY);
            let readers: Vec<_> = (0..n).map(|_| bus.add_rx()).collect();
            drive(system, workload, readers, bus_read, |msg| {
                let backoff = Backoff::new();
                while bus.try_broadcast(*msg).is_err() {
                    backoff.snooze();
                }
            })
        }
        System::Disruptor => {
            let (readers, producer) = disruptor_pipeline(n);
            match producer {
                DisruptorProducer::Single(mut p) => {
                    drive(system, workload, readers, disruptor_read, |msg| {
                        disruptor_publish(&mut p, msg);
                    })
                }
                DisruptorProducer::Multi(mut p) => {
                    drive(system, workload, readers, disruptor_read, |msg| {
                        disruptor_publish(&mut p, msg);
                    })
                }
            }
        }
        System::Crossbeam => {
            let (senders, readers): (Vec<_>, Vec<_>) = (0..n)
                .map(|_| crossbeam_channel::bounded::<Msg>(CAPACITY))
                .unzip();
            drive(system, workload, readers, crossbeam_read, |msg| {
                for tx in &senders {
                    crossbeam_send(tx, msg);
                }
            })
        }
    }
}

/// Herald's publisher in a run: the ring's single publisher, or a shared one.
enum HeraldPublisher {
    Single(SinglePublisher),
    Shared(Publisher),
}

impl HeraldPublisher {
    #[inline]
    fn publish(&mut self, msg: &Msg) {
        match self {
            Self::Single(p) => p.publish(msg),
            Self::Shared(p) => p.publish(msg),
        }
        .expect("64 B fits");
    }
}

/// Herald's ring sized like the peers (1 MiB of data, 16 384 slots of 64 B)
/// and the publisher `system` uses.
fn herald_ring(system: System) -> (Ring, HeraldPublisher) {
    let config = RingConfig {
        capacity: CAPACITY * MSG_LEN,
        max_record: MSG_LEN,
        slots: Some(CAPACITY),
        first_seq: 0,
    };
    if system == System::HeraldTetheredShared {
        let ring = Ring::new(config).expect("valid ring configuration");
        let publisher = HeraldPublisher::Shared(ring.publisher());
        (ring, publisher)
    } else {
        let (ring, publisher) =
            Ring::with_single_publisher(config).expect("valid ring configuration");
        (ring, HeraldPublisher::Single(publisher))
    }
}

fn herald_read(mut sub: Subscriber, t: &mut Tracker) {
    let backoff = Backoff::new();
    while !t.done {
        match sub.read_batch(READ_BATCH, |_, bytes| t.on_message(bytes)) {
            Ok(0) => backoff.snooze(),
            Ok(_) => backoff.reset(),
            // Lost messages show up as a gap in the sequence numbers.
            Err(_lagged) => backoff.reset(),
        }
    }
}

fn tokio_read(mut rx: tokio::sync::broadcast::Receiver<Msg>, t: &mut Tracker) {
    use tokio::sync::broadcast::error::TryRecvError;
    let backoff = Backoff::new();
    while !t.done {
        match rx.try_recv() {
            Ok(msg) => {
                t.on_message(&msg);
                backoff.reset();
            }
            Err(TryRecvError::Empty) => backoff.snooze(),
            Err(TryRecvError::Lagged(_)) => backoff.reset(),
            Err(TryRecvError::Closed) => break,
        }
    }
}

fn bus_read(mut rx: bus::BusReader<Msg>, t: &mut Tracker) {
    use std::sync::mpsc::TryRecvError;
    let backoff = Backoff::new();
    while !t.done {
        match rx.try_recv() {
            Ok(msg) => {
                t.on_message(&msg);
                backoff.reset();
            }
            Err(TryRecvError::Empty) => backoff.snooze(),
            Err(TryRecvError::Disconnected) => break,
        }
    }
}

/// The disruptor's event: one message.
#[derive(Debug)]
struct Event(Msg);

type Poller = disruptor::EventPoller<Event, disruptor::SingleProducerBarrier>;

enum DisruptorProducer {
    /// One consumer: the crate's single-consumer barrier.
    Single(disruptor::SingleProducer<Event, disruptor::SingleConsumerBarrier>),
    Multi(disruptor::SingleProducer<Event, disruptor::MultiConsumerBarrier>),
}

/// A single-producer disruptor with one event poller per subscriber (the
/// crate's single-consumer barrier when there is one).
fn disruptor_pipeline(subscribers: usize) -> (Vec<Poller>, DisruptorProducer) {
    let factory = || Event([0; MSG_LEN]);
    // The wait strategy only applies to threads the disruptor manages; pollers
    // are driven by our own loops.
    let builder = disruptor::build_single_producer(CAPACITY, factory, disruptor::BusySpin);
    if subscribers == 1 {
        let (poller, builder) = builder.new_event_poller();
        return (vec![poller], DisruptorProducer::Single(builder.build()));
    }
    let mut builder = builder.with_multi_consumer();
    let mut pollers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let (poller, next) = builder.new_event_poller();
        pollers.push(poller);
        builder = next;
    }
    (pollers, DisruptorProducer::Multi(builder.build()))
}

#[inline]
fn disruptor_publish(producer: &mut impl disruptor::Producer<Event>, msg: &Msg) {
    let backoff = Backoff::new();
    while producer.try_publish(|e| e.0 = *msg).is_err() {
        backoff.snooze();
    }
}

fn disruptor_read(mut poller: Poller, t: &mut Tracker) {
    use disruptor::Polling;
    let backoff = Backoff::new();
    while !t.done {
        match poller.poll() {
            Ok(mut events) => {
                for event in &mut events {
                    t.on_message(&event.0);
                }
                backoff.reset();
            }
            Err(Polling::NoEvents) => backoff.snooze(),
            Err(Polling::Shutdown) => break,
        }
    }
}

#[inline]
fn crossbeam_send(tx: &crossbeam_channel::Sender<Msg>, msg: &Msg) {
    use crossbeam_channel::TrySendError;
    let backoff = Backoff::new();
    let mut msg = *msg;
    loop {
        match tx.try_send(msg) {
            Ok(()) => return,
            Err(TrySendError::Full(m)) => {
                msg = m;
                backoff.snooze();
            }
            Err(TrySendError::Disconnected(_)) => panic!("receiver dropped"),
        }
    }
}

fn crossbeam_read(rx: crossbeam_channel::Receiver<Msg>, t: &mut Tracker) {
    use crossbeam_channel::TryRecvError;
    let backoff = Backoff::new();
    while !t.done {
        match rx.try_recv() {
            Ok(msg) => {
                t.on_message(&msg);
                backoff.reset();
            }
            Err(TryRecvError::Empty) => backoff.snooze(),
            Err(TryRecvError::Disconnected) => break,
        }
    }
}

/// The floor under every system: stamping and checking the same messages in
/// one thread, with no hand-over at all.
pub fn baseline(workload: &Workload) -> Duration {
    let origin = Instant::now();
    let mut trackers: Vec<_> = (0..workload.subscribers)
        .map(|_| Tracker::new(origin, workload))
        .collect();
    let mut msg = [0xA5u8; MSG_LEN];
    let start = Instant::now();
    for seq in 0..workload.messages {
        stamp(&mut msg, seq, origin);
        for t in &mut trackers {
            t.on_message(black_box(&msg));
        }
    }
    let elapsed = start.elapsed();
    black_box(&trackers);
    elapsed
}

/// Publish cost, single-threaded: `subscribers` subscribers exist but do not
/// run concurrently. Each round publishes `batch` messages (timed; at most a
/// quarter of the capacity, so no system ever waits or overwrites), then the
/// same thread drains every subscriber (not timed). Returns nanoseconds per
/// publish for each round.
pub fn publish_cost(system: System, subscribers: usize, rounds: usize, batch: usize) -> Vec<f64> {
    assert!(
        batch <= CAPACITY / 4,
        "a round must fit in every system without waiting"
    );
    let mut msg = [0xA5u8; MSG_LEN];
    let mut out = Vec::with_capacity(rounds);
    let mut seq = 0u64;
    let mut timed = |publish: &mut dyn FnMut(&Msg), drain: &mut dyn FnMut() -> usize| {
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..batch {
                // No timestamp: the clock read would cost as much as some publishes.
                msg[0..8].copy_from_slice(&seq.to_le_bytes());
                seq += 1;
                publish(&msg);
            }
            let ns = start.elapsed().as_nanos() as f64 / batch as f64;
            let drained = drain();
            assert_eq!(
                drained,
                batch * subscribers,
                "{}: every subscriber drains every message",
                system.name()
            );
            out.push(ns);
        }
    };
    let count = |_: u64, bytes: &[u8]| {
        black_box(bytes);
    };
    match system {
        System::HeraldTethered | System::HeraldTetheredShared | System::Herald => {
            let (ring, mut publisher) = herald_ring(system);
            let mut subs: Vec<Subscriber> = (0..subscribers)
                .map(|_| {
                    if system.is_tethered_herald() {
                        ring.subscribe_tethered()
                            .expect("at most MAX_TETHERED subscribers")
                    } else {
                        ring.subscribe()
                    }
                })
                .collect();
            timed(&mut |m| publisher.publish(m), &mut || {
                let mut total = 0;
                for sub in &mut subs {
                    while let Ok(got @ 1..) = sub.read_batch(READ_BATCH, count) {
                        total += got;
                    }
                }
                total
            });
        }
        System::Tokio => {
            let (tx, _) = tokio::sync::broadcast::channel::<Msg>(CAPACITY);
            let mut subs: Vec<_> = (0..subscribers).map(|_| tx.subscribe()).collect();
            timed(
                &mut |m| {
                    tx.send(*m).expect("receivers alive");
                },
                &mut || {
                    let mut total = 0;
                    for rx in &mut subs {
                        while let Ok(m) = rx.try_recv() {
                            black_box(m);
                            total += 1;
                        }
                    }
                    total
                },
            );
        }
        System::Bus => {
            let mut bus = bus::Bus::<Msg>::new(CAPACITY);
            let mut subs: Vec<_> = (0..subscribers).map(|_| bus.add_rx()).collect();
            timed(
                &mut |m| bus.try_broadcast(*m).expect("room for the round"),
                &mut || {
                    let mut total = 0;
                    for rx in &mut subs {
                        while let Ok(m) = rx.try_recv() {
                            black_box(m);
                            total += 1;
                        }
                    }
                    total
                },
            );
        }
        System::Disruptor => {
            let (mut pollers, producer) = disruptor_pipeline(subscribers);
            let mut drain = || {
                let mut total = 0;
                for poller in &mut pollers {
                    while let Ok(mut events) = poller.poll() {
                        for e in &mut events {
                            black_box(&e.0);
                            total += 1;
                        }
                    }
                }
                total
            };
            match producer {
                DisruptorProducer::Single(mut p) => timed(
                    &mut |m| {
                        p.try_publish(|e| e.0 = *m)
                            .map(drop)
                            .expect("room for the round")
                    },
                    &mut drain,
                ),
                DisruptorProducer::Multi(mut p) => timed(
                    &mut |m| {
                        p.try_publish(|e| e.0 = *m)
                            .map(drop)
                            .expect("room for the round")
                    },
                    &mut drain,
                ),
            }
        }
        System::Crossbeam => {
            let (senders, receivers): (Vec<_>, Vec<_>) = (0..subscribers)
                .map(|_| crossbeam_channel::bounded::<Msg>(CAPACITY))
                .unzip();
            timed(
                &mut |m| {
                    for tx in &senders {
                        tx.try_send(*m).expect("room for the round");
                    }
                },
                &mut || {
                    receivers
                        .iter()
                        .map(|rx| rx.try_iter().map(black_box).count())
                        .sum()
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness itself must be able to fail: every system, in both paces,
    /// delivers what it should, in order, to every subscriber.
    #[test]
    fn every_system_delivers_the_quick_workload() {
        for system in System::ALL {
            for subscribers in [1, 4] {
                for pace in [Pace::FlatOut, Pace::PerSecond(200_000)] {
                    let workload = Workload {
                        subscribers,
                        messages: 20_000,
                        pace,
                        sample_every: 1,
                    };
                    let outcome = run(system, &workload);
                    outcome
                        .check()
                        .unwrap_or_else(|e| panic!("{pace:?}, {subscribers} subscribers: {e}"));
                    if !system.is_lossy() {
                        assert_eq!(outcome.lost(), 0);
                        assert_eq!(outcome.latency.len(), 20_000 * subscribers as u64);
                    }
                    assert!(outcome.latency_ns(0.5) > 0.0);
                }
            }
        }
    }

    #[test]
    fn publish_cost_drains_every_subscriber() {
        for system in System::ALL {
            for subscribers in [1, 64] {
                let ns = publish_cost(system, subscribers, 2, 1024);
                assert_eq!(ns.len(), 2);
                assert!(ns.iter().all(|&x| x > 0.0), "{}", system.name());
            }
        }
    }

    #[test]
    fn check_rejects_a_lossless_system_that_lost_messages() {
        let workload = Workload {
            subscribers: 1,
            messages: 10,
            pace: Pace::FlatOut,
            sample_every: 1,
        };
        let outcome = Outcome {
            system: System::Bus,
            workload,
            elapsed: Duration::from_millis(1),
            publish_elapsed: Duration::from_millis(1),
            delivered: vec![9],
            misordered: 0,
            latency: new_histogram(),
        };
        assert!(outcome.check().is_err());
    }
}
