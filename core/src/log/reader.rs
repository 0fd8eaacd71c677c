//! Readers: replay by global sequence, by topic, by time. Each keeps reading
//! records appended after it was created (it returns `None` when it has caught
//! up; call again later).
//!
//! The read path takes no lock: a reader holds an `Arc` of its current
//! segment and acquire-loads the segment's committed count (see
//! `segment.rs`). Locks are taken only to move to another segment (the
//! segment list's read lock) and, for topic readers, once per batch of up to
//! [`TOPIC_BATCH`] index entries (the topic index's read lock).

use std::collections::VecDeque;
use std::sync::Arc;

use super::format::{check_record_with, RecordCheck};
use super::index::Entry;
use super::retention::ReaderPin;
use super::segment::Segment;
use super::{LogError, RecordRef, Shared};

/// Index entries a topic reader copies per lock acquisition.
pub const TOPIC_BATCH: usize = 256;

/// An owned record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Global sequence.
    pub seq: u64,
    /// Topic id.
    pub topic_id: u64,
    /// Sequence within the topic.
    pub topic_seq: u64,
    /// Timestamp, nanoseconds.
    pub timestamp_ns: u64,
    /// Origin.
    pub origin: u64,
    /// Event type.
    pub event_type: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Key (see [`RecordRef::key`]).
    pub key: Vec<u8>,
}

impl RecordRef<'_> {
    /// Copies the record out of the mapping.
    pub fn to_record(&self) -> Record {
        Record {
            seq: self.seq,
            topic_id: self.topic_id,
            topic_seq: self.topic_seq,
            timestamp_ns: self.timestamp_ns,
            origin: self.origin,
            event_type: self.event_type.to_vec(),
            payload: self.payload.to_vec(),
            key: self.key.to_vec(),
        }
    }
}

/// What a reader yields: a record, or an explicit gap where retention deleted
/// records the reader needed. For [`LogReader`] the gap is in global
/// sequences; for [`TopicReader`] in the topic's sequences. Both bounds are
/// inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadItem<'a> {
    /// The next record.
    Record(RecordRef<'a>),
    /// Records `from..=to` are gone.
    Gap {
        /// First missing sequence.
        from: u64,
        /// Last missing sequence.
        to: u64,
    },
}

/// The owned form of [`ReadItem`], yielded by the readers' `Iterator` impls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogItem {
    /// The next record.
    Record(Record),
    /// Records `from..=to` are gone.
    Gap {
        /// First missing sequence.
        from: u64,
        /// Last missing sequence.
        to: u64,
    },
}

impl ReadItem<'_> {
    /// Copies into the owned form.
    pub fn to_owned_item(&self) -> LogItem {
        match self {
            ReadItem::Record(r) => LogItem::Record(r.to_record()),
            ReadItem::Gap { from, to } => LogItem::Gap {
                from: *from,
                to: *to,
            },
        }
    }
}

/// Reads the record at byte `off` of `seg`, which must be committed, and
/// checks it is `seq`.
fn read_at<'a>(
    seg: &'a Segment,
    off: usize,
    seq: u64,
    verify: bool,
) -> Result<RecordRef<'a>, LogError> {
    let bytes = seg.committed(seg.end());
    let corrupt = |why: &str| LogError::corrupt(seg.path.clone(), off as u64, why);
    let h = check_record_with(bytes, off, verify).map_err(|e| match e {
        RecordCheck::Unwritten => corrupt("committed record reads as unwritten"),
        RecordCheck::Invalid(why) => corrupt(why),
    })?;
    if h.seq != seq {
        return Err(corrupt("record carries an unexpected sequence"));
    }
    // The checked lengths add up to `h.len`: type, payload, then key.
    let body = &bytes[off + super::format::REC_HEADER_LEN..off + h.len];
    let (event_type, rest) = body.split_at(h.type_len);
    let (payload, key) = rest.split_at(h.payload_len);
    Ok(RecordRef {
        seq: h.seq,
        topic_id: h.topic_id,
        topic_seq: h.topic_seq,
        timestamp_ns: h.timestamp_ns,
        origin: h.origin,
        event_type,
        payload,
        key,
    })
}

/// Replays the log by global sequence. Created by
/// [`Log::reader_from_seq`](super::Log::reader_from_seq) or
/// [`Log::reader_from_time`](super::Log::reader_from_time).
#[derive(Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
    seg: Option<Arc<Segment>>,
    idx: u64,
    next_seq: u64,
    pending_gap: Option<(u64, u64)>,
    pin: Arc<ReaderPin>,
    visited: u64,
    /// `(idx, offset)` in `seg` of the last record read: where a lookup
    /// in a released offset table walks from (see `Segment::offset_near`).
    last_read: Option<(u64, usize)>,
}

enum Step {
    Ready,
    CaughtUp,
    Gap(u64, u64),
}

impl LogReader {
    pub(crate) fn new(
        shared: Arc<Shared>,
        next_seq: u64,
        pending_gap: Option<(u64, u64)>,
        pin: Arc<ReaderPin>,
    ) -> Self {
        LogReader {
            shared,
            seg: None,
            idx: 0,
            next_seq,
            pending_gap,
            pin,
            visited: 0,
            last_read: None,
        }
    }

    /// Sequence of the next record this reader will return.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records this reader has read so far.
    pub fn records_visited(&self) -> u64 {
        self.visited
    }

    fn step(&mut self) -> Step {
        if let Some((from, to)) = self.pending_gap.take() {
            return Step::Gap(from, to);
        }
        loop {
            if let Some(seg) = &self.seg {
                if self.idx < seg.count() {
                    return Step::Ready;
                }
                if !seg.is_sealed() {
                    return Step::CaughtUp;
                }
                // Sealed: `count` is final; re-check it after the Acquire of `sealed`.
                if self.idx < seg.count() {
                    return Step::Ready;
                }
                // Read to its end: the pages this reader faulted in go.
                seg.release_pages();
                self.seg = None;
                self.last_read = None;
            }
            match self.shared.locate(self.next_seq) {
                None => return Step::CaughtUp,
                Some(seg) => {
                    if seg.base_seq > self.next_seq {
                        // Deleted by retention (with `override_pins`).
                        let gap = (self.next_seq, seg.base_seq - 1);
                        self.next_seq = seg.base_seq;
                        self.idx = 0;
                        self.pin.set(self.next_seq);
                        self.seg = Some(seg);
                        return Step::Gap(gap.0, gap.1);
                    }
                    self.idx = self.next_seq - seg.base_seq;
                    self.seg = Some(seg);
                }
            }
        }
    }

    /// The next record or gap, borrowed; `None` when caught up with the appender.
    pub fn next_item(&mut self) -> Option<Result<ReadItem<'_>, LogError>> {
        match self.step() {
            Step::CaughtUp => return None,
            Step::Gap(from, to) => return Some(Ok(ReadItem::Gap { from, to })),
            Step::Ready => {}
        }
        let seg = self.seg.as_deref()?;
        let idx = self.idx;
        let off = seg.offset_near(idx, self.last_read);
        let seq = self.next_seq;
        self.idx += 1;
        self.next_seq += 1;
        self.visited += 1;
        self.pin.set(self.next_seq);
        let read = read_at(seg, off, seq, self.shared.config.verify_on_read);
        // A walk starts only from a record that checked out, so one bad
        // length does not mislead the lookups after it.
        if read.is_ok() && seg.offsets_released() {
            self.last_read = Some((idx, off));
        }
        Some(read.map(ReadItem::Record))
    }
}

impl Iterator for LogReader {
    type Item = Result<LogItem, LogError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().map(|r| r.map(|i| i.to_owned_item()))
    }
}

/// Replays one topic. Created by
/// [`Log::reader_from_topic`](super::Log::reader_from_topic). Visits only the
/// topic's own records (see [`TopicReader::records_visited`]).
#[derive(Debug)]
pub struct TopicReader {
    shared: Arc<Shared>,
    topic: u64,
    next_topic_seq: u64,
    buf: VecDeque<Entry>,
    scratch: Vec<Entry>,
    seg: Option<Arc<Segment>>,
    pin: Arc<ReaderPin>,
    visited: u64,
    /// The global sequence of the last record returned (0 before the first).
    last_seq: u64,
    /// `(seq, offset)` in `seg` of the last record read: where a lookup in
    /// a released offset table walks from (see `Segment::offset_near`).
    last_read: Option<(u64, usize)>,
}

impl TopicReader {
    /// The global sequence of the first record this reader will return
    /// (the log's next sequence if the topic has none at or after its
    /// start yet). Exact until the reader moves.
    pub fn start_seq(&self) -> u64 {
        self.pin.get()
    }

    pub(crate) fn new(
        shared: Arc<Shared>,
        topic: u64,
        from_topic_seq: u64,
        pin: Arc<ReaderPin>,
    ) -> Self {
        TopicReader {
            shared,
            topic,
            next_topic_seq: from_topic_seq,
            buf: VecDeque::new(),
            scratch: Vec::new(),
            seg: None,
            pin,
            visited: 0,
            last_seq: 0,
            last_read: None,
        }
    }

    /// Topic sequence of the next record this reader will look for.
    pub fn next_topic_seq(&self) -> u64 {
        self.next_topic_seq
    }

    /// Records this reader has read so far (only the topic's own).
    pub fn records_visited(&self) -> u64 {
        self.visited
    }

    /// Reads the next batch of index entries; returns the gap retention
    /// made before them, if any.
    fn refill(&mut self) -> Result<Option<(u64, u64)>, LogError> {
        let mut gap = None;
        loop {
            self.scratch.clear();
            let fetched = self.shared.topics.read().fetch(
                self.topic,
                self.next_topic_seq,
                TOPIC_BATCH,
                &mut self.scratch,
            );
            let trimmed = fetched
                .map_err(|e| LogError::io("reading the topic index's spill file", None, e))?;
            if trimmed < self.next_topic_seq {
                break;
            }
            // Retention may trim again between two fetches: the gap still
            // starts where the reader was.
            gap = Some((gap.map_or(self.next_topic_seq, |(from, _)| from), trimmed));
            self.next_topic_seq = trimmed + 1;
        }
        self.buf.extend(self.scratch.drain(..));
        Ok(gap)
    }

    /// The next record or gap of the topic, borrowed; `None` when caught up.
    pub fn next_item(&mut self) -> Option<Result<ReadItem<'_>, LogError>> {
        // Skip entries whose segment retention deleted; report them, with
        // those retention dropped from the index, as one gap.
        let mut gap: Option<(u64, u64)> = None;
        if self.buf.is_empty() {
            match self.refill() {
                Ok(trimmed) => gap = trimmed,
                Err(e) => return Some(Err(e)),
            }
        }
        let e = loop {
            let Some(&e) = self.buf.front() else {
                break None;
            };
            let held = self
                .seg
                .as_ref()
                .is_some_and(|s| s.base_seq <= e.seq && e.seq < s.base_seq + s.count());
            if !held {
                match self.shared.locate(e.seq) {
                    Some(seg) if seg.base_seq <= e.seq => {
                        self.seg = Some(seg);
                        self.last_read = None;
                    }
                    _ => {
                        gap = Some((gap.map_or(self.next_topic_seq, |g| g.0), e.topic_seq));
                        self.next_topic_seq = e.topic_seq + 1;
                        self.buf.pop_front();
                        if self.buf.is_empty() {
                            // Stale entries are at most a chunk's (see
                            // `index`): read on, to report one gap.
                            match self.refill() {
                                Ok(trimmed) => {
                                    if let Some((_, to)) = trimmed {
                                        gap = gap.map(|g| (g.0, to));
                                    }
                                }
                                Err(e) => return Some(Err(e)),
                            }
                            if self.buf.is_empty() {
                                break None;
                            }
                        }
                        continue;
                    }
                }
            }
            if gap.is_some() {
                break None;
            }
            break Some(e);
        };
        if let Some((from, to)) = gap {
            self.pin
                .set(self.buf.front().map_or(self.shared.next_seq(), |e| e.seq));
            return Some(Ok(ReadItem::Gap { from, to }));
        }
        let e = e?;
        if e.topic_seq > self.next_topic_seq && self.shared.skip_between(self.last_seq, e.seq) {
            // The topic's sequences jump across a skip: the records between
            // were never this log's (see `Log::skip_to`).
            let gap = (self.next_topic_seq, e.topic_seq - 1);
            self.next_topic_seq = e.topic_seq;
            return Some(Ok(ReadItem::Gap {
                from: gap.0,
                to: gap.1,
            }));
        }
        self.buf.pop_front();
        self.next_topic_seq = e.topic_seq + 1;
        self.last_seq = e.seq;
        self.visited += 1;
        self.pin.set(self.buf.front().map_or(e.seq + 1, |n| n.seq));
        let seg = self.seg.as_deref()?;
        let known = self.last_read.map(|(seq, off)| (seq - seg.base_seq, off));
        let off = seg.offset_near(e.seq - seg.base_seq, known);
        let r = read_at(seg, off, e.seq, self.shared.config.verify_on_read);
        // As in `LogReader::next_item`: only from a record that checked out.
        if r.is_ok() && seg.offsets_released() {
            self.last_read = Some((e.seq, off));
        }
        Some(r.and_then(|v| {
            if v.topic_id != self.topic || v.topic_seq != e.topic_seq {
                Err(LogError::corrupt(
                    seg.path.clone(),
                    off as u64,
                    "topic index disagrees with record",
                ))
            } else {
                Ok(ReadItem::Record(v))
            }
        }))
    }
}

impl Iterator for TopicReader {
    type Item = Result<LogItem, LogError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().map(|r| r.map(|i| i.to_owned_item()))
    }
}
