//! Publishing: claim → write in place → commit (see the protocol in [`super`]).

use std::sync::Arc;

use super::layout::{align8, stamp, Shared, ABORTED};
use super::tether::Limits;
use super::wait::WaitStrategy;
use super::PublishError;
use crate::sync::{fence, spin_hint, Ordering};

/// A handle that publishes into a [`super::Ring`]. Any number may publish
/// concurrently; each thread uses its own (clone it). Publishing never
/// allocates and never waits for untethered subscribers.
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
    /// The head after our last claim: the first guess for the next CAS, right
    /// whenever no other publisher claimed in between.
    guess: (u64, u64),
    /// Last `written` watermark we saw (Acquire): room we know is free of
    /// unfinished older-lap writers.
    written: (u64, u64),
    limits: Limits,
    /// The frontier as we last raised or saw it.
    frontier: (u64, u64),
    wait: WaitStrategy,
}

impl Clone for Publisher {
    fn clone(&self) -> Self {
        Publisher::new(self.shared.clone(), self.wait)
    }
}

/// The one publisher of a ring made by [`super::Ring::with_single_publisher`].
/// It publishes as a [`Publisher`] does, but claims by storing the head
/// rather than by compare-and-swap, and skips the wait for older claims to
/// commit (there are none but its own, already committed). Not `Clone`: a
/// second publisher would break both.
#[derive(Debug)]
pub struct SinglePublisher(Publisher);

impl SinglePublisher {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self(Publisher::new(shared, WaitStrategy::default()))
    }

    /// As [`Publisher::set_wait_strategy`].
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.0.set_wait_strategy(wait);
    }

    /// As [`Publisher::publish`].
    pub fn publish(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        self.0.publish(payload)
    }

    /// As [`Publisher::try_publish`].
    pub fn try_publish(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        self.0.try_publish(payload)
    }

    /// As [`Publisher::claim`].
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>, PublishError> {
        self.0.claim(len)
    }

    /// As [`Publisher::try_claim`].
    pub fn try_claim(&mut self, len: usize) -> Result<Claim<'_>, PublishError> {
        self.0.try_claim(len)
    }

    /// As [`Publisher::skip_to`]; with no claim of another in flight, the
    /// head jumps whenever no subscriber is tethered.
    pub fn skip_to(&mut self, seq: u64) {
        self.0.skip_to(seq);
    }
}

impl Publisher {
    pub(crate) fn new(shared: Arc<Shared>, wait: WaitStrategy) -> Self {
        let guess = shared.head.load(Ordering::Relaxed);
        let written = shared.written.load(Ordering::Acquire);
        Self {
            shared,
            guess,
            written,
            limits: Limits::UNLIMITED,
            frontier: (0, 0),
            wait,
        }
    }

    /// Sets how [`publish`](Self::publish) and [`claim`](Self::claim) wait for
    /// room when a tethered subscriber holds the ring back.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Copies `payload` into the ring and returns its sequence number. Waits
    /// (per the wait strategy) only if a tethered subscriber holds the ring back.
    pub fn publish(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        let mut claim = self.claim(payload.len())?;
        claim.write_at(0, payload);
        Ok(claim.commit())
    }

    /// Like [`publish`](Self::publish) but returns [`PublishError::Full`]
    /// instead of waiting for a tethered subscriber.
    pub fn try_publish(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        let mut claim = self.try_claim(payload.len())?;
        claim.write_at(0, payload);
        Ok(claim.commit())
    }

    /// Reserves `len` bytes for a record to be written in place. The record
    /// becomes visible at [`Claim::commit`]; dropping the claim aborts it.
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>, PublishError> {
        self.claim_inner(len, true)
    }

    /// Like [`claim`](Self::claim) but returns [`PublishError::Full`] instead
    /// of waiting for a tethered subscriber.
    pub fn try_claim(&mut self, len: usize) -> Result<Claim<'_>, PublishError> {
        self.claim_inner(len, false)
    }

    fn claim_inner(&mut self, len: usize, blocking: bool) -> Result<Claim<'_>, PublishError> {
        if len as u64 > self.shared.max_record {
            return Err(PublishError::TooLarge {
                len,
                max: self.shared.max_record as usize,
            });
        }
        let mut current = self.guess;
        let (seq, start, end) = loop {
            let (seq, pos) = current;
            let (start, end) = self.shared.placement(pos, len as u64);
            if !self.tether_allows(seq, end) {
                if !blocking {
                    return Err(PublishError::Full);
                }
                self.wait_for_tether(seq, end);
                current = self.shared.head.load(Ordering::Relaxed);
                continue;
            }
            let needed = self.shared.frontier_of(seq, end);
            if needed.0 > self.frontier.0 || needed.1 > self.frontier.1 {
                self.raise_frontier(needed);
            }
            // SeqCst: the claim is the store side of the store-buffering pairs
            // with tether registration and with sleeping subscribers (which
            // re-read the head with SeqCst after announcing themselves).
            if self.shared.single_publisher {
                // Nobody else moves the head, so `current` is it: a store
                // claims (still SeqCst, for the same pairs).
                self.shared.head.store(seq + 1, end, Ordering::SeqCst);
                break (seq, start, end);
            }
            match self.shared.head.compare_exchange_weak(
                current,
                (seq + 1, end),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(()) => break (seq, start, end),
                Err(actual) => current = actual,
            }
        };
        self.guess = (seq + 1, end);
        // SeqCst: pairs with `Tether::register`'s SeqCst fetch_or (module docs
        // of `tether`). A subscriber that registered after our pre-check but
        // before our claim is honoured here, by waiting.
        let active = self.shared.tether.active.load(Ordering::SeqCst);
        if active != self.limits.active && !self.tether_allows(seq, end) {
            self.wait_for_tether(seq, end);
        }
        if !self.shared.single_publisher {
            // A single publisher's older claims were its own, all finished.
            self.wait_for_written(seq, end);
        }
        // Release: pairs with the reader's Acquire fence before it re-reads the
        // head. Every store below is ordered after our claim, so a reader that
        // sees any of them also sees the claim and discards what it read.
        fence(Ordering::Release);
        Ok(Claim {
            publisher: self,
            seq,
            start,
            len: len as u64,
            done: false,
        })
    }

    /// Moves the ring's next sequence up to `seq` without publishing the
    /// ones before it (a replica skipping what its stream dropped). A
    /// subscriber at a skipped sequence skips it like an aborted record or,
    /// when the skip is longer than the ring's slots, is told it lagged from
    /// there ([`Lagged`](super::Lagged)): it never mistakes the skip for
    /// records. At most `slots` sequences are claimed and aborted: when no
    /// claim is in flight (every claim so far committed) and no subscriber
    /// is tethered, the head and the watermark first jump together to
    /// `seq - slots`, over sequences nobody claimed, which readers see only
    /// as slots overwritten by the aborted claims after the jump. Otherwise
    /// every skipped sequence is claimed and aborted.
    pub fn skip_to(&mut self, seq: u64) {
        let shared = Arc::clone(&self.shared);
        let jump_to = seq.saturating_sub(shared.slots_len);
        // SeqCst: as a claim's read of the head.
        let head = shared.head.load(Ordering::SeqCst);
        // A single publisher's claims were all its own and are finished.
        if jump_to > head.0
            && shared.tether.active.load(Ordering::SeqCst) == 0
            && (shared.single_publisher || all_committed(&shared, head))
        {
            self.jump(head, (jump_to, head.1));
        }
        while shared.head.load(Ordering::Relaxed).0 < seq {
            // A zero-length claim (never too large), aborted; it waits for
            // room only if a subscriber is tethered.
            if let Ok(claim) = self.claim(0) {
                claim.abort();
            }
        }
    }

    /// Moves the head and then the watermark from `from` to `to`, if the
    /// head is still `from` (no claim since): nothing between is claimed,
    /// everything before is committed, so both may say so.
    #[cold]
    fn jump(&mut self, from: (u64, u64), to: (u64, u64)) {
        let shared = &*self.shared;
        if shared.single_publisher {
            // SeqCst: as a single publisher's claim. The watermark is only
            // read by shared publishers, which this ring never has.
            shared.head.store(to.0, to.1, Ordering::SeqCst);
            self.guess = to;
            return;
        }
        loop {
            // SeqCst: the store side of the wake-up and tether pairs, as a
            // claim's CAS.
            match shared
                .head
                .compare_exchange_weak(from, to, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(()) => break,
                Err(actual) if actual == from => {}
                Err(_) => return,
            }
        }
        // Nothing past `from` is committed until this lands: another
        // publisher's `advance_written` stops at `from`, the first sequence
        // no claim will use.
        loop {
            // AcqRel: as `advance_written`'s CAS.
            match shared.written.compare_exchange_weak(
                from,
                to,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(()) => break,
                Err(actual) if actual == from => {}
                // Cannot happen: no claim uses `from` any more.
                Err(_) => break,
            }
        }
        self.guess = to;
        self.written = to;
    }

    /// Announces, before the claim CAS, that claims may now reach `needed`.
    /// Our own fetch_max precedes our Release fence and our writes, so any
    /// reader that sees one of our bytes also sees a frontier covering our
    /// claim. A cached value is always one our own fetch_max returned, so the
    /// same holds when we skip the announcement. Raising it for a claim that
    /// then loses its CAS only makes readers more cautious (by less than a
    /// sixteenth of a lap).
    #[cold]
    fn raise_frontier(&mut self, needed: (u64, u64)) {
        let frontier = &self.shared.frontier;
        let seq = frontier
            .seq
            .fetch_max(needed.0, Ordering::Relaxed)
            .max(needed.0);
        let pos = frontier
            .pos
            .fetch_max(needed.1, Ordering::Relaxed)
            .max(needed.1);
        self.frontier = (seq, pos);
    }

    /// Do the cached tether limits allow this claim? Rescans if they might not.
    #[inline]
    fn tether_allows(&mut self, seq: u64, end: u64) -> bool {
        let shared = &*self.shared;
        let active = shared.tether.active.load(Ordering::Relaxed);
        if active == 0 {
            self.limits = Limits::UNLIMITED;
            return true;
        }
        if active == self.limits.active && self.limits.allow(seq, end) {
            return true;
        }
        self.limits = shared
            .tether
            .scan(active, shared.slots_len, shared.capacity);
        self.limits.allow(seq, end)
    }

    #[cold]
    fn wait_for_tether(&mut self, seq: u64, end: u64) {
        let shared = self.shared.clone();
        let mut limits = self.limits;
        shared.tether_waiters.wait(self.wait, None, || {
            // SeqCst fence: pairs with the subscriber's SeqCst fence after it
            // releases its cursor (wake-up protocol in `wait`). The cursors
            // are loaded Acquire, so the fence, not a SeqCst load of `active`,
            // is what keeps this re-check from missing a release whose wake()
            // missed our registration as a sleeper.
            fence(Ordering::SeqCst);
            let active = shared.tether.active.load(Ordering::SeqCst);
            limits = shared
                .tether
                .scan(active, shared.slots_len, shared.capacity);
            limits.allow(seq, end)
        });
        self.limits = limits;
    }

    /// Waits until no unfinished write from an older lap can still land in
    /// the slot or the bytes of our claim: every record that used them is
    /// committed. Only a publisher stalled for a whole lap between its claim
    /// and its commit can make this wait.
    #[inline]
    fn wait_for_written(&mut self, seq: u64, end: u64) {
        let shared = &*self.shared;
        let room = |(w_seq, w_end): (u64, u64)| {
            w_seq + shared.slots_len > seq && w_end + shared.capacity >= end
        };
        if room(self.written) {
            return;
        }
        loop {
            self.written = advance_written(shared);
            if room(self.written) {
                return;
            }
            spin_hint();
        }
    }

    fn commit(&mut self, seq: u64, start: u64, len: u64) {
        let shared = &*self.shared;
        let slot = shared.slot(seq);
        slot.pos.store(start, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        // Release: pairs with the reader's Acquire load of the stamp; the
        // record's bytes and slot fields are visible to whoever sees it.
        slot.stamp.store(stamp(seq), Ordering::Release);
        shared.waiters.wake_after_commit();
    }
}

/// Whether every claim below `head` is committed, moving the `written`
/// watermark up to it.
fn all_committed(shared: &Shared, head: (u64, u64)) -> bool {
    let mut written = advance_written(shared);
    while written.0 < head.0 {
        let more = advance_written(shared);
        if more == written {
            break;
        }
        written = more;
    }
    written == head
}

/// Moves the `written` watermark past every committed record, helping any
/// other publisher that needs room. Returns the watermark it saw or set.
fn advance_written(shared: &Shared) -> (u64, u64) {
    // Acquire: pairs with the AcqRel CAS below from whoever advanced it last,
    // so their Acquire view of the commits is ours too.
    let mut current = shared.written.load(Ordering::Acquire);
    loop {
        let (mut seq, mut end) = current;
        // Bounded batch so one helper does not walk an unbounded stretch.
        for _ in 0..1024 {
            let slot = shared.slot(seq);
            // Acquire: pairs with `commit`'s Release; the record's writes happen
            // before anything written after we report it finished.
            if slot.stamp.load(Ordering::Acquire) != stamp(seq) {
                break;
            }
            let start = slot.pos.load(Ordering::Relaxed);
            let len = slot.len.load(Ordering::Relaxed) & !ABORTED;
            seq += 1;
            end = start + align8(len);
        }
        if seq == current.0 {
            return current;
        }
        // AcqRel: Release publishes what we saw to the next Acquire reader; a
        // failure means someone advanced it meanwhile (our reads may be stale).
        match shared.written.compare_exchange_weak(
            current,
            (seq, end),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(()) => return (seq, end),
            Err(actual) => current = actual,
        }
    }
}

/// A claimed record being written in place. [`commit`](Self::commit) makes it
/// visible; dropping it uncommitted aborts it (subscribers skip it, and its
/// sequence number is counted as missed by anyone lapped across it).
#[derive(Debug)]
pub struct Claim<'a> {
    publisher: &'a mut Publisher,
    seq: u64,
    start: u64,
    len: u64,
    done: bool,
}

impl Claim<'_> {
    /// The record's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The record's length in bytes, as claimed.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the claim is for an empty record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `src` at byte `offset` of the record, directly into the ring.
    ///
    /// # Panics
    /// If `offset + src.len()` exceeds the claimed length.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) {
        let end = offset.checked_add(src.len());
        assert!(
            end.is_some_and(|e| e as u64 <= self.len),
            "write of {} bytes at offset {offset} exceeds the claim of {} bytes",
            src.len(),
            self.len
        );
        self.publisher
            .shared
            .write(self.start, self.len, offset as u64, src);
    }

    /// Makes the record visible to subscribers and returns its sequence number.
    pub fn commit(mut self) -> u64 {
        self.done = true;
        self.publisher.commit(self.seq, self.start, self.len);
        self.seq
    }

    /// Abandons the record. Subscribers skip it.
    pub fn abort(self) {}
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            // The sequence is taken, so it must still be committed for readers
            // and the watermark to move past it; ABORTED tells them to skip it.
            self.publisher
                .commit(self.seq, self.start, self.len | ABORTED);
        }
    }
}
