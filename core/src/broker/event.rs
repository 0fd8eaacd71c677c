//! Events as the broker stores and delivers them, and their encodings.
//!
//! In the **ring** a record is a 40-byte header followed by the type, the
//! correlation id and the payload (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | topic id |
//! | 8 | 8 | topic sequence |
//! | 16 | 8 | timestamp, ns since the Unix epoch |
//! | 24 | 8 | origin |
//! | 32 | 1 | type length |
//! | 33 | 1 | correlation id length |
//! | 34 | 1 | flags: bit 0 set if the publisher checked that the payload is JSON |
//! | 35 | 5 | zero |
//! | 40 | … | type, correlation id, payload |
//!
//! The ring sequence *is* the global sequence (the broker starts the ring where
//! the log ends and feeds both in the same order).
//!
//! In the **log** the record's `event_type` field holds the type, followed by
//! a NUL byte and the correlation id when there is one (types and correlation
//! ids never contain NUL).

use std::sync::Arc;

use super::BrokerError;

/// Longest event type, in bytes.
pub const MAX_TYPE_LEN: usize = 128;
/// Longest correlation id, in bytes.
pub const MAX_CORRELATION_LEN: usize = 126;

pub(crate) const RING_HEADER: usize = 40;

/// Event types: 1 to 128 bytes of ASCII letters, digits and `_ . : -`.
pub fn validate_event_type(event_type: &str) -> Result<(), BrokerError> {
    let ok = !event_type.is_empty()
        && event_type.len() <= MAX_TYPE_LEN
        && event_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::InvalidEventType(event_type.to_owned()))
    }
}

/// Correlation ids: up to 126 bytes of printable ASCII (no spaces).
pub fn validate_correlation(id: &str) -> Result<(), BrokerError> {
    if id.len() <= MAX_CORRELATION_LEN && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(BrokerError::InvalidCorrelation(id.to_owned()))
    }
}

/// An event being delivered, borrowed from the subscription's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Global sequence: dense and increasing across all topics.
    pub seq: u64,
    /// Topic name.
    pub topic: &'a Arc<str>,
    /// Sequence within the topic: dense and increasing per topic.
    pub topic_seq: u64,
    /// Publish time, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Origin given by the publisher (0 if none).
    pub origin: u64,
    /// Event type, e.g. `order.created`.
    pub event_type: &'a str,
    /// Correlation id, empty if none.
    pub correlation: &'a str,
    /// Payload, usually JSON.
    pub payload: &'a [u8],
    /// The publisher checked that the payload is JSON
    /// ([`super::PublishOptions::payload_is_json`]), so it may be passed on
    /// as JSON unchecked. Only live events carry it: false for events read
    /// from the log, whose payloads a reader that needs JSON checks.
    pub payload_json: bool,
}

impl EventRef<'_> {
    /// Copies into an owned [`Event`].
    pub fn to_event(&self) -> Event {
        Event {
            seq: self.seq,
            topic: self.topic.clone(),
            topic_seq: self.topic_seq,
            timestamp_ns: self.timestamp_ns,
            origin: self.origin,
            event_type: self.event_type.to_owned(),
            correlation: (!self.correlation.is_empty()).then(|| self.correlation.to_owned()),
            payload: self.payload.to_vec(),
        }
    }
}

/// An owned event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Global sequence.
    pub seq: u64,
    /// Topic name.
    pub topic: Arc<str>,
    /// Sequence within the topic.
    pub topic_seq: u64,
    /// Publish time, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Origin given by the publisher (0 if none).
    pub origin: u64,
    /// Event type.
    pub event_type: String,
    /// Correlation id.
    pub correlation: Option<String>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Events a subscriber needed that retention deleted before it read them:
/// never silence, always this notice. Bounds are inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// `Some(topic)`: `from..=to` are that topic's sequences (single-topic
    /// subscriptions). `None`: they are global sequences.
    pub topic: Option<Arc<str>>,
    /// First missing sequence.
    pub from: u64,
    /// Last missing sequence.
    pub to: u64,
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The next event its filter selects.
    Event(Event),
    /// An explicit gap.
    Gap(Gap),
}

/// The borrowed form of [`Delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryRef<'a> {
    /// The next event its filter selects.
    Event(EventRef<'a>),
    /// An explicit gap.
    Gap(Gap),
}

impl Delivery {
    /// Borrows it as the [`DeliveryRef`] a live delivery would be (a gap
    /// notice is cloned: it is small).
    pub fn as_delivery_ref(&self) -> DeliveryRef<'_> {
        match self {
            Delivery::Event(e) => DeliveryRef::Event(EventRef {
                seq: e.seq,
                topic: &e.topic,
                topic_seq: e.topic_seq,
                timestamp_ns: e.timestamp_ns,
                origin: e.origin,
                event_type: &e.event_type,
                correlation: e.correlation.as_deref().unwrap_or(""),
                payload: &e.payload,
                payload_json: false,
            }),
            Delivery::Gap(g) => DeliveryRef::Gap(g.clone()),
        }
    }
}

impl DeliveryRef<'_> {
    /// Copies into an owned [`Delivery`].
    pub fn to_owned_delivery(&self) -> Delivery {
        match self {
            DeliveryRef::Event(e) => Delivery::Event(e.to_event()),
            DeliveryRef::Gap(g) => Delivery::Gap(g.clone()),
        }
    }
}

/// The fields of a record, without its topic name resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) topic_id: u64,
    pub(crate) topic_seq: u64,
    pub(crate) timestamp_ns: u64,
    pub(crate) origin: u64,
    pub(crate) event_type: &'a [u8],
    pub(crate) correlation: &'a [u8],
    pub(crate) payload: &'a [u8],
    /// See [`super::PublishOptions::payload_is_json`].
    pub(crate) payload_json: bool,
}

/// Ring header flag: the publisher checked that the payload is JSON.
const RING_PAYLOAD_JSON: u8 = 1;

/// Writes the ring header of `f` (type, correlation and payload follow it).
pub(crate) fn ring_header(f: &Fields<'_>) -> [u8; RING_HEADER] {
    let mut h = [0u8; RING_HEADER];
    h[0..8].copy_from_slice(&f.topic_id.to_le_bytes());
    h[8..16].copy_from_slice(&f.topic_seq.to_le_bytes());
    h[16..24].copy_from_slice(&f.timestamp_ns.to_le_bytes());
    h[24..32].copy_from_slice(&f.origin.to_le_bytes());
    h[32] = f.event_type.len() as u8;
    h[33] = f.correlation.len() as u8;
    h[34] = if f.payload_json { RING_PAYLOAD_JSON } else { 0 };
    h
}

/// Parses a ring record; `None` if it is not one the broker wrote.
pub(crate) fn parse_ring(bytes: &[u8]) -> Option<Fields<'_>> {
    let header = bytes.get(..RING_HEADER)?;
    let u = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
    let (type_len, corr_len) = (header[32] as usize, header[33] as usize);
    let body = &bytes[RING_HEADER..];
    if body.len() < type_len + corr_len {
        return None;
    }
    let (event_type, rest) = body.split_at(type_len);
    let (correlation, payload) = rest.split_at(corr_len);
    Some(Fields {
        topic_id: u(0),
        topic_seq: u(8),
        timestamp_ns: u(16),
        origin: u(24),
        event_type,
        correlation,
        payload,
        payload_json: header[34] & RING_PAYLOAD_JSON != 0,
    })
}

/// Splits the log's `event_type` field into type and correlation id.
pub(crate) fn split_log_type(field: &[u8]) -> (&[u8], &[u8]) {
    match field.iter().position(|&b| b == 0) {
        Some(nul) => (&field[..nul], &field[nul + 1..]),
        None => (field, &[]),
    }
}
