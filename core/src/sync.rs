//! The one place herald-core's atomics come from, and the locks on the paths
//! the loom models run, so that `cfg(loom)` can swap in loom's model-checked
//! versions for every lock-free protocol in the crate: the ring's claim,
//! commit, tether and wake-up protocols, the log's segment publication, the
//! broker's counters. Nothing else imports `std::sync::atomic`. The normal
//! build re-exports std's atomics and parking_lot's locks, so nothing changes
//! there; the loom types exist only under `--cfg loom`.
//!
//! Under loom, three things go beyond a re-export, each so that the model
//! checks what production does:
//! - every atomic is created with a SeqCst store of its initial value
//!   (`model` says why);
//! - `AtomicPair::compare_exchange_weak` fails spuriously, as a weak CAS may;
//! - the locks are loom's (`lock`), so a model never blocks a real thread.
//!
//! Outside the model even so:
//! - the log's record bytes: plain memory in a file mapping, written before
//!   and read after the atomics that publish them (loom checks those
//!   atomics: `count`, `offsets`, `end`, `sealed`);
//! - the log's prefault and flusher threads: real OS threads, which loom
//!   cannot schedule, so models use segments too small to prefault and no
//!   `Interval` durability;
//! - a doorbell's eventfd: a loom counter under a mutex stands in for it
//!   (`ring::wait`);
//! - timeouts: loom has no clock, so a timed wait just waits;
//! - the loom `AtomicPair`'s spurious-failure toggle: a std atomic, being
//!   bookkeeping of the model rather than state of a protocol.
//!
//! The models are listed by name in the module docs of `ring` (its
//! protocols) and `log::segment` (segment publication). Run them with
//! `RUSTFLAGS="--cfg loom" cargo test -p herald-core --release --test loom`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, Ordering};
#[cfg(loom)]
pub(crate) use model::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

#[cfg(loom)]
pub(crate) use lock::{Condvar, Mutex, RwLock};
#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex, RwLock};

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
        /// One 128-bit store (`vmovdqa` where AVX makes it atomic, else a
        /// `cmpxchg16b` loop): for a ring's single publisher, the only
        /// thread that moves the pair.
        pub(crate) fn store(&self, hi: u64, lo: u64, order: Ordering) {
            self.0.store(pack(hi, lo), order)
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
    use super::{AtomicU64, Ordering};

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
        pub(crate) fn store(&self, hi: u64, lo: u64, order: Ordering) {
            self.value.store(pack(hi, lo), order)
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

/// Loom's atomics, each created with a SeqCst store of its initial value.
///
/// Loom records an atomic's initial value as a non-SeqCst store, and a
/// SeqCst load may return any older non-SeqCst store: so it could read the
/// initial value after another thread's SeqCst store to it, which C++20 (and
/// so Rust) forbids. The wake-up and tether registration protocols are
/// store-buffering pairs of SeqCst accesses, on which that is a false
/// deadlock. The extra store changes no value and, made before the atomic is
/// shared, no synchronisation.
#[cfg(loom)]
mod model {
    use loom::sync::atomic::Ordering::SeqCst;
    use std::ops::Deref;

    macro_rules! seq_cst_initialised {
        ($($name:ident: $int:ty),*) => {$(
            #[derive(Debug)]
            pub(crate) struct $name(loom::sync::atomic::$name);

            impl $name {
                pub(crate) fn new(value: $int) -> Self {
                    let atomic = loom::sync::atomic::$name::new(value);
                    atomic.store(value, SeqCst);
                    Self(atomic)
                }
            }

            impl Default for $name {
                fn default() -> Self {
                    Self::new(<$int>::default())
                }
            }

            impl Deref for $name {
                type Target = loom::sync::atomic::$name;
                fn deref(&self) -> &Self::Target {
                    &self.0
                }
            }
        )*};
    }

    seq_cst_initialised!(AtomicBool: bool, AtomicI64: i64, AtomicU32: u32, AtomicU64: u64, AtomicUsize: usize);
}

/// Loom's locks behind parking_lot's interface (no poisoning; `Condvar::wait`
/// takes the guard by `&mut`), so that a model never blocks a real thread on
/// a lock that another model thread holds.
#[cfg(loom)]
mod lock {
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// `None` only while a [`Condvar`] wait holds the guard.
    #[derive(Debug)]
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().expect("model threads do not panic")))
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().expect("guard held")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().expect("guard held")
        }
    }

    #[derive(Debug)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }
        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().expect("model threads do not panic")
        }
        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().expect("model threads do not panic")
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    /// Whether a timed wait timed out: never, under loom (see `wait_until`).
    #[derive(Debug)]
    pub(crate) struct WaitTimeoutResult;

    impl WaitTimeoutResult {
        pub(crate) fn timed_out(&self) -> bool {
            false
        }
    }

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("guard held");
            guard.0 = Some(self.0.wait(inner).expect("model threads do not panic"));
        }
        /// Loom has no clock: waits for a notification as `wait` does, so a
        /// model that relies on a timeout deadlocks rather than passes.
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> WaitTimeoutResult {
            self.wait(guard);
            WaitTimeoutResult
        }
        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
