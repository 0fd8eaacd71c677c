//! The headline property (invariants 1–4 of `docs/DESIGN.md`): random concurrent
//! publishers, random subscribers with random filters, start positions and
//! speeds (some stalled for long stretches), random ring sizes and retention.
//! Every subscriber receives exactly the events its filter selects, in order,
//! without duplicates; a gap notice appears only where retention removed
//! events, and everything it does not receive is covered by one.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use herald_core::broker::{Delivery, Filter, PublishOptions, StartAt, TopicPublisher};
use herald_core::log::{Durability, Retention};
use herald_core::{Broker, BrokerConfig};
use proptest::prelude::*;

const TOPICS: [&str; 4] = ["acme.ws.1", "acme.ws.2", "acme.chat", "other.x"];
const TYPES: [&str; 3] = ["created", "updated", "deleted"];

#[derive(Debug, Clone)]
struct SubSpec {
    filter: FilterSpec,
    start: StartSpec,
    /// Sleep this many microseconds every `stall_every` events (0: never).
    stall_every: u32,
    stall_us: u64,
}

#[derive(Debug, Clone)]
enum FilterSpec {
    Topic(usize),
    Pattern(&'static str),
    Typed(&'static str, usize),
    NotOrigin(&'static str, u64),
}

#[derive(Debug, Clone)]
enum StartSpec {
    Now,
    Seq(u64),
    TopicSeq(u64),
    LastN(u64),
}

#[derive(Debug, Clone)]
struct Case {
    ring_log2: u32,
    retention: Option<u64>,
    preload: u32,
    publishers: Vec<Vec<(usize, usize, u64)>>, // (topic, type, origin) per event
    subs: Vec<SubSpec>,
}

fn case() -> impl Strategy<Value = Case> {
    let filter = prop_oneof![
        (0..TOPICS.len()).prop_map(FilterSpec::Topic),
        prop_oneof![Just("acme.ws.*"), Just("acme.>"), Just(">"), Just("*.x")]
            .prop_map(FilterSpec::Pattern),
        (prop_oneof![Just("acme.>"), Just(">")], 0..TYPES.len())
            .prop_map(|(p, t)| FilterSpec::Typed(p, t)),
        (prop_oneof![Just("acme.>"), Just(">")], 0..3u64)
            .prop_map(|(p, o)| FilterSpec::NotOrigin(p, o)),
    ];
    let start = prop_oneof![
        Just(StartSpec::Now),
        (1..400u64).prop_map(StartSpec::Seq),
        (1..100u64).prop_map(StartSpec::TopicSeq),
        (0..300u64).prop_map(StartSpec::LastN),
    ];
    let sub = (
        filter,
        start,
        prop_oneof![Just(0u32), 1..200u32],
        0..3_000u64,
    )
        .prop_map(|(filter, start, stall_every, stall_us)| SubSpec {
            filter,
            start,
            stall_every,
            stall_us,
        });
    let event = (0..TOPICS.len(), 0..TYPES.len(), 0..3u64);
    (
        12..16u32,
        prop_oneof![Just(None), (50..400u64).prop_map(Some)],
        0..300u32,
        proptest::collection::vec(proptest::collection::vec(event, 1..1_500), 1..4),
        proptest::collection::vec(sub, 1..5),
    )
        .prop_map(|(ring_log2, retention, preload, publishers, subs)| Case {
            ring_log2,
            retention,
            preload,
            publishers,
            subs,
        })
}

#[derive(Debug, Clone)]
struct Rec {
    topic: usize,
    topic_seq: u64,
    ty: usize,
    origin: u64,
}

fn selects(f: &FilterSpec, r: &Rec) -> bool {
    let m = |p: &str| {
        Filter::patterns(&[p])
            .unwrap()
            .matches_topic(TOPICS[r.topic])
    };
    match f {
        FilterSpec::Topic(t) => r.topic == *t,
        FilterSpec::Pattern(p) => m(p),
        FilterSpec::Typed(p, t) => m(p) && r.ty == *t,
        FilterSpec::NotOrigin(p, o) => m(p) && r.origin != *o,
    }
}

/// Publishes one event of type `ty` from `origin` on `topic`; returns its
/// global sequence and the model's record of it.
fn publish(publishers: &[TopicPublisher], topic: usize, ty: usize, origin: u64) -> (u64, Rec) {
    let payload = format!("{topic}/{ty}/{origin}");
    let p = publishers[topic]
        .publish(
            TYPES[ty],
            payload.as_bytes(),
            PublishOptions {
                origin,
                ..PublishOptions::default()
            },
        )
        .unwrap();
    (
        p.seq,
        Rec {
            topic,
            topic_seq: p.topic_seq,
            ty,
            origin,
        },
    )
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.ring_capacity = 1 << case.ring_log2;
    config.max_payload = 64;
    config.log.segment_size = 8192;
    config.log.durability = Durability::Never;
    config.log.prefault = false;
    if let Some(max) = case.retention {
        config.log.retention = Retention {
            max_records: Some(max),
            override_pins: true,
            ..Retention::default()
        };
    }
    let broker = Broker::open(config).unwrap();
    let publishers: Vec<_> = TOPICS
        .iter()
        .map(|t| broker.publisher(t).unwrap())
        .collect();
    // The model: global seq -> record, from what publish returned.
    let mut model: BTreeMap<u64, Rec> = BTreeMap::new();
    for i in 0..case.preload as usize {
        let (seq, rec) = publish(
            &publishers,
            i % TOPICS.len(),
            i % TYPES.len(),
            (i % 3) as u64,
        );
        model.insert(seq, rec);
    }
    let now = broker.next_seq();
    // Subscribe (start positions resolved against the preloaded state).
    let mut subs = Vec::new();
    for spec in &case.subs {
        let (filter, single) = match &spec.filter {
            FilterSpec::Topic(t) => (Filter::topic(TOPICS[*t]).unwrap(), true),
            FilterSpec::Pattern(p) => (Filter::patterns(&[p]).unwrap(), false),
            FilterSpec::Typed(p, t) => (
                Filter::patterns(&[p]).unwrap().with_types(&[TYPES[*t]]),
                false,
            ),
            FilterSpec::NotOrigin(p, o) => {
                (Filter::patterns(&[p]).unwrap().excluding_origin(*o), false)
            }
        };
        let start = match (&spec.start, single) {
            (StartSpec::TopicSeq(_), false) => StartAt::Now,
            (StartSpec::Now, _) => StartAt::Now,
            (StartSpec::Seq(s), _) => StartAt::Seq(*s),
            (StartSpec::TopicSeq(s), true) => StartAt::TopicSeq(*s),
            (StartSpec::LastN(n), _) => StartAt::LastN(*n),
        };
        // The first global sequence (and, single-topic, topic sequence) the
        // model expects this subscriber to start at.
        let sub = broker.subscribe(filter, start.clone()).unwrap();
        let beyond_end = sub.beyond_end();
        subs.push((spec.clone(), start, beyond_end, sub));
    }
    let barrier = Arc::new(Barrier::new(case.publishers.len() + 1));
    let writers: Vec<_> = case
        .publishers
        .iter()
        .map(|events| {
            let events = events.clone();
            let publishers: Vec<_> = TOPICS
                .iter()
                .map(|t| broker.publisher(t).unwrap())
                .collect();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                events
                    .into_iter()
                    .map(|(topic, ty, origin)| publish(&publishers, topic, ty, origin))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let total: u64 = case.publishers.iter().map(|p| p.len() as u64).sum();
    let end = now + total;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(spec, start, beyond_end, mut sub)| {
            thread::spawn(move || {
                let mut got = Vec::new();
                let mut n = 0u32;
                while sub.next_seq() < end {
                    if let Some(d) = sub.next_timeout(Duration::from_millis(200)).unwrap() {
                        got.push(d);
                        n += 1;
                        if spec.stall_every > 0 && n % spec.stall_every == 0 {
                            thread::sleep(Duration::from_micros(spec.stall_us));
                        }
                    }
                }
                while let Some(d) = sub.try_next().unwrap() {
                    got.push(d);
                }
                (spec, start, beyond_end, got)
            })
        })
        .collect();
    barrier.wait();
    for w in writers {
        for (seq, rec) in w.join().unwrap() {
            prop_assert!(
                model.insert(seq, rec).is_none(),
                "global sequence {} assigned twice",
                seq
            );
        }
    }
    // Dense global sequences; dense per-topic sequences in global order.
    prop_assert_eq!(
        model.keys().copied().collect::<Vec<_>>(),
        (1..end).collect::<Vec<_>>()
    );
    let mut per_topic = [0u64; TOPICS.len()];
    for rec in model.values() {
        per_topic[rec.topic] += 1;
        prop_assert_eq!(
            rec.topic_seq,
            per_topic[rec.topic],
            "topic sequences are dense and follow global order"
        );
    }
    let first_retained = broker.next_seq() - 1; // upper bound for gap checks below
    for reader in readers {
        let (spec, start, beyond_end, got) = reader.join().unwrap();
        // Where the model says this subscriber starts.
        let topic_of = |f: &FilterSpec| {
            if let FilterSpec::Topic(t) = f {
                Some(*t)
            } else {
                None
            }
        };
        // A start past the end of the log starts at its end and says so.
        let topic_last = |t| model.range(..now).filter(|(_, r)| r.topic == t).count() as u64;
        let expected_beyond_end = match (&start, topic_of(&spec.filter)) {
            (StartAt::Seq(s), _) if *s > now => Some(now - 1),
            (StartAt::TopicSeq(ts), Some(t)) if *ts > topic_last(t) + 1 => Some(topic_last(t)),
            _ => None,
        };
        prop_assert_eq!(
            beyond_end,
            expected_beyond_end,
            "{:?} from {:?}",
            spec,
            start
        );
        let first_seq = match (&start, topic_of(&spec.filter)) {
            (StartAt::Now, _) => now,
            (StartAt::Seq(s), _) => (*s).min(now),
            (StartAt::TopicSeq(ts), Some(t)) => {
                let from = (*ts).min(topic_last(t) + 1);
                model
                    .iter()
                    .find(|(_, r)| r.topic == t && r.topic_seq >= from)
                    .map_or(end, |(s, _)| *s)
            }
            (StartAt::LastN(n), Some(t)) => {
                let last = model.range(..now).filter(|(_, r)| r.topic == t).count() as u64;
                // The last n of topic sequences 1..=last.
                let from = (last + 1).saturating_sub(*n).max(1);
                model
                    .iter()
                    .find(|(_, r)| r.topic == t && r.topic_seq >= from)
                    .map_or(end, |(s, _)| *s)
            }
            (StartAt::LastN(n), None) => now.saturating_sub(*n).max(1),
            _ => unreachable!(),
        };
        let expected: Vec<u64> = model
            .range(first_seq..)
            .filter(|(_, r)| selects(&spec.filter, r))
            .map(|(s, _)| *s)
            .collect();
        // Walk the deliveries against the expected list.
        let mut i = 0;
        for d in &got {
            match d {
                Delivery::Event(e) => {
                    prop_assert!(i < expected.len(), "extra event {} for {:?}", e.seq, spec);
                    prop_assert_eq!(
                        e.seq,
                        expected[i],
                        "wrong, missing or duplicate event for {:?}",
                        spec
                    );
                    let rec = &model[&e.seq];
                    prop_assert_eq!(e.topic_seq, rec.topic_seq);
                    prop_assert_eq!(&*e.topic, TOPICS[rec.topic]);
                    prop_assert_eq!(
                        e.payload.clone(),
                        format!("{}/{}/{}", rec.topic, rec.ty, rec.origin).into_bytes()
                    );
                    i += 1;
                }
                Delivery::Gap(g) => {
                    prop_assert!(case.retention.is_some(), "gap {:?} without retention", g);
                    // Skip every expected event the gap covers; they must be
                    // old enough to have been deleted.
                    while i < expected.len() {
                        let rec = &model[&expected[i]];
                        let covered = match &g.topic {
                            Some(_) => rec.topic_seq >= g.from && rec.topic_seq <= g.to,
                            None => expected[i] >= g.from && expected[i] <= g.to,
                        };
                        if !covered {
                            break;
                        }
                        prop_assert!(expected[i] < first_retained);
                        i += 1;
                    }
                }
            }
        }
        prop_assert_eq!(
            i,
            expected.len(),
            "events never delivered nor covered by a gap for {:?}",
            spec
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 50, ..ProptestConfig::default() })]

    #[test]
    fn every_subscriber_gets_exactly_what_its_filter_selects(case in case()) {
        run(case)?;
    }
}
