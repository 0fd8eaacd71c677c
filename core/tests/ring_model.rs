//! Property test: the ring against a simple model.
//!
//! The model keeps every record ever published (a `VecDeque` of what the
//! ring should still hold plus the placement rule from the ring's docs:
//! contiguous, 8-byte aligned, moved to the next lap rather than straddle the
//! end). Random sequences of publishes, aborted claims, reads, late joins and
//! tethered subscribers are run against both, and every answer the ring gives
//! is checked: records in order with their exact bytes, `Empty` only when
//! nothing is left, `Lagged` only for records really overwritten, `Full` only
//! when a tethered subscriber really would be overrun. Each case runs with
//! a shared publisher and again with a ring's single publisher.

use std::collections::VecDeque;

use herald_core::ring::{PublishError, RecvError, RingConfig, Subscriber};
use proptest::prelude::*;

#[path = "shared/any_publisher.rs"]
mod any_publisher;
use any_publisher::ring_with_publisher;

#[derive(Debug, Clone)]
enum Op {
    Publish {
        len: usize,
        fill: u8,
        via_claim: bool,
    },
    Abort {
        len: usize,
    },
    Read {
        sub: usize,
    },
    Join,
    JoinTethered,
    Leave {
        sub: usize,
    },
}

fn op(max_record: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..=max_record, any::<u8>(), any::<bool>()).prop_map(|(len, fill, via_claim)| Op::Publish { len, fill, via_claim }),
        1 => (0..=max_record).prop_map(|len| Op::Abort { len }),
        8 => (0..6usize).prop_map(|sub| Op::Read { sub }),
        1 => Just(Op::Join),
        1 => Just(Op::JoinTethered),
        1 => (0..6usize).prop_map(|sub| Op::Leave { sub }),
    ]
}

/// One record as the model sees it.
#[derive(Debug, Clone)]
struct Rec {
    seq: u64,
    start: u64,
    end: u64,
    payload: Option<Vec<u8>>, // None: aborted
}

struct Model {
    capacity: u64,
    slots: u64,
    records: VecDeque<Rec>, // a window of recent records (all that could be read)
    head_seq: u64,
    head_pos: u64,
}

impl Model {
    fn place(&self, len: usize) -> (u64, u64) {
        let size = (len as u64 + 7) & !7;
        let offset = self.head_pos % self.capacity;
        let start = if offset + size > self.capacity {
            self.head_pos + self.capacity - offset
        } else {
            self.head_pos
        };
        (start, start + size)
    }
    fn push(&mut self, len: usize, payload: Option<Vec<u8>>) -> u64 {
        let (start, end) = self.place(len);
        let seq = self.head_seq;
        self.records.push_back(Rec {
            seq,
            start,
            end,
            payload,
        });
        self.head_seq += 1;
        self.head_pos = end;
        while self.records.len() > 4 * self.slots as usize + 8 {
            self.records.pop_front();
        }
        seq
    }
    fn get(&self, seq: u64) -> Option<&Rec> {
        let first = self.records.front()?.seq;
        self.records.get(seq.checked_sub(first)? as usize)
    }
    /// Is record `seq` gone (slot or bytes reused)?
    fn overwritten(&self, seq: u64) -> bool {
        match self.get(seq) {
            Some(r) => self.head_seq - seq > self.slots || self.head_pos - r.start > self.capacity,
            None => true,
        }
    }
    /// May the ring treat record `seq` as gone? It validates against claims
    /// rounded up to sixteenths of the ring (the documented frontier).
    fn may_be_overwritten(&self, seq: u64) -> bool {
        let (seq_unit, pos_unit) = ((self.slots / 16).max(1), (self.capacity / 16).max(1));
        let seq_frontier = self.head_seq.div_ceil(seq_unit) * seq_unit;
        let pos_frontier = self.head_pos.div_ceil(pos_unit) * pos_unit;
        match self.get(seq) {
            Some(r) => seq_frontier > seq + self.slots || pos_frontier > r.start + self.capacity,
            None => true,
        }
    }
}

struct Sub {
    sub: Subscriber,
    expected: u64,
    /// For tethered: data released up to this position.
    released_pos: u64,
}

fn run(
    capacity: usize,
    max_record: usize,
    slots: usize,
    ops: Vec<Op>,
    single: bool,
) -> Result<(), TestCaseError> {
    let config = RingConfig {
        capacity,
        max_record,
        slots: Some(slots),
        first_seq: 0,
    };
    let (ring, mut publisher) = ring_with_publisher(config, single);
    let mut model = Model {
        capacity: capacity as u64,
        slots: slots as u64,
        records: VecDeque::new(),
        head_seq: 0,
        head_pos: 0,
    };
    let mut subs: Vec<Sub> = vec![Sub {
        sub: ring.subscribe(),
        expected: 0,
        released_pos: 0,
    }];
    let mut buf = Vec::new();
    for op in ops {
        match op {
            Op::Publish {
                len,
                fill,
                via_claim,
            } => {
                let payload: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                let (_, end) = model.place(len);
                let blocked = subs.iter().any(|s| {
                    s.sub.is_tethered()
                        && (model.head_seq >= s.expected + model.slots
                            || end > s.released_pos + model.capacity)
                });
                let result = if via_claim {
                    publisher.try_claim(len).map(|mut c| {
                        // Write back to front to exercise partial words.
                        for (i, chunk) in payload.chunks(3).enumerate().rev() {
                            c.write_at(i * 3, chunk);
                        }
                        c.commit()
                    })
                } else {
                    publisher.try_publish(&payload)
                };
                if blocked {
                    prop_assert_eq!(result, Err(PublishError::Full));
                } else {
                    let seq = model.push(len, Some(payload));
                    prop_assert_eq!(result, Ok(seq));
                }
            }
            Op::Abort { len } => {
                let (_, end) = model.place(len);
                let blocked = subs.iter().any(|s| {
                    s.sub.is_tethered()
                        && (model.head_seq >= s.expected + model.slots
                            || end > s.released_pos + model.capacity)
                });
                match publisher.try_claim(len) {
                    Ok(claim) => {
                        prop_assert!(!blocked);
                        claim.abort();
                        model.push(len, None);
                    }
                    Err(e) => {
                        prop_assert!(blocked);
                        prop_assert_eq!(e, PublishError::Full);
                    }
                }
            }
            Op::Read { sub } => {
                if subs.is_empty() {
                    continue;
                }
                let s = sub % subs.len();
                let s = &mut subs[s];
                // Skip aborted records as the ring does.
                let mut skip_to = s.expected;
                while let Some(r) = model.get(skip_to) {
                    if r.payload.is_some() || model.overwritten(skip_to) {
                        break;
                    }
                    skip_to += 1;
                }
                match s.sub.try_recv(&mut buf) {
                    Ok(seq) => {
                        prop_assert!(
                            !model.overwritten(seq),
                            "record {} was delivered after being overwritten",
                            seq
                        );
                        prop_assert_eq!(
                            seq,
                            skip_to,
                            "records arrive in order, aborted ones skipped"
                        );
                        let rec = model.get(seq).unwrap();
                        prop_assert_eq!(Some(&buf), rec.payload.as_ref());
                        s.expected = seq + 1;
                        s.released_pos = rec.end;
                    }
                    Err(RecvError::Empty) => {
                        prop_assert_eq!(skip_to, model.head_seq, "Empty only when nothing is left");
                        s.expected = skip_to;
                        // The ring moved past aborted records too.
                        if skip_to > 0 {
                            if let Some(r) = model.get(skip_to - 1) {
                                s.released_pos = s.released_pos.max(r.end);
                            }
                        }
                    }
                    Err(RecvError::Lagged(lag)) => {
                        prop_assert!(!s.sub.is_tethered(), "tethered subscribers never lag");
                        prop_assert!(lag.missed_from <= skip_to, "lag starts at the cursor");
                        prop_assert!(
                            model.may_be_overwritten(lag.missed_from),
                            "lag reported for record {} that is still intact",
                            lag.missed_from
                        );
                        prop_assert!(
                            lag.next_available > lag.missed_from
                                && lag.next_available <= model.head_seq
                        );
                        prop_assert!(
                            !model.may_be_overwritten(lag.next_available)
                                || lag.next_available == model.head_seq
                        );
                        prop_assert_eq!(s.sub.next_seq(), lag.next_available);
                        s.expected = lag.next_available;
                    }
                    Err(other) => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            Op::Join => subs.push(Sub {
                sub: ring.subscribe(),
                expected: model.head_seq,
                released_pos: model.head_pos,
            }),
            Op::JoinTethered => {
                if let Some(sub) = ring.subscribe_tethered() {
                    prop_assert_eq!(sub.next_seq(), model.head_seq);
                    subs.push(Sub {
                        sub,
                        expected: model.head_seq,
                        released_pos: model.head_pos,
                    });
                }
            }
            Op::Leave { sub } => {
                if !subs.is_empty() {
                    let s = sub % subs.len();
                    subs.swap_remove(s);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn ring_behaves_like_the_model(
        (capacity, max_record, slots, ops) in (6u32..11, 1u32..4, 1u32..7).prop_flat_map(|(cap_log, max_div, slots_log)| {
            let capacity = 1usize << cap_log;
            let max_record = (capacity / 4) >> (max_div - 1);
            let slots = 1usize << slots_log;
            (Just(capacity), Just(max_record.max(1)), Just(slots), proptest::collection::vec(op(max_record.max(1)), 1..300))
        })
    ) {
        run(capacity, max_record, slots, ops.clone(), false)?;
        run(capacity, max_record, slots, ops, true)?;
    }
}
