//! The Rust-API baseline of `tests/c/bench.c`: the same work, the same
//! configuration, without the C ABI. `tests/c/bench.sh` runs both.
//!
//! `cargo run -p herald-ffi --release --example bench_rust -- DIR [EVENTS]`

use std::hint::black_box;
use std::time::Instant;

use herald_core::broker::{DeliveryRef, PublishOptions};
use herald_core::log::Durability;
use herald_core::{Broker, BrokerConfig, Filter, StartAt};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: bench_rust DIR [EVENTS]");
    let n: u64 = args.next().map_or(1_000_000, |s| s.parse().expect("EVENTS is a number"));
    let mut c = BrokerConfig::new(dir);
    c.ring_capacity = 1 << 28;
    c.log.segment_size = 1 << 30;
    c.log.durability = Durability::Never;
    c.log.prefault = false;
    let b = Broker::open(c).expect("open");
    let p = b.publisher("bench.topic").expect("publisher");
    let f = Filter::topic("bench.topic").expect("filter");
    let mut s_poll = b.subscribe(f.clone(), StartAt::Now).expect("subscribe");
    let mut s_next = b.subscribe(f, StartAt::Now).expect("subscribe");
    let payload = [7u8; 64];
    let mut received = 0u64;
    let mut on = |d: DeliveryRef<'_>| {
        if let DeliveryRef::Event(e) = d {
            received += e.payload.len() as u64;
        }
    };

    for _ in 0..n / 10 {
        p.publish("e", &payload, PublishOptions::default()).expect("publish");
    }
    while s_poll.next_batch(1024, &mut on).expect("poll") > 0 {}
    while s_next.try_next().expect("next").is_some() {}

    let t = Instant::now();
    for _ in 0..n {
        p.publish("e", black_box(&payload), PublishOptions::default()).expect("publish");
    }
    println!("publish {:.1}", t.elapsed().as_nanos() as f64 / n as f64);

    // No claim API in Rust: a publish from a reused buffer is the equivalent.
    let mut scratch = vec![0u8; 64];
    let t = Instant::now();
    for _ in 0..n / 2 {
        scratch.copy_from_slice(black_box(&payload));
        p.publish("e", &scratch, PublishOptions::default()).expect("publish");
    }
    println!("claim_commit {:.1}", t.elapsed().as_nanos() as f64 / (n / 2) as f64);
    let total = n + n / 2;

    let t = Instant::now();
    let mut got = 0u64;
    loop {
        let r = s_poll.next_batch(1024, &mut on).expect("poll");
        if r == 0 {
            break;
        }
        got += r as u64;
    }
    assert_eq!(got, total);
    println!("receive_poll {:.1}", t.elapsed().as_nanos() as f64 / got as f64);

    // The Rust equivalent of next-into-a-buffer: copy each delivery out.
    let mut buf = [0u8; 256];
    let t = Instant::now();
    let mut got = 0u64;
    while let Some(n) = s_next
        .try_next_with(|d| match d {
            DeliveryRef::Event(e) => {
                let parts = [e.payload, e.topic.as_bytes(), e.event_type.as_bytes(), e.correlation.as_bytes()];
                let mut at = 0;
                for part in parts {
                    buf[at..at + part.len()].copy_from_slice(part);
                    at += part.len();
                }
                at
            }
            DeliveryRef::Gap(_) => 0,
        })
        .expect("next")
    {
        black_box(n);
        got += 1;
    }
    assert_eq!(got, total);
    println!("receive_next {:.1}", t.elapsed().as_nanos() as f64 / got as f64);

    let t = Instant::now();
    let mut sink = 0u64;
    for _ in 0..n {
        sink = sink.wrapping_add(black_box(&b).next_seq());
    }
    black_box(sink);
    println!("next_seq_call {:.1}", t.elapsed().as_nanos() as f64 / n as f64);
    black_box(received);
}
