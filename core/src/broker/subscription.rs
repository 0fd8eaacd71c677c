//! A filtered subscription that moves between the log and the ring by itself.
//!
//! ```text
//!            start in the past                       caught up
//!   ┌──────────────────────────┐   log reader says   ┌─────────────┐
//!   │ Log (global or one topic)│ ──── "no more" ───► │ Ring at seq │
//!   └──────────────────────────┘                     └─────────────┘
//!               ▲                lapped: Lagged{missed_from}  │
//!               └─────────────────────────────────────────────┘
//! ```
//!
//! The subscription tracks the next global sequence it must examine. Every
//! event is appended to the log before it enters the ring, and the ring's
//! sequence is the global sequence, so switching sources at that sequence
//! neither skips nor repeats anything. A single-topic subscription replays
//! with the log's per-topic index and joins the ring at a global sequence
//! read *before* the index said "no more", skipping ring records it already
//! delivered; so it cannot miss an append that raced the switch either.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::AckTracker;
use super::event::{parse_ring, split_log_type, DeliveryRef, EventRef, Gap};
use super::filter::Filter;
use super::topics::Topic;
use super::{now_ns, BrokerError, Delivery, Inner};
use crate::log::{LogReader, ReadItem, RecordRef, TopicReader};
use crate::ring::{self, RecvError};
use crate::sync::Ordering;

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// With the next event published.
    Now,
    /// At this global sequence (older than retention: a [`Gap`] first).
    Seq(u64),
    /// At this sequence of the filter's single topic.
    TopicSeq(u64),
    /// At the first event published at or after this time (ns since the epoch).
    Time(u64),
    /// With the last `n` events: of the topic for a single-topic filter,
    /// otherwise the last `n` of the log that pass the filter.
    LastN(u64),
}

/// What the subscription reads from now.
#[derive(Debug)]
enum Source {
    Log(LogReader),
    Topic {
        reader: TopicReader,
        /// `log.next_seq()` read before the last `next_item` call.
        fence: u64,
    },
    Ring(ring::Subscriber),
}

/// Topic names and filter verdicts by topic id, so the ring path does no
/// lookup and no allocation once a topic has been seen.
#[derive(Debug, Default)]
struct TopicCache(Vec<Option<(Arc<str>, bool)>>);

impl TopicCache {
    fn get(&mut self, inner: &Inner, filter: &Filter, id: u64) -> Option<&(Arc<str>, bool)> {
        let index = id.checked_sub(1)? as usize;
        if self.0.get(index).is_none_or(Option::is_none) {
            let topic = inner.topics.by_id(id)?;
            let verdict = filter.matches_topic(&topic.name);
            if self.0.len() <= index {
                self.0.resize(index + 1, None);
            }
            self.0[index] = Some((topic.name.clone(), verdict));
        }
        self.0[index].as_ref()
    }
}

/// A subscription: see the [module docs](self). Not `Sync`: one reader.
#[derive(Debug)]
pub struct Subscription {
    inner: Arc<Inner>,
    filter: Filter,
    /// The filter's single exact topic, if that is all it selects.
    single: Option<Arc<Topic>>,
    source: Source,
    /// The next global sequence to examine.
    next: u64,
    topics: TopicCache,
    progress: Progress,
    /// The start was past the end of the log: its last position then.
    beyond_end: Option<u64>,
}

/// Deliveries between two reads of the clock. A read takes a latency sample
/// (live deliveries) and checks whether the counts are due to be folded.
const TICK: u64 = 16;
/// Longest a subscription that keeps delivering holds its counts back
/// (wall-clock ns; a clock step in either direction folds at once).
const FOLD_INTERVAL_NS: u64 = 100_000_000;
/// Latency samples held before they are folded (one per `TICK` live
/// deliveries, so a fold at least every 1 024 of them).
const SAMPLES: usize = 64;

/// What has been delivered, and the per-subscription metrics not yet folded
/// into the broker's (see [`Progress::fold`] for when they are).
#[derive(Debug)]
struct Progress {
    /// Single topic: the next topic sequence expected. Ring records below it
    /// precede the start or were already delivered from the log (a
    /// single-topic subscription joins the ring at a fence that may lie
    /// behind what its topic reader delivered). Other subscriptions switch
    /// sources at exactly `next`, so they need no such guard.
    next_topic_seq: u64,
    consumer: Option<(String, AckTracker)>,
    /// Deliveries ever, for the clock ticks (not reset by a fold).
    count: u64,
    /// Not yet folded: deliveries, and those of them from the log.
    delivered: u64,
    replayed: u64,
    /// Not yet folded: publish→deliver latencies, ns.
    samples: [u64; SAMPLES],
    sampled: usize,
    /// When the clock last said the counts were folded (`now_ns`).
    folded_at: u64,
}

impl Progress {
    fn event(&mut self, inner: &Inner, seq: u64, topic_seq: u64, timestamp_ns: u64, live: bool) {
        self.next_topic_seq = topic_seq + 1;
        if let Some((_, tracker)) = &mut self.consumer {
            // Cannot fail: deliveries are in increasing sequence order.
            let _ = tracker.delivered(seq);
        }
        self.delivered += 1;
        self.replayed += u64::from(!live);
        self.count += 1;
        // Sampled: reading the clock costs as much as the delivery itself.
        // Counted per subscription, not by sequence: a filtered subscription
        // may never see a sequence divisible by 16.
        if self.count % TICK == 0 {
            self.tick(inner, timestamp_ns, live);
        }
    }

    #[inline(never)]
    fn tick(&mut self, inner: &Inner, timestamp_ns: u64, live: bool) {
        let now = now_ns();
        if live {
            self.samples[self.sampled] = now.saturating_sub(timestamp_ns).max(1);
            self.sampled += 1;
        }
        if self.sampled == SAMPLES || now.abs_diff(self.folded_at) >= FOLD_INTERVAL_NS {
            self.fold(inner);
            self.folded_at = now;
        }
    }

    /// Adds what is pending to the broker's metrics. Called when the samples
    /// are full, at a tick `FOLD_INTERVAL_NS` after the last fold, when a
    /// read finds nothing to deliver and on drop: the metrics never lag a
    /// subscription that waits for events, and lag one that keeps
    /// delivering by about `FOLD_INTERVAL_NS`, with no shared write per
    /// delivery. (Gap notices are rare and are counted at once.)
    fn fold(&mut self, inner: &Inner) {
        let m = &inner.metrics;
        if self.delivered > 0 {
            m.delivered
                .fetch_add(std::mem::take(&mut self.delivered), Ordering::Relaxed);
        }
        if self.replayed > 0 {
            m.replayed
                .fetch_add(std::mem::take(&mut self.replayed), Ordering::Relaxed);
        }
        if self.sampled > 0 {
            m.record_latencies(&self.samples[..self.sampled]);
            self.sampled = 0;
        }
    }
}

/// Outcome of one step of the state machine.
enum Step<R> {
    Done(R),
    /// Something was consumed (filtered out, or a source switch): go on.
    Again,
    /// Nothing to read right now.
    Empty,
}

impl Subscription {
    pub(crate) fn new(
        inner: Arc<Inner>,
        filter: Filter,
        start: StartAt,
        consumer: Option<String>,
    ) -> Result<Subscription, BrokerError> {
        // A single-topic subscription registers its topic, so that its topic
        // sequences can be tracked before the first event (system topics
        // included: only the broker publishes to them).
        let single = match filter.single_topic() {
            Some(name) => Some(inner.topics.get_or_create(name, name.starts_with('$'))?),
            None => None,
        };
        let log = &inner.log;
        // A consistent (global, topic) position for "now".
        let (now_seq, now_topic_seq) = {
            let _state = inner.publish.lock();
            (
                log.next_seq(),
                single
                    .as_ref()
                    .map_or(1, |t| t.next_seq.load(Ordering::Relaxed)),
            )
        };
        let mut next_topic_seq = now_topic_seq;
        // A start past the end of the log (a client whose position comes
        // from a log since reset or restored from a backup) starts at the
        // end, and says so: the events between the end and that position
        // are new to the client, and must not be mistaken for ones it has.
        // On a replica, the position comes from another replica of the same
        // stream, ahead of this one: the subscription waits there instead,
        // and its first event is the one after the position.
        let hold = inner.config.replica;
        let (start, beyond_end) = match (start, &single) {
            (StartAt::Seq(seq), _) if seq > now_seq && !hold => {
                (StartAt::Seq(now_seq), Some(now_seq - 1))
            }
            (StartAt::TopicSeq(seq), Some(_)) if seq > now_topic_seq && !hold => {
                (StartAt::TopicSeq(now_topic_seq), Some(now_topic_seq - 1))
            }
            (start, _) => (start, None),
        };
        let (source, next) = match (start, &single) {
            (StartAt::Now, _) => (Source::Ring(inner.ring.subscribe_at(now_seq)), now_seq),
            // (A replica's hold: the ring's reads wait for `seq`.)
            (StartAt::Seq(seq), _) if seq > now_seq => {
                (Source::Ring(inner.ring.subscribe_at(seq)), seq)
            }
            (StartAt::Seq(seq), _) => {
                // Sequences start at 1: from 0 is from the beginning.
                let seq = seq.max(1);
                (Source::Log(log.reader_from_seq(seq)?), seq)
            }
            (StartAt::Time(ts), _) => {
                let reader = log.reader_from_time(ts)?;
                let next = reader.next_seq();
                (Source::Log(reader), next)
            }
            (StartAt::TopicSeq(topic_seq), Some(topic)) => {
                next_topic_seq = topic_seq.max(1);
                let reader = log.reader_from_topic(topic.id, next_topic_seq);
                (
                    Source::Topic {
                        reader,
                        fence: now_seq,
                    },
                    log.first_seq(),
                )
            }
            (StartAt::TopicSeq(_), None) => return Err(BrokerError::NeedsSingleTopic),
            (StartAt::LastN(n), Some(topic)) => {
                next_topic_seq = now_topic_seq.saturating_sub(n).max(1);
                let reader = log.reader_from_topic(topic.id, next_topic_seq);
                (
                    Source::Topic {
                        reader,
                        fence: now_seq,
                    },
                    log.first_seq(),
                )
            }
            (StartAt::LastN(n), None) => {
                // Not clamped to what retention kept: the part it deleted
                // arrives as a gap notice, never as silence.
                let seq = now_seq.saturating_sub(n).max(1);
                (Source::Log(log.reader_from_seq(seq)?), seq)
            }
        };
        // A consumer has consumed everything before its start: for a topic
        // source, before the global sequence of its first record (`next` is
        // only where that source's global reading begins). A stored
        // checkpoint past the end of the log (a log that lost its tail)
        // falls back to the end, where the subscription starts.
        let start_global = match &source {
            Source::Topic { reader, .. } => reader.start_seq(),
            _ => next,
        };
        let consumer = consumer.map(|name| {
            let checkpoint = inner
                .checkpoints
                .get(&name)
                .unwrap_or(start_global.saturating_sub(1))
                .min(now_seq - 1);
            (name, AckTracker::new(checkpoint))
        });
        inner.metrics.active.fetch_add(1, Ordering::Relaxed);
        let progress = Progress {
            next_topic_seq,
            consumer,
            count: 0,
            delivered: 0,
            replayed: 0,
            samples: [0; SAMPLES],
            sampled: 0,
            folded_at: now_ns(),
        };
        Ok(Subscription {
            inner,
            filter,
            single,
            source,
            next,
            topics: TopicCache::default(),
            progress,
            beyond_end,
        })
    }

    /// `Some(last)` if the start position was past the end of the log:
    /// `last` is the last position that existed (a global sequence, or a
    /// topic sequence for a topic-sequence start), and the subscription
    /// starts right after it. The client's position is not this log's (the
    /// log was reset or restored from a backup), so it must re-sync.
    pub fn beyond_end(&self) -> Option<u64> {
        self.beyond_end
    }

    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Whether the subscription currently reads the live ring (as opposed to
    /// replaying the log).
    pub fn is_live(&self) -> bool {
        matches!(self.source, Source::Ring(_))
    }

    /// The next global sequence the subscription will examine.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Single-topic subscriptions: the next topic sequence they deliver
    /// (those below it came before the start or were delivered). A reader
    /// taking over from this subscription must skip events below it, even
    /// ones published later than `next_seq`: a start beyond the topic's end
    /// (`TopicSeq`) is reached only by events not yet published.
    pub fn next_topic_seq(&self) -> Option<u64> {
        self.single.as_ref().map(|_| self.progress.next_topic_seq)
    }

    /// Hands the next delivery, if one is available now, to `f` (borrowed:
    /// nothing is copied or allocated for it). `Ok(None)`: nothing available.
    pub fn try_next_with<R>(
        &mut self,
        f: impl FnOnce(DeliveryRef<'_>) -> R,
    ) -> Result<Option<R>, BrokerError> {
        let mut f = Some(f);
        loop {
            match self.step(&mut f)? {
                Step::Done(r) => return Ok(Some(r)),
                Step::Again => {}
                Step::Empty => {
                    // Caught up: the caller waits or goes on to other work,
                    // so what this subscription delivered is shown now.
                    self.progress.fold(&self.inner);
                    return Ok(None);
                }
            }
        }
    }

    /// One step of [`Subscription::try_next_with`], for callers that bound
    /// their work: `Some(Some(r))` a delivery, `Some(None)` a record the
    /// filter passed over (or a switch between log and ring), `None`
    /// nothing available now.
    pub(crate) fn step_with<R>(
        &mut self,
        f: impl FnOnce(DeliveryRef<'_>) -> R,
    ) -> Result<Option<Option<R>>, BrokerError> {
        match self.step(&mut Some(f))? {
            Step::Done(r) => Ok(Some(Some(r))),
            Step::Again => Ok(Some(None)),
            Step::Empty => {
                self.progress.fold(&self.inner);
                Ok(None)
            }
        }
    }

    /// The next delivery, if one is available now.
    pub fn try_next(&mut self) -> Result<Option<Delivery>, BrokerError> {
        self.try_next_with(|d| d.to_owned_delivery())
    }

    /// Waits for the next delivery.
    #[allow(clippy::should_implement_trait)] // fallible and blocking: not an Iterator
    pub fn next(&mut self) -> Result<Delivery, BrokerError> {
        loop {
            if let Some(d) = self.try_next()? {
                return Ok(d);
            }
            self.wait(None);
        }
    }

    /// Waits up to `timeout` for the next delivery.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Delivery>, BrokerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = self.try_next()? {
                return Ok(Some(d));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.wait(Some(left)) {
                return self.try_next();
            }
        }
    }

    /// Hands up to `limit` deliveries available now to `f`; returns how many.
    pub fn next_batch(
        &mut self,
        limit: usize,
        mut f: impl FnMut(DeliveryRef<'_>),
    ) -> Result<usize, BrokerError> {
        let mut n = 0;
        while n < limit && self.try_next_with(&mut f)?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// Arms `doorbell` for this subscription: `true` if the caller may sleep
    /// on its fd, `false` if it should read again first.
    pub fn arm(&self, doorbell: &ring::Doorbell) -> bool {
        match &self.source {
            Source::Ring(sub) => sub.arm(doorbell),
            _ => false,
        }
    }

    /// The durable consumer's checkpoint as this subscription tracks it.
    pub(crate) fn consumer_checkpoint(&self) -> Option<u64> {
        let (_, tracker) = self.progress.consumer.as_ref()?;
        Some(tracker.checkpoint())
    }

    /// Acknowledges one delivered event (durable consumers only). The
    /// checkpoint advances over every event delivered and acknowledged.
    pub fn ack(&mut self, seq: u64) -> Result<(), BrokerError> {
        let (name, tracker) = self
            .progress
            .consumer
            .as_mut()
            .ok_or(BrokerError::NotAConsumer)?;
        if let Some(checkpoint) = tracker.ack(seq)? {
            self.inner.commit_checkpoint(name, checkpoint)?;
        }
        Ok(())
    }

    /// Acknowledges every delivered event up to `seq` (durable consumers only).
    pub fn ack_up_to(&mut self, seq: u64) -> Result<(), BrokerError> {
        let (name, tracker) = self
            .progress
            .consumer
            .as_mut()
            .ok_or(BrokerError::NotAConsumer)?;
        if let Some(checkpoint) = tracker.ack_up_to(seq) {
            self.inner.commit_checkpoint(name, checkpoint)?;
        }
        Ok(())
    }

    /// Waits until the ring may have something; `false` on timeout.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        match &self.source {
            Source::Ring(sub) => sub.wait(timeout),
            _ => true,
        }
    }

    /// One step: read one record or gap from the current source, or switch
    /// source.
    fn step<R, F: FnOnce(DeliveryRef<'_>) -> R>(
        &mut self,
        f: &mut Option<F>,
    ) -> Result<Step<R>, BrokerError> {
        let Subscription {
            inner,
            filter,
            single,
            source,
            next,
            topics,
            progress,
            beyond_end: _,
        } = self;
        let inner = &**inner;
        match source {
            Source::Log(reader) => {
                let item = match reader.next_item() {
                    Some(item) => item?,
                    None => {
                        *source = Source::Ring(inner.ring.subscribe_at(*next));
                        return Ok(Step::Again);
                    }
                };
                match item {
                    ReadItem::Gap { from, to } => {
                        *next = to + 1;
                        // Counted at once, not folded: monitoring must see a
                        // loss even if nothing is read after it.
                        inner.metrics.gaps.fetch_add(1, Ordering::Relaxed);
                        Ok(deliver(
                            f,
                            DeliveryRef::Gap(Gap {
                                topic: None,
                                from,
                                to,
                            }),
                        ))
                    }
                    ReadItem::Record(v) => {
                        *next = v.seq + 1;
                        let Some((name, true)) = topics.get(inner, filter, v.topic_id) else {
                            return Ok(Step::Again);
                        };
                        let (event_type, correlation) = split_log_type(v.event_type);
                        if !filter.matches_event(event_type, v.origin) {
                            return Ok(Step::Again);
                        }
                        progress.event(inner, v.seq, v.topic_seq, v.timestamp_ns, false);
                        Ok(deliver(
                            f,
                            DeliveryRef::Event(log_event(&v, name, event_type, correlation)),
                        ))
                    }
                }
            }
            Source::Topic { reader, fence } => {
                // Read the log's end *before* asking the index: everything of
                // this topic below it is in the index by then.
                *fence = inner.log.next_seq();
                let item = match reader.next_item() {
                    Some(item) => item?,
                    None => {
                        *next = (*next).max(*fence);
                        *source = Source::Ring(inner.ring.subscribe_at(*next));
                        return Ok(Step::Again);
                    }
                };
                let Some(topic) = single.as_ref() else {
                    return Ok(Step::Again);
                };
                match item {
                    ReadItem::Gap { from, to } => {
                        progress.next_topic_seq = to + 1;
                        inner.metrics.gaps.fetch_add(1, Ordering::Relaxed);
                        Ok(deliver(
                            f,
                            DeliveryRef::Gap(Gap {
                                topic: Some(topic.name.clone()),
                                from,
                                to,
                            }),
                        ))
                    }
                    ReadItem::Record(v) => {
                        *next = v.seq + 1;
                        let (event_type, correlation) = split_log_type(v.event_type);
                        progress.next_topic_seq = v.topic_seq + 1;
                        if !filter.matches_event(event_type, v.origin) {
                            return Ok(Step::Again);
                        }
                        progress.event(inner, v.seq, v.topic_seq, v.timestamp_ns, false);
                        Ok(deliver(
                            f,
                            DeliveryRef::Event(log_event(&v, &topic.name, event_type, correlation)),
                        ))
                    }
                }
            }
            Source::Ring(sub) => {
                let expected = *next;
                let read = sub.try_read(|seq, bytes| {
                    if seq != expected {
                        // The ring skipped sequences (a replica's skip: the
                        // broker aborts no other claim). Returns with
                        // `next` unchanged, which says so below.
                        return None;
                    }
                    *next = seq + 1;
                    let fields = parse_ring(bytes)?;
                    // See `Progress::next_topic_seq`.
                    if single.is_some() && fields.topic_seq < progress.next_topic_seq {
                        return None;
                    }
                    let (name, verdict) = topics.get(inner, filter, fields.topic_id)?;
                    if !*verdict || !filter.matches_event(fields.event_type, fields.origin) {
                        return None;
                    }
                    progress.event(inner, seq, fields.topic_seq, fields.timestamp_ns, true);
                    let event = EventRef {
                        seq,
                        topic: name,
                        topic_seq: fields.topic_seq,
                        timestamp_ns: fields.timestamp_ns,
                        origin: fields.origin,
                        event_type: std::str::from_utf8(fields.event_type).unwrap_or(""),
                        correlation: std::str::from_utf8(fields.correlation).unwrap_or(""),
                        payload: fields.payload,
                        payload_json: fields.payload_json,
                    };
                    Some(f.take().map(|f| f(DeliveryRef::Event(event))))
                });
                match read {
                    Ok(Some(Some(r))) => Ok(Step::Done(r)),
                    // Skipped sequences: the log says what they were (a
                    // gap), and then holds the record read here.
                    Ok(None) if *next == expected => {
                        *source = back_to_log(inner, single, progress, expected)?;
                        Ok(Step::Again)
                    }
                    Ok(_) => Ok(Step::Again),
                    Err(RecvError::Lagged(lag)) => {
                        inner
                            .metrics
                            .lagged_fallbacks
                            .fetch_add(1, Ordering::Relaxed);
                        *next = lag.missed_from;
                        *source = back_to_log(inner, single, progress, lag.missed_from)?;
                        Ok(Step::Again)
                    }
                    Err(_) => Ok(Step::Empty),
                }
            }
        }
    }
}

/// Where a ring reader goes back to the log, at global sequence `from`:
/// the topic's index for a single-topic subscription, the log otherwise.
#[cold]
fn back_to_log(
    inner: &Inner,
    single: &Option<Arc<Topic>>,
    progress: &Progress,
    from: u64,
) -> Result<Source, BrokerError> {
    Ok(match single {
        Some(topic) => Source::Topic {
            reader: inner
                .log
                .reader_from_topic(topic.id, progress.next_topic_seq),
            fence: from,
        },
        None => Source::Log(inner.log.reader_from_seq(from)?),
    })
}

/// An event read from the log, its type field already split.
fn log_event<'a>(
    v: &RecordRef<'a>,
    topic: &'a Arc<str>,
    event_type: &'a [u8],
    correlation: &'a [u8],
) -> EventRef<'a> {
    EventRef {
        seq: v.seq,
        topic,
        topic_seq: v.topic_seq,
        timestamp_ns: v.timestamp_ns,
        origin: v.origin,
        event_type: std::str::from_utf8(event_type).unwrap_or(""),
        correlation: std::str::from_utf8(correlation).unwrap_or(""),
        payload: v.payload,
        payload_json: false,
    }
}

fn deliver<R, F: FnOnce(DeliveryRef<'_>) -> R>(
    f: &mut Option<F>,
    delivery: DeliveryRef<'_>,
) -> Step<R> {
    match f.take() {
        Some(f) => Step::Done(f(delivery)),
        None => Step::Again,
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.progress.fold(&self.inner);
        self.inner.metrics.active.fetch_sub(1, Ordering::Relaxed);
    }
}
