//! Configuration of a [`Log`](super::Log).

use std::sync::Arc;
use std::time::Duration;

use super::format::SEG_HEADER_LEN;
use super::io::{Clock, LogIo, StdIo, SystemClock};
use super::LogError;

/// When appended records reach stable storage. See `docs/FORMAT.md`,
/// "Durability", for what each policy guarantees after a process crash and
/// after a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Never sync explicitly (the kernel writes dirty pages back on its own
    /// schedule; a clean [`Log::close`](super::Log::close) syncs).
    Never,
    /// A background thread syncs at this interval what was appended before
    /// its previous sync, and of what came since, all but the last MiB
    /// before the appender: a record is durable within about two intervals
    /// (`docs/FORMAT.md`, "Durability").
    Interval(Duration),
    /// `append` returns only once the record is durable. Concurrent
    /// appenders share one sync (group commit).
    Always,
}

/// Which sealed segments retention deletes. Whole segments only; the tail
/// (the segment being appended to) is never deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete a segment whose newest record is older than this (by record
    /// timestamp against the injected [`Clock`]).
    pub max_age: Option<Duration>,
    /// Delete the oldest segments while the others still hold at least this
    /// many bytes (segment file sizes).
    pub max_bytes: Option<u64>,
    /// Delete the oldest segments while the others still hold at least this
    /// many records.
    pub max_records: Option<u64>,
    /// Delete segments even if a reader or a retention floor still needs
    /// them; the holders then meet an explicit gap.
    pub override_pins: bool,
    /// The oldest a segment may be and still be kept for a reader or a
    /// retention floor (a durable consumer that stopped acknowledging, a
    /// stalled subscriber): past it, the policy deletes it anyway and the
    /// holders meet an explicit gap. `None`: pins keep segments forever.
    pub max_pinned_age: Option<Duration>,
}

impl Retention {
    /// Whether any limit is set: without one, retention deletes nothing.
    pub fn has_limit(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some() || self.max_records.is_some()
    }
}

/// How to open a log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Size each segment file is preallocated and mapped at (4 KiB .. 4 GiB).
    pub segment_size: u64,
    /// Sync policy.
    pub durability: Durability,
    /// Retention policy, enforced on every segment roll and by
    /// [`Log::enforce_retention`](super::Log::enforce_retention).
    pub retention: Retention,
    /// Truncate the log at a corrupt record found in the middle of the log
    /// (instead of failing to open). The torn tail is always truncated.
    pub repair: bool,
    /// Global sequence of the first record of a new, empty log.
    pub initial_seq: u64,
    /// Re-check each record's CRC when a reader returns it.
    pub verify_on_read: bool,
    /// Prefault new segments (of 4 MiB or more) from a short-lived background
    /// thread, taking page faults off the append path.
    pub prefault: bool,
    /// File-system calls (tests inject failures here).
    pub io: Arc<dyn LogIo>,
    /// Clock for retention by age.
    pub clock: Arc<dyn Clock>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size: 64 << 20,
            durability: Durability::Interval(Duration::from_millis(100)),
            retention: Retention::default(),
            repair: false,
            initial_seq: 1,
            verify_on_read: true,
            prefault: true,
            io: Arc::new(StdIo),
            clock: Arc::new(SystemClock),
        }
    }
}

impl LogConfig {
    /// Checks the settings (also done by [`Log::open`](super::Log::open)).
    pub fn validate(&self) -> Result<(), LogError> {
        if self.segment_size < 4096 || self.segment_size > u64::from(u32::MAX) {
            return Err(LogError::InvalidConfig(
                "segment_size must be within 4 KiB ..= 4 GiB - 1",
            ));
        }
        if self.segment_size % 8 != 0 {
            return Err(LogError::InvalidConfig(
                "segment_size must be a multiple of 8",
            ));
        }
        if self.initial_seq == 0 || self.initial_seq == u64::MAX {
            return Err(LogError::InvalidConfig(
                "initial_seq must be within 1 ..= u64::MAX - 1",
            ));
        }
        if let Durability::Interval(d) = self.durability {
            if d.is_zero() {
                return Err(LogError::InvalidConfig(
                    "the sync interval must be positive (to sync every append, use the always policy)",
                ));
            }
        }
        Ok(())
    }

    /// Largest record (header + type + payload, padded) a segment can hold.
    pub fn max_record_len(&self) -> usize {
        self.segment_size as usize - SEG_HEADER_LEN
    }
}
