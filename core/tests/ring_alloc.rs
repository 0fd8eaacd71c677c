//! Zero allocation on the publish path and the steady-state read path,
//! checked with a counting global allocator (invariant 6 of `docs/DESIGN.md`).

mod common;

use common::counting_alloc::allocations;

use herald_core::ring::{Ring, RingConfig};

#[test]
fn publish_and_read_do_not_allocate_after_warm_up() {
    let ring = Ring::new(RingConfig {
        capacity: 1 << 12,
        max_record: 256,
        slots: Some(32),
        first_seq: 0,
    })
    .unwrap();
    let mut publisher = ring.publisher();
    let mut sub = ring.subscribe();
    let mut lagging = ring.subscribe();
    let mut tethered = ring.subscribe_tethered().unwrap();
    let mut buf = Vec::new();
    let payload = [7u8; 200];
    // Warm-up: grow `buf` once, touch every path.
    for _ in 0..64 {
        publisher.publish(&payload).unwrap();
        sub.try_recv(&mut buf).unwrap();
        tethered.try_recv(&mut buf).unwrap();
    }
    let _ = lagging.try_recv(&mut buf);

    let before = allocations();
    let mut sum = 0u64;
    for i in 0..10_000u64 {
        if i % 2 == 0 {
            publisher.publish(&payload[..(i % 200) as usize]).unwrap();
        } else {
            let mut claim = publisher.claim(64).unwrap();
            claim.write_at(0, &i.to_le_bytes());
            claim.commit();
        }
        sum += sub.try_read(|seq, bytes| seq + bytes.len() as u64).unwrap();
        sum += tethered.try_recv(&mut buf).unwrap();
        // Lapped again and again: lag recovery does not allocate either.
        let _ = lagging.read_batch(4, |seq, _| sum += seq);
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations on the hot paths (checksum {sum})"
    );
}
