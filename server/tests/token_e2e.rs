//! Token lifetime on open connections, against a real `herald serve`:
//! refreshing a WebSocket's token, what happens at a token's `exp` on each
//! transport, stream tickets, the token cookie and turning query tokens off.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{free_port, listening, ws_connect, ws_recv, ws_send, KillOnDrop, Ws};
use herald_server::{mint_hs256, Claims};
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const SECRET: &[u8] = b"token-lifetime-secret";

/// A `herald serve` process with an HS256 key and `extra` configuration.
struct Herald {
    addr: SocketAddr,
    _process: KillOnDrop,
    _dir: tempfile::TempDir,
}

fn serve(extra: &str) -> Herald {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata = \"data\"\nworkers = 1\nsegment_size = 1048576\nmax_payload = 65536\n\
             jwt_secret_file = \"secret\"\n{extra}\n"
        ),
    )
    .unwrap();
    let process = KillOnDrop(Some(
        Command::new(HERALD)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let started = Instant::now();
    while !listening(addr) {
        assert!(started.elapsed() < Duration::from_secs(30), "no server");
        std::thread::sleep(Duration::from_millis(20));
    }
    Herald {
        addr,
        _process: process,
        _dir: dir,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token of `tenant` expiring `secs` from now.
fn mint(tenant: &str, publish: &[&str], subscribe: &[&str], secs: u64) -> (String, u64) {
    let exp = now() + secs;
    let claims = Claims {
        sub: "u".into(),
        exp,
        tenant: tenant.into(),
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
    };
    (mint_hs256(&claims, SECRET).unwrap(), exp)
}

/// An HTTP answer: status, head, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// Every value of header `name`.
    fn headers(&self, name: &str) -> Vec<&str> {
        (self.head.lines())
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }
}

/// One request on a fresh connection, `headers` as raw lines.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(reader.read_line(&mut head).unwrap() > 0, "head cut short");
    }
    // An event stream that was opened does not end: its head is enough.
    let mut body = String::new();
    if !head.contains("text/event-stream") {
        reader.read_to_string(&mut body).unwrap();
    }
    Answer {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn publish(addr: SocketAddr, token: &str, topic: &str, n: u64) {
    let a = http(
        addr,
        "POST",
        &format!("/v1/topics/{topic}/events"),
        &[&bearer(token)],
        &format!(r#"{{"type":"e","data":{n}}}"#),
    );
    assert_eq!(a.status, 200, "{}", a.body);
}

/// Messages until one of type `kind` (others must be in `skip`).
fn recv_type(ws: &mut Ws, kind: &str, skip: &[&str]) -> Value {
    loop {
        let m = ws_recv(ws);
        if m["type"] == kind {
            return m;
        }
        assert!(
            skip.contains(&m["type"].as_str().unwrap_or("")),
            "waiting for {kind}: {m}"
        );
    }
}

/// The close frame, after skipping at most the messages `skip` allows.
fn recv_close(ws: &mut Ws, skip: &[&str]) -> (CloseCode, String) {
    loop {
        match ws.read().unwrap() {
            Message::Close(Some(f)) => return (f.code, f.reason.to_string()),
            Message::Text(t) => {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                let kind = m["type"].as_str().unwrap_or("");
                assert!(skip.contains(&kind), "before the close: {m}");
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn subscribe(ws: &mut Ws, id: &str, topics: &[&str]) {
    ws_send(ws, json!({"op": "subscribe", "id": id, "topics": topics}));
    let m = recv_type(ws, "subscribed", &["token_expiring"]);
    assert_eq!(m["id"], id);
}

fn ws_with(addr: SocketAddr, token: &str) -> Ws {
    ws_connect(&format!("ws://{addr}/v1/ws?access_token={token}"))
}

#[test]
fn a_refresh_carries_the_connection_past_the_first_tokens_exp() {
    let h = serve("");
    let (short, short_exp) = mint("acme", &[">"], &["orders.>"], 3);
    let mut ws = ws_with(h.addr, &short);
    // Less than 30 s remain: warned at once.
    assert_eq!(
        ws_recv(&mut ws),
        json!({"type": "token_expiring", "exp": short_exp})
    );
    subscribe(&mut ws, "s1", &["orders.>"]);
    let (long, long_exp) = mint("acme", &[">"], &["orders.>"], 600);
    ws_send(&mut ws, json!({"op": "auth", "token": long, "ref": 7}));
    assert_eq!(
        ws_recv(&mut ws),
        json!({"type": "authed", "ref": 7, "exp": long_exp})
    );
    // Past the first token's exp.
    while now() <= short_exp + 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    publish(h.addr, &long, "orders.1", 1);
    let m = ws_recv(&mut ws);
    assert_eq!(
        (m["type"].as_str(), m["sub"].as_str()),
        (Some("event"), Some("s1")),
        "{m}"
    );
    assert_eq!(m["data"], 1);
    ws_send(&mut ws, json!({"op": "ping"}));
    assert_eq!(ws_recv(&mut ws), json!({"type": "pong"}));
}

#[test]
fn a_narrower_refresh_ends_exactly_the_subscriptions_it_no_longer_grants() {
    let h = serve("");
    let (wide, _) = mint("acme", &[">"], &["orders.>", "users.>"], 600);
    let mut ws = ws_with(h.addr, &wide);
    subscribe(&mut ws, "s1", &["orders.>"]);
    subscribe(&mut ws, "s2", &["users.1"]);
    subscribe(&mut ws, "s3", &["users.2", "orders.9"]);
    let (narrow, exp) = mint("acme", &[">"], &["users.>"], 600);
    ws_send(&mut ws, json!({"op": "auth", "token": narrow}));
    assert_eq!(ws_recv(&mut ws), json!({"type": "authed", "exp": exp}));
    let mut ended = vec![ws_recv(&mut ws), ws_recv(&mut ws)];
    ended.sort_by_key(|m| m["sub"].as_str().unwrap_or("").to_owned());
    assert_eq!(
        ended,
        [
            json!({"type": "error", "op": "auth", "code": "forbidden", "sub": "s1",
                   "message": "subscription 's1' ended: 'orders.>' is outside the token's grants"}),
            json!({"type": "error", "op": "auth", "code": "forbidden", "sub": "s3",
                   "message": "subscription 's3' ended: 'orders.9' is outside the token's grants"}),
        ]
    );
    publish(h.addr, &wide, "orders.1", 1);
    publish(h.addr, &wide, "users.1", 2);
    let m = ws_recv(&mut ws);
    assert_eq!(
        (m["sub"].as_str(), &m["data"]),
        (Some("s2"), &json!(2)),
        "{m}"
    );
    // s1 is gone as if unsubscribed; the grants are the new token's.
    ws_send(&mut ws, json!({"op": "unsubscribe", "id": "s1"}));
    assert_eq!(recv_type(&mut ws, "error", &[])["code"], "not_found");
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "s4", "topic": "orders.1"}),
    );
    assert_eq!(recv_type(&mut ws, "error", &[])["code"], "forbidden");
}

#[test]
fn a_refresh_with_a_bad_token_or_another_tenant_keeps_the_old_token() {
    let h = serve("");
    let (first, exp) = mint("acme", &[">"], &["orders.>"], 4);
    let mut ws = ws_with(h.addr, &first);
    assert_eq!(ws_recv(&mut ws)["type"], "token_expiring");
    subscribe(&mut ws, "s1", &["orders.>"]);
    let (other, _) = mint("globex", &[">"], &[">"], 600);
    let expired = mint_hs256(
        &Claims {
            sub: "u".into(),
            exp: now() - 3600,
            tenant: "acme".into(),
            publish: vec![],
            subscribe: vec![">".into()],
        },
        SECRET,
    )
    .unwrap();
    for (token, code) in [
        (other.as_str(), "forbidden"),
        ("not.a.token", "unauthenticated"),
        (expired.as_str(), "unauthenticated"),
        ("", "invalid"),
    ] {
        ws_send(&mut ws, json!({"op": "auth", "token": token, "ref": 1}));
        let m = ws_recv(&mut ws);
        assert_eq!(
            (m["type"].as_str(), m["op"].as_str(), m["code"].as_str()),
            (Some("error"), Some("auth"), Some(code)),
            "{m}"
        );
        assert_eq!(m["ref"], 1);
        assert!(m.get("sub").is_none(), "no subscription ended: {m}");
    }
    // Still open, still subscribed, and still expiring at the first exp.
    publish(h.addr, &first, "orders.1", 1);
    assert_eq!(ws_recv(&mut ws)["sub"], "s1");
    let (code, reason) = recv_close(&mut ws, &[]);
    assert_eq!((u16::from(code), reason.as_str()), (4001, "token expired"));
    assert!(now() >= exp, "closed before the token's exp");
}

#[test]
fn without_a_refresh_a_warning_then_close_4001_at_exp() {
    let h = serve("");
    let (token, exp) = mint("acme", &[], &["orders.>"], 3);
    let mut ws = ws_with(h.addr, &token);
    assert_eq!(
        ws_recv(&mut ws),
        json!({"type": "token_expiring", "exp": exp})
    );
    let (code, reason) = recv_close(&mut ws, &[]);
    assert_eq!((u16::from(code), reason.as_str()), (4001, "token expired"));
    assert!(now() >= exp, "closed before the token's exp");
    let metrics = http(h.addr, "GET", "/metrics", &[], "").body;
    assert!(
        metrics.contains("herald_server_token_expiry_closes_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_stomp_connection_gets_an_error_frame_then_close_4001_at_exp() {
    let h = serve("");
    let (token, exp) = mint("acme", &[], &["orders.>"], 3);
    let mut ws = ws_connect(&format!("ws://{}/v1/stomp", h.addr));
    ws.send(Message::text(format!(
        "CONNECT\naccept-version:1.2\npasscode:{token}\n\n\0"
    )))
    .unwrap();
    let frame = |m: Message| m.into_text().unwrap().to_string();
    assert!(frame(ws.read().unwrap()).starts_with("CONNECTED\n"));
    ws.send(Message::text(
        "SUBSCRIBE\nid:0\ndestination:/topic/orders.1\n\n\0",
    ))
    .unwrap();
    let error = loop {
        match ws.read().unwrap() {
            Message::Text(t) if t.as_str().trim_matches('\n').is_empty() => {} // heart-beat
            m => break frame(m),
        }
    };
    assert!(error.starts_with("ERROR\n"), "{error}");
    assert!(error.contains("\nmessage:token expired\n"), "{error}");
    assert!(error.contains("\nherald-code:unauthenticated\n"), "{error}");
    let Message::Close(Some(close)) = ws.read().unwrap() else {
        panic!("no close frame");
    };
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4001, "token expired")
    );
    assert!(now() >= exp);
}

/// Opens an SSE stream with `headers` and returns its reader after the
/// `200` head.
fn sse(addr: SocketAddr, path: &str, headers: &[&str]) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    while line != "\r\n" {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "head cut short");
    }
    reader
}

/// Everything the stream sends until it ends.
fn rest_of_stream(mut reader: BufReader<TcpStream>) -> String {
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn an_sse_stream_ends_with_an_expired_event_at_exp() {
    let h = serve("");
    for (query, named) in [("", true), ("&named=false", false)] {
        let (token, exp) = mint("acme", &[], &["orders.>"], 3);
        let path = format!("/v1/events?topics=orders.>{query}");
        let text = rest_of_stream(sse(h.addr, &path, &[&bearer(&token)]));
        let data = format!("data: {{\"expired\":{{\"exp\":{exp}}}}}\n\n");
        assert!(text.ends_with(&data), "{text:?}");
        assert_eq!(text.contains("event: expired\ndata"), named, "{text:?}");
        assert!(now() >= exp);
    }
}

fn ticket(addr: SocketAddr, token: &str) -> String {
    let a = http(addr, "POST", "/v1/tickets", &[&bearer(token)], "");
    assert_eq!(a.status, 201, "{}", a.body);
    a.json()["ticket"].as_str().unwrap().to_owned()
}

/// The status and body of a WebSocket upgrade that is refused.
fn refused_upgrade(url: &str) -> (u16, Value) {
    match tungstenite::connect(url) {
        Err(tungstenite::Error::Http(r)) => (
            r.status().as_u16(),
            serde_json::from_slice(r.body().as_deref().unwrap_or_default()).unwrap(),
        ),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("{url} was upgraded"),
    }
}

#[test]
fn a_ticket_opens_one_stream_with_its_tokens_grants() {
    let h = serve("");
    let (token, _) = mint("acme", &[">"], &["orders.>"], 600);
    let a = http(h.addr, "POST", "/v1/tickets", &[&bearer(&token)], "{}");
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.headers("content-type"), ["application/json"]);
    let body = a.json();
    let t = body["ticket"].as_str().unwrap();
    assert_eq!(t.len(), 43);
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{t}"
    );
    assert_eq!(body["expires_in_ms"], 30000);
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");

    // SSE: once, with the token's grants.
    let mut stream = sse(
        h.addr,
        &format!("/v1/topics/orders.1/events?ticket={t}"),
        &[],
    );
    publish(h.addr, &token, "orders.1", 7);
    let mut line = String::new();
    while !line.starts_with("data: 7") {
        line.clear();
        assert!(stream.read_line(&mut line).unwrap() > 0, "stream ended");
    }
    let again = http(
        h.addr,
        "GET",
        &format!("/v1/events?topics=orders.>&ticket={t}"),
        &["Accept: text/event-stream"],
        "",
    );
    assert_eq!(
        (again.status, again.json()),
        (
            401,
            json!({"error": "ticket unknown, used or expired", "code": "unauthenticated"})
        )
    );
    let outside = ticket(h.addr, &token);
    let a = http(
        h.addr,
        "GET",
        &format!("/v1/events?topics=users.>&ticket={outside}"),
        &["Accept: text/event-stream"],
        "",
    );
    assert_eq!(
        (a.status, a.json()["code"].as_str()),
        (403, Some("forbidden")),
        "{}",
        a.body
    );

    // WebSocket: once, with the token's grants.
    let w = ticket(h.addr, &token);
    let mut ws = ws_connect(&format!("ws://{}/v1/ws?ticket={w}", h.addr));
    subscribe(&mut ws, "s1", &["orders.1"]);
    ws_send(
        &mut ws,
        json!({"op": "subscribe", "id": "s2", "topic": "users.1"}),
    );
    assert_eq!(recv_type(&mut ws, "error", &[])["code"], "forbidden");
    let (status, body) = refused_upgrade(&format!("ws://{}/v1/ws?ticket={w}", h.addr));
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("ticket unknown, used or expired"))
    );

    // STOMP: the upgrade's ticket stands for CONNECT's token.
    let s = ticket(h.addr, &token);
    let mut stomp = ws_connect(&format!("ws://{}/v1/stomp?ticket={s}", h.addr));
    stomp
        .send(Message::text("CONNECT\naccept-version:1.2\n\n\0"))
        .unwrap();
    let connected = stomp.read().unwrap().into_text().unwrap();
    assert!(connected.starts_with("CONNECTED\n"), "{connected}");
    let (status, _) = refused_upgrade(&format!("ws://{}/v1/stomp?ticket={s}", h.addr));
    assert_eq!(status, 401);

    // Not on a poll: refused as an unknown parameter, and not used up.
    let p = ticket(h.addr, &token);
    let poll = format!("/v1/events?topics=orders.>&ticket={p}");
    let a = http(h.addr, "GET", &poll, &[&bearer(&token)], "");
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `ticket`"),
        "{}",
        a.body
    );
    assert_eq!(http(h.addr, "GET", &poll, &[], "").status, 401);
    let a = http(
        h.addr,
        "POST",
        &format!("/v1/topics/orders.1/events?ticket={p}"),
        &[&bearer(&token)],
        r#"{"type":"e"}"#,
    );
    assert_eq!(a.status, 400, "{}", a.body);
    sse(
        h.addr,
        &format!("/v1/events?topics=orders.>&ticket={p}"),
        &[],
    );

    // A ticket needs a token, and takes no fields.
    assert_eq!(http(h.addr, "POST", "/v1/tickets", &[], "").status, 401);
    let a = http(
        h.addr,
        "POST",
        "/v1/tickets",
        &[&bearer(&token)],
        r#"{"ttl":1}"#,
    );
    assert_eq!(
        (a.status, a.json()["code"].as_str()),
        (400, Some("invalid")),
        "{}",
        a.body
    );
    let metrics = http(h.addr, "GET", "/metrics", &[], "").body;
    for line in [
        "herald_server_tickets_issued_total 5",
        "herald_server_tickets_redeemed_total 5",
        "herald_server_tickets_refused_total 3",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
}

#[test]
fn a_ticket_expires_with_its_ttl_or_its_token() {
    let h = serve("ticket_ttl_ms = 1000");
    let (token, _) = mint("acme", &[], &["orders.>"], 600);
    let a = http(h.addr, "POST", "/v1/tickets", &[&bearer(&token)], "");
    assert_eq!(a.json()["expires_in_ms"], 1000);
    let t = a.json()["ticket"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(1100));
    let late = http(
        h.addr,
        "GET",
        &format!("/v1/events?topics=orders.>&ticket={t}"),
        &["Accept: text/event-stream"],
        "",
    );
    assert_eq!(
        (late.status, late.json()["error"].as_str()),
        (401, Some("ticket unknown, used or expired"))
    );
    // A stream opened with a ticket ends at the token's exp.
    let (short, exp) = mint("acme", &[], &["orders.>"], 3);
    let t = ticket(h.addr, &short);
    let text = rest_of_stream(sse(
        h.addr,
        &format!("/v1/events?topics=orders.>&ticket={t}"),
        &[],
    ));
    assert!(
        text.ends_with(&format!(
            "event: expired\ndata: {{\"expired\":{{\"exp\":{exp}}}}}\n\n"
        )),
        "{text:?}"
    );
    assert!(now() >= exp);
}

#[test]
fn a_ticket_never_outlives_its_token() {
    let h = serve("ticket_ttl_ms = 300000");
    let (token, _) = mint("acme", &[], &["orders.>"], 2);
    let a = http(h.addr, "POST", "/v1/tickets", &[&bearer(&token)], "");
    let left = a.json()["expires_in_ms"].as_u64().unwrap();
    assert!((1..=2000).contains(&left), "{}", a.body);
}

#[test]
fn the_token_cookie_stands_for_the_header_and_is_set_and_cleared() {
    let h = serve("allowed_origins = [\"https://app.example\"]");
    let (token, exp) = mint("acme", &[">"], &["orders.>"], 600);
    let a = http(h.addr, "POST", "/v1/cookie", &[&bearer(&token)], "");
    assert_eq!(a.status, 204, "{}", a.body);
    let set = a.headers("set-cookie");
    let prefix =
        format!("herald_token={token}; HttpOnly; Secure; SameSite=Strict; Path=/v1; Max-Age=");
    assert_eq!(set.len(), 1, "{set:?}");
    let max_age: u64 = set[0].strip_prefix(&prefix).unwrap().parse().unwrap();
    assert!(
        (exp - now() - 2..=exp - now()).contains(&max_age),
        "{max_age}"
    );

    let cookie = format!("Cookie: theme=dark; herald_token={token}");
    let post = |headers: &[&str]| {
        http(
            h.addr,
            "POST",
            "/v1/topics/orders.1/events",
            headers,
            r#"{"type":"e"}"#,
        )
    };
    assert_eq!(post(&[&cookie]).status, 200);
    assert_eq!(post(&[]).status, 401);
    assert_eq!(post(&["Cookie: herald_token=not.a.token"]).status, 401);
    // Pages: their own or an allowed origin, never another.
    let allowed = post(&[&cookie, "Origin: https://app.example"]);
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.headers("access-control-allow-origin"),
        ["https://app.example"]
    );
    let evil = post(&[&cookie, "Origin: https://evil.example"]);
    assert_eq!(
        (evil.status, evil.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    sse(h.addr, "/v1/events?topics=orders.>", &[&cookie]);
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/v1/ws",
        h.addr
    ))
    .unwrap();
    request
        .headers_mut()
        .insert("Cookie", format!("herald_token={token}").parse().unwrap());
    let (mut ws, _) = tungstenite::connect(request).unwrap();
    subscribe(&mut ws, "s1", &["orders.1"]);

    // Setting it takes the header's token, not the cookie's.
    assert_eq!(
        http(h.addr, "POST", "/v1/cookie", &[&cookie], "").status,
        401
    );
    let a = http(
        h.addr,
        "POST",
        "/v1/cookie",
        &[&bearer(&token)],
        r#"{"x":1}"#,
    );
    assert_eq!(a.status, 400);
    let cleared = http(h.addr, "DELETE", "/v1/cookie", &[], "");
    assert_eq!(cleared.status, 204);
    assert_eq!(
        cleared.headers("set-cookie"),
        ["herald_token=; HttpOnly; Secure; SameSite=Strict; Path=/v1; Max-Age=0"]
    );
    assert_eq!(
        http(h.addr, "GET", "/v1/cookie", &[&bearer(&token)], "").status,
        405
    );
}

#[test]
fn query_tokens_can_be_turned_off() {
    let h = serve("query_token = false");
    let (token, _) = mint("acme", &[">"], &["orders.>"], 600);
    let off = json!({"error": "access_token in the query is turned off: use a ticket or the herald_token cookie", "code": "unauthenticated"});
    let path = format!("/v1/events?topics=orders.>&access_token={token}");
    for headers in [vec![], vec![bearer(&token)]] {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let a = http(h.addr, "GET", &path, &headers, "");
        assert_eq!((a.status, a.json()), (401, off.clone()));
    }
    let (status, body) = refused_upgrade(&format!("ws://{}/v1/ws?access_token={token}", h.addr));
    assert_eq!((status, body), (401, off));
    // The other sources work.
    let poll = http(
        h.addr,
        "GET",
        "/v1/events?topics=orders.>",
        &[&bearer(&token)],
        "",
    );
    assert_eq!(poll.status, 200);
    let t = ticket(h.addr, &token);
    ws_connect(&format!("ws://{}/v1/ws?ticket={t}", h.addr));
    sse(
        h.addr,
        "/v1/events?topics=orders.>",
        &[&format!("Cookie: herald_token={token}")],
    );
}
