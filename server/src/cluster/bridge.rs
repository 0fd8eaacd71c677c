//! The bridge thread: the NATS connection, the stream, replication into the
//! local broker, and publishes handed over by the workers.
//!
//! Topic sequences are dense across nodes without a coordinator: a publish
//! carries its topic sequence (`Herald-Topic-Seq`, the topic's last plus
//! one) and `Nats-Expected-Last-Subject-Sequence` (the stream sequence of
//! the topic's last message). The stream stores it only if no other message
//! of the topic came in between; otherwise it answers "wrong last sequence"
//! and the publish is retried with the topic's new last message (read with
//! a Direct Get), a bounded number of times. This node's publishes to one
//! topic go one at a time (each waits for the previous one's
//! acknowledgement), so they never conflict with each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, kv, stream};
use futures_util::StreamExt;
use herald_core::broker::{PublishOptions, Published, Replicated};
use herald_core::{json, Broker};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{
    consumers, presence, subject, ClusterConfig, ClusterError, ClusterState, Command, Outgoing,
    Stored,
};

/// Attempts of one publish against concurrent writers of its topic.
const MAX_ATTEMPTS: u32 = 16;

/// The stream's retention and deduplication, from the node's settings.
pub(crate) struct StreamLimits {
    pub(crate) duplicate_window: Duration,
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_bytes: Option<u64>,
}

pub(crate) struct Bridge {
    pub(crate) config: ClusterConfig,
    pub(crate) broker: Broker,
    pub(crate) state: Arc<ClusterState>,
    /// Presence sessions, kept by the watch of the bucket.
    pub(crate) view: Arc<presence::View>,
    /// A session without a heartbeat this long expires.
    pub(crate) presence_ttl: Duration,
    pub(crate) stream: StreamLimits,
    pub(crate) shutdown: Arc<AtomicBool>,
}

/// What this node knows of a topic's last message in the stream.
#[derive(Debug, Clone, Copy)]
struct Last {
    stream_seq: u64,
    topic_seq: u64,
}

/// Per topic subject: its last message as far as this node knows (`None`:
/// ask the stream), behind a lock that orders this node's publishes to it.
type Topics = Arc<parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Last>>>>>>;

impl Bridge {
    /// The thread's body: runs until shutdown.
    pub(crate) fn run(self, commands: UnboundedReceiver<Command>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                *self.state.failed.lock() = Some(format!("cannot start the bridge runtime: {e}"));
                return;
            }
        };
        runtime.block_on(self.main(commands));
    }

    async fn main(self, mut commands: UnboundedReceiver<Command>) {
        let Some(client) = self.connect().await else {
            return;
        };
        let js = jetstream::new(client);
        let Some(stream) = self.ensure_stream(&js).await else {
            return;
        };
        let topics: Topics = Arc::default();
        let replication = tokio::spawn(replicate(
            stream.clone(),
            self.broker.clone(),
            self.state.clone(),
            topics.clone(),
        ));
        let publish = Publish {
            js: js.clone(),
            stream: stream.clone(),
            broker: self.broker.clone(),
            state: self.state.clone(),
            topics: topics.clone(),
        };
        let stream_name = &self.config.stream;
        let checkpoints =
            open_bucket(&js, format!("{stream_name}_consumers"), "durable consumers").await;
        let store = open_bucket(&js, format!("{stream_name}_presence"), "presence").await;
        let mut background = vec![
            replication,
            tokio::spawn(watch_stream_end(stream.clone(), self.state.clone())),
        ];
        if let Some(store) = &store {
            background.push(tokio::spawn(presence::watch(
                store.clone(),
                self.view.clone(),
            )));
            background.push(tokio::spawn(expire_sessions(
                store.clone(),
                self.view.clone(),
                self.presence_ttl,
                publish.clone(),
            )));
        }
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    self.dispatch(command, &publish, store.as_ref(), checkpoints.as_ref());
                }
                _ = tick.tick() => {
                    if self.shutdown.load(Ordering::Acquire) {
                        break;
                    }
                }
            }
        }
        for task in background {
            task.abort();
        }
    }

    /// Starts a worker's command on the runtime.
    fn dispatch(
        &self,
        command: Command,
        publish: &Publish,
        store: Option<&kv::Store>,
        checkpoints: Option<&kv::Store>,
    ) {
        match command {
            Command::Consumer { op, reply } => {
                let Some(checkpoints) = checkpoints.cloned() else {
                    let why = "durable consumers are unavailable: their bucket could not be opened";
                    let _ = reply.send(Err(ClusterError::Unavailable(why.into())));
                    return;
                };
                tokio::spawn(async move {
                    let _ = reply.send(consumers::run(&checkpoints, op).await);
                });
            }
            Command::Publish {
                event,
                reply,
                wake,
                deadline,
            } => {
                let (publish, state) = (publish.clone(), self.state.clone());
                tokio::spawn(async move {
                    let _ = reply.send(publish.run(event, deadline).await);
                    state.in_flight.fetch_sub(1, Ordering::AcqRel);
                    if let Some(waker) = wake {
                        let _ = waker.wake();
                    }
                });
            }
            Command::StreamEnd { reply } => {
                let mut stream = publish.stream.clone();
                tokio::spawn(async move {
                    let last = stream.info().await.map(|i| i.state.last_sequence);
                    let last = last.map_err(|e| {
                        ClusterError::Unavailable(format!("the cluster's stream: {e}; retry"))
                    });
                    let _ = reply.send(last);
                });
            }
            Command::Presence { op, reply } => {
                let Some(store) = store.cloned() else {
                    if let Some(reply) = reply {
                        let why = "presence is unavailable: its bucket could not be opened";
                        let _ = reply.send(Err(ClusterError::Unavailable(why.into())));
                    }
                    return;
                };
                let publish = publish.clone();
                tokio::spawn(async move {
                    let answer = match presence::run(&store, op).await {
                        Ok((answer, None)) => Ok(answer),
                        Ok((answer, Some(change))) => publish.change(change).await.map(|()| answer),
                        Err(e) => Err(e),
                    };
                    if let Err(ClusterError::Unavailable(why)) = &answer {
                        tracing::warn!("cluster: {why}");
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(answer);
                    }
                });
            }
        }
    }

    /// Connects (retrying in the background if no server answers yet);
    /// `None` if the options are unusable.
    async fn connect(&self) -> Option<async_nats::Client> {
        let state = self.state.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name(&self.config.node_id)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let state = state.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            state.connected.store(true, Ordering::Release);
                            tracing::info!("cluster: connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            state.connected.store(false, Ordering::Release);
                            tracing::warn!("cluster: disconnected from NATS; reconnecting");
                        }
                        other => tracing::debug!("cluster: NATS event {other}"),
                    }
                }
            });
        if let Some(path) = &self.config.credentials {
            options = match options.credentials_file(path).await {
                Ok(o) => o,
                Err(e) => {
                    self.fail(format!(
                        "cannot read NATS credentials {}: {e}",
                        path.display()
                    ));
                    return None;
                }
            };
        }
        match options.connect(self.config.nats.as_slice()).await {
            Ok(client) => {
                // `Connected` is reported only for reconnections on some
                // paths: a client handed back is connected now.
                if client.connection_state() == async_nats::connection::State::Connected {
                    self.state.connected.store(true, Ordering::Release);
                }
                Some(client)
            }
            Err(e) => {
                self.fail(format!("cannot connect to NATS: {e}"));
                None
            }
        }
    }

    /// The shared stream, created with this node's settings if missing
    /// (an existing stream keeps its own); retried until it answers.
    async fn ensure_stream(&self, js: &jetstream::Context) -> Option<stream::Stream> {
        let wanted = stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![subject::ALL.to_owned()],
            storage: stream::StorageType::File,
            allow_direct: true,
            deny_delete: true,
            deny_purge: true,
            duplicate_window: self.stream.duplicate_window,
            max_age: self.stream.max_age.unwrap_or_default(),
            max_bytes: self
                .stream
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            ..Default::default()
        };
        loop {
            let info = match js.get_or_create_stream(wanted.clone()).await {
                Ok(mut s) => match s.info().await {
                    Ok(i) => {
                        let state = i.state.clone();
                        Ok((s, state))
                    }
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            match info {
                Ok((s, state)) => {
                    let (first, last) = (state.first_sequence, state.last_sequence);
                    let have = self.broker.next_seq() - 1;
                    // A log ahead of the stream is another stream's (or a
                    // single node's): its events are not the cluster's.
                    if have > last {
                        self.fail(format!(
                            "this node's log holds {have} events but the stream {} only {last}: the data directory is not a replica of this stream (start with an empty one)",
                            self.config.stream
                        ));
                        return None;
                    }
                    // Retention has removed events this replica never had:
                    // it skips them (its readers get a gap), here if the
                    // stream holds no message to replicate after them.
                    if have + 1 < first {
                        if let Err(why) = skip(&self.broker, &self.state, first) {
                            self.fail(why);
                            return None;
                        }
                    }
                    let have = self.broker.next_seq() - 1;
                    *self.state.failed.lock() = None;
                    self.state.stream_last.fetch_max(last, Ordering::AcqRel);
                    self.state.catch_up_to.store(last, Ordering::Release);
                    if have >= last {
                        self.state.caught_up.store(true, Ordering::Release);
                    }
                    tracing::info!(
                        stream = %self.config.stream,
                        last,
                        replica_next = have + 1,
                        "cluster: stream ready"
                    );
                    return Some(s);
                }
                Err(e) => {
                    let why = format!("stream {}: {e}; retrying", self.config.stream);
                    tracing::warn!("cluster: {why}");
                    // Shown by /readyz until the stream answers.
                    *self.state.failed.lock() = Some(why);
                    if self.shutdown.load(Ordering::Acquire) {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn fail(&self, why: String) {
        tracing::error!("cluster: {why}");
        *self.state.failed.lock() = Some(why);
    }
}

/// Reads the stream in order from the replica's end, appending every
/// message to the broker; starts over (from the replica's new end) after
/// any interruption.
async fn replicate(
    stream: stream::Stream,
    broker: Broker,
    state: Arc<ClusterState>,
    topics: Topics,
) {
    loop {
        let start = broker.next_seq();
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject::ALL.to_owned(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(c) => match c.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("cluster: replication from {start}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!("cluster: replication from {start}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("cluster: replication interrupted: {e}; resuming");
                    break;
                }
            };
            if let Err(why) = apply(&broker, &state, &topics, &message) {
                let why = format!("replication stopped: {why}");
                tracing::error!("cluster: {why}");
                *state.failed.lock() = Some(why);
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Moves the replica to `seq`, past stream sequences it never received
/// because the stream's retention removed them first (the node was away
/// longer than the stream keeps events, or joined with an empty data
/// directory): its log records the skip, and readers crossing it get a gap.
fn skip(broker: &Broker, state: &ClusterState, seq: u64) -> Result<(), String> {
    let next = broker.next_seq();
    tracing::warn!(
        from = next,
        to = seq - 1,
        "cluster: the stream no longer holds these sequences, which this replica never received; skipping them (readers get a gap)"
    );
    broker
        .skip_to(seq)
        .map_err(|e| format!("skipping to stream sequence {seq}: {e}"))?;
    state.skipped.fetch_add(seq - next, Ordering::Relaxed);
    Ok(())
}

/// Appends one stream message to the replica.
fn apply(
    broker: &Broker,
    state: &ClusterState,
    topics: &Topics,
    message: &jetstream::Message,
) -> Result<(), String> {
    let info = message
        .info()
        .map_err(|e| format!("a stream message without its metadata: {e}"))?;
    let seq = info.stream_sequence;
    state.stream_last.fetch_max(seq, Ordering::AcqRel);
    let next = broker.next_seq();
    if seq < next {
        return Ok(()); // already here (a redelivery after a reconnection)
    }
    let subject = message.subject.as_str();
    let topic = subject::topic(subject)
        .ok_or_else(|| format!("stream message {seq} on {subject:?}, not a Herald subject"))?;
    let fields = subject::fields(message.headers.as_ref())
        .map_err(|e| format!("stream message {seq} on {subject:?}: {e}"))?;
    // (Skipped only for a message this replica can then append.)
    if seq > next {
        skip(broker, state, seq)?;
    }
    let payload_is_json = std::str::from_utf8(&message.payload)
        .ok()
        .is_some_and(|text| json::validate(text).is_ok());
    broker
        .replicate(&Replicated {
            seq,
            topic: &topic,
            topic_seq: fields.topic_seq,
            topic_may_jump: fields.topic_jump,
            timestamp_ns: fields.timestamp_ns,
            event_type: &fields.event_type,
            payload: &message.payload,
            options: PublishOptions {
                origin: fields.origin,
                correlation: fields.correlation.as_deref(),
                payload_is_json,
            },
        })
        .map_err(|e| format!("stream message {seq} on {subject:?}: {e}"))?;
    state
        .applied_ns
        .store(fields.timestamp_ns, Ordering::Relaxed);
    if !state.caught_up.load(Ordering::Acquire) && seq >= state.catch_up_to.load(Ordering::Acquire)
    {
        state.caught_up.store(true, Ordering::Release);
    }
    // What this node knows of the topic's last message, for its next
    // publish to it (unless a publish holds it: that one learns on its own).
    let slot = topics.lock().get(subject).cloned();
    if let Some(slot) = slot {
        if let Ok(mut last) = slot.try_lock() {
            if last.is_some_and(|l| l.stream_seq < seq) {
                *last = Some(Last {
                    stream_seq: seq,
                    topic_seq: fields.topic_seq,
                });
            }
        }
    }
    Ok(())
}

/// The key-value bucket `name`, created if missing; `None` (logged: `what`
/// is then unavailable) if it cannot be opened.
async fn open_bucket(js: &jetstream::Context, name: String, what: &str) -> Option<kv::Store> {
    // The bucket's stream, laid out as the key-value convention has it
    // (`create_key_value` of this client cannot read nats-server 2.9's
    // answer; the layout is the same).
    let created = js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string());
    match created.and(js.get_key_value(&name).await.map_err(|e| e.to_string())) {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::warn!("cluster: bucket {name}: {e}; {what} is unavailable");
            None
        }
    }
}

/// Keeps `stream_last` near the stream's end (four times a second): what
/// tells a client's position that another node gave it from one past the
/// whole stream, and what the replication lag is measured against.
async fn watch_stream_end(mut stream: stream::Stream, state: Arc<ClusterState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if let Ok(info) = stream.info().await {
            let last = info.state.last_sequence;
            state.stream_last.fetch_max(last, Ordering::AcqRel);
        }
    }
}

/// Expires stale presence sessions, twice a second, publishing one
/// `presence.expire` per session.
async fn expire_sessions(
    store: kv::Store,
    view: Arc<presence::View>,
    ttl: Duration,
    publish: Publish,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        // Not while the replica lags: an event's topic sequence may come
        // from it.
        if publish.state.ready().is_err() {
            continue;
        }
        for change in presence::expire(&store, &view, ttl).await {
            if let Err(ClusterError::Unavailable(why)) = publish.change(change).await {
                tracing::warn!("cluster: presence expiry: {why}");
            }
        }
    }
}

/// Publishes of the bridge's own, on the bridge's runtime.
#[derive(Clone)]
struct Publish {
    js: jetstream::Context,
    stream: stream::Stream,
    broker: Broker,
    state: Arc<ClusterState>,
    topics: Topics,
}

impl Publish {
    /// Publishes a presence change, retried (its id makes it once, within
    /// the stream's duplicate window) until the stream has it or a minute
    /// has passed.
    async fn change(&self, change: presence::Change) -> Result<(), ClusterError> {
        let (topic, event_type, payload, msg_id) = change;
        let mut last = None;
        let give_up = Instant::now() + Duration::from_secs(60);
        while Instant::now() < give_up {
            let event = Outgoing {
                topic: topic.clone(),
                event_type: event_type.clone(),
                payload: payload.clone().into(),
                origin: 0,
                correlation: None,
                msg_id: msg_id.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            match self.run(event, deadline).await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(last.unwrap_or_else(|| ClusterError::Unavailable("presence event not stored".into())))
    }

    async fn run(&self, event: Outgoing, deadline: Instant) -> Result<Stored, ClusterError> {
        let subject = subject::of(&event.topic);
        let slot = self
            .topics
            .lock()
            .entry(subject.clone())
            .or_default()
            .clone();
        let mut last = slot.lock().await;
        let started = std::time::Instant::now();
        let timestamp_ns = super::now_ns();
        for attempt in 0..MAX_ATTEMPTS {
            // The client has its answer (503) already: store nothing.
            if Instant::now() >= deadline {
                return Err(ClusterError::Unavailable(
                    "not sent: the deadline passed".into(),
                ));
            }
            let known = match *last {
                Some(l) => l,
                None => self.last_of(&subject, &event.topic).await?,
            };
            // The stream holds none of the topic's events, and this
            // replica skipped some it may have had: its count may be short.
            let jump = match known.stream_seq {
                0 => self.broker.topic_sequence_after_skip(&event.topic),
                _ => None,
            };
            let topic_seq = jump.unwrap_or(known.topic_seq + 1);
            let headers = subject::headers(&subject::Fields {
                event_type: event.event_type.clone(),
                topic_seq,
                topic_jump: jump.is_some(),
                timestamp_ns,
                origin: event.origin,
                correlation: event.correlation.clone(),
            });
            let mut message = jetstream::message::PublishMessage::build()
                .payload(event.payload.clone())
                .headers(headers)
                .expected_last_subject_sequence(known.stream_seq);
            if let Some(id) = &event.msg_id {
                message = message.message_id(id);
            }
            let ack = match self.js.send_publish(subject.clone(), message).await {
                Ok(pending) => pending.await,
                Err(e) => Err(e),
            };
            match ack {
                Ok(ack) if ack.duplicate => {
                    // Nothing stored: the first publish's sequences.
                    let first = self.stream.direct_get(ack.sequence).await.map_err(|e| {
                        ClusterError::Unavailable(format!(
                            "reading the first publish of the idempotency key: {e}"
                        ))
                    })?;
                    let topic_seq = subject::topic_seq(Some(&first.headers)).ok_or_else(|| {
                        ClusterError::Unavailable(
                            "the key's first publish carries no topic sequence".into(),
                        )
                    })?;
                    return Ok(Stored {
                        published: Published {
                            seq: ack.sequence,
                            topic_seq,
                        },
                        duplicate: true,
                    });
                }
                Ok(ack) => {
                    *last = Some(Last {
                        stream_seq: ack.sequence,
                        topic_seq,
                    });
                    self.state.published.fetch_add(1, Ordering::Relaxed);
                    let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    self.state.publish_ns.fetch_add(took, Ordering::Relaxed);
                    self.state
                        .stream_last
                        .fetch_max(ack.sequence, Ordering::AcqRel);
                    return Ok(Stored {
                        published: Published {
                            seq: ack.sequence,
                            topic_seq,
                        },
                        duplicate: false,
                    });
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Another node wrote the topic first: learn its last
                    // message and try again, after a short random pause so
                    // that racing nodes spread out.
                    *last = None;
                    self.state.cas_retries.fetch_add(1, Ordering::Relaxed);
                    let pause = fastrand::u64(0..=(200u64 << attempt.min(5)));
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(ClusterError::TooLarge(format!(
                        "the event is too large for the cluster's NATS servers: {e}"
                    )));
                }
                Err(e) => {
                    *last = None;
                    return Err(ClusterError::Unavailable(format!(
                        "the cluster's stream did not store the event: {e}; retry"
                    )));
                }
            }
        }
        Err(ClusterError::Unavailable(format!(
            "the topic is written by other nodes too fast: {MAX_ATTEMPTS} attempts lost the race; retry"
        )))
    }

    /// The topic's last message in the stream. If the stream holds none
    /// (never published, or retention removed them all), the replica's
    /// count goes on: topic sequences are never reused.
    async fn last_of(&self, subject: &str, topic: &str) -> Result<Last, ClusterError> {
        match self.stream.direct_get_last_for_subject(subject).await {
            Ok(m) => Ok(Last {
                stream_seq: m.sequence,
                topic_seq: subject::topic_seq(Some(&m.headers)).ok_or_else(|| {
                    ClusterError::Unavailable(format!(
                        "the last message on {subject:?} carries no topic sequence"
                    ))
                })?,
            }),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(Last {
                stream_seq: 0,
                topic_seq: self.broker.topic_next_seq(topic) - 1,
            }),
            Err(e) => Err(ClusterError::Unavailable(format!(
                "reading the topic's last message from the stream: {e}"
            ))),
        }
    }
}
