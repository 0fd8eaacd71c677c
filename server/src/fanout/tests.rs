//! A model check of the router against the log: streams join at random
//! positions with random filters while a publisher runs; their clients stall
//! and drain at random (so streams park, lap and catch up); every stream
//! must receive exactly the events of the log that match it, in order
//! (WebSocket streams batched or not).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use herald_core::broker::{DeliveryRef, Filter, StartAt};
use herald_core::{Broker, BrokerConfig};

use std::time::Duration;

use super::{Encoding, Outputs, Router, SseForm};
use crate::api::ops::BatchPolicy;
use crate::conn::output::Output;

const TOPICS: [&str; 4] = ["a.x", "a.y", "b.x", "b.y"];
const TYPES: [&str; 3] = ["t1", "t2", "t3"];

struct Client {
    out: Output,
    /// What the client has read off the wire.
    got: Vec<u8>,
    /// Reads nothing until this round (a stalled client).
    stalled_until: usize,
}

struct Clients(Vec<Option<Client>>);

impl Outputs for Clients {
    fn output(&mut self, conn: usize) -> Option<&mut Output> {
        self.0.get_mut(conn)?.as_mut().map(|c| &mut c.out)
    }

    /// The model's clients read only in their own turn.
    fn write_now(&mut self, _conn: usize) {}
}

/// A sink taking at most `room` bytes per round.
struct Wire<'a> {
    got: &'a mut Vec<u8>,
    room: usize,
}

impl std::io::Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.got.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Global sequences in a stream of SSE frames (`id:` lines).
fn sse_ids(wire: &[u8]) -> Vec<u64> {
    let text = std::str::from_utf8(wire).unwrap();
    assert!(!text.contains("event: gap"), "no retention: no gaps");
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.parse().unwrap())
        .collect()
}

/// Global sequences in a stream of unmasked WebSocket text frames.
fn ws_ids(mut wire: &[u8]) -> Vec<u64> {
    let mut ids = Vec::new();
    while !wire.is_empty() {
        assert_eq!(wire[0], 0x81, "a whole text frame");
        let (len, head) = match wire[1] {
            126 => (u16::from_be_bytes([wire[2], wire[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let v: serde_json::Value = serde_json::from_slice(&wire[head..head + len]).unwrap();
        match v["type"].as_str() {
            Some("event") => ids.push(v["seq"].as_u64().unwrap()),
            Some("events") => {
                let events = v["events"].as_array().unwrap();
                assert!(!events.is_empty(), "{v}");
                ids.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
            }
            _ => panic!("{v}"),
        }
        wire = &wire[head + len..];
    }
    ids
}

#[test]
fn every_stream_gets_exactly_the_matching_events_through_stalls_and_laps() {
    for seed in 1..=8u64 {
        run(seed);
    }
}

fn run(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.ring_capacity = 8 << 10;
    config.max_payload = 256;
    config.log.segment_size = 1 << 20;
    config.log.prefault = false;
    let broker = Broker::open(config).unwrap();
    let mut router = Router::new(broker.clone(), 2048).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));

    let total = 6_000u64;
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (broker, done) = (broker.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed + 7);
            let publishers: Vec<_> = TOPICS
                .iter()
                .map(|t| broker.publisher(t).unwrap())
                .collect();
            for i in 0..total {
                let p = &publishers[rng.below(TOPICS.len())];
                let pad = "x".repeat(rng.below(200));
                let payload = format!(r#"{{"i":{i},"pad":"{pad}"}}"#);
                p.publish(TYPES[rng.below(3)], payload.as_bytes(), Default::default())
                    .unwrap();
                if i % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            done.store(true, Ordering::Release);
        })
    };

    // (filter, start, ws?) per stream; one stream per client.
    let mut specs = Vec::new();
    // Each spec's stream, until it is removed.
    let mut ids = Vec::new();
    let mut removals = 0;
    let mut clients = Clients(Vec::new());
    let mut round = 0usize;
    let mut quiet_rounds = 0;
    loop {
        round += 1;
        let joining = if done.load(Ordering::Acquire) { 4 } else { 40 };
        if specs.len() < 24 && rng.below(joining) == 0 {
            let filter = match rng.below(4) {
                0 => Filter::topic(TOPICS[rng.below(4)]).unwrap(),
                1 => Filter::patterns(&["a.*"]).unwrap(),
                2 => Filter::patterns(&["*.x", "b.y"]).unwrap(),
                _ => Filter::topic(TOPICS[rng.below(4)])
                    .unwrap()
                    .with_types(&[TYPES[rng.below(3)]]),
            };
            let head = broker.metrics().published;
            let start = match (rng.below(4), filter.single_topic()) {
                (0, _) => StartAt::Seq(1 + rng.below(head as usize + 1) as u64),
                (1, _) => StartAt::Seq(head + 1),
                (2, Some(_)) => StartAt::TopicSeq(1 + rng.below(head as usize / 4 + 2) as u64),
                _ => StartAt::Now,
            };
            let sub = broker.subscribe(filter.clone(), start.clone()).unwrap();
            // A start past the end starts at the end (the subscription
            // says where); what the stream must then receive follows it.
            let start = match (start, sub.beyond_end()) {
                (StartAt::TopicSeq(t), Some(last)) => {
                    assert!(last + 1 < t, "{last} is not before {t}");
                    StartAt::TopicSeq(last + 1)
                }
                (StartAt::Seq(s), Some(last)) => {
                    assert!(last + 1 < s, "{last} is not before {s}");
                    StartAt::Seq(last + 1)
                }
                (start, _) => start,
            };
            let first = sub.next_seq();
            let ws = rng.below(3) != 0;
            let encoding = match (ws, rng.below(2)) {
                (true, 0) => Encoding::ws("s"),
                (true, _) => Encoding::ws_batched(
                    "s",
                    Some(BatchPolicy {
                        max_events: 1 + rng.below(40),
                        max_delay: Duration::from_micros(rng.below(3) as u64 * 500),
                    }),
                ),
                (false, _) => Encoding::Sse(SseForm::new(false, true)),
            };
            ids.push(Some(router.add(clients.0.len(), sub, encoding, 0)));
            clients.0.push(Some(Client {
                out: Output::default(),
                got: Vec::new(),
                stalled_until: if rng.below(3) == 0 {
                    round + rng.below(400)
                } else {
                    0
                },
            }));
            specs.push((filter, start, first, ws));
        }
        // A few unsubscribe (their ids are reused by later streams).
        if specs.len() < 24 && removals < 6 && rng.below(60) == 0 {
            removals += 1;
            let i = rng.below(ids.len().max(1));
            if let Some(id) = ids.get_mut(i).and_then(Option::take) {
                router.remove(id);
            }
        }
        let more = router.route(&mut clients) | router.catch_up(&mut clients);
        router.flush_batches(&mut clients);
        let mut pending = 0;
        for c in clients.0.iter_mut().flatten() {
            if round >= c.stalled_until {
                let mut wire = Wire {
                    got: &mut c.got,
                    room: 1 + rng.below(8192),
                };
                c.out.write_to(&mut wire).unwrap();
            }
            pending += c.out.pending();
        }
        let finished = done.load(Ordering::Acquire);
        if finished
            && specs.len() >= 24
            && !more
            && pending == 0
            && router.batch_deadline().is_none()
            && clients.0.iter().flatten().all(|c| round >= c.stalled_until)
        {
            quiet_rounds += 1;
            if quiet_rounds > 50 {
                break;
            }
        } else {
            quiet_rounds = 0;
        }
        assert!(round < 2_000_000, "the router never settled");
    }
    publisher.join().unwrap();

    // The log is the truth: what each stream should have received.
    let mut all = Vec::new();
    let mut reader = broker
        .subscribe(Filter::patterns(&[">"]).unwrap(), StartAt::Seq(1))
        .unwrap();
    while let Some(()) = reader
        .try_next_with(|d| {
            if let DeliveryRef::Event(e) = d {
                all.push((
                    e.seq,
                    e.topic_seq,
                    e.topic.to_string(),
                    e.event_type.to_owned(),
                ));
            }
        })
        .unwrap()
    {}
    assert_eq!(all.len() as u64, total);
    let mut checked = 0;
    for (i, (filter, start, first, ws)) in specs.iter().enumerate() {
        if ids[i].is_none() {
            continue; // Unsubscribed midway.
        }
        checked += 1;
        let c = clients.0[i].as_ref().unwrap();
        let got = if *ws { ws_ids(&c.got) } else { sse_ids(&c.got) };
        let starts_here = |seq: u64, topic_seq: u64| match start {
            StartAt::Seq(s) => seq >= *s,
            StartAt::TopicSeq(t) => topic_seq >= *t,
            _ => seq >= *first,
        };
        let expected: Vec<u64> = all
            .iter()
            .filter(|(seq, topic_seq, topic, ty)| {
                starts_here(*seq, *topic_seq)
                    && filter.matches_topic(topic)
                    && filter.matches_event(ty.as_bytes(), 0)
            })
            .map(|(seq, ..)| *seq)
            .collect();
        if got != expected {
            let at = got
                .iter()
                .zip(&expected)
                .take_while(|(a, b)| a == b)
                .count();
            let window = |v: &[u64]| v[at.saturating_sub(3)..(at + 3).min(v.len())].to_vec();
            panic!(
                "seed {seed}, stream {i} ({filter:?} from {start:?}): {} events, expected {}; \
                 first difference at {at}: got {:?}, expected {:?}",
                got.len(),
                expected.len(),
                window(&got),
                window(&expected)
            );
        }
    }
    assert!(checked >= 12, "seed {seed}: only {checked} streams checked");
    // Stalled clients made the router park streams (never reported here,
    // so the count is the run's).
    assert!(router.parked_count > 0, "seed {seed}: no stream was parked");
}

/// Invariant 3 of `docs/DESIGN.md` through the router: a client parked while retention deletes
/// what it has not received yet gets an explicit gap notice, then the rest.
#[test]
fn a_parked_stream_past_retention_gets_a_gap_notice() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.ring_capacity = 8 << 10;
    config.max_payload = 256;
    config.log.segment_size = 4096;
    config.log.prefault = false;
    config.log.retention = herald_core::log::Retention {
        max_records: Some(50),
        override_pins: true,
        ..Default::default()
    };
    let broker = Broker::open(config).unwrap();
    // An output bound of one frame: the second event finds it full.
    let mut router = Router::new(broker.clone(), 16).unwrap();
    let sub = broker
        .subscribe(Filter::topic("r").unwrap(), StartAt::Now)
        .unwrap();
    let id = router.add(0, sub, Encoding::Sse(SseForm::new(false, true)), 0);
    let mut clients = Clients(vec![Some(Client {
        out: Output::default(),
        got: Vec::new(),
        stalled_until: 0,
    })]);
    router.catch_up(&mut clients); // goes live
    let p = broker.publisher("r").unwrap();
    let total = 2_000u64;
    for _ in 0..total {
        p.publish("e", &[b'x'; 100], Default::default()).unwrap();
        router.route(&mut clients);
    }
    assert!(router.parked_count > 0, "the stream was parked");
    // The client drains: the stream resumes where it stopped.
    let client = clients.0[0].as_mut().unwrap();
    while client.out.pending() > 0 {
        let mut wire = Wire {
            got: &mut client.got,
            room: usize::MAX,
        };
        client.out.write_to(&mut wire).unwrap();
    }
    for _ in 0..100 {
        router.route(&mut clients);
        router.catch_up(&mut clients);
        let client = clients.0[0].as_mut().unwrap();
        let mut wire = Wire {
            got: &mut client.got,
            room: usize::MAX,
        };
        client.out.write_to(&mut wire).unwrap();
    }
    let text = String::from_utf8(clients.0[0].as_ref().unwrap().got.clone()).unwrap();
    let gap_line = text
        .lines()
        .find(|l| l.starts_with("data: {\"gap\""))
        .expect("a gap notice");
    let gap: serde_json::Value = serde_json::from_str(&gap_line["data: ".len()..]).unwrap();
    let (from, to) = (
        gap["gap"]["from"].as_u64().unwrap(),
        gap["gap"]["to"].as_u64().unwrap(),
    );
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|i| i.parse().unwrap())
        .collect();
    // Everything before the gap, nothing inside it, everything after it.
    let expected: Vec<u64> = (1..from).chain(to + 1..=total).collect();
    assert_eq!(ids, expected, "gap {from}..={to}");
    assert!(from > 1 && to < total, "gap {from}..={to}");
    router.remove(id);
}
