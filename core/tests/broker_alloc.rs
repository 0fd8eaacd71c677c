//! Allocation counts on the broker's publish path (a cluster replica's
//! `replicate` too) and a live subscription's read path, after warm-up
//! (invariant 6 of `docs/DESIGN.md`).

mod common;

use common::counting_alloc::allocations;

use herald_core::broker::{DeliveryRef, Filter, PublishOptions, Replicated, StartAt};
use herald_core::log::Durability;
use herald_core::{Broker, BrokerConfig};

/// How the events go in.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// `TopicPublisher::publish`.
    Publish,
    /// `Broker::replicate`, on a replica, with the stream's sequences.
    Replicate,
    /// `TopicPublisher::publish`, the measured stretch inside one
    /// `Broker::with_held_wakes` (as a server worker publishes a read).
    Held,
}

/// Publishes and reads back 1 000 events to warm up, then 100 000 more
/// through `filter` with `options`, and asserts that the measured stretch
/// allocates only for the log index's growth, never per event.
fn assert_publish_and_live_delivery_allocate_at_most_for_index_growth(
    filter: Filter,
    options: PublishOptions<'_>,
) {
    assert_allocations(filter, options, Path::Publish);
}

fn assert_allocations(filter: Filter, options: PublishOptions<'_>, path: Path) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.ring_capacity = 1 << 20;
    config.max_payload = 4096;
    config.log.segment_size = 64 << 20;
    config.log.durability = Durability::Never;
    config.log.prefault = false;
    config.replica = path == Path::Replicate;
    let broker = Broker::open(config).unwrap();
    let publisher = broker.publisher("alloc.test").unwrap();
    let payload = [b'x'; 64];
    let publish = |topic_seq: u64| match path {
        Path::Publish | Path::Held => {
            publisher.publish("e", &payload, options).unwrap();
        }
        Path::Replicate => {
            let event = Replicated {
                seq: broker.next_seq(),
                topic: "alloc.test",
                topic_seq,
                topic_may_jump: false,
                timestamp_ns: topic_seq,
                event_type: "e",
                payload: &payload,
                options,
            };
            broker.replicate(&event).unwrap();
        }
    };
    let mut sub = broker.subscribe(filter, StartAt::Now).unwrap();
    let mut sum = 0u64;
    let read = |sub: &mut herald_core::Subscription, sum: &mut u64| {
        sub.try_next_with(|d| {
            if let DeliveryRef::Event(e) = d {
                *sum += e.seq + e.payload.len() as u64;
            }
        })
        .unwrap()
        .expect("an event")
    };
    for topic_seq in 1..=1_000 {
        publish(topic_seq);
        read(&mut sub, &mut sum);
    }
    let n = 100_000u64;
    let before = allocations();
    let mut measured = || {
        for topic_seq in 1_001..=1_000 + n {
            publish(topic_seq);
            read(&mut sub, &mut sum);
        }
    };
    if path == Path::Held {
        broker.with_held_wakes(measured);
    } else {
        measured();
    }
    let count = allocations() - before;
    eprintln!("{count} allocations for {n} publish+deliver pairs (checksum {sum})");
    // The log's per-topic index allocates per chunk of 4 096 entries (the
    // chunk, and the shared handle the spill thread writes it from): about
    // 50 for these 100 000 events, never one per event.
    assert!(
        count <= 64,
        "{count} allocations for {n} events: something allocates per event"
    );
}

#[test]
fn publish_and_live_delivery_allocate_at_most_for_index_growth() {
    assert_publish_and_live_delivery_allocate_at_most_for_index_growth(
        Filter::topic("alloc.test").unwrap(),
        PublishOptions::default(),
    );
}

/// The same through a wildcard filter with type and origin conditions (the
/// topic cache and filter checks of a multi-topic subscription), publishing
/// with a correlation id (the log's composite type field and the ring's
/// correlation bytes).
#[test]
fn pattern_delivery_and_correlated_publish_allocate_at_most_for_index_growth() {
    assert_publish_and_live_delivery_allocate_at_most_for_index_growth(
        Filter::patterns(&["alloc.*"])
            .unwrap()
            .with_types(&["e"])
            .excluding_origin(9),
        PublishOptions {
            origin: 1,
            correlation: Some("req-1"),
            ..PublishOptions::default()
        },
    );
}

/// A cluster replica's way in: the same bound for `replicate`.
#[test]
fn replication_and_live_delivery_allocate_at_most_for_index_growth() {
    assert_allocations(
        Filter::topic("alloc.test").unwrap(),
        PublishOptions::default(),
        Path::Replicate,
    );
}

/// The same with the publishes' wake-ups held: the hold's bookkeeping (a
/// thread-local count, a wake at every 64th commit) allocates nothing.
#[test]
fn held_publish_and_live_delivery_allocate_at_most_for_index_growth() {
    assert_allocations(
        Filter::topic("alloc.test").unwrap(),
        PublishOptions::default(),
        Path::Held,
    );
}
