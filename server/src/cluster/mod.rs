//! Cluster mode: Herald nodes share one NATS JetStream stream, the source of
//! truth, and each keeps a full replica of it in its own broker (log and
//! ring), which serves its clients exactly as a single node does.
//!
//! A publish goes to the stream, never to the local broker: the stream's
//! sequence is the global sequence, the same on every node. Each node's
//! bridge thread reads the stream in order and appends every message to its
//! broker ([`herald_core::Broker::replicate`]), its own publishes included,
//! so every node serves the same events in the same order. The design, its
//! guarantees and its limits are in `docs/CLUSTER.md`.
//!
//! Presence sessions and durable consumers' checkpoints live in JetStream
//! key-value buckets that every node reads and writes (`presence.rs`,
//! `consumers.rs`).
//!
//! Threads: the NATS client (async-nats) runs on one bridge thread, on a
//! current-thread tokio runtime. Workers hand it commands through a
//! channel: a publish's answer wakes the worker later ([`Cluster::submit`]),
//! the other commands' answers are awaited ([`Cluster::ask`]); nothing async
//! touches the fan-out path.

mod bridge;
mod consumers;
mod presence;
mod subject;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

pub(crate) use consumers::ConsumerOp;
use herald_core::broker::{Published, Session};
use herald_core::Broker;
use parking_lot::Mutex;
pub(crate) use presence::PresenceOp;
use serde::Deserialize;

/// How a node joins a cluster (`[cluster]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`); the client moves between
    /// them.
    pub nats: Vec<String>,
    /// The JetStream stream every node shares (created if missing).
    pub stream: String,
    /// This node's name, as NATS monitoring shows its connection.
    pub node_id: String,
    /// A NATS credentials file (`.creds`), if the servers require one.
    pub credentials: Option<PathBuf>,
    /// How long a publish may wait for the stream's acknowledgement before
    /// the client is answered 503.
    pub publish_timeout: Duration,
    /// How long a client whose position is ahead of this node's replica is
    /// held for the replica to reach it before it is answered 503.
    pub replica_wait: Duration,
}

impl ClusterConfig {
    /// Defaults for the servers at `nats`: stream `HERALD`, node id from
    /// the process id, 5 s publish timeout, 5 s replica wait.
    pub fn new(nats: Vec<String>) -> ClusterConfig {
        ClusterConfig {
            nats,
            stream: "HERALD".to_owned(),
            node_id: format!("herald-{}", std::process::id()),
            credentials: None,
            publish_timeout: Duration::from_secs(5),
            replica_wait: Duration::from_secs(5),
        }
    }
}

/// The `[cluster]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// NATS server URLs.
    pub nats: Option<Vec<String>>,
    /// The stream's name.
    pub stream: Option<String>,
    /// This node's name.
    pub node_id: Option<String>,
    /// NATS credentials file.
    pub credentials: Option<PathBuf>,
    /// Publish timeout, in milliseconds.
    pub publish_timeout_ms: Option<u64>,
    /// Replica wait, in milliseconds.
    pub replica_wait_ms: Option<u64>,
}

impl ClusterFile {
    /// Applies the table over `config` (`None`: no cluster so far).
    pub fn apply(self, config: &mut Option<ClusterConfig>) -> Result<(), String> {
        let c = config.get_or_insert_with(|| ClusterConfig::new(Vec::new()));
        if let Some(v) = self.nats {
            c.nats = v;
        }
        if let Some(v) = self.stream {
            c.stream = v;
        }
        if let Some(v) = self.node_id {
            c.node_id = v;
        }
        if let Some(v) = self.credentials {
            c.credentials = Some(v);
        }
        if let Some(ms) = self.publish_timeout_ms {
            if !(100..=60_000).contains(&ms) {
                return Err("cluster.publish_timeout_ms: 100 to 60000".into());
            }
            c.publish_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.replica_wait_ms {
            if !(100..=60_000).contains(&ms) {
                return Err("cluster.replica_wait_ms: 100 to 60000".into());
            }
            c.replica_wait = Duration::from_millis(ms);
        }
        Ok(())
    }
}

impl ClusterConfig {
    /// Checks the settings once every source (file, flags) is applied.
    pub fn validate(&self) -> Result<(), String> {
        let c = self;
        if c.nats.is_empty() || c.nats.iter().any(|u| u.is_empty() || u.contains(' ')) {
            return Err("cluster.nats: one or more NATS URLs (nats://host:port)".into());
        }
        let name_ok = |s: &str| {
            (1..=64).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !name_ok(&c.stream) {
            return Err("cluster.stream: 1 to 64 letters, digits, '_' or '-'".into());
        }
        if !name_ok(&c.node_id) {
            return Err("cluster.node_id: 1 to 64 letters, digits, '_' or '-'".into());
        }
        Ok(())
    }
}

/// An event to publish through the cluster, checked by the request layer.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The broker's topic name.
    pub(crate) topic: String,
    pub(crate) event_type: String,
    pub(crate) payload: bytes::Bytes,
    pub(crate) origin: u64,
    pub(crate) correlation: Option<String>,
    /// JetStream's deduplication id (`Nats-Msg-Id`): the tenant and the
    /// client's idempotency key.
    pub(crate) msg_id: Option<String>,
}

/// What the stream did with a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) published: Published,
    /// The key was seen within the stream's duplicate window: nothing was
    /// stored, and these are the first publish's sequences.
    pub(crate) duplicate: bool,
}

/// Why a cluster publish failed: the client may retry (with the same
/// idempotency key, to be sure it is stored once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClusterError {
    /// NATS is unreachable or did not answer in time: nothing was
    /// acknowledged (the event may still be stored; a retry with the same
    /// idempotency key finds it).
    Unavailable(String),
    /// Refused by the stream (too large for NATS's `max_payload`).
    TooLarge(String),
}

/// Wall-clock time, ns since the Unix epoch: what events are stamped with
/// and session heartbeats measured in.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What the bridge reports, read by `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    /// The NATS connection is up.
    pub(crate) connected: AtomicBool,
    /// The replica has caught up with the stream as it was at start.
    pub(crate) caught_up: AtomicBool,
    /// The stream's last sequence when the node started: the replica has
    /// caught up once it holds it.
    pub(crate) catch_up_to: AtomicU64,
    /// The stream's last sequence, as last seen (replicated or
    /// acknowledged to this node).
    pub(crate) stream_last: AtomicU64,
    /// Publishes retried because another publisher wrote the topic first.
    pub(crate) cas_retries: AtomicU64,
    /// Stream sequences this replica skipped: retention removed them from
    /// the stream before the replica had them.
    pub(crate) skipped: AtomicU64,
    /// When the last event replicated was published (ns since the epoch).
    pub(crate) applied_ns: AtomicU64,
    /// Publishes acknowledged by the stream.
    pub(crate) published: AtomicU64,
    /// Publishes handed to the bridge and not answered yet.
    pub(crate) in_flight: std::sync::atomic::AtomicUsize,
    /// Their round trips to the stream, summed, in nanoseconds.
    pub(crate) publish_ns: AtomicU64,
    /// Why replication stopped, if it did (this node cannot go on).
    pub(crate) failed: Mutex<Option<String>>,
}

pub(crate) enum Command {
    Publish {
        event: Outgoing,
        reply: mpsc::SyncSender<Result<Stored, ClusterError>>,
        /// Woken once the reply is sent (the submitting worker's poll).
        wake: Option<Arc<mio::Waker>>,
        /// The client's answer is due by then: a publish not sent to the
        /// stream by then is not sent at all.
        deadline: Instant,
    },
    /// A durable consumer's checkpoint in the cluster's bucket.
    Consumer {
        op: ConsumerOp,
        reply: mpsc::SyncSender<Result<Option<u64>, ClusterError>>,
    },
    /// The stream's last sequence, asked of the stream now.
    StreamEnd {
        reply: mpsc::SyncSender<Result<u64, ClusterError>>,
    },
    /// A presence operation; its answer (joined, or left) if anyone waits.
    Presence {
        op: PresenceOp,
        reply: Option<mpsc::SyncSender<Result<bool, ClusterError>>>,
    },
}

/// Publishes a node may have awaiting the stream at once.
const MAX_IN_FLIGHT: usize = 4096;

/// A publish handed to the bridge, its answer to come.
#[derive(Debug)]
pub(crate) struct Pending {
    answer: mpsc::Receiver<Result<Stored, ClusterError>>,
    deadline: Instant,
    timeout: Duration,
}

impl Pending {
    /// The answer, if it came (or the deadline passed) by `now`.
    pub(crate) fn try_take(&self, now: Instant) -> Option<Result<Stored, ClusterError>> {
        match self.answer.try_recv() {
            Ok(answer) => Some(answer),
            Err(mpsc::TryRecvError::Empty) if now < self.deadline => None,
            Err(_) => Some(Err(self.timed_out())),
        }
    }

    /// Waits for the answer on this thread, at most until the deadline.
    pub(crate) fn wait(self) -> Result<Stored, ClusterError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        self.answer
            .recv_timeout(left)
            .unwrap_or_else(|_| Err(self.timed_out()))
    }

    fn timed_out(&self) -> ClusterError {
        ClusterError::Unavailable(format!(
            "the cluster's stream did not acknowledge within {} ms: the event may or may not be stored; retry with the same idempotency key",
            self.timeout.as_millis()
        ))
    }
}

/// A node's handle on its cluster: cheap to clone.
#[derive(Clone)]
pub(crate) struct Cluster {
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    pub(crate) state: Arc<ClusterState>,
    timeout: Duration,
    /// See [`ClusterConfig::replica_wait`].
    pub(crate) replica_wait: Duration,
    /// The worker this handle belongs to, woken when an answer arrives.
    wake: Option<Arc<mio::Waker>>,
    /// Presence sessions, as the bridge's watch of the bucket has them.
    view: Arc<presence::View>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts the bridge thread for `broker` (a replica). It connects,
    /// creates the stream if missing, and replicates until `shutdown`.
    pub(crate) fn start(
        config: ClusterConfig,
        broker: Broker,
        duplicate_window: Duration,
        presence_ttl: Duration,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<(Cluster, std::thread::JoinHandle<()>)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let state = Arc::new(ClusterState::default());
        let timeout = config.publish_timeout;
        let replica_wait = config.replica_wait;
        let view = Arc::new(presence::View::default());
        let bridge = bridge::Bridge {
            config,
            broker,
            state: state.clone(),
            view: view.clone(),
            presence_ttl,
            stream: bridge::StreamLimits {
                duplicate_window,
                max_age,
                max_bytes,
            },
            shutdown,
        };
        let thread = std::thread::Builder::new()
            .name("herald-cluster".into())
            .spawn(move || bridge.run(rx))?;
        Ok((
            Cluster {
                commands: tx,
                state,
                timeout,
                replica_wait,
                wake: None,
                view,
            },
            thread,
        ))
    }

    /// This handle for a worker: answers to its publishes wake `waker`.
    pub(crate) fn for_worker(&self, waker: Arc<mio::Waker>) -> Cluster {
        Cluster {
            wake: Some(waker),
            ..self.clone()
        }
    }

    /// Hands one event to the bridge for the stream; its answer comes
    /// within the publish timeout (see [`Pending`]), and wakes this
    /// handle's worker when it does.
    pub(crate) fn submit(&self, event: Outgoing) -> Result<Pending, ClusterError> {
        // Only a replica that is current may publish: a topic sequence is
        // the replica's count when the stream holds none of the topic's
        // events, and a wrong one would stop every replica.
        self.check_ready("publish")?;
        // Bounded: beyond, the stream is not keeping up, and waiting longer
        // would only store events their clients have given up on.
        let in_flight = self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        if in_flight >= MAX_IN_FLIGHT {
            self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ClusterError::Unavailable(format!(
                "this node has {MAX_IN_FLIGHT} publishes awaiting the cluster's stream: nothing was stored; retry"
            )));
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let deadline = Instant::now() + self.timeout;
        let command = Command::Publish {
            event,
            reply,
            wake: self.wake.clone(),
            deadline,
        };
        if self.commands.send(command).is_err() {
            self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ClusterError::Unavailable(
                "the cluster bridge has stopped".into(),
            ));
        }
        Ok(Pending {
            answer,
            deadline,
            timeout: self.timeout,
        })
    }

    /// Runs a presence operation on the cluster's bucket and waits for its
    /// answer: joined (a heartbeat), or left (a leave).
    pub(crate) fn presence(&self, op: PresenceOp) -> Result<bool, ClusterError> {
        self.ask("change presence", |reply| Command::Presence {
            op,
            reply: Some(reply),
        })
    }

    /// Whether the stream holds global position `seq`: what this node
    /// knows of the stream's end, and if `seq` is past it, the stream's
    /// answer now (waiting on the caller's thread).
    pub(crate) fn stream_has(&self, seq: u64) -> Result<bool, ClusterError> {
        if seq <= self.state.stream_last.load(Ordering::Acquire) {
            return Ok(true);
        }
        let last = self.ask("ask the stream", |reply| Command::StreamEnd { reply })?;
        self.state.stream_last.fetch_max(last, Ordering::AcqRel);
        Ok(seq <= last)
    }

    /// Reads, raises or removes a durable consumer's checkpoint in the
    /// cluster's bucket, waiting for the answer: the cluster's checkpoint.
    pub(crate) fn consumer(&self, op: ConsumerOp) -> Result<Option<u64>, ClusterError> {
        self.ask("reach the consumers' checkpoints", |reply| {
            Command::Consumer { op, reply }
        })
    }

    /// Sends the bridge the command `make` builds around a reply channel
    /// and waits (on the caller's thread) for the answer, at most the
    /// publish timeout; 503 at once if the node is not ready.
    fn ask<T>(
        &self,
        what: &str,
        make: impl FnOnce(mpsc::SyncSender<Result<T, ClusterError>>) -> Command,
    ) -> Result<T, ClusterError> {
        self.check_ready(what)?;
        let (reply, answer) = mpsc::sync_channel(1);
        if self.commands.send(make(reply)).is_err() {
            return Err(ClusterError::Unavailable(
                "the cluster bridge has stopped".into(),
            ));
        }
        answer.recv_timeout(self.timeout).unwrap_or_else(|_| {
            Err(ClusterError::Unavailable(format!(
                "this node could not {what} in time; retry"
            )))
        })
    }

    /// Leaves a session without waiting (a connection that closes).
    pub(crate) fn leave_later(&self, topic: String, client_id: String) {
        let op = PresenceOp::Leave { topic, client_id };
        let _ = self.commands.send(Command::Presence { op, reply: None });
    }

    /// Who is present on `topic` (the broker's name), as this node's view
    /// of the cluster's bucket has it.
    pub(crate) fn present(&self, topic: &str) -> Vec<Session> {
        self.view.list(topic)
    }

    /// Ready to serve: connected, caught up, replicating.
    pub(crate) fn ready(&self) -> Result<(), String> {
        self.state.ready()
    }

    /// [`Cluster::ready`], as the error a request gets.
    fn check_ready(&self, what: &str) -> Result<(), ClusterError> {
        self.ready().map_err(|why| {
            ClusterError::Unavailable(format!("this node cannot {what} now ({why}); retry"))
        })
    }
}

impl ClusterState {
    /// Connected, caught up, replicating: what publishing, presence and
    /// consumers need (a lagging replica's counts are stale).
    pub(crate) fn ready(&self) -> Result<(), String> {
        if let Some(why) = &*self.failed.lock() {
            return Err(why.clone());
        }
        if !self.connected.load(Ordering::Acquire) {
            return Err("not connected to NATS".into());
        }
        if !self.caught_up.load(Ordering::Acquire) {
            return Err("the replica is catching up with the stream".into());
        }
        Ok(())
    }
}
