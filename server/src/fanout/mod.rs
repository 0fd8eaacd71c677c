//! Per-worker event routing: the worker, not each connection, is the
//! broker's subscriber.
//!
//! A worker reads every event once through its *feed* (one broker
//! subscription to all topics) and routes it through a topic→streams map
//! (single-topic streams) and a token trie ([`index`]: pattern and
//! multi-topic streams) to the streams of its connections (an SSE
//! connection has one stream, a WebSocket one per subscription). Each frame
//! is encoded once per worker and shared between connections as `Bytes`.
//!
//! A stream is in one of three states:
//! - **live**: in the map, fed by the feed;
//! - **catching up**: it owns a broker subscription that replays from its
//!   start position (the log, then the ring). When that subscription is
//!   caught up and at or past the feed's position, the stream goes live;
//!   the feed skips events below the stream's position, so the hand-over
//!   loses and repeats nothing;
//! - **parked**: its connection's output reached the bound. It is not fed;
//!   it remembers the first event it missed and, once the client drains,
//!   catches up from there with a fresh subscription (invariant 3 of `docs/DESIGN.md`: a slow
//!   client never slows the others and never loses an event).
//!
//! A WebSocket subscription may ask for batches: its events are gathered
//! (a [`encode::WsBatch`]) in whichever state it is, and the batch is
//! written as one message when it has `max_events`, when its first event
//! has waited `max_delay` ([`Router::flush_batches`], which the worker calls
//! after each round of routing and catching up, and again by the deadline
//! [`Router::batch_deadline`] gives), before a gap notice, and before the
//! stream parks. A stream's position moves as events join its batch; what
//! [`Router::last`] reports and what is counted as delivered move when the
//! batch is written, so a batch dropped with its stream was never counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use herald_core::broker::{
    BrokerError, DeliveryRef, EventRef, Filter, StartAt, Subscription, SYSTEM_PREFIXES,
};
use herald_core::ring::Doorbell;
use herald_core::Broker;

pub(crate) mod encode;
mod index;

use crate::api::ops::BatchPolicy;
use crate::conn::output::Output;
use crate::metrics::ServerStats;
use encode::{
    append_ws_message, encode_own, stomp_message_prefix, ws_event_prefix, Frames, SseForm, WsBatch,
};
use index::TopicIndex;

/// A stream's index in its worker's router.
pub(crate) type StreamId = usize;

/// Events the feed routes per call, so that sockets get written in between.
const FEED_BUDGET: usize = 4096;
/// Deliveries one catching-up stream gets per call.
const CATCH_UP_BUDGET: usize = 256;
/// Most tokens the topics and patterns of a worker's pattern and
/// multi-topic streams hold in all. The trie has a node per token, up to
/// about 540 bytes each (a chain of single-child nodes): this keeps it under
/// about 70 MB per worker.
pub(crate) const MAX_WORKER_PATTERN_TOKENS: usize = 1 << 17;

/// Where the router finds a connection's output.
pub(crate) trait Outputs {
    fn output(&mut self, conn: usize) -> Option<&mut Output>;
    /// Writes what the connection's socket takes now (errors are left for
    /// the worker to find on its next write).
    fn write_now(&mut self, conn: usize);
}

/// How a stream's events are framed.
pub(crate) enum Encoding {
    /// Server-Sent Events, in this form.
    Sse(SseForm),
    /// WebSocket event messages of subscription `id`, batched or not.
    Ws {
        id: String,
        prefix: Bytes,
        batch: Option<BatchPolicy>,
    },
    /// STOMP `MESSAGE` frames of subscription `id`, in WebSocket messages;
    /// `destination`: the prefix its topic was named with (`/topic/`).
    Stomp {
        id: String,
        destination: String,
        prefix: Bytes,
    },
}

impl Encoding {
    #[cfg(test)]
    pub(crate) fn ws(id: &str) -> Encoding {
        Encoding::Ws {
            id: id.to_owned(),
            prefix: ws_event_prefix(id),
            batch: None,
        }
    }

    /// Batched WebSocket event messages (`events`) of subscription `id`.
    pub(crate) fn ws_batched(id: &str, policy: Option<BatchPolicy>) -> Encoding {
        Encoding::Ws {
            id: id.to_owned(),
            prefix: ws_event_prefix(id),
            batch: policy,
        }
    }

    pub(crate) fn stomp(id: &str, destination: &str) -> Encoding {
        Encoding::Stomp {
            id: id.to_owned(),
            destination: destination.to_owned(),
            prefix: stomp_message_prefix(id, destination),
        }
    }
}

/// A batched stream's batch.
struct Batching {
    policy: BatchPolicy,
    msg: WsBatch,
    /// When its first event joined.
    since: Instant,
    /// The stream's `last` before its first event joined.
    before: (u64, u64),
    /// In the router's `batching` list.
    listed: bool,
}

impl Batching {
    /// Notes the first event of a batch: call before it joins.
    fn start(&mut self, now: Instant, last: (u64, u64)) {
        if self.msg.len() == 0 {
            self.since = now;
            self.before = last;
        }
    }

    fn full(&self) -> bool {
        self.msg.len() >= self.policy.max_events
    }
}

enum State {
    Live,
    CatchingUp(Box<Subscription>),
    /// Resumes at this position once the connection drains.
    Parked(StartAt),
}

struct Stream {
    conn: usize,
    filter: Filter,
    encoding: Encoding,
    /// Tenant prefix stripped from topic names sent back.
    prefix_len: usize,
    state: State,
    /// Every matching event below this global sequence has been delivered
    /// (live streams: or is below the feed's position).
    next: u64,
    /// The last event delivered: (global, topic) sequence.
    last: (u64, u64),
    /// Single-topic streams: no event below this topic sequence (it came
    /// before the start, or was delivered).
    next_topic_seq: u64,
    /// Its subscription failed: retried on the next wake-up, not at once.
    failed: bool,
    /// What it counts against [`MAX_WORKER_PATTERN_TOKENS`] (0: single
    /// topic, not in the trie).
    tokens: usize,
    /// Batched delivery: the batch being gathered.
    batch: Option<Box<Batching>>,
}

/// One worker's streams and its feed.
pub(crate) struct Router {
    broker: Broker,
    feed: Subscription,
    streams: Vec<Option<Stream>>,
    free: Vec<StreamId>,
    /// Live single-topic streams by topic.
    by_topic: HashMap<Arc<str>, Vec<StreamId>, ahash::RandomState>,
    /// Live streams of patterns or several topics.
    index: TopicIndex,
    /// The streams `index` matched for the event being routed.
    matched: Vec<StreamId>,
    /// The trie tokens of every stream, live or not (each goes live).
    tokens: usize,
    /// Streams catching up or parked.
    behind: Vec<StreamId>,
    frames: Frames,
    /// Connections given output since the last [`Router::take_dirty`].
    dirty: Vec<usize>,
    max_output: usize,
    /// Events written to connections, not yet reported.
    delivered: u64,
    /// Streams parked, not yet reported.
    parked_count: u64,
    /// Streams found slow while routing one event (kept for its buffer).
    parked: Vec<(StreamId, StartAt)>,
    /// Streams with a batch gathered (or, once written, not yet dropped).
    batching: Vec<StreamId>,
    /// When the first gathered batch is due, as of the last flush.
    batch_deadline: Option<Instant>,
    /// Batch messages written by this worker's streams, not yet reported.
    batch_messages: Arc<AtomicU64>,
}

impl Router {
    pub(crate) fn new(broker: Broker, max_output: usize) -> Result<Router, BrokerError> {
        // Every topic, the system's (`$presence.…`, `$deadletter.…`) included.
        let system = SYSTEM_PREFIXES.map(|prefix| format!("{prefix}>"));
        let mut everything = vec![">"];
        everything.extend(system.iter().map(String::as_str));
        let everything = Filter::patterns(&everything)?;
        let feed = broker.subscribe(everything, StartAt::Now)?;
        Ok(Router {
            broker,
            feed,
            streams: Vec::new(),
            free: Vec::new(),
            by_topic: HashMap::default(),
            index: TopicIndex::default(),
            matched: Vec::new(),
            tokens: 0,
            behind: Vec::new(),
            frames: Frames::default(),
            dirty: Vec::new(),
            max_output,
            delivered: 0,
            parked_count: 0,
            parked: Vec::new(),
            batching: Vec::new(),
            batch_deadline: None,
            batch_messages: Arc::default(),
        })
    }

    /// Whether a stream of `filter` fits [`MAX_WORKER_PATTERN_TOKENS`]:
    /// ask before [`Router::add`].
    pub(crate) fn admits(&self, filter: &Filter) -> bool {
        self.tokens + trie_tokens(filter) <= MAX_WORKER_PATTERN_TOKENS
    }

    /// How many wildcard patterns a stream's filter names.
    pub(crate) fn wildcards(&self, id: StreamId) -> usize {
        self.streams
            .get(id)
            .and_then(Option::as_ref)
            .map_or(0, |s| {
                let patterns = s.filter.topic_patterns().iter();
                patterns.filter(|p| !p.is_exact()).count()
            })
    }

    /// Adds a stream for connection `conn`, reading `sub` until it catches
    /// up with the feed.
    pub(crate) fn add(
        &mut self,
        conn: usize,
        sub: Subscription,
        encoding: Encoding,
        prefix_len: usize,
    ) -> StreamId {
        let tokens = trie_tokens(sub.filter());
        self.tokens += tokens;
        let batch = match &encoding {
            Encoding::Ws {
                id,
                batch: Some(policy),
                ..
            } => Some(Box::new(Batching {
                policy: *policy,
                msg: WsBatch::new(id, self.batch_messages.clone()),
                since: Instant::now(),
                before: (0, 0),
                listed: false,
            })),
            _ => None,
        };
        let stream = Stream {
            batch,
            conn,
            tokens,
            filter: sub.filter().clone(),
            encoding,
            prefix_len,
            next: sub.next_seq(),
            state: State::CatchingUp(Box::new(sub)),
            last: (0, 0),
            next_topic_seq: 0,
            failed: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.streams[id] = Some(stream);
                id
            }
            None => {
                self.streams.push(Some(stream));
                self.streams.len() - 1
            }
        };
        self.behind.push(id);
        id
    }

    /// Removes a stream (unsubscribe, or its connection closed).
    pub(crate) fn remove(&mut self, id: StreamId) {
        let Some(stream) = self.streams.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.tokens -= stream.tokens;
        // A batch not written is dropped, never counted.
        if stream.batch.as_ref().is_some_and(|b| b.listed) {
            drop_from(&mut self.batching, id);
        }
        match stream.state {
            State::Live => self.unlink(id, &stream.filter),
            State::CatchingUp(_) | State::Parked(_) => drop_from(&mut self.behind, id),
        }
        self.free.push(id);
    }

    /// The last event delivered on a stream (written to its connection's
    /// output, not gathered in a batch): (global, topic) sequence.
    pub(crate) fn last(&self, id: StreamId) -> (u64, u64) {
        self.streams
            .get(id)
            .and_then(Option::as_ref)
            .map_or((0, 0), |s| match &s.batch {
                Some(b) if b.msg.len() > 0 => b.before,
                _ => s.last,
            })
    }

    /// Writes the batches that are due (their first event waited their
    /// `max_delay`; at once for 0) and notes when the next one is.
    pub(crate) fn flush_batches(&mut self, outs: &mut impl Outputs) {
        self.batch_deadline = None;
        if self.batching.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.batching.len() {
            let id = self.batching[i];
            let Some(stream) = self.streams[id].as_mut() else {
                self.batching.swap_remove(i);
                continue;
            };
            let Some(b) = stream.batch.as_deref_mut() else {
                self.batching.swap_remove(i);
                continue;
            };
            if b.msg.len() > 0 {
                let due = b.since + b.policy.max_delay;
                if due > now {
                    self.batch_deadline = Some(self.batch_deadline.map_or(due, |d| d.min(due)));
                    i += 1;
                    continue;
                }
                match outs.output(stream.conn) {
                    Some(out) => {
                        self.delivered += b.msg.write(out) as u64;
                        self.dirty.push(stream.conn);
                    }
                    None => b.msg.clear(),
                }
            }
            b.listed = false;
            self.batching.swap_remove(i);
        }
    }

    /// When the first gathered batch is due (as of the last
    /// [`Router::flush_batches`]): the worker wakes by then.
    pub(crate) fn batch_deadline(&self) -> Option<Instant> {
        self.batch_deadline
    }

    /// Connections that got output since the last call (each once or more).
    pub(crate) fn take_dirty(&mut self, into: &mut Vec<usize>) {
        into.append(&mut self.dirty);
    }

    /// Adds what happened since the last call to the server's counters.
    pub(crate) fn report(&mut self, stats: &ServerStats) {
        if self.delivered > 0 {
            let n = std::mem::take(&mut self.delivered);
            stats.deliveries.fetch_add(n, Ordering::Relaxed);
        }
        let batches = self.batch_messages.swap(0, Ordering::Relaxed);
        if batches > 0 {
            stats.ws_batches.fetch_add(batches, Ordering::Relaxed);
        }
        if self.parked_count > 0 {
            let n = std::mem::take(&mut self.parked_count);
            stats.slow_streams.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Arms `doorbell` for the feed and every catching-up stream: `true` if
    /// the worker may sleep. Call after writing the outputs: a stream whose
    /// output is still full waits for its socket, not for the doorbell.
    pub(crate) fn arm(&self, doorbell: &Doorbell, outs: &mut impl Outputs) -> bool {
        self.feed.arm(doorbell)
            && self.behind.iter().all(|&id| match &self.streams[id] {
                Some(Stream {
                    state: State::CatchingUp(sub),
                    failed: false,
                    conn,
                    ..
                }) => {
                    outs.output(*conn)
                        .is_none_or(|o| o.pending() >= self.max_output)
                        || sub.arm(doorbell)
                }
                // A parked stream resumes once its output has drained to half.
                Some(Stream {
                    state: State::Parked(_),
                    conn,
                    ..
                }) => outs
                    .output(*conn)
                    .is_none_or(|o| o.pending() >= self.max_output / 2),
                _ => true,
            })
    }

    /// Routes what the feed has to the live streams. Returns whether it may
    /// have more right away.
    pub(crate) fn route(&mut self, outs: &mut impl Outputs) -> bool {
        let mut routed = 0;
        let now = Instant::now();
        while routed < FEED_BUDGET {
            let Router {
                feed,
                streams,
                by_topic,
                index,
                matched,
                frames,
                dirty,
                max_output,
                delivered,
                parked,
                batching,
                ..
            } = self;
            let mut lost_feed = None;
            let step = feed.try_next_with(|d| match d {
                DeliveryRef::Event(e) => {
                    frames.clear();
                    let mut to = Deliver {
                        streams,
                        outs,
                        frames,
                        dirty,
                        parked,
                        max_output: *max_output,
                        delivered,
                        batching,
                        now,
                    };
                    if let Some(ids) = by_topic.get(e.topic.as_ref()) {
                        for &id in ids {
                            to.deliver(id, &e);
                        }
                    }
                    index.matches(e.topic, matched);
                    for &id in matched.iter() {
                        to.deliver(id, &e);
                    }
                }
                // The feed itself fell behind retention (a worker stalled
                // for longer than the log keeps events). Every live stream
                // replays on its own and gets its own precise gap notice.
                DeliveryRef::Gap(g) => lost_feed = Some(g.from),
            });
            match step {
                Ok(Some(())) => routed += 1,
                Ok(None) => return false,
                Err(e) => {
                    // Not retried in a loop: a fresh feed from now on, and
                    // every live stream replays (or fails) on its own.
                    tracing::warn!("the worker's feed failed: {e}; starting a new one");
                    match self
                        .broker
                        .subscribe(self.feed.filter().clone(), StartAt::Now)
                    {
                        Ok(feed) => {
                            let lost_from = self.feed.next_seq();
                            self.feed = feed;
                            self.park_all_live(lost_from, outs);
                        }
                        Err(e) => tracing::warn!("cannot start a new feed: {e}"),
                    }
                    return false;
                }
            }
            let mut parked = std::mem::take(&mut self.parked);
            for (id, at) in parked.drain(..) {
                self.park(id, at, outs);
            }
            self.parked = parked;
            if let Some(from) = lost_feed {
                self.park_all_live(from, outs);
            }
        }
        true
    }

    /// Feeds catching-up streams from their own subscriptions, resumes
    /// parked streams whose connection drained, and hands caught-up streams
    /// to the feed. Returns whether some stream may have more right away.
    pub(crate) fn catch_up(&mut self, outs: &mut impl Outputs) -> bool {
        let mut more = false;
        let feed_next = self.feed.next_seq();
        let now = Instant::now();
        let mut i = 0;
        while i < self.behind.len() {
            let id = self.behind[i];
            let Some(stream) = self.streams[id].as_mut() else {
                self.behind.swap_remove(i);
                continue;
            };
            let Some(out) = outs.output(stream.conn) else {
                i += 1;
                continue;
            };
            if let State::Parked(at) = &stream.state {
                if out.pending() >= self.max_output / 2 {
                    i += 1;
                    continue;
                }
                match self.broker.subscribe(stream.filter.clone(), at.clone()) {
                    Ok(sub) => stream.state = State::CatchingUp(Box::new(sub)),
                    Err(e) => {
                        tracing::warn!("cannot resume a stream: {e}");
                        i += 1;
                        continue;
                    }
                }
            }
            let State::CatchingUp(sub) = &mut stream.state else {
                i += 1;
                continue;
            };
            let mut exhausted = false;
            let mut failed = false;
            let mut wrote = false;
            for _ in 0..CATCH_UP_BUDGET {
                if out.pending() >= self.max_output {
                    break;
                }
                let (encoding, prefix_len) = (&stream.encoding, stream.prefix_len);
                let last = &mut stream.last;
                let mut batch = stream.batch.as_deref_mut();
                // Deliveries written to `out`.
                match sub.try_next_with(|d| match (&mut batch, &d) {
                    (Some(b), DeliveryRef::Event(e)) => {
                        b.start(now, *last);
                        *last = (e.seq, e.topic_seq);
                        b.msg.push_event(e, prefix_len);
                        if b.full() {
                            b.msg.write(out)
                        } else {
                            0
                        }
                    }
                    (Some(b), DeliveryRef::Gap(_)) => {
                        // The events before the gap, then the gap notice.
                        let n = b.msg.write(out);
                        encode_own(out, encoding, &d, prefix_len);
                        n + 1
                    }
                    (None, _) => {
                        if let DeliveryRef::Event(e) = &d {
                            *last = (e.seq, e.topic_seq);
                        }
                        encode_own(out, encoding, &d, prefix_len);
                        1
                    }
                }) {
                    Ok(Some(n)) => {
                        if n > 0 {
                            wrote = true;
                            self.delivered += n as u64;
                        }
                    }
                    Ok(None) => {
                        exhausted = true;
                        break;
                    }
                    Err(e) => {
                        // Retried on the next wake-up, not in a loop.
                        tracing::warn!("a stream's subscription failed: {e}");
                        failed = true;
                        break;
                    }
                }
            }
            if wrote {
                self.dirty.push(stream.conn);
            }
            if let Some(b) = stream.batch.as_deref_mut() {
                if b.msg.len() > 0 && !b.listed {
                    b.listed = true;
                    self.batching.push(id);
                }
            }
            stream.failed = failed;
            if !exhausted {
                // More to read, or a full output: `arm` tells which.
                more |= !failed && out.pending() < self.max_output;
                i += 1;
                continue;
            }
            let position = sub.next_seq().max(stream.last.0 + 1);
            if sub.is_live() && position >= feed_next {
                // Caught up: the feed delivers from `position` on.
                stream.next = position;
                stream.next_topic_seq = sub.next_topic_seq().unwrap_or(0);
                stream.state = State::Live;
                self.behind.swap_remove(i);
                self.link(id);
                continue;
            }
            // The feed is ahead: read on to it.
            more = true;
            i += 1;
        }
        more
    }

    /// Parks every live stream: the feed lost what follows `from` (every
    /// event below it was routed).
    fn park_all_live(&mut self, from: u64, outs: &mut impl Outputs) {
        let live: Vec<StreamId> = (0..self.streams.len())
            .filter(|&id| {
                matches!(
                    self.streams[id],
                    Some(Stream {
                        state: State::Live,
                        ..
                    })
                )
            })
            .collect();
        for id in live {
            let next = self.streams[id].as_ref().map_or(from, |s| s.next.max(from));
            self.park(id, StartAt::Seq(next), outs);
        }
    }

    fn link(&mut self, id: StreamId) {
        let Some(stream) = self.streams[id].as_ref() else {
            return;
        };
        match stream.filter.single_topic() {
            Some(topic) => self.by_topic.entry(topic.into()).or_default().push(id),
            None => self.index.insert(id, &stream.filter),
        }
    }

    fn unlink(&mut self, id: StreamId, filter: &Filter) {
        match filter.single_topic() {
            Some(topic) => {
                if let Some(ids) = self.by_topic.get_mut(topic) {
                    drop_from(ids, id);
                    if ids.is_empty() {
                        self.by_topic.remove(topic);
                    }
                }
            }
            None => self.index.remove(id, filter),
        }
    }

    /// Takes a live stream off the feed; it resumes at `at`. Its batch,
    /// which holds the events before `at`, is written first (beyond the
    /// output's bound by at most that batch).
    fn park(&mut self, id: StreamId, at: StartAt, outs: &mut impl Outputs) {
        let Some(stream) = self.streams[id].as_mut() else {
            return;
        };
        if !matches!(stream.state, State::Live) {
            return;
        }
        if let Some(b) = stream.batch.as_deref_mut() {
            if let Some(out) = outs.output(stream.conn) {
                let n = b.msg.write(out);
                if n > 0 {
                    self.delivered += n as u64;
                    self.dirty.push(stream.conn);
                }
            }
        }
        stream.state = State::Parked(at);
        self.parked_count += 1;
        let filter = stream.filter.clone();
        self.unlink(id, &filter);
        self.behind.push(id);
    }
}

/// What routing one event needs (borrowed apart from the feed).
struct Deliver<'a, O: Outputs> {
    streams: &'a mut Vec<Option<Stream>>,
    outs: &'a mut O,
    frames: &'a mut Frames,
    dirty: &'a mut Vec<usize>,
    parked: &'a mut Vec<(StreamId, StartAt)>,
    max_output: usize,
    delivered: &'a mut u64,
    batching: &'a mut Vec<StreamId>,
    now: Instant,
}

impl<O: Outputs> Deliver<'_, O> {
    /// Delivers `e` to stream `id`, whose topic or patterns match it.
    fn deliver(&mut self, id: StreamId, e: &EventRef<'_>) {
        let Some(stream) = self.streams[id].as_mut() else {
            return;
        };
        if e.seq < stream.next
            || e.topic_seq < stream.next_topic_seq
            || !stream
                .filter
                .matches_event(e.event_type.as_bytes(), e.origin)
        {
            return;
        }
        let Some(out) = self.outs.output(stream.conn) else {
            return;
        };
        if out.pending() >= self.max_output {
            // A burst, not necessarily a slow client: write, then judge.
            self.outs.write_now(stream.conn);
        }
        let Some(out) = self.outs.output(stream.conn) else {
            return;
        };
        if out.pending() >= self.max_output {
            // A slow client: off the feed, caught up from here later.
            let at = match stream.filter.single_topic() {
                Some(_) => StartAt::TopicSeq(e.topic_seq),
                None => StartAt::Seq(e.seq),
            };
            self.parked.push((id, at));
            return;
        }
        if let Some(b) = stream.batch.as_deref_mut() {
            b.start(self.now, stream.last);
            b.msg.push_body(self.frames.ws_body(e, stream.prefix_len));
            if b.full() {
                *self.delivered += b.msg.write(out) as u64;
                self.dirty.push(stream.conn);
            } else if !b.listed {
                b.listed = true;
                self.batching.push(id);
            }
            stream.next = e.seq + 1;
            stream.last = (e.seq, e.topic_seq);
            return;
        }
        if out.pending() == 0 {
            self.dirty.push(stream.conn);
        }
        match &stream.encoding {
            Encoding::Sse(form) => {
                self.frames.sse(e, *form, stream.prefix_len).append_to(out);
            }
            Encoding::Ws { prefix, .. } => {
                let body = self.frames.ws_body(e, stream.prefix_len);
                append_ws_message(out, prefix, body);
            }
            Encoding::Stomp { prefix, .. } => {
                let body = self.frames.stomp_body(e, stream.prefix_len);
                append_ws_message(out, prefix, body);
            }
        }
        stream.next = e.seq + 1;
        stream.last = (e.seq, e.topic_seq);
        *self.delivered += 1;
    }
}

/// What a stream of `filter` costs the trie (single-topic streams are not
/// in it).
fn trie_tokens(filter: &Filter) -> usize {
    match filter.single_topic() {
        Some(_) => 0,
        None => index::tokens(filter),
    }
}

fn drop_from(ids: &mut Vec<StreamId>, id: StreamId) {
    if let Some(i) = ids.iter().position(|&x| x == id) {
        ids.swap_remove(i);
    }
}

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod tests;
