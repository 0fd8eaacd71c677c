//! The on-disk byte layout of a segment file: constants and pure
//! encode/decode functions. Nothing here touches the file system.
//!
//! `docs/FORMAT.md` documents the same layout byte by byte; the test
//! `core/tests/log_format_doc.rs` parses that document and checks every offset
//! against the constants below. All integers are little-endian. Each offset is
//! built from the previous field's offset and size, so reordering a field is a
//! compile-visible change.

use super::RecordRef;

/// Magic bytes at the start of every segment file.
pub const SEG_MAGIC: [u8; 8] = *b"HRLDLOG\0";
/// Current format version (segment header field `version`): 2 since records
/// may carry a key. Version 1 segments are read unchanged (their records have
/// none); a build of version 1 refuses a version 2 segment instead of
/// misreading it (but not a version 1 tail this build appended keyed
/// records to: `docs/FORMAT.md`, "Versions").
pub const FORMAT_VERSION: u16 = 2;
/// The oldest segment version this build reads.
pub const MIN_FORMAT_VERSION: u16 = 1;
/// Version of the high-water-mark file (`topics.hwm`), unchanged since 1.
pub const HWM_FORMAT_VERSION: u32 = 1;
/// Longest record key, in bytes (see [`REC_KEY_LEN_OFF`]).
pub const MAX_KEY_LEN: usize = 1024;

/// Segment header: `magic` (8 bytes).
pub const SEG_MAGIC_OFF: usize = 0;
/// Segment header: `version` (u16).
pub const SEG_VERSION_OFF: usize = SEG_MAGIC_OFF + 8;
/// Segment header: `header_len` (u16), always [`SEG_HEADER_LEN`].
pub const SEG_HEADER_LEN_OFF: usize = SEG_VERSION_OFF + 2;
/// Segment header: `flags` (u32), zero in version 1.
pub const SEG_FLAGS_OFF: usize = SEG_HEADER_LEN_OFF + 2;
/// Segment flag: the sequences between the previous segment's last record
/// and this segment's `base_seq` were never stored (a replica's stream had
/// dropped them). Without it, such a hole is corruption.
pub const SEG_FLAG_SKIP: u32 = 1;
/// Segment header: `base_seq` (u64), global sequence of the segment's first record.
pub const SEG_BASE_SEQ_OFF: usize = SEG_FLAGS_OFF + 4;
/// Segment header: `segment_size` (u64), the preallocated file size.
pub const SEG_SIZE_OFF: usize = SEG_BASE_SEQ_OFF + 8;
/// Segment header: `created_ns` (u64), wall-clock creation time (informational).
pub const SEG_CREATED_OFF: usize = SEG_SIZE_OFF + 8;
/// Segment header: reserved zero bytes up to the header CRC.
pub const SEG_RESERVED_OFF: usize = SEG_CREATED_OFF + 8;
/// Segment header: `header_crc` (u32), CRC32C of bytes `0..SEG_HEADER_CRC_OFF`.
pub const SEG_HEADER_CRC_OFF: usize = 60;
/// Length of the segment header; the first record starts here.
pub const SEG_HEADER_LEN: usize = SEG_HEADER_CRC_OFF + 4;

/// Record header: `len` (u32), record length without padding (header + type + payload + key).
pub const REC_LEN_OFF: usize = 0;
/// Record header: `crc` (u32), CRC32C of `len` bytes `0..4` then bytes `8..len`.
pub const REC_CRC_OFF: usize = REC_LEN_OFF + 4;
/// Record header: `seq` (u64), dense global sequence.
pub const REC_SEQ_OFF: usize = REC_CRC_OFF + 4;
/// Record header: `topic_id` (u64).
pub const REC_TOPIC_OFF: usize = REC_SEQ_OFF + 8;
/// Record header: `topic_seq` (u64), strictly increasing per topic.
pub const REC_TOPIC_SEQ_OFF: usize = REC_TOPIC_OFF + 8;
/// Record header: `timestamp_ns` (u64), non-decreasing across the log.
pub const REC_TIMESTAMP_OFF: usize = REC_TOPIC_SEQ_OFF + 8;
/// Record header: `origin` (u64).
pub const REC_ORIGIN_OFF: usize = REC_TIMESTAMP_OFF + 8;
/// Record header: `type_len` (u8), length of the event type string.
pub const REC_TYPE_LEN_OFF: usize = REC_ORIGIN_OFF + 8;
/// Record header: `flags` (u8), zero in version 1.
pub const REC_FLAGS_OFF: usize = REC_TYPE_LEN_OFF + 1;
/// Record header: `key_len` (u16), length of the key after the payload (zero
/// in version 1, and for records without a key).
pub const REC_KEY_LEN_OFF: usize = REC_FLAGS_OFF + 1;
/// Record header: `payload_len` (u32).
pub const REC_PAYLOAD_LEN_OFF: usize = REC_KEY_LEN_OFF + 2;
/// Length of the fixed record header; the event type follows, then the payload.
pub const REC_HEADER_LEN: usize = REC_PAYLOAD_LEN_OFF + 4;
/// Every record starts at a multiple of this; padding bytes are zero.
pub const RECORD_ALIGN: usize = 8;
/// Longest event type, in bytes.
pub const MAX_TYPE_LEN: usize = u8::MAX as usize;

/// Name of the topic high-water-mark file in the log directory.
pub const HWM_FILE_NAME: &str = "topics.hwm";
/// Magic bytes at the start of the high-water-mark file.
pub const HWM_MAGIC: [u8; 8] = *b"HRLDHWM\0";
/// High-water-mark file: `magic` (8 bytes).
pub const HWM_MAGIC_OFF: usize = 0;
/// High-water-mark file: `version` (u32).
pub const HWM_VERSION_OFF: usize = HWM_MAGIC_OFF + 8;
/// High-water-mark file: `count` (u32), number of entries.
pub const HWM_COUNT_OFF: usize = HWM_VERSION_OFF + 4;
/// High-water-mark file: first entry; each is `topic_id` (u64) then `last_topic_seq` (u64).
pub const HWM_ENTRIES_OFF: usize = HWM_COUNT_OFF + 4;
/// Bytes per high-water-mark entry; a CRC32C (u32) of everything before it follows the entries.
pub const HWM_ENTRY_LEN: usize = 16;

/// Bytes a record of `len` unpadded bytes occupies in a segment.
#[inline]
pub const fn aligned(len: usize) -> usize {
    (len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

#[inline]
pub(crate) fn get_u16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[off..off + 2]);
    u16::from_le_bytes(a)
}
#[inline]
pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
#[inline]
pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
#[inline]
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Encodes a segment header.
pub(crate) fn encode_segment_header(
    base_seq: u64,
    segment_size: u64,
    created_ns: u64,
    flags: u32,
) -> [u8; SEG_HEADER_LEN] {
    let mut h = [0u8; SEG_HEADER_LEN];
    h[SEG_MAGIC_OFF..SEG_MAGIC_OFF + 8].copy_from_slice(&SEG_MAGIC);
    h[SEG_VERSION_OFF..SEG_VERSION_OFF + 2].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[SEG_HEADER_LEN_OFF..SEG_HEADER_LEN_OFF + 2]
        .copy_from_slice(&(SEG_HEADER_LEN as u16).to_le_bytes());
    put_u32(&mut h, SEG_FLAGS_OFF, flags);
    put_u64(&mut h, SEG_BASE_SEQ_OFF, base_seq);
    put_u64(&mut h, SEG_SIZE_OFF, segment_size);
    put_u64(&mut h, SEG_CREATED_OFF, created_ns);
    let crc = crc32c::crc32c(&h[..SEG_HEADER_CRC_OFF]);
    put_u32(&mut h, SEG_HEADER_CRC_OFF, crc);
    h
}

/// A decoded, validated segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) base_seq: u64,
    pub(crate) segment_size: u64,
    /// The segment follows a skip ([`SEG_FLAG_SKIP`]).
    pub(crate) skip: bool,
}

/// Decodes a segment header; `Err` names what is wrong.
pub(crate) fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, &'static str> {
    if b.len() < SEG_HEADER_LEN {
        return Err("file shorter than the segment header");
    }
    if b[..SEG_HEADER_LEN].iter().all(|&x| x == 0) {
        return Err("all-zero segment header (unwritten)");
    }
    if b[SEG_MAGIC_OFF..SEG_MAGIC_OFF + 8] != SEG_MAGIC {
        return Err("bad magic");
    }
    if crc32c::crc32c(&b[..SEG_HEADER_CRC_OFF]) != get_u32(b, SEG_HEADER_CRC_OFF) {
        return Err("segment header CRC mismatch");
    }
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&get_u16(b, SEG_VERSION_OFF)) {
        return Err("unsupported format version");
    }
    if get_u16(b, SEG_HEADER_LEN_OFF) as usize != SEG_HEADER_LEN {
        return Err("unexpected header length");
    }
    let flags = get_u32(b, SEG_FLAGS_OFF);
    if flags & !SEG_FLAG_SKIP != 0 {
        return Err("unknown segment flags");
    }
    Ok(SegmentHeader {
        base_seq: get_u64(b, SEG_BASE_SEQ_OFF),
        segment_size: get_u64(b, SEG_SIZE_OFF),
        skip: flags & SEG_FLAG_SKIP != 0,
    })
}

/// The fields of a record header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) len: usize,
    pub(crate) seq: u64,
    pub(crate) topic_id: u64,
    pub(crate) topic_seq: u64,
    pub(crate) timestamp_ns: u64,
    pub(crate) origin: u64,
    pub(crate) type_len: usize,
    pub(crate) payload_len: usize,
    pub(crate) key_len: usize,
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordCheck {
    /// `len` and `crc` are both zero: nothing was written here.
    Unwritten,
    /// Something is written but it is not a valid record.
    Invalid(&'static str),
}

/// Validates the record at `off` in `seg` (length bounds, field consistency,
/// CRC). Does not check the sequence number. Never panics for any input.
pub(crate) fn check_record(seg: &[u8], off: usize) -> Result<RecordHeader, RecordCheck> {
    check_record_with(seg, off, true)
}

/// [`check_record`], optionally skipping the CRC (bounds are always checked).
pub(crate) fn check_record_with(
    seg: &[u8],
    off: usize,
    verify_crc: bool,
) -> Result<RecordHeader, RecordCheck> {
    if off
        .checked_add(REC_HEADER_LEN)
        .is_none_or(|e| e > seg.len())
    {
        if seg[off.min(seg.len())..].iter().all(|&b| b == 0) {
            return Err(RecordCheck::Unwritten);
        }
        return Err(RecordCheck::Invalid(
            "record header runs past the end of the segment",
        ));
    }
    let len = get_u32(seg, off + REC_LEN_OFF) as usize;
    let crc = get_u32(seg, off + REC_CRC_OFF);
    if len == 0 && crc == 0 {
        return Err(RecordCheck::Unwritten);
    }
    if len < REC_HEADER_LEN {
        return Err(RecordCheck::Invalid(
            "record length shorter than the record header",
        ));
    }
    if off + aligned(len) > seg.len() {
        return Err(RecordCheck::Invalid(
            "record runs past the end of the segment",
        ));
    }
    let type_len = seg[off + REC_TYPE_LEN_OFF] as usize;
    let payload_len = get_u32(seg, off + REC_PAYLOAD_LEN_OFF) as usize;
    let key_len = get_u16(seg, off + REC_KEY_LEN_OFF) as usize;
    if REC_HEADER_LEN + type_len + payload_len + key_len != len {
        return Err(RecordCheck::Invalid(
            "record length disagrees with type, payload and key lengths",
        ));
    }
    let body = &seg[off..off + len];
    if verify_crc && record_crc(body) != crc {
        return Err(RecordCheck::Invalid("record CRC mismatch"));
    }
    Ok(RecordHeader {
        len,
        seq: get_u64(body, REC_SEQ_OFF),
        topic_id: get_u64(body, REC_TOPIC_OFF),
        topic_seq: get_u64(body, REC_TOPIC_SEQ_OFF),
        timestamp_ns: get_u64(body, REC_TIMESTAMP_OFF),
        origin: get_u64(body, REC_ORIGIN_OFF),
        type_len,
        payload_len,
        key_len,
    })
}

/// Builds the fixed header of `rec` with the CRC field left zero (the
/// appender computes the CRC over the bytes once written: [`record_crc`]).
pub(crate) fn encode_record_header(rec: &RecordRef<'_>) -> [u8; REC_HEADER_LEN] {
    let len = REC_HEADER_LEN + rec.event_type.len() + rec.payload.len() + rec.key.len();
    let mut h = [0u8; REC_HEADER_LEN];
    put_u32(&mut h, REC_LEN_OFF, len as u32);
    put_u64(&mut h, REC_SEQ_OFF, rec.seq);
    put_u64(&mut h, REC_TOPIC_OFF, rec.topic_id);
    put_u64(&mut h, REC_TOPIC_SEQ_OFF, rec.topic_seq);
    put_u64(&mut h, REC_TIMESTAMP_OFF, rec.timestamp_ns);
    put_u64(&mut h, REC_ORIGIN_OFF, rec.origin);
    h[REC_TYPE_LEN_OFF] = rec.event_type.len() as u8;
    put_u16(&mut h, REC_KEY_LEN_OFF, rec.key.len() as u16);
    put_u32(&mut h, REC_PAYLOAD_LEN_OFF, rec.payload.len() as u32);
    h
}

/// The CRC of a record's bytes `body` (`len` bytes, CRC field ignored).
#[inline]
pub(crate) fn record_crc(body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&body[..REC_CRC_OFF]), &body[REC_SEQ_OFF..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_record_passes_its_own_check() {
        let h = encode_record_header(&RecordRef {
            seq: 7,
            topic_id: 1,
            topic_seq: 2,
            timestamp_ns: 3,
            origin: 4,
            event_type: b"t",
            payload: b"payload",
            key: b"",
        });
        let mut buf = vec![0u8; 128];
        buf[..REC_HEADER_LEN].copy_from_slice(&h);
        buf[REC_HEADER_LEN] = b't';
        buf[REC_HEADER_LEN + 1..REC_HEADER_LEN + 8].copy_from_slice(b"payload");
        let crc = record_crc(&buf[..REC_HEADER_LEN + 8]);
        buf[REC_CRC_OFF..REC_CRC_OFF + 4].copy_from_slice(&crc.to_le_bytes());
        let r = check_record(&buf, 0).expect("valid");
        assert_eq!(
            (r.seq, r.topic_id, r.topic_seq, r.timestamp_ns, r.origin),
            (7, 1, 2, 3, 4)
        );
        buf[REC_HEADER_LEN + 3] ^= 1;
        assert!(matches!(
            check_record(&buf, 0),
            Err(RecordCheck::Invalid(_))
        ));
        assert_eq!(check_record(&buf, 64), Err(RecordCheck::Unwritten));
    }

    #[test]
    fn segment_header_round_trips_and_rejects_flips() {
        let mut h = encode_segment_header(42, 1 << 20, 9, 0);
        assert_eq!(
            decode_segment_header(&h),
            Ok(SegmentHeader {
                base_seq: 42,
                segment_size: 1 << 20,
                skip: false,
            })
        );
        let skip = encode_segment_header(42, 1 << 20, 9, SEG_FLAG_SKIP);
        assert!(decode_segment_header(&skip).is_ok_and(|h| h.skip));
        let unknown = encode_segment_header(42, 1 << 20, 9, 2);
        assert_eq!(
            decode_segment_header(&unknown),
            Err("unknown segment flags")
        );
        h[20] ^= 0x10;
        assert!(decode_segment_header(&h).is_err());
    }
}
