//! The presence registry: which clients (user, device) are connected to which
//! topic, kept alive by heartbeats.
//!
//! A [`Session`] is one client on one topic. A client joins a topic
//! ([`Presence::join`]), sends heartbeats ([`Presence::heartbeat`], or
//! [`Presence::heartbeat_client`] for all its topics at once), and leaves
//! ([`Presence::leave`], [`Presence::leave_client`] on disconnect). A session
//! whose last heartbeat is more than the TTL old is removed by
//! [`Presence::expire`], which the broker calls periodically.
//!
//! The clock is injected: every call takes `now_ns` (any monotonic
//! nanosecond clock), which keeps the registry deterministic and testable. A
//! heartbeat never moves `last_heartbeat_ns` backwards.
//!
//! The broker publishes each change as an event on the system topic
//! `$presence.<topic>`; [`presence_event`] encodes it (event type
//! `presence.join`, `presence.leave` or `presence.expire`, and a JSON payload).
//!
//! Limits ([`PresenceConfig`]): client id, user and device at most 256 bytes,
//! metadata at most 4 KiB of valid JSON (or empty), 100 000 sessions per
//! topic. The topic name itself is validated by the broker; here it must only
//! be non-empty.
//!
//! Thread-safe behind one mutex: presence is off the publish path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use parking_lot::Mutex;

use crate::json::{self, JsonError};

/// The start of the system topic on which the broker publishes a topic's
/// presence events: `$presence.<topic>`.
pub const PRESENCE_PREFIX: &str = "$presence.";

/// One client's presence on one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Session {
    /// The client (connection) id, unique per topic.
    pub client_id: String,
    /// The user the client authenticated as.
    pub user: String,
    /// The device the client runs on.
    pub device: String,
    /// Opaque JSON text supplied by the client (validated), or empty.
    pub metadata: String,
    /// When the session joined.
    pub connected_at_ns: u64,
    /// When its last heartbeat (or join) arrived.
    pub last_heartbeat_ns: u64,
}

/// What [`Presence::join`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PresenceChange {
    /// A new session; publish a `presence.join` event.
    Joined(Session),
    /// The client was already present: user, device and metadata were
    /// replaced and the session refreshed as by a heartbeat (its
    /// `connected_at_ns` is kept).
    Refreshed(Session),
}

impl PresenceChange {
    /// The session as it is now.
    #[cfg(test)]
    pub(crate) fn session(&self) -> &Session {
        match self {
            PresenceChange::Joined(s) | PresenceChange::Refreshed(s) => s,
        }
    }
}

/// The kind of a presence event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceKind {
    /// A session joined.
    Join,
    /// A session left.
    Leave,
    /// A session expired (no heartbeat within the TTL).
    Expire,
}

impl PresenceKind {
    /// The event type: `presence.join`, `presence.leave` or `presence.expire`.
    pub fn event_type(self) -> &'static str {
        match self {
            PresenceKind::Join => "presence.join",
            PresenceKind::Leave => "presence.leave",
            PresenceKind::Expire => "presence.expire",
        }
    }
}

/// The registry's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PresenceConfig {
    /// A session expires when its last heartbeat is more than this old.
    pub ttl: Duration,
    /// The most sessions one topic may hold.
    pub max_sessions_per_topic: usize,
    /// The longest client id, user or device, in bytes.
    pub max_field_len: usize,
    /// The longest metadata, in bytes.
    pub max_metadata_len: usize,
}

/// Default [`PresenceConfig::max_sessions_per_topic`].
pub(crate) const DEFAULT_MAX_SESSIONS_PER_TOPIC: usize = 100_000;
/// Default [`PresenceConfig::max_field_len`].
pub(crate) const DEFAULT_MAX_FIELD_LEN: usize = 256;
/// Default [`PresenceConfig::max_metadata_len`].
pub(crate) const DEFAULT_MAX_METADATA_LEN: usize = 4096;

impl PresenceConfig {
    /// The defaults with the given TTL.
    pub(crate) fn with_ttl(ttl: Duration) -> PresenceConfig {
        PresenceConfig {
            ttl,
            max_sessions_per_topic: DEFAULT_MAX_SESSIONS_PER_TOPIC,
            max_field_len: DEFAULT_MAX_FIELD_LEN,
            max_metadata_len: DEFAULT_MAX_METADATA_LEN,
        }
    }
}

impl Default for PresenceConfig {
    /// A 30-second TTL and the default limits.
    fn default() -> Self {
        PresenceConfig::with_ttl(Duration::from_secs(30))
    }
}

/// Why the registry refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceError {
    /// A required field (`topic` or `client_id`) is empty.
    EmptyField(&'static str),
    /// A field exceeds its limit.
    FieldTooLong {
        /// `client_id`, `user`, `device` or `metadata`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The metadata is neither empty nor valid JSON.
    InvalidMetadata(JsonError),
    /// The topic already holds the maximum number of sessions.
    TopicFull {
        /// The topic.
        topic: String,
        /// The limit.
        max: usize,
    },
    /// No such session (never joined, left, or expired).
    UnknownSession {
        /// The topic.
        topic: String,
        /// The client.
        client_id: String,
    },
}

impl fmt::Display for PresenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PresenceError::EmptyField(field) => write!(f, "presence: {field} is empty"),
            PresenceError::FieldTooLong { field, len, max } => {
                write!(f, "presence: {field} is {len} bytes, more than {max}")
            }
            PresenceError::InvalidMetadata(e) => write!(f, "presence: metadata: {e}"),
            PresenceError::TopicFull { topic, max } => {
                write!(f, "presence: topic {topic:?} already has {max} sessions")
            }
            PresenceError::UnknownSession { topic, client_id } => write!(
                f,
                "presence: client {client_id:?} has no session on topic {topic:?}"
            ),
        }
    }
}

impl std::error::Error for PresenceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PresenceError::InvalidMetadata(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// topic → client id → session.
    topics: HashMap<String, BTreeMap<String, Session>>,
    /// client id → its topics.
    clients: HashMap<String, BTreeSet<String>>,
    /// (last heartbeat, topic, client id) of every session: the expiry order.
    /// One entry per session, so its length is the number of sessions.
    by_heartbeat: BTreeSet<(u64, String, String)>,
}

impl Inner {
    fn remove(&mut self, topic: &str, client_id: &str) -> Option<Session> {
        let sessions = self.topics.get_mut(topic)?;
        let s = sessions.remove(client_id)?;
        if sessions.is_empty() {
            self.topics.remove(topic);
        }
        if let Some(ts) = self.clients.get_mut(client_id) {
            ts.remove(topic);
            if ts.is_empty() {
                self.clients.remove(client_id);
            }
        }
        self.by_heartbeat
            .remove(&(s.last_heartbeat_ns, topic.to_owned(), client_id.to_owned()));
        Some(s)
    }

    /// Refreshes a session's heartbeat (never backwards).
    fn touch(&mut self, topic: &str, client_id: &str, now_ns: u64) -> Option<&mut Session> {
        let s = self.topics.get_mut(topic)?.get_mut(client_id)?;
        if now_ns > s.last_heartbeat_ns {
            let mut key = (s.last_heartbeat_ns, topic.to_owned(), client_id.to_owned());
            self.by_heartbeat.remove(&key);
            key.0 = now_ns;
            self.by_heartbeat.insert(key);
            s.last_heartbeat_ns = now_ns;
        }
        Some(s)
    }
}

/// The presence registry. See the module documentation.
#[derive(Debug)]
pub(crate) struct Presence {
    config: PresenceConfig,
    ttl_ns: u64,
    inner: Mutex<Inner>,
}

impl Presence {
    /// A registry with the given TTL and the default limits.
    pub(crate) fn new(ttl: Duration) -> Presence {
        Presence::with_config(PresenceConfig::with_ttl(ttl))
    }

    /// A registry with the given configuration.
    pub(crate) fn with_config(config: PresenceConfig) -> Presence {
        Presence {
            ttl_ns: u64::try_from(config.ttl.as_nanos()).unwrap_or(u64::MAX),
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A session's fields against the limits: what [`Presence::join`]
    /// checks.
    pub(crate) fn check_session(
        &self,
        client_id: &str,
        user: &str,
        device: &str,
        metadata: &str,
    ) -> Result<(), PresenceError> {
        if client_id.is_empty() {
            return Err(PresenceError::EmptyField("client_id"));
        }
        let max = self.config.max_field_len;
        self.check_field("client_id", client_id, max)?;
        self.check_field("user", user, max)?;
        self.check_field("device", device, max)?;
        self.check_field("metadata", metadata, self.config.max_metadata_len)?;
        if !metadata.is_empty() {
            json::validate(metadata).map_err(PresenceError::InvalidMetadata)?;
        }
        Ok(())
    }

    fn check_field(&self, field: &'static str, v: &str, max: usize) -> Result<(), PresenceError> {
        if v.len() > max {
            return Err(PresenceError::FieldTooLong {
                field,
                len: v.len(),
                max,
            });
        }
        Ok(())
    }

    /// Adds client `client_id` to `topic`, or refreshes its session if it is
    /// already there (replacing user, device and metadata). `metadata` must be
    /// empty or valid JSON.
    pub(crate) fn join(
        &self,
        topic: &str,
        client_id: &str,
        user: &str,
        device: &str,
        metadata: &str,
        now_ns: u64,
    ) -> Result<PresenceChange, PresenceError> {
        if topic.is_empty() {
            return Err(PresenceError::EmptyField("topic"));
        }
        self.check_session(client_id, user, device, metadata)?;
        let mut g = self.inner.lock();
        if let Some(s) = g.touch(topic, client_id, now_ns) {
            s.user.clear();
            s.user.push_str(user);
            s.device.clear();
            s.device.push_str(device);
            s.metadata.clear();
            s.metadata.push_str(metadata);
            return Ok(PresenceChange::Refreshed(s.clone()));
        }
        let count = g.topics.get(topic).map_or(0, BTreeMap::len);
        if count >= self.config.max_sessions_per_topic {
            return Err(PresenceError::TopicFull {
                topic: topic.to_owned(),
                max: self.config.max_sessions_per_topic,
            });
        }
        let s = Session {
            client_id: client_id.to_owned(),
            user: user.to_owned(),
            device: device.to_owned(),
            metadata: metadata.to_owned(),
            connected_at_ns: now_ns,
            last_heartbeat_ns: now_ns,
        };
        g.topics
            .entry(topic.to_owned())
            .or_default()
            .insert(client_id.to_owned(), s.clone());
        g.clients
            .entry(client_id.to_owned())
            .or_default()
            .insert(topic.to_owned());
        g.by_heartbeat
            .insert((now_ns, topic.to_owned(), client_id.to_owned()));
        Ok(PresenceChange::Joined(s))
    }

    /// Records a heartbeat of `client_id`'s session on `topic`.
    pub(crate) fn heartbeat(
        &self,
        topic: &str,
        client_id: &str,
        now_ns: u64,
    ) -> Result<(), PresenceError> {
        let mut g = self.inner.lock();
        match g.touch(topic, client_id, now_ns) {
            Some(_) => Ok(()),
            None => Err(PresenceError::UnknownSession {
                topic: topic.to_owned(),
                client_id: client_id.to_owned(),
            }),
        }
    }

    /// Records a heartbeat of every session of `client_id` (a connection-level
    /// keep-alive). Returns how many sessions it refreshed.
    #[cfg(test)]
    pub(crate) fn heartbeat_client(&self, client_id: &str, now_ns: u64) -> usize {
        let mut g = self.inner.lock();
        let topics: Vec<String> = match g.clients.get(client_id) {
            Some(ts) => ts.iter().cloned().collect(),
            None => return 0,
        };
        for t in &topics {
            g.touch(t, client_id, now_ns);
        }
        topics.len()
    }

    /// Removes `client_id`'s session on `topic` and returns it (publish a
    /// `presence.leave` event). `now_ns` is the time of leaving (not stored).
    pub(crate) fn leave(&self, topic: &str, client_id: &str, now_ns: u64) -> Option<Session> {
        let _ = now_ns;
        self.inner.lock().remove(topic, client_id)
    }

    /// Removes every session of `client_id` (on disconnect) and returns them
    /// with their topics, sorted by topic.
    #[cfg(test)]
    pub(crate) fn leave_client(&self, client_id: &str, now_ns: u64) -> Vec<(String, Session)> {
        let _ = now_ns;
        let mut g = self.inner.lock();
        let Some(topics) = g.clients.get(client_id).cloned() else {
            return Vec::new();
        };
        topics
            .into_iter()
            .filter_map(|t| g.remove(&t, client_id).map(|s| (t, s)))
            .collect()
    }

    /// Removes and returns every session whose last heartbeat is more than
    /// the TTL before `now_ns` (`now_ns - last_heartbeat_ns > ttl`), as
    /// `(topic, session)`, oldest heartbeat first (ties by topic, then client).
    pub(crate) fn expire(&self, now_ns: u64) -> Vec<(String, Session)> {
        let mut g = self.inner.lock();
        let mut out = Vec::new();
        while let Some((hb, topic, client)) = g.by_heartbeat.first().cloned() {
            if hb.saturating_add(self.ttl_ns) >= now_ns {
                break;
            }
            match g.remove(&topic, &client) {
                Some(s) => out.push((topic, s)),
                // Unreachable (every index entry has its session), but never
                // loop forever on it.
                None => {
                    g.by_heartbeat.remove(&(hb, topic, client));
                }
            }
        }
        out
    }

    /// The sessions on `topic`, sorted by client id.
    pub(crate) fn list(&self, topic: &str) -> Vec<Session> {
        let g = self.inner.lock();
        g.topics
            .get(topic)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One session.
    #[cfg(test)]
    pub(crate) fn session(&self, topic: &str, client_id: &str) -> Option<Session> {
        let g = self.inner.lock();
        g.topics.get(topic)?.get(client_id).cloned()
    }

    /// The number of sessions on `topic`.
    #[cfg(test)]
    pub(crate) fn count(&self, topic: &str) -> usize {
        self.inner.lock().topics.get(topic).map_or(0, BTreeMap::len)
    }

    /// The topics `client_id` is present on, sorted.
    #[cfg(test)]
    pub(crate) fn topics_of(&self, client_id: &str) -> Vec<String> {
        let g = self.inner.lock();
        g.clients
            .get(client_id)
            .map(|ts| ts.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The topics with at least one session, sorted.
    #[cfg(test)]
    pub(crate) fn topics(&self) -> Vec<String> {
        let g = self.inner.lock();
        let mut v: Vec<String> = g.topics.keys().cloned().collect();
        v.sort();
        v
    }

    /// The total number of sessions.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().by_heartbeat.len()
    }

    /// Whether there is no session at all.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Session {
    /// Appends the session as the JSON object that the server's presence
    /// list, the C ABI's `herald_broker_presence_list` and (after the topic)
    /// the `$presence` events carry, the one encoding of a session:
    ///
    /// ```text
    /// {"client_id":"…","user":"…","device":"…","metadata":…,
    ///  "connected_at_ns":…,"last_heartbeat_ns":…}
    /// ```
    ///
    /// `metadata` is the session's metadata compacted ([`json::compact`]),
    /// or `null` if it is empty or not valid JSON. (Only a hand-built
    /// session can hold invalid metadata: joins refuse it.) Strings are
    /// escaped by [`json::write_string`]. The output is always valid JSON.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        self.write_fields(out);
    }

    /// [`Session::write_json`] as a string.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(self.json_capacity());
        self.write_json(&mut out);
        // Strings went in as UTF-8, everything around them is ASCII.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The object's fields after its `{`, and its `}`.
    fn write_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"client_id\":");
        json::write_string(out, &self.client_id);
        out.extend_from_slice(b",\"user\":");
        json::write_string(out, &self.user);
        out.extend_from_slice(b",\"device\":");
        json::write_string(out, &self.device);
        out.extend_from_slice(b",\"metadata\":");
        if self.metadata.is_empty() || json::write_compact(out, &self.metadata).is_err() {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b",\"connected_at_ns\":");
        out.extend_from_slice(self.connected_at_ns.to_string().as_bytes());
        out.extend_from_slice(b",\"last_heartbeat_ns\":");
        out.extend_from_slice(self.last_heartbeat_ns.to_string().as_bytes());
        out.push(b'}');
    }

    /// Room for the encoding, unless strings need many escapes.
    fn json_capacity(&self) -> usize {
        128 + self.client_id.len() + self.user.len() + self.device.len() + self.metadata.len()
    }
}

/// Encodes a presence change as the event the broker publishes on
/// `$presence.<topic>`: the event type ([`PresenceKind::event_type`]) and a
/// JSON payload, the session's encoding ([`Session::write_json`]) with the
/// topic first:
///
/// ```text
/// {"topic":"…","client_id":"…",…,"last_heartbeat_ns":…}
/// ```
///
/// (The server relies on the topic coming first: it strips the tenant
/// prefix from it.)
pub fn presence_event(kind: PresenceKind, topic: &str, session: &Session) -> (String, Vec<u8>) {
    let mut p = Vec::with_capacity(session.json_capacity() + topic.len());
    p.extend_from_slice(b"{\"topic\":");
    json::write_string(&mut p, topic);
    p.push(b',');
    session.write_fields(&mut p);
    (kind.event_type().to_owned(), p)
}

#[cfg(test)]
#[path = "presence_tests.rs"]
mod tests;
