//! The record decoders behind every delivery the C ABI hands out. The ABI
//! itself only lays records out (it has no decoder); what it delivers was
//! decoded by the core from the log's records (replay) or the ring's
//! (live), so those decoders are fuzzed here:
//! - arbitrary bytes as a log record at an arbitrary offset, a segment
//!   header, and a ring record: no panic, and whatever is accepted
//!   re-encodes to exactly the bytes it was decoded from;
//! - records encoded from fuzzed fields decode to those fields, and any one
//!   corrupted byte of a log record is refused (its CRC32C catches every
//!   error burst of up to 32 bits).
#![no_main]

use arbitrary::Arbitrary;
use herald_core::fuzzing::{self as codec, RingRecord};
use herald_core::log::format::{MAX_KEY_LEN, REC_HEADER_LEN as HDR, SEG_CREATED_OFF};
use herald_core::log::RecordRef;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Input {
    LogBytes { off: u16, bytes: Vec<u8> },
    SegmentHeader(Vec<u8>),
    RingBytes(Vec<u8>),
    LogFields { rec: Fields, flip_at: u16, flip: u8 },
    RingFields(Fields),
}

#[derive(Debug, Arbitrary)]
struct Fields {
    seq: u64,
    topic_id: u64,
    topic_seq: u64,
    timestamp_ns: u64,
    origin: u64,
    event_type: Vec<u8>,
    correlation: Vec<u8>,
    payload: Vec<u8>,
    key: Vec<u8>,
    payload_json: bool,
}

fuzz_target!(|input: Input| match input {
    Input::LogBytes { off, bytes } => log_bytes(&bytes, off as usize),
    Input::SegmentHeader(bytes) => {
        if let Ok((base, size)) = codec::decode_segment_header(&bytes) {
            // The creation time is informational, carried in the header only.
            let created = u64::from_le_bytes(
                bytes[SEG_CREATED_OFF..SEG_CREATED_OFF + 8]
                    .try_into()
                    .unwrap(),
            );
            let again = codec::encode_segment_header(base, size, created);
            assert_eq!(
                &bytes[..again.len()],
                &again[..],
                "segment header re-encodes"
            );
        }
    }
    Input::RingBytes(bytes) => {
        if let Some(r) = codec::parse_ring(&bytes) {
            let mut canonical = bytes.clone();
            canonical[34] &= 1; // flags: bit 0 only
            canonical[35..40].fill(0); // reserved: ignored by the decoder
            assert_eq!(codec::encode_ring(r), canonical, "ring record re-encodes");
        }
    }
    Input::LogFields { rec, flip_at, flip } => log_fields(&rec, flip_at as usize, flip),
    Input::RingFields(f) => {
        let (ty, corr) = (trim(&f.event_type, 255), trim(&f.correlation, 255));
        let r: RingRecord<'_> = (
            f.topic_id,
            f.topic_seq,
            f.timestamp_ns,
            f.origin,
            ty,
            corr,
            &f.payload,
            f.payload_json,
        );
        let bytes = codec::encode_ring(r);
        assert_eq!(
            codec::parse_ring(&bytes),
            Some(r),
            "ring record round-trips"
        );
        if !bytes.is_empty() && (!ty.is_empty() || !corr.is_empty()) {
            // Type and correlation lengths past the end are refused.
            let cut = 40 + ty.len() + corr.len() - 1;
            assert_eq!(codec::parse_ring(&bytes[..cut]), None);
        }
    }
});

fn trim(b: &[u8], max: usize) -> &[u8] {
    &b[..b.len().min(max)]
}

fn log_bytes(seg: &[u8], off: usize) {
    let Ok(h) = codec::check_record(seg, off) else {
        return;
    };
    assert!(h.len >= HDR && off + h.len <= seg.len());
    assert_eq!(h.len, HDR + h.type_len + h.payload_len + h.key_len);
    let body = &seg[off..off + h.len];
    let ty = &body[HDR..HDR + h.type_len];
    let payload = &body[HDR + h.type_len..HDR + h.type_len + h.payload_len];
    let key = &body[HDR + h.type_len + h.payload_len..];
    let again = codec::encode_record(&RecordRef {
        seq: h.seq,
        topic_id: h.topic_id,
        topic_seq: h.topic_seq,
        timestamp_ns: h.timestamp_ns,
        origin: h.origin,
        event_type: ty,
        payload,
        key,
    });
    // Header fields not decoded (flags, reserved) are covered by the CRC,
    // so an accepted record is exactly what the encoder writes.
    assert_eq!(&again[..h.len], body, "accepted record re-encodes");
    let (t, c) = codec::split_log_type(ty);
    assert!(t.len() + c.len() <= ty.len() && ty.starts_with(t) && ty.ends_with(c));
}

fn log_fields(f: &Fields, flip_at: usize, flip: u8) {
    // The log's type field is at most 255 bytes.
    let ty = trim(&f.event_type, 255);
    let payload = trim(&f.payload, 4096);
    let key = trim(&f.key, MAX_KEY_LEN);
    let rec = RecordRef {
        seq: f.seq,
        topic_id: f.topic_id,
        topic_seq: f.topic_seq,
        timestamp_ns: f.timestamp_ns,
        origin: f.origin,
        event_type: ty,
        payload,
        key,
    };
    let mut seg = codec::encode_record(&rec);
    let len = HDR + ty.len() + payload.len() + key.len();
    assert_eq!(seg.len() % 8, 0);
    let h = codec::check_record(&seg, 0).expect("an encoded record is valid");
    assert_eq!(
        (
            h.len,
            h.seq,
            h.topic_id,
            h.topic_seq,
            h.timestamp_ns,
            h.origin,
            h.type_len,
            h.payload_len,
            h.key_len
        ),
        (
            len,
            f.seq,
            f.topic_id,
            f.topic_seq,
            f.timestamp_ns,
            f.origin,
            ty.len(),
            payload.len(),
            key.len()
        )
    );
    if flip != 0 {
        seg[flip_at % len] ^= flip;
        assert!(
            codec::check_record(&seg, 0).is_err(),
            "a corrupted byte at {} went unnoticed",
            flip_at % len
        );
    }
}
