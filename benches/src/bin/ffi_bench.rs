//! The Rust-API baseline of `tests/c/bench.c`: the same work, the same
//! configuration, without the C ABI. `tests/c/bench.sh` runs both.
//!
//! It then measures the wrapper cost in-process: the same broker driven
//! alternately, in batches, through the Rust API and through the C ABI's
//! `extern "C"` functions called via function pointers (so they are not
//! inlined), which cancels most of the noise of a shared machine.
//!
//! `cargo run -p herald-benches --release --bin ffi_bench -- DIR [EVENTS]`

use std::hint::black_box;
use std::time::Instant;

use herald_core::broker::{DeliveryRef, PublishOptions};
use herald_core::log::Durability;
use herald_core::{Broker, BrokerConfig, Filter, StartAt};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: ffi_bench DIR [EVENTS]");
    let n: u64 = args
        .next()
        .map_or(1_000_000, |s| s.parse().expect("EVENTS is a number"));
    let b = Broker::open(config(dir)).expect("open");
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
        p.publish("e", &payload, PublishOptions::default())
            .expect("publish");
    }
    while s_poll.next_batch(1024, &mut on).expect("poll") > 0 {}
    while s_next.try_next().expect("next").is_some() {}

    let t = Instant::now();
    for _ in 0..n {
        p.publish("e", black_box(&payload), PublishOptions::default())
            .expect("publish");
    }
    println!("publish {:.1}", t.elapsed().as_nanos() as f64 / n as f64);

    // No claim API in Rust: a publish from a reused buffer is the equivalent.
    let mut scratch = vec![0u8; 64];
    let t = Instant::now();
    for _ in 0..n / 2 {
        scratch.copy_from_slice(black_box(&payload));
        p.publish("e", &scratch, PublishOptions::default())
            .expect("publish");
    }
    println!(
        "claim_commit {:.1}",
        t.elapsed().as_nanos() as f64 / (n / 2) as f64
    );
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
    println!(
        "receive_poll {:.1}",
        t.elapsed().as_nanos() as f64 / got as f64
    );

    // The Rust equivalent of next-into-a-buffer: copy each delivery out.
    let mut buf = [0u8; 256];
    let t = Instant::now();
    let mut got = 0u64;
    while let Some(n) = s_next
        .try_next_with(|d| copy_out(d, &mut buf))
        .expect("next")
    {
        black_box(n);
        got += 1;
    }
    assert_eq!(got, total);
    println!(
        "receive_next {:.1}",
        t.elapsed().as_nanos() as f64 / got as f64
    );

    let t = Instant::now();
    let mut sink = 0u64;
    for _ in 0..n {
        sink = sink.wrapping_add(black_box(&b).next_seq());
    }
    black_box(sink);
    println!(
        "next_seq_call {:.1}",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    black_box(received);
    in_process(&b, n);
}

/// The benchmark's broker configuration (the C side sets the same fields).
fn config(dir: String) -> BrokerConfig {
    let mut c = BrokerConfig::new(dir);
    c.ring_capacity = 1 << 28;
    c.log.segment_size = 1 << 30;
    c.log.durability = Durability::Never;
    c.log.prefault = false;
    c
}

/// The Rust equivalent of next-into-a-buffer: copies an event's payload,
/// topic, type and correlation id into `buf`, back to back; returns the
/// bytes used.
#[inline(always)]
fn copy_out(d: DeliveryRef<'_>, buf: &mut [u8]) -> usize {
    let DeliveryRef::Event(e) = d else {
        return 0;
    };
    let parts = [
        e.payload,
        e.topic.as_bytes(),
        e.event_type.as_bytes(),
        e.correlation.as_bytes(),
    ];
    let mut at = 0;
    for part in parts {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    at
}

/// Interleaved batches: Rust API vs C ABI entry points on one broker.
fn in_process(b: &Broker, n: u64) {
    use herald::*;
    use std::ptr::{null, null_mut};
    const ROUNDS: u64 = 20;
    let batch = (n / ROUNDS).max(1);
    let mut cfg = std::mem::MaybeUninit::<herald_config>::uninit();
    // SAFETY: a valid out pointer.
    let r = unsafe { herald_config_init(cfg.as_mut_ptr()) };
    assert_eq!(r, herald_result::HERALD_OK);
    // SAFETY: initialised by herald_config_init.
    let mut cfg = unsafe { cfg.assume_init() };
    let dir = format!("{}-ffi", b.data_dir().display());
    cfg.data_dir = dir.as_ptr().cast();
    cfg.data_dir_len = dir.len();
    cfg.ring_capacity = 1 << 28;
    cfg.segment_size = 1 << 30;
    cfg.durability = HERALD_DURABILITY_NEVER;
    cfg.prefault = false;
    let mut hb = null_mut();
    // SAFETY: valid config and out pointer.
    let r = unsafe { herald_broker_open(&cfg, &mut hb) };
    assert_eq!(r, herald_result::HERALD_OK);
    // The Rust side uses its own broker in the same process, configured alike.
    let rb = Broker::open(config(format!("{}-rust", b.data_dir().display()))).expect("open");
    let rp = rb.publisher("t").expect("publisher");
    let mut rs = rb
        .subscribe(Filter::topic("t").expect("filter"), StartAt::Now)
        .expect("subscribe");
    let mut rs2 = rb
        .subscribe(Filter::topic("t").expect("filter"), StartAt::Now)
        .expect("subscribe");
    let mut hs2 = null_mut();
    let mut hp = null_mut();
    let mut hf = null_mut();
    let mut hs = null_mut();
    // SAFETY: live handles, valid strings and out pointers.
    unsafe {
        assert_eq!(
            herald_publisher_new(hb, c"t".as_ptr(), 1, &mut hp),
            herald_result::HERALD_OK
        );
        assert_eq!(herald_filter_new(&mut hf), herald_result::HERALD_OK);
        assert_eq!(
            herald_filter_add_topic(hf, c"t".as_ptr(), 1),
            herald_result::HERALD_OK
        );
        assert_eq!(
            herald_subscriber_open(hb, hf, HERALD_START_NOW, 0, &mut hs),
            herald_result::HERALD_OK
        );
        assert_eq!(
            herald_subscriber_open(hb, hf, HERALD_START_NOW, 0, &mut hs2),
            herald_result::HERALD_OK
        );
    }
    let publish: unsafe extern "C" fn(
        *const herald_publisher,
        *const std::ffi::c_char,
        usize,
        *const u8,
        usize,
        *const herald_publish_options,
        *mut herald_published,
    ) -> herald_result = black_box(herald_publisher_publish);
    let poll: unsafe extern "C" fn(
        *const herald_subscriber,
        herald_poll_fn,
        *mut std::ffi::c_void,
        usize,
    ) -> i64 = black_box(herald_subscriber_poll);
    let next: unsafe extern "C" fn(
        *const herald_subscriber,
        *mut u8,
        usize,
        *mut usize,
        *mut herald_delivery,
        i32,
    ) -> herald_result = black_box(herald_subscriber_next);
    let next_seq: unsafe extern "C" fn(*const herald_broker, *mut u64) -> herald_result =
        black_box(herald_broker_next_seq);
    unsafe extern "C" fn count(user: *mut std::ffi::c_void, d: *const herald_delivery) -> i32 {
        // SAFETY: `user` is the &mut u64 passed below; `d` is valid during the call.
        unsafe { *user.cast::<u64>() += (*d).payload_len as u64 };
        0
    }
    let payload = [7u8; 64];
    let (mut t_rust, mut t_ffi) = ([0f64; 4], [0f64; 4]);
    let mut buf = [0u8; 256];
    let mut sink = 0u64;
    let mut bytes = 0u64;
    for round in 0..ROUNDS {
        // Alternate which side goes first, so warm caches favour neither.
        for side in [round % 2, 1 - round % 2] {
            let t = Instant::now();
            if side == 0 {
                for _ in 0..batch {
                    rp.publish("e", black_box(&payload), PublishOptions::default())
                        .expect("publish");
                }
                t_rust[0] += t.elapsed().as_nanos() as f64;
            } else {
                for _ in 0..batch {
                    // SAFETY: live handle, valid buffers.
                    let r = unsafe {
                        publish(
                            hp,
                            c"e".as_ptr(),
                            1,
                            payload.as_ptr(),
                            64,
                            null(),
                            null_mut(),
                        )
                    };
                    assert_eq!(r, herald_result::HERALD_OK);
                }
                t_ffi[0] += t.elapsed().as_nanos() as f64;
            }
        }
        for side in [round % 2, 1 - round % 2] {
            let t = Instant::now();
            let mut got = 0;
            if side == 0 {
                let mut on = |d: DeliveryRef<'_>| {
                    if let DeliveryRef::Event(e) = d {
                        bytes += e.payload.len() as u64;
                    }
                };
                while got < batch {
                    got += rs.next_batch(1024, &mut on).expect("poll") as u64;
                }
                t_rust[1] += t.elapsed().as_nanos() as f64;
            } else {
                while got < batch {
                    // SAFETY: live handle; `count` matches the callback contract.
                    let r = unsafe { poll(hs, Some(count), (&mut bytes as *mut u64).cast(), 1024) };
                    assert!(r >= 0);
                    got += r as u64;
                }
                t_ffi[1] += t.elapsed().as_nanos() as f64;
            }
        }
        for side in [round % 2, 1 - round % 2] {
            let t = Instant::now();
            if side == 0 {
                for _ in 0..batch {
                    let n = rs2.try_next_with(|d| copy_out(d, &mut buf)).expect("next");
                    black_box(n);
                }
                t_rust[3] += t.elapsed().as_nanos() as f64;
            } else {
                let mut len = 0usize;
                let mut d = std::mem::MaybeUninit::<herald_delivery>::uninit();
                for _ in 0..batch {
                    // SAFETY: live handle, valid buffer and out pointers.
                    let r = unsafe {
                        next(
                            hs2,
                            buf.as_mut_ptr(),
                            buf.len(),
                            &mut len,
                            d.as_mut_ptr(),
                            0,
                        )
                    };
                    assert_eq!(r, herald_result::HERALD_OK);
                }
                t_ffi[3] += t.elapsed().as_nanos() as f64;
            }
        }
        for side in [round % 2, 1 - round % 2] {
            let t = Instant::now();
            if side == 0 {
                for _ in 0..batch {
                    sink = sink.wrapping_add(black_box(&rb).next_seq());
                }
                t_rust[2] += t.elapsed().as_nanos() as f64;
            } else {
                for _ in 0..batch {
                    let mut seq = 0;
                    // SAFETY: live handle, valid out pointer.
                    unsafe { next_seq(hb, &mut seq) };
                    sink = sink.wrapping_add(seq);
                }
                t_ffi[2] += t.elapsed().as_nanos() as f64;
            }
        }
    }
    black_box(bytes);
    black_box(sink);
    let per = (batch * ROUNDS) as f64;
    for (i, name) in ["publish", "receive_poll", "next_seq_call", "receive_next"]
        .iter()
        .enumerate()
    {
        println!("inproc_rust_{name} {:.1}", t_rust[i] / per);
        println!("inproc_ffi_{name} {:.1}", t_ffi[i] / per);
    }
    // SAFETY: live handles, freed once.
    unsafe {
        herald_subscriber_free(hs);
        herald_subscriber_free(hs2);
        herald_filter_free(hf);
        herald_publisher_free(hp);
        herald_broker_close(hb);
    }
    drop(rs);
    drop(rs2);
    drop(rb);
    let _ = std::fs::remove_dir_all(format!("{}-ffi", b.data_dir().display()));
    let _ = std::fs::remove_dir_all(format!("{}-rust", b.data_dir().display()));
}
