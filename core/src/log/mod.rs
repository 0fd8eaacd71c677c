//! The memory-mapped, append-only, CRC-checked sequence log.
//!
//! One log per broker holds every topic's records in global-sequence order,
//! in preallocated segment files (`{base_seq:020}.seg`) that are mapped into
//! memory. The byte layout, the recovery procedure and the durability
//! guarantees are documented in `docs/FORMAT.md`.
//!
//! # Sequences
//! The caller (the broker) assigns sequences; the log **verifies** them:
//! `append` fails with [`LogError::SequenceMismatch`] unless the record's
//! `seq` is [`Log::next_seq`], with [`LogError::TopicSequenceRegression`]
//! unless its `topic_seq` is greater than the topic's last, and with
//! [`LogError::TimestampRegression`] if its timestamp is older than the last
//! record's.
//!
//! # Concurrency
//! `Log` is `Sync`. Appends are serialized internally by a mutex (the record
//! copy, CRC and index update happen under it); under
//! [`Durability::Always`] the wait for durability happens after the mutex is
//! released, so concurrent appenders share one sync (group commit). A caller
//! that assigns sequences under its own lock should use
//! [`Log::append_nowait`] under that lock and [`Log::wait_durable`] after
//! releasing it. Readers take no lock per record (see [`reader`]).
//!
//! # Modules
//! `format` (byte layout), `segment` (one mapped file and its publication
//! protocol), `scan` (walking a segment's records), `recovery` (open),
//! `append` (the write path and segment roll), `durability` (group commit,
//! flusher), `reader` (replay by sequence, topic, time), `index` (per-topic
//! index), `retention` (deletion and pins), `hwm` (emptied topics' last
//! sequences), `prefault`, `spare` (the next segment, made ahead of the
//! roll), `spill` (full chunks of the topic index written out), `io` (the I/O and clock seams), `verify`
//! (read-only checks for `herald log verify/inspect`).
//!
//! # Example
//! ```
//! use herald_core::log::{Log, LogConfig, RecordRef, ReadItem};
//! let dir = tempfile::tempdir().unwrap();
//! let (log, _report) = Log::open(dir.path(), LogConfig::default()).unwrap();
//! let rec = RecordRef { seq: log.next_seq(), topic_id: 7, topic_seq: 1, timestamp_ns: 10,
//!                       origin: 0, event_type: b"order.created", payload: b"{}", key: b"" };
//! log.append(&rec).unwrap();
//! let mut r = log.reader_from_seq(1).unwrap();
//! assert!(matches!(r.next_item(), Some(Ok(ReadItem::Record(v))) if v.topic_id == 7));
//! ```

mod append;
mod config;
mod durability;
mod error;
pub mod format;
mod hwm;
mod index;
mod io;
mod prefault;
pub mod reader;
mod recovery;
mod retention;
mod scan;
mod segment;
mod spare;
mod spill;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::{Durability, LogConfig, Retention};
pub use error::LogError;
pub use io::{Clock, LogIo, StdIo, SystemClock};
pub use reader::{LogItem, LogReader, ReadItem, Record, TopicReader};
pub use recovery::{RecoveryReport, Truncation};
pub use retention::{ForcedGap, RetentionReport};
pub use verify::{dump_dir, verify_dir, VerifyIssue, VerifyReport};

use append::create_segment;
use durability::{Flusher, GroupCommit};
use index::TopicIndex;
use retention::Pins;
use segment::Segment;

use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, RwLock};

/// A record, borrowed: what [`Log::append`] takes (nothing is allocated on
/// the append path) and what the readers yield (from the mapped segment;
/// [`RecordRef::to_record`] copies it out). [`Record`] is the owned form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Global sequence; an append's must equal [`Log::next_seq`].
    pub seq: u64,
    /// Topic id.
    pub topic_id: u64,
    /// Topic sequence; an append's must exceed the topic's previous one.
    pub topic_seq: u64,
    /// Timestamp in nanoseconds; an append's must not be older than the
    /// previous record's.
    pub timestamp_ns: u64,
    /// Origin (device/user id) for exclusion filters.
    pub origin: u64,
    /// Event type, at most 255 bytes.
    pub event_type: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
    /// Key: opaque bytes stored with the record, at most
    /// [`MAX_KEY_LEN`](format::MAX_KEY_LEN) (the broker's idempotency keys;
    /// usually empty).
    pub key: &'a [u8],
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Its global sequence.
    pub seq: u64,
    /// Base sequence of the segment holding it.
    pub segment_base: u64,
    /// Byte offset in that segment file.
    pub offset: u64,
    /// Bytes it occupies (padded).
    pub len: u32,
}

/// Counters, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Completed syncs that wrote something (group commit, the interval
    /// flusher's rounds, [`Log::sync`]).
    pub syncs: u64,
    /// Highest sequence known durable.
    pub durable_seq: u64,
    /// Segments currently retained.
    pub segments: usize,
    /// The next segment's file is made, ready for the roll (see
    /// `docs/FORMAT.md`).
    pub spare_ready: bool,
}

/// Appender-only state, under the writer mutex.
#[derive(Debug)]
struct Writer {
    tail: Arc<Segment>,
    last_ts: u64,
    /// The spare for the tail's successor was asked for (see `spare`).
    spare_asked: bool,
}

/// State shared by the log handle, its readers and its flusher.
#[derive(Debug)]
pub(crate) struct Shared {
    dir: PathBuf,
    config: LogConfig,
    /// Retained segments, oldest first; the last is the tail. Write-locked only
    /// to add a segment (roll) or remove some (retention).
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    topics: RwLock<TopicIndex>,
    /// Next sequence to append. Release-stored after each append's publish;
    /// pairs with Acquire loads in `next_seq()`.
    next_seq: AtomicU64,
    /// First retained sequence (Release by retention, Acquire by readers).
    first_seq: AtomicU64,
    /// Bases of the segments that follow a skip, oldest first (appended to
    /// under `writer`; skips are rare, so the list is short).
    skips: RwLock<Vec<u64>>,
    group: GroupCommit,
    poisoned: AtomicBool,
    pins: Mutex<Pins>,
    /// The next segment's file, made ahead of the roll (see `spare`).
    spare: Mutex<spare::Slot>,
    /// The index spill thread, woken when a chunk fills (see `spill`).
    spiller: std::sync::OnceLock<std::thread::Thread>,
    /// What retention passes at a roll left to remove, and the thread
    /// removing it (see `retention::enforce_in_background`).
    removals: retention::Removals,
}

impl Shared {
    pub(crate) fn next_seq(&self) -> u64 {
        // Acquire: pairs with the Release store at the end of `append_nowait`.
        self.next_seq.load(Ordering::Acquire)
    }

    pub(crate) fn first_seq(&self) -> u64 {
        // Acquire: pairs with the Release store in `set_first_seq`.
        self.first_seq.load(Ordering::Acquire)
    }

    pub(crate) fn set_first_seq(&self, seq: u64) {
        // Release: pairs with the Acquire load in `first_seq`.
        self.first_seq.store(seq, Ordering::Release);
    }

    /// Whether a skip lies in `(after, upto]`: a segment following a skip
    /// has its base there.
    pub(crate) fn skip_between(&self, after: u64, upto: u64) -> bool {
        self.skips
            .read()
            .iter()
            .any(|&base| after < base && base <= upto)
    }

    /// Wakes the spill thread: a chunk of the topic index filled.
    pub(crate) fn wake_spiller(&self) {
        if let Some(t) = self.spiller.get() {
            t.unpark();
        }
    }

    pub(crate) fn poison(&self) {
        // Release: pairs with the Acquire load in `append_nowait`.
        self.poisoned.store(true, Ordering::Release);
    }

    /// The segment that holds (or will next hold) `seq`, or the first
    /// retained segment after it if `seq` was deleted.
    pub(crate) fn locate(&self, seq: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read();
        let start = segs
            .partition_point(|s| s.base_seq <= seq)
            .saturating_sub(1);
        segs[start..]
            .iter()
            .find(|s| !s.is_sealed() || seq < s.base_seq + s.count())
            .cloned()
    }

    /// Syncs the log's directory (creations, renames, removals).
    pub(crate) fn sync_dir(&self) -> Result<(), LogError> {
        self.config
            .io
            .sync_dir(&self.dir)
            .map_err(|e| LogError::io("syncing the log directory", Some(self.dir.clone()), e))
    }

    /// Syncs every committed byte.
    pub(crate) fn sync_committed(&self) -> Result<Synced, LogError> {
        self.sync(None)
    }

    /// The interval flusher's sync: every committed byte but the last
    /// [`HOLD_BACK`] bytes of the tail, unless they hold records that were
    /// there at the `previous` round (which this call updates). The
    /// sequence it reports durable is conservative: records in the synced
    /// part of the tail may be durable before it says so.
    ///
    /// Why: a page being written back is locked and write-protected until
    /// the disk is done, and an appender storing into it waits (1–3 ms, once
    /// per round, measured by `publish_stalls --why 1`). Pages behind the
    /// appender are never written again, but ext4 writes back past the end
    /// of the range it is asked to (up to 54 pages, 216 KiB, seen), into the
    /// pages populated ahead of the appender. A record is therefore durable
    /// within two rounds instead of one.
    pub(crate) fn sync_settled(&self, previous: &mut FlushRound) -> Result<Synced, LogError> {
        self.sync(Some(previous))
    }

    fn sync(&self, mut round: Option<&mut FlushRound>) -> Result<Synced, LogError> {
        let target = self.next_seq().saturating_sub(1);
        let pending: Vec<Arc<Segment>> = {
            let segs = self.segments.read();
            let mut v: Vec<Arc<Segment>> = segs
                .iter()
                .rev()
                .take_while(|s| s.synced.load(Ordering::Relaxed) < s.end() as u64 || !s.is_sealed())
                .cloned()
                .collect();
            v.reverse();
            v
        };
        let mut durable = target;
        let mut wrote = false;
        let last = pending.len().saturating_sub(1);
        for (i, seg) in pending.into_iter().enumerate() {
            // Loaded after `target`, so it covers every record up to `target`.
            let end = seg.end() as u64;
            let mut upto = end;
            // Only the last segment is held back: one before it that is not
            // sealed yet is being sealed by a roll, and is synced whole.
            if let Some(round) = round
                .as_deref_mut()
                .filter(|_| i == last && !seg.is_sealed())
            {
                let (held_to, durable_then) = round.hold_back(seg.base_seq, end, target);
                upto = held_to;
                durable = durable.min(durable_then);
            }
            let synced = seg.synced.load(Ordering::Relaxed);
            if upto > synced {
                if round.is_some() {
                    self.start_writeback_in_pieces(&seg, synced, upto);
                }
                self.config
                    .io
                    .sync_range(seg.map(), synced as usize, (upto - synced) as usize)
                    .map_err(|e| LogError::io("syncing a segment", Some(seg.path.clone()), e))?;
                if synced == 0 {
                    // Named at a roll (`spare::name`): its header is durable
                    // now, and its name once the directory is.
                    self.sync_dir()?;
                }
                // Release: pairs with the Acquire in `Segment::name_durable`
                // (the appender at a roll). Only the sync leader (one at a
                // time, under the group-commit protocol) writes `synced`.
                seg.synced.store(upto, Ordering::Release);
                wrote = true;
            }
        }
        Ok(Synced { durable, wrote })
    }

    /// The flusher's write-back of `from..to` of `seg`, started a
    /// [`WRITEBACK_PIECE`] at a time, yielding the core between pieces
    /// ([`io::in_pieces`]); the `msync` that follows then waits for it
    /// (asleep, not on a core) and flushes the device once. The write-back's
    /// own work (finding the dirty pages, allocating their blocks, building
    /// the requests) was a millisecond or more of a core per round at
    /// 132 000 events/s. A failure here is left to that `msync` to report.
    ///
    /// Each piece's pages leave the process first
    /// ([`Segment::release_range`]; the range is behind the appender, which
    /// never writes there again). Write-back write-protects every page it
    /// finds mapped, and each such page cost a TLB flush, an interrupt to
    /// every other core running the process (`folio_mkclean`: more than
    /// half of the write-back's time at 412 000 events/s); released, a
    /// piece costs one. It also keeps the tail's resident part to the
    /// window around the appender, not all that was written of it.
    fn start_writeback_in_pieces(&self, seg: &Segment, from: u64, to: u64) {
        let _ = io::in_pieces(from, to, WRITEBACK_PIECE, |at, len| {
            seg.release_range(at, at + len);
            self.config.io.start_writeback(&seg.file, at, len)
        });
    }
}

/// What a sync did.
#[derive(Debug)]
pub(crate) struct Synced {
    /// Every sequence up to this one is durable.
    pub(crate) durable: u64,
    /// Whether it synced any bytes.
    pub(crate) wrote: bool,
}

/// Page size: the flusher's syncs end on a page boundary.
const PAGE: u64 = 4096;
/// Bytes of write-back the flusher starts per call (see
/// [`Shared::start_writeback_in_pieces`]).
const WRITEBACK_PIECE: u64 = 256 << 10;
/// How far behind the appender the flusher's sync stops (see
/// [`Shared::sync_settled`]): several times the overshoot seen.
const HOLD_BACK: u64 = 1 << 20;

/// What the interval flusher's previous round saw of the tail segment.
#[derive(Debug, Default)]
pub(crate) struct FlushRound {
    /// The tail's base sequence (`None` before the first round).
    tail_base: Option<u64>,
    /// The tail's end then: every record up to `committed` ended at or
    /// before it.
    end: u64,
    /// The last committed sequence then.
    committed: u64,
}

impl FlushRound {
    /// Where this round's sync of the tail (based at `base`, ending at `end`
    /// with every record up to `target` committed) stops, and the highest
    /// sequence that is durable once it has: a MiB behind `end`, or what
    /// the previous round saw if that is further. Remembers this round.
    fn hold_back(&mut self, base: u64, end: u64, target: u64) -> (u64, u64) {
        let same_tail = self.tail_base == Some(base);
        let settled = if same_tail { self.end } else { 0 };
        let upto = (end.saturating_sub(HOLD_BACK) & !(PAGE - 1))
            .max(settled)
            .min(end);
        // Every segment before the tail is synced whole; of the tail, what
        // the previous round saw.
        let durable = if upto == end {
            target
        } else {
            let seen = if same_tail { self.committed } else { 0 };
            base.saturating_sub(1).max(seen)
        };
        *self = FlushRound {
            tail_base: Some(base),
            end,
            committed: target,
        };
        (upto, durable)
    }
}

/// The log. See the [module docs](self).
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    flusher: Option<Flusher>,
    spiller: Option<spill::Spiller>,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering it: see
    /// `docs/FORMAT.md`, "Recovery". Fails with [`LogError::Corrupt`] on
    /// corruption other than a torn tail unless `config.repair` is set.
    pub fn open(
        dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<(Log, RecoveryReport), LogError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| LogError::io("creating the log directory", Some(dir.clone()), e))?;
        spill::remove_stale(&dir)?;
        let rec = recovery::recover(&dir, &config)?;
        let mut report = rec.report;
        let mut segments = rec.segments;
        let next_seq = rec.next_seq;
        // Under `Never` nothing recovered is known durable (a later `sync` or
        // `close` must cover it); otherwise recovery synced every segment.
        let durable = if config.durability == Durability::Never {
            0
        } else {
            next_seq - 1
        };
        let shared_group = GroupCommit::new(durable);
        // A directory without segments gets its first one (which
        // `create_segment` prefaults); a recovered tail is prefaulted here.
        let tail = match segments.last() {
            Some(t) => {
                if config.prefault {
                    prefault::spawn(t);
                }
                Arc::clone(t)
            }
            None => {
                let seg = create_segment(&dir, &config, next_seq, 0)?;
                segments.push(Arc::clone(&seg));
                report.segments = 1;
                seg
            }
        };
        let first_seq = segments.first().map_or(next_seq, |s| s.base_seq);
        let shared = Arc::new(Shared {
            dir,
            config: config.clone(),
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                tail,
                last_ts: rec.last_ts,
                spare_asked: false,
            }),
            topics: RwLock::new(rec.topics),
            next_seq: AtomicU64::new(next_seq),
            first_seq: AtomicU64::new(first_seq),
            skips: RwLock::new(rec.skips),
            group: shared_group,
            poisoned: AtomicBool::new(false),
            pins: Mutex::new(Pins::default()),
            spare: Mutex::new(spare::Slot::default()),
            spiller: std::sync::OnceLock::new(),
            removals: retention::Removals::new(),
        });
        let flusher = match config.durability {
            Durability::Interval(every) => Some(Flusher::start(Arc::clone(&shared), every)?),
            _ => None,
        };
        // Loom cannot schedule a real thread that takes the index's lock:
        // models never fill a chunk, and run without the thread.
        let spiller = if cfg!(loom) {
            None
        } else {
            Some(spill::Spiller::start(&shared)?)
        };
        retention::start_removals(&shared);
        Ok((
            Log {
                shared,
                flusher,
                spiller,
            },
            report,
        ))
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The sequence the next appended record must carry.
    pub fn next_seq(&self) -> u64 {
        self.shared.next_seq()
    }

    /// The last appended sequence, or `None` if the log holds no record.
    pub fn last_seq(&self) -> Option<u64> {
        let next = self.shared.next_seq();
        (next > self.shared.first_seq()).then(|| next - 1)
    }

    /// The first retained sequence (equals `next_seq()` when empty).
    pub fn first_seq(&self) -> u64 {
        self.shared.first_seq()
    }

    /// The last topic sequence appended to `topic_id` (kept after retention
    /// deletes the record, for the life of the process), or `None`.
    pub fn last_topic_seq(&self, topic_id: u64) -> Option<u64> {
        self.shared.topics.read().last_topic_seq(topic_id)
    }

    /// Whether a skip (see [`Log::skip_to`]) came after `topic_id`'s last
    /// retained record (or the topic has none and the log has a skip): the
    /// topic's records in between may have been among the skipped, so its
    /// next record's topic sequence may jump.
    pub fn topic_crossed_skip(&self, topic_id: u64) -> bool {
        let last = self.shared.topics.read().last_record_seq(topic_id);
        self.shared.skip_between(last.unwrap_or(0), u64::MAX)
    }

    /// Topic index entries held in memory: those of chunks still being
    /// filled or not yet spilled (see `spill`). For tests.
    #[doc(hidden)]
    pub fn index_entries_in_memory(&self) -> usize {
        self.shared.topics.read().entries_in_memory()
    }

    /// Counters.
    pub fn stats(&self) -> LogStats {
        LogStats {
            syncs: self.shared.group.syncs.load(Ordering::Relaxed),
            durable_seq: self.shared.group.durable(),
            segments: self.shared.segments.read().len(),
            spare_ready: self.shared.spare.lock().ready.is_some(),
        }
    }

    /// Deletes the segments the retention policy no longer keeps.
    pub fn enforce_retention(&self) -> Result<RetentionReport, LogError> {
        retention::enforce(&self.shared)
    }

    /// Registers (or moves) a named retention floor: records with sequence
    /// `>= seq` are kept for it (unless `override_pins`).
    pub fn set_retention_floor(&self, name: &str, seq: u64) {
        self.shared.pins.lock().set_floor(name, seq);
    }

    /// Removes a named retention floor; returns its sequence.
    pub fn clear_retention_floor(&self, name: &str) -> Option<u64> {
        self.shared.pins.lock().clear_floor(name)
    }

    /// A reader that starts at global sequence `seq` (`first_seq()..=next_seq()`;
    /// an older `seq` first yields a [`ReadItem::Gap`]).
    pub fn reader_from_seq(&self, seq: u64) -> Result<LogReader, LogError> {
        let next = self.next_seq();
        if seq > next {
            return Err(LogError::OutOfRange {
                requested: seq,
                next,
            });
        }
        // Sequences start at 1: "from 0" is "from the beginning", and only
        // records that existed and were deleted make a gap.
        let seq = seq.max(1);
        let mut pins = self.shared.pins.lock();
        let first = self.shared.first_seq();
        let (start, gap) = if seq < first {
            (first, Some((seq, first - 1)))
        } else {
            (seq, None)
        };
        let pin = pins.register(start);
        drop(pins);
        Ok(LogReader::new(Arc::clone(&self.shared), start, gap, pin))
    }

    /// A reader of one topic starting at `topic_seq` (records of the topic
    /// with `topic_seq >=` it). Sees later appends to the topic.
    pub fn reader_from_topic(&self, topic_id: u64, topic_seq: u64) -> TopicReader {
        let mut pins = self.shared.pins.lock();
        let mut first = Vec::new();
        // A spill file that cannot be read leaves `first` empty: the reader
        // reports the error when it reads.
        let _ = self
            .shared
            .topics
            .read()
            .fetch(topic_id, topic_seq, 1, &mut first);
        // A spilled chunk may still hold entries of deleted records (see
        // `index`): never pin below the first retained sequence.
        let first_retained = self.shared.first_seq();
        let pin = pins.register(
            first
                .first()
                .map_or(self.next_seq(), |e| e.seq.max(first_retained)),
        );
        drop(pins);
        TopicReader::new(Arc::clone(&self.shared), topic_id, topic_seq, pin)
    }

    /// A reader starting at the first record with `timestamp_ns >= ts_ns`.
    /// If retention deleted records that may be that recent, it first yields
    /// a gap from `initial_seq` (the log's sequence origin) to `first_seq() - 1`.
    pub fn reader_from_time(&self, ts_ns: u64) -> Result<LogReader, LogError> {
        let segs = self.shared.segments.read().clone();
        let mut start = self.next_seq();
        for seg in &segs {
            let count = seg.count();
            if count == 0 || seg.last_ts.load(Ordering::Relaxed) < ts_ns {
                continue;
            }
            let bytes = seg.committed(seg.end());
            let ts_at = |i: u64| {
                let off = seg.offset_of(i) + format::REC_TIMESTAMP_OFF;
                bytes
                    .get(off..off + 8)
                    .map_or(u64::MAX, |b| format::get_u64(b, 0))
            };
            let (mut lo, mut hi) = (0u64, count);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if ts_at(mid) < ts_ns {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            start = seg.base_seq + lo;
            break;
        }
        let first = self.shared.first_seq();
        let origin = self.shared.config.initial_seq;
        let deleted_last_ts = self.shared.pins.lock().deleted_last_ts;
        let first_ts = segs
            .first()
            .map_or(0, |s| s.first_ts.load(Ordering::Relaxed));
        let maybe_deleted = first > origin
            && (ts_ns <= deleted_last_ts || (deleted_last_ts == 0 && ts_ns < first_ts));
        if maybe_deleted && start == first {
            return self.reader_from_seq(origin.min(first));
        }
        self.reader_from_seq(start)
    }

    /// Syncs everything and stops the flusher. Dropping the log without
    /// `close` leaves syncing to the policy (and the kernel).
    pub fn close(mut self) -> Result<(), LogError> {
        if let Some(mut f) = self.flusher.take() {
            f.stop();
        }
        self.sync()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Some(mut f) = self.flusher.take() {
            f.stop();
        }
        // Stops the spill thread (its files go with the index).
        drop(self.spiller.take());
        spare::discard(&self.shared);
        // Retention's files are gone before the log is: a reopen does not
        // read them back.
        retention::stop_removals(&self.shared);
    }
}
