//! Tethered (lossless) subscribers: the cursors that publishers must not lap.
//!
//! A tethered subscriber publishes how far it has *released* the ring: every
//! slot below `seq` and every data byte below `pos` has been read and may be
//! reused. A publisher may claim record `s` with data ending at `end` only if
//! `s < seq + slots_len` and `end <= pos + capacity` for every tethered cursor.
//!
//! Publishers keep a private cache of those limits and rescan the registry
//! only when a claim would pass the cached limit or the set of tethered
//! subscribers changed, so untethered subscribers and idle tethers add no work
//! to a publish.
//!
//! Registration races with claims in flight. The registering subscriber sets
//! its bit in `active` and *then* reads the head; a publisher wins its claim on
//! the head and *then* re-reads `active`. Both sides use SeqCst, so (store
//! buffering cannot happen) either the subscriber sees the claim and starts
//! after it, or the publisher sees the new bit and honours the new cursor.
//! The cursor is registered at the first head read; a subscriber that starts
//! later (claims came in between) releases up to where it starts at once, or
//! publishers that claimed a whole ring meanwhile would wait on it for ever.

use crate::sync::{AtomicU64, Mutex, Ordering};
use crossbeam_utils::CachePadded;

/// Most tethered subscribers a ring supports at once.
pub const MAX_TETHERED: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Cursor {
    /// Slots below this seq are released. Stored with Release after the reads
    /// it covers; publishers load it with Acquire before reusing the slot.
    pub(crate) seq: AtomicU64,
    /// Data bytes below this absolute position are released (same pairing).
    pub(crate) pos: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Tether {
    /// Bit `i` set: `cursors[i]` belongs to a live tethered subscriber.
    pub(crate) active: CachePadded<AtomicU64>,
    cursors: Box<[CachePadded<Cursor>]>,
    /// Serialises registration (not on any hot path).
    register: Mutex<()>,
}

/// A publisher's private copy of the tethered limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The `active` mask these limits were computed for.
    pub(crate) active: u64,
    /// Claims must have `seq < seq_limit`.
    pub(crate) seq_limit: u64,
    /// Claims must end at or before `pos_limit`.
    pub(crate) pos_limit: u64,
}

impl Limits {
    pub(crate) const UNLIMITED: Limits = Limits {
        active: 0,
        seq_limit: u64::MAX,
        pos_limit: u64::MAX,
    };

    #[inline]
    pub(crate) fn allow(&self, seq: u64, end: u64) -> bool {
        seq < self.seq_limit && end <= self.pos_limit
    }
}

impl Tether {
    pub(crate) fn new() -> Self {
        Self {
            active: CachePadded::new(AtomicU64::new(0)),
            cursors: (0..MAX_TETHERED)
                .map(|_| CachePadded::new(Cursor::default()))
                .collect(),
            register: Mutex::new(()),
        }
    }

    pub(crate) fn cursor(&self, index: usize) -> &Cursor {
        &self.cursors[index]
    }

    /// Recomputes the limits from every active cursor.
    pub(crate) fn scan(&self, active: u64, slots_len: u64, capacity: u64) -> Limits {
        let mut limits = Limits {
            active,
            ..Limits::UNLIMITED
        };
        let mut bits = active;
        while bits != 0 {
            let cursor = &self.cursors[bits.trailing_zeros() as usize];
            bits &= bits - 1;
            // Acquire: pairs with the subscriber's Release in `release`, so its
            // reads of what it released happen before our overwrite.
            let seq = cursor.seq.load(Ordering::Acquire);
            let pos = cursor.pos.load(Ordering::Acquire);
            limits.seq_limit = limits.seq_limit.min(seq.saturating_add(slots_len));
            limits.pos_limit = limits.pos_limit.min(pos.saturating_add(capacity));
        }
        limits
    }

    /// Claims a free cursor, starting it at `(seq, pos)`, and returns its index;
    /// `None` if all [`MAX_TETHERED`] are taken. The caller must read the head
    /// again afterwards (SeqCst) and start reading there.
    pub(crate) fn register(&self, seq: u64, pos: u64) -> Option<usize> {
        let _guard = self.register.lock();
        let free = !self.active.load(Ordering::Relaxed);
        if free == 0 {
            return None;
        }
        let index = free.trailing_zeros() as usize;
        let cursor = &self.cursors[index];
        cursor.seq.store(seq, Ordering::Relaxed);
        cursor.pos.store(pos, Ordering::Relaxed);
        // SeqCst: publishes the cursor values (release part) and is the store
        // side of the store-buffering pair described in the module docs.
        self.active.fetch_or(1 << index, Ordering::SeqCst);
        Some(index)
    }

    pub(crate) fn unregister(&self, index: usize) {
        let _guard = self.register.lock();
        // Release: our last reads happen before any publisher that sees the
        // bit cleared and stops honouring the cursor.
        self.active.fetch_and(!(1 << index), Ordering::Release);
    }
}
