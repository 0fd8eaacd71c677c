//! Retention: deleting whole sealed segments by age, total bytes and record
//! count, while honouring pins (live readers, named retention floors) unless
//! the configuration overrides them.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};

use super::index::Chunk;
use super::segment::Segment;
use super::{LogError, Shared};
use crate::sync::{AtomicU64, Condvar, Mutex, Ordering};

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

/// What a retention pass took out of the log's memory and still has to
/// go: the segments' files (and mappings) and the topic index's chunks (a
/// spilled one removes its spill file when dropped).
#[derive(Debug, Default)]
struct Removal {
    segments: Vec<Arc<Segment>>,
    chunks: Vec<Chunk>,
}

/// The removals left to the background thread, in order.
#[derive(Debug)]
pub(crate) struct Removals {
    queue: Mutex<Queue>,
    changed: Condvar,
    /// One removal at a time, whoever runs it: the high-water-mark file
    /// has one temporary name, and each write holds every emptied topic
    /// as of then (so no write can undo a later pass's).
    one_at_a_time: Mutex<()>,
}

impl Removals {
    pub(crate) fn new() -> Self {
        Removals {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            one_at_a_time: Mutex::new(()),
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Removal>,
    /// Queued or being removed.
    unfinished: usize,
    closed: bool,
    thread: Option<JoinHandle<()>>,
}

/// One retention pass, its files removed before it returns (after those
/// of the passes still queued for the background thread).
pub(crate) fn enforce(shared: &Shared) -> Result<RetentionReport, LogError> {
    let (report, removal) = take_out(shared)?;
    wait_for_removals(shared);
    remove(shared, removal)?;
    Ok(report)
}

/// One retention pass whose files a background thread removes: the pass
/// at a segment roll, on the appender's path, where removing a 64 MiB file
/// (and unmapping it, and the spill files of its index entries) took
/// tens of milliseconds. The segments leave the log's list, and their
/// records its readers, before this returns; only their files stay a
/// little longer (a crash meanwhile leaves them to recovery, which reads
/// them back as retained records). The thread (started with the log,
/// [`start_removals`]) removes the passes' files in order.
pub(crate) fn enforce_in_background(shared: &Arc<Shared>) {
    let Ok((_, removal)) = take_out(shared) else {
        return;
    };
    if removal.segments.is_empty() {
        return; // nothing taken out (chunks go only with segments)
    }
    let removals = &shared.removals;
    let mut queue = removals.queue.lock();
    if queue.thread.is_none() {
        // No thread (it could not be started, or the log is closing): here.
        drop(queue);
        let _ = remove(shared, removal);
        return;
    }
    queue.jobs.push_back(removal);
    queue.unfinished += 1;
    removals.changed.notify_all();
}

/// Starts the background thread, for a log whose policy deletes segments
/// at rolls (not under loom, whose models run without it). Without it,
/// such passes remove their files on the appender's path.
pub(crate) fn start_removals(shared: &Arc<Shared>) {
    if !shared.config.retention.has_limit() || cfg!(loom) {
        return;
    }
    let remover = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("herald-log-remove".into())
        .spawn(move || run(&remover));
    shared.removals.queue.lock().thread = spawned.ok();
}

/// The background thread: removes queued passes until the log closes.
fn run(shared: &Shared) {
    let removals = &shared.removals;
    loop {
        let job = {
            let mut queue = removals.queue.lock();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break Some(job);
                }
                if queue.closed {
                    break None;
                }
                removals.changed.wait(&mut queue);
            }
        };
        let Some(job) = job else {
            return;
        };
        // Failures (a file that cannot be removed) do not fail the append
        // that rolled: the segment is out of the list either way. Nor does
        // a panic stop the thread (waiters count on `unfinished`).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| remove(shared, job)));
        let mut queue = removals.queue.lock();
        queue.unfinished -= 1;
        removals.changed.notify_all();
    }
}

/// Waits until every queued pass's files are removed.
pub(crate) fn wait_for_removals(shared: &Shared) {
    let removals = &shared.removals;
    let mut queue = removals.queue.lock();
    while queue.unfinished > 0 {
        removals.changed.wait(&mut queue);
    }
}

/// Removes what is queued, then stops the thread (closing the log).
pub(crate) fn stop_removals(shared: &Shared) {
    let thread = {
        let mut queue = shared.removals.queue.lock();
        queue.closed = true;
        shared.removals.changed.notify_all();
        queue.thread.take()
    };
    if let Some(thread) = thread {
        let _ = thread.join();
    }
}

/// Persists the high-water marks, then removes the files and syncs the
/// directory; dropping the segments unmaps those no reader holds, and
/// dropping the chunks removes their spill files.
fn remove(shared: &Shared, removal: Removal) -> Result<(), LogError> {
    let Removal { segments, chunks } = removal;
    drop(chunks);
    if segments.is_empty() {
        return Ok(());
    }
    let _one = shared.removals.one_at_a_time.lock();
    // Persist the emptied topics' high-water marks before their records
    // go: every topic with no retained record now, this pass's included
    // (its records left the index before this runs).
    let emptied = shared.topics.read().emptied();
    if !emptied.is_empty() {
        super::hwm::write(&shared.dir, &shared.config, &emptied)?;
    }
    for seg in &segments {
        shared
            .config
            .io
            .remove(&seg.path)
            .map_err(|e| LogError::io("removing a segment", Some(seg.path.clone()), e))?;
    }
    shared.sync_dir()
}

/// Decides what the policy deletes and takes it out of the log's memory:
/// the segment list, the first sequence, the topic index.
fn take_out(shared: &Shared) -> Result<(RetentionReport, Removal), LogError> {
    let policy = shared.config.retention;
    let mut pins = shared.pins.lock();
    let segs = shared.segments.read().clone();
    let mut report = RetentionReport {
        first_seq: shared.first_seq(),
        ..Default::default()
    };
    let nothing = |report| Ok((report, Removal::default()));
    if segs.len() < 2 {
        return nothing(report);
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
        return nothing(report);
    }
    let new_first = segs[n].base_seq;
    {
        let mut list = shared.segments.write();
        list.drain(..n);
    }
    shared.set_first_seq(new_first);
    let chunks = shared.topics.write().trim_below(new_first);
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
    let removal = Removal {
        segments: segs[..n].to_vec(),
        chunks,
    };
    Ok((report, removal))
}
