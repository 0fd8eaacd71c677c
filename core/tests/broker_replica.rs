//! A replica takes events only through `replicate`, in the stream's order:
//! local publishes are refused, events out of order are refused and store
//! nothing, and two replicas fed the same events hold the same records
//! (sequences, timestamps, types, payloads), live and after a reopen; a
//! start past the replica's end waits there for the replica, and reads on
//! from the log, exactly, if the ring laps it meanwhile; sequences the
//! stream dropped before the replica saw them are skipped, and every reader
//! crossing the skip, live or replaying, before or after a reopen, gets a gap.

use std::time::Duration;

use herald_core::broker::{
    BrokerError, Delivery, Event, Filter, PublishOptions, Replicated, StartAt,
};
use herald_core::log::Durability;
use herald_core::{Broker, BrokerConfig};

fn config(dir: &std::path::Path, replica: bool) -> BrokerConfig {
    let mut c = BrokerConfig::new(dir);
    c.ring_capacity = 1 << 16;
    c.max_payload = 4096;
    c.log.segment_size = 1 << 16;
    c.log.durability = Durability::Never;
    c.log.prefault = false;
    c.replica = replica;
    c
}

fn event<'a>(
    seq: u64,
    topic: &'a str,
    topic_seq: u64,
    ts: u64,
    payload: &'a [u8],
) -> Replicated<'a> {
    Replicated {
        seq,
        topic,
        topic_seq,
        topic_may_jump: false,
        timestamp_ns: ts,
        event_type: "order.created",
        payload,
        options: PublishOptions {
            origin: 7,
            correlation: Some("c-1"),
            payload_is_json: true,
        },
    }
}

/// Every event of `broker`, read back from the log.
fn all(broker: &Broker) -> Vec<Event> {
    let mut sub = broker
        .subscribe(
            Filter::patterns(&[">", "$presence.>"]).unwrap(),
            StartAt::Seq(1),
        )
        .unwrap();
    let mut out = Vec::new();
    while let Some(d) = sub.next_timeout(Duration::from_millis(50)).unwrap() {
        let Delivery::Event(e) = d else {
            panic!("unexpected {d:?}")
        };
        out.push(e);
    }
    out
}

#[test]
fn a_replica_refuses_local_publishes_and_a_plain_broker_refuses_replicated_events() {
    let dir = tempfile::tempdir().unwrap();
    let replica = Broker::open(config(&dir.path().join("r"), true)).unwrap();
    let local = replica.publisher("orders").unwrap();
    assert!(matches!(
        local.publish("t", b"{}", PublishOptions::default()),
        Err(BrokerError::Replica(_))
    ));
    assert!(matches!(
        replica.publish_batch(&[], &mut Vec::new()),
        Err(BrokerError::Replica(_))
    ));
    assert!(matches!(
        replica.presence_join("room", "c1", "", "", ""),
        Err(BrokerError::Replica(_))
    ));
    assert_eq!(replica.next_seq(), 1, "nothing stored");

    let plain = Broker::open(config(&dir.path().join("p"), false)).unwrap();
    assert!(matches!(
        plain.replicate(&event(1, "orders", 1, 5, b"{}")),
        Err(BrokerError::Replica(_))
    ));
}

#[test]
fn events_out_of_order_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path(), true)).unwrap();
    let p = broker.replicate(&event(1, "orders", 1, 10, b"{}")).unwrap();
    assert_eq!((p.seq, p.topic_seq), (1, 1));
    // A global sequence skipped, repeated, or a topic sequence skipped or repeated.
    for (seq, topic_seq, which, expected) in [
        (3, 2, "global", 2),
        (1, 2, "global", 2),
        (2, 3, "topic", 2),
        (2, 1, "topic", 2),
    ] {
        match broker.replicate(&event(seq, "orders", topic_seq, 11, b"{}")) {
            Err(BrokerError::ReplicaOrder {
                sequence,
                expected: e,
                got,
            }) => {
                assert_eq!(
                    (sequence, e),
                    (which, expected),
                    "seq {seq} topic seq {topic_seq}"
                );
                assert_eq!(got, if which == "global" { seq } else { topic_seq });
            }
            other => panic!("seq {seq} topic seq {topic_seq}: {other:?}"),
        }
    }
    // A new topic starts at topic sequence 1.
    assert!(matches!(
        broker.replicate(&event(2, "users", 2, 11, b"{}")),
        Err(BrokerError::ReplicaOrder {
            sequence: "topic",
            expected: 1,
            got: 2
        })
    ));
    // Bad content is refused as a publish would refuse it.
    let mut bad = event(2, "orders", 2, 11, b"{}");
    bad.event_type = "has space";
    assert!(matches!(
        broker.replicate(&bad),
        Err(BrokerError::InvalidEventType(_))
    ));
    assert_eq!(broker.next_seq(), 2, "nothing refused was stored");
    assert_eq!(all(&broker).len(), 1);
}

#[test]
fn replicas_fed_the_same_events_hold_the_same_records_live_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = Broker::open(config(&dir.path().join("a"), true)).unwrap();
    let mut live = a
        .subscribe(Filter::patterns(&[">"]).unwrap(), StartAt::Now)
        .unwrap();
    // Two topics interleaved; one publisher's clock behind the other's
    // (timestamp 5 after 20): stored raised to 20 on every replica.
    let stream = [
        (1, "orders", 1, 10u64),
        (2, "users", 1, 20),
        (3, "orders", 2, 5),
        (4, "$presence.room", 1, 30),
        (5, "orders", 3, 40),
    ];
    let payloads: Vec<Vec<u8>> = (0..stream.len())
        .map(|i| format!("{{\"i\":{i}}}").into_bytes())
        .collect();
    for ((seq, topic, topic_seq, ts), payload) in stream.iter().zip(&payloads) {
        let p = a
            .replicate(&event(*seq, topic, *topic_seq, *ts, payload))
            .unwrap();
        assert_eq!((p.seq, p.topic_seq), (*seq, *topic_seq));
    }
    let Some(Delivery::Event(first)) = live.next_timeout(Duration::from_secs(5)).unwrap() else {
        panic!("no live event")
    };
    assert_eq!((first.seq, &*first.topic), (1, "orders"));

    let b = Broker::open(config(&dir.path().join("b"), true)).unwrap();
    for ((seq, topic, topic_seq, ts), payload) in stream.iter().zip(&payloads) {
        b.replicate(&event(*seq, topic, *topic_seq, *ts, payload))
            .unwrap();
    }
    let records = all(&a);
    assert_eq!(records, all(&b));
    let stamps: Vec<u64> = records.iter().map(|r| r.timestamp_ns).collect();
    assert_eq!(stamps, [10, 20, 20, 30, 40]);
    assert_eq!(&*records[3].topic, "$presence.room");
    assert_eq!(records[0].correlation.as_deref(), Some("c-1"));
    assert_eq!(records[0].origin, 7);

    // After a reopen the replica goes on where it stopped.
    drop(live);
    b.close().unwrap();
    let b = Broker::open(config(&dir.path().join("b"), true)).unwrap();
    assert_eq!(all(&b), records);
    assert!(matches!(
        b.replicate(&event(6, "orders", 3, 50, b"{}")),
        Err(BrokerError::ReplicaOrder {
            sequence: "topic",
            expected: 4,
            got: 3
        })
    ));
    b.replicate(&event(6, "orders", 4, 50, b"{}")).unwrap();
    assert_eq!(b.next_seq(), 7);
}

#[test]
fn a_start_past_a_replicas_end_waits_there_instead_of_resetting() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path(), true)).unwrap();
    broker.replicate(&event(1, "orders", 1, 10, b"{}")).unwrap();
    // Positions another replica gave the client: global 4 onwards, and the
    // topic's 3 onwards.
    let mut global = broker
        .subscribe(Filter::patterns(&[">"]).unwrap(), StartAt::Seq(4))
        .unwrap();
    let mut topic = broker
        .subscribe(Filter::topic("orders").unwrap(), StartAt::TopicSeq(3))
        .unwrap();
    assert_eq!((global.beyond_end(), topic.beyond_end()), (None, None));
    assert!(global.try_next().unwrap().is_none());
    // The replica catches up: what the client had is not delivered again.
    for (seq, topic_seq) in [(2, 2), (3, 3), (4, 4)] {
        broker
            .replicate(&event(seq, "orders", topic_seq, 10 + seq, b"{}"))
            .unwrap();
    }
    let next = |sub: &mut herald_core::broker::Subscription| match sub
        .next_timeout(Duration::from_secs(5))
        .unwrap()
    {
        Some(Delivery::Event(e)) => (e.seq, e.topic_seq),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(next(&mut global), (4, 4));
    assert_eq!(next(&mut topic), (3, 3));
    assert_eq!(next(&mut topic), (4, 4));
    assert!(global.try_next().unwrap().is_none());

    // A plain broker still says the position is past its end.
    let plain = Broker::open(config(&dir.path().join("p"), false)).unwrap();
    plain.publish("orders", "t", b"{}").unwrap();
    let sub = plain
        .subscribe(Filter::patterns(&[">"]).unwrap(), StartAt::Seq(4))
        .unwrap();
    assert_eq!(sub.beyond_end(), Some(1));
}

#[test]
fn a_held_subscription_lapped_by_the_ring_reads_on_from_the_log_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path(), true)).unwrap();
    // Held at 10, then 400 events of 1 KiB (six times the 64 KiB ring)
    // before it reads: the ring has overwritten 10 and much after it.
    let mut held = broker
        .subscribe(Filter::patterns(&[">"]).unwrap(), StartAt::Seq(10))
        .unwrap();
    let payload = format!("\"{}\"", "x".repeat(1000));
    for seq in 1..=400 {
        broker
            .replicate(&event(seq, "orders", seq, seq, payload.as_bytes()))
            .unwrap();
    }
    let mut seqs = Vec::new();
    while let Some(d) = held.try_next().unwrap() {
        match d {
            Delivery::Event(e) => seqs.push(e.seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seqs, (10..=400).collect::<Vec<_>>(), "no gap, no repeat");
    assert!(broker.metrics().lagged_fallbacks >= 1, "the ring lapped it");
}

/// What a subscription delivers until it has nothing more: `Ok(seq)` for an
/// event, `Err((topic, from, to))` for a gap.
type Seen = Result<u64, (Option<String>, u64, u64)>;

fn drain(sub: &mut herald_core::broker::Subscription) -> Vec<Seen> {
    let mut out = Vec::new();
    while let Some(d) = sub.next_timeout(Duration::from_millis(50)).unwrap() {
        out.push(match d {
            Delivery::Event(e) => Ok(e.seq),
            Delivery::Gap(g) => Err((g.topic.map(|t| t.to_string()), g.from, g.to)),
        });
    }
    out
}

#[test]
fn sequences_the_stream_dropped_are_skipped_and_every_reader_crossing_them_gets_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let seq_sub =
        |b: &Broker, at: StartAt| b.subscribe(Filter::patterns(&[">"]).unwrap(), at).unwrap();
    let topic_sub =
        |b: &Broker, at: StartAt| b.subscribe(Filter::patterns(&["a"]).unwrap(), at).unwrap();
    {
        let r = Broker::open(config(&path, true)).unwrap();
        r.replicate(&event(1, "a", 1, 10, b"{}")).unwrap();
        r.replicate(&event(2, "b", 1, 11, b"{}")).unwrap();
        r.replicate(&event(3, "a", 2, 12, b"{}")).unwrap();
        // Live on the ring, caught up; held inside what will be skipped.
        let mut live = seq_sub(&r, StartAt::Now);
        let mut live_topic = topic_sub(&r, StartAt::TopicSeq(3));
        let mut held = seq_sub(&r, StartAt::Seq(6));
        assert!(drain(&mut live).is_empty() && drain(&mut held).is_empty());
        assert!(drain(&mut live_topic).is_empty());
        r.skip_to(10).unwrap();
        // Topic a's events 3 and 4 were among the dropped; b lost nothing.
        r.replicate(&event(10, "a", 5, 20, b"{}")).unwrap();
        r.replicate(&event(11, "b", 2, 21, b"{}")).unwrap();
        assert_eq!(drain(&mut live), vec![Err((None, 4, 9)), Ok(10), Ok(11)]);
        assert_eq!(drain(&mut held), vec![Err((None, 6, 9)), Ok(10), Ok(11)]);
        assert_eq!(
            drain(&mut live_topic),
            vec![Err((Some("a".into()), 3, 4)), Ok(10)]
        );
        // A topic jumps only across a skip: a's last record is past it now.
        assert!(matches!(
            r.replicate(&event(12, "a", 9, 22, b"{}")),
            Err(BrokerError::ReplicaOrder {
                sequence: "topic",
                ..
            })
        ));
        // A skip longer than the ring's slots: the live reader is sent back
        // to the log, which has the gap.
        r.skip_to(1_000_000).unwrap();
        r.replicate(&event(1_000_000, "b", 7, 30, b"{}")).unwrap();
        assert_eq!(
            drain(&mut live),
            vec![Err((None, 12, 999_999)), Ok(1_000_000)]
        );
        assert!(matches!(
            r.skip_to(5),
            Err(BrokerError::ReplicaOrder {
                sequence: "global",
                ..
            })
        ));
    }
    let r = Broker::open(config(&path, true)).unwrap();
    assert_eq!(
        drain(&mut seq_sub(&r, StartAt::Seq(1))),
        vec![
            Ok(1),
            Ok(2),
            Ok(3),
            Err((None, 4, 9)),
            Ok(10),
            Ok(11),
            Err((None, 12, 999_999)),
            Ok(1_000_000)
        ]
    );
    assert_eq!(
        drain(&mut topic_sub(&r, StartAt::TopicSeq(1))),
        vec![Ok(1), Ok(3), Err((Some("a".into()), 3, 4)), Ok(10)]
    );
    // After the reopen too, a topic jumps only across a skip: b's last
    // record is the newest skip's first.
    r.replicate(&event(1_000_001, "b", 9, 31, b"{}"))
        .unwrap_err();
    assert_eq!(r.topic_next_seq("b"), 8);
}
