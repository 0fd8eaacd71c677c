//! Rate limits against a real server: each limit (events published,
//! subscription requests, connection attempts) is pushed past, over HTTP
//! and WebSocket; the client over it gets 429 with `Retry-After` (a
//! WebSocket error naming the limit) and is counted in `/metrics`, while
//! other clients (another subject, another tenant, another address) are
//! not affected.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;

use common::{test_config, ws_connect, ws_recv, ws_send};
use herald_server::{mint_hs256, AuthConfig, Claims, Rate, Server, TenantRates};
use serde_json::{json, Value};

const SECRET: &[u8] = b"rate-limit-secret";

fn rate(per_second: u32, burst: u32) -> Option<Rate> {
    Some(Rate {
        per_second,
        burst: Some(burst),
    })
}

fn token(tenant: &str, sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        sub: sub.into(),
        exp: now + 3600,
        tenant: tenant.into(),
        publish: vec![">".into()],
        subscribe: vec![">".into()],
    };
    mint_hs256(&claims, SECRET).unwrap()
}

/// An answer: status, headers (lower-cased names), JSON body.
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

fn http_from(
    server: &Server,
    from: Option<&str>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let mut s = connect_from(server.local_addr(), from);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // A refused connection may be answered before the request is read.
    let _ = s.write_all(req.as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

fn http(server: &Server, method: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
    http_from(server, None, method, path, token, body)
}

/// A connection from loopback address `from` (any 127.x address reaches
/// the server), or the default one.
fn connect_from(to: SocketAddr, from: Option<&str>) -> TcpStream {
    let Some(from) = from else {
        return TcpStream::connect(to).unwrap();
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

fn assert_limited(a: &Answer, limit: &str) {
    assert_eq!(a.status, 429, "{} {}", a.head, a.body);
    assert_eq!(a.body["code"], "rate_limited");
    let message = a.body["error"].as_str().unwrap();
    assert!(
        message.contains(&format!("{limit} rate limit")) || message.contains("exceed the burst"),
        "{message}"
    );
    let retry: u64 = a
        .head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .unwrap_or_else(|| panic!("no Retry-After: {}", a.head))
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

fn start(
    dir: &std::path::Path,
    configure: impl FnOnce(&mut herald_server::ServerConfig),
) -> Server {
    let mut config = test_config(dir, 1);
    config.auth = AuthConfig {
        hs256_secret: Some(SECRET.to_vec()),
        rs256_public_pem: None,
    };
    config.anonymous = Some(true);
    configure(&mut config);
    Server::start(config).unwrap()
}

fn metric(server: &Server, limit: &str) -> u64 {
    metric_from(server, "127.0.0.1", limit)
}

#[test]
fn publishes_are_limited_per_subject_and_tenants_have_their_own_rate() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.rate_limits.publish = rate(1, 5);
        c.rate_limits.tenants.insert(
            "big".into(),
            TenantRates {
                publish: rate(1, 20),
                subscribe: None,
            },
        );
    });
    let (ann, bob, big) = (
        token("acme", "ann"),
        token("acme", "bob"),
        token("big", "ann"),
    );
    let publish = |t: &str, body: &str| http(&server, "POST", "/v1/topics/t/events", Some(t), body);
    for _ in 0..5 {
        assert_eq!(publish(&ann, r#"{"type":"x"}"#).status, 200);
    }
    assert_limited(&publish(&ann, r#"{"type":"x"}"#), "publish");
    // Another subject of the same tenant has its own bucket.
    assert_eq!(
        publish(&bob, r#"[{"type":"x"},{"type":"x"},{"type":"x"}]"#).status,
        200
    );
    // A batch counts each event: two more do not fit bob's burst of 5.
    assert_limited(
        &publish(&bob, r#"[{"type":"x"},{"type":"x"},{"type":"x"}]"#),
        "publish",
    );
    // A batch bigger than the burst can never pass.
    let six = format!("[{}]", [r#"{"type":"x"}"#; 6].join(","));
    let never = publish(&token("acme", "carol"), &six);
    assert_limited(&never, "publish");
    assert!(never.body["error"]
        .as_str()
        .unwrap()
        .contains("exceed the burst"));
    // The tenant's own rate replaces the global one.
    assert_eq!(publish(&big, &six).status, 200);
    for _ in 0..14 {
        assert_eq!(publish(&big, r#"{"type":"x"}"#).status, 200);
    }
    assert_limited(&publish(&big, r#"{"type":"x"}"#), "publish");
    // Over WebSocket, the same limit and an error naming it.
    let url = format!("ws://{}/v1/ws?access_token={ann}", server.local_addr());
    let mut ws = ws_connect(&url);
    ws_send(
        &mut ws,
        json!({"op": "publish", "ref": 1, "topic": "t", "type": "x"}),
    );
    let reply = ws_recv(&mut ws);
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("rate_limited")),
        "{reply}"
    );
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("publish rate limit (1 per second, bursts of 5)"),
        "{reply}"
    );
    // Only what was accepted is stored: 5 + 3 + 6 + 14.
    let page = http(
        &server,
        "GET",
        "/v1/events?topics=>&after=0&limit=1000",
        None,
        "",
    );
    assert_eq!(page.status, 200);
    assert_eq!(page.body["events"].as_array().unwrap().len(), 28);
    assert_eq!(metric(&server, "publish"), 5);
    server.shutdown().unwrap();
}

#[test]
fn subscription_requests_are_limited_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.rate_limits.subscribe = rate(1, 2));
    let (ann, bob) = (token("acme", "ann"), token("acme", "bob"));
    let poll = |t: &str| http(&server, "GET", "/v1/topics/t/events?after=0", Some(t), "");
    assert_eq!(poll(&ann).status, 200);
    assert_eq!(poll(&ann).status, 200);
    assert_limited(&poll(&ann), "subscribe");
    assert_eq!(poll(&bob).status, 200);
    // WebSocket subscriptions draw on the same bucket.
    let url = format!("ws://{}/v1/ws?access_token={bob}", server.local_addr());
    let mut ws = ws_connect(&url);
    ws_send(&mut ws, json!({"op": "subscribe", "id": "a", "topic": "t"}));
    assert_eq!(ws_recv(&mut ws)["type"], "subscribed");
    ws_send(&mut ws, json!({"op": "subscribe", "id": "b", "topic": "u"}));
    let reply = ws_recv(&mut ws);
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("subscribe rate limit"),
        "{reply}"
    );
    // Publishing is not limited.
    assert_eq!(
        http(
            &server,
            "POST",
            "/v1/topics/t/events",
            Some(&ann),
            r#"{"type":"x"}"#
        )
        .status,
        200
    );
    assert_eq!(metric(&server, "subscribe"), 2);
    server.shutdown().unwrap();
}

#[test]
fn connection_attempts_are_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.rate_limits.connect = rate(1, 3));
    let healthz = |from| http_from(&server, from, "GET", "/healthz", None, "");
    for _ in 0..3 {
        assert_eq!(healthz(None).status, 200);
    }
    assert_limited(&healthz(None), "connect");
    // Another address is not affected.
    assert_eq!(healthz(Some("127.0.0.2")).status, 200);
    // The bucket refills: one attempt per second.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(healthz(None).status, 200);
    assert_eq!(metric_from(&server, "127.0.0.3", "connect"), 1);
    server.shutdown().unwrap();
}

#[test]
fn issuing_a_ticket_counts_as_a_connection_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.rate_limits.connect = rate(1, 4));
    let t = token("acme", "device-7");
    let ticket = || http(&server, "POST", "/v1/tickets", Some(&t), "");
    // Each request is a connection and a ticket: two attempts of four.
    for _ in 0..2 {
        assert_eq!(ticket().status, 201);
    }
    assert_limited(&ticket(), "connect");
    server.shutdown().unwrap();
}

/// `metric`, over a connection from `from` (the default address may be
/// over its connection rate).
fn metric_from(server: &Server, from: &str, limit: &str) -> u64 {
    let mut s = connect_from(server.local_addr(), Some(from));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let prefix = format!("herald_server_rate_limited_total{{limit=\"{limit}\"}} ");
    raw.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {raw}"))
        .parse()
        .unwrap()
}
