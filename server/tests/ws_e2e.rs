//! WebSocket end-to-end tests against a real server, with tungstenite as the client.

mod common;

use common::{test_config, ws_connect, ws_recv, ws_send, Ws};
use herald_server::Server;
use serde_json::{json, Value};
use tungstenite::Message;

fn start(dir: &std::path::Path) -> Server {
    Server::start(test_config(dir, 2)).unwrap()
}

fn connect(server: &Server) -> Ws {
    ws_connect(&format!("ws://{}/v1/ws", server.local_addr()))
}

fn send(ws: &mut Ws, v: Value) {
    ws_send(ws, v)
}

fn recv(ws: &mut Ws) -> Value {
    ws_recv(ws)
}

#[test]
fn subscribe_publish_and_receive_over_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut ws = connect(&server);
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "a", "topic": "room.1"}),
    );
    assert_eq!(
        recv(&mut ws),
        json!({"type": "subscribed", "id": "a", "recovered": false})
    );
    send(
        &mut ws,
        json!({"op": "publish", "topic": "room.1", "type": "msg", "data": {"text": "hi"}, "ref": 7, "correlation_id": "c1"}),
    );
    let mut published = None;
    let mut event = None;
    while published.is_none() || event.is_none() {
        let m = recv(&mut ws);
        match m["type"].as_str().unwrap() {
            "published" => published = Some(m),
            "event" => event = Some(m),
            other => panic!("unexpected {other}: {m}"),
        }
    }
    let (published, event) = (published.unwrap(), event.unwrap());
    assert_eq!(published["ref"], 7);
    assert_eq!(published["topic_seq"], 1);
    assert_eq!(event["sub"], "a");
    assert_eq!(event["event_type"], "msg");
    assert_eq!(event["data"], json!({"text": "hi"}));
    assert_eq!(event["seq"], published["seq"]);
    assert_eq!(event["correlation_id"], "c1");
    send(&mut ws, json!({"op": "ping", "ref": 1}));
    assert_eq!(recv(&mut ws)["type"], "pong");
    // A message larger than the server's read buffer, both ways.
    let big = json!({"big": "y".repeat(7000)});
    send(
        &mut ws,
        json!({"op": "publish", "topic": "room.1", "type": "msg", "data": big, "ref": 8}),
    );
    let (mut acked, mut got) = (false, None);
    while !acked || got.is_none() {
        let m = recv(&mut ws);
        match m["type"].as_str().unwrap() {
            "published" => acked = m["ref"] == 8,
            "event" => got = Some(m["data"].clone()),
            other => panic!("unexpected {other}: {m}"),
        }
    }
    assert_eq!(got.unwrap(), big);
    send(&mut ws, json!({"op": "unsubscribe", "id": "a"}));
    assert_eq!(recv(&mut ws)["type"], "unsubscribed");
    server.shutdown().unwrap();
}

#[test]
fn reconnecting_client_recovers_missed_events_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let publisher = server.broker().publisher("feed").unwrap();
    let publish = |i: u32| {
        publisher
            .publish("tick", i.to_string().as_bytes(), Default::default())
            .unwrap()
    };
    let mut ws = connect(&server);
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "f", "topic": "feed"}),
    );
    assert_eq!(recv(&mut ws)["type"], "subscribed");
    for i in 1..=3 {
        publish(i);
    }
    let mut last = 0;
    for i in 1..=3 {
        let e = recv(&mut ws);
        assert_eq!(e["data"], i);
        last = e["topic_seq"].as_u64().unwrap();
    }
    drop(ws);
    for i in 4..=10 {
        publish(i);
    }
    let mut ws = connect(&server);
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "f", "topic": "feed", "after": last}),
    );
    assert_eq!(
        recv(&mut ws),
        json!({"type": "subscribed", "id": "f", "recovered": true})
    );
    publish(11);
    for i in 4..=11 {
        assert_eq!(
            recv(&mut ws)["data"],
            i,
            "missed events arrive once, in order, then live ones"
        );
    }
    server.shutdown().unwrap();
}

#[test]
fn bad_messages_get_precise_errors_and_the_connection_survives() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut ws = connect(&server);
    ws.send(Message::text("not json")).unwrap();
    assert!(recv(&mut ws)["message"]
        .as_str()
        .unwrap()
        .starts_with("not JSON"));
    for (msg, needle) in [
        (json!({"op": "nope"}), "unknown op"),
        (json!({}), "missing 'op'"),
        (
            json!({"op": "subscribe", "id": "x", "topic": "bad topic"}),
            "invalid topic",
        ),
        (
            json!({"op": "subscribe", "topic": "t"}),
            "missing field `id`",
        ),
        (
            json!({"op": "publish", "topic": "t"}),
            "missing field `type`",
        ),
        (
            json!({"op": "publish", "topic": "t", "type": "bad type"}),
            "invalid event type",
        ),
        (
            json!({"op": "unsubscribe", "id": "none"}),
            "no subscription",
        ),
    ] {
        send(&mut ws, msg.clone());
        let reply = recv(&mut ws);
        assert_eq!(reply["type"], "error", "{msg}");
        assert!(
            reply["message"].as_str().unwrap().contains(needle),
            "{msg}: {reply}"
        );
    }
    ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(recv(&mut ws)["type"], "error");
    send(&mut ws, json!({"op": "ping"}));
    assert_eq!(recv(&mut ws)["type"], "pong");
    server.shutdown().unwrap();
}

#[test]
fn shutdown_closes_websockets_with_1001() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut ws = connect(&server);
    send(&mut ws, json!({"op": "ping"}));
    assert_eq!(recv(&mut ws)["type"], "pong");
    server.shutdown().unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1001);
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

#[test]
fn presence_over_websocket_and_leave_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut watcher = connect(&server);
    send(
        &mut watcher,
        json!({"op": "subscribe", "id": "p", "topic": "$presence.room.9"}),
    );
    assert_eq!(recv(&mut watcher)["type"], "subscribed");
    let mut member = connect(&server);
    let hello =
        json!({"op": "heartbeat", "topic": "room.9", "client_id": "b", "user": "bob", "ref": 1});
    send(&mut member, hello.clone());
    assert_eq!(
        recv(&mut member),
        json!({"type": "heartbeat", "ref": 1, "joined": true})
    );
    send(&mut member, hello);
    assert_eq!(recv(&mut member)["joined"], false);
    send(
        &mut member,
        json!({"op": "presence", "topic": "room.9", "ref": 2}),
    );
    let present = recv(&mut member);
    assert_eq!(present["type"], "presence");
    assert_eq!(present["ref"], 2);
    assert_eq!(present["present"][0]["client_id"], "b");
    assert_eq!(present["present"][0]["user"], "bob");
    send(&mut member, json!({"op": "heartbeat", "topic": "room.9"}));
    let e = recv(&mut member);
    assert_eq!(e["type"], "error", "{e}");
    // Closing the connection leaves the session it joined.
    member.close(None).unwrap();
    let joined = recv(&mut watcher);
    assert_eq!(joined["event_type"], "presence.join", "{joined}");
    let left = recv(&mut watcher);
    assert_eq!(left["event_type"], "presence.leave", "{left}");
    assert_eq!(left["data"]["client_id"], "b", "{left}");
    server.shutdown().unwrap();
}

#[test]
fn a_batch_is_published_together_and_delivered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut sub = connect(&server);
    send(
        &mut sub,
        json!({"op": "subscribe", "id": "all", "topics": ["batch.>"]}),
    );
    assert_eq!(recv(&mut sub)["type"], "subscribed");
    let mut ws = connect(&server);
    // Refused whole: the second event's type is invalid.
    send(
        &mut ws,
        json!({"op": "publish", "ref": 1, "events": [
            {"topic": "batch.never", "type": "ok"},
            {"topic": "batch.a", "type": "not ok"},
        ]}),
    );
    let refused = recv(&mut ws);
    assert_eq!(
        (refused["type"].as_str(), refused["ref"].as_i64()),
        (Some("error"), Some(1))
    );
    // Payloads stay as written, key order included (line breaks become
    // spaces: one SSE data line).
    let text = r#"{"op":"publish","ref":2,"events":[
        {"topic":"batch.a","type":"one","data":{"z":1,"a":[1, 2]}},
        {"topic":"batch.b","type":"two","data":{"b":
            true}},
        {"topic":"batch.a","type":"three"}]}"#;
    ws.send(Message::text(text)).unwrap();
    let published = recv(&mut ws);
    assert_eq!(published["type"], "published");
    assert_eq!(published["ref"], 2);
    let acks: Vec<(u64, u64)> = published["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["topic_seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        acks,
        [(1, 1), (2, 1), (3, 2)],
        "nothing of the refused batch"
    );
    let expected = [
        ("one", r#"{"z":1,"a":[1, 2]}"#),
        ("two", r#"{"b":             true}"#),
        ("three", "null"),
    ];
    for ((seq, topic_seq), (ty, data)) in acks.iter().zip(expected) {
        let Message::Text(raw) = sub.read().unwrap() else {
            panic!("not a text message")
        };
        assert!(raw.as_str().contains(&format!(r#""data":{data}"#)), "{raw}");
        let e: Value = serde_json::from_str(raw.as_str()).unwrap();
        assert_eq!(
            (e["seq"].as_u64(), e["topic_seq"].as_u64()),
            (Some(*seq), Some(*topic_seq))
        );
        assert_eq!(e["event_type"], ty);
        assert_eq!(e["data"], serde_json::from_str::<Value>(data).unwrap());
    }
    assert_eq!(server.broker().next_seq(), 4);
    let topics = server.broker().topics();
    assert!(!topics.iter().any(|t| t == "batch.never"), "{topics:?}");
}

#[test]
fn several_origins_can_be_left_out_on_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut ws = connect(&server);
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "s", "topic": "o", "exclude_origin": [1, 2]}),
    );
    assert_eq!(recv(&mut ws)["type"], "subscribed");
    for origin in [1, 2, 3] {
        send(
            &mut ws,
            json!({"op": "publish", "topic": "o", "type": "e", "data": origin, "origin": origin}),
        );
    }
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(recv(&mut ws));
    }
    let events: Vec<&Value> = got.iter().filter(|m| m["type"] == "event").collect();
    assert_eq!(events.len(), 1, "{got:?}");
    assert_eq!(events[0]["origin"], 3);
    // One origin is still a number, and the HTTP query takes a comma list.
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "t", "topic": "o", "exclude_origin": 1, "after": 0}),
    );
    assert_eq!(recv(&mut ws)["type"], "subscribed");
    assert_eq!(recv(&mut ws)["origin"], 2);
    let url = format!(
        "http://{}/v1/topics/o/events?after=0&exclude_origin=1,3",
        server.local_addr()
    );
    let page = http_get(&url);
    let origins: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["origin"].as_u64().unwrap())
        .collect();
    assert_eq!(origins, [2]);
    server.shutdown().unwrap();
}

/// A GET on a fresh connection, its JSON body.
fn http_get(url: &str) -> Value {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    serde_json::from_str(raw.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// Several connections publish at once, each mixing single events and
/// batches over two topics, plain (the decoder's fast path) and with
/// escapes (the general decoder): every topic stays dense, and every
/// acknowledgement names the sequences the log holds the event at.
#[test]
fn batches_and_singles_from_several_connections_keep_topics_dense_and_acks_match_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let url = format!("ws://{}/v1/ws", server.local_addr());
    let topics = ["mix.a", "mix.b"];
    // (connection, message, event) → (topic, seq, topic_seq) acknowledged.
    type Acked = Vec<((u64, u64, u64), (String, u64, u64))>;
    let acked: Vec<Acked> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3u64)
            .map(|c| {
                let url = url.clone();
                s.spawn(move || {
                    let mut ws = ws_connect(&url);
                    let mut acked = Vec::new();
                    for m in 0..40u64 {
                        // An escape in the type sends a message to the
                        // general decoder; the event's type is the same.
                        let event_type = if m % 3 == 0 { r"\u0065" } else { "e" };
                        let event = |k: u64| {
                            let topic = topics[((c + m + k) % 2) as usize];
                            let text = format!(
                                r#"{{"topic":"{topic}","type":"{event_type}","data":{{"c":{c},"m":{m},"k":{k}}}}}"#
                            );
                            (topic, text)
                        };
                        let batch = m % 2 == 1;
                        let events: Vec<(&str, String)> =
                            (0..if batch { 1 + m % 5 } else { 1 }).map(event).collect();
                        let text = if batch {
                            let list: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
                            format!(r#"{{"op":"publish","ref":{m},"events":[{}]}}"#, list.join(","))
                        } else {
                            let body = events[0].1.strip_prefix('{').unwrap();
                            format!(r#"{{"op":"publish","ref":{m},{body}"#)
                        };
                        ws.send(Message::text(text)).unwrap();
                        let answer = recv(&mut ws);
                        assert_eq!((answer["type"].as_str(), answer["ref"].as_u64()), (Some("published"), Some(m)), "{answer}");
                        let sequences: Vec<(u64, u64)> = if batch {
                            answer["events"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|e| (e["seq"].as_u64().unwrap(), e["topic_seq"].as_u64().unwrap()))
                                .collect()
                        } else {
                            vec![(answer["seq"].as_u64().unwrap(), answer["topic_seq"].as_u64().unwrap())]
                        };
                        assert_eq!(sequences.len(), events.len(), "{answer}");
                        for (k, ((topic, _), (seq, topic_seq))) in events.iter().zip(sequences).enumerate() {
                            acked.push(((c, m, k as u64), (topic.to_string(), seq, topic_seq)));
                        }
                    }
                    acked
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let acked: std::collections::HashMap<_, _> = acked.into_iter().flatten().collect();
    let mut seen = 0;
    for topic in topics {
        let url = format!(
            "http://{}/v1/topics/{topic}/events?after=0&limit=1000",
            server.local_addr()
        );
        let page = http_get(&url);
        let events = page["events"].as_array().unwrap();
        for (n, e) in events.iter().enumerate() {
            assert_eq!(
                e["topic_seq"].as_u64(),
                Some(n as u64 + 1),
                "{topic} is dense"
            );
            assert_eq!(e["type"], "e", "{e}");
            let d = &e["data"];
            let id = (
                d["c"].as_u64().unwrap(),
                d["m"].as_u64().unwrap(),
                d["k"].as_u64().unwrap(),
            );
            let want = (topic.to_string(), e["seq"].as_u64().unwrap(), n as u64 + 1);
            assert_eq!(acked[&id], want, "the acknowledgement of {id:?}");
        }
        seen += events.len();
    }
    assert_eq!(
        seen,
        acked.len(),
        "every acknowledged event is in the log, once"
    );
    server.shutdown().unwrap();
}
