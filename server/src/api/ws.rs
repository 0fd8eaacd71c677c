//! WebSocket messages: a connection's session (its grants, subscriptions
//! and presence sessions) and the dispatch of each text message to its
//! typed operation. Replies are specified in `docs/PROTOCOL.md`.

use std::collections::{BTreeMap, BTreeSet};

use herald_core::Broker;
use serde::Serialize;
use serde_json::Value;

use super::auth::{Authenticator, Grants};
use super::error::ApiError;
use super::exec::{Caller, Reset, Session};
use super::ops::{
    Envelope, Op, Selection, StartDefault, Subscribe, Unsubscribe, MAX_CONNECTION_PATTERNS,
    MAX_SUBSCRIPTIONS,
};
use super::stomp::StompSession;
use crate::fanout::{Encoding, Router, StreamId, MAX_WORKER_PATTERN_TOKENS};

/// What handling a client's messages needs from the worker.
pub(crate) struct WsContext<'a> {
    pub(crate) broker: &'a Broker,
    /// Verifies the tokens of STOMP `CONNECT` frames.
    pub(crate) auth: &'a Authenticator,
    pub(crate) router: &'a mut Router,
    /// The connection's index in its worker.
    pub(crate) conn: usize,
}

/// One WebSocket connection's protocol state. Its subscriptions are streams
/// of the worker's router, which writes their event frames.
#[derive(Debug)]
pub(crate) struct WsSession {
    grants: Grants,
    /// Subscription id → stream.
    subs: BTreeMap<String, StreamId>,
    /// Presence sessions joined over this connection: left when it closes.
    joined: BTreeSet<Session>,
}

/// The protocol a WebSocket connection speaks: Herald's JSON messages
/// (`/v1/ws`) or STOMP frames (`/v1/stomp`).
#[derive(Debug)]
pub(crate) enum Protocol {
    Json(WsSession),
    Stomp(Box<StompSession>),
}

impl Protocol {
    /// The streams of the connection's subscriptions.
    pub(crate) fn streams(&self) -> Vec<StreamId> {
        match self {
            Protocol::Json(s) => s.streams().collect(),
            Protocol::Stomp(s) => s.streams().collect(),
        }
    }

    /// Subscription ids with their streams.
    pub(crate) fn subscriptions(&self) -> Vec<(&str, StreamId)> {
        match self {
            Protocol::Json(s) => s.subscriptions().collect(),
            Protocol::Stomp(s) => s.subscriptions().collect(),
        }
    }

    /// Forgets the streams (the router no longer has them); see
    /// [`WsSession::retire`].
    pub(crate) fn retire(&mut self, broker: &Broker) {
        match self {
            Protocol::Json(s) => s.retire(broker),
            Protocol::Stomp(s) => s.retire(),
        }
    }
}

/// A reply: `{"type": kind, "ref": …, fields of the result}`.
#[derive(Serialize)]
struct Reply<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Echoed if the client gave one.
    #[serde(rename = "ref", skip_serializing_if = "is_null")]
    reference: &'a Value,
    #[serde(flatten)]
    body: T,
}

/// An error reply's fields.
#[derive(Serialize)]
struct ErrorBody<'a> {
    op: &'a str,
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct Subscribed<'a> {
    id: &'a str,
    recovered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reset: Option<Reset>,
}

#[derive(Serialize)]
struct SubscriptionId<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct AckedBody<'a> {
    consumer: &'a str,
    seq: u64,
}

#[derive(Serialize)]
struct Nothing {}

fn is_null(v: &&Value) -> bool {
    v.is_null()
}

fn reply<T: Serialize>(kind: &'static str, reference: &Value, body: T) -> String {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_string(&Reply {
        kind,
        reference,
        body,
    })
    .unwrap_or_default()
}

/// The error message for `e`, replying to the message `envelope` came from.
pub(crate) fn error_reply(envelope: &Envelope, e: &ApiError) -> String {
    reply(
        "error",
        &envelope.reference,
        ErrorBody {
            op: envelope.op.as_deref().unwrap_or(""),
            code: e.code(),
            message: e.message(),
        },
    )
}

impl WsSession {
    pub(crate) fn new(grants: Grants) -> WsSession {
        WsSession {
            grants,
            subs: BTreeMap::new(),
            joined: BTreeSet::new(),
        }
    }

    /// The streams of this connection's subscriptions.
    pub(crate) fn streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.subs.values().copied()
    }

    /// Subscription ids with their streams.
    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = (&str, StreamId)> + '_ {
        self.subs.iter().map(|(id, s)| (id.as_str(), *s))
    }

    /// Forgets the streams (the router no longer has them) and leaves the
    /// presence sessions joined over this connection (it is closing).
    pub(crate) fn retire(&mut self, broker: &Broker) {
        self.subs.clear();
        for (topic, client_id) in std::mem::take(&mut self.joined) {
            if let Err(e) = broker.presence_leave(&topic, &client_id) {
                tracing::warn!("presence leave on close failed: {e}");
            }
        }
    }

    /// Answers one text message: decode, execute, reply.
    pub(crate) fn handle(&mut self, cx: &mut WsContext<'_>, text: &str) -> String {
        let (envelope, op) = Op::decode(text);
        match op.and_then(|op| self.execute(cx, op, &envelope.reference)) {
            Ok(reply) => reply,
            Err(e) => error_reply(&envelope, &e),
        }
    }

    fn execute(
        &mut self,
        cx: &mut WsContext<'_>,
        op: Op,
        reference: &Value,
    ) -> Result<String, ApiError> {
        let caller = Caller {
            broker: cx.broker,
            grants: &self.grants,
        };
        Ok(match op {
            Op::Ping(_) => reply("pong", reference, Nothing {}),
            Op::Publish(p) => reply("published", reference, caller.publish(&p)?),
            Op::Ack(a) => {
                let acked = caller.ack(a)?;
                let body = AckedBody {
                    consumer: &acked.consumer,
                    seq: acked.seq,
                };
                reply("acked", reference, body)
            }
            Op::Heartbeat(h) => {
                let (session, joined) = caller.heartbeat(h)?;
                // Only sessions this connection started end with it (a
                // refresh may be another's).
                if joined.joined && self.joined.len() < MAX_SUBSCRIPTIONS {
                    self.joined.insert(session);
                }
                reply("heartbeat", reference, joined)
            }
            Op::Leave(l) => {
                let (session, left) = caller.leave(l)?;
                self.joined.remove(&session);
                reply("left", reference, left)
            }
            Op::Presence(q) => reply("presence", reference, caller.presence(q)?),
            Op::Subscribe(s) => self.subscribe(cx, s, reference)?,
            Op::Unsubscribe(u) => self.unsubscribe(cx, u, reference)?,
        })
    }

    fn subscribe(
        &mut self,
        cx: &mut WsContext<'_>,
        op: Subscribe,
        reference: &Value,
    ) -> Result<String, ApiError> {
        let (id, selection) = op.selection()?;
        if self.subs.contains_key(&id) {
            return Err(ApiError::invalid(format!(
                "subscription id {id:?} is already in use"
            )));
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::invalid(format!(
                "at most {MAX_SUBSCRIPTIONS} subscriptions per connection"
            )));
        }
        let held: Vec<StreamId> = self.streams().collect();
        let encoding = Encoding::ws(&id);
        let opened = open_stream(cx, &self.grants, &held, selection, encoding)?;
        let body = Subscribed {
            id: &id,
            recovered: opened.recovered,
            reset: opened.reset,
        };
        let stream = opened.stream;
        let answer = reply("subscribed", reference, body);
        self.subs.insert(id, stream);
        Ok(answer)
    }

    fn unsubscribe(
        &mut self,
        cx: &mut WsContext<'_>,
        op: Unsubscribe,
        reference: &Value,
    ) -> Result<String, ApiError> {
        let stream = self
            .subs
            .remove(&op.id)
            .ok_or_else(|| ApiError::NotFound(format!("no subscription {:?}", op.id)))?;
        cx.router.remove(stream);
        Ok(reply(
            "unsubscribed",
            reference,
            SubscriptionId { id: &op.id },
        ))
    }
}

/// A subscription opened as a stream of the worker's router.
pub(crate) struct OpenedStream {
    pub(crate) stream: StreamId,
    /// It starts at a position in the past (a replay or a consumer).
    pub(crate) recovered: bool,
    /// It asked to start beyond the log's end and starts there instead.
    pub(crate) reset: Option<Reset>,
}

/// Opens a subscription of a WebSocket connection (JSON or STOMP) that
/// holds the streams `held`: the connection's and the worker's pattern
/// bounds, then the caller's grants and the start position.
pub(crate) fn open_stream(
    cx: &mut WsContext<'_>,
    grants: &Grants,
    held: &[StreamId],
    selection: Selection,
    encoding: Encoding,
) -> Result<OpenedStream, ApiError> {
    let wildcards: usize = held.iter().map(|&s| cx.router.wildcards(s)).sum();
    if wildcards + selection.wildcards() > MAX_CONNECTION_PATTERNS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_CONNECTION_PATTERNS} wildcard patterns per connection \
             ({wildcards} held)"
        )));
    }
    let caller = Caller {
        broker: cx.broker,
        grants,
    };
    let opened = caller.open(selection, StartDefault::Now)?;
    if !cx.router.admits(opened.sub.filter()) {
        return Err(pattern_capacity());
    }
    let reset = opened.sub.beyond_end().map(|head| Reset { head });
    let recovered = opened.recovered && reset.is_none();
    let stream = cx
        .router
        .add(cx.conn, opened.sub, encoding, grants.prefix_len());
    Ok(OpenedStream {
        stream,
        recovered,
        reset,
    })
}

/// The refusal of a stream over the worker's pattern bound.
pub(crate) fn pattern_capacity() -> ApiError {
    ApiError::Unavailable(format!(
        "this server worker's pattern subscriptions are at their bound \
         ({MAX_WORKER_PATTERN_TOKENS} tokens); retry later"
    ))
}
