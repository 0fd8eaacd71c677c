//! Multi-threaded stress: several publishers × several subscribers on a small
//! ring, every payload self-describing (publisher id, counter, checksum).
//!
//! Checks, after the run:
//! - no subscriber ever received a torn or mixed payload (checksum, and the
//!   payload is exactly what the publisher recorded for that sequence number);
//! - each publisher's records arrive in its own order;
//! - for every subscriber, the records it received and the `Lagged` ranges it
//!   was told of partition the published sequence numbers exactly: nothing
//!   missed silently, nothing reported missed that was delivered;
//! - tethered subscribers receive everything.
//!
//! `HERALD_LONG=1` runs ten times as many records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use herald_core::ring::{RecvError, Ring, RingConfig, Subscriber};

fn scale() -> u64 {
    if std::env::var_os("HERALD_LONG").is_some() {
        10
    } else {
        1
    }
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// `[producer u32][counter u64][len-20 filler bytes][checksum u64]`, 20..=max bytes.
fn encode(producer: u32, counter: u64, max: usize, out: &mut Vec<u8>) {
    out.clear();
    let len = 20 + (mix(counter ^ (producer as u64) << 40) as usize % (max - 19));
    out.extend_from_slice(&producer.to_le_bytes());
    out.extend_from_slice(&counter.to_le_bytes());
    let mut state = mix(counter.wrapping_add(producer as u64));
    while out.len() < len - 8 {
        state = mix(state);
        out.push(state as u8);
    }
    let sum = checksum(out);
    out.extend_from_slice(&sum.to_le_bytes());
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Returns (producer, counter) or panics on a corrupt payload.
fn decode(bytes: &[u8]) -> (u32, u64) {
    assert!(bytes.len() >= 20, "short payload: {} bytes", bytes.len());
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    assert_eq!(
        checksum(body),
        u64::from_le_bytes(sum.try_into().unwrap()),
        "checksum mismatch: torn read"
    );
    (
        u32::from_le_bytes(body[..4].try_into().unwrap()),
        u64::from_le_bytes(body[4..12].try_into().unwrap()),
    )
}

#[derive(Default)]
struct Seen {
    /// (seq, producer, counter) in delivery order.
    records: Vec<(u64, u32, u64)>,
    /// Lag ranges `missed_from..next_available`.
    lags: Vec<(u64, u64)>,
}

fn subscribe_loop(
    mut sub: Subscriber,
    slow: bool,
    stop: &AtomicBool,
    end_seq: &std::sync::atomic::AtomicU64,
) -> Seen {
    let mut seen = Seen::default();
    let mut n = 0u64;
    let mut batch = false;
    loop {
        // Alternate single reads with batches (which a tethered subscriber
        // releases only at their end).
        batch = !batch;
        let read = if batch {
            let records = &mut seen.records;
            sub.read_batch(37, |seq, bytes| {
                let (p, c) = decode(bytes);
                records.push((seq, p, c));
            })
            .map_err(RecvError::Lagged)
        } else {
            sub.try_read(|seq, bytes| {
                let (p, c) = decode(bytes);
                seen.records.push((seq, p, c));
                1
            })
        };
        match read {
            Ok(0) => {}
            Ok(got) => {
                let before = n;
                n += got as u64;
                if slow && n / 512 != before / 512 {
                    thread::sleep(std::time::Duration::from_micros(300));
                }
                continue;
            }
            Err(RecvError::Lagged(lag)) => {
                seen.lags.push((lag.missed_from, lag.next_available));
                continue;
            }
            Err(_) => {}
        }
        if stop.load(Ordering::Acquire) && sub.next_seq() >= end_seq.load(Ordering::Acquire) {
            return seen;
        }
        thread::yield_now();
    }
}

/// Bytes lap before slots (~110-byte records, 256 slots, 16 KiB).
const BYTE_BOUND: (usize, usize) = (1 << 14, 256);
/// Slots lap before bytes (64 slots, 64 KiB).
const SLOT_BOUND: (usize, usize) = (1 << 16, 64);

/// Who publishes: `Shared(n)` publishers of a shared ring, or a ring's
/// single publisher.
#[derive(Clone, Copy)]
enum Producers {
    Shared(u32),
    Single,
}

fn stress(
    (capacity, slots): (usize, usize),
    producers: Producers,
    untethered: usize,
    slow: usize,
    tethered: usize,
    per_producer: u64,
) {
    let max = 200;
    let config = RingConfig {
        capacity,
        max_record: max,
        slots: Some(slots),
        first_seq: 0,
    };
    // One publish function per producer thread.
    type Publish = Box<dyn FnMut(&[u8]) -> u64 + Send>;
    let (ring, publishers): (Ring, Vec<Publish>) = match producers {
        Producers::Shared(n) => {
            let ring = Ring::new(config).unwrap();
            let publishers = (0..n)
                .map(|_| {
                    let mut p = ring.publisher();
                    Box::new(move |bytes: &[u8]| p.publish(bytes).unwrap()) as Publish
                })
                .collect();
            (ring, publishers)
        }
        Producers::Single => {
            let (ring, mut p) = Ring::with_single_publisher(config).unwrap();
            let publish = Box::new(move |bytes: &[u8]| p.publish(bytes).unwrap()) as Publish;
            (ring, vec![publish])
        }
    };
    let producers = publishers.len() as u32;
    let stop = Arc::new(AtomicBool::new(false));
    let end_seq = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let mut subs = Vec::new();
    for i in 0..untethered {
        subs.push((ring.subscribe(), i < slow, false));
    }
    for _ in 0..tethered {
        subs.push((ring.subscribe_tethered().unwrap(), false, true));
    }
    let start = Arc::new(Barrier::new(producers as usize + 1));
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(sub, slow, tethered)| {
            let (stop, end_seq) = (stop.clone(), end_seq.clone());
            (
                tethered,
                thread::spawn(move || subscribe_loop(sub, slow, &stop, &end_seq)),
            )
        })
        .collect();
    let writers: Vec<_> = publishers
        .into_iter()
        .zip(0..)
        .map(|(mut publish, p)| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let mut buf = Vec::new();
                let mut seqs = Vec::with_capacity(per_producer as usize);
                for counter in 0..per_producer {
                    encode(p, counter, max, &mut buf);
                    seqs.push(publish(&buf));
                }
                seqs
            })
        })
        .collect();
    start.wait();
    // seq -> (producer, counter), from the publishers' own records.
    let total = producers as u64 * per_producer;
    let mut by_seq = vec![(u32::MAX, 0u64); total as usize];
    for (p, w) in writers.into_iter().enumerate() {
        for (counter, seq) in w.join().unwrap().into_iter().enumerate() {
            assert_eq!(
                by_seq[seq as usize].0,
                u32::MAX,
                "sequence {seq} handed out twice"
            );
            by_seq[seq as usize] = (p as u32, counter as u64);
        }
    }
    end_seq.store(total, Ordering::Release);
    stop.store(true, Ordering::Release);
    for (tethered, reader) in readers {
        let seen = reader.join().unwrap();
        // Delivered records and lag ranges partition 0..total exactly.
        let mut covered = vec![0u8; total as usize];
        for &(seq, p, c) in &seen.records {
            assert_eq!(
                by_seq[seq as usize],
                (p, c),
                "record {seq} is not what was published there"
            );
            covered[seq as usize] += 1;
        }
        for &(from, to) in &seen.lags {
            assert!(from < to && to <= total);
            for seq in from..to {
                covered[seq as usize] += 1;
            }
        }
        let bad: Vec<_> = covered
            .iter()
            .enumerate()
            .filter(|(_, &c)| c != 1)
            .take(5)
            .collect();
        assert!(
            bad.is_empty(),
            "sequences seen/missed a number of times other than once: {bad:?}"
        );
        // Per-publisher order (and global order) of what was delivered.
        let mut last = vec![None::<u64>; producers as usize];
        let mut last_seq = None;
        for &(seq, p, c) in &seen.records {
            assert!(last_seq < Some(seq));
            last_seq = Some(seq);
            assert!(last[p as usize] < Some(c), "publisher {p} out of order");
            last[p as usize] = Some(c);
        }
        if tethered {
            assert!(seen.lags.is_empty(), "a tethered subscriber lagged");
            assert_eq!(seen.records.len() as u64, total);
        }
        eprintln!(
            "subscriber tethered={tethered}: {} delivered, {} lags covering {} records",
            seen.records.len(),
            seen.lags.len(),
            seen.lags.iter().map(|(a, b)| b - a).sum::<u64>()
        );
    }
}

#[test]
fn publishers_and_lagging_subscribers_account_for_every_record() {
    stress(BYTE_BOUND, Producers::Shared(3), 3, 1, 0, 60_000 * scale());
}

#[test]
fn a_single_publisher_and_lagging_subscribers_account_for_every_record() {
    stress(BYTE_BOUND, Producers::Single, 3, 1, 0, 120_000 * scale());
}

#[test]
fn slot_bound_ring_accounts_for_every_record() {
    stress(SLOT_BOUND, Producers::Shared(2), 2, 1, 0, 60_000 * scale());
}

#[test]
fn tethered_subscribers_receive_everything_while_others_lag() {
    stress(BYTE_BOUND, Producers::Shared(2), 2, 1, 2, 40_000 * scale());
}

#[test]
fn a_single_publisher_with_tethered_and_lagging_subscribers_accounts_for_every_record() {
    stress(BYTE_BOUND, Producers::Single, 2, 1, 2, 80_000 * scale());
}
