//! `herald_subscriber_read`: a batch of deliveries packed as records.

use herald_core::broker::DeliveryRef;

use crate::args::{buf_arg, out_arg, too_small, OutBuf};
use crate::error::{fail, ffi_entry, herald_result};
use crate::herald_result::*;

use super::{borrowed, enter, herald_subscriber, parts, take_next, SubState, Timeout};

/// Bytes of the header of each record written by `herald_subscriber_read`.
pub const HERALD_RECORD_HEADER: usize = 64;

/// Writes `d` as one `herald_subscriber_read` record at `buf[at..]`;
/// `Err(record_len)` if it does not fit in `cap`.
fn write_record(d: &DeliveryRef<'_>, buf: OutBuf, at: usize) -> Result<usize, usize> {
    let v = borrowed(d);
    let parts = parts(d);
    let body: usize = parts.iter().map(|p| p.len()).sum();
    let len = (HERALD_RECORD_HEADER + body + 7) & !7;
    if at + len > buf.cap() {
        return Err(len);
    }
    let mut h = [0u8; HERALD_RECORD_HEADER];
    h[0..4].copy_from_slice(&v.kind.to_le_bytes());
    h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    for (i, x) in [
        v.seq,
        v.topic_seq,
        v.timestamp_ns,
        v.origin,
        v.gap_from,
        v.gap_to,
    ]
    .into_iter()
    .enumerate()
    {
        h[8 + 8 * i..16 + 8 * i].copy_from_slice(&x.to_le_bytes());
    }
    h[56..60].copy_from_slice(&(v.payload_len as u32).to_le_bytes());
    // Topics are at most 255 bytes, types 128, correlation ids 126.
    h[60] = v.topic_len as u8;
    h[61] = v.event_type_len as u8;
    h[62] = v.correlation_len as u8;
    buf.write(at, &h);
    let mut pos = at + HERALD_RECORD_HEADER;
    for part in parts {
        buf.write(pos, part);
        pos += part.len();
    }
    // Zero the padding so the output is deterministic.
    buf.zero(pos, at + len - pos);
    Ok(at + len)
}

/// Reads up to `limit` deliveries in one call, packed into `buf` back to
/// back: the batch form of `herald_subscriber_next`, one boundary crossing
/// for many events (what host bindings use). Waits up to `timeout_ms` for
/// the first delivery (0: no wait, negative: forever; `HERALD_E_TIMEOUT` if
/// none came), then takes whatever else is available now, as long as it
/// fits. `*out_len` gets the bytes written, `*out_count` the records.
///
/// Each record starts at a multiple of 8 and is, little-endian:
/// `u32 kind` (`HERALD_DELIVERY_*`), `u32 record_len` (bytes to the next
/// record), `u64 seq`, `u64 topic_seq`, `u64 timestamp_ns`, `u64 origin`,
/// `u64 gap_from`, `u64 gap_to`, `u32 payload_len`, `u8 topic_len`,
/// `u8 event_type_len`, `u8 correlation_len`, `u8` zero
/// (`HERALD_RECORD_HEADER` = 64 bytes), then the payload, topic, event type
/// and correlation id, then zero padding to a multiple of 8.
///
/// A delivery that does not fit is kept for the next call; if not even the
/// first fits, returns `HERALD_E_BUFFER_TOO_SMALL` with its record length in
/// `*out_len`.
///
/// # Safety
/// `subscriber` NULL or live; `buf` NULL or `cap` writable bytes; outputs
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_read(
    subscriber: *const herald_subscriber,
    buf: *mut u8,
    cap: usize,
    limit: usize,
    out_len: *mut usize,
    out_count: *mut usize,
    timeout_ms: i32,
) -> herald_result {
    ffi_entry!({
        let mut entered = enter(subscriber)?;
        let out_len = out_arg(out_len, "out_len")?;
        let out_count = out_arg(out_count, "out_count")?;
        let buf = buf_arg(buf, cap)?;
        if limit == 0 {
            return Err(fail(HERALD_E_INVALID_ARGUMENT, "limit is 0"));
        }
        let sub_handle = entered.sub;
        let st = entered.state();
        let mut timeout = Timeout::new(timeout_ms);
        loop {
            let SubState { sub, pending, .. } = &mut *st;
            let (mut at, mut count) = (0usize, 0usize);
            while count < limit {
                match take_next(sub, pending, |d| write_record(d, buf, at))? {
                    Some(Ok(end)) => {
                        at = end;
                        count += 1;
                    }
                    // Not even the first record fits.
                    Some(Err(needed)) if count == 0 => {
                        return Err(too_small(out_len, needed, cap, "the next record"));
                    }
                    Some(Err(_)) | None => break,
                }
            }
            if count > 0 {
                out_len.write(at);
                out_count.write(count);
                return Ok(());
            }
            timeout.wait(&sub_handle.wake, st)?;
        }
    })
}
