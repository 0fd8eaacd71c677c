//! How events leave the server: Server-Sent Events frames and JSON objects.

use std::io::Write as _;

use herald_core::broker::{DeliveryRef, EventRef, Gap};
use serde_json::{json, Value};

/// The payload as JSON: itself if it is valid JSON, else a string.
pub(crate) fn payload_json(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

/// An event as the JSON object of the protocol (`docs/PROTOCOL.md`).
/// The client's name for a broker topic: without the tenant prefix
/// (`prefix_len` bytes), which presence topics carry after `$presence.`.
pub(crate) fn external_topic(topic: &str, prefix_len: usize) -> String {
    const PRESENCE: &str = "$presence.";
    match topic.strip_prefix(PRESENCE) {
        Some(rest) if prefix_len > 0 => {
            format!("{PRESENCE}{}", rest.get(prefix_len..).unwrap_or(rest))
        }
        _ => topic.get(prefix_len..).unwrap_or(topic).to_owned(),
    }
}

/// `prefix_len`: bytes of tenant prefix to strip from the topic name.
pub(crate) fn event_json(e: &EventRef<'_>, prefix_len: usize) -> Value {
    let mut v = json!({
        "seq": e.seq,
        "topic": external_topic(e.topic, prefix_len),
        "topic_seq": e.topic_seq,
        "type": e.event_type,
        "timestamp_ns": e.timestamp_ns,
        "data": payload_json(e.payload),
    });
    if e.origin != 0 {
        v["origin"] = json!(e.origin);
    }
    if !e.correlation.is_empty() {
        v["correlation_id"] = json!(e.correlation);
    }
    v
}

/// A gap notice as JSON.
pub(crate) fn gap_json(g: &Gap, prefix_len: usize) -> Value {
    let mut v = json!({ "gap": { "from": g.from, "to": g.to } });
    if let Some(topic) = &g.topic {
        v["gap"]["topic"] = json!(external_topic(topic, prefix_len));
    }
    v
}

/// Appends one SSE frame for `d` to `out`. `topic_ids`: the `id:` field is
/// the topic sequence (single-topic streams) rather than the global one.
pub(crate) fn sse_frame(
    out: &mut Vec<u8>,
    d: &DeliveryRef<'_>,
    topic_ids: bool,
    prefix_len: usize,
) {
    // Written straight into the connection's output: no per-event buffer.
    // (Writing into a Vec cannot fail.)
    match d {
        DeliveryRef::Event(e) => {
            let id = if topic_ids { e.topic_seq } else { e.seq };
            let _ = write!(out, "id: {id}\nevent: {}\n", e.event_type);
            // The payload, one `data:` line per line of it (SSE joins them
            // back with newlines).
            for line in e.payload.split(|&b| b == b'\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
                out.push(b'\n');
            }
            out.push(b'\n');
        }
        DeliveryRef::Gap(g) => {
            let _ = write!(out, "event: gap\ndata: {}\n\n", gap_json(g, prefix_len));
        }
    }
}
