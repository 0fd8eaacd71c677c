//! STOMP 1.2 over WebSocket (`/v1/stomp`): one connection's session. Frames
//! (`wire/stomp.rs`) become the same typed operations as HTTP and the JSON
//! WebSocket protocol (`api/ops.rs`), checked by the same rules and run by
//! the same executor (`api/exec.rs`); only the framing differs. The mapping
//! is specified in `docs/PROTOCOL.md`, "STOMP".
//!
//! STOMP has one way to refuse: an `ERROR` frame, after which the server
//! closes the connection. Every refusal here is one, carrying the same
//! `code` and message as the other transports.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::auth::{Authenticator, Expiry, Grants};
use super::error::ApiError;
use super::exec::Caller;
use super::ops::{
    Ack, IdempotencyKey, Publish, PublishRequest, Subscribe, Topics, MAX_BATCH, MAX_SUBSCRIPTIONS,
};
use super::ws::{open_stream, WsContext};
use crate::fanout::{Encoding, StreamId};
use crate::wire::stomp::{self, Command, Frame, FrameError, Limits, Parsed, Until};

/// Most open transactions per connection.
pub(crate) const MAX_TRANSACTIONS: usize = 16;
/// Longest transaction id, subscription id and receipt id, in bytes.
const MAX_ID: usize = 128;

/// Where a connection is in its life.
enum Stage {
    /// Before CONNECT. `grants`: those of a token that came with the
    /// upgrade request, or anonymous access if the server allows it to this
    /// client; `None`: CONNECT must carry a token.
    Connecting {
        grants: Option<Grants>,
    },
    Connected {
        grants: Grants,
    },
    /// After DISCONNECT or an ERROR: nothing more is read.
    Done,
}

/// How a subscription's messages are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckMode {
    Auto,
    Client,
    ClientIndividual,
}

struct StompSub {
    stream: StreamId,
    ack: AckMode,
    /// The durable consumer behind `client` acks.
    consumer: Option<String>,
    /// Highest sequence acknowledged through this subscription: with
    /// `client`, an `ACK` at or below it is already done.
    acked: u64,
}

/// The `herald-idempotency-key` of a SEND or a COMMIT.
fn idempotency_key(frame: &Frame<'_>) -> Result<Option<IdempotencyKey>, ApiError> {
    const HEADER: &str = "herald-idempotency-key";
    frame
        .header(HEADER)
        .map(|k| IdempotencyKey::parse(HEADER, k))
        .transpose()
}

/// A `SEND` held in a transaction until `COMMIT`.
struct Held {
    topic: String,
    event_type: String,
    correlation_id: Option<String>,
    data: Box<RawValue>,
}

/// The negotiated heart-beats.
#[derive(Debug, Clone, Copy, Default)]
struct HeartBeats {
    /// Send an EOL at least this often.
    send_every: Option<Duration>,
    /// The client promised to send something at least this often.
    expect_every: Option<Duration>,
}

/// What the connection should do after a read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// Close once what was queued is written (after DISCONNECT or ERROR).
    Close,
}

/// One STOMP connection's protocol state.
pub(crate) struct StompSession {
    /// Bytes of a frame not complete yet.
    input: Vec<u8>,
    limits: Limits,
    stage: Stage,
    subs: BTreeMap<String, StompSub>,
    transactions: BTreeMap<String, Vec<Held>>,
    /// What the buffered input waits for before it is parsed again.
    until: Until,
    /// Destination prefixes that name topics (`stomp_destinations`).
    destinations: Vec<String>,
    heart_beat_offer: Duration,
    heart_beats: HeartBeats,
    /// When the token of the connected session runs out.
    expiry: Option<Expiry>,
    last_received: Instant,
    last_heart_beat_sent: Instant,
}

impl std::fmt::Debug for StompSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StompSession")
            .field("subscriptions", &self.subs.len())
            .field("transactions", &self.transactions.len())
            .finish_non_exhaustive()
    }
}

/// A refusal as an ERROR frame: `message` (a header, so short) and the
/// same `code` as the other transports, the message again as the body.
pub(crate) fn error_frame(e: &ApiError, receipt: Option<&str>) -> Vec<u8> {
    let mut headers = vec![
        ("message", e.message()),
        ("herald-code", e.code()),
        ("content-type", "text/plain"),
    ];
    if let Some(r) = receipt {
        headers.push(("receipt-id", r));
    }
    stomp::encode("ERROR", &headers, e.message().as_bytes())
}

fn frame_error(e: &FrameError) -> ApiError {
    match e {
        FrameError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
        _ => ApiError::invalid(e.to_string()),
    }
}

/// A header that must be there.
fn required<'f>(frame: &'f Frame<'_>, name: &str) -> Result<&'f str, ApiError> {
    frame.header(name).ok_or_else(|| {
        ApiError::invalid(format!("{} needs a '{name}' header", frame.command.name()))
    })
}

/// A numeric header (`herald-after`, …), if present.
fn number(frame: &Frame<'_>, name: &str) -> Result<Option<u64>, ApiError> {
    frame
        .header(name)
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::invalid(format!("'{name}' must be a non-negative integer")))
        })
        .transpose()
}

/// An id the client chooses (subscription, transaction, receipt).
fn id<'f>(frame: &'f Frame<'_>, name: &str) -> Result<&'f str, ApiError> {
    let v = required(frame, name)?;
    if v.is_empty() || v.len() > MAX_ID {
        return Err(ApiError::invalid(format!("'{name}': 1 to {MAX_ID} bytes")));
    }
    Ok(v)
}

/// The prefix and the topic (or pattern) of a destination, with the
/// configured destination prefixes (`/topic/`, …).
fn destination_topic<'d>(
    prefixes: &'d [String],
    destination: &'d str,
) -> Result<(&'d str, &'d str), ApiError> {
    prefixes
        .iter()
        .find_map(|p| Some((p.as_str(), destination.strip_prefix(p.as_str())?)))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "destination {destination:?}: Herald serves topics as {}<topic>",
                prefixes.join("<topic> or ")
            ))
        })
}

/// The negotiated version: the highest both sides speak.
fn version(accept: Option<&str>) -> Result<&'static str, ApiError> {
    // No accept-version: a STOMP 1.0 client.
    let offered = accept.unwrap_or("1.0");
    ["1.2", "1.1", "1.0"]
        .into_iter()
        .find(|v| offered.split(',').any(|o| o.trim() == *v))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "no common STOMP version: the client offers {offered:?}, Herald speaks 1.2, 1.1, 1.0"
            ))
        })
}

/// The grants of a connected session (a function of the stage alone, so
/// that they can be held while other fields change).
fn grants_of(stage: &Stage) -> Result<&Grants, ApiError> {
    match stage {
        Stage::Connected { grants } => Ok(grants),
        _ => Err(ApiError::invalid("send CONNECT first")),
    }
}

impl StompSession {
    /// A session for a connection upgraded with `grants` (see
    /// [`Stage::Connecting`]).
    pub(crate) fn new(
        grants: Option<Grants>,
        max_body: usize,
        heart_beat_offer: Duration,
        destinations: &[String],
    ) -> StompSession {
        let now = Instant::now();
        StompSession {
            input: Vec::new(),
            until: Until::More,
            limits: Limits { max_body },
            stage: Stage::Connecting { grants },
            subs: BTreeMap::new(),
            transactions: BTreeMap::new(),
            destinations: destinations.to_vec(),
            heart_beat_offer,
            heart_beats: HeartBeats::default(),
            expiry: None,
            last_received: now,
            last_heart_beat_sent: now,
        }
    }

    /// The streams of this connection's subscriptions.
    pub(crate) fn streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.subs.values().map(|s| s.stream)
    }

    /// Subscription ids with their streams.
    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = (&str, StreamId)> + '_ {
        self.subs.iter().map(|(id, s)| (id.as_str(), s.stream))
    }

    /// Forgets the streams: the router no longer has them.
    pub(crate) fn retire(&mut self) {
        self.subs.clear();
        self.transactions.clear();
    }

    /// Reads `bytes` (a WebSocket message: part of a frame, a frame, or
    /// several) and answers every whole frame into `out`.
    pub(crate) fn feed(
        &mut self,
        cx: &mut WsContext<'_>,
        bytes: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Flow {
        self.last_received = Instant::now();
        if matches!(self.stage, Stage::Done) {
            return Flow::Close;
        }
        // The usual message is whole frames: parsed where it lies. Only the
        // start of a frame is kept, and re-parsed when what it waits for has
        // come.
        if self.input.is_empty() {
            let (flow, at) = self.frames(cx, bytes, out);
            if flow == Flow::Continue {
                self.input.extend_from_slice(&bytes[at..]);
            }
            return flow;
        }
        self.input.extend_from_slice(bytes);
        if !self.until.reached(bytes, self.input.len()) {
            if self.input.len() > self.limits.max_frame() {
                let e = ApiError::TooLarge("frame too large".into());
                return self.refuse(&e, None, out);
            }
            return Flow::Continue;
        }
        let mut input = std::mem::take(&mut self.input);
        let (flow, at) = self.frames(cx, &input, out);
        if flow == Flow::Continue {
            input.drain(..at);
            self.input = input;
        }
        flow
    }

    /// Answers every whole frame at the front of `input`; returns the flow
    /// and how many bytes were used (the rest is the start of a frame, its
    /// wait in `until`).
    fn frames(
        &mut self,
        cx: &mut WsContext<'_>,
        input: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> (Flow, usize) {
        let mut at = 0;
        loop {
            match stomp::parse(&input[at..], self.limits) {
                Ok(Parsed::HeartBeat(n)) => at += n,
                Ok(Parsed::Incomplete(until)) => {
                    self.until = until;
                    return (Flow::Continue, at);
                }
                Ok(Parsed::Frame(frame, n)) => {
                    at += n;
                    let receipt = frame.header("receipt");
                    let flow = match self.handle(cx, &frame, out) {
                        Ok(flow) => flow,
                        Err(e) => return (self.refuse(&e, receipt, out), at),
                    };
                    if let Some(r) = receipt {
                        out.push(stomp::encode("RECEIPT", &[("receipt-id", r)], b""));
                    }
                    if flow == Flow::Close {
                        self.stage = Stage::Done;
                        return (Flow::Close, at);
                    }
                }
                Err(e) => return (self.refuse(&frame_error(&e), None, out), at),
            }
        }
    }

    /// Answers a refusal: an ERROR frame, then the connection closes.
    fn refuse(&mut self, e: &ApiError, receipt: Option<&str>, out: &mut Vec<Vec<u8>>) -> Flow {
        out.push(error_frame(e, receipt));
        self.stage = Stage::Done;
        self.input = Vec::new();
        Flow::Close
    }

    /// Heart-beats due at `now`: an EOL to send (`Some`), and whether the
    /// client has been silent for twice its interval (close it).
    pub(crate) fn heart_beat(&mut self, now: Instant) -> (Option<&'static [u8]>, bool) {
        let silent = self
            .heart_beats
            .expect_every
            .is_some_and(|every| now - self.last_received > every * 2);
        let send = match self.heart_beats.send_every {
            Some(every) if now - self.last_heart_beat_sent >= every => {
                self.last_heart_beat_sent = now;
                Some(&b"\n"[..])
            }
            _ => None,
        };
        (send, silent)
    }

    /// When the token runs out (`None`: not connected, or anonymous).
    pub(crate) fn token_deadline(&self) -> Option<Instant> {
        self.expiry.as_ref().map(Expiry::next)
    }

    /// Whether the token has run out at `now`.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expiry.as_ref().is_some_and(|e| e.expired(now))
    }

    fn grants(&self) -> Result<&Grants, ApiError> {
        grants_of(&self.stage)
    }

    fn handle(
        &mut self,
        cx: &mut WsContext<'_>,
        frame: &Frame<'_>,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<Flow, ApiError> {
        match frame.command {
            Command::Connect | Command::Stomp => {
                let reply = self.connect(cx.auth, frame)?;
                out.push(reply);
            }
            Command::Send => self.send(cx, frame)?,
            Command::Subscribe => self.subscribe(cx, frame)?,
            Command::Unsubscribe => {
                self.grants()?;
                let id = id(frame, "id")?;
                let sub = self
                    .subs
                    .remove(id)
                    .ok_or_else(|| ApiError::NotFound(format!("no subscription {id:?}")))?;
                cx.router.remove(sub.stream);
            }
            Command::Ack => self.ack(cx, frame)?,
            // A NACK leaves the message unacknowledged: a durable consumer
            // gets it again when it next subscribes. Herald does not
            // redeliver on the same subscription.
            Command::Nack => {
                self.grants()?;
                self.acked_sub(frame)?;
            }
            Command::Begin => {
                self.grants()?;
                let tx = id(frame, "transaction")?;
                if self.transactions.contains_key(tx) {
                    return Err(ApiError::invalid(format!(
                        "transaction {tx:?} is already open"
                    )));
                }
                if self.transactions.len() >= MAX_TRANSACTIONS {
                    return Err(ApiError::invalid(format!(
                        "at most {MAX_TRANSACTIONS} open transactions per connection"
                    )));
                }
                self.transactions.insert(tx.to_owned(), Vec::new());
            }
            Command::Commit => self.commit(cx, frame)?,
            Command::Abort => {
                self.grants()?;
                let tx = id(frame, "transaction")?;
                self.transactions
                    .remove(tx)
                    .ok_or_else(|| ApiError::NotFound(format!("no transaction {tx:?}")))?;
            }
            Command::Disconnect => return Ok(Flow::Close),
        }
        Ok(Flow::Continue)
    }

    /// CONNECT / STOMP: the version, the token, the heart-beats.
    fn connect(&mut self, auth: &Authenticator, frame: &Frame<'_>) -> Result<Vec<u8>, ApiError> {
        let Stage::Connecting { grants } = &self.stage else {
            return Err(ApiError::invalid("already connected"));
        };
        let version = version(frame.header("accept-version"))?;
        // The token: `passcode` (stomp.js's and Spring's login fields), or
        // an Authorization header among the CONNECT headers.
        let token = frame
            .header("passcode")
            .filter(|p| !p.is_empty())
            .or_else(|| {
                frame
                    .header("Authorization")
                    .or_else(|| frame.header("authorization"))
                    .and_then(|h| {
                        h.strip_prefix("Bearer ")
                            .or_else(|| h.strip_prefix("bearer "))
                    })
            });
        let grants = match (token, grants) {
            (Some(token), _) => super::auth::grants(auth.claims(token)?)?,
            (None, Some(g)) => g.clone(),
            (None, None) => {
                return Err(ApiError::Unauthenticated(
                    "missing token: send it as the CONNECT frame's passcode header".into(),
                ))
            }
        };
        let (client_send, client_wants) = match frame.header("heart-beat") {
            None => (0, 0),
            Some(hb) => {
                let parsed = hb
                    .split_once(',')
                    .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
                parsed.ok_or_else(|| {
                    ApiError::invalid("'heart-beat' must be two integers: <send>,<receive>")
                })?
            }
        };
        let offer = self.heart_beat_offer.as_millis().min(u128::from(u32::MAX)) as u64;
        // Each direction beats at the larger of what one side can do and
        // the other wants; zero on either side: no beats that way.
        let interval = |can: u64, wants: u64| {
            (can > 0 && wants > 0).then(|| Duration::from_millis(can.max(wants)))
        };
        self.heart_beats = HeartBeats {
            send_every: interval(offer, client_wants),
            expect_every: interval(client_send, offer),
        };
        self.expiry = Expiry::of(&grants, false);
        self.stage = Stage::Connected { grants };
        let heart_beat = format!("{offer},{offer}");
        Ok(stomp::encode(
            "CONNECTED",
            &[
                ("version", version),
                ("heart-beat", &heart_beat),
                ("server", concat!("herald/", env!("CARGO_PKG_VERSION"))),
            ],
            b"",
        ))
    }

    /// SEND: one event, published now or held by its transaction.
    fn send(&mut self, cx: &mut WsContext<'_>, frame: &Frame<'_>) -> Result<(), ApiError> {
        let grants = grants_of(&self.stage)?;
        let key = idempotency_key(frame)?;
        let (_, topic) = destination_topic(&self.destinations, required(frame, "destination")?)?;
        // A JSON body is borrowed from the frame; only text is re-encoded.
        let text_body: Box<RawValue>;
        let data = match body(frame)? {
            Body::Json(raw) => raw,
            Body::Text(text) => {
                text_body = super::ops::raw_string(text);
                &text_body
            }
        };
        let op = Publish {
            topic: topic.into(),
            event_type: frame.header("herald-type").unwrap_or("message").into(),
            data: Some(data.get()),
            origin: None,
            correlation_id: frame.header("herald-correlation-id").map(Cow::Borrowed),
            data_checked: false,
        };
        let caller = Caller {
            broker: cx.broker,
            cluster: cx.cluster,
            grants,
            schemas: cx.schemas,
            rate: cx.rate,
            peer: cx.peer,
        };
        match frame.header("transaction") {
            Some(_) if key.is_some() => {
                return Err(ApiError::invalid(
                    "herald-idempotency-key: a SEND in a transaction has none (give it to COMMIT)",
                ))
            }
            Some(tx) => {
                let list = self
                    .transactions
                    .get_mut(tx)
                    .ok_or_else(|| ApiError::NotFound(format!("no transaction {tx:?}")))?;
                if list.len() >= MAX_BATCH {
                    return Err(ApiError::invalid(format!(
                        "at most {MAX_BATCH} SENDs per transaction"
                    )));
                }
                // Checked now as well as at COMMIT: a bad SEND is refused
                // when it arrives.
                caller.check(&op)?;
                list.push(Held {
                    data: data.to_owned(),
                    topic: op.topic.into_owned(),
                    event_type: op.event_type.into_owned(),
                    correlation_id: op.correlation_id.map(Cow::into_owned),
                });
            }
            None => {
                caller.publish(&PublishRequest::One(op), key.as_ref())?;
            }
        }
        Ok(())
    }

    /// COMMIT: the transaction's SENDs, stored together or not at all.
    fn commit(&mut self, cx: &mut WsContext<'_>, frame: &Frame<'_>) -> Result<(), ApiError> {
        let grants = grants_of(&self.stage)?;
        let tx = id(frame, "transaction")?;
        let key = idempotency_key(frame)?;
        let held = self
            .transactions
            .remove(tx)
            .ok_or_else(|| ApiError::NotFound(format!("no transaction {tx:?}")))?;
        if held.is_empty() {
            return Ok(());
        }
        let caller = Caller {
            broker: cx.broker,
            cluster: cx.cluster,
            grants,
            schemas: cx.schemas,
            rate: cx.rate,
            peer: cx.peer,
        };
        let ops = held.iter().map(Held::publish).collect();
        caller.publish(&PublishRequest::Batch(ops), key.as_ref())?;
        Ok(())
    }

    /// SUBSCRIBE: a stream of the destination's events.
    fn subscribe(&mut self, cx: &mut WsContext<'_>, frame: &Frame<'_>) -> Result<(), ApiError> {
        let grants = grants_of(&self.stage)?;
        let sub_id = id(frame, "id")?;
        let (destination, topic) =
            destination_topic(&self.destinations, required(frame, "destination")?)?;
        let ack = match frame.header("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            other => {
                return Err(ApiError::invalid(format!(
                    "ack {other:?}: auto, client or client-individual"
                )))
            }
        };
        let consumer = frame.header("herald-consumer").map(str::to_owned);
        if ack != AckMode::Auto && consumer.is_none() {
            return Err(ApiError::invalid(
                "client acknowledgements need a durable consumer: add a herald-consumer header",
            ));
        }
        let types = frame
            .header("herald-types")
            .map(|t| t.split(',').map(str::to_owned).collect());
        let op = Subscribe {
            id: sub_id.to_owned(),
            // A pattern goes through `topics`, as on the other transports.
            topic: None,
            topics: Some(vec![topic.to_owned()]),
            types,
            exclude_origin: None,
            after: number(frame, "herald-after")?,
            since: number(frame, "herald-since")?,
            last: number(frame, "herald-last")?,
            consumer: consumer.clone(),
            batch: None,
        };
        let (sub_id, mut selection) = op.selection()?;
        // One literal topic is a single-topic stream: `herald-after` counts
        // that topic's sequences, as `after` with `topic` does.
        if let Topics::Many(list) = &selection.topics {
            if let [one] = list.as_slice() {
                if !one.contains(['*', '>']) {
                    selection.topics = Topics::One(one.clone());
                }
            }
        }
        if self.subs.contains_key(&sub_id) {
            return Err(ApiError::invalid(format!(
                "subscription id {sub_id:?} is already in use"
            )));
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::invalid(format!(
                "at most {MAX_SUBSCRIPTIONS} subscriptions per connection"
            )));
        }
        let held: Vec<StreamId> = self.subs.values().map(|s| s.stream).collect();
        let opened = open_stream(
            cx,
            grants,
            &held,
            selection,
            Encoding::stomp(&sub_id, destination),
        )?;
        self.subs.insert(
            sub_id,
            StompSub {
                stream: opened.stream,
                ack,
                consumer,
                acked: 0,
            },
        );
        Ok(())
    }

    /// The subscription an ACK or NACK is for: its `subscription` header,
    /// or the connection's only subscription with client acks.
    fn acked_sub(&self, frame: &Frame<'_>) -> Result<(String, u64), ApiError> {
        // 1.2 names the message by `id` (the `ack` header of MESSAGE), 1.1
        // by `message-id`: both are the event's global sequence.
        let seq = match number(frame, "id")? {
            Some(seq) => seq,
            None => number(frame, "message-id")?
                .ok_or_else(|| ApiError::invalid("ACK and NACK need an 'id' header"))?,
        };
        let name = match frame.header("subscription") {
            Some(s) => s.to_owned(),
            None => {
                let mut client = self.subs.iter().filter(|(_, s)| s.ack != AckMode::Auto);
                match (client.next(), client.next()) {
                    (Some((name, _)), None) => name.clone(),
                    _ => {
                        return Err(ApiError::invalid(
                            "ACK needs a 'subscription' header when the connection has \
                             several subscriptions with client acks",
                        ))
                    }
                }
            }
        };
        let sub = self
            .subs
            .get(&name)
            .ok_or_else(|| ApiError::NotFound(format!("no subscription {name:?}")))?;
        if sub.ack == AckMode::Auto {
            return Err(ApiError::invalid(format!(
                "subscription {name:?} acknowledges automatically (ack:auto)"
            )));
        }
        Ok((name, seq))
    }

    /// ACK: with `client`, the subscription's durable consumer has
    /// processed everything up to the message; with `client-individual`,
    /// that message alone (the checkpoint passes it once every earlier
    /// message of the consumer is acknowledged too).
    fn ack(&mut self, cx: &mut WsContext<'_>, frame: &Frame<'_>) -> Result<(), ApiError> {
        let grants = grants_of(&self.stage)?;
        let (name, seq) = self.acked_sub(frame)?;
        let sub = self
            .subs
            .get_mut(&name)
            .ok_or_else(|| ApiError::NotFound(format!("no subscription {name:?}")))?;
        let individual = sub.ack == AckMode::ClientIndividual;
        if seq <= sub.acked && !individual {
            return Ok(());
        }
        let ack = Ack {
            consumer: sub.consumer.clone().unwrap_or_default(),
            seq: (!individual).then_some(seq),
            seqs: individual.then(|| vec![seq]),
        };
        Caller {
            broker: cx.broker,
            cluster: cx.cluster,
            grants,
            schemas: cx.schemas,
            rate: cx.rate,
            peer: cx.peer,
        }
        .ack(ack)?;
        sub.acked = sub.acked.max(seq);
        Ok(())
    }
}

impl Held {
    fn publish(&self) -> Publish<'_> {
        Publish {
            topic: self.topic.as_str().into(),
            event_type: self.event_type.as_str().into(),
            data: Some(self.data.get()),
            origin: None,
            correlation_id: self.correlation_id.as_deref().map(Cow::Borrowed),
            data_checked: false,
        }
    }
}

/// A SEND's body: JSON as sent when the content type is JSON (or not
/// given; an empty body is `null`), text to become a JSON string when it
/// is `text/*`.
enum Body<'f> {
    Json(&'f RawValue),
    Text(&'f str),
}

fn body<'f>(frame: &Frame<'f>) -> Result<Body<'f>, ApiError> {
    let text = std::str::from_utf8(frame.body)
        .map_err(|_| ApiError::invalid("the body must be UTF-8 (JSON or text)"))?;
    let content_type = frame.header("content-type").unwrap_or("application/json");
    let json = content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if json {
        let text = if text.trim().is_empty() { "null" } else { text };
        serde_json::from_str::<&RawValue>(text)
            .map(Body::Json)
            .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))
    } else if content_type.starts_with("text/") {
        Ok(Body::Text(text))
    } else {
        Err(ApiError::invalid(format!(
            "content-type {content_type:?}: Herald payloads are JSON (application/json) or text (text/*)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_map_to_topics_by_the_configured_prefixes() {
        let prefixes = vec!["/topic/".to_owned(), "/exchange/amq.topic/".to_owned()];
        assert_eq!(
            destination_topic(&prefixes, "/topic/workspace.42"),
            Ok(("/topic/", "workspace.42"))
        );
        assert_eq!(
            destination_topic(&prefixes, "/exchange/amq.topic/a.*"),
            Ok(("/exchange/amq.topic/", "a.*"))
        );
        let e = destination_topic(&prefixes, "/queue/a").unwrap_err();
        assert!(
            e.message()
                .contains("/topic/<topic> or /exchange/amq.topic/<topic>"),
            "{e:?}"
        );
        let own = vec!["/app/events/".to_owned()];
        assert_eq!(
            destination_topic(&own, "/app/events/x"),
            Ok(("/app/events/", "x"))
        );
        assert!(destination_topic(&own, "/topic/x").is_err());
    }

    #[test]
    fn versions_and_heart_beats_are_negotiated() {
        assert_eq!(version(None), Ok("1.0"));
        assert_eq!(version(Some("1.1,1.2")), Ok("1.2"));
        assert_eq!(version(Some("1.0, 1.1")), Ok("1.1"));
        assert!(version(Some("2.0")).is_err());
        let mut s = StompSession::new(None, 1024, Duration::from_millis(500), &["/topic/".into()]);
        let auth = Authenticator::new(&Default::default(), Some(true)).unwrap();
        let frame = |hb: &str| Frame {
            command: Command::Connect,
            headers: vec![("heart-beat".into(), hb.to_owned().into())],
            body: b"",
        };
        // Anonymous access is off in this session (no grants at the
        // upgrade): CONNECT without a token is refused.
        assert!(matches!(
            s.connect(&auth, &frame("0,0")),
            Err(ApiError::Unauthenticated(_))
        ));
        s.stage = Stage::Connecting {
            grants: Some(Grants::anonymous()),
        };
        s.connect(&auth, &frame("200,1000")).unwrap();
        // The client sends every 200 ms but we want 500: max(200, 500);
        // it wants ours every 1000: max(500, 1000).
        assert_eq!(s.heart_beats.expect_every, Some(Duration::from_millis(500)));
        assert_eq!(s.heart_beats.send_every, Some(Duration::from_millis(1000)));
        let start = s.last_received;
        assert_eq!(
            s.heart_beat(start + Duration::from_millis(999)),
            (None, false)
        );
        assert_eq!(
            s.heart_beat(start + Duration::from_millis(1000)).0,
            Some(&b"\n"[..])
        );
        assert!(
            s.heart_beat(start + Duration::from_millis(1001)).1,
            "silent past 2 x 500 ms"
        );
    }
}
