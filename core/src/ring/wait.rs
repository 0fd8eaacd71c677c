//! How blocked threads wait and get woken: wait strategies, the parked-thread
//! condvar, and doorbells (eventfds an event loop can poll).
//!
//! Coalescing: a publish checks one counter (`sleepers`) and makes no syscall
//! and takes no lock unless someone is actually asleep or armed. A thread
//! that publishes a run of events can also hold its wake-ups back
//! ([`hold`], behind [`super::Ring::with_held_wakes`]): its commits then
//! wake no one until the hold ends or the [`HOLD_MAX`]th of them, and a
//! sleeper woken once finds the whole run instead of its first event.
//!
//! Lost wake-ups are excluded by a store-buffering pair: a sleeper increments
//! `sleepers` (SeqCst) and then re-checks for work with a SeqCst load (or
//! after a SeqCst fence); the waker publishes work and then loads `sleepers`
//! (SeqCst, or after a SeqCst fence). One of the two must see the other. A
//! SeqCst load of one location does not order the Acquire loads after it, so
//! a re-check that reads several (a publisher scanning tether cursors) starts
//! with a fence. Loom models both sides (`core/tests/loom.rs`).

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
#[cfg(not(loom))]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_utils::{Backoff, CachePadded};

use crate::sync::{AtomicBool, AtomicUsize, Condvar, Mutex, Ordering};

/// How a blocking call waits for its condition (data for a subscriber, room
/// for a publisher held back by a tethered subscriber).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Spin on the CPU: lowest latency, burns a core.
    BusySpin,
    /// Spin briefly, then `yield` to the scheduler (crossbeam `Backoff`).
    #[default]
    SpinYield,
    /// Spin briefly, then sleep on a condvar until woken by the other side.
    Park,
}

/// Sleepers of one kind (subscribers waiting for data, or publishers waiting
/// for room) and the means to wake them.
#[derive(Debug)]
pub(crate) struct Waiters {
    /// Parked threads plus armed doorbells.
    sleepers: CachePadded<AtomicUsize>,
    lock: Mutex<()>,
    cond: Condvar,
    doorbells: Mutex<Vec<Arc<DoorbellInner>>>,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Self {
            sleepers: CachePadded::new(AtomicUsize::new(0)),
            lock: Mutex::new(()),
            cond: Condvar::new(),
            doorbells: Mutex::new(Vec::new()),
        }
    }

    /// Wakes every sleeper, if there is any. The caller has made its work
    /// visible with a SeqCst operation before this call.
    #[inline]
    pub(crate) fn wake(&self) {
        // SeqCst: the load side of the store-buffering pair with the
        // sleeper's increment in `wait` / `arm` (module docs).
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.wake_all();
        }
    }

    /// [`wake`](Self::wake) after a commit, unless this thread holds the
    /// wake-ups of these waiters (then every [`HOLD_MAX`]th commit wakes).
    #[inline]
    pub(crate) fn wake_after_commit(&self) {
        let held = HELD.with(|h| {
            if !std::ptr::eq(h.waiters.get(), self) {
                return false;
            }
            let commits = h.commits.get() + 1;
            let held = commits < HOLD_MAX;
            h.commits.set(if held { commits } else { 0 });
            held
        });
        if !held {
            self.wake();
        }
    }

    #[cold]
    fn wake_all(&self) {
        drop(self.lock.lock());
        self.cond.notify_all();
        for bell in self.doorbells.lock().iter() {
            // AcqRel: only one waker rings a given arming.
            if bell.armed.swap(false, Ordering::AcqRel) {
                self.sleepers.fetch_sub(1, Ordering::Relaxed);
                bell.ring();
            }
        }
    }

    /// Waits with `strategy` until `ready()` holds or `deadline` passes.
    /// Returns whether `ready()` held. `ready` must read the shared state with
    /// SeqCst (or after a SeqCst fence) for the wake-up protocol to hold.
    pub(crate) fn wait(
        &self,
        strategy: WaitStrategy,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        let backoff = Backoff::new();
        loop {
            if ready() {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            match strategy {
                WaitStrategy::BusySpin => std::hint::spin_loop(),
                WaitStrategy::SpinYield => backoff.snooze(),
                // Loom: the spin phase only multiplies the schedules; park at once.
                WaitStrategy::Park if !cfg!(loom) && !backoff.is_completed() => backoff.snooze(),
                WaitStrategy::Park => return self.park(deadline, ready),
            }
        }
    }

    fn park(&self, deadline: Option<Instant>, mut ready: impl FnMut() -> bool) -> bool {
        // SeqCst: the store side of the pair with `wake`'s load.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock();
        let result = loop {
            if ready() {
                break true;
            }
            match deadline {
                Some(d) => {
                    if self.cond.wait_until(&mut guard, d).timed_out() {
                        break ready();
                    }
                }
                None => self.cond.wait(&mut guard),
            }
        };
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Arms `bell`; the caller then re-checks for work (SeqCst) before sleeping.
    pub(crate) fn arm(&self, bell: &DoorbellInner) {
        if !bell.armed.swap(true, Ordering::AcqRel) {
            // SeqCst: the store side of the pair with `wake`'s load.
            self.sleepers.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn add_doorbell(&self, bell: Arc<DoorbellInner>) {
        self.doorbells.lock().push(bell);
    }

    pub(crate) fn remove_doorbell(&self, bell: &Arc<DoorbellInner>) {
        self.doorbells.lock().retain(|b| !Arc::ptr_eq(b, bell));
        if bell.armed.swap(false, Ordering::AcqRel) {
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The held commit that wakes the sleepers at once (and starts the count
/// again): a hold over a long run of publishes (a connection that keeps
/// sending) leaves at most `HOLD_MAX - 1` of them unannounced.
pub(crate) const HOLD_MAX: u32 = 64;

/// This thread's hold on wake-ups.
struct Held {
    /// The waiters whose wake-ups are held; null when none are.
    waiters: Cell<*const Waiters>,
    /// Commits since they were last woken.
    commits: Cell<u32>,
}

// A model thread is not an OS thread: under loom each gets its own copy
// only through loom's macro.
#[cfg(not(loom))]
std::thread_local! {
    static HELD: Held = const {
        Held {
            waiters: Cell::new(std::ptr::null()),
            commits: Cell::new(0),
        }
    };
}
#[cfg(loom)]
loom::thread_local! {
    static HELD: Held = Held {
        waiters: Cell::new(std::ptr::null()),
        commits: Cell::new(0),
    };
}

/// What a hold replaced: the hold it is nested in, if any.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OuterHold {
    waiters: *const Waiters,
    commits: u32,
}

/// Holds back the wake-ups of this thread's commits to `waiters`' ring until
/// [`release`].
pub(crate) fn hold(waiters: &Waiters) -> OuterHold {
    HELD.with(|h| OuterHold {
        waiters: h.waiters.replace(waiters),
        commits: h.commits.replace(0),
    })
}

/// Ends the hold that [`hold`] returned `outer` for, restoring `outer`, and
/// wakes the sleepers if a commit went unannounced.
pub(crate) fn release(waiters: &Waiters, outer: OuterHold) {
    let unannounced = HELD.with(|h| {
        h.waiters.set(outer.waiters);
        h.commits.replace(outer.commits) > 0
    });
    if unannounced {
        // No fence: each held commit's claim stored the head with SeqCst
        // before this SeqCst load of `sleepers`, in this thread, which is
        // the publisher's side of the pair (module docs), as it is when a
        // commit wakes at once.
        waiters.wake();
    }
}

/// Wakes the sleepers now if this thread's hold on `waiters` left a commit
/// unannounced, and keeps the hold: for a publisher about to block (on a
/// sync), so that no one waits for its wait.
pub(crate) fn announce_held(waiters: &Waiters) {
    let unannounced =
        HELD.with(|h| std::ptr::eq(h.waiters.get(), waiters) && h.commits.replace(0) > 0);
    if unannounced {
        waiters.wake();
    }
}

/// The eventfd behind a [`super::Doorbell`], and whether it is armed.
#[derive(Debug)]
pub(crate) struct DoorbellInner {
    fd: EventFd,
    armed: AtomicBool,
}

impl DoorbellInner {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            fd: EventFd::new()?,
            armed: AtomicBool::new(false),
        })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.raw_fd()
    }

    fn ring(&self) {
        self.fd.ring();
    }

    /// Resets the eventfd so the poller sees it readable again only after the
    /// next ring. Safe to call when it was not rung.
    pub(crate) fn clear(&self) {
        self.fd.clear();
    }

    /// Blocks until the doorbell is readable, as a poller would (loom only).
    #[cfg(loom)]
    pub(crate) fn wait_readable(&self) {
        self.fd.wait_readable();
    }
}

/// A non-blocking eventfd.
#[cfg(not(loom))]
#[derive(Debug)]
struct EventFd(OwnedFd);

#[cfg(not(loom))]
impl EventFd {
    fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. EAGAIN
        // (counter saturated) still leaves the fd readable, which is all we need.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own
        // non-blocking eventfd; EAGAIN just means it was not rung.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }
}

/// Loom stand-in for the eventfd: its counter under a loom mutex, and a
/// condvar for the poller. The kernel orders an eventfd's write before the
/// read that sees it; the mutex gives the model the same happens-before.
#[cfg(loom)]
#[derive(Debug)]
struct EventFd {
    count: Mutex<u64>,
    readable: Condvar,
}

#[cfg(loom)]
impl EventFd {
    fn new() -> io::Result<Self> {
        Ok(Self {
            count: Mutex::new(0),
            readable: Condvar::new(),
        })
    }

    /// No descriptor exists in a model.
    fn raw_fd(&self) -> RawFd {
        -1
    }

    fn ring(&self) {
        *self.count.lock() += 1;
        self.readable.notify_all();
    }

    fn clear(&self) {
        *self.count.lock() = 0;
    }

    fn wait_readable(&self) {
        let mut count = self.count.lock();
        while *count == 0 {
            self.readable.wait(&mut count);
        }
    }
}
