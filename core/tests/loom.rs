//! Loom model checks of the ring's lock-free protocols: the claim/commit
//! protocol between concurrent publishers, and overrun detection (a reader
//! racing a publisher that overwrites what it is reading).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p herald-core --release --test loom`
//! (scripts/test does, with `LOOM_MAX_PREEMPTIONS=2`).
#![cfg(loom)]

use herald_core::ring::{RecvError, Ring, RingConfig};
use loom::thread;

/// The payload a record with sequence `seq` must carry: any torn or mixed
/// read shows up as a mismatch.
fn payload(seq: u64) -> [u8; 8] {
    (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).to_le_bytes()
}

fn tiny_ring(slots: usize) -> Ring {
    Ring::new(RingConfig {
        capacity: 64,
        max_record: 16,
        slots: Some(slots),
        first_seq: 0,
    })
    .unwrap()
}

/// Many bytes, two slots: records lap the slots long before the bytes.
fn slot_bound_ring() -> Ring {
    Ring::new(RingConfig {
        capacity: 1024,
        max_record: 16,
        slots: Some(2),
        first_seq: 0,
    })
    .unwrap()
}

fn publish_own_seq(publisher: &mut herald_core::ring::Publisher) -> u64 {
    let mut claim = publisher.claim(8).unwrap();
    let seq = claim.seq();
    claim.write_at(0, &payload(seq));
    claim.commit()
}

/// Checks what a reader got: either the exact record for its sequence, or an
/// honest lag that moves strictly forward.
fn read_all(sub: &mut herald_core::ring::Subscriber, upto: u64) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        let before = sub.next_seq();
        match sub.try_read(|seq, bytes| {
            assert_eq!(bytes, payload(seq), "torn or mixed read of record {seq}");
            seq
        }) {
            Ok(seq) => {
                assert_eq!(seq, before, "records are delivered in sequence order");
                got.push(seq);
            }
            Err(RecvError::Lagged(lag)) => {
                assert_eq!(lag.missed_from, before);
                assert!(lag.next_available > before);
            }
            Err(_) => break,
        }
        if sub.next_seq() >= upto {
            break;
        }
    }
    got
}

#[test]
fn concurrent_publishers_get_distinct_sequences_and_readers_see_whole_records() {
    loom::model(|| {
        let ring = tiny_ring(4);
        let mut sub = ring.subscribe();
        let mut p1 = ring.publisher();
        let mut p2 = ring.publisher();
        let t1 = thread::spawn(move || publish_own_seq(&mut p1));
        let t2 = thread::spawn(move || publish_own_seq(&mut p2));
        let got = read_all(&mut sub, 2);
        let a = t1.join().unwrap();
        let b = t2.join().unwrap();
        assert_ne!(a, b);
        assert!(a < 2 && b < 2);
        // After both committed, the reader finds every record not yet read.
        let rest = read_all(&mut sub, 2);
        let mut all: Vec<u64> = got.into_iter().chain(rest).collect();
        all.dedup();
        assert_eq!(all, vec![0, 1]);
    });
}

/// One record published, then two more from another thread while the
/// reader reads: the later ones reuse the first one's slot (and, in a tiny
/// ring, its bytes).
fn reader_races_two_more_publishes(ring: Ring) {
    let mut sub = ring.subscribe();
    let mut publisher = ring.publisher();
    publish_own_seq(&mut publisher);
    let writer = thread::spawn(move || {
        for _ in 0..2 {
            publish_own_seq(&mut publisher);
        }
    });
    read_all(&mut sub, 3);
    writer.join().unwrap();
}

#[test]
fn a_reader_racing_an_overwrite_never_returns_torn_bytes() {
    // Two slots and 64 bytes: the third record laps both the slot and the bytes.
    loom::model(|| reader_races_two_more_publishes(tiny_ring(2)));
}

#[test]
fn a_reader_racing_a_slot_reuse_never_returns_another_record() {
    loom::model(|| reader_races_two_more_publishes(slot_bound_ring()));
}

#[test]
fn a_publisher_lapping_a_stalled_publisher_waits_for_its_commit() {
    loom::model(|| {
        // Two slots: the third claim reuses the first claim's slot, so it must
        // not write until the first is committed, or the reader could see a
        // mix of both.
        let ring = tiny_ring(2);
        let mut sub = ring.subscribe();
        let mut slow = ring.publisher();
        let mut fast = ring.publisher();
        let t_slow = thread::spawn(move || publish_own_seq(&mut slow));
        let t_fast = thread::spawn(move || {
            publish_own_seq(&mut fast);
            publish_own_seq(&mut fast);
        });
        read_all(&mut sub, 3);
        t_slow.join().unwrap();
        t_fast.join().unwrap();
        read_all(&mut sub, 3);
    });
}
