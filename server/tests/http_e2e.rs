//! End-to-end tests against a real server on loopback, with a raw HTTP client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;

use common::{open_sse, test_config};
use herald_server::Server;
use serde_json::Value;

fn start(dir: &std::path::Path) -> Server {
    let mut config = test_config(dir, 2);
    config.max_output = 4096;
    config.keepalive = Duration::from_millis(200);
    Server::start(config).unwrap()
}

/// Sends one request on a fresh connection, returns (status, body).
fn request(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    parse_response(&exchange(server, method, path, headers, body))
}

/// Sends one request (`Host: 127.0.0.1` unless `headers` name one) on a
/// fresh connection and returns the whole answer.
fn exchange(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| *k == "Host") {
        req.push_str("Host: 127.0.0.1\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    raw
}

fn parse_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let text_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = std::str::from_utf8(&raw[..text_end]).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[text_end + 4..].to_vec())
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn publish(server: &Server, topic: &str, ty: &str, data: &str) -> Value {
    let body = format!(r#"{{"type":"{ty}","data":{data}}}"#);
    let (status, body) = request(
        server,
        "POST",
        &format!("/v1/topics/{topic}/events"),
        &[],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    json(&body)
}

#[test]
fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    assert_eq!(request(&server, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(request(&server, "GET", "/readyz", &[], b"").0, 200);
    publish(&server, "m", "t", "1");
    let (status, body) = request(&server, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("herald_published_events_total 1\n"), "{text}");
    assert!(
        text.contains("herald_server_deliveries_total 0\n"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
    // Totals are counters, so that Prometheus' rate() and reset detection
    // apply; what goes up and down is a gauge.
    for counter in [
        "published_events",
        "delivered_events",
        "replayed_events",
        "lagged_fallbacks",
        "gap_notices",
        "duplicate_publishes",
        "server_deliveries",
        "server_slow_streams",
        "server_slow_client_closes",
    ] {
        let line = format!("# TYPE herald_{counter} counter\n");
        assert!(text.contains(&line), "{line}{text}");
        let sample = format!("\nherald_{counter}_total ");
        assert!(text.contains(&sample), "{sample}{text}");
    }
    for gauge in [
        "active_subscriptions",
        "server_connections",
        "delivery_latency_p50_ns",
        "delivery_latency_p95_ns",
        "delivery_latency_p99_ns",
        "delivery_latency_max_ns",
    ] {
        let line = format!("# TYPE herald_{gauge} gauge\n");
        assert!(text.contains(&line), "{line}{text}");
    }
    // One client replays the event and gets a second one live.
    let mut sse = open_sse(&server, "/v1/topics/m/events", Some(0));
    assert_eq!(read_sse(&mut sse, 1)[0].0, 1);
    publish(&server, "m", "t", "2");
    assert_eq!(read_sse(&mut sse, 1)[0].0, 2);
    let (_, body) = request(&server, "GET", "/metrics", &[], b"");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("herald_server_deliveries_total 2\n"),
        "{text}"
    );
    // The stream and the scrape itself.
    assert!(text.contains("herald_server_connections 2\n"), "{text}");
    server.shutdown().unwrap();
}

#[test]
fn publish_then_poll_with_pagination_and_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    for i in 1..=5 {
        let r = publish(
            &server,
            "acme.orders",
            "order.created",
            &format!(r#"{{"n":{i}}}"#),
        );
        assert_eq!(r["topic_seq"], i);
    }
    let (status, body) = request(
        &server,
        "GET",
        "/v1/topics/acme.orders/events?after=1&limit=2",
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let page = json(&body);
    let ns: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![2, 3]);
    assert_eq!(page["next_after"], 3);
    assert_eq!(page["events"][0]["type"], "order.created");
    // Long poll: nothing after 5 yet; an event published during the wait ends it.
    let addr_server = &server;
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            request(
                addr_server,
                "GET",
                "/v1/topics/acme.orders/events?after=5&wait=10000",
                &[],
                b"",
            )
        });
        std::thread::sleep(Duration::from_millis(200));
        publish(addr_server, "acme.orders", "order.created", r#"{"n":6}"#);
        let (status, body) = waiter.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(json(&body)["events"][0]["data"]["n"], 6);
    });
    // A long poll that times out answers with no events.
    let (status, body) = request(
        &server,
        "GET",
        "/v1/topics/acme.orders/events?after=6&wait=50",
        &[],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(json(&body)["events"].as_array().unwrap().len(), 0);
    // Multi-topic poll with a pattern uses global sequences.
    publish(&server, "acme.users", "user.created", "{}");
    let (_, body) = request(
        &server,
        "GET",
        "/v1/events?topics=acme.*&after=0&limit=100",
        &[],
        b"",
    );
    assert_eq!(json(&body)["events"].as_array().unwrap().len(), 7);
    server.shutdown().unwrap();
}

/// The next `n` events of an SSE stream (frames with an `id:`; notices
/// such as `connected` and gaps are skipped): their ids and data.
fn read_sse(reader: &mut BufReader<TcpStream>, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        if let [(Some(id), _, data)] = &read_frames(reader, 1)[..] {
            out.push((*id, data.clone()));
        }
    }
    out
}

/// The next `n` SSE frames, comments and `retry:` left out: each frame's
/// `id:` (if any), `event:` (if any) and data.
fn read_frames(
    reader: &mut BufReader<TcpStream>,
    n: usize,
) -> Vec<(Option<u64>, Option<String>, String)> {
    let mut out = Vec::new();
    let (mut id, mut event, mut data) = (None, None, None::<String>);
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            if let Some(d) = data.take() {
                out.push((id.take(), event.take(), d));
            }
        } else if let Some(v) = l.strip_prefix("id: ") {
            id = Some(v.parse().unwrap());
        } else if let Some(v) = l.strip_prefix("event: ") {
            event = Some(v.to_owned());
        } else if let Some(v) = l.strip_prefix("data: ") {
            let d = data.get_or_insert_with(String::new);
            if !d.is_empty() {
                d.push('\n');
            }
            d.push_str(v);
        }
    }
    out
}

#[test]
fn sse_streams_say_where_they_start_which_topic_and_can_be_unnamed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    publish(&server, "room.1", "msg", "1");
    publish(&server, "room.1", "msg", "2");
    // From now, on a pattern: connected at the global head; event objects.
    let mut many = open_sse(&server, "/v1/events?topics=room.*", None);
    let first = read_frames(&mut many, 1);
    assert_eq!(
        first,
        [(None, Some("connected".into()), r#"{"position":2}"#.into())]
    );
    publish(&server, "room.2", "joined", r#"{"who":"ann"}"#);
    publish(&server, "room.1", "msg", "3");
    let got = read_frames(&mut many, 2);
    let objects: Vec<Value> = got
        .iter()
        .map(|f| serde_json::from_str(&f.2).unwrap())
        .collect();
    assert_eq!((got[0].0, got[0].1.as_deref()), (Some(3), Some("joined")));
    assert_eq!(objects[0]["topic"], "room.2");
    assert_eq!(objects[0]["topic_seq"], 1);
    assert_eq!(objects[0]["type"], "joined");
    assert_eq!(objects[0]["data"], serde_json::json!({"who": "ann"}));
    assert_eq!(
        (got[1].0, objects[1]["topic"].as_str()),
        (Some(4), Some("room.1"))
    );
    // One topic, unnamed, resuming: everything reaches `onmessage`.
    let mut unnamed = open_sse(
        &server,
        "/v1/topics/room.1/events?named=false&after=1",
        None,
    );
    let got = read_frames(&mut unnamed, 3);
    assert_eq!(
        got[0],
        (None, None, r#"{"connected":{"position":1}}"#.into())
    );
    for (frame, (topic_seq, data)) in got[1..].iter().zip([(2, 2), (3, 3)]) {
        assert_eq!((frame.0, &frame.1), (Some(topic_seq), &None));
        let object: Value = serde_json::from_str(&frame.2).unwrap();
        assert_eq!(
            (object["type"].as_str(), object["data"].as_u64()),
            (Some("msg"), Some(data))
        );
    }
    // Past the end of the log: the reset, then connected at the head.
    let mut ahead = open_sse(&server, "/v1/topics/room.1/events?after=99", None);
    assert_eq!(
        read_frames(&mut ahead, 2),
        [
            (
                Some(3),
                Some("reset".into()),
                r#"{"reset":{"head":3}}"#.into()
            ),
            (None, Some("connected".into()), r#"{"position":3}"#.into()),
        ]
    );
    // `named` is a boolean.
    let (status, body) = request(&server, "GET", "/v1/events?topics=a&named=no", &[], b"");
    assert_eq!(status, 400);
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .starts_with("'named'"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    server.shutdown().unwrap();
}

#[test]
fn sse_streams_live_and_resumes_exactly_once_from_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut stream = open_sse(&server, "/v1/topics/room.1/events", None);
    for i in 1..=3 {
        publish(&server, "room.1", "msg", &i.to_string());
    }
    let got = read_sse(&mut stream, 3);
    assert_eq!(got, vec![(1, "1".into()), (2, "2".into()), (3, "3".into())]);
    drop(stream);
    // Published while disconnected.
    for i in 4..=6 {
        publish(&server, "room.1", "msg", &i.to_string());
    }
    let mut resumed = open_sse(&server, "/v1/topics/room.1/events", Some(3));
    publish(&server, "room.1", "msg", "7");
    let got = read_sse(&mut resumed, 4);
    assert_eq!(
        got.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    drop(resumed);
    // A browser reconnects to the URL it opened (`?after=1`) and adds the
    // header: the header wins.
    let mut reconnected = open_sse(&server, "/v1/topics/room.1/events?after=1", Some(6));
    let got = read_sse(&mut reconnected, 1);
    assert_eq!(got, vec![(7, "7".into())]);
    server.shutdown().unwrap();
}

#[test]
fn a_slow_sse_client_catches_up_with_nothing_missing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut slow = open_sse(&server, "/v1/topics/flood/events", None);
    // Far more than the ring (64 KiB), the output bound (4 KiB) and the
    // kernel's socket buffers hold, while the client reads nothing.
    let payload = format!(r#""{}""#, "x".repeat(2000));
    let n = 8_000;
    let publisher = server.broker().publisher("flood").unwrap();
    for _ in 0..n {
        publisher
            .publish("e", payload.as_bytes(), Default::default())
            .unwrap();
    }
    // Still reading nothing, until the server has taken the stream off
    // the live feed (a client that reads while the worker routes is not
    // slow, and is not parked).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = request(&server, "GET", "/metrics", &[], b"");
        let text = String::from_utf8(body).unwrap();
        let slow_streams: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("herald_server_slow_streams_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no slow-stream counter: {text}"));
        if slow_streams > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow client must have been taken off the live feed: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = read_sse(&mut slow, n);
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=n as u64).collect::<Vec<_>>());
    server.shutdown().unwrap();
}

#[test]
fn errors_get_precise_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("GET", "/nope", vec![], 404),
        ("DELETE", "/v1/topics/a/events", vec![], 405),
        ("POST", "/v1/topics/a/events", b"not json".to_vec(), 400),
        (
            "POST",
            "/v1/topics/a/events",
            br#"{"data":1}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/topics/bad%20topic/events",
            br#"{"type":"t"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/topics/a..b/events",
            br#"{"type":"t"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/topics/a/events",
            br#"{"type":"bad type"}"#.to_vec(),
            400,
        ),
        ("POST", "/v1/topics/a/events", vec![b' '; 9000], 413),
        ("GET", "/v1/topics/a/events?after=x", vec![], 400),
        ("GET", "/v1/events", vec![], 400),
        ("POST", "/v1/consumers/x/ack", b"{}".to_vec(), 400),
    ];
    for (method, path, body, status) in cases {
        let (got, resp) = request(&server, method, path, &[], &body);
        assert_eq!(
            got,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert!(json(&resp)["error"].is_string());
    }
    // A head over the limit, and garbage.
    let big = "x".repeat(20_000);
    assert_eq!(
        request(&server, "GET", "/healthz", &[("X-Big", &big)], b"").0,
        431
    );
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(b"\x16\x03\x01garbage\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_response(&raw).0, 400);
    // The server is still fine.
    assert_eq!(request(&server, "GET", "/healthz", &[], b"").0, 200);
    server.shutdown().unwrap();
}

#[test]
fn connections_over_the_per_ip_limit_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 1);
    config.max_connections_per_ip = 2;
    let server = Server::start(config).unwrap();
    let a = TcpStream::connect(server.local_addr()).unwrap();
    let _b = TcpStream::connect(server.local_addr()).unwrap();
    let (status, body) = request(&server, "GET", "/healthz", &[], b"");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    drop(a);
    // The worker notices the close and releases the slot.
    let mut ok = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        if request(&server, "GET", "/healthz", &[], b"").0 == 200 {
            ok = true;
            break;
        }
    }
    assert!(ok, "a released slot is admitted again");
    server.shutdown().unwrap();
}

#[test]
fn a_stalled_sse_client_is_closed_after_the_deadline_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 1);
    config.broker.log.segment_size = 1 << 24;
    config.max_output = 4096;
    config.slow_client_deadline = Duration::from_millis(200);
    let server = Server::start(config).unwrap();
    let mut stalled = open_sse(&server, "/v1/topics/flood/events", None);
    let payload = format!(r#""{}""#, "y".repeat(2000));
    let publisher = server.broker().publisher("flood").unwrap();
    let n = 8_000u64;
    for _ in 0..n {
        publisher
            .publish("e", payload.as_bytes(), Default::default())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(800));
    // Whatever reached the socket before the close is readable, then EOF.
    let mut ids = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match stalled.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Some(id) = line.trim_end().strip_prefix("id: ") {
                    ids.push(id.parse::<u64>().unwrap());
                }
            }
        }
    }
    assert!(
        (ids.len() as u64) < n,
        "the server closed the stalled stream before the end"
    );
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    // The reconnect resumes exactly after the last event received.
    let last = ids.last().copied().unwrap_or(0);
    let mut resumed = open_sse(&server, "/v1/topics/flood/events", Some(last));
    let rest = read_sse(&mut resumed, (n - last) as usize);
    assert_eq!(
        rest.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        (last + 1..=n).collect::<Vec<_>>()
    );
    server.shutdown().unwrap();
}

#[test]
fn pages_from_other_origins_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 2);
    config.allowed_origins = vec!["https://app.example".into()];
    let server = Server::start(config).unwrap();
    let host = server.local_addr().to_string();
    let body = br#"{"type":"t","data":1}"#;
    // Not a page (no Origin): as always.
    let (status, _) = request(&server, "POST", "/v1/topics/o/events", &[], body);
    assert_eq!(status, 200);
    // A page of another origin cannot publish (a form post, say)...
    let evil = [("Origin", "http://evil.example")];
    let (status, resp) = request(&server, "POST", "/v1/topics/o/events", &evil, body);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&resp));
    // ...nor open a WebSocket, which browsers do not guard with CORS.
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://evil.example\r\n\r\n",
    )
    .unwrap();
    let mut raw = [0u8; 12];
    s.read_exact(&mut raw).unwrap();
    assert_eq!(&raw, b"HTTP/1.1 403");
    // An anonymous server answers only loopback names: a page that rebinds
    // its own name to 127.0.0.1 is "same-origin" but gets nothing.
    let rebound = format!("evil.example:{}", server.local_addr().port());
    let origin = format!("http://{rebound}");
    for headers in [
        vec![("Host", rebound.as_str())],
        vec![("Host", rebound.as_str()), ("Origin", origin.as_str())],
    ] {
        let raw = raw_request(&server, "GET", "/v1/topics/o/events", &headers, b"");
        assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    }
    // The server's own origin passes, without CORS headers.
    let own = format!("http://{host}");
    let own = [("Origin", own.as_str()), ("Host", host.as_str())];
    let raw = raw_request(&server, "POST", "/v1/topics/o/events", &own, body);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(!raw.contains("Access-Control-Allow-Origin"), "{raw}");
    // An allowed origin gets CORS headers, on answers and on the preflight.
    let app = [("Origin", "https://app.example")];
    let raw = raw_request(&server, "POST", "/v1/topics/o/events", &app, body);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.contains("Access-Control-Allow-Origin: https://app.example\r\n"),
        "{raw}"
    );
    let raw = raw_request(&server, "OPTIONS", "/v1/topics/o/events", &app, b"");
    assert!(raw.starts_with("HTTP/1.1 204"), "{raw}");
    assert!(
        raw.contains("Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID"),
        "{raw}"
    );
    // Its EventSource too.
    let mut sse = TcpStream::connect(server.local_addr()).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    sse.write_all(b"GET /v1/topics/o/events?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nOrigin: https://app.example\r\n\r\n").unwrap();
    let mut head = String::new();
    let mut reader = BufReader::new(sse);
    while !head.ends_with("\r\n\r\n") {
        reader.read_line(&mut head).unwrap();
    }
    assert!(
        head.contains("Access-Control-Allow-Origin: https://app.example"),
        "{head}"
    );
    assert_eq!(read_sse(&mut reader, 3).len(), 3);
    server.shutdown().unwrap();
}

/// A request's whole answer, head included, as text.
fn raw_request(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    String::from_utf8_lossy(&exchange(server, method, path, headers, body)).into_owned()
}

#[test]
fn a_json_array_body_publishes_a_batch_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let batch = |body: &str| {
        request(
            &server,
            "POST",
            "/v1/topics/jobs/events",
            &[],
            body.as_bytes(),
        )
    };
    let (status, body) = batch(r#"[{"type":"a"},{"type":"b","topic":"other"}]"#);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(json(&body)["error"]
        .as_str()
        .unwrap()
        .starts_with("event [1]: 'topic'"));
    let (status, body) =
        batch(r#"[{"type":"a","data":{"n":1}},{"type":"b","correlation_id":"c-2"}]"#);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        json(&body),
        serde_json::json!({"events": [{"seq": 1, "topic_seq": 1}, {"seq": 2, "topic_seq": 2}]})
    );
    let (_, body) = request(&server, "GET", "/v1/topics/jobs/events?after=0", &[], b"");
    let events = json(&body)["events"].clone();
    assert_eq!(events[0]["data"], serde_json::json!({"n": 1}));
    assert_eq!(events[1]["correlation_id"], "c-2");
    assert_eq!(
        events.as_array().unwrap().len(),
        2,
        "nothing of the refused batch"
    );
}
