//! CPU amplification through patterns: connections holding as many
//! subscriptions and wildcard patterns as they may, none matching what is
//! published, must not change what an ordinary subscriber receives. The cost
//! they add per event is measured by `benches/callgrind/count.sh` (not
//! asserted here: timing on a shared machine is noise); this test checks the
//! bounds and that the events arrive exactly.

use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;

use common::test_config;
use herald_server::Server;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// The request layer's bounds (`server/src/api/ops.rs`).
const MAX_SUBSCRIPTIONS: usize = 64;
const MAX_FILTER_TOPICS: usize = 32;
const MAX_CONNECTION_PATTERNS: usize = 256;

type Ws = WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn connect(server: &Server) -> Ws {
    let (ws, _) = tungstenite::connect(format!("ws://{}/v1/ws", server.local_addr())).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    }
    ws
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

fn recv(ws: &mut Ws) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Subscribes `subs` subscriptions of `patterns` wildcard patterns each, none of
/// which matches `ctl.events` (some share its first token, so matching
/// walks past the root).
fn hostile(server: &Server, c: usize, subs: usize, patterns: usize) -> Ws {
    let mut ws = connect(server);
    for s in 0..subs {
        let topics: Vec<String> = (0..patterns)
            .map(|p| match p % 4 {
                0 => format!("ctl.events.h{c}s{s}p{p}.*"),
                1 => format!("ctl.*.h{c}s{s}p{p}.>"),
                2 => format!("*.h{c}s{s}p{p}"),
                _ => format!("h{c}.s{s}.p{p}.>"),
            })
            .collect();
        send(
            &mut ws,
            json!({"op": "subscribe", "id": format!("h{s}"), "topics": topics}),
        );
    }
    for _ in 0..subs {
        let m = recv(&mut ws);
        assert_eq!(m["type"], "subscribed", "{m}");
    }
    ws
}

#[test]
fn hostile_patterns_change_nothing_a_plain_subscriber_receives() {
    let dir = tempfile::tempdir().unwrap();
    // One worker: every connection shares its router.
    let server = Server::start(test_config(dir.path(), 1)).unwrap();

    // Connections at the pattern bound both ways: the most patterns per
    // subscription, and the most subscriptions.
    let wide = MAX_CONNECTION_PATTERNS / MAX_FILTER_TOPICS;
    let mut held: Vec<Ws> = (0..4)
        .map(|c| hostile(&server, c, wide, MAX_FILTER_TOPICS))
        .collect();
    let per_sub = MAX_CONNECTION_PATTERNS / MAX_SUBSCRIPTIONS;
    held.extend((4..8).map(|c| hostile(&server, c, MAX_SUBSCRIPTIONS, per_sub)));

    // Past the bounds: refused, and the connection stays usable.
    let over = &mut held[0];
    send(
        over,
        json!({"op": "subscribe", "id": "more", "topics": ["x.*"]}),
    );
    let m = recv(over);
    assert_eq!(
        (&m["type"], &m["code"]),
        (&json!("error"), &json!("invalid"))
    );
    assert!(
        m["message"]
            .as_str()
            .unwrap()
            .contains("wildcard patterns per connection"),
        "{m}"
    );
    // Plain topics do not count as patterns.
    send(
        over,
        json!({"op": "subscribe", "id": "plain", "topics": ["x.y", "x.z"]}),
    );
    assert_eq!(recv(over)["type"], "subscribed");
    let full = &mut held[4];
    send(full, json!({"op": "subscribe", "id": "more", "topic": "x"}));
    let m = recv(full);
    assert!(
        m["message"]
            .as_str()
            .unwrap()
            .contains("subscriptions per connection"),
        "{m}"
    );
    let mut too_wide = connect(&server);
    let topics: Vec<String> = (0..=MAX_FILTER_TOPICS)
        .map(|i| format!("w.{i}.*"))
        .collect();
    send(
        &mut too_wide,
        json!({"op": "subscribe", "id": "w", "topics": topics}),
    );
    assert_eq!(recv(&mut too_wide)["code"], "invalid");

    let mut control = connect(&server);
    send(
        &mut control,
        json!({"op": "subscribe", "id": "c", "topic": "ctl.events"}),
    );
    assert_eq!(recv(&mut control)["type"], "subscribed");

    let events = 2_000;
    let started = Instant::now();
    let mut publisher = connect(&server);
    for i in 0..events {
        send(
            &mut publisher,
            json!({"op": "publish", "topic": "ctl.events", "type": "tick", "data": i, "ref": i}),
        );
    }
    let mut seqs = Vec::with_capacity(events);
    for i in 0..events {
        let ack = recv(&mut publisher);
        assert_eq!(
            (&ack["type"], &ack["ref"]),
            (&json!("published"), &json!(i))
        );
        seqs.push(ack["seq"].as_u64().unwrap());
    }
    for (i, seq) in seqs.iter().enumerate() {
        let e = recv(&mut control);
        assert_eq!(e["type"], "event", "{e}");
        assert_eq!((&e["data"], e["seq"].as_u64()), (&json!(i), Some(*seq)));
        assert_eq!(e["topic_seq"], i + 1);
    }
    eprintln!(
        "{events} events through {} hostile patterns: {:?} (not asserted)",
        4 * MAX_CONNECTION_PATTERNS + 4 * MAX_SUBSCRIPTIONS * per_sub,
        started.elapsed()
    );

    // The hostile connections got no event: their first message after a
    // ping is the pong.
    for ws in &mut held {
        send(ws, json!({"op": "ping"}));
        assert_eq!(recv(ws)["type"], "pong");
    }
    server.shutdown().unwrap();
}
