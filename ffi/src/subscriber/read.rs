//! `herald_subscriber_read`: a batch of deliveries packed as records.

use herald_core::broker::DeliveryRef;

use crate::args::{buf_arg, out_arg, too_small, OutBuf};
use crate::error::{fail, ffi_entry, herald_result};
use crate::herald_result::*;

use super::{borrowed, enter, herald_subscriber, parts, take_next, SubState, Timeout};

/// Bytes of the header of each record written by `herald_subscriber_read`:
/// `sizeof(herald_record_header)`.
pub const HERALD_RECORD_HEADER: usize = 64;

/// The header of each record `herald_subscriber_read` writes: 64 bytes
/// (`HERALD_RECORD_HEADER`) at a multiple of 8 from the buffer's start,
/// followed by the record's body: the payload, topic, event type and
/// correlation id, back to back, then zero padding to a multiple of 8.
/// Fields are little-endian (the native order of the platforms Herald
/// supports).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct herald_record_header {
    /// `HERALD_DELIVERY_EVENT` or `HERALD_DELIVERY_GAP`.
    pub kind: u32,
    /// Bytes from this record's start to the next one's (header, body and
    /// padding; a multiple of 8).
    pub record_len: u32,
    /// Global sequence (events; 0 for gaps).
    pub seq: u64,
    /// Sequence within the topic (events; 0 for gaps).
    pub topic_seq: u64,
    /// Publish time, ns since the Unix epoch (events).
    pub timestamp_ns: u64,
    /// Origin given by the publisher (0 if none).
    pub origin: u64,
    /// Gaps: first missing sequence (inclusive).
    pub gap_from: u64,
    /// Gaps: last missing sequence (inclusive).
    pub gap_to: u64,
    /// Bytes of the payload, the body's first part.
    pub payload_len: u32,
    /// Bytes of the topic (at most 255), after the payload.
    pub topic_len: u8,
    /// Bytes of the event type (at most 128), after the topic.
    pub event_type_len: u8,
    /// Bytes of the correlation id (at most 126; 0: none), after the type.
    pub correlation_len: u8,
    /// Zero.
    pub reserved: u8,
}

// The layout the bindings read, checked at compile time: these offsets, and
// no padding (the fields' sizes add up to the struct's), so that every byte
// `to_bytes` yields is initialised.
const _: () = {
    use std::mem::{offset_of, size_of};
    type H = herald_record_header;
    assert!(size_of::<H>() == HERALD_RECORD_HEADER);
    assert!(offset_of!(H, kind) == 0);
    assert!(offset_of!(H, record_len) == 4);
    assert!(offset_of!(H, seq) == 8);
    assert!(offset_of!(H, topic_seq) == 16);
    assert!(offset_of!(H, timestamp_ns) == 24);
    assert!(offset_of!(H, origin) == 32);
    assert!(offset_of!(H, gap_from) == 40);
    assert!(offset_of!(H, gap_to) == 48);
    assert!(offset_of!(H, payload_len) == 56);
    assert!(offset_of!(H, topic_len) == 60);
    assert!(offset_of!(H, event_type_len) == 61);
    assert!(offset_of!(H, correlation_len) == 62);
    assert!(offset_of!(H, reserved) == 63);
    assert!(4 + 4 + 6 * 8 + 4 + 4 == size_of::<H>());
};

impl herald_record_header {
    /// The header's bytes as they go into the buffer (little-endian).
    fn to_bytes(self) -> [u8; HERALD_RECORD_HEADER] {
        let le = herald_record_header {
            kind: self.kind.to_le(),
            record_len: self.record_len.to_le(),
            seq: self.seq.to_le(),
            topic_seq: self.topic_seq.to_le(),
            timestamp_ns: self.timestamp_ns.to_le(),
            origin: self.origin.to_le(),
            gap_from: self.gap_from.to_le(),
            gap_to: self.gap_to.to_le(),
            payload_len: self.payload_len.to_le(),
            ..self
        };
        // SAFETY: a repr(C) struct of integers with no padding (asserted
        // above) has every one of its 64 bytes initialised, and any bytes
        // are a valid [u8; 64].
        unsafe { std::mem::transmute::<herald_record_header, [u8; HERALD_RECORD_HEADER]>(le) }
    }
}

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
    let header = herald_record_header {
        kind: v.kind,
        record_len: len as u32,
        seq: v.seq,
        topic_seq: v.topic_seq,
        timestamp_ns: v.timestamp_ns,
        origin: v.origin,
        gap_from: v.gap_from,
        gap_to: v.gap_to,
        payload_len: v.payload_len as u32,
        // Topics are at most 255 bytes, types 128, correlation ids 126.
        topic_len: v.topic_len as u8,
        event_type_len: v.event_type_len as u8,
        correlation_len: v.correlation_len as u8,
        reserved: 0,
    };
    buf.write(at, &header.to_bytes());
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
/// Each record starts at a multiple of 8 with a `herald_record_header`
/// (`HERALD_RECORD_HEADER` = 64 bytes, little-endian; `record_len` leads to
/// the next record), followed by the payload, topic, event type and
/// correlation id, then zero padding to a multiple of 8.
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_core::broker::{EventRef, Gap};

    use super::*;
    use crate::{HERALD_DELIVERY_EVENT, HERALD_DELIVERY_GAP};

    /// A record packed byte by byte at the documented offsets (the format
    /// as it was before the header was a struct).
    fn by_hand(kind: u32, fields: [u64; 6], body: [&[u8]; 4]) -> Vec<u8> {
        let body_len: usize = body.iter().map(|b| b.len()).sum();
        let len = (64 + body_len).next_multiple_of(8);
        let mut r = vec![0u8; len];
        r[0..4].copy_from_slice(&kind.to_le_bytes());
        r[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        for (i, x) in fields.into_iter().enumerate() {
            r[8 + 8 * i..16 + 8 * i].copy_from_slice(&x.to_le_bytes());
        }
        r[56..60].copy_from_slice(&(body[0].len() as u32).to_le_bytes());
        r[60] = body[1].len() as u8;
        r[61] = body[2].len() as u8;
        r[62] = body[3].len() as u8;
        let mut at = 64;
        for part in body {
            r[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        r
    }

    #[test]
    fn records_are_the_documented_bytes() {
        let topic: Arc<str> = "acme.orders".into();
        let event = DeliveryRef::Event(EventRef {
            seq: 0x0102_0304_0506_0708,
            topic: &topic,
            topic_seq: 9,
            timestamp_ns: 1_700_000_000_000_000_000,
            origin: u64::MAX,
            event_type: "order.created",
            correlation: "req-1",
            payload: b"{\"id\":1}",
            payload_json: false,
        });
        let gap = DeliveryRef::Gap(Gap {
            topic: Some(topic.clone()),
            from: 3,
            to: 7,
        });
        let mut expected = by_hand(
            HERALD_DELIVERY_EVENT,
            [
                0x0102_0304_0506_0708,
                9,
                1_700_000_000_000_000_000,
                u64::MAX,
                0,
                0,
            ],
            [b"{\"id\":1}", b"acme.orders", b"order.created", b"req-1"],
        );
        let first = expected.len();
        expected.extend(by_hand(
            HERALD_DELIVERY_GAP,
            [0, 0, 0, 0, 3, 7],
            [b"", b"acme.orders", b"", b""],
        ));
        // Filled with non-zero bytes, so unwritten padding would show.
        let mut mem = vec![0xa5u8; 512];
        // A valid buffer of `mem.len()` bytes (the precondition `args` relies on).
        let buf = buf_arg(mem.as_mut_ptr(), mem.len()).unwrap();
        assert_eq!(write_record(&event, buf, 0), Ok(first));
        assert_eq!(write_record(&gap, buf, first), Ok(expected.len()));
        assert_eq!(&mem[..expected.len()], &expected[..]);
        // Too small: the record's length, nothing written.
        let small = buf_arg(mem.as_mut_ptr(), first - 1).unwrap();
        assert_eq!(write_record(&event, small, 0), Err(first));
    }
}
