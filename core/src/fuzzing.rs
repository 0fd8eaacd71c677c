//! Entry points for the fuzz targets in `fuzz/`, not a stable API.
//!
//! Thin wrappers around the crate-private record codecs (the log's segment
//! and record layout, the ring's record layout), so that the targets decode
//! with exactly the code the broker runs.

use crate::broker::event;
use crate::log::format;
use crate::log::RecordRef;

/// A log record header, decoded and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord {
    /// Record length without padding (header, type, payload).
    pub len: usize,
    /// Global sequence.
    pub seq: u64,
    /// Topic id.
    pub topic_id: u64,
    /// Topic sequence.
    pub topic_seq: u64,
    /// Timestamp.
    pub timestamp_ns: u64,
    /// Origin.
    pub origin: u64,
    /// Length of the type field.
    pub type_len: usize,
    /// Length of the payload.
    pub payload_len: usize,
    /// Length of the key.
    pub key_len: usize,
}

/// Validates the log record at `off` in `seg`. `Err(None)`: nothing written
/// there; `Err(Some(why))`: invalid.
pub fn check_record(seg: &[u8], off: usize) -> Result<LogRecord, Option<&'static str>> {
    match format::check_record(seg, off) {
        Ok(h) => Ok(LogRecord {
            len: h.len,
            seq: h.seq,
            topic_id: h.topic_id,
            topic_seq: h.topic_seq,
            timestamp_ns: h.timestamp_ns,
            origin: h.origin,
            type_len: h.type_len,
            payload_len: h.payload_len,
            key_len: h.key_len,
        }),
        Err(format::RecordCheck::Unwritten) => Err(None),
        Err(format::RecordCheck::Invalid(why)) => Err(Some(why)),
    }
}

/// A record as the appender writes it: header, type, payload, CRC set,
/// zero padding to the record alignment.
pub fn encode_record(r: &RecordRef<'_>) -> Vec<u8> {
    let h = format::encode_record_header(r);
    let len = format::REC_HEADER_LEN + r.event_type.len() + r.payload.len() + r.key.len();
    let mut out = Vec::with_capacity(format::aligned(len));
    out.extend_from_slice(&h);
    out.extend_from_slice(r.event_type);
    out.extend_from_slice(r.payload);
    out.extend_from_slice(r.key);
    let crc = format::record_crc(&out);
    out[format::REC_CRC_OFF..format::REC_CRC_OFF + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(format::aligned(len), 0);
    out
}

/// Decodes a segment header: `(base_seq, segment_size)`.
pub fn decode_segment_header(b: &[u8]) -> Result<(u64, u64), &'static str> {
    format::decode_segment_header(b).map(|h| (h.base_seq, h.segment_size))
}

/// Encodes a segment header.
pub fn encode_segment_header(base_seq: u64, segment_size: u64, created_ns: u64) -> Vec<u8> {
    format::encode_segment_header(base_seq, segment_size, created_ns, 0).to_vec()
}

/// A ring record's fields: topic id, topic sequence, timestamp, origin,
/// type, correlation id, payload, and whether the payload is checked JSON.
pub type RingRecord<'a> = (u64, u64, u64, u64, &'a [u8], &'a [u8], &'a [u8], bool);

/// Decodes a ring record; `None` if it is not one the broker could write.
pub fn parse_ring(bytes: &[u8]) -> Option<RingRecord<'_>> {
    event::parse_ring(bytes).map(|f| {
        (
            f.topic_id,
            f.topic_seq,
            f.timestamp_ns,
            f.origin,
            f.event_type,
            f.correlation,
            f.payload,
            f.payload_json,
        )
    })
}

/// Encodes a ring record (header, then type, correlation id, payload).
pub fn encode_ring(r: RingRecord<'_>) -> Vec<u8> {
    let f = event::Fields {
        topic_id: r.0,
        topic_seq: r.1,
        timestamp_ns: r.2,
        origin: r.3,
        event_type: r.4,
        correlation: r.5,
        payload: r.6,
        payload_json: r.7,
    };
    let mut out = event::ring_header(&f).to_vec();
    out.extend_from_slice(r.4);
    out.extend_from_slice(r.5);
    out.extend_from_slice(r.6);
    out
}

/// Splits a log record's type field into event type and correlation id.
pub fn split_log_type(field: &[u8]) -> (&[u8], &[u8]) {
    event::split_log_type(field)
}
