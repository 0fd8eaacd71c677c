//! Retention: deleting whole sealed segments by age, total bytes and record
//! count, while honouring pins (live readers, named retention floors) unless
//! the configuration overrides them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use super::{LogError, Shared};
use crate::sync::{AtomicU64, Ordering};

/// The lowest sequence a live reader may still read. Updated by its reader
/// only ever upwards, so a stale value read by retention is conservative.
#[derive(Debug)]
pub(crate) struct ReaderPin {
    pub(crate) id: u64,
    seq: AtomicU64,
}

impl ReaderPin {
    pub(crate) fn set(&self, seq: u64) {
        // Relaxed: retention reads it under its lock; a stale (lower) value
        // only keeps more segments.
        self.seq.store(seq, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

/// Who needs records and from where.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    floors: HashMap<String, u64>,
    readers: Vec<Weak<ReaderPin>>,
    next_reader_id: u64,
    /// Newest timestamp among records deleted in this process (0: none).
    pub(crate) deleted_last_ts: u64,
}

impl Pins {
    pub(crate) fn set_floor(&mut self, name: &str, seq: u64) {
        self.floors.insert(name.to_string(), seq);
    }
    pub(crate) fn clear_floor(&mut self, name: &str) -> Option<u64> {
        self.floors.remove(name)
    }
    pub(crate) fn register(&mut self, seq: u64) -> Arc<ReaderPin> {
        self.next_reader_id += 1;
        let pin = Arc::new(ReaderPin {
            id: self.next_reader_id,
            seq: AtomicU64::new(seq),
        });
        self.readers.retain(|w| w.strong_count() > 0);
        self.readers.push(Arc::downgrade(&pin));
        pin
    }
    /// `(holder, lowest needed seq)` for every live pin.
    fn holders(&mut self) -> Vec<(String, u64)> {
        self.readers.retain(|w| w.strong_count() > 0);
        let mut v: Vec<(String, u64)> = self
            .floors
            .iter()
            .map(|(k, &s)| (format!("floor:{k}"), s))
            .collect();
        for r in self.readers.iter().filter_map(Weak::upgrade) {
            v.push((format!("reader:{}", r.id), r.get()));
        }
        v
    }
}

/// Whether a reader or a retention floor still needs a record below `seq`.
pub(crate) fn pinned_below(shared: &Shared, seq: u64) -> bool {
    shared.pins.lock().holders().iter().any(|(_, s)| *s < seq)
}

/// A pin holder whose records retention deleted anyway (`override_pins`, or
/// past `max_pinned_age`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedGap {
    /// `floor:NAME` or `reader:ID`.
    pub holder: String,
    /// First deleted sequence the holder still needed.
    pub from: u64,
    /// Last deleted sequence.
    pub to: u64,
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segment files deleted.
    pub deleted: Vec<PathBuf>,
    /// Records in them.
    pub deleted_records: u64,
    /// First retained sequence afterwards.
    pub first_seq: u64,
    /// Whether a pin stopped deletion that the policy asked for.
    pub blocked_by_pin: bool,
    /// Pins overridden (`Retention::override_pins`, or past
    /// `Retention::max_pinned_age`).
    pub forced: Vec<ForcedGap>,
}

/// One retention pass.
pub(crate) fn enforce(shared: &Shared) -> Result<RetentionReport, LogError> {
    let policy = shared.config.retention;
    let mut pins = shared.pins.lock();
    let segs = shared.segments.read().clone();
    let mut report = RetentionReport {
        first_seq: shared.first_seq(),
        ..Default::default()
    };
    if segs.len() < 2 {
        return Ok(report);
    }
    let now = shared.config.clock.now_ns();
    let mut bytes: u64 = segs.iter().map(|s| s.size as u64).sum();
    let mut records: u64 = segs.iter().map(|s| s.count()).sum();
    let holders = pins.holders();
    let mut n = 0;
    let mut forced: Vec<ForcedGap> = Vec::new();
    for seg in &segs[..segs.len() - 1] {
        let count = seg.count();
        let size = seg.size as u64;
        let age = now.saturating_sub(seg.last_ts.load(Ordering::Relaxed));
        let older = |limit: Option<std::time::Duration>| {
            limit.is_some_and(|limit| age > limit.as_nanos() as u64)
        };
        let old = older(policy.max_age);
        let big = policy.max_bytes.is_some_and(|m| bytes - size >= m);
        let many = policy.max_records.is_some_and(|m| records - count >= m);
        if !(old || big || many) {
            break;
        }
        let last_seq = seg.base_seq + count; // one past the segment's last record
        let needing: Vec<&(String, u64)> = holders.iter().filter(|(_, s)| *s < last_seq).collect();
        if !needing.is_empty() {
            if !policy.override_pins && !older(policy.max_pinned_age) {
                report.blocked_by_pin = true;
                break;
            }
            for (h, s) in needing {
                let from = (*s).max(seg.base_seq);
                match forced.iter_mut().find(|f| &f.holder == h) {
                    Some(f) => f.to = last_seq - 1,
                    None => forced.push(ForcedGap {
                        holder: h.clone(),
                        from,
                        to: last_seq - 1,
                    }),
                }
            }
        }
        bytes -= size;
        records -= count;
        n += 1;
    }
    if n == 0 {
        return Ok(report);
    }
    let new_first = segs[n].base_seq;
    {
        let mut list = shared.segments.write();
        list.drain(..n);
    }
    shared.set_first_seq(new_first);
    let emptied: Vec<(u64, u64)> = {
        let mut topics = shared.topics.write();
        topics.trim_below(new_first);
        topics.emptied()
    };
    for seg in &segs[..n] {
        pins.deleted_last_ts = pins
            .deleted_last_ts
            .max(seg.last_ts.load(Ordering::Relaxed));
        report.deleted_records += seg.count();
        report.deleted.push(seg.path.clone());
    }
    drop(pins);
    report.first_seq = new_first;
    report.forced = forced;
    // Persist the emptied topics' high-water marks before their records go.
    if !emptied.is_empty() {
        super::hwm::write(&shared.dir, &shared.config, &emptied)?;
    }
    for seg in &segs[..n] {
        shared
            .config
            .io
            .remove(&seg.path)
            .map_err(|e| LogError::io("removing a segment", Some(seg.path.clone()), e))?;
    }
    shared
        .config
        .io
        .sync_dir(&shared.dir)
        .map_err(|e| LogError::io("syncing the log directory", Some(shared.dir.clone()), e))?;
    Ok(report)
}
