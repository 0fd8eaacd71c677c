//! A lock-free, zero-allocation broadcast ring of variable-length records.
//!
//! # Shape
//! - **Data**: `capacity` bytes (a power of two) of `AtomicU64` words. A record's
//!   payload is contiguous, 8-byte aligned, and never straddles the end: one
//!   that would is placed at the start of the next lap instead.
//! - **Slots**: one per sequence number (`seq & (slots - 1)`), holding the
//!   record's position, length and commit stamp. Headers live here, not among
//!   the data bytes, so no payload can ever be mistaken for a header.
//! - **Head**: `(next seq, next byte)`, one 128-bit atomic: the end of the
//!   latest claim.
//! - **Written watermark**: `(seq, end)`: every record below `seq` is
//!   committed. It lets a publisher prove no older-lap writer is still writing
//!   the bytes it is about to reuse.
//!
//! # Publishing: claim → write → commit
//! 1. **Claim** `(seq, start..end)` by compare-and-swap of the head from
//!    `(seq, pos)` to `(seq + 1, end)`: lock-free, one CAS when uncontended.
//!    Tethered subscribers are checked first (see [`tether`](self)'s docs).
//! 2. Wait until the watermark shows that the previous users of this slot and
//!    of these bytes (one lap back) have committed. This never waits for a
//!    subscriber; it waits only for a publisher that stalled between claim and
//!    commit for a whole lap of other publishes. Keep claims short.
//! 3. `fence(Release)`, then **write** the payload and the slot's position and
//!    length with relaxed atomic stores.
//! 4. **Commit**: store the slot's stamp `seq·2 + 1` with Release, then wake
//!    sleepers if any are registered (one load when none are), unless the
//!    publishing thread holds its wake-ups ([`Ring::with_held_wakes`]):
//!    then the end of the hold wakes them, after the last of its commits,
//!    and so does every 64th held commit, and a broker publish about to
//!    wait for a sync.
//!
//! **A single publisher** ([`Ring::with_single_publisher`], the broker's
//! ring: its publishes are already serialised by its publish lock) is the
//! only thread that moves the head, so its claim is a SeqCst *store* of
//! `(seq + 1, end)` instead of the compare-and-swap, and it skips step 2:
//! every older claim was its own and committed (or aborted) before its next
//! claim began. Everything else, the tether check, the frontier, the fence
//! and the commit, is the same, and so is what readers see. The store stays
//! SeqCst because it is still the store side of the wake-up and tether
//! pairs below. [`Ring::publisher`] refuses to make a second publisher for
//! such a ring.
//!
//! # Reading and why it is sound
//! A subscriber at `seq` loads the slot's stamp with Acquire. Below the
//! expected stamp: not committed yet. Above: it was lapped. Equal: it copies
//! the position, length and payload with relaxed atomic loads, issues
//! `fence(Acquire)`, and re-reads the head. If the head shows a claim that
//! reuses the slot (`head.seq > seq + slots`) or the bytes
//! (`head.pos > pos + capacity`), the copy may be torn and is discarded as
//! [`Lagged`]; otherwise it is exactly what the publisher committed.
//!
//! This is a seqlock whose "sequence" is the claim head, and it is sound under
//! the Rust (C++20) memory model:
//! - every shared byte is accessed atomically, so a racing overwrite is never
//!   a data race, only a value we may have to throw away;
//! - if any value we copied was stored by a later claim's publisher, that
//!   publisher's `fence(Release)` (after its claim CAS, before its stores)
//!   synchronises with our `fence(Acquire)` (after our loads), so its claim
//!   happens before our re-read of the head, which therefore sees it, by
//!   read-read coherence, and we discard the copy;
//! - if we copied nothing from a later claim, every value came from the
//!   committing publisher (whose stores happen before our Acquire of the stamp)
//!   and no older-lap writer can interfere, since step 2 proved they finished.
//!
//! A lapped subscriber resumes at the oldest record that is an eighth of the
//! ring away from being overwritten and is told `Lagged { missed_from,
//! next_available }`: exactly the sequence numbers it will never see.
//!
//! # What is model-checked, and what is only argued
//! Loom (`core/tests/loom.rs`: every schedule with up to two preemptions as
//! scripts/test runs it, on rings of two to four slots, the weak CAS failing
//! spuriously) checks:
//! - `concurrent_publishers_get_distinct_sequences_and_readers_see_whole_records`:
//!   claim and commit between two publishers;
//! - `a_reader_racing_an_overwrite_never_returns_torn_bytes` and
//!   `a_reader_racing_a_slot_reuse_never_returns_another_record`: the
//!   validation above, against a lap of the bytes and of the slots;
//! - each of these two and each model below with one publisher has a twin
//!   whose name says `single`, run with [`Ring::with_single_publisher`]'s
//!   publisher: the stored claim against readers, skips, tethers and
//!   sleepers;
//! - `a_publisher_lapping_a_stalled_publisher_waits_for_its_commit`: step 2;
//! - `a_reader_racing_a_skip_that_jumps_the_head_sees_only_real_records_or_lags`:
//!   [`Publisher::skip_to`]'s jump of the head and the watermark;
//! - `a_tether_registering_while_a_publisher_publishes_is_never_lapped`: tether
//!   registration racing claims, and a publisher parked for room woken by the
//!   tether's releases (`tether`, `wait`);
//! - `a_parked_subscriber_is_woken_by_a_concurrent_publish` and
//!   `an_armed_doorbell_is_rung_by_a_concurrent_publish`: no lost wake-up
//!   (the eventfd is a loom stand-in);
//! - `a_doorbell_armed_during_a_held_run_is_rung_when_the_hold_ends`: no
//!   lost wake-up when the publisher holds its wake-ups over two publishes.
//!
//! Argued in prose only (the proptest model and the stress test exercise
//! them, not exhaustively): the resume point and exact [`Lagged`] ranges; the
//! frontier's rounding at real sizes; unregistration, several tethers or
//! doorbells, and a sleeper that parks more than once (loom reports false
//! lost wake-ups there: see `core/tests/loom.rs`); timeouts; the spinning
//! wait strategies.

mod layout;
mod publisher;
mod subscriber;
mod tether;
mod wait;

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use layout::Shared;
use wait::DoorbellInner;

pub use publisher::{Claim, Publisher, SinglePublisher};
pub use subscriber::Subscriber;
pub use tether::MAX_TETHERED;
pub use wait::WaitStrategy;

use crate::sync::Ordering;

/// How to size a [`Ring`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Data bytes, a power of two, at least 64.
    pub capacity: usize,
    /// The largest payload accepted, at most `capacity / 4`.
    pub max_record: usize,
    /// Record slots, a power of two; `None` means `capacity / 64` (at least 2).
    /// The ring holds at most this many records, whatever their size.
    pub slots: Option<usize>,
    /// The sequence number of the first record published (the broker starts
    /// the ring where its log ends).
    pub first_seq: u64,
}

impl Default for RingConfig {
    /// 16 MiB of data, records up to 64 KiB, 262 144 slots.
    fn default() -> Self {
        Self {
            capacity: 16 << 20,
            max_record: 64 << 10,
            slots: None,
            first_seq: 0,
        }
    }
}

/// A [`RingConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfigError(String);

impl fmt::Display for RingConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid ring configuration: {}", self.0)
    }
}

impl std::error::Error for RingConfigError {}

/// Why a record was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// The payload exceeds the ring's `max_record`.
    TooLarge {
        /// Length of the refused payload.
        len: usize,
        /// The ring's limit.
        max: usize,
    },
    /// A tethered subscriber has not read far enough to make room
    /// (only from the `try_` calls; the others wait).
    Full,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(
                f,
                "record of {len} bytes exceeds the ring's maximum of {max}"
            ),
            Self::Full => write!(f, "ring is full: a tethered subscriber has not caught up"),
        }
    }
}

impl std::error::Error for PublishError {}

/// A subscriber was lapped: sequence numbers `missed_from..next_available`
/// were overwritten before it read them, and reading resumes at
/// `next_available`. (Aborted claims in that range are counted too.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged {
    /// The first sequence number lost.
    pub missed_from: u64,
    /// The sequence number the subscriber reads next.
    pub next_available: u64,
}

impl Lagged {
    /// How many sequence numbers were lost.
    pub fn missed(&self) -> u64 {
        self.next_available - self.missed_from
    }
}

/// Why a read returned no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// No committed record at the cursor yet.
    Empty,
    /// The timeout passed with no record.
    Timeout,
    /// The subscriber was lapped; the next read continues at `next_available`.
    Lagged(Lagged),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "no record available"),
            Self::Timeout => write!(f, "timed out waiting for a record"),
            Self::Lagged(l) => {
                write!(
                    f,
                    "lagged: missed records {}..{}",
                    l.missed_from, l.next_available
                )
            }
        }
    }
}

impl std::error::Error for RecvError {}

/// The broadcast ring. Cheap to clone: clones share the same ring.
///
/// # Example
/// Every subscriber sees every record published after it subscribed; a
/// subscriber that falls a whole ring behind is told what it missed
/// ([`RecvError::Lagged`]) instead of slowing the publisher.
/// ```
/// use herald_core::ring::RecvError;
/// use herald_core::{Ring, RingConfig};
///
/// let config = RingConfig { capacity: 4096, max_record: 1024, ..RingConfig::default() };
/// let ring = Ring::new(config)?;
/// let mut a = ring.subscribe();
/// let mut b = ring.subscribe();
/// let mut publisher = ring.publisher();
/// let first = publisher.publish(b"hello")?;
/// publisher.publish(b"world")?;
///
/// let mut buf = Vec::new();
/// assert_eq!(a.try_recv(&mut buf)?, first);
/// assert_eq!(buf, b"hello");
/// // Or borrowed, without a copy:
/// assert_eq!(b.try_read(|seq, bytes| (seq, bytes.len()))?, (first, 5));
/// assert_eq!(b.try_read(|_, bytes| bytes.to_vec())?, b"world");
/// assert!(matches!(b.try_recv(&mut buf), Err(RecvError::Empty)));
///
/// // A slow subscriber is lapped, not waited for.
/// for _ in 0..100 {
///     publisher.publish(&[0; 512])?;
/// }
/// let mut slow = a;
/// match slow.try_recv(&mut buf) {
///     Err(RecvError::Lagged(lag)) => assert!(lag.missed() > 0),
///     other => panic!("expected a lag, got {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Ring {
    shared: Arc<Shared>,
}

impl Ring {
    /// Creates a ring that any number of publishers share.
    pub fn new(config: RingConfig) -> Result<Ring, RingConfigError> {
        Self::create(config, false)
    }

    /// Creates a ring with its one and only publisher. That publisher claims
    /// with a plain store of the head instead of a compare-and-swap and never
    /// waits for an older claim (all of them were its own and are finished),
    /// which is what a caller that already serialises its publishes (the
    /// broker, under its publish lock) pays for nothing otherwise.
    /// [`Ring::publisher`] panics on such a ring.
    pub fn with_single_publisher(
        config: RingConfig,
    ) -> Result<(Ring, SinglePublisher), RingConfigError> {
        let ring = Self::create(config, true)?;
        let publisher = SinglePublisher::new(ring.shared.clone());
        Ok((ring, publisher))
    }

    fn create(config: RingConfig, single_publisher: bool) -> Result<Ring, RingConfigError> {
        let RingConfig {
            capacity,
            max_record,
            slots,
            first_seq,
        } = config;
        let bad = |why: String| Err(RingConfigError(why));
        if !capacity.is_power_of_two() || capacity < 64 {
            return bad(format!(
                "capacity {capacity} must be a power of two and at least 64"
            ));
        }
        if capacity as u64 > 1 << 40 {
            return bad(format!("capacity {capacity} exceeds 1 TiB"));
        }
        if max_record == 0 || max_record > capacity / 4 {
            return bad(format!(
                "max_record {max_record} must be between 1 and capacity/4 = {}",
                capacity / 4
            ));
        }
        let slots = slots.unwrap_or((capacity / 64).max(2));
        if !slots.is_power_of_two() || slots < 2 || slots as u64 > 1 << 32 {
            return bad(format!(
                "slots {slots} must be a power of two between 2 and 2^32"
            ));
        }
        if first_seq >= 1 << 62 {
            return bad(format!("first_seq {first_seq} must be below 2^62"));
        }
        let shared = Shared::new(
            capacity as u64,
            slots as u64,
            max_record as u64,
            first_seq,
            single_publisher,
        );
        Ok(Ring {
            shared: Arc::new(shared),
        })
    }

    /// The ring's configuration.
    pub fn config(&self) -> RingConfig {
        let s = &*self.shared;
        RingConfig {
            capacity: s.capacity as usize,
            max_record: s.max_record as usize,
            slots: Some(s.slots_len as usize),
            first_seq: s.first_seq,
        }
    }

    /// A new publisher handle (one per publishing thread).
    ///
    /// # Panics
    /// On a ring made by [`Ring::with_single_publisher`], whose one publisher
    /// must stay the only one.
    pub fn publisher(&self) -> Publisher {
        assert!(
            !self.shared.single_publisher,
            "this ring has a single publisher; no other may be made"
        );
        Publisher::new(self.shared.clone(), WaitStrategy::default())
    }

    /// The sequence number the next claim will get.
    pub fn next_seq(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire).0
    }

    /// An untethered subscriber that starts with the next record published.
    pub fn subscribe(&self) -> Subscriber {
        Subscriber::new(self.shared.clone(), self.next_seq(), None)
    }

    /// An untethered subscriber whose first read is record `seq`, which may
    /// also be one not yet published (reads then wait for it). If `seq` was
    /// already overwritten, or precedes the ring's `first_seq`, the first read
    /// reports [`Lagged`] with exactly what is missing.
    pub fn subscribe_at(&self, seq: u64) -> Subscriber {
        let mut sub = Subscriber::new(self.shared.clone(), seq.max(self.shared.first_seq), None);
        if seq < self.shared.first_seq {
            sub.set_pending_lag(Lagged {
                missed_from: seq,
                next_available: self.shared.first_seq,
            });
        }
        sub
    }

    /// A tethered (lossless) subscriber that starts with the next record
    /// published. Publishers wait for it (or get [`PublishError::Full`]) rather
    /// than overwrite what it has not read. `None` if [`MAX_TETHERED`] exist.
    pub fn subscribe_tethered(&self) -> Option<Subscriber> {
        let shared = &*self.shared;
        // SeqCst loads on both sides of the registration: see `tether` docs.
        let (seq, pos) = shared.head.load(Ordering::SeqCst);
        let index = shared.tether.register(seq, pos)?;
        let (start, start_pos) = shared.head.load(Ordering::SeqCst);
        let mut sub = Subscriber::new(self.shared.clone(), start, Some(index));
        if start != seq {
            // Claims landed between the two loads: release them, or a full
            // ring of them leaves publishers waiting on a cursor this
            // subscriber would only move by reading what they cannot publish.
            sub.release_start(start_pos);
        }
        Some(sub)
    }

    /// A doorbell: an eventfd that an event loop (mio, libuv, epoll) can poll.
    /// Arm it with [`Subscriber::arm`]; a publish then makes it readable.
    pub fn doorbell(&self) -> io::Result<Doorbell> {
        let inner = Arc::new(DoorbellInner::new()?);
        self.shared.waiters.add_doorbell(inner.clone());
        Ok(Doorbell {
            inner,
            shared: self.shared.clone(),
        })
    }

    /// Runs `f` with the wake-ups of this thread's publishes to this ring
    /// held back: a sleeping subscriber (or armed doorbell) is woken once
    /// for the run, when `f` returns (or unwinds), not at its first event,
    /// so it reads the run in one go. The 64th held commit still wakes at
    /// once (and starts a new count), bounding the delay in events; `f`
    /// must not block (a broker publish that waits for a sync wakes first),
    /// or whoever waits for its events waits for that too. Parked
    /// subscribers are held as armed doorbells are. Publishes of other
    /// threads, and to other rings, are not held. Calls nest: a nested
    /// hold counts and announces its own commits, and the outer hold's
    /// count resumes after it.
    pub fn with_held_wakes<R>(&self, f: impl FnOnce() -> R) -> R {
        let _hold = WakeHold {
            outer: wait::hold(&self.shared.waiters),
            shared: &self.shared,
        };
        f()
    }

    /// Wakes the sleepers for what this thread's hold has left unannounced,
    /// keeping the hold: before the publisher blocks.
    pub(crate) fn announce_held(&self) {
        wait::announce_held(&self.shared.waiters);
    }
}

/// A hold taken by [`Ring::with_held_wakes`], which drops it when `f`
/// returns or unwinds: holds end in the reverse order they began, which
/// the thread-local record of the current hold relies on.
struct WakeHold<'a> {
    shared: &'a Shared,
    outer: wait::OuterHold,
}

impl Drop for WakeHold<'_> {
    fn drop(&mut self) {
        wait::release(&self.shared.waiters, self.outer);
    }
}

/// A pollable file descriptor that becomes readable when a record is
/// committed after it was armed ([`Subscriber::arm`]). One doorbell can serve
/// many subscribers of the same ring. Publishes write to it only while it is
/// armed, once per arming.
#[derive(Debug)]
pub struct Doorbell {
    inner: Arc<DoorbellInner>,
    shared: Arc<Shared>,
}

impl Doorbell {
    /// Consumes a pending ring so the fd stops being readable. Call it when
    /// the poller reports the fd, before reading the subscribers again.
    pub fn clear(&self) {
        self.inner.clear();
    }

    /// Blocks until the doorbell is readable, as a poller waiting on its fd
    /// would. Only in loom builds, where the fd is a model stand-in.
    #[cfg(loom)]
    pub fn wait_readable(&self) {
        self.inner.wait_readable();
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.raw_fd()
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        self.shared.waiters.remove_doorbell(&self.inner);
    }
}
