//! Feeds arbitrary text to the decoders of client operations: WebSocket
//! messages and the HTTP bodies (publish, ack, presence).
//!
//! The first byte picks the decoder, the rest is the text. The WebSocket
//! and HTTP decoders' fast path for plain publishes must read a message or
//! body exactly as the general decoders do. What a decoder
//! accepts is compared with serde_json's own reading of the same text: the
//! echoed `op` and `ref`, every decoded field, raw payloads (which must
//! parse to the same JSON), batch bounds, and the start position a
//! subscription's selection maps to.
#![no_main]

use herald_core::StartAt;
use herald_server::fuzzing::{self, PublishEvent, WsOp};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const PATH_TOPIC: &str = "orders.42";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => ws(rest),
        1 => publish_body(rest),
        2 => ack_body(rest),
        _ => presence_bodies(rest),
    }
});

/// The text as a JSON object, when serde_json reads it as one. (Numbers
/// beyond f64 make serde_json's `Value` refuse text that the decoders, which
/// keep payloads raw, accept: such inputs are compared no further.)
fn as_object(text: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn is_json(text: &[u8]) -> bool {
    serde_json::from_slice::<Box<serde_json::value::RawValue>>(text).is_ok()
}

fn str_field(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::to_owned)
}

/// An optional field: absent and `null` both mean "none".
fn opt(m: &Map<String, Value>, k: &str) -> Value {
    m.get(k).cloned().unwrap_or(Value::Null)
}

fn check_event(e: &PublishEvent, m: &Map<String, Value>, topic: Option<&str>) {
    let want_topic = topic.map(str::to_owned).or_else(|| str_field(m, "topic"));
    assert_eq!(Some(&e.topic), want_topic.as_ref());
    assert_eq!(Some(&e.event_type), str_field(m, "type").as_ref());
    let data = e.data.as_deref().map_or(Value::Null, |raw| {
        serde_json::from_str(raw).expect("a raw payload is valid JSON")
    });
    assert_eq!(data, opt(m, "data"));
    assert_eq!(
        e.origin.map(Value::from).unwrap_or(Value::Null),
        opt(m, "origin")
    );
    assert_eq!(
        e.correlation_id
            .clone()
            .map(Value::from)
            .unwrap_or(Value::Null),
        opt(m, "correlation_id")
    );
}

fn ws(text: &[u8]) {
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    assert!(fuzzing::decoders_agree(text), "fast path disagrees on {text:?}");
    let (op, reference, decoded) = fuzzing::decode_ws(text);
    if op.is_some() || decoded.is_ok() {
        assert!(is_json(text.as_bytes()), "accepted non-JSON {text:?}");
    }
    let Some(m) = as_object(text.as_bytes()) else {
        return;
    };
    assert_eq!(op, str_field(&m, "op"), "echoed op");
    assert_eq!(reference, opt(&m, "ref"), "echoed ref");
    let Ok(decoded) = decoded else {
        return;
    };
    let op = op.expect("an accepted message has an op");
    match decoded {
        WsOp::Publish(batch, events, key) => {
            assert_eq!(op, "publish");
            assert_eq!(key, str_field(&m, "idempotency_key"));
            if let Some(key) = &key {
                assert!((1..=128).contains(&key.len()));
                assert!(key.bytes().all(|c| c.is_ascii_graphic()));
            }
            assert_eq!(batch, m.contains_key("events"));
            if batch {
                let list = m["events"].as_array().expect("events is a list");
                assert!((1..=1000).contains(&events.len()));
                assert_eq!(list.len(), events.len());
                for (e, v) in events.iter().zip(list) {
                    check_event(e, v.as_object().expect("an event is an object"), None);
                }
            } else {
                check_event(&events[0], &m, None);
            }
        }
        WsOp::Subscribe { id, topics, start } => {
            assert_eq!(op, "subscribe");
            assert_eq!(Some(id.clone()), str_field(&m, "id"));
            let Ok(start) = start else {
                return;
            };
            assert!((1..=128).contains(&id.len()));
            let single = !opt(&m, "topic").is_null();
            assert!(single != !opt(&m, "topics").is_null(), "topic xor topics");
            assert!(!topics.is_empty() && topics.len() <= 32);
            let types = m.get("types").and_then(Value::as_array).map_or(0, Vec::len);
            assert!(types <= 32);
            let num = |k: &str| m.get(k).and_then(Value::as_u64);
            let want = match (num("after"), num("since"), num("last")) {
                (Some(a), _, _) if single => StartAt::TopicSeq(a + 1),
                (Some(a), _, _) => StartAt::Seq(a + 1),
                (None, Some(t), _) => StartAt::Time(t),
                (None, None, Some(n)) => StartAt::LastN(n),
                (None, None, None) => StartAt::Now,
            };
            assert_eq!(start, want);
        }
        WsOp::Unsubscribe(id) => {
            assert_eq!(op, "unsubscribe");
            assert_eq!(Some(id), str_field(&m, "id"));
        }
        WsOp::Ack(consumer, seq, seqs) => {
            assert_eq!(op, "ack");
            assert_eq!(Some(consumer), str_field(&m, "consumer"));
            assert_eq!(seq, m.get("seq").and_then(Value::as_u64));
            assert_eq!(seqs, u64_list(&m, "seqs"));
        }
        WsOp::Heartbeat(topic, client, user, device, metadata) => {
            assert_eq!(op, "heartbeat");
            assert_eq!(Some(topic), str_field(&m, "topic"));
            assert_eq!(Some(client), str_field(&m, "client_id"));
            assert_eq!(
                user.map(Value::from).unwrap_or(Value::Null),
                opt(&m, "user")
            );
            assert_eq!(
                device.map(Value::from).unwrap_or(Value::Null),
                opt(&m, "device")
            );
            assert_eq!(metadata, opt(&m, "metadata"));
        }
        WsOp::Leave(topic, client) => {
            assert_eq!(op, "leave");
            assert_eq!(Some(topic), str_field(&m, "topic"));
            assert_eq!(Some(client), str_field(&m, "client_id"));
        }
        WsOp::Presence(topic) => {
            assert_eq!(op, "presence");
            assert_eq!(Some(topic), str_field(&m, "topic"));
        }
        WsOp::Ping => {
            assert_eq!(op, "ping");
            assert!(m.keys().all(|k| k == "op" || k == "ref"));
        }
        WsOp::Consumers => {
            assert_eq!(op, "consumers");
            assert!(m.keys().all(|k| k == "op" || k == "ref"));
        }
        WsOp::Auth(token) => {
            assert_eq!(op, "auth");
            assert_eq!(Some(token), str_field(&m, "token"));
        }
    }
}

fn publish_body(body: &[u8]) {
    assert!(
        fuzzing::body_decoders_agree(body, PATH_TOPIC),
        "fast path disagrees on {body:?}"
    );
    let Ok((batch, events)) = fuzzing::publish_body(body, PATH_TOPIC) else {
        return;
    };
    assert!(is_json(body));
    let text = std::str::from_utf8(body).expect("accepted bodies are UTF-8");
    assert_eq!(batch, text.trim_start().starts_with('['));
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let objects: Vec<&Map<String, Value>> = match &value {
        Value::Array(list) => list
            .iter()
            .map(|v| v.as_object().expect("an object"))
            .collect(),
        Value::Object(m) => vec![m],
        other => panic!("accepted a publish body {other:?}"),
    };
    assert_eq!(objects.len(), events.len());
    assert!((1..=1000).contains(&events.len()));
    for (e, m) in events.iter().zip(objects) {
        assert!(!m.contains_key("topic"), "the path names the topic");
        check_event(e, m, Some(PATH_TOPIC));
    }
}

fn ack_body(body: &[u8]) {
    let Ok((consumer, seq, seqs)) = fuzzing::ack_body(body, "c-1") else {
        return;
    };
    assert_eq!(consumer, "c-1");
    assert!(is_json(body));
    if let Some(m) = as_object(body) {
        assert!(!m.contains_key("consumer"), "the path names the consumer");
        assert_eq!(seq, m.get("seq").and_then(Value::as_u64));
        assert_eq!(seqs, u64_list(&m, "seqs"));
        assert!(
            m.keys().all(|k| k == "seq" || k == "seqs"),
            "unknown fields are refused"
        );
    }
}

/// A field holding a list of u64 (`None`: absent or null).
fn u64_list(m: &Map<String, Value>, key: &str) -> Option<Vec<u64>> {
    let list = m.get(key)?.as_array()?;
    Some(list.iter().map(|v| v.as_u64().expect("decoded as u64")).collect())
}

fn presence_bodies(body: &[u8]) {
    let (heartbeat, leave) = fuzzing::presence_bodies(body);
    for (topic, client) in heartbeat.iter().chain(leave.iter()) {
        assert!(is_json(body));
        let Some(m) = as_object(body) else {
            continue;
        };
        assert_eq!(Some(topic), str_field(&m, "topic").as_ref());
        assert_eq!(Some(client), str_field(&m, "client_id").as_ref());
    }
    if leave.is_ok() {
        // Leave's fields are a subset of heartbeat's, all required in both.
        assert!(heartbeat.is_ok());
    }
}
