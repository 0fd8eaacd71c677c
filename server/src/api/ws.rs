//! WebSocket messages: a connection's session (its grants, subscriptions
//! and presence sessions) and the dispatch of each text message to its
//! typed operation. Replies are specified in `docs/PROTOCOL.md`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use herald_core::Broker;
use serde::Serialize;
use serde_json::Value;

use super::auth::{Authenticator, Due, Expiry, Grants};
use super::error::ApiError;
use super::exec::{
    Caller, Hold, HoldState, PendingPublish, PublishAnswer, Published, PublishedAll, Publishing,
    Reset, Session,
};
use super::ops::{
    Auth, Envelope, Op, Selection, StartDefault, Subscribe, Topics, Unsubscribe,
    MAX_CONNECTION_PATTERNS, MAX_SUBSCRIPTIONS,
};
use super::rate::RateLimits;
use super::schema::Schemas;
use super::stomp::StompSession;
use crate::cluster::Cluster;
use crate::fanout::{Encoding, Router, StreamId, MAX_WORKER_PATTERN_TOKENS};
use crate::metrics::ServerStats;

/// What handling a client's messages needs from the worker.
pub(crate) struct WsContext<'a> {
    pub(crate) broker: &'a Broker,
    /// Cluster mode: where publishes go.
    pub(crate) cluster: Option<&'a Cluster>,
    /// What published payloads must satisfy.
    pub(crate) schemas: &'a Schemas,
    pub(crate) rate: &'a RateLimits,
    /// The client's address (its rate-limit key when anonymous).
    pub(crate) peer: IpAddr,
    /// Verifies the tokens of STOMP `CONNECT` frames and `auth` messages.
    pub(crate) auth: &'a Authenticator,
    pub(crate) stats: &'a ServerStats,
    pub(crate) router: &'a mut Router,
    /// The connection's index in its worker.
    pub(crate) conn: usize,
}

/// One WebSocket connection's protocol state. Its subscriptions are streams
/// of the worker's router, which writes their event frames.
#[derive(Debug)]
pub(crate) struct WsSession {
    grants: Grants,
    /// When the token runs out (`None`: anonymous).
    expiry: Option<Expiry>,
    /// Subscription id → its stream and what it names.
    subs: BTreeMap<String, Sub>,
    /// Presence sessions joined over this connection: left when it closes.
    joined: BTreeSet<Session>,
    /// On a cluster node, publish answers not sent yet, in the order of the
    /// publishes: those awaiting the cluster's stream, and the answers
    /// (refusals) queued behind them. Empty on a single node.
    publishing: VecDeque<Queued>,
    /// On a cluster node, subscriptions whose start is ahead of the
    /// replica: they end with an error if it has not reached them in time.
    holds: Vec<HeldSub>,
}

/// A subscription in [`WsSession::holds`].
#[derive(Debug)]
struct HeldSub {
    id: String,
    /// The `ref` of its `subscribe`, which the error names.
    reference: Value,
    hold: Hold,
}

/// An answer in [`WsSession::publishing`].
#[derive(Debug)]
enum Queued {
    /// A publish awaiting the cluster's stream, with the `ref` its answer
    /// echoes.
    Publish(PendingPublish, Value),
    /// A message ready to send once those before it are sent.
    Ready(Vec<u8>),
}

/// Publishes a connection may have awaiting a cluster's stream; one more is
/// refused.
const MAX_PUBLISHES_IN_FLIGHT: usize = 256;

/// A subscription: its stream, and its topics and patterns as the client
/// named them (re-checked when a refreshed token changes the grants).
#[derive(Debug)]
struct Sub {
    stream: StreamId,
    names: Vec<String>,
}

/// The protocol a WebSocket connection speaks: Herald's JSON messages
/// (`/v1/ws`) or STOMP frames (`/v1/stomp`).
#[derive(Debug)]
pub(crate) enum Protocol {
    Json(Box<WsSession>),
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
    pub(crate) fn retire(&mut self, broker: &Broker, cluster: Option<&Cluster>) {
        match self {
            Protocol::Json(s) => s.retire(broker, cluster),
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
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    checkpoint: u64,
}

#[derive(Serialize)]
struct Nothing {}

/// `authed` and `token_expiring`: the token's expiry.
#[derive(Serialize)]
struct Exp {
    exp: u64,
}

/// The end of a subscription the grants no longer cover: an error message
/// with a `sub`.
#[derive(Serialize)]
struct Ended<'a> {
    op: &'static str,
    code: &'static str,
    sub: &'a str,
    message: &'a str,
}

fn is_null(v: &&Value) -> bool {
    v.is_null()
}

/// Appends the reply `{"type": kind, "ref": …, fields of body}` to `out`.
fn reply<T: Serialize>(out: &mut Vec<u8>, kind: &'static str, reference: &Value, body: T) {
    // Serializing plain structs of strings and numbers into a Vec cannot
    // fail.
    let _ = serde_json::to_writer(
        out,
        &Reply {
            kind,
            reference,
            body,
        },
    );
}

/// Appends the reply to a publish of one event or a batch: the bytes
/// [`reply`] writes for it (a test checks), without serde (every publish
/// is answered).
fn published_reply(out: &mut Vec<u8>, reference: &Value, published: &PublishedAll) {
    out.extend_from_slice(br#"{"type":"published""#);
    if !reference.is_null() {
        out.extend_from_slice(br#","ref":"#);
        let _ = serde_json::to_writer(&mut *out, reference);
    }
    let mut n = itoa::Buffer::new();
    let mut sequences = |out: &mut Vec<u8>, p: &Published| {
        out.extend_from_slice(br#""seq":"#);
        out.extend_from_slice(n.format(p.seq).as_bytes());
        out.extend_from_slice(br#","topic_seq":"#);
        out.extend_from_slice(n.format(p.topic_seq).as_bytes());
    };
    match published {
        PublishedAll::One(one) => {
            out.push(b',');
            sequences(out, one);
        }
        PublishedAll::Batch { events } => {
            out.extend_from_slice(br#","events":["#);
            for (i, p) in events.iter().enumerate() {
                out.extend_from_slice(if i == 0 { b"{" } else { b",{" });
                sequences(out, p);
                out.push(b'}');
            }
            out.push(b']');
        }
    }
    out.push(b'}');
}

/// Appends a publish's answer (or its error) to `out`.
fn publish_answer(out: &mut Vec<u8>, reference: &Value, answer: Result<PublishAnswer, ApiError>) {
    match answer {
        Ok(PublishAnswer {
            published,
            duplicate: false,
        }) => published_reply(out, reference, &published),
        Ok(answer) => reply(out, "published", reference, answer),
        Err(e) => {
            let envelope = Envelope {
                op: Some(Cow::Borrowed("publish")),
                reference: reference.clone(),
            };
            error_reply(out, &envelope, &e);
        }
    }
}

/// Appends the error message for `e` to `out`, replying to the message
/// `envelope` came from.
pub(crate) fn error_reply(out: &mut Vec<u8>, envelope: &Envelope, e: &ApiError) {
    reply(
        out,
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
            expiry: Expiry::of(&grants, true),
            grants,
            subs: BTreeMap::new(),
            joined: BTreeSet::new(),
            publishing: VecDeque::new(),
            holds: Vec::new(),
        }
    }

    /// Whether subscriptions are held for this node's replica.
    pub(crate) fn holds_pending(&self) -> bool {
        !self.holds.is_empty()
    }

    /// Forgets the holds the replica has met, and ends the subscriptions
    /// held past their hold, each with a 503 error naming its `subscribe`'s
    /// `ref` (appended to `out`); returns true if some are still held.
    pub(crate) fn finish_holds(
        &mut self,
        now: Instant,
        broker: &Broker,
        router: &mut Router,
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        let subs = &mut self.subs;
        self.holds.retain(|held| {
            match held.hold.state(broker, now) {
                HoldState::Waiting => return true,
                HoldState::Reached => return false,
                HoldState::Expired => {}
            }
            if let Some(sub) = subs.remove(&held.id) {
                router.remove(sub.stream);
            }
            let envelope = Envelope {
                op: Some(Cow::Borrowed("subscribe")),
                reference: held.reference.clone(),
            };
            let mut message = Vec::new();
            error_reply(&mut message, &envelope, &held.hold.expired());
            out.push(message);
            false
        });
        !self.holds.is_empty()
    }

    /// The streams of this connection's subscriptions.
    pub(crate) fn streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.subs.values().map(|s| s.stream)
    }

    /// Subscription ids with their streams.
    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = (&str, StreamId)> + '_ {
        self.subs.iter().map(|(id, s)| (id.as_str(), s.stream))
    }

    /// When the token's warning or end is due next.
    pub(crate) fn token_deadline(&self) -> Option<Instant> {
        self.expiry.as_ref().map(Expiry::next)
    }

    /// The token's warning or end, if due at `now`: the warning message is
    /// appended to `out`.
    pub(crate) fn token_due(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Due> {
        let expiry = self.expiry.as_mut()?;
        let due = expiry.due(now)?;
        if due == Due::Warn {
            reply(out, "token_expiring", &Value::Null, Exp { exp: expiry.exp });
        }
        Some(due)
    }

    /// Forgets the streams (the router no longer has them) and leaves the
    /// presence sessions joined over this connection (it is closing).
    pub(crate) fn retire(&mut self, broker: &Broker, cluster: Option<&Cluster>) {
        self.subs.clear();
        for (topic, client_id) in std::mem::take(&mut self.joined) {
            if let Some(cluster) = cluster {
                // (Without waiting: the connection is closing.)
                cluster.leave_later(topic, client_id);
                continue;
            }
            if let Err(e) = broker.presence_leave(&topic, &client_id) {
                tracing::warn!("presence leave on close failed: {e}");
            }
        }
    }

    /// Whether answers wait for publishes to the cluster's stream.
    pub(crate) fn publishes_pending(&self) -> bool {
        !self.publishing.is_empty()
    }

    /// The answers that can go by `now`, in the order of the messages they
    /// answer (an answer waits for those before it), each as one message;
    /// returns true if some are still to come.
    pub(crate) fn finish_publishes(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) -> bool {
        while let Some(front) = self.publishing.front_mut() {
            match front {
                Queued::Ready(message) => out.push(std::mem::take(message)),
                Queued::Publish(pending, reference) => {
                    let Some(answer) = pending.try_finish(now) else {
                        return true;
                    };
                    let mut message = Vec::new();
                    publish_answer(&mut message, reference, answer);
                    out.push(message);
                }
            }
            self.publishing.pop_front();
        }
        false
    }

    /// Answers one text message: decode, execute, and append the reply to
    /// `out`. Returns the messages that follow the reply (subscriptions a
    /// refreshed token ended), usually none.
    pub(crate) fn handle(
        &mut self,
        cx: &mut WsContext<'_>,
        text: &str,
        out: &mut Vec<u8>,
    ) -> Vec<Vec<u8>> {
        let (envelope, op) = Op::decode(text);
        let publish = envelope.op.as_deref() == Some("publish");
        let mut follow = Vec::new();
        if let Err(e) =
            op.and_then(|op| self.execute(cx, op, &envelope.reference, out, &mut follow))
        {
            error_reply(out, &envelope, &e);
        }
        // A publish's answer keeps its place behind the publishes awaiting
        // the cluster's stream (within a bound: a flood of refusals goes
        // at once); other messages are answered at once.
        let queued = self.publishing.len();
        if publish && queued > 0 && queued < MAX_PUBLISHES_IN_FLIGHT + 64 && !out.is_empty() {
            self.publishing
                .push_back(Queued::Ready(std::mem::take(out)));
        }
        follow
    }

    /// Executes `op` and appends its reply to `out`, and the messages that
    /// follow it to `follow`; on error appends nothing.
    fn execute(
        &mut self,
        cx: &mut WsContext<'_>,
        op: Op,
        reference: &Value,
        out: &mut Vec<u8>,
        follow: &mut Vec<Vec<u8>>,
    ) -> Result<(), ApiError> {
        let caller = Caller {
            broker: cx.broker,
            cluster: cx.cluster,
            grants: &self.grants,
            schemas: cx.schemas,
            rate: cx.rate,
            peer: cx.peer,
        };
        match op {
            Op::Ping(_) => reply(out, "pong", reference, Nothing {}),
            Op::Publish(p, key) => {
                let awaiting = self.publishing.iter();
                let awaiting = awaiting.filter(|q| matches!(q, Queued::Publish(..)));
                if awaiting.count() >= MAX_PUBLISHES_IN_FLIGHT {
                    return Err(ApiError::Unavailable(format!(
                        "at most {MAX_PUBLISHES_IN_FLIGHT} publishes of a connection may await the cluster's stream: nothing was stored; wait for their answers, then retry"
                    )));
                }
                match caller.start_publish(&p, key.as_ref())? {
                    Publishing::Done(answer) => publish_answer(out, reference, Ok(answer)),
                    // No reply now: `finish_publishes` writes it.
                    Publishing::Pending(pending) => self
                        .publishing
                        .push_back(Queued::Publish(pending, reference.clone())),
                }
            }
            Op::Ack(a) => {
                let acked = caller.ack(a)?;
                let body = AckedBody {
                    consumer: &acked.consumer,
                    seq: acked.seq,
                    checkpoint: acked.checkpoint,
                };
                reply(out, "acked", reference, body)
            }
            Op::Heartbeat(h) => {
                let (session, joined) = caller.heartbeat(h)?;
                // Only sessions this connection started end with it (a
                // refresh may be another's).
                if joined.joined && self.joined.len() < MAX_SUBSCRIPTIONS {
                    self.joined.insert(session);
                }
                reply(out, "heartbeat", reference, joined)
            }
            Op::Leave(l) => {
                let (session, left) = caller.leave(l)?;
                self.joined.remove(&session);
                reply(out, "left", reference, left)
            }
            Op::Presence(q) => reply(out, "presence", reference, caller.presence(q)?),
            Op::Consumers(_) => reply(out, "consumers", reference, caller.consumers()?),
            Op::Subscribe(s) => self.subscribe(cx, s, reference, out)?,
            Op::Unsubscribe(u) => self.unsubscribe(cx, u, reference, out)?,
            Op::Auth(a) => self.auth(cx, a, reference, out, follow)?,
        }
        Ok(())
    }

    /// `auth`: a fresh token of the connection's tenant replaces its token
    /// (grants, rate-limit subject, expiry). Subscriptions the new grants no
    /// longer cover end, each reported after the reply.
    fn auth(
        &mut self,
        cx: &mut WsContext<'_>,
        op: Auth,
        reference: &Value,
        out: &mut Vec<u8>,
        follow: &mut Vec<Vec<u8>>,
    ) -> Result<(), ApiError> {
        let Some(tenant) = self.grants.tenant() else {
            return Err(ApiError::invalid("this connection has no token"));
        };
        let grants = super::auth::grants(cx.auth.claims(op.checked()?)?)?;
        if grants.tenant() != Some(tenant) {
            return Err(ApiError::Forbidden(
                "the token is of another tenant than this connection".into(),
            ));
        }
        self.expiry = Expiry::of(&grants, true);
        self.grants = grants;
        cx.stats.token_refreshes.fetch_add(1, Ordering::Relaxed);
        let exp = self.grants.exp().unwrap_or_default();
        reply(out, "authed", reference, Exp { exp });
        let grants = &self.grants;
        let ended: Vec<(String, String)> = (self.subs.iter())
            .filter_map(|(id, sub)| {
                let outside = (sub.names.iter())
                    .find(|n| grants.check_subscribe(&grants.internal(n)).is_err())?;
                Some((id.clone(), outside.clone()))
            })
            .collect();
        for (id, name) in ended {
            if let Some(sub) = self.subs.remove(&id) {
                cx.router.remove(sub.stream);
            }
            let message =
                format!("subscription '{id}' ended: '{name}' is outside the token's grants");
            let mut m = Vec::new();
            let body = Ended {
                op: "auth",
                code: "forbidden",
                sub: &id,
                message: &message,
            };
            reply(&mut m, "error", &Value::Null, body);
            follow.push(m);
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        cx: &mut WsContext<'_>,
        op: Subscribe,
        reference: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let batch = op.batch_policy()?;
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
        let encoding = Encoding::ws_batched(&id, batch);
        let names = match &selection.topics {
            Topics::One(t) => vec![t.clone()],
            Topics::Many(list) => list.clone(),
        };
        let opened = open_stream(cx, &self.grants, &held, selection, encoding)?;
        let body = Subscribed {
            id: &id,
            recovered: opened.recovered,
            reset: opened.reset,
        };
        let stream = opened.stream;
        reply(out, "subscribed", reference, body);
        if let Some(hold) = opened.hold {
            self.holds.push(HeldSub {
                id: id.clone(),
                reference: reference.clone(),
                hold,
            });
        }
        self.subs.insert(id, Sub { stream, names });
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        cx: &mut WsContext<'_>,
        op: Unsubscribe,
        reference: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        let sub = self
            .subs
            .remove(&op.id)
            .ok_or_else(|| ApiError::NotFound(format!("no subscription {:?}", op.id)))?;
        self.holds.retain(|h| h.id != op.id);
        cx.router.remove(sub.stream);
        reply(
            out,
            "unsubscribed",
            reference,
            SubscriptionId { id: &op.id },
        );
        Ok(())
    }
}

/// A subscription opened as a stream of the worker's router.
pub(crate) struct OpenedStream {
    pub(crate) stream: StreamId,
    /// It starts at a position in the past (a replay or a consumer).
    pub(crate) recovered: bool,
    /// It asked to start beyond the log's end and starts there instead.
    pub(crate) reset: Option<Reset>,
    /// Its start is ahead of this cluster node's replica.
    pub(crate) hold: Option<Hold>,
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
        cluster: cx.cluster,
        grants,
        schemas: cx.schemas,
        rate: cx.rate,
        peer: cx.peer,
    };
    let opened = caller.open(selection, StartDefault::Now)?;
    if !cx.router.admits(opened.sub.filter()) {
        return Err(pattern_capacity());
    }
    let reset = opened.sub.beyond_end().map(|head| Reset { head });
    let recovered = opened.recovered && reset.is_none();
    let hold = opened.hold;
    let stream = cx
        .router
        .add(cx.conn, opened.sub, encoding, grants.prefix_len());
    Ok(OpenedStream {
        stream,
        recovered,
        reset,
        hold,
    })
}

/// The refusal of a stream over the worker's pattern bound.
pub(crate) fn pattern_capacity() -> ApiError {
    ApiError::Unavailable(format!(
        "this server worker's pattern subscriptions are at their bound \
         ({MAX_WORKER_PATTERN_TOKENS} tokens); retry later"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_reply_is_the_bytes_serde_writes() {
        let references = [
            "null",
            "7",
            r#""a\"b""#,
            r#"{"z":1,"a":[1.5,null,"\u00e9"]}"#,
            "-0",
            "1e300",
        ];
        for reference in references {
            let reference: Value = serde_json::from_str(reference).unwrap();
            let sequences = [(1, 1), (0, u64::MAX), (1_234_567, 89)];
            let batches = (0..=sequences.len()).map(|n| PublishedAll::Batch {
                events: sequences[..n]
                    .iter()
                    .map(|&(seq, topic_seq)| Published { seq, topic_seq })
                    .collect(),
            });
            let ones = sequences
                .iter()
                .map(|&(seq, topic_seq)| PublishedAll::One(Published { seq, topic_seq }));
            for published in ones.chain(batches) {
                let mut fast = Vec::new();
                published_reply(&mut fast, &reference, &published);
                let mut general = Vec::new();
                reply(&mut general, "published", &reference, published);
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(general).unwrap()
                );
            }
        }
    }
}
