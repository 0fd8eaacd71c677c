//! The ring's shared memory: the data bytes, the record slots, the claim head
//! and the written watermark, and the word-wise copies in and out of them.
//!
//! All shared bytes are atomics (`AtomicU64` words) so that a reader racing
//! with a writer that overwrites the same bytes is a *detected* race on
//! atomics, not undefined behaviour; see the soundness argument in
//! [`super`]'s module docs.

use crossbeam_utils::CachePadded;

use super::tether::Tether;
use super::wait::Waiters;
use crate::sync::{AtomicPair, AtomicU64, Ordering};

/// Set in [`Slot::len`] for a claim that was aborted: readers skip it.
pub(crate) const ABORTED: u64 = 1 << 63;

/// The stamp a slot carries once record `seq` is committed in it. Zero means
/// "never written"; a stamp below `stamp(seq)` belongs to an older lap (not
/// yet committed for `seq`), one above it to a newer lap (the reader was lapped).
#[inline]
pub(crate) const fn stamp(seq: u64) -> u64 {
    (seq << 1) | 1
}

/// Rounds a record length up to whole data words.
#[inline]
pub(crate) const fn align8(len: u64) -> u64 {
    (len + 7) & !7
}

/// Per-record metadata, indexed by `seq & slot_mask`. Kept out of the data
/// bytes so that no payload byte can ever be mistaken for a header.
#[derive(Debug, Default)]
#[repr(C, align(32))]
pub(crate) struct Slot {
    /// `stamp(seq)` once the record is committed. Written last, with Release.
    pub(crate) stamp: AtomicU64,
    /// Absolute byte position of the record's first data byte.
    pub(crate) pos: AtomicU64,
    /// Payload length in bytes, `| ABORTED` for an aborted claim.
    pub(crate) len: AtomicU64,
}

/// See [`Shared::frontier`].
#[derive(Debug)]
pub(crate) struct Frontier {
    pub(crate) seq: AtomicU64,
    pub(crate) pos: AtomicU64,
}

/// Everything publishers and subscribers share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Data capacity in bytes (power of two).
    pub(crate) capacity: u64,
    /// Number of slots (power of two).
    pub(crate) slots_len: u64,
    /// Largest payload accepted.
    pub(crate) max_record: u64,
    /// The first sequence number this ring hands out.
    pub(crate) first_seq: u64,
    /// Made for one publisher ([`super::Ring::with_single_publisher`]): it
    /// moves the head by plain stores, so no other may ever claim.
    pub(crate) single_publisher: bool,
    /// Frontier units, as shifts: a sixteenth of the slots (at least 1) and
    /// of the bytes. Both are powers of two, so no division on the hot path.
    seq_shift: u32,
    pos_shift: u32,
    words: Box<[AtomicU64]>,
    pub(crate) slots: Box<[Slot]>,
    /// `(next seq, next free byte position)`: the end of the latest claim.
    /// Invariant: both halves only grow, and every byte and slot a producer
    /// writes lies inside a claim it won here *before* writing (the seqlock's
    /// "write intent" that readers validate against).
    pub(crate) head: CachePadded<AtomicPair>,
    /// `(seq, end pos)`: every record below `seq` is committed and the data of
    /// record `seq - 1` ends at `end pos`. Lags behind commits; advanced lazily
    /// by producers that need room (see `Publisher::wait_for_written`).
    pub(crate) written: CachePadded<AtomicPair>,
    /// How far claims may have reached, in sixteenths of the ring: every claim
    /// so far ends at or before `pos_frontier · capacity/16` bytes and below
    /// `seq_frontier · slots/16` sequences. Publishers raise it *before* the
    /// claim CAS that needs it (rarely: once per sixteenth of a lap), so it is
    /// read-mostly and readers validate against it instead of against the
    /// head, which every publish writes.
    pub(crate) frontier: CachePadded<Frontier>,
    pub(crate) tether: Tether,
    /// Subscribers asleep waiting for data.
    pub(crate) waiters: Waiters,
    /// Publishers asleep waiting for a tethered subscriber to make room.
    pub(crate) tether_waiters: Waiters,
}

impl Shared {
    pub(crate) fn new(
        capacity: u64,
        slots_len: u64,
        max_record: u64,
        first_seq: u64,
        single_publisher: bool,
    ) -> Self {
        let words = (0..capacity / 8).map(|_| AtomicU64::new(0)).collect();
        let slots = (0..slots_len).map(|_| Slot::default()).collect();
        Self {
            capacity,
            slots_len,
            max_record,
            first_seq,
            single_publisher,
            seq_shift: (slots_len / 16).max(1).trailing_zeros(),
            pos_shift: (capacity / 16).max(1).trailing_zeros(),
            words,
            slots,
            head: CachePadded::new(AtomicPair::new(first_seq, 0)),
            written: CachePadded::new(AtomicPair::new(first_seq, 0)),
            frontier: CachePadded::new(Frontier {
                seq: AtomicU64::new(first_seq.div_ceil((slots_len / 16).max(1))),
                pos: AtomicU64::new(0),
            }),
            tether: Tether::new(),
            waiters: Waiters::new(),
            tether_waiters: Waiters::new(),
        }
    }

    #[inline]
    pub(crate) fn slot(&self, seq: u64) -> &Slot {
        &self.slots[(seq & (self.slots_len - 1)) as usize]
    }

    /// Where a record of `len` payload bytes claimed at `pos` starts: at `pos`,
    /// or at the start of the next lap if it would straddle the end (records
    /// are contiguous in memory; the skipped tail is simply not used).
    #[inline]
    pub(crate) fn placement(&self, pos: u64, len: u64) -> (u64, u64) {
        let size = align8(len);
        let offset = pos & (self.capacity - 1);
        let start = if offset + size > self.capacity {
            pos + (self.capacity - offset)
        } else {
            pos
        };
        (start, start + size)
    }

    /// The frontier units a claim of `seq` ending at `end` must announce.
    #[inline]
    pub(crate) fn frontier_of(&self, seq: u64, end: u64) -> (u64, u64) {
        let up = |x: u64, shift: u32| (x + (1 << shift) - 1) >> shift;
        (up(seq + 1, self.seq_shift), up(end, self.pos_shift))
    }

    /// Is a record at `(seq, pos)` possibly overwritten, given the frontier
    /// `(seq units, pos units)` read *after* reading the record? Its slot is
    /// reused by `seq + slots_len`, its bytes by any claim ending past
    /// `pos + capacity`; the frontier bounds every claim from above, so this
    /// errs (by at most a sixteenth of the ring) on the side of "overwritten".
    #[inline]
    pub(crate) fn overwritten(
        &self,
        seq: u64,
        pos: u64,
        (seq_units, pos_units): (u64, u64),
    ) -> bool {
        (seq_units << self.seq_shift) > seq + self.slots_len
            || (pos_units << self.pos_shift) > pos + self.capacity
    }

    /// The contiguous words of a record's data: records never straddle the end.
    #[inline]
    fn record_words(&self, start: u64, len: u64) -> &[AtomicU64] {
        let first = ((start & (self.capacity - 1)) >> 3) as usize;
        let count = (align8(len) >> 3) as usize;
        // A torn slot can give a start whose record would run past the end:
        // clamp (the read is discarded by validation anyway).
        let last = (first + count).min(self.words.len());
        &self.words[first..last]
    }

    /// Stores `src` at byte offset `at` of the record whose data starts at
    /// `start` (8-aligned) and is `len` bytes long. The caller owns those
    /// bytes through its claim, and `at + src.len() <= len`.
    pub(crate) fn write(&self, start: u64, len: u64, at: u64, src: &[u8]) {
        let words = self.record_words(start, len);
        let mut index = (at >> 3) as usize;
        let mut src = src;
        // Leading partial word: merge with what the claim already wrote there.
        let lead = (at & 7) as usize;
        if lead != 0 && !src.is_empty() {
            let n = (8 - lead).min(src.len());
            let mut bytes = words[index].load(Ordering::Relaxed).to_ne_bytes();
            bytes[lead..lead + n].copy_from_slice(&src[..n]);
            words[index].store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
            index += 1;
            src = &src[n..];
        }
        let whole = src.len() / 8;
        let (body, rest) = src.split_at(whole * 8);
        for (word, chunk) in words[index..index + whole].iter().zip(body.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
        if !rest.is_empty() {
            let word = &words[index + whole];
            // Merge: another write of this claim may own the rest of the word.
            let mut bytes = word.load(Ordering::Relaxed).to_ne_bytes();
            bytes[..rest.len()].copy_from_slice(rest);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
    }

    /// Copies the record whose data starts at `start` into `dst` (its length).
    /// The bytes may be torn by a concurrent overwrite: the caller validates
    /// with [`Shared::overwritten`] before trusting them.
    pub(crate) fn read(&self, start: u64, dst: &mut [u8]) {
        let words = self.record_words(start, dst.len() as u64);
        let mut chunks = dst.chunks_exact_mut(8);
        let mut words = words.iter();
        for (chunk, word) in (&mut chunks).zip(&mut words) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        let rest = chunks.into_remainder();
        if let (false, Some(word)) = (rest.is_empty(), words.next()) {
            let bytes = word.load(Ordering::Relaxed).to_ne_bytes();
            rest.copy_from_slice(&bytes[..rest.len()]);
        }
    }
}
