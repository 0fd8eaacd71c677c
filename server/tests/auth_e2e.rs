//! Authentication and tenant isolation against a real server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;

use common::test_config;
use herald_server::{mint_hs256, AuthConfig, Claims, Server};
use proptest::prelude::*;
use serde_json::Value;

const SECRET: &[u8] = b"test-secret";

fn start(dir: &std::path::Path) -> Server {
    let mut config = test_config(dir, 1);
    config.anonymous = Some(false);
    config.auth = AuthConfig {
        hs256_secret: Some(SECRET.to_vec()),
        rs256_public_pem: None,
    };
    Server::start(config).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(tenant: &str, publish: &[&str], subscribe: &[&str]) -> String {
    let claims = Claims {
        sub: "test".into(),
        exp: now() + 600,
        tenant: tenant.into(),
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
    };
    mint_hs256(&claims, SECRET).unwrap()
}

fn request(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null),
    )
}

#[test]
fn tokens_are_required_checked_and_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let body = r#"{"type":"e","data":1}"#;
    assert_eq!(
        request(&server, "POST", "/v1/topics/orders.1/events", None, body).0,
        401
    );
    assert_eq!(
        request(
            &server,
            "POST",
            "/v1/topics/orders.1/events",
            Some("not.a.token"),
            body
        )
        .0,
        401
    );
    let forged = mint_hs256(
        &Claims {
            sub: "x".into(),
            exp: now() + 60,
            tenant: "acme".into(),
            publish: vec![">".into()],
            subscribe: vec![],
        },
        b"wrong",
    )
    .unwrap();
    assert_eq!(
        request(
            &server,
            "POST",
            "/v1/topics/orders.1/events",
            Some(&forged),
            body
        )
        .0,
        401
    );
    let expired = mint_hs256(
        &Claims {
            sub: "x".into(),
            exp: now() - 3600,
            tenant: "acme".into(),
            publish: vec![">".into()],
            subscribe: vec![],
        },
        SECRET,
    )
    .unwrap();
    assert_eq!(
        request(
            &server,
            "POST",
            "/v1/topics/orders.1/events",
            Some(&expired),
            body
        )
        .0,
        401
    );
    let acme = token("acme", &["orders.*"], &["orders.>"]);
    assert_eq!(
        request(
            &server,
            "POST",
            "/v1/topics/users.1/events",
            Some(&acme),
            body
        )
        .0,
        403
    );
    assert_eq!(
        request(&server, "GET", "/v1/events?topics=>", Some(&acme), "").0,
        403
    );
    assert_eq!(
        request(
            &server,
            "POST",
            "/v1/topics/orders.1/events",
            Some(&acme),
            body
        )
        .0,
        200
    );
    // The same name in another tenant is another topic.
    let globex = token("globex", &["orders.*"], &["orders.>"]);
    let (_, theirs) = request(
        &server,
        "GET",
        "/v1/topics/orders.1/events?after=0",
        Some(&globex),
        "",
    );
    assert_eq!(theirs["events"].as_array().unwrap().len(), 0);
    let (_, ours) = request(
        &server,
        "GET",
        "/v1/topics/orders.1/events?after=0",
        Some(&acme),
        "",
    );
    assert_eq!(
        ours["events"][0]["topic"], "orders.1",
        "topics are shown without the tenant prefix"
    );
    assert_eq!(request(&server, "GET", "/healthz", None, "").0, 200);
    server.shutdown().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random tenants, grants, topics and patterns: no subscriber ever
    /// receives another tenant's event, whatever it asks for.
    #[test]
    fn no_cross_tenant_delivery(
        publishes in proptest::collection::vec((0..3usize, 0..4usize), 1..20),
        subs in proptest::collection::vec((0..3usize, prop_oneof![Just(">"), Just("a.*"), Just("a.>"), Just("b"), Just("*")]), 1..6),
    ) {
        const TENANTS: [&str; 3] = ["t0", "t1", "t2"];
        const TOPICS: [&str; 4] = ["a.x", "a.y", "b", "a.x.z"];
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path());
        for (tenant, topic) in &publishes {
            let t = token(TENANTS[*tenant], &[">"], &[]);
            let body = format!(r#"{{"type":"e","data":{{"tenant":"{}"}}}}"#, TENANTS[*tenant]);
            let (status, _) = request(&server, "POST", &format!("/v1/topics/{}/events", TOPICS[*topic]), Some(&t), &body);
            prop_assert_eq!(status, 200);
        }
        for (tenant, pattern) in &subs {
            let t = token(TENANTS[*tenant], &[], &[">"]);
            let (status, page) = request(&server, "GET", &format!("/v1/events?topics={pattern}&after=0&limit=1000"), Some(&t), "");
            prop_assert_eq!(status, 200);
            let events = page["events"].as_array().unwrap();
            for e in events {
                prop_assert_eq!(e["data"]["tenant"].as_str(), Some(TENANTS[*tenant]), "cross-tenant delivery: {}", e);
            }
            // And it got all of its own tenant's matching events.
            let expected = publishes.iter().filter(|(tn, tp)| tn == tenant && herald_core::broker::TopicPattern::parse(pattern).unwrap().matches(TOPICS[*tp])).count();
            prop_assert_eq!(events.len(), expected);
        }
        server.shutdown().unwrap();
    }
}

#[test]
fn presence_is_tenant_scoped_and_published_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let acme = token("acme", &[], &["room.>"]);
    let globex = token("globex", &[], &["room.>"]);
    let hb =
        r#"{"topic":"room.1","client_id":"c1","user":"alice","device":"web","metadata":{"x":1}}"#;
    let (status, body) = request(&server, "POST", "/v1/presence/heartbeat", Some(&acme), hb);
    assert_eq!((status, &body["joined"]), (200, &Value::Bool(true)));
    let (_, body) = request(&server, "POST", "/v1/presence/heartbeat", Some(&acme), hb);
    assert_eq!(body["joined"], false);
    let (_, mine) = request(
        &server,
        "GET",
        "/v1/topics/room.1/presence",
        Some(&acme),
        "",
    );
    assert_eq!(mine["present"][0]["client_id"], "c1");
    assert_eq!(mine["present"][0]["metadata"]["x"], 1);
    let (_, theirs) = request(
        &server,
        "GET",
        "/v1/topics/room.1/presence",
        Some(&globex),
        "",
    );
    assert_eq!(
        theirs["present"].as_array().unwrap().len(),
        0,
        "another tenant sees nobody"
    );
    assert_eq!(
        request(&server, "GET", "/v1/topics/other/presence", Some(&acme), "").0,
        403
    );
    let (_, left) = request(
        &server,
        "POST",
        "/v1/presence/leave",
        Some(&acme),
        r#"{"topic":"room.1","client_id":"c1"}"#,
    );
    assert_eq!(left["left"], true);
    // Join and leave were published on the tenant's presence topic.
    let (status, page) = request(
        &server,
        "GET",
        "/v1/topics/$presence.room.1/events?after=0",
        Some(&acme),
        "",
    );
    assert_eq!(status, 200);
    let types: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["presence.join", "presence.leave"]);
    assert_eq!(page["events"][0]["topic"], "$presence.room.1");
    assert_eq!(
        page["events"][0]["data"]["topic"], "room.1",
        "no tenant prefix in the payload either"
    );
    let (_, theirs) = request(
        &server,
        "GET",
        "/v1/topics/$presence.room.1/events?after=0",
        Some(&globex),
        "",
    );
    assert_eq!(theirs["events"].as_array().unwrap().len(), 0);
    server.shutdown().unwrap();
}

/// A token whose claims are given as JSON (for claims `Claims` lacks).
fn token_with(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

#[test]
fn configuring_a_key_turns_anonymous_access_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 1);
    config.auth.hs256_secret = Some(SECRET.to_vec());
    assert_eq!(config.anonymous, None, "the default leaves it to the keys");
    let server = Server::start(config).unwrap();
    let (status, body) = request(&server, "GET", "/v1/events?topics=>&after=0", None, "");
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    server.shutdown().unwrap();
}

#[test]
fn anonymous_access_beside_keys_is_explicit_and_never_through_a_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 1);
    config.auth.hs256_secret = Some(SECRET.to_vec());
    config.anonymous = Some(true);
    let server = Server::start(config).unwrap();
    assert_eq!(
        request(&server, "GET", "/v1/events?topics=>&after=0", None, "").0,
        200
    );
    for header in [
        "X-Forwarded-For: 203.0.113.9",
        "Forwarded: for=203.0.113.9",
        "X-Real-IP: 203.0.113.9",
    ] {
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "GET /v1/events?topics=>&after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 401"), "{header}: {raw}");
        assert!(raw.contains("proxy"), "{raw}");
    }
    // A token still works through a proxy, which sends the public name.
    let t = token("acme", &[], &[">"]);
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    write!(s, "GET /v1/events?topics=>&after=0 HTTP/1.1\r\nHost: events.example.com\r\nX-Forwarded-For: 203.0.113.9\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    server.shutdown().unwrap();
}

#[test]
fn not_before_is_enforced_and_errors_come_from_the_tokens_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 1);
    config.auth = AuthConfig {
        hs256_secret: Some(SECRET.to_vec()),
        rs256_public_pem: Some(include_bytes!("fixtures/rs256_public.pem").to_vec()),
    };
    let server = Server::start(config).unwrap();
    let path = "/v1/events?topics=>&after=0";
    let claims = |nbf: u64, exp: u64| serde_json::json!({"sub": "s", "tenant": "acme", "subscribe": [">"], "nbf": nbf, "exp": exp});
    let early = token_with(claims(now() + 3600, now() + 7200));
    let (status, body) = request(&server, "GET", path, Some(&early), "");
    assert_eq!(status, 401, "a token before its nbf is refused: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("ImmatureSignature"),
        "{body}"
    );
    let valid = token_with(claims(now() - 10, now() + 600));
    assert_eq!(request(&server, "GET", path, Some(&valid), "").0, 200);
    // With an RS256 key configured too, an expired HS256 token is reported
    // as expired (it used to be the RS256 key's "InvalidAlgorithm").
    let expired = token_with(claims(now() - 7200, now() - 3600));
    let (status, body) = request(&server, "GET", path, Some(&expired), "");
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("ExpiredSignature"),
        "{body}"
    );
    server.shutdown().unwrap();
}

#[test]
fn errors_name_topics_as_the_client_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let acme = token("acme", &["orders.*"], &["orders.>"]);
    let body = r#"{"type":"e","data":1}"#;
    for (method, path, body) in [
        ("POST", "/v1/topics/users.1/events", body),
        ("POST", "/v1/topics/orders..1/events", body),
        ("GET", "/v1/events?topics=users.>", ""),
        ("GET", "/v1/events?topics=orders.>.x", ""),
        ("GET", "/v1/topics/$presence.users/events", ""),
    ] {
        let (status, answer) = request(&server, method, path, Some(&acme), body);
        assert!(status == 400 || status == 403, "{path}: {status} {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            !message.contains("acme"),
            "{path}: the tenant prefix leaks: {message}"
        );
    }
    server.shutdown().unwrap();
}
