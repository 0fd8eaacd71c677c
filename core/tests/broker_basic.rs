//! The broker's behaviour through its public API.

use std::thread;
use std::time::Duration;

use herald_core::broker::{BrokerError, Delivery, Event, Filter, PublishOptions, StartAt};
use herald_core::log::{Durability, Retention};
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
                correlation: Some("has space")
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

/// Found by the `broker_ops` fuzz target: acknowledging `u64::MAX` for a
/// consumer overflowed `seq + 1` (a panic in debug builds; in release a
/// wrapped retention floor, and a resume at sequence 0).
#[test]
fn acknowledging_past_the_log_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let seq = broker.publish("c", "t", b"x").unwrap().seq;
    for past in [seq + 1, u64::MAX] {
        assert!(matches!(
            broker.ack_consumer("worker-1", past),
            Err(BrokerError::Ack(_))
        ));
    }
    broker.ack_consumer("worker-1", seq).unwrap();
    assert_eq!(broker.consumer_checkpoint("worker-1").unwrap(), seq);
    let mut sub = broker
        .subscribe_consumer("worker-1", Filter::topic("c").unwrap(), StartAt::Seq(1))
        .unwrap();
    assert!(drain(&mut sub).is_empty(), "resumes after its checkpoint");
    let next = broker.publish("c", "t", b"y").unwrap().seq;
    assert_eq!(event(sub.try_next().unwrap().unwrap()).seq, next);
}
