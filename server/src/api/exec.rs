//! Executes typed operations against the broker, within the caller's
//! grants. One function per operation, whatever the transport; each
//! returns a typed result or an [`ApiError`].

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;

use herald_core::broker::{validate_consumer_name, CheckpointError, MAX_CONSUMER_NAME_LEN};
use herald_core::broker::{
    validate_topic, BatchEvent, BrokerError, Filter, Once, PublishOptions, StartAt, Subscription,
};
use herald_core::{json, Broker};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::auth::Grants;
use super::error::ApiError;
use super::ops::{
    Ack, Heartbeat, IdempotencyKey, Leave, PresenceQuery, Publish, PublishRequest, Selection,
    StartDefault, Topics, MAX_ACK_SEQS, MAX_CONSUMERS_PER_TENANT,
};
use super::rate::{Kind, RateLimits};
use super::schema::Schemas;
use crate::cluster::{Cluster, ClusterError, ConsumerOp, Outgoing, Pending, PresenceOp, Stored};
use crate::webhook::is_server_consumer;

/// Who asks, and of which broker.
#[derive(Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) broker: &'a Broker,
    /// Cluster mode: publishes go to the cluster's stream, not the broker
    /// (a replica of it).
    pub(crate) cluster: Option<&'a Cluster>,
    pub(crate) grants: &'a Grants,
    /// What published payloads must satisfy.
    pub(crate) schemas: &'a Schemas,
    pub(crate) rate: &'a RateLimits,
    /// The client's address: its rate-limit key when it has no token.
    pub(crate) peer: IpAddr,
}

/// A published event's sequences.
#[derive(Debug, Serialize)]
pub(crate) struct Published {
    pub(crate) seq: u64,
    pub(crate) topic_seq: u64,
}

impl From<herald_core::broker::Published> for Published {
    fn from(p: herald_core::broker::Published) -> Published {
        Published {
            seq: p.seq,
            topic_seq: p.topic_seq,
        }
    }
}

/// What a `publish` stored: one event's sequences, or a batch's.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum PublishedAll {
    One(Published),
    Batch { events: Vec<Published> },
}

/// The answer to a `publish`: what it stored or, for a retry of an
/// idempotency key, what the key's first publish stored.
#[derive(Debug, Serialize)]
pub(crate) struct PublishAnswer {
    #[serde(flatten)]
    pub(crate) published: PublishedAll,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) duplicate: bool,
}

/// An event's payload: the JSON as the client wrote it, checked as
/// subscribers' parsers need it (nested at most 64 deep, no unpaired
/// surrogate escape). Line breaks (JSON whitespace, never inside a string)
/// become spaces, so that the payload is one SSE `data:` line.
fn payload<'a>(op: &Publish<'a>) -> Result<Cow<'a, [u8]>, ApiError> {
    let text = op.data.unwrap_or("null");
    if !op.data_checked {
        json::validate(text).map_err(|e| ApiError::invalid(format!("'data': {e}")))?;
    }
    Ok(
        if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_some() {
            Cow::Owned(text.replace(['\n', '\r'], " ").into_bytes())
        } else {
            Cow::Borrowed(text.as_bytes())
        },
    )
}

/// A checked event's publish options. Call it only for an event whose
/// payload `payload` has returned (it says the payload is checked JSON).
fn options<'a>(op: &'a Publish<'_>) -> PublishOptions<'a> {
    PublishOptions {
        origin: op.origin.unwrap_or(0),
        correlation: op.correlation_id.as_deref(),
        // `payload` checked it (or the fast decoder did, in its one pass).
        payload_is_json: true,
    }
}

/// A publish's outcome: its answer, or (on a cluster node) its answer to
/// come.
#[derive(Debug)]
pub(crate) enum Publishing {
    Done(PublishAnswer),
    Pending(PendingPublish),
}

/// A publish handed to the cluster's stream: the transport holds it (an
/// HTTP connection waits, a WebSocket connection goes on) and answers once
/// [`PendingPublish::try_finish`] gives the answer. Its worker is woken
/// when it arrives.
#[derive(Debug)]
pub(crate) struct PendingPublish {
    pending: Pending,
    /// Asked as a batch (of one): answered as one.
    batch: bool,
}

impl PendingPublish {
    /// The answer, if it has come by `now` (or the deadline passed).
    pub(crate) fn try_finish(&self, now: Instant) -> Option<Result<PublishAnswer, ApiError>> {
        let stored = self.pending.try_take(now)?;
        Some(PendingPublish::answer_of(self.batch, stored))
    }

    /// Waits for the answer on this thread (transports that cannot hold a
    /// request: STOMP).
    pub(crate) fn wait(self) -> Result<PublishAnswer, ApiError> {
        let batch = self.batch;
        let stored = self.pending.wait();
        PendingPublish::answer_of(batch, stored)
    }

    fn answer_of(
        batch: bool,
        stored: Result<Stored, ClusterError>,
    ) -> Result<PublishAnswer, ApiError> {
        let stored = stored.map_err(cluster_error)?;
        let one = Published::from(stored.published);
        Ok(PublishAnswer {
            published: if batch {
                PublishedAll::Batch { events: vec![one] }
            } else {
                PublishedAll::One(one)
            },
            duplicate: stored.duplicate,
        })
    }
}

fn cluster_error(e: ClusterError) -> ApiError {
    match e {
        ClusterError::Unavailable(m) => ApiError::Unavailable(m),
        ClusterError::TooLarge(m) => ApiError::TooLarge(m),
    }
}

/// An acknowledgement recorded.
#[derive(Debug)]
pub(crate) struct Acked {
    /// The consumer, as the client names it.
    pub(crate) consumer: String,
    /// What was acknowledged up to, if it was that form.
    pub(crate) seq: Option<u64>,
    /// The consumer's checkpoint afterwards.
    pub(crate) checkpoint: u64,
}

/// A durable consumer, as the client names it.
#[derive(Debug, Serialize)]
pub(crate) struct Consumer {
    pub(crate) consumer: String,
    pub(crate) checkpoint: u64,
}

/// A durable consumer in a listing: its checkpoint, and how far behind
/// the head of the log it is.
#[derive(Debug, Serialize)]
pub(crate) struct ConsumerState {
    pub(crate) consumer: String,
    pub(crate) checkpoint: u64,
    /// Global sequences published after the checkpoint (not all of them
    /// need match the consumer's subscription).
    pub(crate) lag: u64,
}

/// The caller's durable consumers, and the last global sequence published.
#[derive(Debug, Serialize)]
pub(crate) struct Consumers {
    pub(crate) head: u64,
    pub(crate) consumers: Vec<ConsumerState>,
}

/// A presence session: the broker's topic and the client id.
pub(crate) type Session = (String, String);

/// A heartbeat's outcome.
#[derive(Debug, Serialize)]
pub(crate) struct Joined {
    /// True: a new session; false: a refresh.
    pub(crate) joined: bool,
}

/// A leave's outcome.
#[derive(Debug, Serialize)]
pub(crate) struct Left {
    /// False: there was no such session.
    pub(crate) left: bool,
}

/// Who is present on a topic. Each session is the broker's encoding of it
/// (`Session::to_json`), the same bytes as in its `$presence` events and
/// the C ABI's list.
#[derive(Debug, Serialize)]
pub(crate) struct PresenceList {
    pub(crate) topic: String,
    pub(crate) present: Vec<Box<RawValue>>,
}

/// The notice that a client's position is past the end of the log (which
/// was reset or restored from a backup): `head` is the last position that
/// exists, in the position's units (topic sequences on single-topic
/// endpoints), and what follows comes after it.
#[derive(Debug, Serialize)]
pub(crate) struct Reset {
    pub(crate) head: u64,
}

/// A stream opened on the broker.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) sub: Subscription,
    /// One topic: positions are its topic sequences.
    pub(crate) single: bool,
    /// It resumes from a past position.
    pub(crate) recovered: bool,
    /// The last sequence before its start (0 if it starts elsewhere):
    /// what a poll with nothing to return passes back as `next_after`.
    pub(crate) after: u64,
    /// On a cluster node, a start ahead of the replica: held until it
    /// gets there, at most until the hold's deadline.
    pub(crate) hold: Option<Hold>,
}

/// A stream whose start is ahead of this node's replica (another node
/// served the client further). Its subscription waits at the start; the
/// transport holds the client's answer until the replica has the
/// position, and answers 503 if that takes longer than the cluster's
/// `replica_wait` (see `docs/CLUSTER.md`).
#[derive(Debug)]
pub(crate) struct Hold {
    /// Until when.
    pub(crate) until: Instant,
    /// The position the replica must hold: a global sequence, or a topic's
    /// sequence (the broker's topic name).
    after: u64,
    topic: Option<String>,
}

/// Where a [`Hold`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldState {
    /// The replica has not reached the position; the hold goes on.
    Waiting,
    /// The replica holds the position: the stream starts.
    Reached,
    /// Past the hold's end without it: 503.
    Expired,
}

impl Hold {
    /// Where the hold stands at `now`.
    pub(crate) fn state(&self, broker: &Broker, now: Instant) -> HoldState {
        let reached = match &self.topic {
            None => broker.next_seq() > self.after,
            Some(topic) => broker.topic_next_seq(topic) > self.after,
        };
        match (reached, now < self.until) {
            (true, _) => HoldState::Reached,
            (false, true) => HoldState::Waiting,
            (false, false) => HoldState::Expired,
        }
    }

    /// The refusal once the hold is over.
    pub(crate) fn expired(&self) -> ApiError {
        ApiError::Unavailable(format!(
            "this node's replica has not reached position {} yet: retry, here or on another node",
            self.after
        ))
    }
}

impl Opened {
    /// The position the stream starts after, in its units (topic sequences
    /// on one topic, global sequences otherwise): what a client that
    /// opened "from now" resumes from.
    pub(crate) fn position(&self) -> u64 {
        match self.sub.next_topic_seq() {
            Some(next) if self.single => next.saturating_sub(1),
            _ => self.sub.next_seq().saturating_sub(1),
        }
    }
}

impl Caller<'_> {
    /// `publish`: one event, or a batch stored together or not at all; with
    /// a key, at most once within the broker's idempotency window (per
    /// tenant).
    pub(crate) fn publish(
        &self,
        request: &PublishRequest<'_>,
        key: Option<&IdempotencyKey>,
    ) -> Result<PublishAnswer, ApiError> {
        match self.start_publish(request, key)? {
            Publishing::Done(answer) => Ok(answer),
            Publishing::Pending(pending) => pending.wait(),
        }
    }

    /// [`Caller::publish`], without waiting for a cluster's stream: on a
    /// cluster node, the answer is to come ([`PendingPublish`]).
    pub(crate) fn start_publish(
        &self,
        request: &PublishRequest<'_>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Publishing, ApiError> {
        let ops = match request {
            PublishRequest::One(op) => std::slice::from_ref(op),
            PublishRequest::Batch(ops) => ops.as_slice(),
        };
        self.take(Kind::Publish, ops.len())?;
        if let Some(cluster) = self.cluster {
            return self
                .publish_to_cluster(cluster, request, key)
                .map(Publishing::Pending);
        }
        if let ([op], None) = (ops, key) {
            // Every plain publish: without the batch path's vectors.
            let payload = payload(op)?;
            let topic = self.publish_topic(op)?;
            self.schemas.check(&op.topic, &op.event_type, &payload)?;
            let publisher = self.broker.publisher(&topic)?;
            let one = publisher
                .publish(&op.event_type, &payload, options(op))?
                .into();
            let published = match request {
                PublishRequest::One(_) => PublishedAll::One(one),
                PublishRequest::Batch(_) => PublishedAll::Batch { events: vec![one] },
            };
            return Ok(Publishing::Done(PublishAnswer {
                published,
                duplicate: false,
            }));
        }
        // Every event checked before any topic is created: a refused batch
        // leaves nothing behind. An event to the same topic as the one
        // before it shares that event's checked name and publisher.
        let mut topics = Vec::new();
        let mut topic_of = Vec::with_capacity(ops.len());
        let mut payloads = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            if i == 0 || op.topic != ops[i - 1].topic {
                topics.push(self.checked_topic(op)?);
            }
            topic_of.push(topics.len() - 1);
            payloads.push(self.checked_event(op)?);
        }
        let publishers = topics
            .iter()
            .map(|t| self.broker.publisher(t))
            .collect::<Result<Vec<_>, _>>()?;
        let events: Vec<BatchEvent<'_>> = ops
            .iter()
            .zip(topic_of)
            .zip(&payloads)
            .map(|((op, topic), payload)| BatchEvent {
                publisher: &publishers[topic],
                event_type: &op.event_type,
                payload,
                options: options(op),
            })
            .collect();
        let mut out = Vec::with_capacity(ops.len());
        let mut duplicate = false;
        match key {
            None => self.broker.publish_batch(&events, &mut out)?,
            Some(key) => {
                let scope = self.grants.tenant().unwrap_or("");
                let once = self
                    .broker
                    .publish_batch_once(scope, &key.0, &events, &mut out)?;
                duplicate = once == Once::Duplicate;
            }
        }
        let mut events = out.into_iter().map(Published::from);
        let published = match (request, events.next()) {
            // A single event's retry answers as the single event did, even
            // if the key's first publish was a batch: its first event.
            (PublishRequest::One(_), Some(one)) => PublishedAll::One(one),
            (_, first) => PublishedAll::Batch {
                events: first.into_iter().chain(events).collect(),
            },
        };
        Ok(Publishing::Done(PublishAnswer {
            published,
            duplicate,
        }))
    }

    /// `publish` in cluster mode: one event, stored in the cluster's stream
    /// (the stream cannot store several atomically, so a batch of more than
    /// one is refused, whole). The key is the stream's deduplication id.
    fn publish_to_cluster(
        &self,
        cluster: &Cluster,
        request: &PublishRequest<'_>,
        key: Option<&IdempotencyKey>,
    ) -> Result<PendingPublish, ApiError> {
        let op = match request {
            PublishRequest::One(op) => op,
            PublishRequest::Batch(ops) => match ops.as_slice() {
                [op] => op,
                _ => {
                    return Err(ApiError::invalid(format!(
                        "this server is a cluster node: a batch holds one event ({} given), since the cluster's stream cannot store several all or none; publish them one by one",
                        ops.len()
                    )))
                }
            },
        };
        let (topic, payload) = self.checked(op)?;
        let pending = cluster
            .submit(Outgoing {
                topic: topic.into_owned(),
                event_type: op.event_type.to_string(),
                payload: bytes::Bytes::copy_from_slice(&payload),
                origin: op.origin.unwrap_or(0),
                correlation: op.correlation_id.as_deref().map(str::to_owned),
                // Tenant names never hold ':', so tenant and key stay apart.
                msg_id: key.map(|k| format!("{}:{}", self.grants.tenant().unwrap_or(""), k.0)),
            })
            .map_err(cluster_error)?;
        Ok(PendingPublish {
            pending,
            batch: matches!(request, PublishRequest::Batch(_)),
        })
    }

    /// Checks an event as `publish` would, storing nothing (a STOMP
    /// transaction's SEND, refused when it arrives rather than at COMMIT).
    pub(crate) fn check(&self, op: &Publish<'_>) -> Result<(), ApiError> {
        self.checked(op).map(drop)
    }

    /// An event checked whole: its broker topic and payload.
    fn checked<'o, 'p>(
        &self,
        op: &'o Publish<'p>,
    ) -> Result<(Cow<'o, str>, Cow<'p, [u8]>), ApiError> {
        let topic = self.checked_topic(op)?;
        Ok((topic, self.checked_event(op)?))
    }

    /// The first half of [`Self::checked`]: the topic's broker name.
    fn checked_topic<'o>(&self, op: &'o Publish<'_>) -> Result<Cow<'o, str>, ApiError> {
        let topic = self.publish_topic(op)?;
        validate_topic(&topic)?;
        Ok(topic)
    }

    /// The second half of [`Self::checked`]: the event's payload, type
    /// and options, against the topic's schema.
    fn checked_event<'p>(&self, op: &Publish<'p>) -> Result<Cow<'p, [u8]>, ApiError> {
        let payload = payload(op)?;
        self.schemas.check(&op.topic, &op.event_type, &payload)?;
        self.broker
            .check_event(&op.event_type, &payload, options(op))?;
        Ok(payload)
    }

    /// Takes `n` operations of `kind` from the caller's rate limit.
    fn take(&self, kind: Kind, n: usize) -> Result<(), ApiError> {
        let client = self.grants.rate_client(self.peer);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.rate.take(kind, self.grants.tenant(), &client, n)
    }

    /// The broker's name of an event's topic, within the publish grants.
    fn publish_topic<'p>(&self, op: &'p Publish<'_>) -> Result<Cow<'p, str>, ApiError> {
        // The client's own name first: errors name it as the client does.
        validate_topic(&op.topic)?;
        let topic = self.grants.internal(&op.topic);
        self.grants.check_publish(&topic)?;
        Ok(topic)
    }

    /// Opens a stream (`subscribe`, an SSE stream, a poll). `default`:
    /// where it starts without a position.
    pub(crate) fn open(
        &self,
        selection: Selection,
        default: StartDefault,
    ) -> Result<Opened, ApiError> {
        // The client's own names first: errors name them as the client does.
        let client_names = match &selection.topics {
            Topics::One(t) => std::slice::from_ref(t),
            Topics::Many(list) => list.as_slice(),
        };
        for name in client_names {
            herald_core::broker::TopicPattern::parse(name)?;
        }
        let (names, single) = match selection.topics {
            Topics::One(t) => (vec![self.grants.internal(&t).into_owned()], true),
            Topics::Many(list) => (
                list.iter()
                    .map(|t| self.grants.internal(t).into_owned())
                    .collect(),
                false,
            ),
        };
        for name in &names {
            self.grants.check_subscribe(name)?;
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut filter = Filter::patterns(&refs)?.with_types(&selection.types);
        for &origin in &selection.exclude_origins {
            filter = filter.excluding_origin(origin);
        }
        let start = selection.position.start(single, default)?;
        self.take(Kind::Subscribe, 1)?;
        let after = match start {
            StartAt::TopicSeq(s) | StartAt::Seq(s) => s - 1,
            _ => 0,
        };
        if let Some(cluster) = self.cluster {
            // A replica waits at a position past its end (another node
            // served the client further), unless the position is past the
            // whole stream too: then it is not the cluster's (a stream
            // since recreated), and waiting would skip events the client
            // never had.
            if !single && !cluster.stream_has(after).map_err(cluster_error)? {
                return Err(ApiError::Unavailable(format!(
                    "position {after} is past the cluster's stream: resume from a position the stream has"
                )));
            }
        }
        // (A consumer's start is its checkpoint, which a node never holds
        // for: see `cluster_checkpoint`.)
        let hold = self.cluster.and_then(|c| {
            let topic = match &start {
                StartAt::Seq(s) if *s > self.broker.next_seq() => None,
                StartAt::TopicSeq(s) if single && *s > self.broker.topic_next_seq(&names[0]) => {
                    Some(names[0].clone())
                }
                _ => return None,
            };
            Some(Hold {
                until: Instant::now() + c.replica_wait,
                after,
                topic,
            })
        });
        let (sub, recovered) = match &selection.consumer {
            Some(name) => {
                let internal = self.consumer(name)?;
                self.check_consumer_room(&internal)?;
                let start = self.cluster_checkpoint(&internal, name, start)?;
                let sub = self
                    .broker
                    .subscribe_consumer(&internal, filter, start)
                    .map_err(|e| self.consumer_error(e, name))?;
                (sub, true)
            }
            None => {
                let recovered = start != StartAt::Now;
                (self.broker.subscribe(filter, start)?, recovered)
            }
        };
        Ok(Opened {
            sub,
            single,
            recovered,
            after,
            hold,
        })
    }

    /// On a cluster node, brings a consumer's checkpoint here up to the
    /// cluster's (acknowledged on another node), before it subscribes:
    /// returns where a consumer new to this node starts.
    fn cluster_checkpoint(
        &self,
        internal: &str,
        name: &str,
        start: StartAt,
    ) -> Result<StartAt, ApiError> {
        let Some(cluster) = self.cluster else {
            return Ok(start);
        };
        let op = ConsumerOp::Get(internal.to_owned());
        let Some(cluster_cp) = cluster.consumer(op).map_err(cluster_error)? else {
            return Ok(start);
        };
        let here = self.broker.consumer_checkpoint(internal).ok();
        if here.is_none_or(|here| here < cluster_cp) && cluster_cp >= self.broker.next_seq() {
            // (Not held: its checkpoint here would have to start below.)
            return Err(ApiError::Unavailable(format!(
                "durable consumer {name:?} was acknowledged up to {cluster_cp} on another node, past this node's replica: retry shortly"
            )));
        }
        match here {
            // New here: it starts after the cluster's checkpoint.
            None => Ok(StartAt::Seq(cluster_cp.saturating_add(1))),
            Some(here) if here >= cluster_cp => Ok(start),
            Some(_) => {
                let fail = |e| self.consumer_error(e, name);
                self.broker
                    .ack_consumer(internal, cluster_cp)
                    .map_err(fail)?;
                Ok(start)
            }
        }
    }

    /// `ack`: an existing consumer's checkpoint moves forward, at most to
    /// the last published event (further would skip events not yet
    /// published). Up to `seq`: backwards is refused, naming the
    /// checkpoint. Single events (`seqs`): the checkpoint passes the
    /// contiguous prefix of what is acknowledged (see
    /// `Broker::ack_consumer_events`).
    pub(crate) fn ack(&self, op: Ack) -> Result<Acked, ApiError> {
        let internal = self.consumer(&op.consumer)?;
        let fail = |e| self.consumer_error(e, &op.consumer);
        let checkpoint =
            match (op.seq, &op.seqs) {
                (Some(seq), None) => {
                    self.broker.ack_consumer(&internal, seq).map_err(fail)?;
                    seq
                }
                (None, Some(seqs)) if (1..=MAX_ACK_SEQS).contains(&seqs.len()) => self
                    .broker
                    .ack_consumer_events(&internal, seqs)
                    .map_err(fail)?,
                (None, Some(_)) => {
                    return Err(ApiError::invalid(format!(
                        "'seqs': 1 to {MAX_ACK_SEQS} global sequences"
                    )))
                }
                _ => return Err(ApiError::invalid(
                    "give 'seq' (everything up to it) or 'seqs' (single events), one of the two",
                )),
            };
        // On a cluster node, the cluster's checkpoint too: the consumer
        // resumes after it on any node.
        let checkpoint = match self.cluster {
            Some(cluster) => cluster
                .consumer(ConsumerOp::Raise(internal, checkpoint))
                .map_err(cluster_error)?
                .unwrap_or(checkpoint),
            None => checkpoint,
        };
        Ok(Acked {
            consumer: op.consumer,
            seq: op.seq,
            checkpoint,
        })
    }

    /// The caller's durable consumers (its tenant's), by name.
    pub(crate) fn consumers(&self) -> Result<Consumers, ApiError> {
        self.grants.check_consume()?;
        let head = self.broker.next_seq().saturating_sub(1);
        let consumers = (self.broker.consumers().into_iter())
            .filter(|(name, _)| !is_server_consumer(name))
            .filter_map(|(name, checkpoint)| {
                let consumer = self.grants.external(&name)?.to_owned();
                Some(ConsumerState {
                    consumer,
                    checkpoint,
                    lag: head.saturating_sub(checkpoint),
                })
            })
            .collect();
        Ok(Consumers { head, consumers })
    }

    /// Removes a durable consumer: retention no longer keeps what it has
    /// not acknowledged. Answers with its last checkpoint.
    pub(crate) fn remove_consumer(&self, name: &str) -> Result<Consumer, ApiError> {
        let internal = self.consumer(name)?;
        let fail = |e| self.consumer_error(e, name);
        let checkpoint = self.broker.consumer_checkpoint(&internal).map_err(fail)?;
        self.broker.remove_consumer(&internal).map_err(fail)?;
        if let Some(cluster) = self.cluster {
            cluster
                .consumer(ConsumerOp::Remove(internal))
                .map_err(cluster_error)?;
        }
        Ok(Consumer {
            consumer: name.to_owned(),
            checkpoint,
        })
    }

    /// A new consumer pins the log for every tenant and costs a file: a
    /// tenant has at most [`MAX_CONSUMERS_PER_TENANT`].
    fn check_consumer_room(&self, internal: &str) -> Result<(), ApiError> {
        if self.broker.consumer_checkpoint(internal).is_ok() {
            return Ok(());
        }
        let all = self.broker.consumers();
        let tenant_has = all
            .iter()
            .filter(|(name, _)| self.grants.external(name).is_some())
            .count();
        if tenant_has >= MAX_CONSUMERS_PER_TENANT {
            return Err(ApiError::invalid(format!(
                "at most {MAX_CONSUMERS_PER_TENANT} durable consumers per tenant: remove one first"
            )));
        }
        Ok(())
    }

    /// The broker's name of the caller's consumer `name`, if it may use one.
    fn consumer(&self, name: &str) -> Result<String, ApiError> {
        self.grants.check_consume()?;
        if is_server_consumer(name) {
            return Err(ApiError::invalid(format!(
                "invalid consumer name {name:?}: names starting with '.' are the server's (webhooks)"
            )));
        }
        let internal = self.grants.internal(name);
        validate_consumer_name(&internal).map_err(|_| {
            let max = MAX_CONSUMER_NAME_LEN - self.grants.prefix_len();
            ApiError::invalid(format!(
                "invalid consumer name {name:?}: 1 to {max} bytes of letters, digits, '_', '.', '-'"
            ))
        })?;
        Ok(internal.into_owned())
    }

    /// A consumer operation's error, naming the consumer as the client does
    /// (the broker's names carry the tenant prefix).
    fn consumer_error(&self, e: BrokerError, name: &str) -> ApiError {
        match e {
            BrokerError::UnknownConsumer(_) => {
                ApiError::NotFound(format!("no durable consumer named {name:?}"))
            }
            BrokerError::Ack(e) => ApiError::invalid(format!("'seq': {e}")),
            BrokerError::Checkpoint(CheckpointError::InvalidName { .. }) => {
                ApiError::invalid(format!("invalid consumer name {name:?}"))
            }
            e => e.into(),
        }
    }

    /// `heartbeat`: refreshes a session, or joins.
    pub(crate) fn heartbeat(&self, op: Heartbeat) -> Result<(Session, Joined), ApiError> {
        let (topic, client_id) = self.session(&op.topic, &op.client_id)?;
        let metadata = |m: &Value| match m {
            Value::Null => String::new(),
            m => m.to_string(),
        };
        if let Some(cluster) = self.cluster {
            let (user, device) = (op.user.unwrap_or_default(), op.device.unwrap_or_default());
            let metadata = metadata(&op.metadata);
            (self.broker).check_presence(&topic, &client_id, &user, &device, &metadata)?;
            let joined = cluster
                .presence(PresenceOp::Heartbeat {
                    topic: topic.clone(),
                    client_id: client_id.clone(),
                    user,
                    device,
                    metadata,
                })
                .map_err(cluster_error)?;
            return Ok(((topic, client_id), Joined { joined }));
        }
        if self.broker.presence_heartbeat(&topic, &client_id).is_ok() {
            return Ok(((topic, client_id), Joined { joined: false }));
        }
        let metadata = metadata(&op.metadata);
        self.broker.presence_join(
            &topic,
            &client_id,
            op.user.as_deref().unwrap_or(""),
            op.device.as_deref().unwrap_or(""),
            &metadata,
        )?;
        Ok(((topic, client_id), Joined { joined: true }))
    }

    /// `leave`.
    pub(crate) fn leave(&self, op: Leave) -> Result<(Session, Left), ApiError> {
        let (topic, client_id) = self.session(&op.topic, &op.client_id)?;
        let left = match self.cluster {
            Some(cluster) => {
                let leave = PresenceOp::Leave {
                    topic: topic.clone(),
                    client_id: client_id.clone(),
                };
                cluster.presence(leave).map_err(cluster_error)?
            }
            None => self.broker.presence_leave(&topic, &client_id)?,
        };
        Ok(((topic, client_id), Left { left }))
    }

    /// `presence`: who is present on the client's topic.
    pub(crate) fn presence(&self, op: PresenceQuery) -> Result<PresenceList, ApiError> {
        let internal = self.grants.internal(&op.topic);
        self.grants.check_subscribe(&internal)?;
        let sessions = match self.cluster {
            Some(cluster) => cluster.present(&internal),
            None => self.broker.presence(&internal),
        };
        let present = sessions
            .iter()
            .map(|s| {
                // The encoding is always valid JSON: a refusal is a bug.
                RawValue::from_string(s.to_json())
                    .map_err(|e| ApiError::Internal(format!("presence encoding: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(PresenceList {
            topic: op.topic,
            present,
        })
    }

    /// A presence session's broker topic, within the subscribe grants.
    fn session(&self, topic: &str, client_id: &str) -> Result<Session, ApiError> {
        if topic.is_empty() || client_id.is_empty() {
            return Err(ApiError::invalid(
                "presence needs a non-empty 'topic' and 'client_id'",
            ));
        }
        let internal = self.grants.internal(topic).into_owned();
        self.grants.check_subscribe(&internal)?;
        Ok((internal, client_id.to_owned()))
    }
}
