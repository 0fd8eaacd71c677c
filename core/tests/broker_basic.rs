//! The broker's behaviour through its public API.

use std::thread;
use std::time::Duration;

use herald_core::broker::AckError;
use herald_core::broker::{
    BrokerError, Delivery, DeliveryRef, Event, Filter, PublishOptions, StartAt,
};
use herald_core::log::{Durability, LogError, Retention};
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

fn event(d: Delivery) -> Event {
    match d {
        Delivery::Event(e) => e,
        Delivery::Gap(g) => panic!("unexpected gap {g:?}"),
    }
}

fn drain(sub: &mut herald_core::Subscription) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(d) = sub.try_next().unwrap() {
        out.push(d);
    }
    out
}

#[test]
fn sequences_are_dense_per_topic_and_globally() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let a = broker.publisher("acme.a").unwrap();
    let b = broker.publisher("acme.b").unwrap();
    let mut seqs = Vec::new();
    for i in 0..10 {
        let p = if i % 3 == 0 { &b } else { &a };
        seqs.push(p.publish("t", b"{}", PublishOptions::default()).unwrap());
    }
    let globals: Vec<u64> = seqs.iter().map(|p| p.seq).collect();
    assert_eq!(globals, (1..=10).collect::<Vec<_>>());
    let b_seqs: Vec<u64> = seqs.iter().step_by(3).map(|p| p.topic_seq).collect();
    assert_eq!(b_seqs, vec![1, 2, 3, 4]);
}

#[test]
fn live_subscribers_get_events_with_all_fields() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let mut sub = broker
        .subscribe(Filter::topic("acme.orders").unwrap(), StartAt::Now)
        .unwrap();
    let p = broker.publisher("acme.orders").unwrap();
    let published = p
        .publish(
            "order.created",
            br#"{"id":1}"#,
            PublishOptions {
                origin: 42,
                correlation: Some("req-7"),
                ..PublishOptions::default()
            },
        )
        .unwrap();
    let e = event(sub.next_timeout(Duration::from_secs(5)).unwrap().unwrap());
    assert_eq!((e.seq, e.topic_seq), (published.seq, published.topic_seq));
    assert_eq!(&*e.topic, "acme.orders");
    assert_eq!(e.event_type, "order.created");
    assert_eq!(e.correlation.as_deref(), Some("req-7"));
    assert_eq!(e.origin, 42);
    assert_eq!(e.payload, br#"{"id":1}"#);
    assert!(sub.is_live());
}

/// Whether the publisher checked its payload as JSON reaches live
/// subscribers with the event; events read back from the log do not carry
/// it (the log does not store it).
#[test]
fn live_events_say_whether_the_publisher_checked_the_payload_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let mut live = broker
        .subscribe(Filter::topic("acme.j").unwrap(), StartAt::Now)
        .unwrap();
    let p = broker.publisher("acme.j").unwrap();
    for checked in [true, false, true] {
        let options = PublishOptions {
            payload_is_json: checked,
            ..PublishOptions::default()
        };
        p.publish("t", b"{}", options).unwrap();
    }
    let flags = |sub: &mut herald_core::Subscription| {
        let mut seen = Vec::new();
        while let Some(flag) = sub
            .try_next_with(|d| match d {
                DeliveryRef::Event(e) => e.payload_json,
                DeliveryRef::Gap(g) => panic!("unexpected gap {g:?}"),
            })
            .unwrap()
        {
            seen.push(flag);
        }
        seen
    };
    assert_eq!(flags(&mut live), [true, false, true]);
    let mut replay = broker
        .subscribe(Filter::topic("acme.j").unwrap(), StartAt::TopicSeq(1))
        .unwrap();
    assert_eq!(flags(&mut replay), [false, false, false]);
}

#[test]
fn filters_select_by_pattern_type_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let mut star = broker
        .subscribe(Filter::patterns(&["acme.ws.*"]).unwrap(), StartAt::Now)
        .unwrap();
    let mut deep = broker
        .subscribe(Filter::patterns(&["acme.>"]).unwrap(), StartAt::Now)
        .unwrap();
    let mut typed = broker
        .subscribe(
            Filter::patterns(&["acme.>"])
                .unwrap()
                .with_types(&["keep"])
                .excluding_origin(9),
            StartAt::Now,
        )
        .unwrap();
    for (topic, ty, origin) in [
        ("acme.ws.1", "keep", 1),
        ("acme.ws.1.x", "keep", 1),
        ("acme.other", "drop", 1),
        ("acme.ws.2", "keep", 9),
        ("other.ws.1", "keep", 1),
    ] {
        broker
            .publisher(topic)
            .unwrap()
            .publish(
                ty,
                b"x",
                PublishOptions {
                    origin,
                    correlation: None,
                    ..PublishOptions::default()
                },
            )
            .unwrap();
    }
    let topics = |sub: &mut herald_core::Subscription| -> Vec<String> {
        drain(sub)
            .into_iter()
            .map(|d| event(d).topic.to_string())
            .collect()
    };
    assert_eq!(topics(&mut star), ["acme.ws.1", "acme.ws.2"]);
    assert_eq!(
        topics(&mut deep),
        ["acme.ws.1", "acme.ws.1.x", "acme.other", "acme.ws.2"]
    );
    assert_eq!(topics(&mut typed), ["acme.ws.1", "acme.ws.1.x"]);
}

#[test]
fn replay_from_every_kind_of_start_then_live() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let t = broker.publisher("t").unwrap();
    let other = broker.publisher("o").unwrap();
    let mut times = Vec::new();
    for i in 0..20u8 {
        times.push(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        );
        t.publish("e", &[i], PublishOptions::default()).unwrap();
        other.publish("e", &[i], PublishOptions::default()).unwrap();
    }
    let payloads = |start: StartAt, filter: Filter| -> Vec<u8> {
        let mut sub = broker.subscribe(filter, start).unwrap();
        drain(&mut sub)
            .into_iter()
            .map(|d| event(d).payload[0])
            .collect()
    };
    let f = || Filter::topic("t").unwrap();
    assert_eq!(
        payloads(StartAt::TopicSeq(15), f()),
        (14..20).collect::<Vec<u8>>()
    );
    assert_eq!(payloads(StartAt::LastN(3), f()), vec![17, 18, 19]);
    // Global sequence 21 is the 11th event of "t" (they alternate t, o).
    assert_eq!(
        payloads(StartAt::Seq(21), f()),
        (10..20).collect::<Vec<u8>>()
    );
    assert_eq!(
        payloads(StartAt::Time(times[5]), f()),
        (5..20).collect::<Vec<u8>>()
    );
    assert_eq!(
        payloads(StartAt::LastN(4), Filter::patterns(&["*"]).unwrap()),
        vec![18, 18, 19, 19]
    );
    // Then live.
    let mut sub = broker.subscribe(f(), StartAt::LastN(1)).unwrap();
    assert_eq!(event(sub.try_next().unwrap().unwrap()).payload, [19]);
    t.publish("e", &[20], PublishOptions::default()).unwrap();
    assert_eq!(
        event(sub.next_timeout(Duration::from_secs(5)).unwrap().unwrap()).payload,
        [20]
    );
}

/// A subscriber that starts in the past while a publisher keeps publishing
/// receives every event exactly once, in order, across the log→ring handoff.
#[test]
fn replay_to_live_handoff_has_no_gap_and_no_duplicate() {
    for (filter, start) in [
        (Filter::topic("h").unwrap(), StartAt::TopicSeq(1)),
        (Filter::patterns(&["h", "x.*"]).unwrap(), StartAt::Seq(1)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(config(dir.path())).unwrap();
        let p = broker.publisher("h").unwrap();
        for i in 0..2_000u32 {
            p.publish("e", &i.to_le_bytes(), PublishOptions::default())
                .unwrap();
        }
        let total = 20_000u32;
        let writer = {
            let p = p.clone();
            let noise = broker.publisher("noise").unwrap();
            thread::spawn(move || {
                for i in 2_000..total {
                    p.publish("e", &i.to_le_bytes(), PublishOptions::default())
                        .unwrap();
                    noise.publish("e", b"n", PublishOptions::default()).unwrap();
                }
            })
        };
        let mut sub = broker.subscribe(filter, start).unwrap();
        let mut expected = 0u32;
        while expected < total {
            match sub.next_timeout(Duration::from_secs(10)).unwrap() {
                Some(Delivery::Event(e)) => {
                    assert_eq!(
                        e.payload,
                        expected.to_le_bytes(),
                        "event {expected} out of order, missing or repeated"
                    );
                    assert_eq!(e.topic_seq, expected as u64 + 1);
                    expected += 1;
                }
                other => panic!("unexpected {other:?} at {expected}"),
            }
        }
        writer.join().unwrap();
        assert!(sub.try_next().unwrap().is_none());
    }
}

/// A subscriber stalled for ten times the ring's capacity costs the publisher
/// nothing (no error, no wait), then catches up completely from the log.
#[test]
fn stalled_subscriber_costs_the_publisher_nothing_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.ring_capacity = 1 << 16; // 64 KiB
    let broker = Broker::open(c).unwrap();
    let mut stalled = broker
        .subscribe(Filter::topic("s").unwrap(), StartAt::Now)
        .unwrap();
    let p = broker.publisher("s").unwrap();
    let payload = [7u8; 200];
    // 10 × the ring in bytes.
    let n = 10 * (1 << 16) / 200 + 1;
    for _ in 0..n {
        p.publish("e", &payload, PublishOptions::default()).unwrap();
    }
    let before = broker.metrics();
    let mut got = 0u64;
    while let Some(d) = stalled.try_next().unwrap() {
        let e = event(d);
        got += 1;
        assert_eq!(e.topic_seq, got);
    }
    assert_eq!(got, n as u64);
    drop(stalled);
    let after = broker.metrics();
    assert!(
        after.lagged_fallbacks > before.lagged_fallbacks,
        "it must have been lapped and fallen back"
    );
    assert!(after.replayed >= n as u64 - (1 << 16) / 200);
}

#[test]
fn retention_loss_arrives_as_an_explicit_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.log.segment_size = 4096;
    c.max_payload = 1024; // a segment must hold the largest event
    c.log.retention = Retention {
        max_records: Some(50),
        override_pins: true,
        ..Retention::default()
    };
    let broker = Broker::open(c).unwrap();
    let mut sub = broker
        .subscribe(Filter::topic("r").unwrap(), StartAt::TopicSeq(1))
        .unwrap();
    let mut global = broker
        .subscribe(Filter::patterns(&["r"]).unwrap(), StartAt::Seq(1))
        .unwrap();
    let p = broker.publisher("r").unwrap();
    for _ in 0..2_000 {
        p.publish("e", &[1u8; 100], PublishOptions::default())
            .unwrap();
    }
    for (sub, topic) in [(&mut sub, true), (&mut global, false)] {
        let items = drain(sub);
        let Delivery::Gap(gap) = &items[0] else {
            panic!("expected a gap first, got {:?}", items[0])
        };
        assert_eq!(gap.topic.is_some(), topic);
        assert_eq!(gap.from, 1);
        let first = event(items[1].clone());
        assert_eq!(
            first.topic_seq,
            gap.to + 1,
            "the gap ends right before the first event"
        );
        assert_eq!(event(items.last().unwrap().clone()).topic_seq, 2_000);
    }
    // Subscriptions merge their counters into the broker's when dropped.
    drop(sub);
    drop(global);
    assert_eq!(broker.metrics().gaps, 2);
}

#[test]
fn durable_consumer_resumes_after_its_checkpoint_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = Broker::open(config(dir.path())).unwrap();
        let p = broker.publisher("c").unwrap();
        for i in 0..10u8 {
            p.publish("e", &[i], PublishOptions::default()).unwrap();
        }
        let mut sub = broker
            .subscribe_consumer("worker-1", Filter::topic("c").unwrap(), StartAt::Seq(1))
            .unwrap();
        let mut seqs = Vec::new();
        for _ in 0..6 {
            seqs.push(event(sub.try_next().unwrap().unwrap()).seq);
        }
        sub.ack(seqs[0]).unwrap();
        sub.ack(seqs[2]).unwrap(); // out of order: checkpoint stays at seqs[0]
        assert_eq!(broker.consumer_checkpoint("worker-1").unwrap(), seqs[0]);
        sub.ack(seqs[1]).unwrap();
        assert_eq!(broker.consumer_checkpoint("worker-1").unwrap(), seqs[2]);
        assert!(matches!(sub.ack(1_000), Err(BrokerError::Ack(_))));
        sub.ack_up_to(seqs[4]).unwrap();
        broker.close().unwrap();
    }
    let broker = Broker::open(config(dir.path())).unwrap();
    let mut sub = broker
        .subscribe_consumer("worker-1", Filter::topic("c").unwrap(), StartAt::Now)
        .unwrap();
    let rest: Vec<u8> = drain(&mut sub)
        .into_iter()
        .map(|d| event(d).payload[0])
        .collect();
    assert_eq!(rest, vec![5, 6, 7, 8, 9]);
    // Sequences continue after reopen, without reuse.
    let p = broker
        .publisher("c")
        .unwrap()
        .publish("e", b"x", PublishOptions::default())
        .unwrap();
    assert_eq!((p.seq, p.topic_seq), (11, 11));
}

#[test]
fn broker_acknowledgements_need_a_consumer_and_move_forward_within_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let p = broker.publisher("c").unwrap();
    for i in 0..5u8 {
        p.publish("e", &[i], PublishOptions::default()).unwrap();
    }
    assert!(matches!(
        broker.ack_consumer("worker", 2),
        Err(BrokerError::UnknownConsumer(_))
    ));
    assert!(
        broker.consumers().is_empty(),
        "a refused ack creates nothing"
    );
    // The first subscription creates the consumer at its start.
    let sub = broker
        .subscribe_consumer("worker", Filter::topic("c").unwrap(), StartAt::Seq(3))
        .unwrap();
    assert_eq!(broker.consumers(), [("worker".to_owned(), 2)]);
    drop(sub);
    for past_end in [6, u64::MAX] {
        assert!(matches!(
            broker.ack_consumer("worker", past_end),
            Err(BrokerError::Ack(AckError::PastEnd { last: 5, .. }))
        ));
    }
    broker.ack_consumer("worker", 4).unwrap();
    assert!(matches!(
        broker.ack_consumer("worker", 3),
        Err(BrokerError::Ack(AckError::Backwards {
            seq: 3,
            checkpoint: 4
        }))
    ));
    broker.ack_consumer("worker", 4).unwrap();
    assert_eq!(broker.consumer_checkpoint("worker").unwrap(), 4);
    broker.remove_consumer("worker").unwrap();
    assert!(broker.consumers().is_empty());
}

#[test]
fn a_start_past_the_end_of_the_log_starts_at_the_end_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let a = broker.publisher("a").unwrap();
    let b = broker.publisher("b").unwrap();
    for _ in 0..3 {
        a.publish("e", b"a", PublishOptions::default()).unwrap();
        b.publish("e", b"b", PublishOptions::default()).unwrap();
    }
    // Global sequences 1..=6; topic a has topic sequences 1..=3.
    let at_end = broker
        .subscribe(Filter::topic("a").unwrap(), StartAt::TopicSeq(4))
        .unwrap();
    assert_eq!(
        at_end.beyond_end(),
        None,
        "just after the end is not past it"
    );
    let mut by_topic = broker
        .subscribe(Filter::topic("a").unwrap(), StartAt::TopicSeq(10))
        .unwrap();
    assert_eq!(by_topic.beyond_end(), Some(3));
    let mut by_seq = broker
        .subscribe(Filter::patterns(&[">"]).unwrap(), StartAt::Seq(100))
        .unwrap();
    assert_eq!(by_seq.beyond_end(), Some(6));
    a.publish("e", b"new", PublishOptions::default()).unwrap();
    let e = event(by_topic.try_next().unwrap().unwrap());
    assert_eq!(
        (e.topic_seq, e.seq),
        (4, 7),
        "the next event, not silence until 10"
    );
    assert_eq!(event(by_seq.try_next().unwrap().unwrap()).seq, 7);
}

#[test]
fn bad_input_gets_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    assert!(matches!(
        broker.publisher("bad topic"),
        Err(BrokerError::InvalidTopic { .. })
    ));
    assert!(matches!(
        broker.publisher("$system"),
        Err(BrokerError::InvalidTopic { .. })
    ));
    assert!(matches!(
        Filter::patterns(&["a.>.b"]),
        Err(BrokerError::InvalidTopic { .. })
    ));
    let p = broker.publisher("ok").unwrap();
    assert!(matches!(
        p.publish("e", &[0; 4097], PublishOptions::default()),
        Err(BrokerError::PayloadTooLarge {
            len: 4097,
            max: 4096
        })
    ));
    assert!(matches!(
        p.publish("bad type", b"", PublishOptions::default()),
        Err(BrokerError::InvalidEventType(_))
    ));
    assert!(matches!(
        p.publish(
            "e",
            b"",
            PublishOptions {
                origin: 0,
                correlation: Some("has space"),
                ..PublishOptions::default()
            }
        ),
        Err(BrokerError::InvalidCorrelation(_))
    ));
    assert!(matches!(
        broker.consumer_checkpoint("nobody"),
        Err(BrokerError::UnknownConsumer(_))
    ));
    assert!(matches!(
        broker.remove_consumer("nobody"),
        Err(BrokerError::UnknownConsumer(_))
    ));
    assert!(matches!(
        broker.subscribe(Filter::patterns(&["a.*"]).unwrap(), StartAt::TopicSeq(1)),
        Err(BrokerError::NeedsSingleTopic)
    ));
    assert!(matches!(
        broker.subscribe_consumer("bad name!", Filter::topic("ok").unwrap(), StartAt::Now),
        Err(BrokerError::Checkpoint(_))
    ));
    let mut plain = broker
        .subscribe(Filter::topic("ok").unwrap(), StartAt::Now)
        .unwrap();
    assert!(matches!(plain.ack(1), Err(BrokerError::NotAConsumer)));
    // Nothing was published by the failed calls.
    assert_eq!(broker.next_seq(), 1);
}

#[test]
fn system_topics_are_the_servers_to_publish_and_only_dollar_patterns_match_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    // System topics are the server's to publish, and only those.
    assert!(matches!(
        broker.system_publisher("plain"),
        Err(BrokerError::InvalidTopic { .. })
    ));
    let dead = broker.system_publisher("$deadletter.hook").unwrap();
    let seq = dead
        .publish("e", b"{}", PublishOptions::default())
        .unwrap()
        .seq;
    let mut all = broker
        .subscribe(Filter::patterns(&[">"]).unwrap(), StartAt::Seq(1))
        .unwrap();
    assert!(
        drain(&mut all).is_empty(),
        "'>' never matches system topics"
    );
    let mut system = broker
        .subscribe(
            Filter::patterns(&["$deadletter.>"]).unwrap(),
            StartAt::Seq(1),
        )
        .unwrap();
    assert_eq!(event(drain(&mut system).remove(0)).seq, seq);
}

#[test]
fn single_acknowledgements_advance_the_checkpoint_over_the_contiguous_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    // Events of the consumer (a.>) at odd sequences, others between.
    for n in 1..=3 {
        broker.publish(&format!("a.{n}"), "e", b"{}").unwrap();
        broker.publish("b", "e", b"{}").unwrap();
    }
    let filter = Filter::patterns(&["a.>"]).unwrap();
    drop(
        broker
            .subscribe_consumer("c", filter, StartAt::Seq(1))
            .unwrap(),
    );
    assert_eq!(
        broker.ack_consumer_events("c", &[3]).unwrap(),
        0,
        "1 is not acked"
    );
    assert_eq!(broker.ack_consumer_events("c", &[5, 5]).unwrap(), 0);
    // 1 acked: past 1, 2 (not the consumer's), 3, 4, 5 and 6 (the end).
    assert_eq!(broker.ack_consumer_events("c", &[1]).unwrap(), 6);
    assert_eq!(broker.consumer_checkpoint("c").unwrap(), 6);
    assert!(matches!(
        broker.ack_consumer_events("c", &[7]),
        Err(BrokerError::Ack(AckError::PastEnd { seq: 7, last: 6 }))
    ));
    assert_eq!(
        broker.ack_consumer_events("c", &[2]).unwrap(),
        6,
        "below: no-op"
    );
    assert!(matches!(
        broker.ack_consumer_events("nobody", &[1]),
        Err(BrokerError::UnknownConsumer(_))
    ));
    drop(broker);

    // After a restart the filter is unknown until the consumer subscribes:
    // only acknowledged sequences are passed.
    let broker = Broker::open(config(dir.path())).unwrap();
    broker.publish("a.4", "e", b"{}").unwrap(); // 7
    broker.publish("b", "e", b"{}").unwrap(); // 8
    assert_eq!(broker.ack_consumer_events("c", &[8]).unwrap(), 6);
    assert_eq!(broker.ack_consumer_events("c", &[7]).unwrap(), 8);
    // Bounded: acknowledgements waiting above an unacknowledged event.
    let first = broker.publish("a.5", "e", b"{}").unwrap().seq;
    let mut seqs = Vec::new();
    for _ in 0..herald_core::broker::MAX_PENDING_ACKS {
        seqs.push(broker.publish("a.5", "e", b"{}").unwrap().seq);
    }
    for chunk in seqs.chunks(1000) {
        assert_eq!(broker.ack_consumer_events("c", chunk).unwrap(), 8);
    }
    let one_more = broker.publish("a.5", "e", b"{}").unwrap().seq;
    assert!(matches!(
        broker.ack_consumer_events("c", &[one_more]),
        Err(BrokerError::Ack(AckError::TooManyPending { .. }))
    ));
    // The oldest acknowledged lets the checkpoint pass all of them.
    assert_eq!(
        broker.ack_consumer_events("c", &[first]).unwrap(),
        one_more - 1
    );
    // An acknowledgement up to N drops what waits below it.
    assert_eq!(
        broker.ack_consumer_events("c", &[one_more]).unwrap(),
        one_more
    );
}

#[test]
fn single_acknowledgements_waiting_above_the_checkpoint_are_bounded() {
    use herald_core::broker::MAX_PENDING_ACKS;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let filter = Filter::patterns(&["a.>"]).unwrap();
    drop(
        broker
            .subscribe_consumer("c", filter, StartAt::Now)
            .unwrap(),
    );
    let seqs: Vec<u64> = (0..12 * 1000 + 20)
        .map(|_| broker.publish("a.1", "e", b"{}").unwrap().seq)
        .collect();
    let far = &seqs[20..];
    // Each request moves the checkpoint by one event and leaves 999 far
    // ahead waiting: taken while the waiting stay within the bound.
    for i in 0..12 {
        let mut request = vec![seqs[i]];
        request.extend(&far[i * 999..(i + 1) * 999]);
        let r = broker.ack_consumer_events("c", &request);
        if 999 * (i + 1) <= MAX_PENDING_ACKS {
            assert_eq!(r.unwrap(), seqs[i]);
        } else {
            assert!(
                matches!(r, Err(BrokerError::Ack(AckError::TooManyPending { .. }))),
                "request {i}: {r:?}"
            );
            // Refused whole: the checkpoint did not move.
            assert_eq!(broker.consumer_checkpoint("c").unwrap(), seqs[9]);
        }
    }
}

#[test]
fn one_acknowledgement_reads_a_bounded_stretch_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.log.segment_size = 16 << 20;
    let broker = Broker::open(cfg).unwrap();
    let filter = Filter::patterns(&["a"]).unwrap();
    drop(
        broker
            .subscribe_consumer("c", filter, StartAt::Now)
            .unwrap(),
    );
    let first = broker.publish("a", "e", b"{}").unwrap().seq;
    // The consumer's one event, then 100 000 of another topic.
    let others = broker.publisher("b").unwrap();
    for _ in 0..100_000 {
        others.publish("e", b"", PublishOptions::default()).unwrap();
    }
    let last = broker.next_seq() - 1;
    // The walk stops after 65 536 records: the checkpoint moves past them.
    let checkpoint = broker.ack_consumer_events("c", &[first]).unwrap();
    assert!(
        checkpoint > first && checkpoint < last,
        "checkpoint {checkpoint} of {last}"
    );
    assert!(checkpoint - first <= 1 << 16, "read {}", checkpoint - first);
    // The next acknowledgement goes on from there, to the end.
    assert_eq!(broker.ack_consumer_events("c", &[first]).unwrap(), last);
}

#[test]
fn presence_joins_and_leaves_are_events_and_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let mut sub = broker
        .subscribe(Filter::topic("$presence.room.1").unwrap(), StartAt::Now)
        .unwrap();
    broker
        .presence_join("room.1", "client-a", "alice", "phone", r#"{"x":1}"#)
        .unwrap();
    broker
        .presence_join("room.1", "client-b", "bob", "web", "")
        .unwrap();
    broker.presence_heartbeat("room.1", "client-a").unwrap();
    let present: Vec<String> = broker
        .presence("room.1")
        .into_iter()
        .map(|s| s.client_id)
        .collect();
    assert_eq!(present, ["client-a", "client-b"]);
    assert!(broker.presence_leave("room.1", "client-b").unwrap());
    assert!(!broker.presence_leave("room.1", "client-b").unwrap());
    let mut sub2 = broker
        .subscribe(
            Filter::patterns(&["$presence.room.*"]).unwrap(),
            StartAt::Seq(1),
        )
        .unwrap();
    for s in [&mut sub, &mut sub2] {
        let types: Vec<String> = drain(s).into_iter().map(|d| event(d).event_type).collect();
        assert!(
            types.ends_with(&[
                "presence.join".into(),
                "presence.join".into(),
                "presence.leave".into()
            ]),
            "{types:?}"
        );
    }
    let everything = broker
        .subscribe(Filter::patterns(&[">"]).unwrap(), StartAt::Seq(1))
        .unwrap();
    let mut everything = everything;
    assert!(
        drain(&mut everything).is_empty(),
        "wildcards do not match system topics"
    );
}

#[test]
fn a_data_directory_is_used_by_one_process_at_a_time() {
    const CHILD: &str = "HERALD_LOCK_TEST_CHILD";
    if let Ok(dir) = std::env::var(CHILD) {
        let _broker = Broker::open(config(std::path::Path::new(&dir))).unwrap();
        println!("open");
        thread::sleep(Duration::from_secs(60));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_data_directory_is_used_by_one_process_at_a_time",
            "--nocapture",
        ])
        .env(CHILD, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    while !line.contains("open") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "child ended early"
        );
    }
    let err = Broker::open(config(dir.path())).unwrap_err();
    assert!(matches!(err, BrokerError::Io { .. }), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();
    Broker::open(config(dir.path())).unwrap();
}

#[test]
fn a_data_directory_is_used_by_one_broker_at_a_time_within_a_process_too() {
    let dir = tempfile::tempdir().unwrap();
    let first = Broker::open(config(dir.path())).unwrap();
    let err = Broker::open(config(dir.path())).expect_err("a second open is refused");
    assert!(matches!(err, BrokerError::Io { .. }), "{err}");
    // Closing the broker while a subscription still holds it keeps the
    // directory locked: the subscription can still read the files.
    let sub = first
        .subscribe(Filter::topic("a").unwrap(), StartAt::Now)
        .unwrap();
    first.close().unwrap();
    assert!(Broker::open(config(dir.path())).is_err());
    drop(sub);
    // Released with the last handle. (Retried briefly: a process that
    // forks concurrently, as another test here does, holds a copy of the
    // descriptor until its child execs.)
    let started = std::time::Instant::now();
    let second = loop {
        match Broker::open(config(dir.path())) {
            Ok(b) => break b,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                assert!(matches!(e, BrokerError::Io { .. }), "{e}");
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the lock was not released: {e}"),
        }
    };
    // A refused open does not release the lock of the one that holds it.
    assert!(Broker::open(config(dir.path())).is_err());
    assert!(Broker::open(config(dir.path())).is_err());
    let p = second.publisher("a").unwrap();
    assert_eq!(
        p.publish("e", b"x", PublishOptions::default()).unwrap().seq,
        1
    );
}

#[test]
fn from_sequence_zero_is_from_the_beginning_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let p = broker.publisher("a").unwrap();
    p.publish("e", b"1", PublishOptions::default()).unwrap();
    let mut sub = broker
        .subscribe(Filter::topic("a").unwrap(), StartAt::Seq(0))
        .unwrap();
    let first = sub.try_next().unwrap().unwrap();
    assert_eq!(
        event(first).seq,
        1,
        "no gap 0..0 on a log that lost nothing"
    );
    // On an empty log too, it then goes live from the first event.
    let empty = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(empty.path())).unwrap();
    let mut sub = broker
        .subscribe(Filter::topic("a").unwrap(), StartAt::Seq(0))
        .unwrap();
    assert!(sub.try_next().unwrap().is_none());
    let p = broker.publisher("a").unwrap();
    p.publish("e", b"1", PublishOptions::default()).unwrap();
    assert_eq!(event(sub.try_next().unwrap().unwrap()).seq, 1);
}

#[test]
fn a_consumer_created_at_a_topic_sequence_resumes_there_until_it_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let (a, b) = (
        broker.publisher("a").unwrap(),
        broker.publisher("b").unwrap(),
    );
    for i in 0..5u8 {
        a.publish("e", &[i], PublishOptions::default()).unwrap(); // seq 1, 3, 5, 7, 9
        b.publish("e", &[i], PublishOptions::default()).unwrap();
    }
    // From topic sequence 4 of `a` (global 7): everything before it is
    // consumed, and a second subscription without acknowledgements resumes
    // there too (not at the start of the log).
    let sub = broker
        .subscribe_consumer("c", Filter::topic("a").unwrap(), StartAt::TopicSeq(4))
        .unwrap();
    assert_eq!(broker.consumer_checkpoint("c").unwrap(), 6);
    drop(sub);
    let mut again = broker
        .subscribe_consumer("c", Filter::topic("a").unwrap(), StartAt::Now)
        .unwrap();
    let topic_seqs: Vec<u64> = drain(&mut again)
        .into_iter()
        .map(|d| event(d).topic_seq)
        .collect();
    assert_eq!(topic_seqs, [4, 5]);
}

#[test]
fn a_consumer_checkpoint_past_the_end_of_the_log_falls_back_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = Broker::open(config(dir.path())).unwrap();
        let p = broker.publisher("a").unwrap();
        for _ in 0..3 {
            p.publish("e", b"x", PublishOptions::default()).unwrap();
        }
        drop(broker.subscribe_consumer("c", Filter::topic("a").unwrap(), StartAt::Seq(1)));
        broker.ack_consumer("c", 3).unwrap();
    }
    // The log loses its tail (a crash under a non-synced policy, a restored
    // backup) but the checkpoint survives: the consumer says 3, the log
    // ends at 1.
    let consumers = dir.path().join("consumers");
    let saved = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&consumers).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), saved.path().join(e.file_name())).unwrap();
    }
    std::fs::remove_dir_all(dir.path()).unwrap();
    {
        let broker = Broker::open(config(dir.path())).unwrap();
        broker
            .publisher("a")
            .unwrap()
            .publish("e", b"1", PublishOptions::default())
            .unwrap();
    }
    std::fs::create_dir_all(&consumers).unwrap();
    for e in std::fs::read_dir(saved.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), consumers.join(e.file_name())).unwrap();
    }
    let broker = Broker::open(config(dir.path())).unwrap();
    assert_eq!(broker.consumer_checkpoint("c").unwrap(), 3);
    let mut sub = broker
        .subscribe_consumer("c", Filter::topic("a").unwrap(), StartAt::Now)
        .unwrap();
    assert_eq!(sub.beyond_end(), Some(1));
    assert_eq!(
        broker.consumer_checkpoint("c").unwrap(),
        1,
        "back to the end"
    );
    // Events from here on are the consumer's to read and acknowledge.
    let p = broker.publisher("a").unwrap();
    p.publish("e", b"2", PublishOptions::default()).unwrap();
    p.publish("e", b"3", PublishOptions::default()).unwrap();
    let seqs: Vec<u64> = drain(&mut sub).into_iter().map(|d| event(d).seq).collect();
    assert_eq!(seqs, [2, 3]);
    sub.ack_up_to(3).unwrap();
    assert_eq!(broker.consumer_checkpoint("c").unwrap(), 3);
}

#[test]
fn a_removed_consumer_is_not_brought_back_by_an_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let p = broker.publisher("a").unwrap();
    for _ in 0..3 {
        p.publish("e", b"x", PublishOptions::default()).unwrap();
    }
    let mut sub = broker
        .subscribe_consumer("c", Filter::topic("a").unwrap(), StartAt::Seq(1))
        .unwrap();
    let seqs: Vec<u64> = drain(&mut sub).into_iter().map(|d| event(d).seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    broker.remove_consumer("c").unwrap();
    // The subscription that was open acknowledges afterwards: refused, and
    // the consumer stays removed.
    assert!(matches!(
        sub.ack_up_to(3),
        Err(BrokerError::UnknownConsumer(_))
    ));
    assert!(matches!(
        broker.ack_consumer("c", 3),
        Err(BrokerError::UnknownConsumer(_))
    ));
    assert!(broker.consumers().is_empty());
}

#[test]
fn broker_errors_return_what_they_wrap_as_their_source() {
    use std::error::Error as _;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(config(dir.path())).unwrap();
    // Presence, down to the JSON error in the metadata.
    let e = b.presence_join("room", "c1", "", "", "{oops").unwrap_err();
    let presence = e.source().expect("presence error");
    assert!(presence.to_string().contains("metadata"), "{presence}");
    let json = presence.source().expect("JSON error");
    assert!(json.to_string().contains("invalid JSON"), "{json}");
    // An acknowledgement refused.
    b.subscribe_consumer("c", Filter::topic("t").unwrap(), StartAt::Now)
        .unwrap();
    let e = b.ack_consumer("c", 99).unwrap_err();
    assert!(matches!(e, BrokerError::Ack(AckError::PastEnd { .. })));
    assert!(e.source().is_some_and(|s| s.is::<AckError>()));
    // Checkpoint (an invalid consumer name).
    let e = b.ack_consumer("bad name", 1).unwrap_err();
    assert!(matches!(e, BrokerError::Checkpoint(_)), "{e:?}");
    assert!(e.source().is_some());
    // The log.
    let e = BrokerError::from(LogError::Poisoned);
    assert!(e.source().is_some_and(|s| s.is::<LogError>()));
    // A file-system call (the data directory's lock, held by `b`), down to
    // the io::Error.
    let e = Broker::open(config(dir.path())).unwrap_err();
    assert!(matches!(e, BrokerError::Io { .. }), "{e:?}");
    assert!(
        e.source().is_some_and(|s| s.is::<std::io::Error>()),
        "{e:?}"
    );
    // Errors that wrap nothing have no source.
    assert!(BrokerError::NotAConsumer.source().is_none());
}

#[test]
fn a_publish_that_waits_for_its_sync_wakes_subscribers_although_its_wake_ups_are_held() {
    use std::os::fd::AsRawFd;
    let readable = |fd: i32| {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    };
    for durability in [Durability::Always, Durability::Never] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.log.durability = durability;
        let broker = Broker::open(c).unwrap();
        let publisher = broker.publisher("acme.sync").unwrap();
        let mut sub = broker
            .subscribe(Filter::topic("acme.sync").unwrap(), StartAt::Now)
            .unwrap();
        let bell = broker.doorbell().unwrap();
        assert!(sub.arm(&bell));
        broker.with_held_wakes(|| {
            publisher
                .publish("t", b"{}", PublishOptions::default())
                .unwrap();
            // Under `always` the publish waited for its sync: whoever waits
            // for the event must not have waited for that too, nor for the
            // hold.
            assert_eq!(
                readable(bell.as_raw_fd()),
                durability == Durability::Always,
                "{durability:?}"
            );
        });
        assert!(readable(bell.as_raw_fd()), "{durability:?}");
        assert_eq!(drain(&mut sub).len(), 1);
    }
}
