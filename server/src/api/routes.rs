//! Which endpoint a request names, and the answers that need no streaming.
//! The protocol is specified in `docs/PROTOCOL.md`.

use herald_core::broker::{BrokerError, Filter, PublishOptions, StartAt};
use herald_core::Broker;
use serde_json::{json, Value};

use crate::api::auth::{Denied, Grants};
use crate::api::presence;
use crate::metrics::{render_metrics, ServerStats};
use crate::wire::http::{error_response, response, Request};

/// What the worker must do with a request.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send these bytes.
    Respond(Vec<u8>),
    /// Switch the connection to an event stream.
    Stream(StreamRequest),
    /// Hold the request until an event arrives or the wait ends.
    LongPoll {
        filter: Filter,
        start: StartAt,
        limit: usize,
        wait_ms: u64,
        topic_ids: bool,
        prefix_len: usize,
    },
}

/// A Server-Sent Events stream to open.
#[derive(Debug)]
pub(crate) struct StreamRequest {
    pub(crate) filter: Filter,
    pub(crate) start: StartAt,
    /// `id:` carries the topic sequence (single-topic streams).
    pub(crate) topic_ids: bool,
    /// Tenant prefix to strip from topic names sent back.
    pub(crate) prefix_len: usize,
}

/// Most events one poll returns.
pub(crate) const MAX_POLL_LIMIT: usize = 1000;
/// Longest long-poll wait.
pub(crate) const MAX_WAIT_MS: u64 = 60_000;

fn json_ok(v: &Value, keep_alive: bool) -> Vec<u8> {
    response(
        200,
        "OK",
        "application/json",
        v.to_string().as_bytes(),
        keep_alive,
    )
}

fn broker_error(e: &BrokerError, keep_alive: bool) -> Vec<u8> {
    let (status, reason) = match e {
        BrokerError::Log(_) | BrokerError::Io { .. } | BrokerError::Checkpoint(_) => {
            (500, "Internal Server Error")
        }
        BrokerError::UnknownConsumer(_) => (404, "Not Found"),
        BrokerError::PayloadTooLarge { .. } => (413, "Payload Too Large"),
        _ => (400, "Bad Request"),
    };
    error_response(status, reason, &e.to_string(), keep_alive)
}

fn bad(message: &str, keep_alive: bool) -> Action {
    Action::Respond(error_response(400, "Bad Request", message, keep_alive))
}

/// The answer to a refused request.
pub(crate) fn denied(d: &Denied, keep_alive: bool) -> Vec<u8> {
    match d {
        Denied::Unauthenticated(m) => error_response(401, "Unauthorized", m, keep_alive),
        Denied::Forbidden(m) => error_response(403, "Forbidden", m, keep_alive),
    }
}

/// Routes `req`.
pub(crate) fn route(
    broker: &Broker,
    req: &Request,
    grants: &Grants,
    stats: &ServerStats,
) -> Action {
    let ka = req.keep_alive;
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["healthz"]) => Action::Respond(response(200, "OK", "text/plain", b"ok\n", ka)),
        ("GET", ["readyz"]) => Action::Respond(response(200, "OK", "text/plain", b"ready\n", ka)),
        ("GET", ["metrics"]) => Action::Respond(response(
            200,
            "OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render_metrics(&broker.metrics(), stats).as_bytes(),
            ka,
        )),
        ("POST", ["v1", "topics", topic, "events"]) => {
            let internal = grants.internal(topic);
            if let Err(d) = grants.check_publish(&internal) {
                return Action::Respond(denied(&d, ka));
            }
            publish(broker, &internal, req)
        }
        ("GET", ["v1", "topics", topic, "events"]) => {
            let internal = grants.internal(topic);
            if let Err(d) = grants.check_subscribe(&internal) {
                return Action::Respond(denied(&d, ka));
            }
            events(req, Filter::topic(&internal), true, grants.prefix_len())
        }
        ("GET", ["v1", "events"]) => {
            let Some(topics) = req.query_param("topics") else {
                return bad(
                    "missing the 'topics' query parameter (comma-separated topics or patterns)",
                    ka,
                );
            };
            let patterns: Vec<String> = topics
                .split(',')
                .filter(|t| !t.is_empty())
                .map(|t| grants.internal(t))
                .collect();
            for p in &patterns {
                if let Err(d) = grants.check_subscribe(p) {
                    return Action::Respond(denied(&d, ka));
                }
            }
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            events(req, Filter::patterns(&refs), false, grants.prefix_len())
        }
        ("POST", ["v1", "consumers", name, "ack"]) => ack(broker, &grants.internal(name), req),
        ("GET", ["v1", "topics", topic, "presence"]) => {
            match presence::list(broker, grants, topic) {
                Ok(v) => Action::Respond(json_ok(&v, ka)),
                Err(d) => Action::Respond(denied(&d, ka)),
            }
        }
        ("POST", ["v1", "presence", op @ ("heartbeat" | "leave")]) => {
            presence(broker, op, req, grants)
        }
        (_, ["healthz" | "readyz" | "metrics"])
        | (_, ["v1", "topics", _, "events" | "presence"])
        | (_, ["v1", "events"])
        | (_, ["v1", "presence", "heartbeat" | "leave"]) => Action::Respond(error_response(
            405,
            "Method Not Allowed",
            "method not allowed",
            ka,
        )),
        _ => Action::Respond(error_response(404, "Not Found", "no such endpoint", ka)),
    }
}

fn publish(broker: &Broker, topic: &str, req: &Request) -> Action {
    let ka = req.keep_alive;
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return bad(&format!("body is not JSON: {e}"), ka),
    };
    let Some(event_type) = body.get("type").and_then(Value::as_str) else {
        return bad("body needs a string 'type'", ka);
    };
    let data = body.get("data").cloned().unwrap_or(Value::Null).to_string();
    let origin = match body.get("origin") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(o) => o,
            None => return bad("'origin' must be an unsigned integer", ka),
        },
    };
    let correlation = match body.get("correlation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return bad("'correlation_id' must be a string", ka),
    };
    let result = broker.publisher(topic).and_then(|p| {
        p.publish(
            event_type,
            data.as_bytes(),
            PublishOptions {
                origin,
                correlation,
            },
        )
    });
    match result {
        Ok(p) => Action::Respond(json_ok(
            &json!({ "seq": p.seq, "topic_seq": p.topic_seq }),
            ka,
        )),
        Err(e) => Action::Respond(broker_error(&e, ka)),
    }
}

/// GET events: SSE stream if the client accepts `text/event-stream`,
/// otherwise a poll.
fn events(
    req: &Request,
    filter: Result<Filter, BrokerError>,
    single: bool,
    prefix_len: usize,
) -> Action {
    let ka = req.keep_alive;
    let filter = match filter {
        Ok(f) => f,
        Err(e) => return Action::Respond(broker_error(&e, ka)),
    };
    let filter = match req.query_param("types") {
        Some(types) => filter.with_types(
            &types
                .split(',')
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>(),
        ),
        None => filter,
    };
    let filter = match req.query_param("exclude_origin").map(|o| o.parse::<u64>()) {
        None => filter,
        Some(Ok(o)) => filter.excluding_origin(o),
        Some(Err(_)) => return bad("'exclude_origin' must be an unsigned integer", ka),
    };
    let num = |name: &str| -> Result<Option<u64>, Action> {
        match req.query_param(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad(&format!("'{name}' must be an unsigned integer"), ka)),
        }
    };
    let sse = req
        .header("accept")
        .is_some_and(|a| a.contains("text/event-stream"));
    // Resume positions: `after` / `Last-Event-ID` are the last sequence the
    // client has (topic sequences on single-topic endpoints, global otherwise).
    // `Last-Event-ID` wins: a browser's EventSource reconnects to the same
    // URL (with its `after`, `since` or `last`) and adds the header.
    let after = match num("after") {
        Ok(a) => a,
        Err(a) => return a,
    };
    let after = match req.header("last-event-id").map(|v| v.trim().parse::<u64>()) {
        Some(Ok(id)) if sse => Some(id),
        Some(Err(_)) if sse => return bad("Last-Event-ID must be a sequence number", ka),
        _ => after,
    };
    let since = match num("since") {
        Ok(s) => s,
        Err(a) => return a,
    };
    let last = match num("last") {
        Ok(s) => s,
        Err(a) => return a,
    };
    let after = match after.map(|a| a.checked_add(1)) {
        Some(None) => return bad("'after' / Last-Event-ID is out of range", ka),
        Some(Some(next)) => Some(next),
        None => None,
    };
    let start = match (after, since, last) {
        (Some(a), _, _) if single => StartAt::TopicSeq(a),
        (Some(a), _, _) => StartAt::Seq(a),
        (None, Some(ts), _) => StartAt::Time(ts),
        (None, None, Some(n)) => StartAt::LastN(n),
        (None, None, None) if sse => StartAt::Now,
        (None, None, None) if single => StartAt::TopicSeq(1),
        (None, None, None) => StartAt::Seq(1),
    };
    if sse {
        return Action::Stream(StreamRequest {
            filter,
            start,
            topic_ids: single,
            prefix_len,
        });
    }
    let limit = match num("limit") {
        Ok(l) => l.unwrap_or(100).clamp(1, MAX_POLL_LIMIT as u64) as usize,
        Err(a) => return a,
    };
    let wait_ms = match num("wait") {
        Ok(w) => w.unwrap_or(0).min(MAX_WAIT_MS),
        Err(a) => return a,
    };
    Action::LongPoll {
        filter,
        start,
        limit,
        wait_ms,
        topic_ids: single,
        prefix_len,
    }
}

/// `POST /v1/presence/heartbeat` (joins if new) and `/v1/presence/leave`.
fn presence(broker: &Broker, op: &str, req: &Request, grants: &Grants) -> Action {
    let ka = req.keep_alive;
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return bad(&format!("body is not JSON: {e}"), ka),
    };
    let update = if op == "leave" {
        presence::leave(broker, grants, &body)
    } else {
        presence::heartbeat(broker, grants, &body)
    };
    match update {
        Ok((_, v)) => Action::Respond(json_ok(&v, ka)),
        Err(presence::Refused::Bad(m)) => bad(&m, ka),
        Err(presence::Refused::Denied(d)) => Action::Respond(denied(&d, ka)),
        Err(presence::Refused::Broker(e)) => Action::Respond(broker_error(&e, ka)),
    }
}

fn ack(broker: &Broker, name: &str, req: &Request) -> Action {
    let ka = req.keep_alive;
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return bad(&format!("body is not JSON: {e}"), ka),
    };
    let Some(seq) = body.get("seq").and_then(Value::as_u64) else {
        return bad(
            "body needs an unsigned integer 'seq' (global sequence acknowledged up to)",
            ka,
        );
    };
    match broker.ack_consumer(name, seq) {
        Ok(()) => Action::Respond(json_ok(&json!({ "consumer": name, "checkpoint": seq }), ka)),
        Err(e) => Action::Respond(broker_error(&e, ka)),
    }
}
