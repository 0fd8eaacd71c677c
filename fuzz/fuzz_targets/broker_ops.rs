//! A sequence of broker operations decoded from the input (publish, batch
//! publish, subscribe from every kind of start, read, acknowledge durable
//! consumers, reopen) run against a real `Broker` in a scratch directory,
//! and against an in-memory model.
//!
//! Checked: global sequences are dense, per-topic sequences are dense, a
//! refused publish or batch stores nothing, every read returns exactly the
//! model's next events for its filter and start (all fields, in order, no
//! gap: there is no retention), timestamps never decrease, and consumer
//! checkpoints follow the acknowledgement rules and survive a reopen.
//!
//! The ring is as small as the broker allows and segments are 4 KiB, so
//! subscribers are lapped and fall back to the log, and segments roll.
#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use herald_core::broker::AckError;
use herald_core::broker::{BatchEvent, PublishOptions};
use herald_core::log::{Durability, LogConfig};
use herald_core::{Broker, BrokerConfig, BrokerError, Delivery, Filter, StartAt, Subscription};
use libfuzzer_sys::fuzz_target;

const TOPICS: &[&str] = &["a", "a.b", "a.c", "b.x.y", "c", "bad..topic", "$sys.a"];
const PATTERNS: &[&str] = &[
    "a", "a.*", "a.>", "*", ">", "b.>", "*.x.*", "c", "$sys.a", "a.b",
];
const TYPES: &[&str] = &["t1", "t2", "t3.x", "bad type"];
const CONSUMERS: &[&str] = &["c1", "c2", "bad name"];
const MAX_PAYLOAD: usize = 200;
const MAX_SUBS: usize = 8;

#[derive(Debug, Arbitrary)]
enum Op {
    Publish(Ev),
    Batch(Vec<Ev>),
    Subscribe {
        filter: FilterSpec,
        start: Start,
        consumer: Option<u8>,
    },
    Read {
        sub: u8,
        limit: u8,
    },
    Ack {
        sub: u8,
        pick: u8,
        up_to: bool,
    },
    AckConsumer {
        name: u8,
        seq: SeqChoice,
    },
    Drop(u8),
    Reopen,
}

#[derive(Debug, Arbitrary)]
struct Ev {
    topic: u8,
    ty: u8,
    payload_len: u8,
    origin: u8,
    correlation: Option<u8>,
}

#[derive(Debug, Arbitrary)]
struct FilterSpec {
    patterns: Vec<u8>,
    types: Vec<u8>,
    exclude_origin: Option<u8>,
}

#[derive(Debug, Arbitrary)]
enum Start {
    Now,
    Seq(u8),
    TopicSeq(u8),
    TimeZero,
    TimeMax,
    LastN(u8),
}

#[derive(Debug, Arbitrary)]
enum SeqChoice {
    Small(u8),
    Max,
}

#[derive(Debug, Clone, PartialEq)]
struct ModelEvent {
    seq: u64,
    topic: &'static str,
    topic_seq: u64,
    event_type: &'static str,
    correlation: Option<String>,
    payload: Vec<u8>,
    origin: u64,
}

#[derive(Debug)]
struct FilterModel {
    patterns: Vec<&'static str>,
    types: Vec<&'static str>,
    exclude_origin: Option<u64>,
}

impl FilterModel {
    fn selects(&self, e: &ModelEvent) -> bool {
        self.patterns.iter().any(|p| ref_matches(p, e.topic))
            && (self.types.is_empty() || self.types.contains(&e.event_type))
            && self.exclude_origin != Some(e.origin)
    }
}

/// Where a subscription's deliveries begin.
#[derive(Debug, Clone, Copy)]
enum From {
    Seq(u64),
    TopicSeq(&'static str, u64),
}

/// The reference acknowledgement rules: the checkpoint is the highest
/// delivered sequence with every delivered sequence up to it acknowledged.
#[derive(Debug)]
struct Tracker {
    name: &'static str,
    checkpoint: u64,
    pending: VecDeque<(u64, bool)>,
}

impl Tracker {
    fn advance(&mut self) {
        while let Some(&(s, true)) = self.pending.front() {
            self.checkpoint = s;
            self.pending.pop_front();
        }
    }
}

struct SubModel {
    sub: Subscription,
    filter: FilterModel,
    from: From,
    delivered: usize,
    tracker: Option<Tracker>,
}

struct Model {
    events: Vec<ModelEvent>,
    timestamps: Vec<u64>,
    checkpoints: BTreeMap<&'static str, u64>,
}

impl Model {
    fn next_seq(&self) -> u64 {
        self.events.len() as u64 + 1
    }
    /// The global sequence of topic `topic`'s first event at or after
    /// `topic_seq`, or `end` if it has none yet.
    fn first_global(&self, topic: &str, topic_seq: u64, end: u64) -> u64 {
        self.events
            .iter()
            .find(|e| e.topic == topic && e.topic_seq >= topic_seq)
            .map_or(end, |e| e.seq)
    }
    fn topic_count(&self, topic: &str) -> u64 {
        self.events.iter().filter(|e| e.topic == topic).count() as u64
    }
    fn expected<'a>(&'a self, s: &'a SubModel) -> impl Iterator<Item = &'a ModelEvent> + 'a {
        self.events.iter().filter(move |e| {
            s.filter.selects(e)
                && match s.from {
                    From::Seq(seq) => e.seq >= seq,
                    From::TopicSeq(t, ts) => e.topic == t && e.topic_seq >= ts,
                }
        })
    }
}

fn ref_matches(pattern: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !pattern.starts_with('$') {
        return false;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    for (i, pt) in p.iter().enumerate() {
        match *pt {
            ">" => return t.len() > i,
            "*" if i < t.len() => {}
            lit if t.get(i) == Some(&lit) => {}
            _ => return false,
        }
    }
    p.len() == t.len()
}

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // tmpfs when available: every input creates and removes a broker.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("herald-fuzz-broker-{}", std::process::id()))
    })
}

fn open(dir: &Path) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.max_payload = MAX_PAYLOAD;
    // The smallest ring that holds four of the largest records.
    config.ring_capacity = 4096;
    config.log = LogConfig {
        segment_size: 4096,
        durability: Durability::Never,
        prefault: false,
        ..LogConfig::default()
    };
    Broker::open(config).expect("the broker opens")
}

fn payload(ev: &Ev, seq_hint: u64) -> Vec<u8> {
    let len = ev.payload_len as usize;
    (0..len).map(|i| (seq_hint as usize + i) as u8).collect()
}

fn correlation(ev: &Ev) -> Option<String> {
    ev.correlation.map(|c| match c % 4 {
        0 => "req-1".to_owned(),
        1 => "x".repeat(126),
        2 => "x".repeat(127), // too long
        _ => "has space".to_owned(),
    })
}

/// Would the broker accept this event (its topic aside)?
fn event_ok(ev: &Ev) -> bool {
    TYPES[ev.ty as usize % TYPES.len()] != "bad type"
        && ev.payload_len as usize <= MAX_PAYLOAD
        && correlation(ev).is_none_or(|c| c.len() <= 126 && !c.contains(' '))
}

fn topic_ok(t: &str) -> bool {
    !t.contains("..") && !t.starts_with('$')
}

fn model_event(m: &Model, ev: &Ev, seq: u64) -> ModelEvent {
    let topic = TOPICS[ev.topic as usize % TOPICS.len()];
    ModelEvent {
        seq,
        topic,
        topic_seq: m.topic_count(topic) + 1,
        event_type: TYPES[ev.ty as usize % TYPES.len()],
        correlation: correlation(ev),
        payload: payload(ev, seq),
        origin: u64::from(ev.origin % 4),
    }
}

fn options(e: &ModelEvent) -> PublishOptions<'_> {
    PublishOptions {
        origin: e.origin,
        correlation: e.correlation.as_deref(),
        ..PublishOptions::default()
    }
}

fn publish(b: &Broker, m: &mut Model, ev: &Ev) {
    let e = model_event(m, ev, m.next_seq());
    let ok = event_ok(ev) && topic_ok(e.topic);
    let got = b
        .publisher(e.topic)
        .and_then(|p| p.publish(e.event_type, &e.payload, options(&e)));
    match got {
        Ok(p) => {
            assert!(ok, "accepted {e:?}");
            assert_eq!(
                (p.seq, p.topic_seq),
                (e.seq, e.topic_seq),
                "dense sequences"
            );
            m.events.push(e);
        }
        Err(err) => assert!(!ok, "refused {e:?}: {err}"),
    }
    assert_eq!(b.next_seq(), m.next_seq());
}

fn batch(b: &Broker, m: &mut Model, evs: &[Ev]) {
    let evs = &evs[..evs.len().min(8)];
    let mut planned: Vec<ModelEvent> = Vec::new();
    for ev in evs {
        let mut e = model_event(m, ev, m.next_seq() + planned.len() as u64);
        e.topic_seq += planned.iter().filter(|p| p.topic == e.topic).count() as u64;
        planned.push(e);
    }
    let ok = evs.iter().all(event_ok) && planned.iter().all(|e| topic_ok(e.topic));
    let publishers: Result<Vec<_>, BrokerError> =
        planned.iter().map(|e| b.publisher(e.topic)).collect();
    let Ok(publishers) = publishers else {
        assert!(!ok, "a valid topic refused");
        assert_eq!(b.next_seq(), m.next_seq());
        return;
    };
    let batch: Vec<BatchEvent<'_>> = planned
        .iter()
        .zip(&publishers)
        .map(|(e, p)| BatchEvent {
            publisher: p,
            event_type: e.event_type,
            payload: &e.payload,
            options: options(e),
        })
        .collect();
    let mut out = Vec::new();
    match b.publish_batch(&batch, &mut out) {
        Ok(()) => {
            assert!(ok, "accepted batch {planned:?}");
            let got: Vec<(u64, u64)> = out.iter().map(|p| (p.seq, p.topic_seq)).collect();
            let want: Vec<(u64, u64)> = planned.iter().map(|e| (e.seq, e.topic_seq)).collect();
            assert_eq!(got, want, "batch sequences");
            m.events.extend(planned);
        }
        Err(err) => {
            assert!(!ok, "refused batch {planned:?}: {err}");
            assert!(out.is_empty());
        }
    }
    assert_eq!(b.next_seq(), m.next_seq(), "a refused batch stores nothing");
}

fn subscribe(
    b: &Broker,
    m: &mut Model,
    subs: &mut Vec<SubModel>,
    spec: &FilterSpec,
    start: &Start,
    consumer: Option<u8>,
) {
    if subs.len() >= MAX_SUBS {
        return;
    }
    let patterns: Vec<&'static str> = spec
        .patterns
        .iter()
        .take(3)
        .map(|&p| PATTERNS[p as usize % PATTERNS.len()])
        .collect();
    let types: Vec<&'static str> = spec
        .types
        .iter()
        .take(2)
        .map(|&t| TYPES[t as usize % 3])
        .collect();
    let exclude_origin = spec.exclude_origin.map(|o| u64::from(o % 4));
    let Ok(mut filter) = Filter::patterns(&patterns) else {
        assert!(patterns.is_empty());
        return;
    };
    if !types.is_empty() {
        filter = filter.with_types(&types);
    }
    if let Some(o) = exclude_origin {
        filter = filter.excluding_origin(o);
    }
    let single = filter
        .single_topic()
        .map(|t| PATTERNS.iter().find(|p| **p == t).copied().unwrap());
    let now = m.next_seq();
    let start_at = match *start {
        Start::Now => StartAt::Now,
        Start::Seq(s) => StartAt::Seq(u64::from(s) + 1),
        Start::TopicSeq(s) => StartAt::TopicSeq(u64::from(s)),
        Start::TimeZero => StartAt::Time(0),
        Start::TimeMax => StartAt::Time(u64::MAX),
        Start::LastN(n) => StartAt::LastN(u64::from(n)),
    };
    // Where the deliveries begin, and the `next` a consumer's first
    // checkpoint is taken from.
    let (from, next) = match (&start_at, single) {
        (StartAt::Now, _) | (StartAt::Time(u64::MAX), _) => (From::Seq(now), now),
        (StartAt::Seq(s), _) => (From::Seq((*s).min(now)), (*s).min(now)),
        (StartAt::Time(_), _) => (From::Seq(1), 1),
        // Past the topic's end: from its end (the subscription says so).
        // A consumer's first checkpoint is just before the global sequence
        // of the first event it reads (the log's end if there is none yet).
        (StartAt::TopicSeq(ts), Some(t)) => {
            let from = (*ts).max(1).min(m.topic_count(t) + 1);
            (From::TopicSeq(t, from), m.first_global(t, from, now))
        }
        (StartAt::LastN(n), Some(t)) => {
            let from = (m.topic_count(t) + 1).saturating_sub(*n).max(1);
            (From::TopicSeq(t, from), m.first_global(t, from, now))
        }
        (StartAt::LastN(n), None) => (
            From::Seq(now.saturating_sub(*n).max(1)),
            now.saturating_sub(*n).max(1),
        ),
        (StartAt::TopicSeq(_), None) => {
            assert!(matches!(
                b.subscribe(filter, start_at),
                Err(BrokerError::NeedsSingleTopic)
            ));
            return;
        }
    };
    let filter_model = FilterModel {
        patterns,
        types,
        exclude_origin,
    };
    let (sub, from, tracker) = match consumer {
        None => (
            b.subscribe(filter, start_at).expect("subscribe"),
            from,
            None,
        ),
        Some(c) => {
            let name = CONSUMERS[c as usize % CONSUMERS.len()];
            let got = b.subscribe_consumer(name, filter, start_at);
            if name == "bad name" {
                assert!(got.is_err());
                return;
            }
            let (from, initial) = match m.checkpoints.get(name) {
                Some(&cp) => (From::Seq(cp.saturating_add(1).min(now)), cp),
                None => (from, next.saturating_sub(1)),
            };
            let tracker = Tracker {
                name,
                checkpoint: initial,
                pending: VecDeque::new(),
            };
            // The first subscription creates the consumer at its start.
            m.checkpoints.entry(name).or_insert(initial);
            (got.expect("subscribe_consumer"), from, Some(tracker))
        }
    };
    subs.push(SubModel {
        sub,
        filter: filter_model,
        from,
        delivered: 0,
        tracker,
    });
}

fn read(m: &mut Model, s: &mut SubModel, limit: usize) {
    let expected: Vec<ModelEvent> = m
        .expected(s)
        .skip(s.delivered)
        .take(limit)
        .cloned()
        .collect();
    for want in &expected {
        let got = s.sub.try_next().expect("read");
        let Some(Delivery::Event(e)) = got else {
            panic!("wanted {want:?}, got {got:?}");
        };
        let got_model = (
            e.seq,
            e.topic.as_ref(),
            e.topic_seq,
            e.event_type.as_str(),
            &e.correlation,
            &e.payload,
            e.origin,
        );
        let want_model = (
            want.seq,
            want.topic,
            want.topic_seq,
            want.event_type,
            &want.correlation,
            &want.payload,
            want.origin,
        );
        assert_eq!(got_model, want_model);
        // The first reading of an event fixes its timestamp; timestamps
        // never decrease along the global sequence.
        let i = (e.seq - 1) as usize;
        if m.timestamps.len() <= i {
            m.timestamps.resize(i + 1, 0);
        }
        if m.timestamps[i] == 0 {
            m.timestamps[i] = e.timestamp_ns;
        }
        assert_eq!(m.timestamps[i], e.timestamp_ns);
        let before = m.timestamps[..i]
            .iter()
            .rev()
            .find(|&&t| t != 0)
            .copied()
            .unwrap_or(0);
        let after = m.timestamps[i + 1..]
            .iter()
            .find(|&&t| t != 0)
            .copied()
            .unwrap_or(u64::MAX);
        assert!(
            before <= e.timestamp_ns && e.timestamp_ns <= after,
            "timestamps ordered"
        );
        s.delivered += 1;
        if let Some(t) = &mut s.tracker {
            if e.seq > t.pending.back().map_or(t.checkpoint, |p| p.0) {
                t.pending.push_back((e.seq, false));
            }
        }
    }
    if expected.len() < limit {
        let extra = s.sub.try_next().expect("read");
        assert!(extra.is_none(), "delivered past the model: {extra:?}");
    }
}

fn commit(m: &mut Model, t: &Tracker) {
    let cp = m.checkpoints.entry(t.name).or_insert(t.checkpoint);
    *cp = (*cp).max(t.checkpoint);
}

fn ack(m: &mut Model, s: &mut SubModel, pick: u8, up_to: bool) {
    let Some(t) = &mut s.tracker else {
        let r = if up_to {
            s.sub.ack_up_to(u64::from(pick))
        } else {
            s.sub.ack(u64::from(pick))
        };
        assert!(matches!(r, Err(BrokerError::NotAConsumer)));
        return;
    };
    // Mostly a delivered sequence; sometimes any small one.
    let seq = match t.pending.get(pick as usize % 8) {
        Some(&(seq, _)) if pick < 200 => seq,
        _ => u64::from(pick % 64),
    };
    let before = t.checkpoint;
    if up_to {
        s.sub.ack_up_to(seq).expect("ack_up_to");
        while let Some(&(p, _)) = t.pending.front() {
            if p > seq {
                break;
            }
            t.checkpoint = p;
            t.pending.pop_front();
        }
        t.advance();
    } else {
        let r = s.sub.ack(seq);
        if seq <= t.checkpoint {
            r.expect("ack at or below the checkpoint is a no-op");
        } else if let Some(p) = t.pending.iter_mut().find(|p| p.0 == seq) {
            r.expect("ack of a delivered event");
            p.1 = true;
            t.advance();
        } else {
            assert!(matches!(r, Err(BrokerError::Ack(_))), "ack of {seq}: {r:?}");
        }
    }
    if t.checkpoint != before {
        commit(m, t);
    }
}

fn check_checkpoints(b: &Broker, m: &Model) {
    for name in &CONSUMERS[..2] {
        match (b.consumer_checkpoint(name), m.checkpoints.get(name)) {
            (Ok(got), Some(&want)) => assert_eq!(got, want, "checkpoint of {name}"),
            (Err(BrokerError::UnknownConsumer(_)), None) => {}
            (got, want) => panic!("checkpoint of {name}: {got:?}, model {want:?}"),
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let dir = scratch();
    let _ = std::fs::remove_dir_all(dir);
    let mut broker = Some(open(dir));
    let mut m = Model {
        events: Vec::new(),
        timestamps: Vec::new(),
        checkpoints: BTreeMap::new(),
    };
    let mut subs: Vec<SubModel> = Vec::new();
    for op in ops.iter().take(64) {
        let b = broker.as_ref().unwrap();
        match op {
            Op::Publish(ev) => publish(b, &mut m, ev),
            Op::Batch(evs) => batch(b, &mut m, evs),
            Op::Subscribe {
                filter,
                start,
                consumer,
            } => subscribe(b, &mut m, &mut subs, filter, start, *consumer),
            Op::Read { sub, limit } => {
                if let Some(s) = subs.get_mut(*sub as usize % MAX_SUBS) {
                    read(&mut m, s, *limit as usize % 16 + 1);
                }
            }
            Op::Ack { sub, pick, up_to } => {
                if let Some(s) = subs.get_mut(*sub as usize % MAX_SUBS) {
                    ack(&mut m, s, *pick, *up_to);
                }
            }
            Op::AckConsumer { name, seq } => {
                let name = CONSUMERS[*name as usize % CONSUMERS.len()];
                let seq = match seq {
                    SeqChoice::Small(s) => u64::from(*s),
                    SeqChoice::Max => u64::MAX,
                };
                let r = b.ack_consumer(name, seq);
                match m.checkpoints.get(name).copied() {
                    _ if name == "bad name" => assert!(r.is_err()),
                    None => assert!(
                        matches!(r, Err(BrokerError::UnknownConsumer(_))),
                        "an ack does not create a consumer"
                    ),
                    Some(_) if seq >= m.next_seq() => assert!(
                        matches!(r, Err(BrokerError::Ack(AckError::PastEnd { .. }))),
                        "ack of unpublished {seq}"
                    ),
                    Some(cp) if seq < cp => assert!(
                        matches!(r, Err(BrokerError::Ack(AckError::Backwards { .. }))),
                        "ack of {seq} below the checkpoint {cp}"
                    ),
                    Some(_) => {
                        r.expect("ack_consumer");
                        m.checkpoints.insert(name, seq);
                    }
                }
            }
            Op::Drop(i) => {
                if !subs.is_empty() {
                    let i = *i as usize % subs.len();
                    subs.remove(i);
                }
            }
            Op::Reopen => {
                subs.clear();
                drop(broker.take());
                broker = Some(open(dir));
                let b = broker.as_ref().unwrap();
                assert_eq!(b.next_seq(), m.next_seq(), "sequences survive a reopen");
            }
        }
        check_checkpoints(broker.as_ref().unwrap(), &m);
    }
    // Everything published is still there, for every open subscription.
    for s in &mut subs {
        read(&mut m, s, usize::MAX);
    }
    let all = Filter::patterns(&[">"]).unwrap();
    let mut s = SubModel {
        sub: broker
            .as_ref()
            .unwrap()
            .subscribe(all, StartAt::Seq(1))
            .unwrap(),
        filter: FilterModel {
            patterns: vec![">"],
            types: vec![],
            exclude_origin: None,
        },
        from: From::Seq(1),
        delivered: 0,
        tracker: None,
    };
    read(&mut m, &mut s, usize::MAX);
    drop(s);
    subs.clear();
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
});
