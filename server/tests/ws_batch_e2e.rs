//! Batched delivery over WebSocket (`subscribe` with `batch`): `events`
//! messages with the same events, positions and gaps as one message per
//! event would carry.

mod common;

use std::time::{Duration, Instant};

use common::{test_config, ws_connect, ws_recv, ws_send, Ws};
use herald_server::Server;
use serde_json::{json, Value};

fn connect(server: &Server) -> Ws {
    ws_connect(&format!("ws://{}/v1/ws", server.local_addr()))
}

fn subscribe(ws: &mut Ws, topic: &str, batch: Value) {
    ws_send(
        ws,
        json!({"op": "subscribe", "id": "b", "topic": topic, "batch": batch}),
    );
    assert_eq!(
        ws_recv(ws),
        json!({"type": "subscribed", "id": "b", "recovered": false})
    );
}

/// The events of one `events` message (every message here must be one).
fn batch_of(m: &Value) -> Vec<Value> {
    assert_eq!(m["type"], "events", "{m}");
    assert_eq!(m["sub"], "b", "{m}");
    let events = m["events"].as_array().unwrap().clone();
    assert!(!events.is_empty(), "an empty batch: {m}");
    events
}

#[test]
fn events_arrive_in_batches_in_order_with_the_fields_of_single_events() {
    const N: u64 = 95;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(test_config(dir.path(), 2)).unwrap();
    let mut ws = connect(&server);
    subscribe(
        &mut ws,
        "feed",
        json!({"max_events": 10, "max_delay_ms": 1000}),
    );
    // A subscriber without batches, for comparison.
    let mut single = connect(&server);
    ws_send(
        &mut single,
        json!({"op": "subscribe", "id": "b", "topic": "feed"}),
    );
    assert_eq!(ws_recv(&mut single)["type"], "subscribed");
    let publisher = server.broker().publisher("feed").unwrap();
    for i in 1..=N {
        let options = herald_core::broker::PublishOptions {
            correlation: Some("c-1"),
            ..Default::default()
        };
        publisher
            .publish("tick", i.to_string().as_bytes(), options)
            .unwrap();
    }
    let mut got = Vec::new();
    let mut messages = 0;
    while got.len() < N as usize {
        let events = batch_of(&ws_recv(&mut ws));
        assert!(events.len() <= 10, "over max_events: {}", events.len());
        messages += 1;
        got.extend(events);
    }
    assert_eq!(got.len(), N as usize);
    assert!(
        messages <= N as usize / 5,
        "{messages} messages for {N} events: not batched"
    );
    for (i, e) in got.iter().enumerate() {
        let k = i as u64 + 1;
        assert_eq!(e["topic_seq"], k, "{e}");
        assert_eq!(e["data"], k, "{e}");
        // Exactly the fields of the `event` message, without type and sub.
        let mut one = ws_recv(&mut single);
        assert_eq!(one["type"], "event");
        let one = one.as_object_mut().unwrap();
        one.remove("type");
        one.remove("sub");
        assert_eq!(e, &Value::Object(one.clone()));
        assert_eq!(e["correlation_id"], "c-1");
    }
    let metrics = common::exchange_raw(
        &server,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    let line = format!("herald_server_ws_batches_total {messages}\n");
    assert!(metrics.contains(&line), "no {line:?} in {metrics}");
    server.shutdown().unwrap();
}

#[test]
fn a_lone_event_waits_at_most_max_delay() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(test_config(dir.path(), 1)).unwrap();
    let publisher = server.broker().publisher("slowfeed").unwrap();
    for delay_ms in [0u64, 150] {
        let mut ws = connect(&server);
        subscribe(
            &mut ws,
            "slowfeed",
            json!({"max_events": 1000, "max_delay_ms": delay_ms}),
        );
        let sent = Instant::now();
        let p = publisher.publish("tick", b"1", Default::default()).unwrap();
        let events = batch_of(&ws_recv(&mut ws));
        let waited = sent.elapsed();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["topic_seq"], p.topic_seq);
        // It waited for company, but not (much) longer than asked.
        assert!(
            waited >= Duration::from_millis(delay_ms),
            "{delay_ms} ms asked, {waited:?} waited"
        );
        assert!(
            waited < Duration::from_millis(delay_ms + 1000),
            "{delay_ms} ms asked, {waited:?} waited"
        );
    }
    server.shutdown().unwrap();
}

#[test]
fn a_gap_between_batches_keeps_positions_in_order() {
    const FIRST: u64 = 50;
    const N: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 1);
    config.broker.ring_capacity = 1 << 21;
    config.max_body = 1 << 18;
    config.max_output = 4096;
    config.slow_client_deadline = Duration::from_secs(60);
    // About 8 MiB of 16 KiB events kept, of 47 MiB: while the client does
    // not read (its socket buffers hold a few MiB), its stream parks and
    // the events after where it stopped are deleted.
    config.broker.log.retention = herald_core::log::Retention {
        max_records: Some(500),
        override_pins: true,
        ..Default::default()
    };
    let server = Server::start(config).unwrap();
    let mut ws = connect(&server);
    subscribe(&mut ws, "r", json!({"max_events": 16, "max_delay_ms": 5}));
    let publisher = server.broker().publisher("r").unwrap();
    let data = format!("\"{}\"", "x".repeat(16 * 1024));
    let publish = |_| {
        publisher
            .publish("big", data.as_bytes(), Default::default())
            .unwrap();
    };
    (1..=FIRST).for_each(publish);
    // Positions received (topic sequences), gaps as their ranges.
    let mut seen: Vec<u64> = Vec::new();
    let mut gaps = Vec::new();
    let mut take = |m: Value, seen: &mut Vec<u64>| match m["type"].as_str() {
        Some("events") => seen.extend(
            batch_of(&m)
                .iter()
                .map(|e| e["topic_seq"].as_u64().unwrap()),
        ),
        Some("gap") => {
            assert_eq!(m["sub"], "b", "{m}");
            let (from, to) = (m["from"].as_u64().unwrap(), m["to"].as_u64().unwrap());
            assert_eq!(m["topic"], "r", "a single-topic stream's gap: {m}");
            gaps.push((seen.len(), from, to));
            seen.extend(from..=to);
        }
        _ => panic!("unexpected message {}", m["type"]),
    };
    while seen.len() < FIRST as usize {
        take(ws_recv(&mut ws), &mut seen);
    }
    // Not reading: the stream parks, and retention deletes past it.
    (FIRST + 1..=N).for_each(publish);
    while seen.last() != Some(&N) {
        take(ws_recv(&mut ws), &mut seen);
    }
    assert_eq!(seen, (1..=N).collect::<Vec<_>>(), "positions out of order");
    assert!(!gaps.is_empty(), "no gap: retention deleted nothing unread");
    let (at, from, to) = gaps[0];
    assert!(at >= FIRST as usize && from > FIRST && to < N, "{gaps:?}");
    server.shutdown().unwrap();
}

#[test]
fn batch_options_out_of_bounds_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(test_config(dir.path(), 1)).unwrap();
    let mut ws = connect(&server);
    for (batch, field) in [
        (
            json!({"max_events": 0, "max_delay_ms": 5}),
            "'batch.max_events'",
        ),
        (
            json!({"max_events": 1001, "max_delay_ms": 5}),
            "'batch.max_events'",
        ),
        (
            json!({"max_events": 5, "max_delay_ms": 1001}),
            "'batch.max_delay_ms'",
        ),
        (json!({"max_events": 5}), "'batch'"),
        (
            json!({"max_events": 5, "max_delay_ms": 0, "x": 1}),
            "'batch",
        ),
        (json!(10), "'batch'"),
    ] {
        ws_send(
            &mut ws,
            json!({"op": "subscribe", "id": "b", "topic": "t", "batch": batch, "ref": 1}),
        );
        let m = ws_recv(&mut ws);
        assert_eq!(m["type"], "error", "{batch}: {m}");
        assert_eq!(m["code"], "invalid", "{batch}: {m}");
        let message = m["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{batch}: {message}");
    }
    // Refused subscriptions hold nothing: the id is still free.
    subscribe(&mut ws, "t", json!({"max_events": 1000, "max_delay_ms": 0}));
    server.shutdown().unwrap();
}
