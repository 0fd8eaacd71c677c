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
    pub(crate) tether: Tether,
    /// Subscribers asleep waiting for data.
    pub(crate) waiters: Waiters,
    /// Publishers asleep waiting for a tethered subscriber to make room.
    pub(crate) tether_waiters: Waiters,
}

impl Shared {
    pub(crate) fn new(capacity: u64, slots_len: u64, max_record: u64, first_seq: u64) -> Self {
        let words = (0..capacity / 8).map(|_| AtomicU64::new(0)).collect();
        let slots = (0..slots_len).map(|_| Slot::default()).collect();
        Self {
            capacity,
            slots_len,
            max_record,
            first_seq,
            words,
            slots,
            head: CachePadded::new(AtomicPair::new(first_seq, 0)),
            written: CachePadded::new(AtomicPair::new(first_seq, 0)),
            tether: Tether::new(),
            waiters: Waiters::new(),
            tether_waiters: Waiters::new(),
        }
    }

    #[inline]
    pub(crate) fn slot(&self, seq: u64) -> &Slot {
        &self.slots[(seq & (self.slots_len - 1)) as usize]
    }

    #[inline]
    fn word(&self, pos: u64) -> &AtomicU64 {
        &self.words[((pos & (self.capacity - 1)) >> 3) as usize]
    }

    /// Where a record of `len` payload bytes claimed at `pos` starts: at `pos`,
    /// or at the start of the next lap if it would straddle the end (records
    /// are contiguous in memory; the skipped tail is simply not used).
    #[inline]
    pub(crate) fn placement(&self, pos: u64, len: u64) -> (u64, u64) {
        let size = align8(len);
        let offset = pos & (self.capacity - 1);
        let start = if offset + size > self.capacity { pos + (self.capacity - offset) } else { pos };
        (start, start + size)
    }

    /// Is a record at `(seq, pos)` possibly overwritten, given the claim head
    /// `(head_seq, head_pos)` seen *after* reading it? Its slot is reused by
    /// `seq + slots_len`, its bytes by any claim ending past `pos + capacity`.
    #[inline]
    pub(crate) fn overwritten(&self, seq: u64, pos: u64, (head_seq, head_pos): (u64, u64)) -> bool {
        head_seq.wrapping_sub(seq) > self.slots_len || head_pos.wrapping_sub(pos) > self.capacity
    }

    /// Stores `src` at byte offset `at` of the record whose data starts at
    /// `start` (8-aligned). The caller owns those bytes through its claim.
    pub(crate) fn write(&self, start: u64, at: u64, src: &[u8]) {
        let mut pos = start + at;
        let mut src = src;
        // Leading partial word: merge with what the claim already wrote there.
        let lead = (pos & 7) as usize;
        if lead != 0 && !src.is_empty() {
            let n = (8 - lead).min(src.len());
            let word = self.word(pos & !7);
            let mut bytes = word.load(Ordering::Relaxed).to_ne_bytes();
            bytes[lead..lead + n].copy_from_slice(&src[..n]);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
            pos = (pos & !7) + 8;
            src = &src[n..];
        }
        let mut chunks = src.chunks_exact(8);
        for chunk in &mut chunks {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            self.word(pos).store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
            pos += 8;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let word = self.word(pos);
            // Merge: another write of this claim may own the rest of the word.
            let mut bytes = word.load(Ordering::Relaxed).to_ne_bytes();
            bytes[..rest.len()].copy_from_slice(rest);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
    }

    /// Copies `dst.len()` bytes of the record whose data starts at `start`.
    /// The bytes may be torn by a concurrent overwrite: the caller validates
    /// with [`Shared::overwritten`] before trusting them.
    pub(crate) fn read(&self, start: u64, dst: &mut [u8]) {
        let mut pos = start;
        let mut chunks = dst.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.word(pos).load(Ordering::Relaxed).to_ne_bytes());
            pos += 8;
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let bytes = self.word(pos).load(Ordering::Relaxed).to_ne_bytes();
            rest.copy_from_slice(&bytes[..rest.len()]);
        }
    }
}
