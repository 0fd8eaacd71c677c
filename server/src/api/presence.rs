//! Presence requests, the same over HTTP and WebSocket: heartbeat (joins
//! if new), leave, and who is present. Topics are the client's, checked
//! against its subscribe grants.

use herald_core::broker::BrokerError;
use herald_core::Broker;
use serde_json::{json, Value};

use crate::api::auth::{Denied, Grants};

/// Why a presence request was refused.
pub(crate) enum Refused {
    /// Malformed request.
    Bad(String),
    /// Outside the client's grants.
    Denied(Denied),
    /// The broker refused it (invalid topic, I/O).
    Broker(BrokerError),
}

/// A session: the broker's topic and the client id.
pub(crate) type Session = (String, String);

fn session(grants: &Grants, body: &Value) -> Result<Session, Refused> {
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    let (topic, client_id) = (field("topic"), field("client_id"));
    if topic.is_empty() || client_id.is_empty() {
        return Err(Refused::Bad(
            "presence needs string 'topic' and 'client_id'".into(),
        ));
    }
    let internal = grants.internal(topic);
    grants.check_subscribe(&internal).map_err(Refused::Denied)?;
    Ok((internal, client_id.to_owned()))
}

/// Refreshes a session, or joins (`user`, `device`, `metadata` from `body`).
/// Answers `{"joined": bool}`.
pub(crate) fn heartbeat(
    broker: &Broker,
    grants: &Grants,
    body: &Value,
) -> Result<(Session, Value), Refused> {
    let (topic, client_id) = session(grants, body)?;
    if broker.presence_heartbeat(&topic, &client_id).is_ok() {
        return Ok(((topic, client_id), json!({ "joined": false })));
    }
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    let metadata = body
        .get("metadata")
        .filter(|m| !m.is_null())
        .map(Value::to_string)
        .unwrap_or_default();
    broker
        .presence_join(
            &topic,
            &client_id,
            field("user"),
            field("device"),
            &metadata,
        )
        .map_err(Refused::Broker)?;
    Ok(((topic, client_id), json!({ "joined": true })))
}

/// Ends a session. Answers `{"left": bool}` (false: there was none).
pub(crate) fn leave(
    broker: &Broker,
    grants: &Grants,
    body: &Value,
) -> Result<(Session, Value), Refused> {
    let (topic, client_id) = session(grants, body)?;
    let left = broker
        .presence_leave(&topic, &client_id)
        .map_err(Refused::Broker)?;
    Ok(((topic, client_id), json!({ "left": left })))
}

/// Who is present on the client's `topic`.
pub(crate) fn list(broker: &Broker, grants: &Grants, topic: &str) -> Result<Value, Denied> {
    let internal = grants.internal(topic);
    grants.check_subscribe(&internal)?;
    let present: Vec<Value> = broker
        .presence(&internal)
        .into_iter()
        .map(|s| {
            let metadata = if s.metadata.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&s.metadata).unwrap_or(Value::Null)
            };
            json!({
                "client_id": s.client_id, "user": s.user, "device": s.device,
                "metadata": metadata,
                "connected_at_ns": s.connected_at_ns, "last_heartbeat_ns": s.last_heartbeat_ns,
            })
        })
        .collect();
    Ok(json!({ "topic": topic, "present": present }))
}
