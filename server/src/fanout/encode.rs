//! How events leave the server: the per-event frame cache shared by a
//! worker's streams, and the encoders of SSE frames, WebSocket messages
//! and poll answers.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use herald_core::broker::{split_system, DeliveryRef, EventRef, Gap, PRESENCE_PREFIX};
use herald_core::json;

use super::Encoding;
use crate::conn::output::Output;
use crate::wire::stomp;
use serde::Serialize;

/// The client's name for a broker topic: without the tenant prefix
/// (`prefix_len` bytes), which system topics carry after their system
/// prefix (`$presence.`, `$deadletter.`).
pub(crate) fn external_topic(topic: &str, prefix_len: usize) -> Cow<'_, str> {
    match split_system(topic) {
        (system, rest) if prefix_len > 0 && !system.is_empty() => Cow::Owned(format!(
            "{system}{}",
            rest.get(prefix_len..).unwrap_or(rest)
        )),
        _ => Cow::Borrowed(topic.get(prefix_len..).unwrap_or(topic)),
    }
}

/// An event's payload as the client sees it. Presence events name their
/// topic first (`{"topic":"acme.room",…}`, as the broker writes them, and
/// only the broker writes system topics): the client's name for it has no
/// tenant prefix, like the event's own topic.
fn client_payload<'p>(e: &EventRef<'p>, prefix_len: usize) -> Cow<'p, [u8]> {
    const HEAD: &[u8] = br#"{"topic":""#;
    let tail = (e.topic.starts_with(PRESENCE_PREFIX) && prefix_len > 0)
        .then(|| e.payload.strip_prefix(HEAD)?.get(prefix_len..))
        .flatten();
    match tail {
        Some(tail) => Cow::Owned([HEAD, tail].concat()),
        None => Cow::Borrowed(e.payload),
    }
}

/// The prefix length that an event's encoding depends on: only presence
/// payloads name a tenant-prefixed topic.
fn payload_prefix(e: &EventRef<'_>, prefix_len: usize) -> usize {
    if e.topic.starts_with(PRESENCE_PREFIX) {
        prefix_len
    } else {
        0
    }
}

/// A gap notice's fields: `from..=to`, topic sequences if `topic` is set.
#[derive(Serialize)]
struct GapFields {
    from: u64,
    to: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
}

impl GapFields {
    fn new(g: &Gap, prefix_len: usize) -> GapFields {
        GapFields {
            from: g.from,
            to: g.to,
            topic: g
                .topic
                .as_ref()
                .map(|t| external_topic(t, prefix_len).into_owned()),
        }
    }
}

/// A gap notice as SSE data and in poll answers: `{"gap": {…}}`.
#[derive(Serialize)]
struct GapNotice {
    gap: GapFields,
}

/// A gap notice as a WebSocket message: `{"type":"gap","sub":…,…}`.
#[derive(Serialize)]
struct WsGap<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sub: &'a str,
    #[serde(flatten)]
    gap: GapFields,
}

/// Appends a gap notice `{"gap": {…}}`.
fn gap_notice(out: &mut BytesMut, g: &Gap, prefix_len: usize) {
    let notice = GapNotice {
        gap: GapFields::new(g, prefix_len),
    };
    // Serializing into a BytesMut cannot fail.
    let _ = serde_json::to_writer(out.writer(), &notice);
}

/// How an SSE stream frames its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SseForm {
    /// `id:` is the topic sequence (single-topic streams), not the global one.
    pub(crate) topic_ids: bool,
    /// `data:` is the event object (its topic, type, sequences and payload,
    /// as in poll answers) rather than the payload alone: on multi-topic
    /// streams, whose clients must tell topics apart, and unnamed ones.
    pub(crate) objects: bool,
    /// `event:` names each frame (the event type, `gap`, `reset`,
    /// `connected`). Unnamed frames all reach `EventSource.onmessage`.
    pub(crate) named: bool,
}

impl SseForm {
    /// The form of a stream on one topic or several, named or not.
    pub(crate) fn new(single: bool, named: bool) -> SseForm {
        SseForm {
            topic_ids: single,
            objects: !single || !named,
            named,
        }
    }
}

/// Appends one SSE frame for `d` to `out`.
pub(crate) fn sse_frame(out: &mut BytesMut, d: &DeliveryRef<'_>, form: SseForm, prefix_len: usize) {
    match d {
        DeliveryRef::Event(e) => {
            let id = if form.topic_ids { e.topic_seq } else { e.seq };
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
            out.extend_from_slice(b"\n");
            if form.named {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(e.event_type.as_bytes());
                out.extend_from_slice(b"\n");
            }
            if form.objects {
                // Written in place: only a payload with line breaks (not
                // from the server's own publish, which removes them) is
                // split into `data:` lines afterwards.
                out.extend_from_slice(b"data: ");
                let start = out.len();
                event_object(out, e, prefix_len);
                if memchr::memchr(b'\n', &out[start..]).is_some() {
                    let object = out.split_off(start);
                    out.truncate(start - b"data: ".len());
                    sse_data(out, &object);
                } else {
                    out.extend_from_slice(b"\n\n");
                }
            } else {
                sse_data(out, &client_payload(e, prefix_len));
            }
        }
        DeliveryRef::Gap(g) => {
            let mut notice = BytesMut::new();
            gap_notice(&mut notice, g, prefix_len);
            sse_notice(out, form, "gap", None, &notice);
        }
    }
}

/// Appends `data` as `data:` lines, one per line of it (SSE joins them
/// back with newlines), and the blank line that ends a frame.
fn sse_data(out: &mut BytesMut, data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}

/// Appends a notice of `kind` whose data is `{"<kind>": …}` (gap, reset):
/// named `event: <kind>`, or unnamed with the same data.
fn sse_notice(out: &mut BytesMut, form: SseForm, kind: &str, id: Option<u64>, data: &[u8]) {
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        out.extend_from_slice(b"\n");
    }
    if form.named {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\n");
    }
    sse_data(out, data);
}

/// The last frame of an SSE stream whose token expired at `exp`:
/// `data: {"expired":{"exp":N}}`, named `event: expired` or unnamed.
pub(crate) fn sse_expired(form: SseForm, exp: u64) -> BytesMut {
    let mut out = BytesMut::new();
    let data = format!(r#"{{"expired":{{"exp":{exp}}}}}"#);
    sse_notice(&mut out, form, "expired", None, data.as_bytes());
    out
}

/// The first frames of an SSE stream: `retry:`; a reset notice if the
/// client's position was past the end of the log (its `id:` moves the
/// browser's `Last-Event-ID` back to `head`); then `connected` with the
/// position the stream starts after. `connected` has no `id:`, so it
/// leaves `Last-Event-ID` alone; its data is `{"position": N}` when named
/// `event: connected`, `{"connected": {"position": N}}` when unnamed.
pub(crate) fn sse_preamble(
    form: SseForm,
    retry_ms: u64,
    reset: Option<u64>,
    position: u64,
) -> BytesMut {
    let mut out = BytesMut::new();
    let _ = write!(out, "retry: {retry_ms}\n\n");
    if let Some(head) = reset {
        let data = format!(r#"{{"reset":{{"head":{head}}}}}"#);
        sse_notice(&mut out, form, "reset", Some(head), data.as_bytes());
    }
    let position = format!(r#"{{"position":{position}}}"#);
    if form.named {
        sse_notice(&mut out, form, "connected", None, position.as_bytes());
    } else {
        let data = format!(r#"{{"connected":{position}}}"#);
        sse_notice(&mut out, form, "connected", None, data.as_bytes());
    }
    out
}

/// The start of every WebSocket event message of subscription `id`; the
/// rest is [`ws_event_body`], shared by every subscription.
pub(crate) fn ws_event_prefix(id: &str) -> Bytes {
    let mut v = br#"{"type":"event","sub":"#.to_vec();
    json::write_string(&mut v, id);
    v.push(b',');
    Bytes::from(v)
}

/// The event's fields and the closing brace of a WebSocket event message:
/// the same bytes for every subscription of one tenant, so a worker encodes
/// it once per event. (The message's own `type` is "event": the event's type
/// is `event_type`.)
pub(crate) fn ws_event_body(out: &mut BytesMut, e: &EventRef<'_>, prefix_len: usize) {
    event_fields(out, e, prefix_len, "event_type");
}

/// The start of every batched WebSocket message of subscription `id`:
/// `{"type":"events","sub":…,"events":[`.
pub(crate) fn ws_batch_prefix(id: &str) -> Bytes {
    let mut v = br#"{"type":"events","sub":"#.to_vec();
    json::write_string(&mut v, id);
    v.extend_from_slice(br#","events":["#);
    Bytes::from(v)
}

/// Frames at least this long, and frames of payloads this long, are shared
/// between connections (and batches); shorter ones are copied (see
/// [`Frames`]).
const SHARE_FROM: usize = 1024;
/// Batched bytes of its own shorter than this are copied into the output
/// rather than handed over as a chunk of their own.
const COPY_BELOW: usize = 512;

/// A batched WebSocket message being gathered:
/// `{"type":"events","sub":…,"events":[{…},…]}`, whose elements are the
/// event messages' fields without `type` and `sub` (`{` and
/// [`ws_event_body`]), in order.
pub(crate) struct WsBatch {
    /// [`ws_batch_prefix`].
    prefix: Bytes,
    /// The elements so far: sealed pieces, then `buf`.
    parts: Vec<Bytes>,
    buf: BytesMut,
    /// Bytes of the elements and their commas.
    bytes: usize,
    events: usize,
    /// Bytes the last message gathered in `buf`: reserved at once for the
    /// next, which is likely of its size (instead of growing to it by
    /// doubling, one copy per step).
    last_len: usize,
    /// Messages written, counted for `/metrics` (the worker's counter).
    written: Arc<AtomicU64>,
}

impl WsBatch {
    pub(crate) fn new(id: &str, written: Arc<AtomicU64>) -> WsBatch {
        WsBatch {
            prefix: ws_batch_prefix(id),
            parts: Vec::new(),
            buf: BytesMut::new(),
            bytes: 0,
            events: 0,
            last_len: 0,
            written,
        }
    }

    /// Events gathered.
    pub(crate) fn len(&self) -> usize {
        self.events
    }

    fn open_element(&mut self) {
        if self.events == 0 {
            self.buf.reserve(self.last_len);
        }
        let open: &[u8] = if self.events == 0 { b"{" } else { b",{" };
        self.buf.extend_from_slice(open);
        self.bytes += open.len();
        self.events += 1;
    }

    /// Adds an event by its [`ws_event_body`], encoded once per worker.
    pub(crate) fn push_body(&mut self, body: Encoded<'_>) {
        self.open_element();
        match body {
            Encoded::Short(b) => self.buf.extend_from_slice(b),
            Encoded::Shared(b) => {
                self.parts.push(self.buf.split().freeze());
                self.parts.push(b.clone());
            }
        }
        self.bytes += body.len();
    }

    /// Adds an event encoded for this batch only.
    pub(crate) fn push_event(&mut self, e: &EventRef<'_>, prefix_len: usize) {
        self.open_element();
        let before = self.buf.len();
        ws_event_body(&mut self.buf, e, prefix_len);
        self.bytes += self.buf.len() - before;
    }

    /// Appends the message to `out` (nothing if no event is gathered) and
    /// starts the next. Returns the events it carried.
    pub(crate) fn write(&mut self, out: &mut Output) -> usize {
        let events = std::mem::take(&mut self.events);
        if events == 0 {
            return 0;
        }
        ws_text_header(out.tail(), self.prefix.len() + self.bytes + 2);
        out.extend(&self.prefix);
        for part in self.parts.drain(..) {
            if !part.is_empty() {
                out.push_shared(part);
            }
        }
        self.last_len = self.buf.len();
        if self.buf.len() < COPY_BELOW {
            out.extend(&self.buf);
            self.buf.clear();
        } else {
            out.push_shared(self.buf.split().freeze());
        }
        out.extend(b"]}");
        self.bytes = 0;
        self.written.fetch_add(1, Ordering::Relaxed);
        events
    }

    /// Forgets the events gathered (their stream is gone).
    pub(crate) fn clear(&mut self) {
        self.parts.clear();
        self.buf = BytesMut::new();
        self.bytes = 0;
        self.events = 0;
    }
}

/// The start of every STOMP `MESSAGE` frame of subscription `id`, up to its
/// `destination` header's topic: `destination` is the prefix the
/// subscription named its topic with (`/topic/`). The rest is
/// [`stomp_message_body`], shared by every subscription.
pub(crate) fn stomp_message_prefix(id: &str, destination: &str) -> Bytes {
    Bytes::from(format!(
        "MESSAGE\nsubscription:{}\ndestination:{}",
        stomp::escaped(id),
        stomp::escaped(destination)
    ))
}

/// The topic that ends the `destination` header, the other headers, the
/// body (the payload as published) and the NUL of a STOMP `MESSAGE` frame:
/// the same bytes for every subscription of one tenant. `message-id` and
/// `ack` are the global sequence, which is what an `ACK` on a durable
/// consumer's subscription acknowledges up to.
pub(crate) fn stomp_message_body(out: &mut BytesMut, e: &EventRef<'_>, prefix_len: usize) {
    // (Formatting into a BytesMut cannot fail.)
    let _ = write!(
        out,
        "{}\nmessage-id:{seq}\nack:{seq}\n\
         content-type:application/json\nherald-type:{}\nherald-seq:{seq}\n\
         herald-topic-seq:{}\nherald-timestamp-ns:{}\n",
        stomp::escaped(&external_topic(e.topic, prefix_len)),
        stomp::escaped(e.event_type),
        e.topic_seq,
        e.timestamp_ns,
        seq = e.seq,
    );
    if e.origin != 0 {
        let _ = writeln!(out, "herald-origin:{}", e.origin);
    }
    if !e.correlation.is_empty() {
        let _ = writeln!(
            out,
            "herald-correlation-id:{}",
            stomp::escaped(e.correlation)
        );
    }
    let payload = client_payload(e, prefix_len);
    let _ = write!(out, "content-length:{}\n\n", payload.len());
    out.extend_from_slice(&payload);
    out.extend_from_slice(b"\0");
}

/// A gap notice as a STOMP `MESSAGE` frame of subscription `id` (named
/// with the `destination` prefix): no body; `herald-gap-from`/`-to` are
/// topic sequences if `herald-gap-topic` is set, global sequences
/// otherwise.
fn stomp_gap(out: &mut BytesMut, id: &str, destination: &str, g: &Gap, prefix_len: usize) {
    let gap = GapFields::new(g, prefix_len);
    let _ = write!(
        out,
        "MESSAGE\nsubscription:{}\nmessage-id:gap-{from}-{to}\nherald-gap-from:{from}\n\
         herald-gap-to:{to}\n",
        stomp::escaped(id),
        from = gap.from,
        to = gap.to,
    );
    if let Some(topic) = &gap.topic {
        let topic = stomp::escaped(topic);
        let destination = stomp::escaped(destination);
        let _ = write!(
            out,
            "destination:{destination}{topic}\nherald-gap-topic:{topic}\n"
        );
    }
    out.extend_from_slice(b"content-length:0\n\n\0");
}

/// An event as the JSON object of the protocol (`docs/PROTOCOL.md`), as in
/// poll answers. `prefix_len`: bytes of tenant prefix to strip from topics.
fn event_object(out: &mut BytesMut, e: &EventRef<'_>, prefix_len: usize) {
    out.extend_from_slice(b"{");
    event_fields(out, e, prefix_len, "type");
}

/// An event's fields and the closing brace; `type_key` names its type.
fn event_fields(out: &mut BytesMut, e: &EventRef<'_>, prefix_len: usize, type_key: &str) {
    // Once per event per worker: numbers by itoa, not `fmt`.
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(br#""seq":"#);
    out.extend_from_slice(n.format(e.seq).as_bytes());
    out.extend_from_slice(br#","topic":"#);
    json_string(out, &external_topic(e.topic, prefix_len));
    out.extend_from_slice(br#","topic_seq":"#);
    out.extend_from_slice(n.format(e.topic_seq).as_bytes());
    out.extend_from_slice(b",\"");
    out.extend_from_slice(type_key.as_bytes());
    out.extend_from_slice(b"\":");
    json_string(out, e.event_type);
    out.extend_from_slice(br#","timestamp_ns":"#);
    out.extend_from_slice(n.format(e.timestamp_ns).as_bytes());
    out.extend_from_slice(br#","data":"#);
    // Checked once, by the publisher, when the event says so (every event
    // published through the server, read live); otherwise here. (serde
    // skips strings without checking their UTF-8: check it too.)
    let payload = client_payload(e, prefix_len);
    let raw_json = e.payload_json
        || (std::str::from_utf8(&payload).is_ok()
            && serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_ok());
    if raw_json {
        out.extend_from_slice(&payload);
    } else {
        json_string(out, &String::from_utf8_lossy(&payload));
    }
    if e.origin != 0 {
        let _ = write!(out, r#","origin":{}"#, e.origin);
    }
    if !e.correlation.is_empty() {
        out.extend_from_slice(br#","correlation_id":"#);
        json_string(out, e.correlation);
    }
    out.extend_from_slice(b"}");
}

/// A delivery as the JSON of poll answers: the event object, or a gap
/// notice `{"gap":{…}}` (webhook bodies are made of these too).
pub(crate) fn delivery_object(out: &mut BytesMut, d: &DeliveryRef<'_>, prefix_len: usize) {
    match d {
        DeliveryRef::Event(e) => event_object(out, e, prefix_len),
        DeliveryRef::Gap(g) => gap_notice(out, g, prefix_len),
    }
}

/// The JSON answer to a poll, built delivery by delivery:
/// `{"events": [...], "next_after": N}`, where `next_after` is what to pass
/// as `after` next time.
pub(crate) struct PollBody {
    out: BytesMut,
    count: usize,
    next_after: u64,
    topic_ids: bool,
    prefix_len: usize,
}

impl PollBody {
    /// `topic_ids`: positions are topic sequences (single-topic polls).
    pub(crate) fn new(after: u64, topic_ids: bool, prefix_len: usize) -> PollBody {
        PollBody {
            out: BytesMut::from(&br#"{"events":["#[..]),
            count: 0,
            next_after: after,
            topic_ids,
            prefix_len,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn push(&mut self, d: &DeliveryRef<'_>) {
        if self.count > 0 {
            self.out.extend_from_slice(b",");
        }
        self.count += 1;
        match d {
            DeliveryRef::Event(e) => {
                self.next_after = if self.topic_ids { e.topic_seq } else { e.seq };
            }
            DeliveryRef::Gap(g) => {
                if self.topic_ids || g.topic.is_none() {
                    self.next_after = self.next_after.max(g.to);
                }
            }
        }
        delivery_object(&mut self.out, d, self.prefix_len);
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        let _ = write!(self.out, r#"],"next_after":{}}}"#, self.next_after);
        self.out.to_vec()
    }
}

fn json_string(out: &mut BytesMut, s: &str) {
    json::write_string_with(s, |b| out.extend_from_slice(b));
}

/// The header of an unmasked (server-to-client) WebSocket text frame
/// carrying `len` bytes, whole (FIN set).
pub(crate) fn ws_text_header(out: &mut BytesMut, len: usize) {
    out.extend_from_slice(&[0x81]);
    if len < 126 {
        out.extend_from_slice(&[len as u8]);
    } else if len <= usize::from(u16::MAX) {
        out.extend_from_slice(&[126]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a WebSocket text message holding a subscription's own `prefix`
/// ([`ws_event_prefix`] or [`stomp_message_prefix`]) and then
/// `body`, the part every subscription to the event shares.
pub(crate) fn append_ws_message(out: &mut Output, prefix: &[u8], body: Encoded<'_>) {
    ws_text_header(out.tail(), prefix.len() + body.len());
    out.extend(prefix);
    body.append_to(out);
}

/// The frames of the event being routed, encoded on first use. A frame
/// shorter than [`SHARE_FROM`] is kept in one buffer reused from event to
/// event and copied into each connection's output: cheaper than an
/// allocation, a reference count and a `writev` slice of its own per
/// event. A longer one gets an allocation of its own, shared by every
/// connection it goes to (frames carved from one shared block would keep
/// the whole block alive while any one of them waits in a slow client's
/// output).
#[derive(Default)]
pub(crate) struct Frames {
    /// SSE frames by form and the prefix length they depend on (see
    /// [`payload_prefix`]; an event object names its topic too).
    sse: Vec<((SseForm, usize), Frame)>,
    /// WebSocket message bodies by tenant prefix length.
    ws: Vec<(usize, Frame)>,
    /// STOMP `MESSAGE` frames after their subscription header, likewise.
    stomp: Vec<(usize, Frame)>,
    /// The short frames' bytes.
    short: BytesMut,
}

/// Where [`Frames`] keeps a frame.
enum Frame {
    /// Bytes of [`Frames::short`], fewer than [`SHARE_FROM`].
    Short(std::ops::Range<usize>),
    /// An allocation of its own: a frame of at least [`SHARE_FROM`] bytes,
    /// or of a payload that long (which a tenant's stripped prefix may
    /// leave a little shorter).
    Shared(Bytes),
}

/// A frame of the event being routed, as [`Frames`] hands it out.
#[derive(Clone, Copy)]
pub(crate) enum Encoded<'a> {
    /// Fewer than [`SHARE_FROM`] bytes: copied where it goes.
    Short(&'a [u8]),
    /// A long frame (see [`Frame::Shared`]): shared where it goes.
    Shared(&'a Bytes),
}

impl Encoded<'_> {
    pub(crate) fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Encoded::Short(b) => b,
            Encoded::Shared(b) => b,
        }
    }

    /// Appends the frame to a connection's output.
    pub(crate) fn append_to(self, out: &mut Output) {
        match self {
            Encoded::Short(b) => out.extend(b),
            Encoded::Shared(b) => out.push_shared(b.clone()),
        }
    }
}

impl Frames {
    pub(crate) fn clear(&mut self) {
        self.sse.clear();
        self.ws.clear();
        self.stomp.clear();
        self.short.clear();
    }

    pub(crate) fn sse(
        &mut self,
        e: &EventRef<'_>,
        form: SseForm,
        prefix_len: usize,
    ) -> Encoded<'_> {
        let prefix = if form.objects {
            prefix_len
        } else {
            payload_prefix(e, prefix_len)
        };
        cached(&mut self.sse, &mut self.short, (form, prefix), e, |buf| {
            sse_frame(buf, &DeliveryRef::Event(*e), form, prefix)
        })
    }

    pub(crate) fn ws_body(&mut self, e: &EventRef<'_>, prefix_len: usize) -> Encoded<'_> {
        cached(&mut self.ws, &mut self.short, prefix_len, e, |buf| {
            ws_event_body(buf, e, prefix_len)
        })
    }

    pub(crate) fn stomp_body(&mut self, e: &EventRef<'_>, prefix_len: usize) -> Encoded<'_> {
        cached(&mut self.stomp, &mut self.short, prefix_len, e, |buf| {
            stomp_message_body(buf, e, prefix_len)
        })
    }
}

/// The frame of `e` cached under `key`, encoded with `write` on first use.
/// Every frame holds the whole payload, so a long payload goes straight to
/// an allocation of its own; a short one whose frame still reaches
/// [`SHARE_FROM`] (a long type or correlation id) is copied to one.
fn cached<'a, K: PartialEq>(
    cache: &'a mut Vec<(K, Frame)>,
    short: &'a mut BytesMut,
    key: K,
    e: &EventRef<'_>,
    write: impl FnOnce(&mut BytesMut),
) -> Encoded<'a> {
    let i = match cache.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            let frame = if e.payload.len() >= SHARE_FROM {
                let mut buf = BytesMut::with_capacity(e.payload.len() + e.topic.len() + 160);
                write(&mut buf);
                Frame::Shared(buf.freeze())
            } else {
                let start = short.len();
                write(short);
                if short.len() - start < SHARE_FROM {
                    Frame::Short(start..short.len())
                } else {
                    let shared = Bytes::copy_from_slice(&short[start..]);
                    short.truncate(start);
                    Frame::Shared(shared)
                }
            };
            cache.push((key, frame));
            cache.len() - 1
        }
    };
    let short: &'a BytesMut = short;
    match &cache[i].1 {
        Frame::Short(range) => Encoded::Short(&short[range.clone()]),
        Frame::Shared(bytes) => Encoded::Shared(bytes),
    }
}

/// Encodes a delivery for one stream only (catch-up: nothing to share).
pub(crate) fn encode_own(
    out: &mut Output,
    encoding: &Encoding,
    d: &DeliveryRef<'_>,
    prefix_len: usize,
) {
    match encoding {
        Encoding::Sse(form) => sse_frame(out.tail(), d, *form, prefix_len),
        Encoding::Ws { id, prefix, .. } => {
            let text = match d {
                DeliveryRef::Event(e) => {
                    let mut text = BytesMut::from(&prefix[..]);
                    ws_event_body(&mut text, e, prefix_len);
                    text
                }
                DeliveryRef::Gap(g) => {
                    let gap = WsGap {
                        kind: "gap",
                        sub: id,
                        gap: GapFields::new(g, prefix_len),
                    };
                    let mut text = BytesMut::new();
                    // Serializing into a BytesMut cannot fail.
                    let _ = serde_json::to_writer((&mut text).writer(), &gap);
                    text
                }
            };
            ws_text_header(out.tail(), text.len());
            out.extend(&text);
        }
        Encoding::Stomp {
            id,
            destination,
            prefix,
        } => {
            let mut frame = BytesMut::new();
            match d {
                DeliveryRef::Event(e) => {
                    frame.extend_from_slice(prefix);
                    stomp_message_body(&mut frame, e, prefix_len);
                }
                DeliveryRef::Gap(g) => stomp_gap(&mut frame, id, destination, g, prefix_len),
            }
            ws_text_header(out.tail(), frame.len());
            out.extend(&frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn stomp_message_and_gap_frames() {
        let topic: std::sync::Arc<str> = "acme.orders:eu".into();
        let e = EventRef {
            seq: 812,
            topic: &topic,
            topic_seq: 17,
            event_type: "order.created",
            timestamp_ns: 5,
            payload: br#"{"id":1}"#,
            payload_json: false,
            origin: 7,
            correlation: "req\n1",
        };
        let prefix = "acme.".len();
        let mut frame = stomp_message_prefix("sub:0", "/topic/").to_vec();
        frame.extend_from_slice(Frames::default().stomp_body(&e, prefix).as_bytes());
        assert_eq!(
            String::from_utf8(frame).unwrap(),
            "MESSAGE\nsubscription:sub\\c0\ndestination:/topic/orders\\ceu\nmessage-id:812\n\
             ack:812\ncontent-type:application/json\nherald-type:order.created\n\
             herald-seq:812\nherald-topic-seq:17\nherald-timestamp-ns:5\nherald-origin:7\n\
             herald-correlation-id:req\\n1\ncontent-length:8\n\n{\"id\":1}\0"
        );
        let gap = Gap {
            from: 3,
            to: 9,
            topic: Some(topic.clone()),
        };
        let mut out = BytesMut::new();
        stomp_gap(&mut out, "s", "/topic/", &gap, prefix);
        assert_eq!(
            &out[..],
            b"MESSAGE\nsubscription:s\nmessage-id:gap-3-9\nherald-gap-from:3\nherald-gap-to:9\n\
              destination:/topic/orders\\ceu\nherald-gap-topic:orders\\ceu\ncontent-length:0\n\n\0"
        );
    }

    #[test]
    fn presence_payloads_name_their_topic_without_the_tenant() {
        let topic: std::sync::Arc<str> = "$presence.acme.room".into();
        let e = EventRef {
            seq: 9,
            topic: &topic,
            topic_seq: 1,
            event_type: "presence.join",
            timestamp_ns: 1,
            payload: br#"{"topic":"acme.room","client_id":"c1"}"#,
            payload_json: false,
            origin: 0,
            correlation: "",
        };
        let prefix = "acme.".len();
        let mut frames = Frames::default();
        let sse = frames
            .sse(&e, SseForm::new(true, true), prefix)
            .as_bytes()
            .to_vec();
        assert_eq!(
            &sse[..],
            b"id: 1\nevent: presence.join\ndata: {\"topic\":\"room\",\"client_id\":\"c1\"}\n\n"
        );
        // Another tenant's (anonymous) stream gets its own frame.
        let anonymous = frames
            .sse(&e, SseForm::new(true, true), 0)
            .as_bytes()
            .to_vec();
        assert!(anonymous.windows(14).any(|w| w == b"\"acme.room\",\"c"));
        let body = frames.ws_body(&e, prefix).as_bytes().to_vec();
        let v: Value = serde_json::from_slice(&[&b"{"[..], &body].concat()).unwrap();
        assert_eq!(v["topic"], "$presence.room");
        assert_eq!(v["data"], json!({"topic": "room", "client_id": "c1"}));
    }

    #[test]
    fn frames_copy_short_encodings_and_share_long_ones() {
        let topic: std::sync::Arc<str> = "acme.orders".into();
        let long_payload = format!(r#"{{"pad":"{}"}}"#, "p".repeat(SHARE_FROM));
        let long_correlation = "c".repeat(SHARE_FROM);
        let e = |payload: &'static [u8], correlation: &'static str| EventRef {
            seq: 7,
            topic: &topic,
            topic_seq: 3,
            event_type: "order.created",
            timestamp_ns: 11,
            payload,
            payload_json: false,
            origin: 0,
            correlation,
        };
        let long_payload: &'static [u8] = Box::leak(long_payload.into_bytes().into_boxed_slice());
        let long_correlation: &'static str = Box::leak(long_correlation.into_boxed_str());
        let encoded = |ev: &EventRef<'_>, prefix: usize| {
            let mut b = BytesMut::new();
            ws_event_body(&mut b, ev, prefix);
            b.to_vec()
        };
        let mut frames = Frames::default();
        // Short, at two prefix lengths: both kept in the one buffer, intact.
        let short = e(br#"{"id":1}"#, "");
        for prefix in [5, 0, 5] {
            let body = frames.ws_body(&short, prefix);
            assert!(matches!(body, Encoded::Short(_)));
            assert_eq!(body.as_bytes(), encoded(&short, prefix));
        }
        // A long payload, and a short one in a long frame: shared.
        for ev in [e(long_payload, ""), e(b"1", long_correlation)] {
            frames.clear();
            let body = frames.ws_body(&ev, 5);
            assert!(matches!(body, Encoded::Shared(_)));
            assert!(body.len() >= SHARE_FROM);
            assert_eq!(body.as_bytes(), encoded(&ev, 5));
            // Later short frames of the same event are still right.
            assert_eq!(frames.ws_body(&ev, 0).as_bytes(), encoded(&ev, 0));
        }
        // Appended to an output, in order.
        frames.clear();
        let mut out = Output::default();
        frames.ws_body(&short, 5).append_to(&mut out);
        frames.clear();
        frames.ws_body(&e(long_payload, ""), 5).append_to(&mut out);
        let mut wire = Vec::new();
        out.write_to(&mut wire).unwrap();
        assert_eq!(
            wire,
            [encoded(&short, 5), encoded(&e(long_payload, ""), 5)].concat()
        );
    }

    #[test]
    fn a_ws_event_message_is_prefix_and_body() {
        let topic: std::sync::Arc<str> = "acme.orders".into();
        let e = EventRef {
            seq: 7,
            topic: &topic,
            topic_seq: 3,
            event_type: "order.created",
            timestamp_ns: 11,
            payload: br#"{"id": 42}"#,
            payload_json: false,
            origin: 5,
            correlation: "req-\"9\"",
        };
        let mut body = BytesMut::new();
        ws_event_body(&mut body, &e, "acme.".len());
        let mut text = ws_event_prefix("s1").to_vec();
        text.extend_from_slice(&body);
        let v: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            v,
            json!({"type": "event", "sub": "s1", "seq": 7, "topic": "orders",
                   "topic_seq": 3, "event_type": "order.created", "timestamp_ns": 11,
                   "data": {"id": 42}, "origin": 5, "correlation_id": "req-\"9\""})
        );
        // A payload that is not JSON arrives as a string.
        let e = EventRef {
            payload: b"plain \"text\"",
            payload_json: false,
            origin: 0,
            correlation: "",
            ..e
        };
        let mut body = BytesMut::new();
        ws_event_body(&mut body, &e, 0);
        let v: Value = serde_json::from_slice(&[b"{".as_slice(), &body].concat()).unwrap();
        assert_eq!(v["data"], json!("plain \"text\""));
        assert_eq!(v["topic"], json!("acme.orders"));
        assert!(v.get("origin").is_none() && v.get("correlation_id").is_none());
    }

    #[test]
    fn a_batch_message_carries_each_event_as_its_event_message_does() {
        let topic: std::sync::Arc<str> = "acme.orders".into();
        let e = |seq: u64, payload: &'static [u8]| EventRef {
            seq,
            topic: &topic,
            topic_seq: seq - 10,
            event_type: "order.created",
            timestamp_ns: 11,
            payload,
            payload_json: false,
            origin: if seq == 12 { 5 } else { 0 },
            correlation: if seq == 12 { "c\"1" } else { "" },
        };
        let prefix = "acme.".len();
        let big = format!(r#"{{"pad":"{}"}}"#, "p".repeat(2 * SHARE_FROM));
        let big: &'static [u8] = Box::leak(big.into_bytes().into_boxed_slice());
        let events = [
            e(11, b"1"),
            e(12, br#"{"id": 42}"#),
            e(13, big),
            e(14, b"x"),
        ];
        let mut batch = WsBatch::new("s\u{2028}", Arc::default());
        let mut out = Output::default();
        assert_eq!(batch.write(&mut out), 0, "an empty batch writes nothing");
        assert_eq!(out.pending(), 0);
        let mut frames = Frames::default();
        for (i, ev) in events.iter().enumerate() {
            // Bodies encoded once per worker (live; the big one shared) and
            // own encodings (catch-up) mix.
            if i % 2 == 0 {
                frames.clear();
                batch.push_body(frames.ws_body(ev, prefix));
            } else {
                batch.push_event(ev, prefix);
            }
        }
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.write(&mut out), 4);
        assert_eq!(batch.len(), 0);
        let mut wire = Vec::new();
        out.write_to(&mut wire).unwrap();
        let (len, head) = (u16::from_be_bytes([wire[2], wire[3]]) as usize, 4);
        assert_eq!(&wire[..2], &[0x81, 126]);
        assert_eq!(
            wire.len(),
            head + len,
            "the header's length is the message's"
        );
        let v: Value = serde_json::from_slice(&wire[head..]).unwrap();
        assert_eq!(v["type"], "events");
        assert_eq!(v["sub"], "s\u{2028}");
        assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
        let got = v["events"].as_array().unwrap();
        assert_eq!(got.len(), 4);
        for (ev, element) in events.iter().zip(got) {
            // Each element: the event message's fields but `type` and `sub`.
            let mut single = ws_event_prefix("s").to_vec();
            ws_event_body_into(&mut single, ev, prefix);
            let mut single: Value = serde_json::from_slice(&single).unwrap();
            let single = single.as_object_mut().unwrap();
            single.remove("type");
            single.remove("sub");
            assert_eq!(element, &Value::Object(single.clone()));
        }
        assert_eq!(got[1]["origin"], 5);
        assert_eq!(got[1]["correlation_id"], "c\"1");
        assert_eq!(got[0]["data"], 1);
        assert_eq!(got[3]["data"], "x");
        // The next batch starts afresh; one event alone is a batch of one.
        batch.push_event(&events[0], prefix);
        assert_eq!(batch.write(&mut out), 1);
        let mut wire = Vec::new();
        out.write_to(&mut wire).unwrap();
        let head = if wire[1] == 126 { 4 } else { 2 };
        let v: Value = serde_json::from_slice(&wire[head..]).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 1, "{v}");
        // A batch dropped with its stream writes nothing later.
        batch.push_event(&events[0], prefix);
        batch.clear();
        assert_eq!(batch.write(&mut out), 0);
        assert_eq!(out.pending(), 0);
    }

    fn ws_event_body_into(out: &mut Vec<u8>, e: &EventRef<'_>, prefix_len: usize) {
        let mut body = BytesMut::new();
        ws_event_body(&mut body, e, prefix_len);
        out.extend_from_slice(&body);
    }

    #[test]
    fn hand_written_json_escapes_as_the_core_toolkit_does() {
        // DEL and U+2028 are where serde_json's escaper and core's differ.
        let topic: std::sync::Arc<str> = "t".into();
        let e = EventRef {
            seq: 1,
            topic: &topic,
            topic_seq: 1,
            event_type: "x",
            timestamp_ns: 1,
            payload: "not json \u{7f}\u{2028}".as_bytes(),
            payload_json: false,
            origin: 0,
            correlation: "",
        };
        let mut body = BytesMut::new();
        ws_event_body(&mut body, &e, 0);
        let body = std::str::from_utf8(&body).unwrap();
        assert!(body.contains(r#""data":"not json \u007f\u2028""#), "{body}");
        let prefix = ws_event_prefix("s\u{2028}");
        assert_eq!(&prefix[..], br#"{"type":"event","sub":"s\u2028","#);
    }

    #[test]
    fn gap_notices_name_their_topic_without_the_tenant() {
        let g = Gap {
            from: 3,
            to: 9,
            topic: Some("acme.orders".into()),
        };
        let mut sse = BytesMut::new();
        let form = SseForm::new(true, true);
        sse_frame(&mut sse, &DeliveryRef::Gap(g.clone()), form, "acme.".len());
        assert_eq!(
            &sse[..],
            b"event: gap\ndata: {\"gap\":{\"from\":3,\"to\":9,\"topic\":\"orders\"}}\n\n"
        );
        let mut out = Output::default();
        let ws = Encoding::ws("s1");
        encode_own(
            &mut out,
            &ws,
            &DeliveryRef::Gap(Gap { topic: None, ..g }),
            0,
        );
        let mut sink = Vec::new();
        out.write_to(&mut sink).unwrap();
        let v: Value = serde_json::from_slice(&sink[2..]).unwrap();
        assert_eq!(v, json!({"type": "gap", "sub": "s1", "from": 3, "to": 9}));
    }

    #[test]
    fn sse_forms_name_the_topic_on_several_and_the_type_when_unnamed() {
        let topic: std::sync::Arc<str> = "acme.orders".into();
        let e = EventRef {
            seq: 7,
            topic: &topic,
            topic_seq: 3,
            event_type: "order.created",
            timestamp_ns: 5,
            payload: b"{\"id\":\n1}",
            payload_json: false,
            origin: 0,
            correlation: "",
        };
        let prefix = "acme.".len();
        let frame = |single, named| {
            let mut out = BytesMut::new();
            sse_frame(
                &mut out,
                &DeliveryRef::Event(e),
                SseForm::new(single, named),
                prefix,
            );
            String::from_utf8(out.to_vec()).unwrap()
        };
        // One topic, named: the payload alone, line by line.
        assert_eq!(
            frame(true, true),
            "id: 3\nevent: order.created\ndata: {\"id\":\ndata: 1}\n\n"
        );
        // Several topics: the event object, which names the topic.
        let object = r#"{"seq":7,"topic":"orders","topic_seq":3,"type":"order.created","timestamp_ns":5,"data":{"id":"#;
        assert_eq!(
            frame(false, true),
            format!("id: 7\nevent: order.created\ndata: {object}\ndata: 1}}}}\n\n")
        );
        // Unnamed: no `event:`, the type is in the object.
        assert_eq!(
            frame(true, false),
            format!("id: 3\ndata: {object}\ndata: 1}}}}\n\n")
        );
        assert_eq!(
            frame(false, false),
            format!("id: 7\ndata: {object}\ndata: 1}}}}\n\n")
        );
        // A worker's cached frames are per form.
        let mut frames = Frames::default();
        for (single, named) in [(true, true), (false, true), (true, false), (false, false)] {
            let cached = frames.sse(&e, SseForm::new(single, named), prefix);
            assert_eq!(
                cached.as_bytes(),
                frame(single, named).as_bytes(),
                "{single} {named}"
            );
        }
        // Gap notices: the same data, named or not.
        let g = DeliveryRef::Gap(Gap {
            from: 1,
            to: 2,
            topic: None,
        });
        let mut out = BytesMut::new();
        sse_frame(&mut out, &g, SseForm::new(false, false), prefix);
        assert_eq!(&out[..], b"data: {\"gap\":{\"from\":1,\"to\":2}}\n\n");
    }

    #[test]
    fn sse_preambles_say_where_the_stream_starts() {
        let text =
            |form, reset| String::from_utf8(sse_preamble(form, 2000, reset, 9).to_vec()).unwrap();
        assert_eq!(
            text(SseForm::new(true, true), None),
            "retry: 2000\n\nevent: connected\ndata: {\"position\":9}\n\n"
        );
        assert_eq!(
            text(SseForm::new(false, true), Some(9)),
            "retry: 2000\n\nid: 9\nevent: reset\ndata: {\"reset\":{\"head\":9}}\n\n\
             event: connected\ndata: {\"position\":9}\n\n"
        );
        assert_eq!(
            text(SseForm::new(true, false), Some(9)),
            "retry: 2000\n\nid: 9\ndata: {\"reset\":{\"head\":9}}\n\n\
             data: {\"connected\":{\"position\":9}}\n\n"
        );
    }

    #[test]
    fn ws_headers_use_the_shortest_length_form() {
        for (len, expected) in [
            (0usize, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xff, 0xff]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = BytesMut::new();
            ws_text_header(&mut out, len);
            assert_eq!(out.to_vec(), expected, "length {len}");
        }
    }
}
