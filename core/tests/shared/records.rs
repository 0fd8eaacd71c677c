//! The record most log tests append: topic 1, type `e`, its sequence as
//! its topic sequence and timestamp. Included by path (`#[path]`) by the
//! tests that append such records.

use herald_core::log::{AppendInfo, Log, RecordRef};

/// The record of sequence `seq` carrying `payload`.
pub(crate) fn record(seq: u64, payload: &[u8]) -> RecordRef<'_> {
    RecordRef {
        seq,
        topic_id: 1,
        topic_seq: seq,
        timestamp_ns: seq,
        origin: 0,
        event_type: b"e",
        payload,
        key: b"",
    }
}

/// Appends the log's next record, carrying `payload`.
#[allow(dead_code)] // not every test that includes this appends through it
pub(crate) fn append_next(log: &Log, payload: &[u8]) -> AppendInfo {
    log.append(&record(log.next_seq(), payload))
        .expect("append")
}
