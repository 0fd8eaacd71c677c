//! Making appended records durable: group commit for `Always`, the
//! background flusher for `Interval`.
//!
//! Group commit: an appender that needs sequence `s` durable either finds it
//! already durable, waits for the sync in flight, or becomes the leader: it
//! snapshots the last committed sequence, syncs every segment's unsynced
//! committed bytes, then publishes the new durable sequence and wakes all
//! waiters. Every appender whose record was committed before the leader's
//! snapshot is covered by that one sync.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{LogError, Shared};
use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, Ordering};

#[derive(Debug)]
struct State {
    /// Every sequence `<= durable` is on stable storage.
    durable: u64,
    /// A leader is syncing right now.
    syncing: bool,
    /// A sync failed: the log is poisoned.
    failed: bool,
}

/// Group-commit coordination.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
    /// Completed syncs (for tests and stats).
    pub(crate) syncs: AtomicU64,
}

impl GroupCommit {
    pub(crate) fn new(durable: u64) -> Self {
        GroupCommit {
            state: Mutex::new(State {
                durable,
                syncing: false,
                failed: false,
            }),
            done: Condvar::new(),
            syncs: AtomicU64::new(0),
        }
    }

    /// Fails every present and later wait: a sync outside the group
    /// commit failed (the caller poisons the log).
    pub(crate) fn fail(&self) {
        self.state.lock().failed = true;
        self.done.notify_all();
    }

    /// Highest durable sequence.
    pub(crate) fn durable(&self) -> u64 {
        self.state.lock().durable
    }

    /// Returns once every sequence `<= seq` is durable.
    pub(crate) fn wait_durable(&self, shared: &Shared, seq: u64) -> Result<(), LogError> {
        let mut st = self.state.lock();
        loop {
            if st.failed {
                return Err(LogError::Poisoned);
            }
            if st.durable >= seq {
                return Ok(());
            }
            if st.syncing {
                self.done.wait(&mut st);
                continue;
            }
            st.syncing = true;
            drop(st);
            let result = shared.sync_committed();
            st = self.state.lock();
            st.syncing = false;
            match result {
                Ok(target) => {
                    st.durable = st.durable.max(target);
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    st.failed = true;
                    shared.poison();
                    self.done.notify_all();
                    return Err(e);
                }
            }
            self.done.notify_all();
        }
    }
}

/// The `Interval` policy's background thread.
#[derive(Debug)]
pub(crate) struct Flusher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Flusher {
    pub(crate) fn start(shared: Arc<Shared>, every: Duration) -> Result<Self, LogError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("herald-log-flush".into())
            .spawn(move || {
                // Acquire: pairs with the Release store in `Flusher::stop`.
                while !stop2.load(Ordering::Acquire) {
                    thread::park_timeout(every);
                    let last = shared.next_seq().saturating_sub(1);
                    if shared.group.wait_durable(&shared, last).is_err() {
                        break; // poisoned: appends now fail; nothing more to do
                    }
                }
            })
            .map_err(|e| LogError::io("starting the flusher thread", None, e))?;
        Ok(Flusher {
            stop,
            handle: Some(handle),
        })
    }

    pub(crate) fn stop(&mut self) {
        // Release: pairs with the Acquire load in the flusher loop.
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}
