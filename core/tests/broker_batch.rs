//! Batched publishes: one lock acquisition, consecutive global sequences,
//! all or nothing on invalid input, and dense topics when batches and
//! single publishes interleave from several threads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;

use herald_core::broker::{BatchEvent, BrokerError, Delivery, Filter, PublishOptions, StartAt};
use herald_core::log::Durability;
use herald_core::{Broker, BrokerConfig};

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = BrokerConfig::new(dir);
    c.ring_capacity = 1 << 16;
    c.max_payload = 4096;
    c.log.segment_size = 1 << 16;
    c.log.durability = Durability::Never;
    c.log.prefault = false;
    c
}

#[test]
fn a_batch_gets_consecutive_sequences_and_dense_topic_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let (a, b) = (
        broker.publisher("acme.a").unwrap(),
        broker.publisher("acme.b").unwrap(),
    );
    a.publish("t", b"0", PublishOptions::default()).unwrap();
    let event = |publisher, payload| BatchEvent {
        publisher,
        event_type: "t",
        payload,
        options: PublishOptions {
            origin: 7,
            correlation: Some("c-1"),
            ..PublishOptions::default()
        },
    };
    let batch = [event(&a, b"1".as_slice()), event(&b, b"2"), event(&a, b"3")];
    let mut out = Vec::new();
    broker.publish_batch(&batch, &mut out).unwrap();
    let got: Vec<(u64, u64)> = out.iter().map(|p| (p.seq, p.topic_seq)).collect();
    assert_eq!(got, [(2, 2), (3, 1), (4, 3)]);
    let mut sub = broker
        .subscribe(Filter::patterns(&["acme.>"]).unwrap(), StartAt::Seq(2))
        .unwrap();
    let mut stamps = Vec::new();
    for (expected, payload) in out.iter().zip([b"1", b"2", b"3"]) {
        let Some(Delivery::Event(e)) = sub.try_next().unwrap() else {
            panic!("missing event {expected:?}");
        };
        assert_eq!((e.seq, e.topic_seq), (expected.seq, expected.topic_seq));
        assert_eq!((e.payload.as_slice(), e.origin), (payload.as_slice(), 7));
        assert_eq!(e.correlation.as_deref(), Some("c-1"));
        stamps.push(e.timestamp_ns);
    }
    // One timestamp for the batch.
    assert!(
        stamps.iter().all(|&t| t == stamps[0] && t > 0),
        "{stamps:?}"
    );
    assert_eq!(broker.metrics().published, 4);
}

#[test]
fn an_invalid_event_refuses_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let a = broker.publisher("acme.a").unwrap();
    let good = BatchEvent {
        publisher: &a,
        event_type: "t",
        payload: b"{}",
        options: PublishOptions::default(),
    };
    let big = vec![b'x'; 5000];
    let mut out = Vec::new();
    for bad in [
        BatchEvent {
            event_type: "bad type",
            ..good
        },
        BatchEvent {
            payload: &big,
            ..good
        },
        BatchEvent {
            options: PublishOptions {
                origin: 0,
                correlation: Some("no spaces"),
                ..PublishOptions::default()
            },
            ..good
        },
    ] {
        assert!(broker.publish_batch(&[good, good, bad], &mut out).is_err());
        assert!(out.is_empty());
        assert_eq!(broker.next_seq(), 1, "nothing stored");
    }
    let other_dir = tempfile::tempdir().unwrap();
    let other = Broker::open(config(other_dir.path())).unwrap();
    let foreign = other.publisher("acme.a").unwrap();
    let stranger = BatchEvent {
        publisher: &foreign,
        ..good
    };
    assert!(matches!(
        broker.publish_batch(&[good, stranger], &mut out),
        Err(BrokerError::ForeignPublisher)
    ));
    assert_eq!(broker.next_seq(), 1);
    broker.publish_batch(&[], &mut out).unwrap();
    assert!(out.is_empty());
}

/// Several threads, each publishing singles and batches of random sizes
/// across three topics: every acknowledgement matches the log (sequence,
/// topic, topic sequence, payload), every batch is consecutive, and every
/// topic's sequences are dense.
#[test]
fn interleaved_batches_and_singles_keep_topics_dense_and_acks_exact() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::open(config(dir.path())).unwrap());
    let topics = ["acme.x", "acme.y", "acme.z"];
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let broker = broker.clone();
            thread::spawn(move || {
                let publishers: Vec<_> = topics
                    .iter()
                    .map(|n| broker.publisher(n).unwrap())
                    .collect();
                // (seq, topic, topic_seq, payload) per acknowledgement.
                let mut acks = Vec::new();
                let mut rng = t * 7919 + 1;
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut out = Vec::new();
                for i in 0..400u64 {
                    let size = (next() % 12) as usize;
                    let picks: Vec<(usize, Vec<u8>)> = (0..size.max(1))
                        .map(|j| {
                            let topic = (next() % 3) as usize;
                            (topic, format!("{t}-{i}-{j}").into_bytes())
                        })
                        .collect();
                    if size == 0 {
                        let (topic, payload) = &picks[0];
                        let p = publishers[*topic]
                            .publish("e", payload, PublishOptions::default())
                            .unwrap();
                        acks.push((p.seq, *topic, p.topic_seq, payload.clone()));
                        continue;
                    }
                    let batch: Vec<BatchEvent<'_>> = picks
                        .iter()
                        .map(|(topic, payload)| BatchEvent {
                            publisher: &publishers[*topic],
                            event_type: "e",
                            payload,
                            options: PublishOptions::default(),
                        })
                        .collect();
                    out.clear();
                    broker.publish_batch(&batch, &mut out).unwrap();
                    assert_eq!(out.len(), batch.len());
                    for w in out.windows(2) {
                        assert_eq!(w[1].seq, w[0].seq + 1, "a batch is consecutive");
                    }
                    for (p, (topic, payload)) in out.iter().zip(&picks) {
                        acks.push((p.seq, *topic, p.topic_seq, payload.clone()));
                    }
                }
                acks
            })
        })
        .collect();
    let mut acks: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    acks.sort();
    let mut sub = broker
        .subscribe(Filter::patterns(&["acme.>"]).unwrap(), StartAt::Seq(1))
        .unwrap();
    let mut topic_seqs: BTreeMap<String, u64> = BTreeMap::new();
    for (seq, topic, topic_seq, payload) in &acks {
        let Some(Delivery::Event(e)) = sub.try_next().unwrap() else {
            panic!("the log ends before acknowledged event {seq}");
        };
        assert_eq!(e.seq, *seq, "every acknowledged sequence, in order");
        assert_eq!(&*e.topic, topics[*topic]);
        assert_eq!(e.topic_seq, *topic_seq);
        assert_eq!(&e.payload, payload);
        let last = topic_seqs.entry(e.topic.to_string()).or_insert(0);
        assert_eq!(e.topic_seq, *last + 1, "topic {} is dense", e.topic);
        *last = e.topic_seq;
    }
    assert!(sub.try_next().unwrap().is_none(), "nothing unacknowledged");
    assert_eq!(acks.len() as u64, broker.next_seq() - 1);
}

#[test]
fn an_event_too_large_refuses_the_batch_before_any_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    // A segment that cannot hold the largest event is refused at open.
    c.max_payload = 1 << 20; // larger than a 64 KiB segment can hold
    c.ring_capacity = 8 << 20;
    assert!(matches!(
        Broker::open(c.clone()).err(),
        Some(BrokerError::InvalidConfig(_))
    ));
    c.max_payload = 60_000;
    let broker = Broker::open(c).unwrap();
    let a = broker.publisher("acme.a").unwrap();
    let big = vec![b'x'; 60_001];
    let event = |payload| BatchEvent {
        publisher: &a,
        event_type: "t",
        payload,
        options: PublishOptions::default(),
    };
    let mut out = Vec::new();
    let refused = broker.publish_batch(&[event(b"small".as_slice()), event(&big)], &mut out);
    assert!(
        matches!(refused, Err(BrokerError::PayloadTooLarge { .. })),
        "{refused:?}"
    );
    assert_eq!(broker.next_seq(), 1, "nothing appended");
    assert!(matches!(
        a.publish("t", &big, PublishOptions::default()),
        Err(BrokerError::PayloadTooLarge { .. })
    ));
}
