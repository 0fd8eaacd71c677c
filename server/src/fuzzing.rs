//! Entry points for the fuzz targets in `fuzz/`, not a stable API.
//!
//! Thin wrappers around crate-private parsers and decoders, returning plain
//! public values (errors as their messages), so that the targets exercise
//! exactly the code the server runs without widening its visibility.

use std::borrow::Cow;

use herald_core::broker::StartAt;
use serde_json::Value;

use crate::api::auth::{self, AuthConfig, Authenticator, Claims};
use crate::api::ops::{self, Op, PublishRequest, StartDefault};
use crate::wire::http::{self, Limits, ParseError, Request};

/// A request head (and body) as the server parsed it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method as sent.
    pub method: String,
    /// Target before `?`.
    pub path: String,
    /// Target after `?` (empty if none).
    pub query: String,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
    /// The connection stays open after the answer.
    pub keep_alive: bool,
}

/// The outcome of parsing a buffer.
#[derive(Debug)]
pub enum HttpParse {
    /// A request, and how many bytes of the buffer it used.
    Complete(HttpRequest, usize),
    /// More bytes needed.
    Partial,
    /// Refused with this status code.
    Refused(u16),
}

/// Parses one request from the front of `buf`.
pub fn parse_http(buf: &[u8], max_head: usize, max_body: usize) -> HttpParse {
    match http::parse(buf, Limits { max_head, max_body }) {
        Ok(Some((r, used))) => HttpParse::Complete(
            HttpRequest {
                method: r.method,
                path: r.path,
                query: r.query,
                headers: r.headers,
                body: r.body,
                keep_alive: r.keep_alive,
            },
            used,
        ),
        Ok(None) => HttpParse::Partial,
        Err(e) => HttpParse::Refused(match e {
            ParseError::Malformed(_) => 400,
            ParseError::HeadTooLarge => 431,
            ParseError::BodyTooLarge => 413,
            ParseError::Unsupported(_) => 501,
        }),
    }
}

fn request(r: &HttpRequest) -> Request {
    Request {
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
        keep_alive: r.keep_alive,
    }
}

/// The percent-decoded value of query parameter `name` (as authentication
/// reads `access_token`).
pub fn query_param(r: &HttpRequest, name: &str) -> Option<String> {
    request(r).query_param(name)
}

/// The query of the events endpoints, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// `topics`, split on commas.
    pub topics: Option<Vec<String>>,
    /// `types`, split on commas.
    pub types: Option<Vec<String>>,
    /// `exclude_origin`, split on commas.
    pub exclude_origin: Option<Vec<u64>>,
    /// `after`.
    pub after: Option<u64>,
    /// `since`.
    pub since: Option<u64>,
    /// `last`.
    pub last: Option<u64>,
    /// `limit`.
    pub limit: Option<u64>,
    /// `wait`.
    pub wait: Option<u64>,
    /// A poll's limit and wait, clamped.
    pub poll_bounds: (usize, u64),
}

/// Decodes the query of `GET …/events`.
pub fn events_query(query: &str) -> Result<EventsQuery, String> {
    let q: ops::EventsQuery = ops::from_query(query).map_err(|e| e.to_string())?;
    Ok(EventsQuery {
        topics: q.topics.as_ref().map(|l| l.0.clone()),
        types: q.types.as_ref().map(|l| l.0.clone()),
        exclude_origin: q.exclude_origin.as_ref().map(|o| o.0.clone()),
        after: q.after,
        since: q.since,
        last: q.last,
        limit: q.limit,
        wait: q.wait,
        poll_bounds: q.poll_bounds(),
    })
}

/// Decodes the query of an endpoint that takes no parameters.
pub fn no_query(query: &str) -> Result<(), String> {
    ops::from_query::<ops::NoQuery>(query)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// An SSE request's `Last-Event-ID` (`sse`: the client accepts an event
/// stream; otherwise the header is ignored).
pub fn last_event_id(r: &HttpRequest, sse: bool) -> Result<Option<u64>, String> {
    crate::api::http::last_event_id(&request(r), sse).map_err(|e| e.to_string())
}

/// Where an event stream for `r` starts: its query and `Last-Event-ID`
/// through the selection to the broker's start position (`path_topic`:
/// the topic of `/v1/topics/{topic}/events`).
pub fn sse_start(r: &HttpRequest, path_topic: Option<&str>) -> Result<StartAt, String> {
    let q: ops::EventsQuery = ops::from_query(&r.query).map_err(|e| e.to_string())?;
    let id = crate::api::http::last_event_id(&request(r), true).map_err(|e| e.to_string())?;
    let selection = q.selection(path_topic, id).map_err(|e| e.to_string())?;
    selection
        .position
        .start(path_topic.is_some(), StartDefault::Now)
        .map_err(|e| e.to_string())
}

/// One event of a publish request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishEvent {
    /// Topic (from the body, or the path for HTTP).
    pub topic: String,
    /// Event type.
    pub event_type: String,
    /// The payload as the client wrote it.
    pub data: Option<String>,
    /// Publisher id.
    pub origin: Option<u64>,
    /// Correlation id.
    pub correlation_id: Option<String>,
}

fn events(p: PublishRequest<'_>) -> (bool, Vec<PublishEvent>) {
    let one = |e: ops::Publish<'_>| PublishEvent {
        topic: e.topic.into_owned(),
        event_type: e.event_type.into_owned(),
        data: e.data.map(str::to_owned),
        origin: e.origin,
        correlation_id: e.correlation_id.map(std::borrow::Cow::into_owned),
    };
    match p {
        PublishRequest::One(e) => (false, vec![one(e)]),
        PublishRequest::Batch(list) => (true, list.into_iter().map(one).collect()),
    }
}

/// A WebSocket operation, decoded.
#[derive(Debug)]
pub enum WsOp {
    /// `subscribe`: its id, the topics it names (`topic` or `topics`), and
    /// its selection's start (or why the selection is refused).
    Subscribe {
        /// Subscription id.
        id: String,
        /// `topic` as a one-item list, or `topics`.
        topics: Vec<String>,
        /// Start position, or the refusal.
        start: Result<StartAt, String>,
    },
    /// `unsubscribe`.
    Unsubscribe(String),
    /// `publish`: batch or not, the events, and the idempotency key.
    Publish(bool, Vec<PublishEvent>, Option<String>),
    /// `ack`: consumer, sequence acknowledged up to, single sequences.
    Ack(String, Option<u64>, Option<Vec<u64>>),
    /// `heartbeat`: topic, client id, user, device, metadata.
    Heartbeat(String, String, Option<String>, Option<String>, Value),
    /// `leave`: topic, client id.
    Leave(String, String),
    /// `presence`: topic.
    Presence(String),
    /// `consumers`.
    Consumers,
    /// `ping`.
    Ping,
    /// `auth`: the token.
    Auth(String),
}

/// A WebSocket text message: its echoed `op` and `ref`, and the operation.
pub fn decode_ws(text: &str) -> (Option<String>, Value, Result<WsOp, String>) {
    let (envelope, op) = Op::decode(text);
    let op = op.map_err(|e| e.to_string()).map(|op| match op {
        Op::Subscribe(s) => {
            let id = s.id.clone();
            let topics = match (&s.topic, &s.topics) {
                (Some(t), _) => vec![t.clone()],
                (None, Some(list)) => list.clone(),
                (None, None) => Vec::new(),
            };
            let start = s
                .selection()
                .map_err(|e| e.to_string())
                .and_then(|(_, sel)| {
                    let single = matches!(sel.topics, ops::Topics::One(_));
                    sel.position
                        .start(single, StartDefault::Now)
                        .map_err(|e| e.to_string())
                });
            WsOp::Subscribe { id, topics, start }
        }
        Op::Unsubscribe(u) => WsOp::Unsubscribe(u.id),
        Op::Publish(p, key) => {
            let (batch, list) = events(p);
            WsOp::Publish(batch, list, key.map(|k| k.0))
        }
        Op::Ack(a) => WsOp::Ack(a.consumer, a.seq, a.seqs),
        Op::Heartbeat(h) => WsOp::Heartbeat(h.topic, h.client_id, h.user, h.device, h.metadata),
        Op::Leave(l) => WsOp::Leave(l.topic, l.client_id),
        Op::Presence(p) => WsOp::Presence(p.topic),
        Op::Ping(_) => WsOp::Ping,
        Op::Consumers(_) => WsOp::Consumers,
        Op::Auth(a) => WsOp::Auth(a.token),
    });
    (envelope.op.map(Cow::into_owned), envelope.reference, op)
}

/// Whether the WebSocket decoder (with its fast path for plain publishes)
/// and the general decoder read `text` alike: the same op, ref, fields
/// and errors.
pub fn decoders_agree(text: &str) -> bool {
    let (envelope, mut op) = Op::decode(text);
    if let Ok(Op::Publish(request, _)) = &mut op {
        if !as_if_general(request) {
            return false;
        }
    }
    format!("{:?}", (envelope, op)) == format!("{:?}", Op::decode_general(text))
}

/// Whether the HTTP publish body decoder (with its fast path for plain
/// bodies) and the general decoder read `body` alike.
pub fn body_decoders_agree(body: &[u8], topic: &str) -> bool {
    let topic = ops::raw_string(topic);
    let mut fast = ops::publish_body(body, &topic);
    let general = std::str::from_utf8(body)
        .map_err(|_| ())
        .map(|text| ops::publish_body_general(text, &topic));
    let Ok(general) = general else {
        return fast.is_err();
    };
    if let Ok(request) = &mut fast {
        if !as_if_general(request) {
            return false;
        }
    }
    format!("{fast:?}") == format!("{general:?}")
}

/// A request as the general decoder leaves it: the fast path checks
/// payloads as it decodes, the general decoder leaves that to execution.
/// False if a payload marked checked would fail execution's check.
fn as_if_general(request: &mut PublishRequest<'_>) -> bool {
    let events = match request {
        PublishRequest::One(p) => std::slice::from_mut(p),
        PublishRequest::Batch(list) => list.as_mut_slice(),
    };
    for p in events {
        let text = p.data.unwrap_or("null");
        if p.data_checked && herald_core::json::validate(text).is_err() {
            return false;
        }
        p.data_checked = false;
    }
    true
}

/// `POST /v1/topics/{topic}/events`: batch or not, and the events.
pub fn publish_body(body: &[u8], topic: &str) -> Result<(bool, Vec<PublishEvent>), String> {
    let topic = ops::raw_string(topic);
    ops::publish_body(body, &topic)
        .map(events)
        .map_err(|e| e.to_string())
}

/// An acknowledgement as decoded: consumer, sequence acknowledged up to,
/// single sequences.
pub type AckFields = (String, Option<u64>, Option<Vec<u64>>);

/// `POST /v1/consumers/{name}/ack`.
pub fn ack_body(body: &[u8], consumer: &str) -> Result<AckFields, String> {
    let name = ops::raw_string(consumer);
    ops::from_body::<ops::Ack>(body, &[("consumer", &name)])
        .map(|a| (a.consumer, a.seq, a.seqs))
        .map_err(|e| e.to_string())
}

/// A presence body decoded: (topic, client id), or the error's text.
pub type PresenceBody = Result<(String, String), String>;

/// `POST /v1/presence/heartbeat` and `…/leave` bodies (topic, client id).
pub fn presence_bodies(body: &[u8]) -> (PresenceBody, PresenceBody) {
    let heartbeat = ops::from_body::<ops::Heartbeat>(body, &[])
        .map(|h| (h.topic, h.client_id))
        .map_err(|e| e.to_string());
    let leave = ops::from_body::<ops::Leave>(body, &[])
        .map(|l| (l.topic, l.client_id))
        .map_err(|e| e.to_string());
    (heartbeat, leave)
}

/// The server's token check with an HS256 key.
#[derive(Debug)]
pub struct TokenVerifier(Authenticator);

impl TokenVerifier {
    /// A verifier accepting HS256 tokens signed with `secret` (no anonymous
    /// access).
    pub fn hs256(secret: &[u8]) -> TokenVerifier {
        let config = AuthConfig {
            hs256_secret: Some(secret.to_vec()),
            rs256_public_pem: None,
        };
        // An HS256 secret is always a usable key.
        TokenVerifier(Authenticator::new(&config, Some(false)).expect("an HS256 key"))
    }

    /// The claims of a token the server accepts (signature, expiry, tenant
    /// and grant patterns all checked), or why it refuses it.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let claims = self.0.claims(token).map_err(|e| e.to_string())?;
        auth::grants(claims.clone()).map_err(|e| e.to_string())?;
        Ok(claims)
    }
}

/// Does subscription grant `grant` cover every topic `requested` matches?
pub fn covers(grant: &str, requested: &str) -> bool {
    auth::covers(grant, requested)
}

/// The event encoders of the fan-out (`fanout::encode`), over one reused
/// buffer: for benchmarks of the per-event encoding cost.
#[derive(Debug, Default)]
pub struct EventEncoder(bytes::BytesMut);

impl EventEncoder {
    /// `e` as one named SSE frame of a stream on one topic (`single`) or
    /// several, as the stream's output receives it.
    pub fn sse(&mut self, e: &herald_core::broker::EventRef<'_>, single: bool) -> &[u8] {
        self.0.clear();
        let d = herald_core::broker::DeliveryRef::Event(*e);
        let form = crate::fanout::encode::SseForm::new(single, true);
        crate::fanout::encode::sse_frame(&mut self.0, &d, form, 0);
        &self.0
    }

    /// `e` as the body of a WebSocket event message (after the
    /// subscription's prefix), as every subscription shares it.
    pub fn ws_body(&mut self, e: &herald_core::broker::EventRef<'_>) -> &[u8] {
        self.0.clear();
        crate::fanout::encode::ws_event_body(&mut self.0, e, 0);
        &self.0
    }
}

/// A STOMP frame as the server parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StompFrame {
    /// The command as spelled on the wire.
    pub command: &'static str,
    /// Headers in order, repeats removed, unescaped.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The outcome of parsing the front of a STOMP input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StompParse {
    /// A frame, and the bytes it used.
    Frame(StompFrame, usize),
    /// A heart-beat of this many bytes.
    HeartBeat(usize),
    /// Not a whole frame yet (see [`stomp_waits_for`]).
    Incomplete,
    /// Refused, with the reason.
    Refused(String),
}

/// Parses the front of `data` as the server's STOMP sessions do.
pub fn parse_stomp(data: &[u8], max_body: usize) -> StompParse {
    use crate::wire::stomp::{parse, Limits, Parsed};
    match parse(data, Limits { max_body }) {
        Ok(Parsed::Frame(f, used)) => StompParse::Frame(
            StompFrame {
                command: f.command.name(),
                headers: f
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body: f.body.to_vec(),
            },
            used,
        ),
        Ok(Parsed::HeartBeat(n)) => StompParse::HeartBeat(n),
        Ok(Parsed::Incomplete(_)) => StompParse::Incomplete,
        Err(e) => StompParse::Refused(e.to_string()),
    }
}

/// Whether, after `data` parsed as incomplete, appending `added` may let it
/// progress: a session re-parses only then (what keeps a frame sent a byte
/// at a time linear in cost). `None` if `data` is not incomplete.
pub fn stomp_waits_for(data: &[u8], max_body: usize, added: &[u8]) -> Option<bool> {
    use crate::wire::stomp::{parse, Limits, Parsed};
    match parse(data, Limits { max_body }) {
        Ok(Parsed::Incomplete(until)) => Some(until.reached(added, data.len() + added.len())),
        _ => None,
    }
}

/// A server frame as the server encodes it (headers escaped except in
/// `CONNECTED`, `content-length` added for a body).
pub fn encode_stomp(command: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    crate::wire::stomp::encode(command, headers, body)
}

/// The configured schemas' check of a published payload (`api::schema`):
/// for benchmarks of its cost on the publish path.
#[derive(Debug)]
pub struct SchemaCheck(crate::api::schema::Schemas);

impl SchemaCheck {
    /// Compiles `rules` as the server does at startup.
    pub fn compile(rules: &[crate::SchemaRule]) -> Result<SchemaCheck, String> {
        crate::api::schema::Schemas::compile(rules).map(SchemaCheck)
    }

    /// Checks a payload (valid JSON) published to `topic` (as the client
    /// names it) with `event_type`; the error's message.
    pub fn check(&self, topic: &str, event_type: &str, payload: &[u8]) -> Result<(), String> {
        (self.0)
            .check(topic, event_type, payload)
            .map_err(|e| e.message().to_owned())
    }
}
