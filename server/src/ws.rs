//! WebSocket connections (RFC 6455 via tungstenite on the non-blocking
//! socket) and their JSON messages, specified in `docs/PROTOCOL.md`.

use std::collections::BTreeMap;
use std::io;
use std::net::TcpStream as StdTcpStream;

use herald_core::broker::{DeliveryRef, Filter, PublishOptions, StartAt, Subscription};
use herald_core::Broker;
use serde_json::{json, Value};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::auth::Grants;
use crate::encode::{event_json, gap_json};
use crate::http::Request;

/// Most subscriptions one WebSocket connection may hold.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 64;
/// Largest message a client may send.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

/// The `101 Switching Protocols` answer to a valid upgrade request, or
/// `None` if `req` is not a WebSocket upgrade.
pub(crate) fn upgrade_response(req: &Request) -> Option<Result<Vec<u8>, &'static str>> {
    let upgrade = req.header("upgrade")?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    Some((|| {
        if req.path != "/v1/ws" {
            return Err("WebSocket connections are served at /v1/ws");
        }
        if req.method != "GET" {
            return Err("WebSocket upgrades must use GET");
        }
        if req.header("sec-websocket-version") != Some("13") {
            return Err("unsupported Sec-WebSocket-Version (need 13)");
        }
        let key = req
            .header("sec-websocket-key")
            .ok_or("missing Sec-WebSocket-Key")?;
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        Ok(format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes())
    })())
}

/// One WebSocket connection's protocol state.
pub(crate) struct WsConn {
    ws: WebSocket<StdTcpStream>,
    subs: BTreeMap<String, Subscription>,
    /// A message the write buffer refused; sent before anything else.
    pending: Option<Message>,
    closing: bool,
    grants: Grants,
    /// Per subscription: (global, topic) sequence of the last event queued.
    last: BTreeMap<String, (u64, u64)>,
}

/// What a pump or a read left the connection in.
pub(crate) enum WsStatus {
    Open,
    Closed,
}

impl WsConn {
    /// Wraps `stream` (already upgraded, non-blocking). `max_output`: bytes
    /// the write buffer may hold before the connection stops being fed.
    pub(crate) fn new(
        stream: StdTcpStream,
        already_read: Vec<u8>,
        max_output: usize,
        grants: Grants,
    ) -> WsConn {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE))
            .write_buffer_size(0)
            .max_write_buffer_size(max_output.max(64 * 1024));
        let ws = WebSocket::from_partially_read(stream, already_read, Role::Server, Some(config));
        WsConn {
            ws,
            subs: BTreeMap::new(),
            pending: None,
            closing: false,
            grants,
            last: BTreeMap::new(),
        }
    }

    /// Reads and answers every message available.
    pub(crate) fn on_readable(&mut self, broker: &Broker) -> WsStatus {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let reply = self.handle(broker, text.as_str());
                    if let Some(reply) = reply {
                        self.send(reply);
                    }
                }
                Ok(Message::Binary(_)) => self.send(json!({"type": "error", "message": "binary messages are not supported: send JSON text"})),
                Ok(_) => {} // ping/pong/close handled by tungstenite
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return self.flush(),
                Err(WsError::Capacity(e)) => return self.close_with(1009, &format!("message too big: {e}")),
                Err(WsError::Utf8(_)) => return self.close_with(1007, "invalid UTF-8 in a text message"),
                Err(WsError::Protocol(e)) => return self.close_with(1002, &format!("protocol error: {e}")),
                Err(_) => return WsStatus::Closed,
            }
        }
    }

    fn close_with(&mut self, code: u16, reason: &str) -> WsStatus {
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.chars().take(120).collect::<String>().into(),
        };
        let _ = self.ws.close(Some(frame));
        let _ = self.ws.flush();
        self.closing = true;
        WsStatus::Closed
    }

    /// Whether the write buffer is full (a slow client).
    pub(crate) fn is_stalled(&self) -> bool {
        self.pending.is_some()
    }

    /// Closes a client too slow to drain its buffer (code 4008). The reason
    /// names, per subscription, the last global and topic sequence queued, so
    /// that a reconnect resumes with `after` exactly.
    pub(crate) fn close_slow(&mut self) {
        let mut reason = String::from("slow consumer; last sent");
        for (id, (seq, topic_seq)) in &self.last {
            reason.push_str(&format!(" {id}={seq}/{topic_seq}"));
        }
        let _ = self.close_with(4008, &reason);
    }

    /// Sends a close frame with `code` (e.g. 1001 on shutdown).
    pub(crate) fn shutdown(&mut self, code: u16, reason: &str) {
        let _ = self.close_with(code, reason);
    }

    fn send(&mut self, v: Value) {
        let msg = Message::text(v.to_string());
        if self.pending.is_some() {
            // Only replies land here while the buffer is full; keep order by
            // flushing first, and drop nothing: buffer it behind the pending one.
            let _ = self.ws.flush();
        }
        match self.ws.write(msg) {
            Ok(()) => {}
            Err(WsError::WriteBufferFull(m)) => self.pending = Some(*m),
            Err(_) => self.closing = true,
        }
    }

    fn flush(&mut self) -> WsStatus {
        match self.ws.flush() {
            Ok(()) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return WsStatus::Closed,
        }
        if self.closing {
            WsStatus::Closed
        } else {
            WsStatus::Open
        }
    }

    /// Feeds every subscription into the socket until it would block.
    /// Returns whether some subscription may still have more.
    pub(crate) fn pump(&mut self) -> (WsStatus, bool) {
        if let Some(m) = self.pending.take() {
            match self.ws.write(m) {
                Ok(()) => {}
                Err(WsError::WriteBufferFull(m)) => {
                    self.pending = Some(*m);
                    return (self.flush(), false);
                }
                Err(_) => return (WsStatus::Closed, false),
            }
        }
        let mut more = false;
        let prefix_len = self.grants.prefix_len();
        'subs: for (id, sub) in self.subs.iter_mut() {
            for _ in 0..256 {
                let msg = match sub.try_next_with(|d| ws_delivery(id, &d, prefix_len)) {
                    Ok(Some(v)) => {
                        if let (Some(seq), Some(topic_seq)) =
                            (v["seq"].as_u64(), v["topic_seq"].as_u64())
                        {
                            self.last.insert(id.clone(), (seq, topic_seq));
                        }
                        Message::text(v.to_string())
                    }
                    Ok(None) => continue 'subs,
                    Err(e) => Message::text(
                        json!({"type": "error", "id": id, "message": e.to_string()}).to_string(),
                    ),
                };
                match self.ws.write(msg) {
                    Ok(()) => {}
                    Err(WsError::WriteBufferFull(m)) => {
                        self.pending = Some(*m);
                        break 'subs;
                    }
                    Err(_) => return (WsStatus::Closed, false),
                }
            }
            more = true;
        }
        (self.flush(), more && self.pending.is_none())
    }

    /// Arms the doorbell for every subscription; false if one has data now.
    pub(crate) fn arm(&self, doorbell: &herald_core::ring::Doorbell) -> bool {
        self.pending.is_none() && self.subs.values().all(|s| s.arm(doorbell))
    }

    fn handle(&mut self, broker: &Broker, text: &str) -> Option<Value> {
        let msg: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return Some(json!({"type": "error", "message": format!("not JSON: {e}")})),
        };
        let op = msg.get("op").and_then(Value::as_str).unwrap_or("");
        let reference = msg.get("ref").cloned().unwrap_or(Value::Null);
        let error = |message: String| {
            Some(json!({"type": "error", "op": op, "ref": reference, "message": message}))
        };
        match op {
            "ping" => Some(json!({"type": "pong", "ref": reference})),
            "subscribe" => {
                let Some(id) = msg.get("id").and_then(Value::as_str) else {
                    return error("subscribe needs a string 'id'".into());
                };
                if self.subs.contains_key(id) {
                    return error(format!("subscription id {id:?} is already in use"));
                }
                if self.subs.len() >= MAX_SUBSCRIPTIONS {
                    return error(format!(
                        "at most {MAX_SUBSCRIPTIONS} subscriptions per connection"
                    ));
                }
                match subscribe(broker, &msg, &self.grants) {
                    Ok((sub, recovered)) => {
                        self.subs.insert(id.to_owned(), sub);
                        Some(json!({"type": "subscribed", "id": id, "recovered": recovered}))
                    }
                    Err(e) => error(e),
                }
            }
            "unsubscribe" => match msg.get("id").and_then(Value::as_str).and_then(|id| {
                self.last.remove(id);
                self.subs.remove(id).map(|_| id)
            }) {
                Some(id) => Some(json!({"type": "unsubscribed", "id": id})),
                None => error("no such subscription".into()),
            },
            "publish" => {
                let (Some(topic), Some(ty)) = (
                    msg.get("topic").and_then(Value::as_str),
                    msg.get("type").and_then(Value::as_str),
                ) else {
                    return error("publish needs string 'topic' and 'type'".into());
                };
                let data = msg.get("data").cloned().unwrap_or(Value::Null).to_string();
                let origin = msg.get("origin").and_then(Value::as_u64).unwrap_or(0);
                let correlation = msg.get("correlation_id").and_then(Value::as_str);
                let topic = self.grants.internal(topic);
                if let Err(d) = self.grants.check_publish(&topic) {
                    return error(denial(&d));
                }
                match broker.publisher(&topic).and_then(|p| {
                    p.publish(
                        ty,
                        data.as_bytes(),
                        PublishOptions {
                            origin,
                            correlation,
                        },
                    )
                }) {
                    Ok(p) => Some(
                        json!({"type": "published", "ref": reference, "seq": p.seq, "topic_seq": p.topic_seq}),
                    ),
                    Err(e) => error(e.to_string()),
                }
            }
            "ack" => {
                let (Some(consumer), Some(seq)) = (
                    msg.get("consumer").and_then(Value::as_str),
                    msg.get("seq").and_then(Value::as_u64),
                ) else {
                    return error("ack needs string 'consumer' and integer 'seq'".into());
                };
                match broker.ack_consumer(&self.grants.internal(consumer), seq) {
                    Ok(()) => Some(
                        json!({"type": "acked", "ref": reference, "consumer": consumer, "seq": seq}),
                    ),
                    Err(e) => error(e.to_string()),
                }
            }
            "" => error("missing 'op'".into()),
            other => error(format!("unknown op {other:?}")),
        }
    }
}

/// Builds a subscription from a `subscribe` message; `recovered` tells the
/// client whether it resumes from a past position.
fn subscribe(
    broker: &Broker,
    msg: &Value,
    grants: &Grants,
) -> Result<(Subscription, bool), String> {
    let names: Vec<String> = match (
        msg.get("topic").and_then(Value::as_str),
        msg.get("topics").and_then(Value::as_array),
    ) {
        (Some(t), None) => vec![grants.internal(t)],
        (None, Some(list)) => {
            let names: Vec<String> = list
                .iter()
                .filter_map(Value::as_str)
                .map(|t| grants.internal(t))
                .collect();
            if names.len() != list.len() || names.is_empty() {
                return Err("'topics' must be a non-empty array of strings".into());
            }
            names
        }
        _ => {
            return Err("subscribe needs 'topic' (a name) or 'topics' (names and patterns)".into())
        }
    };
    for n in &names {
        grants.check_subscribe(n).map_err(|d| denial(&d))?;
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let filter = match msg.get("topic") {
        Some(_) => Filter::topic(refs[0]),
        None => Filter::patterns(&refs),
    }
    .map_err(|e| e.to_string())?;
    let single = msg.get("topic").is_some();
    let filter = match msg.get("types").and_then(Value::as_array) {
        Some(types) => {
            filter.with_types(&types.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        }
        None => filter,
    };
    let filter = match msg.get("exclude_origin").and_then(Value::as_u64) {
        Some(o) => filter.excluding_origin(o),
        None => filter,
    };
    let num = |k: &str| msg.get(k).and_then(Value::as_u64);
    let start = match (num("after"), num("since"), num("last")) {
        (Some(a), _, _) if single => StartAt::TopicSeq(a + 1),
        (Some(a), _, _) => StartAt::Seq(a + 1),
        (None, Some(ts), _) => StartAt::Time(ts),
        (None, None, Some(n)) => StartAt::LastN(n),
        _ => StartAt::Now,
    };
    let recovered = start != StartAt::Now;
    let sub = match msg.get("consumer").and_then(Value::as_str) {
        Some(name) => broker
            .subscribe_consumer(&grants.internal(name), filter, start)
            .map(|s| (s, true)),
        None => broker.subscribe(filter, start).map(|s| (s, recovered)),
    };
    sub.map_err(|e| e.to_string())
}

/// An event or gap as the WebSocket message of subscription `id`.
fn denial(d: &crate::auth::Denied) -> String {
    match d {
        crate::auth::Denied::Unauthenticated(m) | crate::auth::Denied::Forbidden(m) => m.clone(),
    }
}

fn ws_delivery(id: &str, d: &DeliveryRef<'_>, prefix_len: usize) -> Value {
    match d {
        DeliveryRef::Event(e) => {
            let mut out = json!({"type": "event", "sub": id});
            if let Value::Object(fields) = event_json(e, prefix_len) {
                for (k, val) in fields {
                    // `type` names the message; the event's own type is `event_type`.
                    let key = if k == "type" {
                        "event_type".to_owned()
                    } else {
                        k
                    };
                    out[key] = val;
                }
            }
            out
        }
        DeliveryRef::Gap(g) => {
            let mut v = gap_json(g, prefix_len)["gap"].clone();
            v["type"] = json!("gap");
            v["sub"] = json!(id);
            v
        }
    }
}
