//! Acknowledgements of single events for durable consumers, by clients that
//! hold no [`Subscription`] (HTTP, WebSocket: a server's streams go live on
//! a shared feed, so the subscription's own tracker is gone).
//!
//! The broker keeps, per consumer, the sequences acknowledged above its
//! checkpoint and the filter of its subscriptions. The checkpoint
//! advances over the contiguous prefix: past every sequence acknowledged,
//! and past every sequence the filter does not select, up to the first
//! event of the consumer not acknowledged. Until the consumer subscribes in
//! this process (the filter is not persisted), or once two of its
//! subscriptions had different filters, only acknowledged sequences are
//! passed. Pending acknowledgements live in memory: after a restart the
//! consumer receives those events again (at least once).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use super::checkpoint::{AckError, CheckpointError};
use super::{BrokerError, DeliveryRef, Filter, Inner, StartAt, Subscription};

/// Most acknowledged sequences kept above one consumer's checkpoint.
pub const MAX_PENDING_ACKS: usize = 10_000;

/// Most log records one acknowledgement reads (a consumer whose events are
/// rare among others); the next acknowledgement goes on from there.
const MAX_WALK: u64 = 1 << 16;

/// What the broker knows of a consumer's filter in this process.
#[derive(Debug, Default)]
enum Selects {
    /// No subscription yet.
    #[default]
    Unknown,
    /// Every subscription had this filter.
    Filter(Filter),
    /// Subscriptions had different filters: unknown for good.
    Several,
}

#[derive(Debug, Default)]
struct Pending {
    selects: Selects,
    /// Acknowledged sequences above the checkpoint.
    acked: BTreeSet<u64>,
}

/// Every consumer's pending acknowledgements.
#[derive(Debug, Default)]
pub(crate) struct Acks(Mutex<HashMap<String, Pending>>);

impl Acks {
    /// A subscription of consumer `name` opened with `filter`. Subscriptions
    /// with different filters leave it unknown: the checkpoint then passes
    /// only acknowledged sequences, never an event one of them delivered.
    pub(crate) fn subscribed(&self, name: &str, filter: &Filter) {
        let mut all = self.0.lock();
        let selects = &mut all.entry(name.to_owned()).or_default().selects;
        match selects {
            Selects::Unknown => *selects = Selects::Filter(filter.clone()),
            Selects::Filter(known) if known != filter => *selects = Selects::Several,
            Selects::Filter(_) | Selects::Several => {}
        }
    }

    /// The checkpoint moved to `checkpoint` by other means.
    pub(crate) fn passed(&self, name: &str, checkpoint: u64) {
        if let Some(p) = self.0.lock().get_mut(name) {
            p.acked = p.acked.split_off(&(checkpoint + 1));
        }
    }

    /// The consumer was removed.
    pub(crate) fn forget(&self, name: &str) {
        self.0.lock().remove(name);
    }

    /// Records `seqs` acknowledged (those at or below the checkpoint are
    /// already consumed) and advances the checkpoint over the contiguous
    /// prefix; returns the checkpoint.
    pub(crate) fn ack(
        &self,
        inner: &Arc<Inner>,
        name: &str,
        seqs: &[u64],
    ) -> Result<u64, BrokerError> {
        // One consumer's acknowledgements at a time: the walk and the commit
        // must not interleave with another's.
        let mut all = self.0.lock();
        let checkpoint = inner
            .checkpoints
            .get(name)
            .ok_or_else(|| BrokerError::UnknownConsumer(name.to_owned()))?;
        let last = inner.log.next_seq().saturating_sub(1);
        if let Some(&seq) = seqs.iter().find(|&&s| s > last) {
            return Err(BrokerError::Ack(AckError::PastEnd { seq, last }));
        }
        let pending = all.entry(name.to_owned()).or_default();
        let new: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|&s| s > checkpoint && !pending.acked.contains(&s))
            .collect();
        pending.acked.extend(&new);
        let to = match &pending.selects {
            Selects::Filter(filter) => walk(inner, filter.clone(), checkpoint, &pending.acked)?,
            Selects::Unknown | Selects::Several => {
                let mut to = checkpoint;
                while pending.acked.contains(&(to + 1)) {
                    to += 1;
                }
                to
            }
        };
        // What the checkpoint passes leaves the set (acknowledged sequences
        // the filter does not select too).
        let above = pending.acked.split_off(&(to + 1));
        let passed = std::mem::replace(&mut pending.acked, above);
        if pending.acked.len() > MAX_PENDING_ACKS {
            // Refused whole, changing nothing: the oldest first.
            pending.acked.extend(passed);
            for s in &new {
                pending.acked.remove(s);
            }
            return Err(BrokerError::Ack(AckError::TooManyPending {
                max: MAX_PENDING_ACKS,
            }));
        }
        if to == checkpoint {
            return Ok(checkpoint);
        }
        match inner.store_checkpoint(name, to) {
            Ok(()) => Ok(to),
            // An acknowledgement up to a later sequence came meanwhile.
            Err(CheckpointError::Backwards { current, .. }) => {
                pending.acked = pending.acked.split_off(&(current + 1));
                Ok(current)
            }
            Err(CheckpointError::Unknown { .. }) => {
                all.remove(name);
                Err(BrokerError::UnknownConsumer(name.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads the consumer's events after `checkpoint` and returns how far the
/// checkpoint may go: past events in `acked`, gaps and what `filter` does
/// not select, up to the first event not acknowledged, and at most
/// [`MAX_WALK`] records. Each sequence is read about once over the
/// consumer's life: the checkpoint moves past what was read, but for the
/// first unacknowledged event, where the walk stops.
fn walk(
    inner: &Arc<Inner>,
    filter: Filter,
    checkpoint: u64,
    acked: &BTreeSet<u64>,
) -> Result<u64, BrokerError> {
    let start = StartAt::Seq(checkpoint + 1);
    let mut sub = Subscription::new(inner.clone(), filter, start, None)?;
    let mut to = checkpoint;
    loop {
        // Everything the subscription examined so far was acknowledged or
        // not the consumer's: a later call goes on from there.
        if sub.next_seq() > checkpoint + MAX_WALK {
            return Ok(to.max(sub.next_seq() - 1));
        }
        // One record at a time: a filter that passes over records must not
        // read past the bound in one call.
        match sub.step_with(|d| match d {
            DeliveryRef::Event(e) => Some(e.seq),
            DeliveryRef::Gap(_) => None,
        })? {
            // Every sequence below `seq` was a gap or not the consumer's.
            Some(Some(Some(seq))) if acked.contains(&seq) => to = seq,
            Some(Some(Some(seq))) => return Ok(seq - 1),
            Some(Some(None)) | Some(None) => {}
            // Read to the end: nothing after `to` is the consumer's.
            None => return Ok(to.max(sub.next_seq() - 1)),
        }
    }
}
