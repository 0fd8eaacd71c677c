//! Loom model checks of herald-core's lock-free protocols: the ring's
//! claim/commit between concurrent publishers, overrun detection (a reader
//! racing a publisher that overwrites what it is reading, or a skip), tether
//! registration, the sleeper and doorbell wake-ups, and the log's segment
//! publication. `core/src/ring/mod.rs` lists what each model checks.
//!
//! Loom lets a SeqCst load read a non-SeqCst store older than the latest
//! SeqCst store (its README: SeqCst accesses are modelled as AcqRel), which
//! the language forbids. A sleeper that parks twice leaves such a store in
//! `sleepers` (its Relaxed decrement) and loom then reports a false lost
//! wake-up, so each model parks a given sleeper at most once; other waits
//! spin, yielding to the model.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p herald-core --release --test loom`
//! (scripts/test does, with `LOOM_MAX_PREEMPTIONS=2`).
#![cfg(loom)]

use std::sync::Arc;

use herald_core::log::{Durability, Log, LogConfig, ReadItem};
use herald_core::ring::{Claim, RecvError, Ring, RingConfig, WaitStrategy};
use loom::thread;

#[path = "shared/any_publisher.rs"]
mod any_publisher;
use any_publisher::{ring_with_publisher, AnyPublisher};
#[path = "shared/records.rs"]
mod records;
use records::record;

/// The payload a record with sequence `seq` must carry: any torn or mixed
/// read shows up as a mismatch.
fn payload(seq: u64) -> [u8; 8] {
    (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).to_le_bytes()
}

fn tiny_config(slots: usize) -> RingConfig {
    RingConfig {
        capacity: 64,
        max_record: 16,
        slots: Some(slots),
        first_seq: 0,
    }
}

fn tiny_ring(slots: usize) -> Ring {
    Ring::new(tiny_config(slots)).unwrap()
}

/// Many bytes, two slots: records lap the slots long before the bytes.
fn slot_bound_config() -> RingConfig {
    RingConfig {
        capacity: 1024,
        ..tiny_config(2)
    }
}

/// Two `#[test]`s of one model: with a shared publisher (`$shared`) and
/// with the ring's single publisher (`$single`).
macro_rules! models_with_both_publishers {
    ($shared:ident, $single:ident, $model:expr) => {
        #[test]
        fn $shared() {
            loom::model(|| ($model)(false));
        }

        #[test]
        fn $single() {
            loom::model(|| ($model)(true));
        }
    };
}

fn publish_own_seq(publisher: &mut AnyPublisher) -> u64 {
    write_own_seq(publisher.claim(8))
}

fn write_own_seq(mut claim: Claim<'_>) -> u64 {
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
        let t1 = thread::spawn(move || write_own_seq(p1.claim(8).unwrap()));
        let t2 = thread::spawn(move || write_own_seq(p2.claim(8).unwrap()));
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
fn reader_races_two_more_publishes(config: RingConfig, single: bool) {
    let (ring, mut publisher) = ring_with_publisher(config, single);
    let mut sub = ring.subscribe();
    publish_own_seq(&mut publisher);
    let writer = thread::spawn(move || {
        for _ in 0..2 {
            publish_own_seq(&mut publisher);
        }
    });
    read_all(&mut sub, 3);
    writer.join().unwrap();
}

// Two slots and 64 bytes: the third record laps both the slot and the bytes.
models_with_both_publishers!(
    a_reader_racing_an_overwrite_never_returns_torn_bytes,
    a_reader_racing_a_single_publishers_overwrite_never_returns_torn_bytes,
    |single| reader_races_two_more_publishes(tiny_config(2), single)
);

models_with_both_publishers!(
    a_reader_racing_a_slot_reuse_never_returns_another_record,
    a_reader_racing_a_single_publishers_slot_reuse_never_returns_another_record,
    |single| reader_races_two_more_publishes(slot_bound_config(), single)
);

#[test]
fn a_publisher_lapping_a_stalled_publisher_waits_for_its_commit() {
    loom::model(|| {
        // Two slots: the third claim reuses the first claim's slot, so it must
        // not write until the first is committed, or the reader could see a
        // mix of both.
        let ring = tiny_ring(2);
        let mut sub = ring.subscribe();
        let mut slow = AnyPublisher::Shared(ring.publisher());
        let mut fast = AnyPublisher::Shared(ring.publisher());
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

models_with_both_publishers!(
    a_reader_racing_a_skip_that_jumps_the_head_sees_only_real_records_or_lags,
    a_reader_racing_a_single_publishers_skip_sees_only_real_records_or_lags,
    reader_races_a_skip
);

fn reader_races_a_skip(single: bool) {
    // Two slots, starting at 2: a skip to 5 jumps the head to 3, then
    // aborts 3 and 4, which overwrite the slots (record 5 alone would
    // leave the slot a reader at 2 waits on untouched).
    let config = RingConfig {
        first_seq: 2,
        ..tiny_config(2)
    };
    let (ring, mut publisher) = ring_with_publisher(config, single);
    let mut sub = ring.subscribe();
    let writer = thread::spawn(move || {
        publisher.skip_to(5);
        publish_own_seq(&mut publisher)
    });
    let mut got = Vec::new();
    while got.last() != Some(&5) {
        let before = sub.next_seq();
        match sub.try_read(|seq, bytes| {
            assert_eq!(bytes, payload(seq), "torn or mixed read of record {seq}");
            seq
        }) {
            Ok(seq) => {
                assert_eq!(seq, 5, "read {seq}, which was skipped");
                got.push(seq);
            }
            Err(RecvError::Lagged(lag)) => {
                assert_eq!(lag.missed_from, before);
                assert!(lag.next_available > before);
            }
            Err(_) => thread::yield_now(),
        }
    }
    assert_eq!(writer.join().unwrap(), 5);
}

/// Reads with a tethered subscriber up to `upto`: every record is the one
/// published, in order, and none is lapped. It spins instead of parking (the
/// data wake-up has models of its own; see the module docs).
fn read_tethered(sub: &mut herald_core::ring::Subscriber, upto: u64) {
    while sub.next_seq() < upto {
        let before = sub.next_seq();
        match sub.try_read(|seq, bytes| {
            assert_eq!(
                bytes,
                payload(seq),
                "record {seq} overwritten under a tether"
            );
            seq
        }) {
            Ok(seq) => assert_eq!(seq, before),
            Err(RecvError::Empty) => thread::yield_now(),
            Err(e) => panic!("a tethered subscriber read {e}"),
        }
    }
}

models_with_both_publishers!(
    a_tether_registering_while_a_publisher_publishes_is_never_lapped,
    a_tether_registering_while_a_single_publisher_publishes_is_never_lapped,
    tether_registers_during_publishes
);

fn tether_registers_during_publishes(single: bool) {
    // Two slots, three records: the third reuses the first one's slot, so
    // the publisher must wait for a tether that starts at or before it.
    let (ring, mut publisher) = ring_with_publisher(tiny_config(2), single);
    publisher.set_wait_strategy(WaitStrategy::Park);
    let writer = thread::spawn(move || {
        for _ in 0..3 {
            publish_own_seq(&mut publisher);
        }
    });
    let mut sub = ring.subscribe_tethered().unwrap();
    read_tethered(&mut sub, 3);
    drop(sub);
    writer.join().unwrap();
}

models_with_both_publishers!(
    a_parked_subscriber_is_woken_by_a_concurrent_publish,
    a_parked_subscriber_is_woken_by_a_concurrent_single_publish,
    parked_subscriber_is_woken
);

fn parked_subscriber_is_woken(single: bool) {
    let (ring, mut publisher) = ring_with_publisher(tiny_config(4), single);
    let mut sub = ring.subscribe();
    sub.set_wait_strategy(WaitStrategy::Park);
    let reader = thread::spawn(move || loop {
        match sub.try_read(|seq, bytes| {
            assert_eq!(bytes, payload(seq));
            seq
        }) {
            Ok(seq) => return seq,
            // A lost wake-up leaves this thread parked for ever: loom
            // reports the deadlock.
            Err(RecvError::Empty) => {
                sub.wait(None);
                thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    });
    publish_own_seq(&mut publisher);
    assert_eq!(reader.join().unwrap(), 0);
}

models_with_both_publishers!(
    an_armed_doorbell_is_rung_by_a_concurrent_publish,
    an_armed_doorbell_is_rung_by_a_concurrent_single_publish,
    armed_doorbell_is_rung
);

fn armed_doorbell_is_rung(single: bool) {
    let (ring, mut publisher) = ring_with_publisher(tiny_config(4), single);
    let mut sub = ring.subscribe();
    let bell = ring.doorbell().unwrap();
    // An event loop: read; when empty, arm, and sleep on the fd unless
    // `arm` says data came meanwhile.
    let reader = thread::spawn(move || loop {
        match sub.try_read(|seq, bytes| {
            assert_eq!(bytes, payload(seq));
            seq
        }) {
            Ok(seq) => return seq,
            Err(RecvError::Empty) => {
                if sub.arm(&bell) {
                    // A lost wake-up blocks here for ever (loom: deadlock).
                    bell.wait_readable();
                }
                bell.clear();
                thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    });
    publish_own_seq(&mut publisher);
    assert_eq!(reader.join().unwrap(), 0);
}

models_with_both_publishers!(
    a_doorbell_armed_during_a_held_run_is_rung_when_the_hold_ends,
    a_doorbell_armed_during_a_held_single_run_is_rung_when_the_hold_ends,
    held_run_rings_armed_doorbell
);

/// The publisher holds its wake-ups over two publishes; the reader, an
/// event loop as above, arms before, between or after them and must be
/// woken for what it has not read. It arms once (module docs), then
/// spins for the rest.
fn held_run_rings_armed_doorbell(single: bool) {
    let (ring, mut publisher) = ring_with_publisher(tiny_config(4), single);
    let mut sub = ring.subscribe();
    let bell = ring.doorbell().unwrap();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        let mut armed = false;
        while got.len() < 2 {
            match sub.try_read(|seq, bytes| {
                assert_eq!(bytes, payload(seq));
                seq
            }) {
                Ok(seq) => got.push(seq),
                Err(RecvError::Empty) if !armed => {
                    armed = true;
                    if sub.arm(&bell) {
                        // A lost wake-up blocks here for ever (loom: deadlock).
                        bell.wait_readable();
                    }
                    bell.clear();
                }
                Err(RecvError::Empty) => thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        got
    });
    ring.with_held_wakes(|| {
        publish_own_seq(&mut publisher);
        publish_own_seq(&mut publisher);
    });
    assert_eq!(reader.join().unwrap(), vec![0, 1]);
}

/// The payload of the log model's records: big enough that two do not
/// share a 4 KiB segment, so the second append rolls to a new one.
fn log_payload(seq: u64) -> Vec<u8> {
    vec![seq as u8; 2048]
}

/// Reads what the reader finds now: records only, in order, each intact.
fn read_log(reader: &mut herald_core::log::LogReader, got: &mut Vec<u64>) {
    while let Some(item) = reader.next_item() {
        match item.expect("a published record reads back intact") {
            ReadItem::Record(r) => {
                assert_eq!(r.payload, log_payload(r.seq));
                got.push(r.seq);
            }
            ReadItem::Gap { from, to } => panic!("gap {from}..={to} in a log with no retention"),
        }
    }
}

#[test]
fn a_log_reader_racing_appends_and_a_segment_roll_reads_each_record_once() {
    loom::model(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_size: 4096,
            durability: Durability::Never,
            prefault: false,
            ..LogConfig::default()
        };
        let (log, _) = Log::open(dir.path(), config).unwrap();
        let log = Arc::new(log);
        let mut reader = log.reader_from_seq(1).unwrap();
        let appender = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for seq in 1..=2 {
                    log.append(&record(seq, &log_payload(seq))).unwrap();
                }
            })
        };
        let mut got = Vec::new();
        read_log(&mut reader, &mut got);
        appender.join().unwrap();
        read_log(&mut reader, &mut got);
        assert_eq!(got, [1, 2]);
        assert_eq!(log.stats().segments, 2);
    });
}
