//! The broker: topics, per-topic and global sequences, filtered subscriptions
//! that hand off seamlessly between the log and the ring, durable consumers,
//! presence, metrics.
//!
//! # Publishing
//! A publish takes the broker's publish lock, assigns the next global
//! sequence (the log's) and the topic's next sequence, appends to the log,
//! then copies the event into the ring, and releases the lock. Every event is
//! thus in the log before it can be seen live, and the ring's sequence equals
//! the global sequence.
//!
//! What the publisher's `Ok` means per [`Durability`](crate::log::Durability):
//! - `Never` / `Interval`: the event is in the log's memory map (it survives a
//!   crash of this process, not a power loss until the next sync) and has been
//!   offered to live subscribers.
//! - `Always`: additionally synced to stable storage before `publish` returns
//!   (group commit). Live subscribers may receive it *before* the sync
//!   completes; if the sync fails, `publish` returns the error and the log
//!   refuses further appends.
//!
//! # Subscribing
//! See [`Subscription`]: a subscriber reads the log until it catches up, then
//! the ring; if it is lapped on the ring it returns to the log and catches up
//! again, by itself. Only records deleted by retention are ever missed, and
//! those arrive as an explicit [`Gap`].

mod acks;
mod checkpoint;
pub(crate) mod event;
mod filter;
mod idempotency;
mod metrics;
mod presence;
mod replica;
mod subscription;
mod topics;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::log::{Log, LogConfig, LogError, RecordRef};
use crate::ring::{self, Ring, RingConfig};
use crate::sync::Ordering;

pub use acks::MAX_PENDING_ACKS;
pub use checkpoint::{
    validate_name as validate_consumer_name, AckError, CheckpointError,
    MAX_NAME_LEN as MAX_CONSUMER_NAME_LEN,
};
pub use event::{
    validate_correlation, validate_event_type, Delivery, DeliveryRef, Event, EventRef, Gap,
    MAX_CORRELATION_LEN, MAX_TYPE_LEN,
};
pub use filter::{Filter, TopicPattern};
pub use idempotency::{
    validate_idempotency_key, MAX_IDEMPOTENCY_KEY_LEN, MAX_IDEMPOTENCY_SCOPE_LEN,
};
pub use metrics::MetricsSnapshot;
pub use presence::{presence_event, PresenceError, PresenceKind, Session, PRESENCE_PREFIX};
pub use replica::Replicated;
pub use subscription::{StartAt, Subscription};
pub use topics::{split_system, validate_topic, DEADLETTER_PREFIX, MAX_TOPIC_LEN, SYSTEM_PREFIXES};

use event::{ring_header, Fields, RING_HEADER};
use metrics::Metrics;
use topics::{Registry, Topic};

/// How to open a [`Broker`].
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Directory for the log, the topic registry and consumer checkpoints.
    pub data_dir: PathBuf,
    /// Bytes of the in-memory ring (a power of two).
    pub ring_capacity: usize,
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
    /// The log's settings (segment size, durability, retention).
    pub log: LogConfig,
    /// Presence sessions expire after this long without a heartbeat.
    pub presence_ttl: Duration,
    /// A publish repeating an idempotency key used this recently is a
    /// duplicate (see [`Broker::publish_batch_once`]).
    pub idempotency_window: Duration,
    /// At most this many events' keys are remembered; beyond, the oldest
    /// keys are forgotten before their window ends. A key costs at most
    /// about 500 bytes (a 128-byte key, a 255-byte scope, the map's entry
    /// and order slot, 16 bytes a sequence), so the default 100 000 bounds
    /// the window near 50 MB (far less with short keys and scopes).
    pub idempotency_max_events: usize,
    /// The broker is a replica of a cluster's stream: its events arrive
    /// only through [`Broker::replicate`], with the sequences the stream
    /// gave them, and local publishes are refused
    /// ([`BrokerError::Replica`]), so that every replica holds the same
    /// events at the same sequences.
    pub replica: bool,
}

/// The largest `max_payload` a broker accepts (1 GiB).
pub const MAX_PAYLOAD_LIMIT: usize = 1 << 30;

impl BrokerConfig {
    /// Checks that the settings can work together, with messages that name
    /// the settings (they reach C hosts as they are). [`Broker::open`] calls
    /// it first.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let invalid = |why: String| Err(BrokerError::InvalidConfig(why));
        if self.max_payload == 0 || self.max_payload > MAX_PAYLOAD_LIMIT {
            return invalid(format!(
                "max_payload ({}) must be within 1 ..= {MAX_PAYLOAD_LIMIT} bytes",
                self.max_payload
            ));
        }
        if self.idempotency_window > Duration::from_secs(86_400) {
            return invalid(format!(
                "idempotency_window ({:?}) must be at most a day",
                self.idempotency_window
            ));
        }
        if self.idempotency_max_events == 0 {
            return invalid("idempotency_max_events must be at least 1".to_owned());
        }
        if let Err(LogError::InvalidConfig(why)) = self.log.validate() {
            return invalid(why.to_owned());
        }
        // Cannot overflow: max_payload is bounded above.
        let max_record = RING_HEADER + MAX_TYPE_LEN + MAX_CORRELATION_LEN + self.max_payload;
        if self.ring_capacity / 4 < max_record {
            return invalid(format!(
                "ring_capacity ({} bytes) must be at least 4 × (max_payload + {} bytes of header) = {}: raise it or lower max_payload",
                self.ring_capacity,
                max_record - self.max_payload,
                4 * max_record
            ));
        }
        // The log's type field holds the type, a NUL and the correlation id.
        // (+7: records are padded to 8 bytes, as `Checked` counts them.)
        let log_record = crate::log::format::REC_HEADER_LEN
            + crate::log::format::MAX_TYPE_LEN
            + self.max_payload
            + 7;
        if log_record > self.log.max_record_len() {
            return invalid(format!(
                "segment_size ({} bytes) must hold the largest event: at least {} bytes for max_payload {}",
                self.log.segment_size,
                log_record + crate::log::format::SEG_HEADER_LEN,
                self.max_payload
            ));
        }
        Ok(())
    }

    /// Embedded defaults: a 16 MiB ring, payloads up to 1 MiB, the log's
    /// defaults (64 MiB segments, sync every 100 ms), 30 s presence expiry,
    /// idempotency keys remembered for 2 minutes (at most a million events').
    pub fn new(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            data_dir: data_dir.into(),
            ring_capacity: 16 << 20,
            max_payload: 1 << 20,
            log: LogConfig::default(),
            presence_ttl: Duration::from_secs(30),
            idempotency_window: Duration::from_secs(120),
            idempotency_max_events: 100_000,
            replica: false,
        }
    }
}

/// Why a broker call failed.
#[derive(Debug)]
pub enum BrokerError {
    /// A topic name or pattern breaks the naming rules.
    InvalidTopic {
        /// The offending name.
        name: String,
        /// Which rule.
        why: &'static str,
    },
    /// A filter that cannot select anything sensible.
    InvalidFilter(&'static str),
    /// An event type breaks the rules (see [`MAX_TYPE_LEN`]).
    InvalidEventType(String),
    /// A correlation id breaks the rules (see [`MAX_CORRELATION_LEN`]).
    InvalidCorrelation(String),
    /// An idempotency key or its scope breaks the rules (see
    /// [`MAX_IDEMPOTENCY_KEY_LEN`]).
    InvalidIdempotencyKey(String),
    /// A payload larger than [`BrokerConfig::max_payload`].
    PayloadTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A start position that needs a single exact topic in the filter.
    NeedsSingleTopic,
    /// No durable consumer of that name exists.
    UnknownConsumer(String),
    /// `ack` on a subscription that is not a durable consumer's.
    NotAConsumer,
    /// An acknowledgement of an event that was not delivered.
    Ack(checkpoint::AckError),
    /// A consumer checkpoint failure.
    Checkpoint(checkpoint::CheckpointError),
    /// A presence failure.
    Presence(presence::PresenceError),
    /// The log failed.
    Log(LogError),
    /// A file-system call failed.
    Io {
        /// What the broker was doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The topic registry file is corrupt.
    CorruptRegistry {
        /// The file.
        path: PathBuf,
        /// The first bad line (1-based).
        line: usize,
    },
    /// The configuration cannot work.
    InvalidConfig(String),
    /// A batch event's publisher belongs to another broker.
    ForeignPublisher,
    /// A local publish on a replica, or a replicated event on a broker
    /// that is not one (see [`BrokerConfig::replica`]).
    Replica(&'static str),
    /// A replicated event does not follow the replica's last one.
    ReplicaOrder {
        /// `"global"` or `"topic"`: which sequence.
        sequence: &'static str,
        /// The sequence the replica expected.
        expected: u64,
        /// The event's.
        got: u64,
    },
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidTopic { name, why } => write!(f, "invalid topic {name:?}: {why}"),
            Self::InvalidFilter(why) => write!(f, "invalid filter: {why}"),
            Self::InvalidEventType(t) => {
                write!(f, "invalid event type {t:?}: 1 to {MAX_TYPE_LEN} bytes of letters, digits, '_', '.', ':', '-'")
            }
            Self::InvalidCorrelation(c) => {
                write!(f, "invalid correlation id {c:?}: up to {MAX_CORRELATION_LEN} printable ASCII characters")
            }
            Self::InvalidIdempotencyKey(k) => {
                write!(f, "invalid idempotency key {k:?}: 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters")
            }
            Self::PayloadTooLarge { len, max } => {
                write!(f, "payload of {len} bytes exceeds the limit of {max}")
            }
            Self::NeedsSingleTopic => write!(
                f,
                "this start position needs a filter naming exactly one topic"
            ),
            Self::UnknownConsumer(name) => write!(f, "no durable consumer named {name:?}"),
            Self::NotAConsumer => {
                write!(f, "only a durable consumer's subscription can acknowledge")
            }
            Self::Ack(e) => write!(f, "acknowledgement refused: {e}"),
            Self::Checkpoint(e) => write!(f, "consumer checkpoint: {e}"),
            Self::Presence(e) => write!(f, "presence: {e}"),
            Self::Log(e) => write!(f, "log: {e}"),
            Self::Io { what, path, source } => write!(f, "{what} ({}): {source}", path.display()),
            Self::CorruptRegistry { path, line } => {
                write!(
                    f,
                    "topic registry {} is corrupt at line {line}",
                    path.display()
                )
            }
            Self::InvalidConfig(why) => write!(f, "invalid broker configuration: {why}"),
            Self::ForeignPublisher => {
                write!(f, "a batch event's publisher belongs to another broker")
            }
            Self::Replica(why) => f.write_str(why),
            Self::ReplicaOrder {
                sequence,
                expected,
                got,
            } => write!(
                f,
                "replicated event out of order: {sequence} sequence {got} where {expected} was next"
            ),
        }
    }
}

impl std::error::Error for BrokerError {
    // (Display also shows the wrapped error's text: hosts and HTTP clients
    // read the message alone.)
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Ack(e) => Some(e),
            Self::Checkpoint(e) => Some(e),
            Self::Presence(e) => Some(e),
            Self::Log(e) => Some(e),
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<LogError> for BrokerError {
    fn from(e: LogError) -> Self {
        BrokerError::Log(e)
    }
}

impl From<checkpoint::CheckpointError> for BrokerError {
    fn from(e: checkpoint::CheckpointError) -> Self {
        BrokerError::Checkpoint(e)
    }
}

impl From<checkpoint::AckError> for BrokerError {
    fn from(e: checkpoint::AckError) -> Self {
        BrokerError::Ack(e)
    }
}

impl From<presence::PresenceError> for BrokerError {
    fn from(e: presence::PresenceError) -> Self {
        BrokerError::Presence(e)
    }
}

/// Options of one publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOptions<'a> {
    /// Who published (device or user id), for "not my own events" filters.
    pub origin: u64,
    /// Correlation id, carried to subscribers.
    pub correlation: Option<&'a str>,
    /// The caller has checked that the payload is a JSON text
    /// [`crate::json::validate`] accepts (the server's decoders do). Live
    /// subscribers see it as [`EventRef::payload_json`] and may then pass
    /// the payload on as JSON without checking it again, so never set it
    /// for bytes that were not checked. Not stored in the log.
    pub payload_is_json: bool,
}

/// The sequences a published event got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Global sequence.
    pub seq: u64,
    /// Sequence within its topic.
    pub topic_seq: u64,
}

/// State behind the publish lock.
#[derive(Debug)]
struct PublishState {
    ring: ring::SinglePublisher,
    last_ts: u64,
    /// Idempotency keys of the last window.
    window: idempotency::Window,
}

/// What [`Broker::publish_batch_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Once {
    /// The events are stored.
    Stored,
    /// The key was used within the window: nothing is stored, and the
    /// sequences are those of its first publish.
    Duplicate,
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: BrokerConfig,
    pub(crate) log: Log,
    pub(crate) ring: Ring,
    pub(crate) topics: Registry,
    publish: Mutex<PublishState>,
    pub(crate) metrics: Metrics,
    pub(crate) checkpoints: checkpoint::CheckpointStore,
    pub(crate) presence: presence::Presence,
    /// Single events acknowledged by consumers, above their checkpoints.
    acks: acks::Acks,
    /// Held for the broker's life: one process per data directory.
    _lock: std::fs::File,
}

/// The broker. Cheap to clone; every clone is the same broker.
///
/// # Example
/// Open a broker, subscribe, publish, read live, then replay from the log:
/// ```
/// use std::time::Duration;
/// use herald_core::{Broker, BrokerConfig, Delivery, Filter, StartAt};
///
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(BrokerConfig::new(dir.path()))?;
///
/// // Live: from the next event published on any `acme.` topic.
/// let mut live = broker.subscribe(Filter::patterns(&["acme.>"])?, StartAt::Now)?;
/// let orders = broker.publisher("acme.orders")?; // no lookup per publish
/// let p = orders.publish("order.created", br#"{"id":1}"#, Default::default())?;
/// broker.publish("acme.users", "user.joined", br#"{"id":7}"#)?;
///
/// let Some(Delivery::Event(e)) = live.next_timeout(Duration::from_secs(5))? else {
///     panic!("expected the order");
/// };
/// assert_eq!((e.seq, &*e.topic), (p.seq, "acme.orders"));
/// assert_eq!((e.event_type.as_str(), &e.payload[..]), ("order.created", &br#"{"id":1}"#[..]));
///
/// // Replay: one topic from its first event (read from the log).
/// let mut replay = broker.subscribe(Filter::topic("acme.users")?, StartAt::TopicSeq(1))?;
/// match replay.try_next()? {
///     Some(Delivery::Event(e)) => assert_eq!(e.event_type, "user.joined"),
///     other => panic!("unexpected {other:?}"),
/// }
/// assert!(replay.try_next()?.is_none()); // caught up
/// broker.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// The idempotency keys of the log's last window (see `idempotency`).
fn rebuild_window(log: &Log, config: &BrokerConfig) -> Result<idempotency::Window, BrokerError> {
    let window_ns = u64::try_from(config.idempotency_window.as_nanos()).unwrap_or(u64::MAX);
    let mut window = idempotency::Window::new(window_ns, config.idempotency_max_events);
    let mut rebuild = idempotency::Rebuild::default();
    let mut reader = log.reader_from_time(now_ns().saturating_sub(window_ns))?;
    while let Some(item) = reader.next_item() {
        if let crate::log::ReadItem::Record(r) = item? {
            window.rebuild_step(&mut rebuild, r.seq, r.topic_seq, r.timestamp_ns, r.key);
        }
    }
    Ok(window)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Broker {
    /// Opens (creating or recovering) the broker's data directory.
    pub fn open(config: BrokerConfig) -> Result<Broker, BrokerError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| BrokerError::Io {
            what: "creating the data directory",
            path: dir.clone(),
            source: e,
        })?;
        let lock = lock_data_dir(&dir)?;
        let (log, _report) = Log::open(dir.join("log"), config.log.clone())?;
        let max_record = RING_HEADER + MAX_TYPE_LEN + MAX_CORRELATION_LEN + config.max_payload;
        // One publisher, behind the publish lock.
        let (ring, ring_publisher) = Ring::with_single_publisher(RingConfig {
            capacity: config.ring_capacity,
            max_record,
            slots: None,
            first_seq: log.next_seq(),
        })
        .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        let topics = Registry::open(&dir, |id| log.last_topic_seq(id))?;
        let checkpoints = checkpoint::CheckpointStore::open(&dir.join("consumers"))?;
        for name in checkpoints.names() {
            if let Some(seq) = checkpoints.get(&name) {
                log.set_retention_floor(&consumer_floor(&name), seq.saturating_add(1));
            }
        }
        let presence = presence::Presence::new(config.presence_ttl);
        let window = rebuild_window(&log, &config)?;
        let publish = Mutex::new(PublishState {
            ring: ring_publisher,
            last_ts: 0,
            window,
        });
        let inner = Inner {
            config,
            log,
            ring,
            topics,
            publish,
            metrics: Metrics::default(),
            checkpoints,
            presence,
            acks: acks::Acks::default(),
            _lock: lock,
        };
        Ok(Broker {
            inner: Arc::new(inner),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// A publisher for `topic` (registered on first use). Publishing through it
    /// does no lookup.
    pub fn publisher(&self, topic: &str) -> Result<TopicPublisher, BrokerError> {
        let topic = match self.inner.topics.get(topic) {
            Some(topic) => topic,
            None => {
                // A new topic is synced to the registry.
                self.inner.ring.announce_held();
                self.inner.topics.get_or_create(topic, false)?
            }
        };
        Ok(TopicPublisher {
            inner: self.inner.clone(),
            topic,
        })
    }

    /// A publisher for a system topic (`$` first, e.g. a webhook's
    /// dead-letter topic): for the server's own events, which clients may
    /// read but never publish.
    pub fn system_publisher(&self, topic: &str) -> Result<TopicPublisher, BrokerError> {
        if !topic.starts_with('$') {
            return Err(BrokerError::InvalidTopic {
                name: topic.to_owned(),
                why: "a system topic starts with '$'",
            });
        }
        let topic = self.inner.topics.get_or_create(topic, true)?;
        Ok(TopicPublisher {
            inner: self.inner.clone(),
            topic,
        })
    }

    /// Publishes one event to `topic` (a lookup per call; see [`Broker::publisher`]).
    pub fn publish(
        &self,
        topic: &str,
        event_type: &str,
        payload: &[u8],
    ) -> Result<Published, BrokerError> {
        self.publisher(topic)?
            .publish(event_type, payload, PublishOptions::default())
    }

    /// Checks an event as a publish would (type, correlation id, payload
    /// size), without publishing it: for callers that must refuse a whole
    /// request before creating any of its topics.
    pub fn check_event(
        &self,
        event_type: &str,
        payload: &[u8],
        options: PublishOptions<'_>,
    ) -> Result<(), BrokerError> {
        Checked::new(&self.inner, event_type, payload, options, 0).map(|_| ())
    }

    /// Publishes a batch of events, to one topic or several, under one
    /// acquisition of the publish lock: their global sequences are
    /// consecutive and no other publish lands between them. Every event is
    /// checked before any is appended, so an invalid event refuses the whole
    /// batch and stores nothing. (A log I/O error in the middle of a batch
    /// fails it with the events before it appended, as it would fail a
    /// sequence of single publishes; the log is then unusable anyway.)
    ///
    /// The sequences are appended to `out`, in order (no allocation if it
    /// has the room).
    pub fn publish_batch(
        &self,
        events: &[BatchEvent<'_>],
        out: &mut Vec<Published>,
    ) -> Result<(), BrokerError> {
        self.publish_keyed(None, events, out).map(|_| ())
    }

    /// [`Broker::publish_batch`], at most once per key: a publish that
    /// repeats `key` within the [window](BrokerConfig::idempotency_window)
    /// stores nothing and gets the sequences of the key's first publish
    /// (whatever its events were). `scope` keeps keys apart (a tenant; ""
    /// for none). The key is stored in the log with the last event, so the
    /// window survives a restart, and a publish whose tail a crash lost
    /// (never acknowledged) does not count.
    pub fn publish_batch_once(
        &self,
        scope: &str,
        key: &str,
        events: &[BatchEvent<'_>],
        out: &mut Vec<Published>,
    ) -> Result<Once, BrokerError> {
        validate_idempotency_key(key)?;
        if scope.len() > MAX_IDEMPOTENCY_SCOPE_LEN {
            return Err(BrokerError::InvalidIdempotencyKey(format!("{scope}/{key}")));
        }
        self.publish_keyed(
            Some(&idempotency::encode(events.len(), scope, key)),
            events,
            out,
        )
    }

    fn publish_keyed(
        &self,
        record_key: Option<&[u8]>,
        events: &[BatchEvent<'_>],
        out: &mut Vec<Published>,
    ) -> Result<Once, BrokerError> {
        let inner = &*self.inner;
        inner.check_local_publish()?;
        if record_key.is_some() && events.len() > u16::MAX as usize {
            return Err(BrokerError::InvalidIdempotencyKey(format!(
                "(a batch of {} events: a keyed publish holds at most 65 535)",
                events.len()
            )));
        }
        let key = record_key.unwrap_or_default();
        for (i, e) in events.iter().enumerate() {
            if !Arc::ptr_eq(&e.publisher.inner, &self.inner) {
                return Err(BrokerError::ForeignPublisher);
            }
            // The last event's record carries the key (see `idempotency`).
            let key_len = if i + 1 == events.len() { key.len() } else { 0 };
            Checked::new(inner, e.event_type, e.payload, e.options, key_len)?;
        }
        let first = out.len();
        {
            let mut state = inner.publish.lock();
            if record_key.is_some() {
                if let Some(done) = state.window.get(key, now_ns()) {
                    out.extend_from_slice(done);
                    let last = done.last().map_or(0, |p| p.seq);
                    drop(state);
                    inner.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                    // Answered as the first publish is: once it is durable
                    // (a retry may arrive while the first still waits).
                    if inner.config.log.durability == crate::log::Durability::Always {
                        inner.log.wait_durable(last)?;
                    }
                    return Ok(Once::Duplicate);
                }
            }
            // One clock read for the batch: its events share a timestamp.
            let ts = now_ns();
            for (i, e) in events.iter().enumerate() {
                // Checked above.
                let checked = Checked {
                    event_type: e.event_type,
                    correlation: e.options.correlation.unwrap_or(""),
                    payload: e.payload,
                    origin: e.options.origin,
                    payload_json: e.options.payload_is_json,
                };
                let key = if i + 1 == events.len() { key } else { &[] };
                out.push(inner.append_stamped(
                    &mut state,
                    &e.publisher.topic,
                    &checked,
                    key,
                    ts,
                )?);
            }
            if record_key.is_some() && !events.is_empty() {
                let at = state.last_ts;
                state.window.insert(key, at, &out[first..]);
            }
        }
        if let Some(last) = out[first..].last() {
            inner.finish_publish(last.seq, events.len() as u64)?;
        }
        Ok(Once::Stored)
    }

    /// Subscribes with `filter`, starting at `start`.
    pub fn subscribe(&self, filter: Filter, start: StartAt) -> Result<Subscription, BrokerError> {
        Subscription::new(self.inner.clone(), filter, start, None)
    }

    /// Subscribes as the durable consumer `name`: resumes after its
    /// checkpoint, or at `first_time` if the consumer is new. Acknowledge
    /// with [`Subscription::ack`] / [`Subscription::ack_up_to`].
    pub fn subscribe_consumer(
        &self,
        name: &str,
        filter: Filter,
        first_time: StartAt,
    ) -> Result<Subscription, BrokerError> {
        checkpoint::validate_name(name)?;
        // It may write and sync the consumer's checkpoint.
        self.inner.ring.announce_held();
        let (start, new) = match self.inner.checkpoints.get(name) {
            Some(seq) => (StartAt::Seq(seq.saturating_add(1)), false),
            None => (first_time, true),
        };
        let sub = Subscription::new(self.inner.clone(), filter, start, Some(name.to_owned()))?;
        self.inner.acks.subscribed(name, sub.filter());
        let checkpoint = sub.consumer_checkpoint().unwrap_or(0);
        if new {
            // The consumer exists from its first subscription (not its
            // first acknowledgement): it can be acknowledged, listed and
            // removed, and retention keeps what it has not read.
            self.inner.checkpoints.commit(name, checkpoint, true)?;
            self.inner
                .log
                .set_retention_floor(&consumer_floor(name), checkpoint + 1);
        } else if sub.beyond_end().is_some() {
            // Its checkpoint is past the end of the log (which lost its
            // tail): back to the end, or the events published from here on
            // would count as consumed already.
            self.inner.checkpoints.reset(name, checkpoint)?;
            self.inner
                .log
                .set_retention_floor(&consumer_floor(name), checkpoint + 1);
        }
        Ok(sub)
    }

    /// Every durable consumer and its checkpoint, by name.
    pub fn consumers(&self) -> Vec<(String, u64)> {
        let store = &self.inner.checkpoints;
        let mut all: Vec<(String, u64)> = store
            .names()
            .into_iter()
            .filter_map(|n| Some((store.get(&n)?, n)))
            .map(|(seq, n)| (n, seq))
            .collect();
        all.sort();
        all
    }

    /// The last acknowledged global sequence of a durable consumer.
    pub fn consumer_checkpoint(&self, name: &str) -> Result<u64, BrokerError> {
        self.inner
            .checkpoints
            .get(name)
            .ok_or_else(|| BrokerError::UnknownConsumer(name.to_owned()))
    }

    /// Acknowledges everything up to `seq` for the durable consumer `name`
    /// (for clients that track delivery themselves, e.g. over HTTP). The
    /// consumer must exist (it is created by subscribing); `seq` may be
    /// neither past the last published event nor below the checkpoint
    /// (acknowledging the checkpoint again is a no-op).
    pub fn ack_consumer(&self, name: &str, seq: u64) -> Result<(), BrokerError> {
        checkpoint::validate_name(name)?;
        let checkpoint = self.consumer_checkpoint(name)?;
        let last = self.next_seq().saturating_sub(1);
        if seq > last {
            return Err(BrokerError::Ack(checkpoint::AckError::PastEnd {
                seq,
                last,
            }));
        }
        if seq < checkpoint {
            return Err(BrokerError::Ack(checkpoint::AckError::Backwards {
                seq,
                checkpoint,
            }));
        }
        self.inner.acks.passed(name, seq);
        self.inner.store_checkpoint(name, seq).map_err(|e| match e {
            // Another acknowledgement went further meanwhile.
            checkpoint::CheckpointError::Backwards { current, .. } => {
                BrokerError::Ack(checkpoint::AckError::Backwards {
                    seq,
                    checkpoint: current,
                })
            }
            checkpoint::CheckpointError::Unknown { .. } => {
                BrokerError::UnknownConsumer(name.to_owned())
            }
            e => e.into(),
        })
    }

    /// Acknowledges single events of the durable consumer `name` (for
    /// clients that track delivery themselves and process out of order).
    /// The checkpoint moves past every acknowledged event and every
    /// sequence the filter of its subscriptions does not select, up to
    /// its first event not acknowledged; returns the checkpoint. Sequences
    /// at or below the checkpoint are already consumed (no-op); one past
    /// the last published event is refused. At most [`MAX_PENDING_ACKS`]
    /// wait above the checkpoint, in memory: a restart forgets them.
    pub fn ack_consumer_events(&self, name: &str, seqs: &[u64]) -> Result<u64, BrokerError> {
        checkpoint::validate_name(name)?;
        self.inner.acks.ack(&self.inner, name, seqs)
    }

    /// Forgets a durable consumer and releases what retention kept for it.
    pub fn remove_consumer(&self, name: &str) -> Result<(), BrokerError> {
        // Removing the checkpoint's file syncs its directory.
        self.inner.ring.announce_held();
        if self.inner.checkpoints.remove(name)?.is_none() {
            return Err(BrokerError::UnknownConsumer(name.to_owned()));
        }
        self.inner.log.clear_retention_floor(&consumer_floor(name));
        self.inner.acks.forget(name);
        Ok(())
    }

    /// Runs `f` with the wake-ups of this thread's publishes held back, so
    /// that a run of them (a connection's read) wakes a sleeping subscriber
    /// once: see [`ring::Ring::with_held_wakes`]. What in the broker may
    /// wait for the disk (a publish under durability `always`, a new
    /// topic, a consumer's checkpoint) wakes them before it waits.
    pub fn with_held_wakes<R>(&self, f: impl FnOnce() -> R) -> R {
        self.inner.ring.with_held_wakes(f)
    }

    /// A doorbell (eventfd) for event loops; arm it with [`Subscription::arm`].
    pub fn doorbell(&self) -> std::io::Result<ring::Doorbell> {
        self.inner.ring.doorbell()
    }

    /// Counters and latency percentiles.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// The next global sequence to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.inner.log.next_seq()
    }

    /// Names of every registered topic.
    pub fn topics(&self) -> Vec<String> {
        self.inner
            .topics
            .all()
            .iter()
            .map(|t| t.name.to_string())
            .collect()
    }

    /// Retention on a timer (see [`Log::expire`]): call it every minute or
    /// so, and events older than the retention age go even from a log that
    /// fills slowly. Returns the number of events deleted.
    pub fn expire(&self) -> Result<u64, BrokerError> {
        Ok(self.inner.log.expire()?.deleted_records)
    }

    /// Syncs the log to stable storage.
    pub fn flush(&self) -> Result<(), BrokerError> {
        Ok(self.inner.log.sync()?)
    }

    /// Flushes and closes. Other clones and live subscriptions keep the
    /// files open until they are dropped.
    pub fn close(self) -> Result<(), BrokerError> {
        self.flush()
    }

    /// Registers a presence session on `topic` (heartbeat with
    /// [`Broker::presence_heartbeat`]); publishes `presence.join` on
    /// `$presence.<topic>` when the session is new.
    pub fn presence_join(
        &self,
        topic: &str,
        client_id: &str,
        user: &str,
        device: &str,
        metadata: &str,
    ) -> Result<(), BrokerError> {
        validate_topic(topic)?;
        let change =
            self.inner
                .presence
                .join(topic, client_id, user, device, metadata, now_ns())?;
        if let presence::PresenceChange::Joined(s) = change {
            self.publish_presence(presence::PresenceKind::Join, topic, &s)?;
        }
        Ok(())
    }

    /// Refreshes a presence session.
    pub fn presence_heartbeat(&self, topic: &str, client_id: &str) -> Result<(), BrokerError> {
        Ok(self.inner.presence.heartbeat(topic, client_id, now_ns())?)
    }

    /// Ends a presence session; publishes `presence.leave`.
    pub fn presence_leave(&self, topic: &str, client_id: &str) -> Result<bool, BrokerError> {
        match self.inner.presence.leave(topic, client_id, now_ns()) {
            Some(s) => {
                self.publish_presence(presence::PresenceKind::Leave, topic, &s)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Expires sessions without a recent heartbeat (publishing
    /// `presence.expire` for each); call it periodically. Returns how many.
    pub fn presence_expire(&self) -> Result<usize, BrokerError> {
        let expired = self.inner.presence.expire(now_ns());
        for (topic, s) in &expired {
            self.publish_presence(presence::PresenceKind::Expire, topic, s)?;
        }
        Ok(expired.len())
    }

    /// Checks a presence session's fields as a join would, storing nothing
    /// (for a cluster's presence, kept outside the broker).
    pub fn check_presence(
        &self,
        topic: &str,
        client_id: &str,
        user: &str,
        device: &str,
        metadata: &str,
    ) -> Result<(), BrokerError> {
        validate_topic(topic)?;
        Ok(self
            .inner
            .presence
            .check_session(client_id, user, device, metadata)?)
    }

    /// Who is present on `topic`.
    pub fn presence(&self, topic: &str) -> Vec<presence::Session> {
        self.inner.presence.list(topic)
    }

    fn publish_presence(
        &self,
        kind: presence::PresenceKind,
        topic: &str,
        s: &presence::Session,
    ) -> Result<(), BrokerError> {
        let (event_type, payload) = presence::presence_event(kind, topic, s);
        let system = self
            .inner
            .topics
            .get_or_create(&format!("{PRESENCE_PREFIX}{topic}"), true)?;
        TopicPublisher {
            inner: self.inner.clone(),
            topic: system,
        }
        .publish(&event_type, &payload, PublishOptions::default())?;
        Ok(())
    }
}

/// Takes an exclusive lock on `<dir>/lock` for as long as the broker or any
/// of its handles lives, so that no second broker opens the same data
/// directory, in another process or in this one. An open-file-description
/// lock (`F_OFD_SETLK`), not a classic POSIX record lock: those belong to
/// the process, so a second open in the same process would succeed (two
/// appenders, one log) and closing either descriptor would drop the lock.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, BrokerError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BrokerError::Io {
            what: "opening the data directory lock",
            path: path.clone(),
            source: e,
        })?;
    // SAFETY: `flock` is plain data; zeroed is a valid value before we set
    // the fields fcntl reads.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    // SAFETY: F_OFD_SETLK on a descriptor we own with a live, initialised
    // flock (`l_pid` 0, as OFD locks require).
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } != 0 {
        return Err(BrokerError::Io {
            what: "locking the data directory (is another broker using it?)",
            path,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(file)
}

/// The retention floor name that keeps a consumer's unread records.
fn consumer_floor(name: &str) -> String {
    format!("consumer:{name}")
}

impl Inner {
    pub(crate) fn commit_checkpoint(&self, name: &str, seq: u64) -> Result<(), BrokerError> {
        match self.store_checkpoint(name, seq) {
            // Another subscription of the same consumer acknowledged further:
            // the checkpoint already covers this one.
            Err(checkpoint::CheckpointError::Backwards { .. }) => Ok(()),
            // Removed while this subscription was open.
            Err(checkpoint::CheckpointError::Unknown { .. }) => {
                Err(BrokerError::UnknownConsumer(name.to_owned()))
            }
            r => Ok(r?),
        }
    }

    /// Stores the checkpoint of the existing consumer `name` and keeps what
    /// it has not read.
    fn store_checkpoint(&self, name: &str, seq: u64) -> Result<(), checkpoint::CheckpointError> {
        let sync = self.config.log.durability == crate::log::Durability::Always;
        // It may write and sync a file: nothing held waits for that.
        self.ring.announce_held();
        self.checkpoints.advance(name, seq, sync)?;
        self.log.set_retention_floor(&consumer_floor(name), seq + 1);
        // A concurrent removal may have cleared the floor before it was set:
        // `remove_consumer` clears it after the checkpoint is gone, and this
        // looks again after setting it, so either way no floor outlives it.
        if self.checkpoints.get(name).is_none() {
            self.log.clear_retention_floor(&consumer_floor(name));
        }
        Ok(())
    }
}

/// Publishes to one topic. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct TopicPublisher {
    inner: Arc<Inner>,
    topic: Arc<Topic>,
}

impl TopicPublisher {
    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// Publishes an event; returns its global and topic sequences.
    pub fn publish(
        &self,
        event_type: &str,
        payload: &[u8],
        options: PublishOptions<'_>,
    ) -> Result<Published, BrokerError> {
        self.inner.check_local_publish()?;
        let event = Checked::new(&self.inner, event_type, payload, options, 0)?;
        let inner = &*self.inner;
        let published = {
            let mut state = inner.publish.lock();
            inner.append_locked(&mut state, &self.topic, &event, &[])?
        };
        inner.finish_publish(published.seq, 1)?;
        Ok(published)
    }
}

/// One event of a batch (see [`Broker::publish_batch`]).
#[derive(Debug, Clone, Copy)]
pub struct BatchEvent<'a> {
    /// Its topic.
    pub publisher: &'a TopicPublisher,
    /// Its type.
    pub event_type: &'a str,
    /// Its payload.
    pub payload: &'a [u8],
    /// Origin and correlation id.
    pub options: PublishOptions<'a>,
}

/// An event checked against the rules, ready to append.
#[derive(Clone, Copy)]
struct Checked<'a> {
    event_type: &'a str,
    correlation: &'a str,
    payload: &'a [u8],
    origin: u64,
    payload_json: bool,
}

impl<'a> Checked<'a> {
    fn new(
        inner: &Inner,
        event_type: &'a str,
        payload: &'a [u8],
        options: PublishOptions<'a>,
        key_len: usize,
    ) -> Result<Checked<'a>, BrokerError> {
        validate_event_type(event_type)?;
        let correlation = options.correlation.unwrap_or("");
        validate_correlation(correlation)?;
        let event = Checked {
            event_type,
            correlation,
            payload,
            origin: options.origin,
            payload_json: options.payload_is_json,
        };
        // The broker's limit, and the log's: a record must fit in a segment
        // (checked here so that a batch is refused before any append).
        let overhead = crate::log::format::REC_HEADER_LEN + event.type_field_len() + key_len + 7;
        let max = inner
            .config
            .max_payload
            .min(inner.config.log.max_record_len().saturating_sub(overhead));
        if payload.len() > max {
            return Err(BrokerError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(event)
    }

    /// Length of the log's type field: type, then NUL and the correlation
    /// id if any.
    fn type_field_len(&self) -> usize {
        match self.correlation.len() {
            0 => self.event_type.len(),
            n => self.event_type.len() + 1 + n,
        }
    }
}

impl Inner {
    /// Appends a checked event to the log and the ring. The caller holds
    /// the publish lock (`state`), which orders every sequence assignment.
    fn append_locked(
        &self,
        state: &mut PublishState,
        topic: &Topic,
        event: &Checked<'_>,
        key: &[u8],
    ) -> Result<Published, BrokerError> {
        let ts = now_ns();
        self.append_stamped(state, topic, event, key, ts)
    }

    /// [`Inner::append_locked`] at time `ts` (raised to the last event's:
    /// the log's time index needs them in order).
    fn append_stamped(
        &self,
        state: &mut PublishState,
        topic: &Topic,
        event: &Checked<'_>,
        key: &[u8],
        ts: u64,
    ) -> Result<Published, BrokerError> {
        // Relaxed: the publish lock orders every access (see `Topic`).
        let topic_seq = topic.next_seq.load(Ordering::Relaxed);
        let ts = ts.max(state.last_ts);
        let seq = self.log.next_seq();
        let mut type_field = [0u8; MAX_TYPE_LEN + 1 + MAX_CORRELATION_LEN];
        let type_len = event.type_field_len();
        let ty = event.event_type.len();
        type_field[..ty].copy_from_slice(event.event_type.as_bytes());
        if type_len > ty {
            type_field[ty + 1..type_len].copy_from_slice(event.correlation.as_bytes());
        }
        self.log.append_nowait(&RecordRef {
            seq,
            topic_id: topic.id,
            topic_seq,
            timestamp_ns: ts,
            origin: event.origin,
            event_type: &type_field[..type_len],
            payload: event.payload,
            key,
        })?;
        let fields = Fields {
            topic_id: topic.id,
            topic_seq,
            timestamp_ns: ts,
            origin: event.origin,
            event_type: event.event_type.as_bytes(),
            correlation: event.correlation.as_bytes(),
            payload: event.payload,
            payload_json: event.payload_json,
        };
        let header = ring_header(&fields);
        let corr = event.correlation.len();
        let len = RING_HEADER + ty + corr + event.payload.len();
        // The ring only refuses records above its max_record (sized from
        // the validated max_payload, which `Checked` bounds every event by)
        // and never waits: the broker has no tethered ring subscribers. A
        // refusal here would leave the event in the log but not in the
        // ring, which live subscribers would silently skip: never ignore it.
        let Ok(mut claim) = state.ring.try_claim(len) else {
            unreachable!("the ring refused a checked event of {len} bytes");
        };
        debug_assert_eq!(claim.seq(), seq, "the ring follows the log");
        claim.write_at(0, &header);
        claim.write_at(RING_HEADER, event.event_type.as_bytes());
        claim.write_at(RING_HEADER + ty, event.correlation.as_bytes());
        claim.write_at(RING_HEADER + ty + corr, event.payload);
        claim.commit();
        state.last_ts = ts;
        topic.next_seq.store(topic_seq + 1, Ordering::Relaxed);
        Ok(Published { seq, topic_seq })
    }

    /// Refuses a local publish on a replica.
    fn check_local_publish(&self) -> Result<(), BrokerError> {
        if self.config.replica {
            return Err(BrokerError::Replica(
                "this broker is a replica of a cluster's stream: events are published through the cluster",
            ));
        }
        Ok(())
    }

    /// After the lock: waits for durability (under `always`) up to `last`,
    /// and counts `events` publishes.
    fn finish_publish(&self, last: u64, events: u64) -> Result<(), BrokerError> {
        if self.config.log.durability == crate::log::Durability::Always {
            // Subscribers get the event now, not after the sync.
            self.ring.announce_held();
            self.log.wait_durable(last)?;
        }
        self.metrics.published_n(events);
        Ok(())
    }
}
