//! The one place herald-core's atomics come from, so that `cfg(loom)` can
//! swap in loom's model-checked versions for every lock-free protocol in the
//! crate (the ring's, the log's segment publication, the broker's counters).
//! Nothing in the crate imports `std::sync::atomic` directly.
//!
//! Outside the model even so:
//! - the log's record bytes: plain memory in a file mapping, written before
//!   and read after the atomics that publish them (loom checks those
//!   atomics: `count`, `offsets`, `end`, `sealed`);
//! - the log's prefault and flusher threads: real OS threads, which loom
//!   cannot schedule, so models use segments too small to prefault and no
//!   `Interval` durability.
//!
//! Run the model checks with
//! `RUSTFLAGS="--cfg loom" cargo test -p herald-core --release --test loom`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// Spin-wait hint (loom: a yield, so spinning loops stay finite in the model).
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

pub(crate) use pair::AtomicPair;

/// A pair of `u64`s updated together by one compare-and-swap: the ring's
/// claim head `(seq, pos)`.
#[cfg(not(loom))]
mod pair {
    use portable_atomic::AtomicU128;
    use std::sync::atomic::Ordering;

    /// Two `u64`s in one 128-bit atomic (`cmpxchg16b` on x86-64, `casp` on aarch64).
    #[derive(Debug)]
    pub(crate) struct AtomicPair(AtomicU128);

    const fn pack(hi: u64, lo: u64) -> u128 {
        ((hi as u128) << 64) | lo as u128
    }
    const fn unpack(v: u128) -> (u64, u64) {
        ((v >> 64) as u64, v as u64)
    }

    impl AtomicPair {
        pub(crate) fn new(hi: u64, lo: u64) -> Self {
            Self(AtomicU128::new(pack(hi, lo)))
        }
        pub(crate) fn load(&self, order: Ordering) -> (u64, u64) {
            unpack(self.0.load(order))
        }
        /// Replaces `current` with `new` if it still holds; returns the value
        /// seen otherwise. Weak: it may fail even though `current` holds (and
        /// then return `current`). Weak is right because every caller retries
        /// in a loop from the value returned: a spurious failure costs one more
        /// turn of that loop, where the strong form would add a loop of its own
        /// on LL/SC targets (`ldxp`/`stxp` on aarch64 without LSE). On x86-64
        /// (`cmpxchg16b`) both forms are the same instruction.
        pub(crate) fn compare_exchange_weak(
            &self,
            current: (u64, u64),
            new: (u64, u64),
            success: Ordering,
            failure: Ordering,
        ) -> Result<(), (u64, u64)> {
            self.0
                .compare_exchange_weak(
                    pack(current.0, current.1),
                    pack(new.0, new.1),
                    success,
                    failure,
                )
                .map(|_| ())
                .map_err(unpack)
        }
    }
}

/// Loom has no 128-bit atomic. Model runs use tiny values, so the pair is
/// packed 32/32 into one loom `AtomicU64`: the same single-location atomicity
/// and the same orderings as the double-width CAS, fully checked by the model.
#[cfg(loom)]
mod pair {
    use loom::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug)]
    pub(crate) struct AtomicPair {
        value: AtomicU64,
        /// Whether the next `compare_exchange_weak` fails spuriously. A std
        /// atomic on purpose: bookkeeping of the model, not shared state of
        /// the protocol (loom runs one thread at a time, deterministically).
        fail_next: std::sync::atomic::AtomicBool,
    }

    fn pack(hi: u64, lo: u64) -> u64 {
        assert!(hi < 1 << 32 && lo < 1 << 32, "loom models use small values");
        (hi << 32) | lo
    }
    fn unpack(v: u64) -> (u64, u64) {
        (v >> 32, v & 0xffff_ffff)
    }

    impl AtomicPair {
        pub(crate) fn new(hi: u64, lo: u64) -> Self {
            Self {
                value: AtomicU64::new(pack(hi, lo)),
                fail_next: std::sync::atomic::AtomicBool::new(true),
            }
        }
        pub(crate) fn load(&self, order: Ordering) -> (u64, u64) {
            unpack(self.value.load(order))
        }
        /// Loom's own `compare_exchange_weak` never fails spuriously, so this
        /// one does, on every other attempt (the first included): a failed
        /// weak CAS is a load with the `failure` ordering that may return
        /// `current` itself. Every model thus runs the callers' retry paths.
        pub(crate) fn compare_exchange_weak(
            &self,
            current: (u64, u64),
            new: (u64, u64),
            success: Ordering,
            failure: Ordering,
        ) -> Result<(), (u64, u64)> {
            use std::sync::atomic::Ordering::Relaxed;
            if self.fail_next.fetch_xor(true, Relaxed) {
                return Err(unpack(self.value.load(failure)));
            }
            self.value
                .compare_exchange(
                    pack(current.0, current.1),
                    pack(new.0, new.1),
                    success,
                    failure,
                )
                .map(|_| ())
                .map_err(unpack)
        }
    }
}
