//! Presence on a cluster: sessions live in a JetStream key-value bucket
//! (`<stream>_presence`) that every node reads and writes, so a client may
//! heartbeat on any node and every node lists the same sessions. Changes
//! are published through the stream as on a single node (`presence.join`,
//! `presence.leave`, `presence.expire` on `$presence.<topic>`).
//!
//! Exactly one event per change: a join is a `create` (only one node's
//! succeeds), a leave and an expiry a delete that expects the session's
//! revision (only one succeeds), and each event carries `Nats-Msg-Id =
//! <join|leave|expire>:<key>:<revision>`, so the stream stores it once even
//! if two nodes raced or a publish is retried. Any node expires any session whose last
//! heartbeat is older than the expiry: sessions of a node that died expire
//! like the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use herald_core::broker::{presence_event, PresenceKind, Session, PRESENCE_PREFIX};
use parking_lot::Mutex;
use serde_json::Value;

use super::{now_ns, ClusterError};

/// What a worker asks of the cluster's presence.
#[derive(Debug)]
pub(crate) enum PresenceOp {
    /// Refreshes the session, or joins (checked by the request layer).
    Heartbeat {
        topic: String,
        client_id: String,
        user: String,
        device: String,
        metadata: String,
    },
    Leave {
        topic: String,
        client_id: String,
    },
}

/// Every node's view of the bucket, kept current by a watch: what
/// presence lists answer from. Key → (revision, topic, session).
#[derive(Debug, Default)]
pub(crate) struct View {
    sessions: Mutex<HashMap<String, (u64, String, Session)>>,
}

impl View {
    /// The sessions on `topic` (the broker's name), by client id.
    pub(crate) fn list(&self, topic: &str) -> Vec<Session> {
        let mut out: Vec<Session> = (self.sessions.lock().values())
            .filter(|(_, t, _)| t == topic)
            .map(|(_, _, s)| s.clone())
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// Sessions whose last heartbeat is older than `before_ns`: (key,
    /// revision, topic, session).
    fn stale(&self, before_ns: u64) -> Vec<(String, u64, String, Session)> {
        (self.sessions.lock().iter())
            .filter(|(_, (_, _, s))| s.last_heartbeat_ns < before_ns)
            .map(|(k, (rev, t, s))| (k.clone(), *rev, t.clone(), s.clone()))
            .collect()
    }
}

/// A session's key: its topic and client id, each base64url (key tokens
/// allow only letters, digits, `-`, `_`, `=`).
fn key(topic: &str, client_id: &str) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(topic),
        URL_SAFE_NO_PAD.encode(client_id)
    )
}

/// A session's value: `{"topic":…,"session":{…}}`.
fn encode(topic: &str, s: &Session) -> bytes::Bytes {
    let mut out = b"{\"topic\":".to_vec();
    herald_core::json::write_string(&mut out, topic);
    out.extend_from_slice(b",\"session\":");
    s.write_json(&mut out);
    out.push(b'}');
    out.into()
}

fn decode(value: &[u8]) -> Option<(String, Session)> {
    let v: Value = serde_json::from_slice(value).ok()?;
    let s = &v["session"];
    let text = |k: &str| s[k].as_str().map(str::to_owned);
    let session = Session {
        client_id: text("client_id")?,
        user: text("user")?,
        device: text("device")?,
        metadata: match &s["metadata"] {
            Value::Null => String::new(),
            m => m.to_string(),
        },
        connected_at_ns: s["connected_at_ns"].as_u64()?,
        last_heartbeat_ns: s["last_heartbeat_ns"].as_u64()?,
    };
    Some((v["topic"].as_str()?.to_owned(), session))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(format!("presence: {what}: {e}; retry"))
}

/// An event to publish on `$presence.<topic>`: its topic, type, payload and
/// deduplication id.
pub(crate) type Change = (String, String, Vec<u8>, Option<String>);

fn change(kind: PresenceKind, topic: &str, s: &Session, msg_id: Option<String>) -> Change {
    let (event_type, payload) = presence_event(kind, topic, s);
    (
        format!("{PRESENCE_PREFIX}{topic}"),
        event_type,
        payload,
        msg_id,
    )
}

/// Keeps `view` current: the bucket's values (its last value per key),
/// then every change; after an interruption, starts over from the values.
pub(crate) async fn watch(store: kv::Store, view: Arc<View>) {
    loop {
        match store.watch_with_history(">").await {
            Ok(mut changes) => {
                // Rebuilt from the values: nothing missed in a gap stays.
                view.sessions.lock().clear();
                while let Some(entry) = changes.next().await {
                    let Ok(entry) = entry else { break };
                    let mut sessions = view.sessions.lock();
                    match (entry.operation, decode(&entry.value)) {
                        (kv::Operation::Put, Some((topic, s))) => {
                            sessions.insert(entry.key, (entry.revision, topic, s));
                        }
                        _ => {
                            sessions.remove(&entry.key);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("cluster: presence watch: {e}; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a worker's presence operation: what it answers (joined, or left),
/// and the event to publish, if any.
pub(crate) async fn run(
    store: &kv::Store,
    op: PresenceOp,
) -> Result<(bool, Option<Change>), ClusterError> {
    // A few rounds: each lost race means another node changed the session
    // in between, and the next round sees what it did.
    for _ in 0..8 {
        match &op {
            PresenceOp::Heartbeat {
                topic,
                client_id,
                user,
                device,
                metadata,
            } => {
                let k = key(topic, client_id);
                let now = now_ns();
                let entry = store
                    .entry(k.as_str())
                    .await
                    .map_err(|e| unavailable("read", e))?;
                if let Some((rev, Some((_, mut s)))) = entry
                    .filter(|e| e.operation == kv::Operation::Put)
                    .map(|e| (e.revision, decode(&e.value)))
                {
                    s.last_heartbeat_ns = now.max(s.last_heartbeat_ns);
                    if store
                        .update(k.as_str(), encode(topic, &s), rev)
                        .await
                        .is_ok()
                    {
                        return Ok((false, None));
                    }
                    continue;
                }
                let s = Session {
                    client_id: client_id.clone(),
                    user: user.clone(),
                    device: device.clone(),
                    metadata: metadata.clone(),
                    connected_at_ns: now,
                    last_heartbeat_ns: now,
                };
                match store.create(k.as_str(), encode(topic, &s)).await {
                    Ok(rev) => {
                        let id = format!("join:{k}:{rev}");
                        return Ok((true, Some(change(PresenceKind::Join, topic, &s, Some(id)))));
                    }
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(unavailable("join", e)),
                }
            }
            PresenceOp::Leave { topic, client_id } => {
                let k = key(topic, client_id);
                let entry = store
                    .entry(k.as_str())
                    .await
                    .map_err(|e| unavailable("read", e))?;
                let Some((rev, Some((_, s)))) = entry
                    .filter(|e| e.operation == kv::Operation::Put)
                    .map(|e| (e.revision, decode(&e.value)))
                else {
                    return Ok((false, None));
                };
                if store
                    .delete_expect_revision(k.as_str(), Some(rev))
                    .await
                    .is_ok()
                {
                    let id = format!("leave:{k}:{rev}");
                    return Ok((true, Some(change(PresenceKind::Leave, topic, &s, Some(id)))));
                }
            }
        }
    }
    Err(ClusterError::Unavailable(
        "presence: the session changed on other nodes too often; retry".into(),
    ))
}

/// Expires the sessions whose last heartbeat is older than `ttl`: each is
/// deleted if it is still the revision this node saw (one node wins), and
/// its `presence.expire` event is returned.
pub(crate) async fn expire(store: &kv::Store, view: &View, ttl: Duration) -> Vec<Change> {
    let ttl_ns = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
    let mut out = Vec::new();
    for (k, rev, topic, s) in view.stale(now_ns().saturating_sub(ttl_ns)) {
        if store
            .delete_expect_revision(k.as_str(), Some(rev))
            .await
            .is_ok()
        {
            let id = format!("expire:{k}:{rev}");
            out.push(change(PresenceKind::Expire, &topic, &s, Some(id)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_survives_its_value_and_keys_are_valid_bucket_keys() {
        let s = Session {
            client_id: "c 1/ü".into(),
            user: "u".into(),
            device: "d".into(),
            metadata: r#"{"a":[1,2]}"#.into(),
            connected_at_ns: 5,
            last_heartbeat_ns: 9,
        };
        assert_eq!(
            decode(&encode("acme.room", &s)),
            Some(("acme.room".into(), s))
        );
        let k = key("acme.room", "c 1/ü");
        assert!(k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_ne!(key("a.b", "c"), key("a", "b.c"));
    }
}
