//! Behaviour of the ring through its public API, one property per test.

use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use herald_core::ring::{
    Doorbell, Lagged, PublishError, RecvError, Ring, RingConfig, Subscriber, WaitStrategy,
};

fn ring(capacity: usize, max_record: usize, slots: Option<usize>) -> Ring {
    Ring::new(RingConfig {
        capacity,
        max_record,
        slots,
        first_seq: 0,
    })
    .unwrap()
}

#[test]
fn published_records_arrive_in_order_with_their_bytes() {
    let ring = ring(1024, 64, None);
    let mut sub = ring.subscribe();
    let mut publisher = ring.publisher();
    let mut buf = Vec::new();
    for i in 0..100u64 {
        let payload = vec![i as u8; (i % 20) as usize];
        assert_eq!(publisher.publish(&payload).unwrap(), i);
        assert_eq!(sub.try_recv(&mut buf).unwrap(), i);
        assert_eq!(buf, payload);
    }
    assert_eq!(sub.try_recv(&mut buf), Err(RecvError::Empty));
}

#[test]
fn every_subscriber_sees_every_record() {
    let ring = ring(4096, 64, None);
    let mut subs: Vec<_> = (0..5).map(|_| ring.subscribe()).collect();
    let mut publisher = ring.publisher();
    for i in 0..20u32 {
        publisher.publish(&i.to_le_bytes()).unwrap();
    }
    for sub in &mut subs {
        let mut seen = Vec::new();
        while let Ok(v) = sub.try_read(|_, b| u32::from_le_bytes(b.try_into().unwrap())) {
            seen.push(v);
        }
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
    }
}

#[test]
fn oversized_record_is_refused_with_a_typed_error() {
    let ring = ring(1024, 100, None);
    let mut publisher = ring.publisher();
    assert_eq!(
        publisher.publish(&[0; 101]),
        Err(PublishError::TooLarge { len: 101, max: 100 })
    );
    assert_eq!(publisher.publish(&[0; 100]), Ok(0));
}

#[test]
fn invalid_configurations_are_refused() {
    let bad = [
        RingConfig {
            capacity: 1000,
            max_record: 10,
            slots: None,
            first_seq: 0,
        },
        RingConfig {
            capacity: 1024,
            max_record: 0,
            slots: None,
            first_seq: 0,
        },
        RingConfig {
            capacity: 1024,
            max_record: 257,
            slots: None,
            first_seq: 0,
        },
        RingConfig {
            capacity: 1024,
            max_record: 10,
            slots: Some(6),
            first_seq: 0,
        },
        RingConfig {
            capacity: 32,
            max_record: 8,
            slots: None,
            first_seq: 0,
        },
    ];
    for config in bad {
        let err = Ring::new(config).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid ring configuration"),
            "{err}"
        );
    }
}

#[test]
fn lapped_subscriber_learns_exactly_what_it_missed() {
    // 16 slots: at most 16 records in the ring at once.
    let ring = ring(4096, 64, Some(16));
    let mut sub = ring.subscribe();
    let mut publisher = ring.publisher();
    for i in 0..100u64 {
        publisher.publish(&i.to_le_bytes()).unwrap();
    }
    let mut buf = Vec::new();
    let lag = match sub.try_recv(&mut buf) {
        Err(RecvError::Lagged(lag)) => lag,
        other => panic!("expected a lag, got {other:?}"),
    };
    assert_eq!(lag.missed_from, 0);
    assert!(
        lag.next_available > 100 - 16 && lag.next_available < 100,
        "{lag:?}"
    );
    // Everything from next_available on is intact and in order.
    for expected in lag.next_available..100 {
        assert_eq!(sub.try_recv(&mut buf).unwrap(), expected);
        assert_eq!(buf, expected.to_le_bytes());
    }
    assert_eq!(sub.try_recv(&mut buf), Err(RecvError::Empty));
}

#[test]
fn lapping_by_bytes_is_detected_even_with_free_slots() {
    // Plenty of slots, little data: big records overwrite bytes first.
    let ring = ring(1024, 256, Some(1024));
    let mut sub = ring.subscribe();
    let mut publisher = ring.publisher();
    for i in 0..20u8 {
        publisher.publish(&[i; 200]).unwrap();
    }
    let mut buf = Vec::new();
    let Err(RecvError::Lagged(Lagged {
        missed_from: 0,
        next_available,
    })) = sub.try_recv(&mut buf)
    else {
        panic!("expected a lag from 0");
    };
    let mut next = next_available;
    while let Ok(seq) = sub.try_recv(&mut buf) {
        assert_eq!(seq, next);
        assert_eq!(buf, vec![seq as u8; 200]);
        next += 1;
    }
    assert_eq!(next, 20);
}

#[test]
fn records_never_straddle_the_end_of_the_buffer() {
    let ring = ring(256, 64, None);
    let mut sub = ring.subscribe();
    let mut publisher = ring.publisher();
    let mut buf = Vec::new();
    for i in 0..500u64 {
        let payload: Vec<u8> = (0..(i % 61) as u8).map(|b| b ^ i as u8).collect();
        publisher.publish(&payload).unwrap();
        assert_eq!(sub.try_recv(&mut buf).unwrap(), i);
        assert_eq!(buf, payload);
    }
}

#[test]
fn tethered_subscriber_holds_back_try_publish() {
    let ring = ring(1024, 64, Some(8));
    let mut tethered = ring.subscribe_tethered().unwrap();
    let mut publisher = ring.publisher();
    for i in 0..8u64 {
        assert_eq!(publisher.try_publish(&[1; 8]), Ok(i));
    }
    assert_eq!(publisher.try_publish(&[1; 8]), Err(PublishError::Full));
    let mut buf = Vec::new();
    assert_eq!(tethered.try_recv(&mut buf), Ok(0));
    assert_eq!(publisher.try_publish(&[1; 8]), Ok(8));
    drop(tethered);
    // Without a tethered subscriber the ring overwrites again.
    for _ in 0..100 {
        publisher.try_publish(&[1; 8]).unwrap();
    }
}

#[test]
fn blocking_publish_waits_for_a_tethered_subscriber_and_loses_nothing() {
    for strategy in [
        WaitStrategy::BusySpin,
        WaitStrategy::SpinYield,
        WaitStrategy::Park,
    ] {
        let ring = ring(512, 64, Some(8));
        let mut tethered = ring.subscribe_tethered().unwrap();
        tethered.set_wait_strategy(strategy);
        let mut publisher = ring.publisher();
        publisher.set_wait_strategy(strategy);
        let writer = thread::spawn(move || {
            for i in 0..10_000u64 {
                publisher.publish(&i.to_le_bytes()).unwrap();
            }
        });
        let mut buf = Vec::new();
        for i in 0..10_000u64 {
            assert_eq!(tethered.recv(&mut buf), Ok(i));
            assert_eq!(buf, i.to_le_bytes());
        }
        writer.join().unwrap();
    }
}

#[test]
fn a_dropped_claim_is_skipped_by_readers() {
    let ring = ring(1024, 64, None);
    let mut sub = ring.subscribe();
    let mut publisher = ring.publisher();
    {
        let mut claim = publisher.claim(10).unwrap();
        claim.write_at(0, b"discarded!");
    }
    let mut claim = publisher.claim(11).unwrap();
    claim.write_at(6, b"world");
    claim.write_at(0, b"hello ");
    assert_eq!(claim.commit(), 1);
    let mut buf = Vec::new();
    assert_eq!(sub.try_recv(&mut buf), Ok(1));
    assert_eq!(buf, b"hello world");
}

#[test]
#[should_panic(expected = "exceeds the claim")]
fn writing_past_a_claim_panics() {
    let ring = ring(1024, 64, None);
    let mut publisher = ring.publisher();
    let mut claim = publisher.claim(4).unwrap();
    claim.write_at(2, b"abc");
}

#[test]
fn recv_timeout_times_out_then_a_parked_subscriber_is_woken() {
    let ring = ring(1024, 64, None);
    let mut sub = ring.subscribe();
    sub.set_wait_strategy(WaitStrategy::Park);
    let mut buf = Vec::new();
    assert_eq!(
        sub.recv_timeout(&mut buf, Duration::from_millis(20)),
        Err(RecvError::Timeout)
    );
    let mut publisher = ring.publisher();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        publisher.publish(b"wake").unwrap();
    });
    assert_eq!(sub.recv_timeout(&mut buf, Duration::from_secs(30)), Ok(0));
    assert_eq!(buf, b"wake");
    writer.join().unwrap();
}

#[test]
fn doorbell_becomes_readable_only_when_armed_and_published() {
    let ring = ring(1024, 64, None);
    let mut sub = ring.subscribe();
    let bell = ring.doorbell().unwrap();
    let mut publisher = ring.publisher();
    publisher.publish(b"before arming").unwrap();
    assert!(!readable(&bell), "unarmed doorbell must stay quiet");
    assert!(
        !sub.arm(&bell),
        "data is pending, so arming says: read instead"
    );
    let mut buf = Vec::new();
    assert_eq!(sub.try_recv(&mut buf), Ok(0));
    assert!(sub.arm(&bell), "nothing pending: may sleep");
    assert!(!readable(&bell));
    publisher.publish(b"ring").unwrap();
    assert!(readable(&bell), "a publish rings an armed doorbell");
    bell.clear();
    assert!(!readable(&bell));
    publisher.publish(b"again").unwrap();
    assert!(!readable(&bell), "one ring per arming");
}

#[test]
fn a_held_run_rings_an_armed_doorbell_once_when_the_hold_ends_or_at_its_64th_publish() {
    let other_ring = ring(1 << 16, 64, None);
    let ring = ring(1 << 16, 64, None);
    let mut sub = ring.subscribe();
    let bell = ring.doorbell().unwrap();
    let mut publisher = ring.publisher();
    assert!(sub.arm(&bell));

    // Held: the run rings nothing until the hold ends, then rings once.
    ring.with_held_wakes(|| {
        for _ in 0..3 {
            publisher.publish(b"held").unwrap();
        }
        assert!(!readable(&bell), "a held publish must not ring");
    });
    assert!(readable(&bell), "the end of the hold rings");
    read_all_and_arm(&mut sub, &bell);

    // A hold with nothing published rings nothing.
    ring.with_held_wakes(|| {});
    assert!(!readable(&bell), "an empty hold must not ring");

    // A long run rings at its 64th publish, while still held; a nested
    // hold's run is announced when it ends, the outer one's at its end.
    ring.with_held_wakes(|| {
        for _ in 0..63 {
            publisher.publish(b"held").unwrap();
        }
        assert!(!readable(&bell));
        publisher.publish(b"64th").unwrap();
        assert!(readable(&bell), "the 64th held publish rings");
        read_all_and_arm(&mut sub, &bell);
        ring.with_held_wakes(|| publisher.publish(b"inner").unwrap());
        assert!(readable(&bell), "the end of the nested hold rings");
        read_all_and_arm(&mut sub, &bell);
        publisher.publish(b"outer").unwrap();
        assert!(!readable(&bell), "the outer hold holds again");
    });
    assert!(readable(&bell), "the end of the outer hold rings");
    read_all_and_arm(&mut sub, &bell);

    // Another thread's publishes, and another ring's, are not held.
    ring.with_held_wakes(|| {
        let mut other = ring.publisher();
        thread::spawn(move || other.publish(b"elsewhere").unwrap())
            .join()
            .unwrap();
        assert!(readable(&bell), "another thread's publish rings");
        read_all_and_arm(&mut sub, &bell);
        let other_sub = other_ring.subscribe();
        let other_bell = other_ring.doorbell().unwrap();
        assert!(other_sub.arm(&other_bell));
        other_ring.publisher().publish(b"other ring").unwrap();
        assert!(readable(&other_bell), "another ring's publish rings");
    });
    assert!(!readable(&bell), "nothing of this ring went unannounced");
}

/// Whether `bell` is readable now (a zero-timeout `poll`).
fn readable(bell: &Doorbell) -> bool {
    let mut pfd = libc_pollfd(bell.as_raw_fd());
    // SAFETY: one valid pollfd, zero timeout.
    unsafe { poll_raw(&mut pfd) }
}

/// Consumes `bell`'s ring, reads everything `sub` has, and arms `bell`.
fn read_all_and_arm(sub: &mut Subscriber, bell: &Doorbell) {
    bell.clear();
    let mut buf = Vec::new();
    while sub.try_recv(&mut buf).is_ok() {}
    assert!(sub.arm(bell), "nothing pending after reading it all");
}

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

fn libc_pollfd(fd: i32) -> PollFd {
    PollFd {
        fd,
        events: 1, /* POLLIN */
        revents: 0,
    }
}

extern "C" {
    fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
}

/// # Safety
/// `pfd` must be a valid pollfd.
unsafe fn poll_raw(pfd: &mut PollFd) -> bool {
    // SAFETY: the caller passes one valid pollfd; a zero timeout never blocks.
    unsafe { poll(pfd, 1, 0) == 1 && pfd.revents & 1 != 0 }
}

#[test]
fn subscribe_at_replays_what_is_still_in_the_ring() {
    let ring = ring(4096, 64, None);
    let mut publisher = ring.publisher();
    for i in 0..10u64 {
        publisher.publish(&i.to_le_bytes()).unwrap();
    }
    let mut sub = ring.subscribe_at(4);
    let mut buf = Vec::new();
    for i in 4..10 {
        assert_eq!(sub.try_recv(&mut buf), Ok(i));
    }
}

#[test]
fn subscribe_at_a_future_or_forgotten_sequence() {
    let ring = Ring::new(RingConfig {
        capacity: 1024,
        max_record: 64,
        slots: None,
        first_seq: 100,
    })
    .unwrap();
    let mut publisher = ring.publisher();
    let mut early = ring.subscribe_at(90);
    let mut future = ring.subscribe_at(102);
    for _ in 0..3 {
        publisher.publish(b"x").unwrap();
    }
    let mut buf = Vec::new();
    assert_eq!(
        early.try_recv(&mut buf),
        Err(RecvError::Lagged(Lagged {
            missed_from: 90,
            next_available: 100
        }))
    );
    assert_eq!(early.try_recv(&mut buf), Ok(100));
    assert_eq!(future.try_recv(&mut buf), Ok(102));
    assert_eq!(future.try_recv(&mut buf), Err(RecvError::Empty));
}

#[test]
fn first_seq_offsets_every_sequence_number() {
    let ring = Ring::new(RingConfig {
        first_seq: 1_000,
        ..RingConfig {
            capacity: 1024,
            max_record: 64,
            slots: None,
            first_seq: 0,
        }
    })
    .unwrap();
    let mut sub = ring.subscribe();
    assert_eq!(ring.publisher().publish(b"x"), Ok(1_000));
    assert_eq!(sub.try_recv(&mut Vec::new()), Ok(1_000));
}

#[test]
fn a_skip_shorter_than_the_slots_is_skipped_by_readers_like_aborted_records() {
    let ring = ring(1024, 64, Some(8));
    let mut publisher = ring.publisher();
    let mut sub = ring.subscribe();
    let mut buf = Vec::new();
    publisher.publish(b"a").unwrap();
    assert_eq!(sub.try_recv(&mut buf), Ok(0));
    publisher.skip_to(6);
    assert_eq!(ring.next_seq(), 6);
    assert_eq!(sub.try_recv(&mut buf), Err(RecvError::Empty));
    assert_eq!(publisher.publish(b"b").unwrap(), 6);
    assert_eq!(sub.try_recv(&mut buf), Ok(6));
    assert_eq!(buf, b"b");
    // A subscriber that starts inside the skip reads what follows it.
    let mut late = ring.subscribe_at(3);
    assert_eq!(late.try_recv(&mut buf), Ok(6));
}

#[test]
fn a_skip_longer_than_the_slots_tells_readers_behind_it_they_lagged() {
    let ring = ring(1024, 64, Some(8));
    let mut publisher = ring.publisher();
    let mut waiting = ring.subscribe();
    let mut behind = ring.subscribe();
    let mut buf = Vec::new();
    for i in 0..3u8 {
        publisher.publish(&[i]).unwrap();
    }
    for i in 0..3 {
        assert_eq!(waiting.try_recv(&mut buf), Ok(i));
    }
    publisher.skip_to(1_000_000);
    assert_eq!(ring.next_seq(), 1_000_000);
    assert_eq!(publisher.publish(b"next").unwrap(), 1_000_000);
    // Every sequence either reader had not read is reported missed, exactly
    // from where it stood; then the record after the skip.
    for (sub, from) in [(&mut waiting, 3), (&mut behind, 0)] {
        match sub.try_recv(&mut buf) {
            Err(RecvError::Lagged(Lagged { missed_from, .. })) => assert_eq!(missed_from, from),
            other => panic!("expected a lag from {from}, got {other:?}"),
        }
        let mut seq = sub.try_recv(&mut buf);
        while let Err(RecvError::Lagged(_)) = seq {
            seq = sub.try_recv(&mut buf);
        }
        assert_eq!(seq, Ok(1_000_000));
        assert_eq!(buf, b"next");
    }
    // Publishing goes on across laps after the skip. (That the head and the
    // watermark jump rather than claim every sequence is checked by loom:
    // `a_reader_racing_a_skip_that_jumps_the_head_sees_only_real_records_or_lags`.)
    for i in 0..100u64 {
        assert_eq!(publisher.publish(&i.to_le_bytes()).unwrap(), 1_000_001 + i);
    }
}

#[test]
fn a_single_publisher_publishes_skips_and_holds_for_a_tether_like_a_shared_one() {
    let config = RingConfig {
        capacity: 1024,
        max_record: 64,
        slots: Some(8),
        first_seq: 5,
    };
    let (ring, mut publisher) = Ring::with_single_publisher(config).unwrap();
    let mut sub = ring.subscribe();
    let mut buf = Vec::new();
    assert_eq!(publisher.publish(b"a"), Ok(5));
    assert_eq!(sub.try_recv(&mut buf), Ok(5));
    assert_eq!(buf, b"a");
    // A skip longer than the slots jumps the head; the reader is told it lagged.
    publisher.skip_to(1_000_000);
    assert_eq!(ring.next_seq(), 1_000_000);
    assert_eq!(publisher.publish(b"b"), Ok(1_000_000));
    match sub.try_recv(&mut buf) {
        Err(RecvError::Lagged(Lagged { missed_from, .. })) => assert_eq!(missed_from, 6),
        other => panic!("expected a lag from 6, got {other:?}"),
    }
    let mut seq = sub.try_recv(&mut buf);
    while let Err(RecvError::Lagged(_)) = seq {
        seq = sub.try_recv(&mut buf);
    }
    assert_eq!((seq, buf.as_slice()), (Ok(1_000_000), &b"b"[..]));
    // A tethered subscriber holds it back as it holds a shared publisher.
    let mut tethered = ring.subscribe_tethered().unwrap();
    for i in 0..8u8 {
        publisher.try_publish(&[i]).unwrap();
    }
    assert_eq!(publisher.try_publish(b"x"), Err(PublishError::Full));
    assert_eq!(tethered.try_recv(&mut buf), Ok(1_000_001));
    assert_eq!(publisher.try_publish(b"x"), Ok(1_000_009));
}

#[test]
#[should_panic(expected = "single publisher")]
fn a_ring_with_a_single_publisher_makes_no_other() {
    let (ring, _publisher) = Ring::with_single_publisher(RingConfig {
        capacity: 1024,
        max_record: 64,
        slots: None,
        first_seq: 0,
    })
    .unwrap();
    let _second = ring.publisher();
}

#[test]
fn a_tethered_batch_releases_its_records_when_the_call_returns() {
    let ring = ring(1024, 64, Some(8));
    let mut publisher = ring.publisher();
    let mut sub = ring.subscribe_tethered().unwrap();
    for i in 0..8u8 {
        publisher.try_publish(&[i]).unwrap();
    }
    assert_eq!(publisher.try_publish(b"x"), Err(PublishError::Full));
    let mut read = Vec::new();
    let got = sub
        .read_batch(8, |seq, bytes| {
            // Nothing of the batch is released while it is being read.
            assert_eq!(publisher.try_publish(b"x"), Err(PublishError::Full));
            read.push((seq, bytes[0]));
        })
        .unwrap();
    assert_eq!(got, 8);
    assert_eq!(read, (0..8u8).map(|i| (i as u64, i)).collect::<Vec<_>>());
    // All of it is released now: a whole ring of room.
    for i in 8..16u64 {
        assert_eq!(publisher.try_publish(b"y"), Ok(i));
    }
    assert_eq!(publisher.try_publish(b"z"), Err(PublishError::Full));
}
