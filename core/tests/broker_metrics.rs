//! When a subscription's counts reach the broker's metrics: a gap notice at
//! once; deliveries and latency samples when a read finds nothing more, while
//! it keeps reading within the fold interval (100 ms), and on drop.

use std::time::Duration;

use herald_core::broker::{Delivery, Filter, PublishOptions, StartAt};
use herald_core::log::{Durability, Retention};
use herald_core::{Broker, BrokerConfig, Subscription};

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = BrokerConfig::new(dir);
    c.ring_capacity = 1 << 20;
    c.max_payload = 4096;
    c.log.segment_size = 1 << 16;
    c.log.durability = Durability::Never;
    c.log.prefault = false;
    c
}

fn publish(broker: &Broker, topic: &str, n: usize) {
    let p = broker.publisher(topic).unwrap();
    for _ in 0..n {
        p.publish("e", &[b'1'; 100], PublishOptions::default())
            .unwrap();
    }
}

/// Reads `n` events, none of them a gap, never finding the end.
fn read_events(sub: &mut Subscription, n: usize) {
    for _ in 0..n {
        match sub.try_next().unwrap() {
            Some(Delivery::Event(_)) => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

#[test]
fn a_gap_notice_is_counted_when_it_is_delivered() {
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
    publish(&broker, "r", 2_000);
    assert!(matches!(sub.try_next().unwrap(), Some(Delivery::Gap(_))));
    // Nothing read after it, the subscription still open.
    assert_eq!(broker.metrics().gaps, 1);
}

#[test]
fn deliveries_show_once_a_read_finds_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let mut live = broker
        .subscribe(Filter::topic("a").unwrap(), StartAt::Now)
        .unwrap();
    publish(&broker, "a", 300);
    read_events(&mut live, 300);
    assert_eq!(live.try_next().unwrap(), None);
    let m = broker.metrics();
    assert_eq!((m.delivered, m.replayed), (300, 0));
    assert!(m.latency_p50_ns > 0 && m.latency_max_ns > 0, "{m:?}");

    // Replayed from the log, by a blocking read that times out.
    let mut replay = broker
        .subscribe(Filter::topic("a").unwrap(), StartAt::TopicSeq(1))
        .unwrap();
    read_events(&mut replay, 300);
    assert_eq!(replay.next_timeout(Duration::from_millis(1)).unwrap(), None);
    let m = broker.metrics();
    assert_eq!((m.delivered, m.replayed), (600, 300));
}

#[test]
fn a_subscription_that_keeps_reading_shows_within_the_fold_interval() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    let mut sub = broker
        .subscribe(Filter::topic("a").unwrap(), StartAt::Now)
        .unwrap();
    publish(&broker, "a", 1_000);
    read_events(&mut sub, 100);
    std::thread::sleep(Duration::from_millis(150));
    // The clock is read once every 16 deliveries: by then it is past due.
    read_events(&mut sub, 16);
    assert!(broker.metrics().delivered >= 112, "{:?}", broker.metrics());
    // The rest, when the subscription is dropped, still short of the end.
    read_events(&mut sub, 100);
    drop(sub);
    assert_eq!(broker.metrics().delivered, 216);
}

#[test]
fn a_filtered_subscription_samples_latency_whatever_its_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    // Sixteen topics in turn: topic "t1" gets global sequences 1, 17, 33…,
    // none divisible by 16.
    let mut sub = broker
        .subscribe(Filter::topic("t1").unwrap(), StartAt::Now)
        .unwrap();
    let publishers: Vec<_> = (1..=16)
        .map(|i| broker.publisher(&format!("t{i}")).unwrap())
        .collect();
    for _ in 0..64 {
        for p in &publishers {
            p.publish("e", b"1", PublishOptions::default()).unwrap();
        }
    }
    read_events(&mut sub, 64);
    // Dropped, so that only the sampling is tested here.
    drop(sub);
    let m = broker.metrics();
    assert_eq!(m.delivered, 64);
    assert!(m.latency_p50_ns > 0, "{m:?}");
}
