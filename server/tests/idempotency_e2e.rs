//! Idempotent publishing against a real server: a publish repeating its key
//! (HTTP `Idempotency-Key`, WebSocket `idempotency_key`, STOMP
//! `herald-idempotency-key`) is answered as the first was, with
//! `"duplicate": true`, and stores nothing; keys are per tenant; a bad key
//! gets the same verdict on every transport; and the window survives a
//! SIGKILL of `herald serve`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{
    free_port, http, http_text, listening, test_config, token, ws_connect, ws_recv, ws_send,
    KillOnDrop,
};
use herald_server::{AuthConfig, Server};
use serde_json::json;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const SECRET: &[u8] = b"idempotency-test-secret";

fn start(dir: &std::path::Path) -> Server {
    let mut config = test_config(dir, 1);
    config.auth = AuthConfig {
        hs256_secret: Some(SECRET.to_vec()),
        rs256_public_pem: None,
    };
    Server::start(config).unwrap()
}

fn bearer(tenant: &str) -> String {
    format!(
        "Authorization: Bearer {}\r\n",
        token(SECRET, tenant, &[">"], &[">"])
    )
}

/// Every event of the tenant's topics, as (topic, type).
fn stored(addr: SocketAddr, auth: &str) -> Vec<(String, String)> {
    let (status, page) = http(
        addr,
        "GET",
        "/v1/events?topics=>&after=0&limit=1000",
        auth,
        "",
    );
    assert_eq!(status, 200, "{page}");
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["topic"].as_str().unwrap().into(),
                e["type"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn a_retried_publish_is_answered_as_the_first_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.local_addr();
    let acme = bearer("acme");
    let key = |k: &str| format!("{acme}Idempotency-Key: {k}\r\n");

    // HTTP, one event.
    let (status, first) = http(
        addr,
        "POST",
        "/v1/topics/orders/events",
        &key("h-1"),
        r#"{"type":"a"}"#,
    );
    assert_eq!((status, &first), (200, &json!({"seq": 1, "topic_seq": 1})));
    let (status, again) = http(
        addr,
        "POST",
        "/v1/topics/orders/events",
        &key("h-1"),
        r#"{"type":"a"}"#,
    );
    assert_eq!(
        (status, &again),
        (200, &json!({"seq": 1, "topic_seq": 1, "duplicate": true}))
    );

    // HTTP, a batch.
    let batch = r#"[{"type":"b"},{"type":"c"}]"#;
    let (_, first) = http(addr, "POST", "/v1/topics/orders/events", &key("h-2"), batch);
    assert_eq!(
        first,
        json!({"events": [{"seq": 2, "topic_seq": 2}, {"seq": 3, "topic_seq": 3}]})
    );
    let (status, again) = http(addr, "POST", "/v1/topics/orders/events", &key("h-2"), batch);
    assert_eq!(status, 200);
    assert_eq!(again["events"], first["events"]);
    assert_eq!(again["duplicate"], true);

    // WebSocket, one event and a batch; the reference is the retry's own.
    let url = format!(
        "ws://{addr}/v1/ws?access_token={}",
        token(SECRET, "acme", &[">"], &[">"])
    );
    let mut ws = ws_connect(&url);
    let publish =
        json!({"op":"publish","ref":1,"topic":"orders","type":"d","idempotency_key":"w-1"});
    ws_send(&mut ws, publish.clone());
    let first = ws_recv(&mut ws);
    assert_eq!(
        first,
        json!({"type":"published","ref":1,"seq":4,"topic_seq":4})
    );
    let mut retry = publish;
    retry["ref"] = json!(2);
    ws_send(&mut ws, retry);
    assert_eq!(
        ws_recv(&mut ws),
        json!({"type":"published","ref":2,"seq":4,"topic_seq":4,"duplicate":true})
    );
    let batch = json!({"op":"publish","idempotency_key":"w-2","events":[
        {"topic":"orders","type":"e"},{"topic":"invoices","type":"f"}]});
    ws_send(&mut ws, batch.clone());
    let first = ws_recv(&mut ws);
    ws_send(&mut ws, batch);
    let again = ws_recv(&mut ws);
    assert_eq!(
        (&again["events"], &again["duplicate"]),
        (&first["events"], &json!(true))
    );
    assert!(first.get("duplicate").is_none(), "{first}");

    // The key is the publisher's tenant's: another tenant's same key is new.
    let (_, beta) = http(
        addr,
        "POST",
        "/v1/topics/orders/events",
        &format!("{}Idempotency-Key: h-1\r\n", bearer("beta")),
        r#"{"type":"a"}"#,
    );
    assert_eq!(beta, json!({"seq": 7, "topic_seq": 1}));

    assert_eq!(
        stored(addr, &acme),
        [
            ("orders", "a"),
            ("orders", "b"),
            ("orders", "c"),
            ("orders", "d"),
            ("orders", "e"),
            ("invoices", "f")
        ]
        .map(|(t, ty)| (t.to_string(), ty.to_string()))
    );
    // Two retries over HTTP, two over the WebSocket.
    let (_, metrics) = http_text(addr, "GET", "/metrics", &acme, "");
    assert!(
        metrics.contains("\nherald_duplicate_publishes_total 4\n"),
        "{metrics}"
    );
}

#[test]
fn a_bad_key_is_refused_alike_on_every_transport_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.local_addr();
    let acme = bearer("acme");
    let long = "k".repeat(129);
    for bad in ["has space", long.as_str(), "caf\u{e9}"] {
        let (status, v) = http(
            addr,
            "POST",
            "/v1/topics/orders/events",
            &format!("{acme}Idempotency-Key: {bad}\r\n"),
            r#"{"type":"a"}"#,
        );
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some("invalid")),
            "{bad:?}: {v}"
        );
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .starts_with("Idempotency-Key: 1 to 128"),
            "{v}"
        );
    }
    let url = format!(
        "ws://{addr}/v1/ws?access_token={}",
        token(SECRET, "acme", &[">"], &[">"])
    );
    let mut ws = ws_connect(&url);
    for bad in [json!("has space"), json!(long), json!(7)] {
        ws_send(
            &mut ws,
            json!({"op":"publish","topic":"orders","type":"a","idempotency_key":bad}),
        );
        let v = ws_recv(&mut ws);
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("invalid")),
            "{v}"
        );
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("'idempotency_key': "),
            "{v}"
        );
    }
    // Only the request carries a key: inside an HTTP body it is an unknown field.
    let (status, v) = http(
        addr,
        "POST",
        "/v1/topics/orders/events",
        &acme,
        r#"{"type":"a","idempotency_key":"k"}"#,
    );
    assert_eq!(status, 400, "{v}");
    assert!(stored(addr, &acme).is_empty());
}

#[test]
fn stomp_sends_and_commits_carry_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let addr = server.local_addr();
    let jwt = token(SECRET, "acme", &[">"], &[">"]);
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/v1/stomp")).unwrap();
    let mut frame = |text: String| {
        ws.send(tungstenite::Message::text(text)).unwrap();
        loop {
            match ws.read().unwrap() {
                tungstenite::Message::Text(t) if t.as_str().trim().is_empty() => continue,
                tungstenite::Message::Text(t) => return t.as_str().to_owned(),
                _ => continue,
            }
        }
    };
    let connected = frame(format!(
        "CONNECT\naccept-version:1.2\nhost:h\npasscode:{jwt}\n\n\0"
    ));
    assert!(connected.starts_with("CONNECTED"), "{connected}");
    for receipt in ["r1", "r2"] {
        let answer = frame(format!(
            "SEND\ndestination:/topic/orders\nherald-type:s\nherald-idempotency-key:s-1\nreceipt:{receipt}\n\n{{}}\0"
        ));
        assert!(answer.starts_with("RECEIPT"), "{answer}");
    }
    frame("BEGIN\ntransaction:t1\nreceipt:b1\n\n\0".into());
    frame(
        "SEND\ndestination:/topic/orders\nherald-type:t\ntransaction:t1\nreceipt:s1\n\n{}\0".into(),
    );
    frame("COMMIT\ntransaction:t1\nherald-idempotency-key:c-1\nreceipt:c1\n\n\0".into());
    frame("BEGIN\ntransaction:t2\nreceipt:b2\n\n\0".into());
    frame(
        "SEND\ndestination:/topic/orders\nherald-type:t\ntransaction:t2\nreceipt:s2\n\n{}\0".into(),
    );
    let answer =
        frame("COMMIT\ntransaction:t2\nherald-idempotency-key:c-1\nreceipt:c2\n\n\0".into());
    assert!(answer.starts_with("RECEIPT"), "{answer}");
    let answer = frame(
        "SEND\ndestination:/topic/orders\nherald-type:t\ntransaction:t3\nherald-idempotency-key:x\n\n{}\0".into(),
    );
    assert!(
        answer.starts_with("ERROR") && answer.contains("give it to COMMIT"),
        "{answer}"
    );
    assert_eq!(
        stored(addr, &bearer("acme")),
        [
            ("orders".to_string(), "s".to_string()),
            ("orders".into(), "t".into())
        ]
    );
}

/// `herald serve` on `port` over `data`, killed (SIGKILL) when dropped.
fn serve(data: &std::path::Path, secret: &std::path::Path, port: u16) -> KillOnDrop {
    let child = KillOnDrop(Some(
        Command::new(HERALD)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data)
            .arg("--jwt-secret-file")
            .arg(secret)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !listening(("127.0.0.1", port)) {
        assert!(Instant::now() < deadline, "herald serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn the_window_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let acme = bearer("acme");
    let key = format!("{acme}Idempotency-Key: before-the-kill\r\n");
    let mut server = serve(&data, &secret, port);
    let (_, first) = http(
        addr,
        "POST",
        "/v1/topics/orders/events",
        &key,
        r#"[{"type":"a"},{"type":"b"}]"#,
    );
    http(
        addr,
        "POST",
        "/v1/topics/orders/events",
        &acme,
        r#"{"type":"c"}"#,
    );
    let mut killed = server.0.take().expect("the server is running");
    killed.kill().unwrap();
    killed.wait().unwrap();
    let _server = serve(&data, &secret, port);
    let (status, again) = http(
        addr,
        "POST",
        "/v1/topics/orders/events",
        &key,
        r#"[{"type":"a"},{"type":"b"}]"#,
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["events"], &again["duplicate"]),
        (&first["events"], &json!(true))
    );
    let types: Vec<_> = stored(addr, &acme).into_iter().map(|(_, t)| t).collect();
    assert_eq!(types, ["a", "b", "c"]);
}
