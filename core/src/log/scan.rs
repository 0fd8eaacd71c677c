//! Walking the records of one segment's bytes: the pure core of recovery,
//! verification and the fuzz target. Never panics, whatever the bytes.

use super::format::{aligned, check_record, get_u32, get_u64, RecordCheck, RecordHeader};
use super::format::{REC_HEADER_LEN, REC_SEQ_OFF, SEG_HEADER_LEN};

/// What a scan of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanOutcome {
    /// Valid, contiguous records from the start of the segment.
    pub(crate) records: u64,
    /// Byte offset just past the last valid record.
    pub(crate) end: usize,
    /// Timestamp of the last valid record (or the `prev_ts` passed in).
    pub(crate) last_ts: u64,
    /// Why the scan stopped before the unwritten (all-zero) region, if it did.
    pub(crate) invalid: Option<&'static str>,
    /// End of the last non-zero byte at or after `end` (`== end` if the rest is zero).
    pub(crate) dirty_end: usize,
    /// A valid record with a later sequence exists after `end`: the damage is
    /// in the middle of written data, not a torn tail.
    pub(crate) valid_after: bool,
}

/// Scans `bytes` (a whole segment, header included) for records starting
/// with sequence `base_seq`. `prev_ts` is the previous record's timestamp
/// (timestamps never decrease). `on_record(offset, header)` may reject a
/// record (e.g. a topic sequence regression), which ends the scan there.
pub(crate) fn scan_segment(
    bytes: &[u8],
    base_seq: u64,
    prev_ts: u64,
    mut on_record: impl FnMut(usize, &RecordHeader) -> Result<(), &'static str>,
) -> ScanOutcome {
    let mut off = SEG_HEADER_LEN.min(bytes.len());
    let mut records = 0u64;
    let mut last_ts = prev_ts;
    let mut invalid = None;
    loop {
        if off >= bytes.len() {
            break;
        }
        match check_record(bytes, off) {
            Ok(h) => {
                let expected = base_seq.wrapping_add(records);
                if h.seq != expected {
                    invalid = Some("sequence discontinuity");
                    break;
                }
                if h.timestamp_ns < last_ts {
                    invalid = Some("timestamp older than the previous record's");
                    break;
                }
                if let Err(why) = on_record(off, &h) {
                    invalid = Some(why);
                    break;
                }
                last_ts = h.timestamp_ns;
                records += 1;
                off += aligned(h.len);
            }
            Err(RecordCheck::Unwritten) => break,
            Err(RecordCheck::Invalid(why)) => {
                invalid = Some(why);
                break;
            }
        }
    }
    let end = off.min(bytes.len());
    let dirty_end = last_nonzero_end(bytes, end);
    let valid_after = dirty_end > end
        && later_valid_record(bytes, end, dirty_end, base_seq.wrapping_add(records));
    ScanOutcome {
        records,
        end,
        last_ts,
        invalid,
        dirty_end,
        valid_after,
    }
}

/// The offset just past the last non-zero byte in `bytes[from..]`, or `from`.
fn last_nonzero_end(bytes: &[u8], from: usize) -> usize {
    let tail = &bytes[from..];
    // Word-at-a-time from the back: unwritten tails are mostly long zero runs.
    let mut end = tail.len();
    while end >= 8 {
        if get_u64(tail, end - 8) != 0 {
            break;
        }
        end -= 8;
    }
    while end > 0 && tail[end - 1] == 0 {
        end -= 1;
    }
    from + end
}

/// Whether some 8-aligned offset in `from..to` holds a valid record whose
/// sequence is `>= expected`.
fn later_valid_record(bytes: &[u8], from: usize, to: usize, expected: u64) -> bool {
    let mut p = aligned(from + 1);
    while p + REC_HEADER_LEN <= to.min(bytes.len()) {
        // Cheap filter before the CRC: a plausible length and sequence.
        let len = get_u32(bytes, p) as usize;
        let seq = get_u64(bytes, p + REC_SEQ_OFF);
        if len >= REC_HEADER_LEN && seq >= expected && seq - expected < (1 << 32) {
            if let Ok(h) = check_record(bytes, p) {
                if h.seq >= expected {
                    return true;
                }
            }
        }
        p += 8;
    }
    false
}
