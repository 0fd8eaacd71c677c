//! `herald_broker_metrics` shows what subscribers delivered without waiting
//! for thousands more deliveries: a gap notice at once, a few hundred events
//! as soon as the subscriber finds nothing more to read, and the events of a
//! subscriber that keeps reading within the fold interval (100 ms).

use std::ptr::{null, null_mut};
use std::time::Duration;

use herald::herald_result::*;
use herald::*;

mod common;

fn open(dir: &std::path::Path) -> *mut herald_broker {
    let d = dir.to_str().unwrap();
    let mut cfg = common::config(d);
    cfg.ring_capacity = 1 << 20;
    cfg.segment_size = 4096;
    cfg.retention_max_records = 50;
    common::open(&cfg)
}

fn metrics(b: *const herald_broker) -> herald_metrics {
    let mut m = herald_metrics::default();
    // SAFETY: a live broker and a valid out pointer.
    assert_eq!(unsafe { herald_broker_metrics(b, &mut m) }, HERALD_OK);
    m
}

fn subscribe(b: *const herald_broker, topic: &str, kind: u32, at: u64) -> *mut herald_subscriber {
    let mut f = null_mut();
    let mut s = null_mut();
    // SAFETY: live handles, valid buffers and out pointers.
    unsafe {
        assert_eq!(herald_filter_new(&mut f), HERALD_OK);
        assert_eq!(
            herald_filter_add_topic(f, topic.as_ptr().cast(), topic.len()),
            HERALD_OK
        );
        assert_eq!(herald_subscriber_open(b, f, kind, at, &mut s), HERALD_OK);
        herald_filter_free(f);
    }
    s
}

fn publish(p: *const herald_publisher, n: usize) {
    let payload = [b'1'; 100];
    for _ in 0..n {
        // SAFETY: a live publisher and valid buffers.
        let r = unsafe {
            herald_publisher_publish(
                p,
                c"t".as_ptr(),
                1,
                payload.as_ptr(),
                payload.len(),
                null(),
                null_mut(),
            )
        };
        assert_eq!(r, HERALD_OK);
    }
}

/// The next delivery's kind, without waiting; `None` if there is none.
fn next_kind(s: *const herald_subscriber) -> Option<u32> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let mut d = std::mem::MaybeUninit::<herald_delivery>::uninit();
    // SAFETY: a live subscriber, a buffer of its length, valid out pointers.
    let r = unsafe {
        herald_subscriber_next(s, buf.as_mut_ptr(), buf.len(), &mut len, d.as_mut_ptr(), 0)
    };
    match r {
        // SAFETY: written on success.
        HERALD_OK => Some(unsafe { d.assume_init() }.kind),
        HERALD_E_TIMEOUT => None,
        other => panic!("herald_subscriber_next: {other:?}"),
    }
}

#[test]
fn gaps_and_deliveries_show_in_metrics_without_waiting_for_thousands() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let mut p = null_mut();
    // SAFETY: a live broker, a valid topic and out pointer.
    let r = unsafe { herald_publisher_new(b, c"f".as_ptr(), 1, &mut p) };
    assert_eq!(r, HERALD_OK);
    // Retention keeps about the last 50: the first events are gone.
    publish(p, 2_000);

    // A gap is counted as soon as it is delivered, though nothing follows.
    let behind = subscribe(b, "f", HERALD_START_SEQ, 1);
    assert_eq!(next_kind(behind), Some(HERALD_DELIVERY_GAP));
    assert_eq!(metrics(b).gaps, 1);

    // A few hundred live deliveries, read until there is nothing more.
    let live = subscribe(b, "f", HERALD_START_NOW, 0);
    publish(p, 300);
    let mut read = 0;
    while let Some(kind) = next_kind(live) {
        assert_eq!(kind, HERALD_DELIVERY_EVENT);
        read += 1;
    }
    assert_eq!(read, 300);
    let m = metrics(b);
    assert_eq!(m.delivered, 300);
    assert!(m.latency_p50_ns > 0 && m.latency_max_ns > 0, "{m:?}");

    // A subscriber that never finds the end: what it read shows once it has
    // read on for the fold interval.
    publish(p, 300);
    for _ in 0..150 {
        assert_eq!(next_kind(live), Some(HERALD_DELIVERY_EVENT));
    }
    std::thread::sleep(Duration::from_millis(150));
    for _ in 0..16 {
        assert_eq!(next_kind(live), Some(HERALD_DELIVERY_EVENT));
    }
    let m = metrics(b);
    assert!(m.delivered >= 450, "{m:?}");

    // SAFETY: live handles, not used afterwards.
    unsafe {
        herald_subscriber_free(live);
        herald_subscriber_free(behind);
        herald_publisher_free(p);
        assert_eq!(herald_broker_close(b), HERALD_OK);
    }
}
