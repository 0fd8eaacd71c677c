//! Reading: per-subscriber cursors, seqlock-validated copies, lag recovery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout::{align8, stamp, Shared, ABORTED};
use super::wait::WaitStrategy;
use super::{Doorbell, Lagged, RecvError};
use crate::sync::{fence, Ordering};

/// A reader of a [`super::Ring`] with its own cursor.
///
/// Untethered (the default) it never holds publishers back: if it is lapped
/// it learns exactly which sequence numbers it missed ([`Lagged`]) and carries
/// on from the oldest record still in the ring. Tethered it never misses
/// anything and publishers wait for it instead.
///
/// Records are copied into a scratch buffer that grows to the largest
/// record read (at most the ring's largest record), so reading allocates
/// only when a record larger than any before arrives: a subscriber that
/// reads small records costs little memory.
#[derive(Debug)]
pub struct Subscriber {
    shared: Arc<Shared>,
    /// The sequence number of the next record to read.
    next: u64,
    scratch: Vec<u8>,
    /// Index of our cursor in the tether registry, if tethered.
    tether: Option<usize>,
    wait: WaitStrategy,
    /// A lag to report before reading (from `Ring::subscribe_at`).
    pending_lag: Option<Lagged>,
    /// Tethered: records released since parked publishers were last signalled.
    unsignalled: u32,
    /// Tethered, inside [`read_batch`](Self::read_batch): where the records
    /// read so far end, `(next seq, end pos)`, and how many they are; released
    /// once at the end of the batch rather than record by record.
    deferred: Option<(u64, u64, u32)>,
}

/// The scratch buffer's first size (it grows as larger records arrive).
const INITIAL_SCRATCH: usize = 1024;

/// How many records a tethered subscriber releases between wake-ups of
/// parked publishers.
const SIGNAL_EVERY: u32 = 64;

/// What one attempt to read the record at the cursor found.
enum Fetch {
    /// The record was copied to the scratch buffer and validated.
    Record {
        seq: u64,
        len: usize,
    },
    /// An aborted claim: nothing to deliver; the cursor moved past it.
    Skipped,
    Empty,
    Lagged(Lagged),
}

impl Subscriber {
    pub(crate) fn new(shared: Arc<Shared>, next: u64, tether: Option<usize>) -> Self {
        let scratch = vec![0u8; (shared.max_record as usize).min(INITIAL_SCRATCH)];
        Self {
            shared,
            next,
            scratch,
            tether,
            wait: WaitStrategy::default(),
            pending_lag: None,
            unsignalled: 0,
            deferred: None,
        }
    }

    pub(crate) fn set_pending_lag(&mut self, lag: Lagged) {
        self.pending_lag = Some(lag);
    }

    /// Waits (per the wait strategy) until a record at the cursor has been
    /// claimed, or `timeout` passes; returns whether one was. A read may still
    /// find it uncommitted for a moment: call it in a loop with `try_read`.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        self.wait_for_data(timeout.map(|t| Instant::now() + t))
    }

    /// Sets how [`recv`](Self::recv) and friends wait for data.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// The sequence number this subscriber will read next.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Whether this subscriber holds publishers back instead of lagging.
    pub fn is_tethered(&self) -> bool {
        self.tether.is_some()
    }

    /// Reads the next record, if one is committed, and hands it to `f`
    /// together with its sequence number.
    pub fn try_read<R>(&mut self, f: impl FnOnce(u64, &[u8]) -> R) -> Result<R, RecvError> {
        loop {
            match self.fetch(false) {
                Fetch::Record { seq, len } => return Ok(f(seq, &self.scratch[..len])),
                Fetch::Skipped => continue,
                Fetch::Empty => return Err(RecvError::Empty),
                Fetch::Lagged(lag) => return Err(RecvError::Lagged(lag)),
            }
        }
    }

    /// Reads the next record into `buf` (cleared first) and returns its
    /// sequence number. `buf` grows at most once, to the ring's largest record.
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<u64, RecvError> {
        self.try_read(|seq, bytes| {
            buf.clear();
            buf.extend_from_slice(bytes);
            seq
        })
    }

    /// Reads up to `limit` records, handing each to `f`. Stops early at the
    /// end of the committed records. Returns how many were read, or the lag
    /// if it was lapped before reading any (a lag after some records is
    /// reported by the next call). A tethered subscriber releases the batch's
    /// records to publishers once, when the call returns.
    pub fn read_batch(&mut self, limit: usize, f: impl FnMut(u64, &[u8])) -> Result<usize, Lagged> {
        let result = self.read_batch_deferred(limit, f);
        self.release_deferred();
        result
    }

    fn read_batch_deferred(
        &mut self,
        limit: usize,
        mut f: impl FnMut(u64, &[u8]),
    ) -> Result<usize, Lagged> {
        let mut count = 0;
        while count < limit {
            match self.fetch(true) {
                Fetch::Record { seq, len } => {
                    f(seq, &self.scratch[..len]);
                    count += 1;
                }
                Fetch::Skipped => {}
                Fetch::Empty => break,
                Fetch::Lagged(lag) if count == 0 => return Err(lag),
                Fetch::Lagged(lag) => {
                    // Report it on the next call: rewind so it is seen again.
                    self.next = lag.missed_from;
                    break;
                }
            }
        }
        Ok(count)
    }

    /// Blocks (per the wait strategy) until a record is read into `buf`.
    pub fn recv(&mut self, buf: &mut Vec<u8>) -> Result<u64, Lagged> {
        loop {
            match self.try_recv(buf) {
                Ok(seq) => return Ok(seq),
                Err(RecvError::Lagged(lag)) => return Err(lag),
                Err(_) => {
                    self.wait_for_data(None);
                }
            }
        }
    }

    /// Like [`recv`](Self::recv) but gives up after `timeout` with
    /// [`RecvError::Timeout`].
    pub fn recv_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<u64, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_recv(buf) {
                Err(RecvError::Empty) => {
                    if !self.wait_for_data(Some(deadline)) {
                        return Err(RecvError::Timeout);
                    }
                }
                other => return other,
            }
        }
    }

    /// Arms `doorbell` for this subscriber. Returns `true` if the caller may
    /// now sleep on the doorbell's fd (a publish will make it readable), or
    /// `false` if a record is already available or being committed, in which
    /// case the caller should read again instead of sleeping.
    pub fn arm(&self, doorbell: &Doorbell) -> bool {
        self.shared.waiters.arm(&doorbell.inner);
        !self.data_claimed()
    }

    /// Has a record at our cursor at least been claimed? SeqCst: the load side
    /// of the pair with the publisher's SeqCst claim (wake-up protocol).
    fn data_claimed(&self) -> bool {
        self.pending_lag.is_some() || self.shared.head.load(Ordering::SeqCst).0 > self.next
    }

    fn wait_for_data(&self, deadline: Option<Instant>) -> bool {
        self.shared
            .waiters
            .wait(self.wait, deadline, || self.data_claimed())
    }

    /// One attempt to read the record at `self.next`. A tethered subscriber
    /// releases it at once, or with `defer` when `release_deferred` is called.
    fn fetch(&mut self, defer: bool) -> Fetch {
        if let Some(lag) = self.pending_lag.take() {
            return Fetch::Lagged(lag);
        }
        let shared = &*self.shared;
        let seq = self.next;
        let slot = shared.slot(seq);
        // Acquire: pairs with the Release store of the stamp in `commit`.
        let found = slot.stamp.load(Ordering::Acquire);
        if found < stamp(seq) {
            self.release_deferred();
            if self.unsignalled > 0 {
                self.signal_release();
            }
            return Fetch::Empty;
        }
        if found > stamp(seq) {
            return Fetch::Lagged(self.lagged(seq));
        }
        let start = slot.pos.load(Ordering::Relaxed);
        let raw_len = slot.len.load(Ordering::Relaxed);
        // Bound the copy even if these fields were torn by an overwrite; the
        // validation below rejects such a read.
        let len = ((raw_len & !ABORTED).min(shared.max_record)) as usize;
        if raw_len & ABORTED == 0 {
            if self.scratch.len() < len {
                let grown = len.next_power_of_two().min(shared.max_record as usize);
                self.scratch.resize(grown, 0);
            }
            shared.read(start, &mut self.scratch[..len]);
        }
        // A tethered subscriber's records cannot be overwritten (publishers
        // honour its cursor), so only untethered reads need validating.
        if self.tether.is_none() {
            // Acquire: pairs with the Release fence each publisher issues after
            // winning its claim and before writing. If anything we just read
            // was written by a later claim, the frontier that claim announced
            // (before its CAS) is visible now.
            fence(Ordering::Acquire);
            let frontier = (
                shared.frontier.seq.load(Ordering::Relaxed),
                shared.frontier.pos.load(Ordering::Relaxed),
            );
            if shared.overwritten(seq, start, frontier) {
                return Fetch::Lagged(self.lagged(seq));
            }
        }
        self.next = seq + 1;
        if let Some(index) = self.tether {
            let end = start + align8(len as u64);
            if defer {
                let records = self.deferred.map_or(0, |(_, _, n)| n);
                self.deferred = Some((seq + 1, end, records + 1));
            } else {
                self.release(index, seq + 1, end, 1);
            }
        }
        if raw_len & ABORTED != 0 {
            Fetch::Skipped
        } else {
            Fetch::Record { seq, len }
        }
    }

    /// Our record `missed` was overwritten: pick where to resume and report
    /// exactly what is lost.
    #[cold]
    fn lagged(&mut self, missed: u64) -> Lagged {
        debug_assert!(self.tether.is_none(), "a tethered subscriber was lapped");
        let resume = self.resume_point(missed).max(missed + 1);
        self.next = resume;
        Lagged {
            missed_from: missed,
            next_available: resume,
        }
    }

    /// The oldest record that is likely to stay readable for a while: an
    /// eighth of the ring (slots and bytes) ahead of the overwrite frontier,
    /// twice the frontier's granularity, so that little is skipped needlessly.
    fn resume_point(&self, missed: u64) -> u64 {
        let shared = &*self.shared;
        let (head_seq, head_pos) = shared.head.load(Ordering::Relaxed);
        let lo = head_seq
            .saturating_sub(shared.slots_len - shared.slots_len / 8)
            .max(missed);
        let min_pos = head_pos.saturating_sub(shared.capacity - shared.capacity / 8);
        // Positions grow with sequence numbers: binary search for the first
        // committed record at or after `min_pos`. A slot we cannot read (not
        // yet committed, or already reused) counts as "recent enough": the
        // next read validates it anyway and reports any further loss exactly.
        let (mut lo, mut hi) = (lo, head_seq);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let slot = shared.slot(mid);
            // Acquire: pairs with `commit`'s Release, so `pos` is this record's.
            let recent = slot.stamp.load(Ordering::Acquire) != stamp(mid)
                || slot.pos.load(Ordering::Relaxed) >= min_pos;
            if recent {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// Releases everything before where this new tethered subscriber starts
    /// reading (`self.next`, data at `pos`), and wakes publishers parked on
    /// the cursor it registered with.
    pub(crate) fn release_start(&mut self, pos: u64) {
        if let Some(index) = self.tether {
            self.release(index, self.next, pos, 1);
            self.signal_release();
        }
    }

    /// Releases what [`fetch`](Self::fetch) deferred, if anything.
    fn release_deferred(&mut self) {
        if let (Some((seq, pos, records)), Some(index)) = (self.deferred.take(), self.tether) {
            self.release(index, seq, pos, records);
        }
    }

    /// Releases every slot below `seq` and byte below `pos`: `records` more
    /// records read.
    fn release(&mut self, index: usize, seq: u64, pos: u64, records: u32) {
        let cursor = self.shared.tether.cursor(index);
        // Release: pairs with the Acquire loads in `Tether::scan`: our reads of
        // these records happen before a publisher overwrites them.
        cursor.pos.store(pos, Ordering::Release);
        cursor.seq.store(seq, Ordering::Release);
        self.unsignalled += records;
        if self.unsignalled >= SIGNAL_EVERY {
            self.signal_release();
        }
    }

    /// Wakes publishers parked for room. Done every [`SIGNAL_EVERY`] records
    /// and whenever the subscriber runs out of records (so a parked publisher
    /// is never left waiting on a subscriber that is itself about to wait),
    /// not after every record: the SeqCst fence is the expensive part.
    fn signal_release(&mut self) {
        self.unsignalled = 0;
        // SeqCst fence: the store side of the wake-up pair with a publisher
        // parked in `wait_for_tether` (it re-reads with SeqCst).
        fence(Ordering::SeqCst);
        self.shared.tether_waiters.wake();
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(index) = self.tether {
            self.shared.tether.unregister(index);
            // SeqCst fence: as in `release`, so a parked publisher re-scans.
            fence(Ordering::SeqCst);
            self.shared.tether_waiters.wake();
        }
    }
}
