//! WebSocket connections (RFC 6455 via tungstenite on the non-blocking
//! socket) and their JSON messages, specified in `docs/PROTOCOL.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::TcpStream as StdTcpStream;

use herald_core::broker::{Filter, PublishOptions, StartAt, Subscription};
use herald_core::Broker;
use serde_json::{json, Value};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::api::auth::Grants;
use crate::api::presence;
use crate::conn::output::Output;
use crate::fanout::{Encoding, Router, StreamId};
use crate::wire::http::Request;

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

/// tungstenite's stream: reads come from the socket; writes land in a
/// buffer that the worker moves into the connection's output, behind or
/// between the event frames that it writes itself.
struct Duplex {
    /// The connection's socket, borrowed: the worker's `TcpStream` owns and
    /// closes it (see `websocket_over`).
    socket: ManuallyDrop<StdTcpStream>,
    written: Vec<u8>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What handling a client's messages needs from the worker.
pub(crate) struct WsContext<'a> {
    pub(crate) broker: &'a Broker,
    pub(crate) router: &'a mut Router,
    /// The connection's index in its worker.
    pub(crate) conn: usize,
    pub(crate) out: &'a mut Output,
}

/// One WebSocket connection's protocol state. Its subscriptions are streams
/// of the worker's router, which writes their event frames.
pub(crate) struct WsConn {
    ws: WebSocket<Duplex>,
    /// Subscription ids and their streams.
    subs: BTreeMap<String, StreamId>,
    closing: bool,
    grants: Grants,
    /// Presence sessions joined over this connection: left when it closes.
    joined: BTreeSet<presence::Session>,
}

/// What a read left the connection in.
pub(crate) enum WsStatus {
    Open,
    /// Close once the output (a close frame last) is written.
    Closed,
}

impl WsConn {
    /// Wraps `socket` (already upgraded, non-blocking).
    pub(crate) fn new(
        socket: ManuallyDrop<StdTcpStream>,
        already_read: Vec<u8>,
        grants: Grants,
    ) -> WsConn {
        // A small read buffer: tungstenite allocates it whole per connection
        // (128 KiB by default) and grows it for larger messages as needed.
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE))
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let duplex = Duplex {
            socket,
            written: Vec::new(),
        };
        let ws = WebSocket::from_partially_read(duplex, already_read, Role::Server, Some(config));
        WsConn {
            ws,
            subs: BTreeMap::new(),
            closing: false,
            grants,
            joined: BTreeSet::new(),
        }
    }

    /// The streams of this connection's subscriptions.
    pub(crate) fn streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.subs.values().copied()
    }

    /// Forgets the streams (the router no longer has them) and leaves the
    /// presence sessions joined over this connection (the connection is
    /// closing).
    pub(crate) fn retire(&mut self, broker: &Broker) {
        self.subs.clear();
        for (topic, client_id) in std::mem::take(&mut self.joined) {
            if let Err(e) = broker.presence_leave(&topic, &client_id) {
                tracing::warn!("presence leave on close failed: {e}");
            }
        }
    }

    /// Reads and answers every message available.
    pub(crate) fn on_readable(&mut self, cx: &mut WsContext<'_>) -> WsStatus {
        let status = loop {
            match self.ws.read() {
                // After our close frame, messages are read and dropped.
                Ok(Message::Text(_) | Message::Binary(_)) if self.closing => {}
                Ok(Message::Text(text)) => {
                    if let Some(reply) = self.handle(cx, text.as_str()) {
                        self.send(reply);
                    }
                }
                Ok(Message::Binary(_)) => self.send(json!({"type": "error", "message": "binary messages are not supported: send JSON text"})),
                Ok(_) => {} // ping/pong/close handled by tungstenite
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = self.ws.flush();
                    break if self.closing { WsStatus::Closed } else { WsStatus::Open };
                }
                Err(WsError::Capacity(e)) => break self.close_with(1009, &format!("message too big: {e}")),
                Err(WsError::Utf8(_)) => break self.close_with(1007, "invalid UTF-8 in a text message"),
                Err(WsError::Protocol(e)) => break self.close_with(1002, &format!("protocol error: {e}")),
                Err(_) => break WsStatus::Closed,
            }
            self.drain(cx.out);
        };
        self.drain(cx.out);
        status
    }

    /// Moves what tungstenite wrote into the connection's output.
    fn drain(&mut self, out: &mut Output) {
        let written = &mut self.ws.get_mut().written;
        if !written.is_empty() {
            out.extend(written);
            written.clear();
        }
    }

    fn close_with(&mut self, code: u16, reason: &str) -> WsStatus {
        // A close frame's reason is at most 123 bytes.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame {
            code: code.into(),
            reason: reason[..end].to_owned().into(),
        };
        let _ = self.ws.close(Some(frame));
        let _ = self.ws.flush();
        self.closing = true;
        WsStatus::Closed
    }

    /// Closes a client too slow to drain its output (code 4008). The reason
    /// names, per subscription, the last global and topic sequence sent, so
    /// that a reconnect resumes with `after` exactly. What is still unsent
    /// is dropped: the close frame must get through.
    pub(crate) fn close_slow(&mut self, router: &Router, out: &mut Output) {
        let mut reason = String::from("slow consumer; last sent");
        for (id, stream) in &self.subs {
            let (seq, topic_seq) = router.last(*stream);
            reason.push_str(&format!(" {id}={seq}/{topic_seq}"));
        }
        self.close_and_drain(4008, &reason, out);
    }

    /// Sends a close frame with `code` (e.g. 1001 on shutdown).
    pub(crate) fn close_and_drain(&mut self, code: u16, reason: &str, out: &mut Output) {
        let _ = self.close_with(code, reason);
        self.drain(out);
    }

    fn send(&mut self, v: Value) {
        // Writes into `Duplex`, which never refuses.
        if self.ws.send(Message::text(v.to_string())).is_err() {
            self.closing = true;
        }
    }

    fn handle(&mut self, cx: &mut WsContext<'_>, text: &str) -> Option<Value> {
        let broker = cx.broker;
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
                        let prefix_len = self.grants.prefix_len();
                        let stream = cx.router.add(cx.conn, sub, Encoding::ws(id), prefix_len);
                        self.subs.insert(id.to_owned(), stream);
                        Some(json!({"type": "subscribed", "id": id, "recovered": recovered}))
                    }
                    Err(e) => error(e),
                }
            }
            "unsubscribe" => match msg.get("id").and_then(Value::as_str).and_then(|id| {
                let stream = self.subs.remove(id)?;
                cx.router.remove(stream);
                Some(id)
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
            "heartbeat" | "leave" => {
                let update = if op == "leave" {
                    presence::leave(broker, &self.grants, &msg)
                } else {
                    presence::heartbeat(broker, &self.grants, &msg)
                };
                match update {
                    Ok((session, mut v)) => {
                        v["ref"] = reference;
                        if op == "leave" {
                            self.joined.remove(&session);
                            v["type"] = json!("left");
                        } else {
                            // Only sessions this connection started end
                            // with it (a refresh may be another's).
                            if v["joined"] == true && self.joined.len() < MAX_SUBSCRIPTIONS {
                                self.joined.insert(session);
                            }
                            v["type"] = json!("heartbeat");
                        }
                        Some(v)
                    }
                    Err(presence::Refused::Bad(m)) => error(m),
                    Err(presence::Refused::Denied(d)) => error(denial(&d)),
                    Err(presence::Refused::Broker(e)) => error(e.to_string()),
                }
            }
            "presence" => {
                let Some(topic) = msg.get("topic").and_then(Value::as_str) else {
                    return error("presence needs a string 'topic'".into());
                };
                match presence::list(broker, &self.grants, topic) {
                    Ok(mut v) => {
                        v["type"] = json!("presence");
                        v["ref"] = reference;
                        Some(v)
                    }
                    Err(d) => error(denial(&d)),
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
    let after = match num("after") {
        Some(a) => Some(a.checked_add(1).ok_or("'after' is out of range")?),
        None => None,
    };
    let start = match (after, num("since"), num("last")) {
        (Some(a), _, _) if single => StartAt::TopicSeq(a),
        (Some(a), _, _) => StartAt::Seq(a),
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

fn denial(d: &crate::api::auth::Denied) -> String {
    match d {
        crate::api::auth::Denied::Unauthenticated(m) | crate::api::auth::Denied::Forbidden(m) => {
            m.clone()
        }
    }
}
