//! `herald_delivery`, the description of one delivery that poll and next
//! hand over, and its making from the core's deliveries.

use std::ffi::c_char;

use herald_core::broker::{DeliveryRef, EventRef, Gap};

/// A delivery that is an event.
pub const HERALD_DELIVERY_EVENT: u32 = 0;
/// A delivery that is a gap notice: events `gap_from..=gap_to` were deleted
/// by retention before this subscriber read them (topic sequences if
/// `topic_len > 0`, else global sequences). Never silence: always this.
pub const HERALD_DELIVERY_GAP: u32 = 1;

/// One delivery: an event or a gap notice.
///
/// In a `herald_subscriber_poll` callback the pointers borrow the library's
/// memory and are valid only during the callback. From
/// `herald_subscriber_next` they point into the caller's buffer, laid out as
/// payload, topic, event type, correlation id, back to back from offset 0
/// (so `payload == buf`). Strings are not NUL-terminated.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct herald_delivery {
    /// `HERALD_DELIVERY_EVENT` or `HERALD_DELIVERY_GAP`.
    pub kind: u32,
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
    /// Topic name (events; gaps of a single-topic subscriber).
    pub topic: *const c_char,
    /// Length of `topic`.
    pub topic_len: usize,
    /// Event type.
    pub event_type: *const c_char,
    /// Length of `event_type`.
    pub event_type_len: usize,
    /// Correlation id (length 0: none).
    pub correlation: *const c_char,
    /// Length of `correlation`.
    pub correlation_len: usize,
    /// Payload.
    pub payload: *const u8,
    /// Length of `payload`.
    pub payload_len: usize,
}

fn event_delivery(e: &EventRef<'_>) -> herald_delivery {
    herald_delivery {
        kind: HERALD_DELIVERY_EVENT,
        seq: e.seq,
        topic_seq: e.topic_seq,
        timestamp_ns: e.timestamp_ns,
        origin: e.origin,
        gap_from: 0,
        gap_to: 0,
        topic: e.topic.as_ptr().cast(),
        topic_len: e.topic.len(),
        event_type: e.event_type.as_ptr().cast(),
        event_type_len: e.event_type.len(),
        correlation: e.correlation.as_ptr().cast(),
        correlation_len: e.correlation.len(),
        payload: e.payload.as_ptr(),
        payload_len: e.payload.len(),
    }
}

fn gap_delivery(g: &Gap) -> herald_delivery {
    let topic: &str = g.topic.as_deref().unwrap_or("");
    herald_delivery {
        kind: HERALD_DELIVERY_GAP,
        seq: 0,
        topic_seq: 0,
        timestamp_ns: 0,
        origin: 0,
        gap_from: g.from,
        gap_to: g.to,
        topic: topic.as_ptr().cast(),
        topic_len: topic.len(),
        event_type: "".as_ptr().cast(),
        event_type_len: 0,
        correlation: "".as_ptr().cast(),
        correlation_len: 0,
        payload: [].as_ptr(),
        payload_len: 0,
    }
}

/// The variable-length parts of a delivery, in the order next and read
/// copy them: payload, topic, event type, correlation id.
pub(super) fn parts<'d>(d: &'d DeliveryRef<'_>) -> [&'d [u8]; 4] {
    match d {
        DeliveryRef::Event(e) => [
            e.payload,
            e.topic.as_bytes(),
            e.event_type.as_bytes(),
            e.correlation.as_bytes(),
        ],
        DeliveryRef::Gap(g) => [&[], g.topic.as_deref().unwrap_or("").as_bytes(), &[], &[]],
    }
}

pub(super) fn borrowed(d: &DeliveryRef<'_>) -> herald_delivery {
    match d {
        DeliveryRef::Event(e) => event_delivery(e),
        DeliveryRef::Gap(g) => gap_delivery(g),
    }
}
