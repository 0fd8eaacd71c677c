//! Hostile and careless clients against a real server: request smuggling,
//! amplification through client-supplied strings and counts, connection
//! floods and silent sockets, forged system events, durable consumers
//! abused, and positions past the end of the log. Each test checks the
//! documented answer and that a well-behaved control client is unaffected.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{exchange_raw, open_sse, test_config, ws_connect, ws_recv, ws_send};
use herald_server::{AuthConfig, Server};
use serde_json::{json, Value};

fn start(dir: &std::path::Path) -> Server {
    Server::start(test_config(dir, 1)).unwrap()
}

/// One request on a fresh connection: (status, JSON body or null).
fn request(
    server: &Server,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange_raw(server, raw.as_bytes());
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn publish(server: &Server, topic: &str, n: u64) -> Value {
    let (status, body) = request(
        server,
        "POST",
        &format!("/v1/topics/{topic}/events"),
        None,
        &format!(r#"{{"type":"e","data":{n}}}"#),
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// A control client: publishes `n` events to its own topic and reads them
/// all back over SSE, in order.
fn control_client_is_served(server: &Server, n: u64) {
    let topic = format!(
        "control.{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut sse = open_sse(server, &format!("/v1/topics/{topic}/events?after=0"), None);
    for i in 1..=n {
        publish(server, &topic, i);
    }
    let mut got = 0;
    let mut line = String::new();
    while got < n {
        line.clear();
        assert!(
            sse.read_line(&mut line).unwrap() > 0,
            "the control stream ended"
        );
        if let Some(id) = line.strip_prefix("id: ") {
            got += 1;
            assert_eq!(id.trim().parse::<u64>().unwrap(), got);
        }
    }
}

/// Waits (up to 2 s) until the server has noticed closed connections and
/// serves this address again.
fn wait_until_served(server: &Server) {
    for _ in 0..100 {
        if request(server, "GET", "/healthz", None, "").0 == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the connection slots were not released");
}

#[test]
fn smuggled_requests_are_refused_and_never_executed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    // The first Content-Length covers an embedded publish; the last says 0.
    let embedded = "POST /v1/topics/smuggled/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20\r\n\r\n{\"type\":\"e\",\"data\":1}";
    let raw = format!(
        "POST /v1/topics/front/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nContent-Length: 0\r\n\r\n{embedded}",
        embedded.len()
    );
    let answer = exchange_raw(&server, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "one answer, then close: {answer}"
    );
    for cl in ["+21", "21, 21", "-1", "0x15"] {
        let raw = format!("POST /v1/topics/front/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {cl}\r\n\r\n{{\"type\":\"e\",\"data\":1}}");
        let answer = exchange_raw(&server, raw.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{cl}: {answer}");
    }
    assert!(
        !server
            .broker()
            .topics()
            .iter()
            .any(|t| t == "smuggled" || t == "front"),
        "nothing was published: {:?}",
        server.broker().topics()
    );
    control_client_is_served(&server, 20);
    server.shutdown().unwrap();
}

#[test]
fn client_supplied_strings_and_counts_are_bounded_on_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut ws = ws_connect(&format!("ws://{}/v1/ws", server.local_addr()));
    // A subscription id over 128 bytes: refused, costs nothing.
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "x".repeat(129), "topic": "a"}),
    );
    let answer = ws_recv(&mut ws);
    assert_eq!(answer["code"], "invalid", "{answer}");
    // 33 patterns in one subscription: refused.
    let patterns: Vec<String> = (0..33).map(|i| format!("p{i}.*")).collect();
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "many", "topics": patterns}),
    );
    assert_eq!(ws_recv(&mut ws)["code"], "invalid");
    // 64 subscriptions are allowed, the 65th is not.
    for i in 0..64 {
        ws_send(
            &mut ws,
            json!({"op": "subscribe", "id": format!("s{i}"), "topic": format!("t{i}")}),
        );
        assert_eq!(ws_recv(&mut ws)["type"], "subscribed");
    }
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "s64", "topic": "t64"}),
    );
    let answer = ws_recv(&mut ws);
    assert_eq!(answer["code"], "invalid", "{answer}");
    // The connection is still served, and so is everyone else.
    publish(&server, "t3", 7);
    let event = ws_recv(&mut ws);
    assert_eq!(
        (event["sub"].as_str(), event["data"].as_u64()),
        (Some("s3"), Some(7))
    );
    control_client_is_served(&server, 20);
    server.shutdown().unwrap();
}

#[test]
fn connections_over_the_limit_are_answered_and_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 1);
    config.max_connections_per_ip = 4;
    let server = Server::start(config).unwrap();
    let admitted: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(server.local_addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // Silent connections past the limit: each gets its 503 and is closed
    // without sending anything (they used to stay open until the idle
    // timeout, holding a descriptor each).
    let started = Instant::now();
    let refused: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(server.local_addr()).unwrap())
        .collect();
    for mut s in refused {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed long before the idle timeout (120 s)"
    );
    // The admitted connections were served all along; once they leave, a
    // control client from the same address is served at once.
    drop(admitted);
    wait_until_served(&server);
    control_client_is_served(&server, 20);
    server.shutdown().unwrap();
}

#[test]
fn a_silent_connection_is_timed_from_its_accept() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 1);
    config.max_connections_per_ip = 2;
    config.header_timeout = Duration::from_millis(500);
    let server = Server::start(config).unwrap();
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server.local_addr()).unwrap())
        .collect();
    // Both slots are taken; the silent sockets get 408 and free them.
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    wait_until_served(&server);
    server.shutdown().unwrap();
}

#[test]
fn system_topics_are_written_by_the_broker_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (status, _) = request(
        &server,
        "POST",
        "/v1/presence/heartbeat",
        None,
        r#"{"topic":"room","client_id":"alice"}"#,
    );
    assert_eq!(status, 200);
    assert!(server
        .broker()
        .topics()
        .iter()
        .any(|t| t == "$presence.room"));
    let forged = r#"{"type":"presence.join","data":{"client_id":"mallory"}}"#;
    let (status, body) = request(
        &server,
        "POST",
        "/v1/topics/$presence.room/events",
        None,
        forged,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid")),
        "{body}"
    );
    let batch = r#"[{"topic":"$presence.room","type":"presence.join","data":{}}]"#;
    let (status, _) = request(&server, "POST", "/v1/topics/x/events", None, batch);
    assert_eq!(status, 400);
    let mut ws = ws_connect(&format!("ws://{}/v1/ws", server.local_addr()));
    ws_send(
        &mut ws,
        json!({"op": "publish", "topic": "$presence.room", "type": "presence.join", "data": {}}),
    );
    assert_eq!(ws_recv(&mut ws)["code"], "invalid");
    // Only alice's join is on the presence topic.
    let (_, page) = request(
        &server,
        "GET",
        "/v1/topics/$presence.room/events?after=0",
        None,
        "",
    );
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["type"], "presence.join");
    server.shutdown().unwrap();
}

const SECRET: &[u8] = b"hostile-secret";

fn token(tenant: &str, publish: &[&str], subscribe: &[&str]) -> String {
    common::token(SECRET, tenant, publish, subscribe)
}

#[test]
fn durable_consumers_are_validated_scoped_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 1);
    config.auth = AuthConfig {
        hs256_secret: Some(SECRET.to_vec()),
        rs256_public_pem: None,
    };
    let server = Server::start(config).unwrap();
    let acme = token("acme", &[">"], &[">"]);
    let nothing = token("acme", &[], &[]);
    let globex = token("globex", &[], &[">"]);
    for i in 1..=5 {
        let body = format!(r#"{{"type":"e","data":{i}}}"#);
        assert_eq!(
            request(
                &server,
                "POST",
                "/v1/topics/jobs/events",
                Some(&acme),
                &body
            )
            .0,
            200
        );
    }
    let ack = |t: &str, name: &str, seq: &str| {
        request(
            &server,
            "POST",
            &format!("/v1/consumers/{name}/ack"),
            Some(t),
            &format!(r#"{{"seq":{seq}}}"#),
        )
    };
    // Acknowledging a consumer that was never subscribed creates nothing.
    let (status, body) = ack(&acme, "worker", "0");
    assert_eq!(status, 404, "{body}");
    assert!(
        !body["error"].as_str().unwrap().contains("acme."),
        "no tenant prefix: {body}"
    );
    // Subscribing creates it (at the start position: the beginning).
    let ws_url = |t: &str| format!("ws://{}/v1/ws?access_token={t}", server.local_addr());
    let mut ws = ws_connect(&ws_url(&acme));
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "w", "topic": "jobs", "consumer": "worker", "after": 0}),
    );
    assert_eq!(ws_recv(&mut ws)["type"], "subscribed");
    for i in 1..=5 {
        assert_eq!(ws_recv(&mut ws)["data"], i);
    }
    drop(ws);
    // A token without grants can do nothing with consumers.
    assert_eq!(ack(&nothing, "worker", "1").0, 403);
    assert_eq!(
        request(&server, "GET", "/v1/consumers", Some(&nothing), "").0,
        403
    );
    // Past the head, at u64::MAX: refused, the checkpoint unchanged.
    for seq in ["6", "18446744073709551615"] {
        let (status, body) = ack(&acme, "worker", seq);
        assert_eq!(status, 400, "{seq}: {body}");
    }
    assert_eq!(ack(&acme, "worker", "3").0, 200);
    // Backwards: refused, naming the real checkpoint.
    let (status, body) = ack(&acme, "worker", "2");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("stays at 3"),
        "{body}"
    );
    assert_eq!(
        ack(&acme, "worker", "3").0,
        200,
        "the same value again is a no-op"
    );
    // Another tenant does not see it, and cannot touch it.
    assert_eq!(ack(&globex, "worker", "4").0, 404);
    let (_, theirs) = request(&server, "GET", "/v1/consumers", Some(&globex), "");
    assert_eq!(theirs, json!({"head": 5, "consumers": []}));
    let (status, ours) = request(&server, "GET", "/v1/consumers", Some(&acme), "");
    assert_eq!(
        (status, ours),
        (
            200,
            json!({"head": 5, "consumers": [{"consumer": "worker", "checkpoint": 3, "lag": 2}]})
        )
    );
    // The next subscription resumes after the checkpoint.
    let mut ws = ws_connect(&ws_url(&acme));
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "w", "topic": "jobs", "consumer": "worker"}),
    );
    assert_eq!(ws_recv(&mut ws)["type"], "subscribed");
    assert_eq!(
        (
            ws_recv(&mut ws)["data"].as_u64(),
            ws_recv(&mut ws)["data"].as_u64()
        ),
        (Some(4), Some(5))
    );
    // The same list over WebSocket.
    ws_send(&mut ws, json!({"op": "consumers", "ref": 9}));
    assert_eq!(
        ws_recv(&mut ws),
        json!({"type": "consumers", "ref": 9, "head": 5,
               "consumers": [{"consumer": "worker", "checkpoint": 3, "lag": 2}]})
    );
    drop(ws);
    // Removed: gone from the list, unknown afterwards.
    assert_eq!(
        request(&server, "DELETE", "/v1/consumers/worker", Some(&globex), "").0,
        404
    );
    let (status, removed) = request(&server, "DELETE", "/v1/consumers/worker", Some(&acme), "");
    assert_eq!(
        (status, removed),
        (200, json!({"consumer": "worker", "checkpoint": 3}))
    );
    assert_eq!(ack(&acme, "worker", "4").0, 404);
    let (_, ours) = request(&server, "GET", "/v1/consumers", Some(&acme), "");
    assert_eq!(ours, json!({"head": 5, "consumers": []}));
    server.shutdown().unwrap();
}

#[test]
fn a_position_past_the_end_of_the_log_is_answered_with_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    for i in 1..=3 {
        publish(&server, "orders", i);
    }
    // Poll: answered at once, with the head to re-sync from.
    let (status, page) = request(
        &server,
        "GET",
        "/v1/topics/orders/events?after=10",
        None,
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(
        page,
        json!({"events": [], "next_after": 3, "reset": {"head": 3}})
    );
    let (_, page) = request(&server, "GET", "/v1/events?topics=orders&after=3", None, "");
    assert_eq!(
        page["events"].as_array().unwrap().len(),
        0,
        "at the head is not past it"
    );
    assert!(page.get("reset").is_none(), "{page}");
    // SSE: a reset event whose id moves Last-Event-ID back to the head,
    // then what is published next.
    let mut sse = open_sse(&server, "/v1/topics/orders/events", Some(10));
    let mut lines = Vec::new();
    let mut line = String::new();
    while lines.len() < 3 {
        line.clear();
        sse.read_line(&mut line).unwrap();
        if !line.trim().is_empty() && !line.starts_with("retry:") {
            lines.push(line.trim().to_owned());
        }
    }
    assert_eq!(
        lines,
        ["id: 3", "event: reset", r#"data: {"reset":{"head":3}}"#]
    );
    publish(&server, "orders", 4);
    loop {
        line.clear();
        sse.read_line(&mut line).unwrap();
        if line.starts_with("id: ") {
            assert_eq!(line.trim(), "id: 4");
            break;
        }
    }
    // WebSocket: the subscription says so, and is not "recovered".
    let mut ws = ws_connect(&format!("ws://{}/v1/ws", server.local_addr()));
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "s", "topic": "orders", "after": 99}),
    );
    let answer = ws_recv(&mut ws);
    assert_eq!(answer["reset"], json!({"head": 4}), "{answer}");
    assert_eq!(answer["recovered"], false);
    publish(&server, "orders", 5);
    assert_eq!(ws_recv(&mut ws)["topic_seq"], 5);
    let _ = sse.get_mut().write_all(b"");
    server.shutdown().unwrap();
}

#[test]
fn a_bogus_token_does_not_lift_the_rebinding_guard() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    for path in ["/metrics?access_token=x", "/healthz?access_token=x"] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
        let answer = exchange_raw(&server, raw.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 403"), "{path}: {answer}");
    }
    // On endpoints that read the token, a bad one is judged as such.
    let raw = "GET /v1/events?topics=a&access_token=x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let answer = exchange_raw(&server, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    server.shutdown().unwrap();
}

#[test]
fn single_events_are_acknowledged_over_http_and_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(test_config(dir.path(), 1)).unwrap();
    // The consumer's events (jobs) at 1, 3, 5; another topic's between.
    for topic in ["jobs", "other", "jobs", "other", "jobs"] {
        let (status, _) = request(
            &server,
            "POST",
            &format!("/v1/topics/{topic}/events"),
            None,
            r#"{"type":"e"}"#,
        );
        assert_eq!(status, 200);
    }
    let mut ws = ws_connect(&format!("ws://{}/v1/ws", server.local_addr()));
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "w", "topic": "jobs", "consumer": "w", "after": 0}),
    );
    assert_eq!(ws_recv(&mut ws)["type"], "subscribed");
    for _ in 0..3 {
        assert_eq!(ws_recv(&mut ws)["type"], "event");
    }
    let http_ack = |body: &str| request(&server, "POST", "/v1/consumers/w/ack", None, body);
    // 5 alone: 1 is not acknowledged, the checkpoint stays.
    assert_eq!(
        http_ack(r#"{"seqs":[5]}"#),
        (200, json!({"consumer": "w", "checkpoint": 0}))
    );
    // 1 over WebSocket: past 1 and 2 (not a job), up to 3.
    ws_send(&mut ws, json!({"op": "ack", "consumer": "w", "seqs": [1]}));
    assert_eq!(
        ws_recv(&mut ws),
        json!({"type": "acked", "consumer": "w", "checkpoint": 2})
    );
    // Refused, changing nothing.
    for bad in [
        r#"{"seqs":[3,6]}"#,
        r#"{"seqs":[]}"#,
        r#"{"seq":3,"seqs":[3]}"#,
        "{}",
    ] {
        let (status, body) = http_ack(bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // (Had the refused [3, 6] left 3 acknowledged, 4 would pass 3 to 5.)
    assert_eq!(
        http_ack(r#"{"seqs":[4]}"#),
        (200, json!({"consumer": "w", "checkpoint": 2}))
    );
    // 3: past 3, 4 and the 5 acknowledged first.
    assert_eq!(
        http_ack(r#"{"seqs":[3]}"#),
        (200, json!({"consumer": "w", "checkpoint": 5}))
    );
    ws_send(&mut ws, json!({"op": "ack", "consumer": "w", "seq": 5}));
    assert_eq!(
        ws_recv(&mut ws),
        json!({"type": "acked", "consumer": "w", "seq": 5, "checkpoint": 5})
    );
    let (_, listed) = request(&server, "GET", "/v1/consumers", None, "");
    assert_eq!(listed["consumers"][0]["checkpoint"], 5);
    request(
        &server,
        "POST",
        "/v1/topics/other/events",
        None,
        r#"{"type":"e"}"#,
    );
    let metrics = exchange_raw(
        &server,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    for line in [
        "herald_durable_consumers 1\n",
        "herald_durable_consumer_max_lag 1\n",
    ] {
        assert!(metrics.contains(line), "no {line:?} in {metrics}");
    }
    drop(ws);
    server.shutdown().unwrap();
}

#[test]
fn a_tenant_has_a_bounded_number_of_durable_consumers() {
    // tmpfs: a thousand consumer files are created quickly there.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut config = test_config(dir.path(), 1);
    config.auth = AuthConfig {
        hs256_secret: Some(SECRET.to_vec()),
        rs256_public_pem: None,
    };
    let server = Server::start(config).unwrap();
    let filter = || herald_core::broker::Filter::topic("acme.jobs").unwrap();
    for i in 0..1000 {
        let name = format!("acme.c{i}");
        drop(
            server
                .broker()
                .subscribe_consumer(&name, filter(), herald_core::StartAt::Now)
                .unwrap(),
        );
    }
    // Another tenant's consumers do not count against this one.
    drop(
        server
            .broker()
            .subscribe_consumer("globex.c", filter(), herald_core::StartAt::Now)
            .unwrap(),
    );
    let acme = token("acme", &[], &[">"]);
    let mut ws = ws_connect(&format!(
        "ws://{}/v1/ws?access_token={acme}",
        server.local_addr()
    ));
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "new", "topic": "jobs", "consumer": "one-more"}),
    );
    let answer = ws_recv(&mut ws);
    assert_eq!(answer["code"], "invalid", "{answer}");
    // An existing consumer is still served.
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "old", "topic": "jobs", "consumer": "c7"}),
    );
    assert_eq!(ws_recv(&mut ws)["type"], "subscribed");
    let globex = token("globex", &[], &[">"]);
    let mut other = ws_connect(&format!(
        "ws://{}/v1/ws?access_token={globex}",
        server.local_addr()
    ));
    ws_send(
        &mut other,
        json!({"op": "subscribe", "id": "new", "topic": "jobs", "consumer": "another"}),
    );
    assert_eq!(ws_recv(&mut other)["type"], "subscribed");
    server.shutdown().unwrap();
}
