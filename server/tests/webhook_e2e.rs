//! Webhooks end to end: a real `herald serve` POSTs to a local receiver that
//! fails, times out, answers 429 and 500 at random and restarts; every
//! event arrives at least once, first deliveries in order, every request
//! signed; a SIGKILL of the server loses nothing; what the receiver refuses
//! for good lands on the dead-letter topic and delivery goes on.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{free_port, KillOnDrop};
use herald_server::{AuthConfig, Server, WebhookConfig, WebhookStart};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const SECRET: &str = "webhook-test-secret-0123456789";

/// What the receiver answers to one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    Status(u16),
    /// 429 with `Retry-After: 1`.
    TooMany,
    /// Reads the request, answers nothing for this long, then closes.
    Hang(Duration),
    /// Closes the connection without answering.
    Drop,
}

/// A request the receiver read.
#[derive(Debug, Clone)]
struct Request {
    body: Value,
    signed: bool,
    answered_ok: bool,
}

type Policy = Arc<dyn Fn(&Value) -> Answer + Send + Sync>;

/// An HTTP/1.1 receiver on a loopback port: answers by `policy`, checks
/// every request's signature, and records what it read.
struct Receiver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, policy: Policy, log: Arc<Mutex<Vec<Request>>>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let (policy, log, stop) = (policy.clone(), log.clone(), stop.clone());
                            std::thread::spawn(move || serve(s, &*policy, &log, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Receiver {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: requests until the client closes, or an answer closes.
fn serve(
    s: TcpStream,
    policy: &dyn Fn(&Value) -> Answer,
    log: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut out = s;
    while !stop.load(Ordering::Acquire) {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(line.starts_with("POST /hook HTTP/1.1"), "{line:?}");
        let (mut length, mut signature, mut webhook) = (0usize, String::new(), String::new());
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            let value = value.trim().to_owned();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap(),
                "x-herald-signature" => signature = value,
                "x-herald-webhook" => webhook = value,
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert!(!webhook.is_empty(), "no X-Herald-Webhook header");
        let signed = verify(&signature, &body);
        let body: Value = serde_json::from_slice(&body).unwrap();
        let answer = policy(&body);
        log.lock().unwrap().push(Request {
            body,
            signed,
            answered_ok: matches!(answer, Answer::Ok),
        });
        let reply = match answer {
            Answer::Ok => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned(),
            Answer::Status(code) => format!("HTTP/1.1 {code} No\r\ncontent-length: 0\r\n\r\n"),
            Answer::TooMany => {
                "HTTP/1.1 429 Slow down\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n".to_owned()
            }
            Answer::Hang(d) => {
                std::thread::sleep(d);
                return;
            }
            Answer::Drop => return,
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Checks `t=<secs>,v1=<hex>` against HMAC-SHA256 of `<secs>.<body>`.
fn verify(header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    v1 == want
}

/// The events of the requests answered 2xx, in the order they arrived.
fn accepted(log: &Mutex<Vec<Request>>) -> Vec<Value> {
    let log = log.lock().unwrap();
    let mut out = Vec::new();
    for r in log.iter().filter(|r| r.answered_ok) {
        match r.body.get("events") {
            Some(Value::Array(events)) => out.extend(events.iter().cloned()),
            _ => out.push(r.body.clone()),
        }
    }
    out
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    http_as(addr, None, method, path, body)
}

/// An HTTP request with a bearer token, if given.
fn http_as(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let headers = format!("{auth}Content-Type: application/json\r\n");
    common::http(addr, method, path, &headers, body)
}

fn publish(addr: SocketAddr, topic: &str, event_type: &str, n: u64) -> u64 {
    let (status, v) = http(
        addr,
        "POST",
        &format!("/v1/topics/{topic}/events"),
        &json!({"type": event_type, "data": {"n": n}}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    v["seq"].as_u64().unwrap()
}

/// `herald serve`, killed (SIGKILL) when dropped.
fn serve_process(config: &std::path::Path, addr: SocketAddr) -> KillOnDrop {
    let child = KillOnDrop(Some(
        Command::new(HERALD)
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    wait_for("the server to listen", Duration::from_secs(30), || {
        TcpStream::connect(addr).is_ok()
    });
    child
}

#[test]
fn every_event_arrives_in_order_through_failures_restarts_and_a_kill() {
    const EVENTS: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    // A fixed seed: the same mix of answers on every run.
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(7)));
    let policy: Policy = Arc::new(move |_| {
        let roll = rng.lock().unwrap().u32(0..100);
        match roll {
            0..=44 => Answer::Ok,
            45..=59 => Answer::Status(500),
            60..=64 => Answer::Status(503),
            65..=74 => Answer::TooMany,
            75..=84 => Answer::Hang(Duration::from_millis(500)),
            _ => Answer::Drop,
        }
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let port = free_port();
    let mut receiver = Receiver::start(port, policy.clone(), log.clone());
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "{addr}"
data = "data"
workers = 1
segment_size = 1048576
max_payload = 65536

[[webhooks]]
name = "orders"
url = "{url}"
topics = ["orders.>"]
secret_file = "secret"
batch = 4
timeout_ms = 200
max_attempts = 1000
backoff_initial_ms = 5
backoff_max_ms = 50
start = "oldest"
"#,
            url = receiver.url()
        ),
    )
    .unwrap();
    let mut server = serve_process(&config, addr);
    let mut published = Vec::new();
    for n in 1..=EVENTS {
        published.push(publish(
            addr,
            &format!("orders.{}", n % 3),
            "order.created",
            n,
        ));
        if n == EVENTS / 3 {
            // The receiver restarts: refused connections for a while.
            drop(receiver);
            std::thread::sleep(Duration::from_millis(300));
            receiver = Receiver::start(port, policy.clone(), log.clone());
        }
        if n == 2 * EVENTS / 3 {
            // SIGKILL mid-stream, then the same data directory again.
            drop(server);
            server = serve_process(&config, addr);
        }
    }
    wait_for(
        "every event at the receiver",
        Duration::from_secs(120),
        || {
            let seen: std::collections::HashSet<u64> = accepted(&log)
                .iter()
                .map(|e| e["seq"].as_u64().unwrap())
                .collect();
            published.iter().all(|s| seen.contains(s))
        },
    );
    drop(server);
    drop(receiver);
    let requests = log.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| r.signed),
        "a request was not signed right"
    );
    let failed = requests.iter().filter(|r| !r.answered_ok).count();
    assert!(failed > 20, "the receiver failed only {failed} requests");
    // In order: each event first arrives after every event before it; a
    // second arrival (after a failure the server could not see, or a kill)
    // repeats an event already delivered.
    let mut first = Vec::new();
    for e in accepted(&log) {
        let seq = e["seq"].as_u64().unwrap();
        if !first.contains(&seq) {
            assert!(
                first.last().is_none_or(|&last| seq > last),
                "event {seq} arrived after {first:?}"
            );
            assert_eq!(e["type"], "order.created");
            let n = e["data"]["n"].as_u64().unwrap();
            assert_eq!(published[n as usize - 1], seq, "{e}");
            first.push(seq);
        }
    }
    assert_eq!(first, published);
}

fn hook(name: &str, url: &str, topics: &[&str], secret: &std::path::Path) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url: url.into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        types: Vec::new(),
        tenant: None,
        secret_file: secret.into(),
        batch: 1,
        timeout_ms: 2000,
        max_attempts: 3,
        backoff_initial_ms: 1,
        backoff_max_ms: 5,
        start: WebhookStart::Now,
    }
}

#[test]
fn refused_events_go_to_the_dead_letter_topic_and_delivery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let policy: Policy = Arc::new(|body| match body["type"].as_str() {
        Some("poison") => Answer::Status(500),
        Some("reject") => Answer::Status(400),
        _ => Answer::Ok,
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, policy, log.clone());
    let mut config = common::test_config(&dir.path().join("data"), 1);
    config.webhooks = vec![
        hook("orders", &receiver.url(), &["orders.>"], &secret),
        hook("presence", &receiver.url(), &["$presence.>"], &secret),
    ];
    let server = Server::start(config).unwrap();
    let addr = server.local_addr();
    // (The webhooks start "now": wait until their consumers exist.)
    wait_for("the webhooks' consumers", Duration::from_secs(10), || {
        server.broker().consumers().len() == 2
    });
    // A live reader of the dead letters, subscribed before there are any.
    let mut live = common::ws_connect(&format!("ws://{addr}/v1/ws"));
    common::ws_send(
        &mut live,
        json!({"op": "subscribe", "id": "d", "topic": "$deadletter.orders"}),
    );
    assert_eq!(common::ws_recv(&mut live)["type"], "subscribed");
    let ok1 = publish(addr, "orders.a", "placed", 1);
    let poison = publish(addr, "orders.a", "poison", 2);
    let reject = publish(addr, "orders.a", "reject", 3);
    let ok2 = publish(addr, "orders.b", "placed", 4);
    let (status, _) = http(
        addr,
        "POST",
        "/v1/presence/heartbeat",
        r#"{"topic":"room.1","client_id":"c1","user":"alice"}"#,
    );
    assert_eq!(status, 200);
    wait_for(
        "the second event and the join",
        Duration::from_secs(20),
        || {
            let got = accepted(&log);
            got.iter().any(|e| e["seq"] == ok2) && got.iter().any(|e| e["type"] == "presence.join")
        },
    );
    let got: Vec<u64> = accepted(&log)
        .iter()
        .filter(|e| {
            e["topic"]
                .as_str()
                .is_some_and(|t| t.starts_with("orders."))
        })
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [ok1, ok2]);
    let attempts = |t: &str| {
        let log = log.lock().unwrap();
        log.iter().filter(|r| r.body["type"] == t).count()
    };
    assert_eq!(attempts("poison"), 3, "500: retried up to max_attempts");
    assert_eq!(attempts("reject"), 1, "400: not retried");
    let join = accepted(&log)
        .into_iter()
        .find(|e| e["type"] == "presence.join")
        .unwrap();
    assert_eq!(join["topic"], "$presence.room.1");
    assert_eq!(join["data"]["user"], "alice");

    // The dead letters, readable like any topic (before the poll answers,
    // the webhook has acknowledged them: the order of the two is not
    // guaranteed, so wait for both).
    wait_for("two dead letters", Duration::from_secs(10), || {
        let (_, v) = http(addr, "GET", "/v1/topics/$deadletter.orders/events", "");
        v["events"].as_array().is_some_and(|e| e.len() == 2)
    });
    let (_, v) = http(addr, "GET", "/v1/topics/$deadletter.orders/events", "");
    let dead = v["events"].as_array().unwrap();
    for want in dead {
        let got = common::ws_recv(&mut live);
        assert_eq!(
            (&got["type"], &got["seq"]),
            (&json!("event"), &want["seq"]),
            "{got}"
        );
    }
    assert_eq!(dead[0]["type"], "poison");
    assert_eq!(dead[0]["data"]["webhook"], "orders");
    assert_eq!(dead[0]["data"]["attempts"], 3);
    assert_eq!(dead[0]["data"]["error"], "HTTP 500");
    assert_eq!(dead[0]["data"]["event"]["seq"], poison);
    assert_eq!(dead[0]["data"]["event"]["data"], json!({"n": 2}));
    assert_eq!(dead[1]["type"], "reject");
    assert_eq!(dead[1]["data"]["attempts"], 1);
    assert_eq!(dead[1]["data"]["error"], "HTTP 400");
    assert_eq!(dead[1]["data"]["event"]["seq"], reject);
    // Clients cannot publish there, and do not see the webhooks' consumers.
    let (status, _) = http(
        addr,
        "POST",
        "/v1/topics/$deadletter.orders/events",
        r#"{"type":"x"}"#,
    );
    assert_eq!(status, 400);
    let (_, v) = http(addr, "GET", "/v1/consumers", "");
    assert_eq!(v["consumers"], json!([]));
    let (status, v) = http(
        addr,
        "POST",
        "/v1/consumers/.webhook.orders/ack",
        r#"{"seq":1}"#,
    );
    assert_eq!(status, 400, "{v}");
    let metrics = || {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    // (The receiver logs a request before it answers: the counters follow.)
    for line in [
        r#"herald_server_webhook_dead_lettered_events_total{webhook="orders"} 2"#,
        r#"herald_server_webhook_delivered_events_total{webhook="orders"} 2"#,
        r#"herald_server_webhook_requests_total{webhook="orders",outcome="failed"} 4"#,
    ] {
        wait_for(line, Duration::from_secs(10), || metrics().contains(line));
    }
    // Idle, each webhook's checkpoint passes the events that are not its
    // own (the dead letters, the presence join, the orders): it keeps
    // nothing from retention.
    let head = server.broker().next_seq() - 1;
    wait_for(
        "the checkpoints at the head",
        Duration::from_secs(10),
        || {
            let all = server.broker().consumers();
            all.len() == 2 && all.iter().all(|(_, checkpoint)| *checkpoint == head)
        },
    );
    server.shutdown().unwrap();
}

#[test]
fn a_tenants_webhook_reads_its_topics_only_and_names_them_as_its_clients_do() {
    const KEY: &[u8] = b"webhook-tenant-test-key-0123456789";
    let token = |tenant: &str, subscribe: &str| common::token(KEY, tenant, &[">"], &[subscribe]);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let policy: Policy = Arc::new(|body| match body["type"].as_str() {
        Some("bad") => Answer::Status(400),
        _ => Answer::Ok,
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, policy, log.clone());
    let mut config = common::test_config(&dir.path().join("data"), 1);
    config.auth = AuthConfig {
        hs256_secret: Some(KEY.to_vec()),
        rs256_public_pem: None,
    };
    config.webhooks = vec![WebhookConfig {
        tenant: Some("acme".into()),
        ..hook("hook", &receiver.url(), &["orders.>"], &secret)
    }];
    let server = Server::start(config).unwrap();
    let addr = server.local_addr();
    wait_for("the webhook's consumer", Duration::from_secs(10), || {
        server.broker().consumers().len() == 1
    });
    let acme = token("acme", ">");
    let globex = token("globex", ">");
    let publish_as = |t: &str, event_type: &str| {
        let body = json!({"type": event_type}).to_string();
        let (status, v) = http_as(addr, Some(t), "POST", "/v1/topics/orders.1/events", &body);
        assert_eq!(status, 200, "{v}");
        v["seq"].as_u64().unwrap()
    };
    publish_as(&globex, "other-tenant");
    let bad = publish_as(&acme, "bad");
    let good = publish_as(&acme, "good");
    wait_for("acme's good event", Duration::from_secs(20), || {
        accepted(&log).iter().any(|e| e["seq"] == good)
    });
    let got = accepted(&log);
    assert_eq!(got.len(), 1, "only acme's events: {got:?}");
    assert_eq!(
        got[0]["topic"], "orders.1",
        "named without the tenant prefix"
    );
    // The dead letter, in acme's namespace, for a token that reads all of
    // acme's topics; not for a narrower one; not for another tenant.
    let path = "/v1/topics/$deadletter.hook/events";
    let (status, v) = http_as(addr, Some(&acme), "GET", path, "");
    assert_eq!(status, 200, "{v}");
    let dead = v["events"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{v}");
    assert_eq!(dead[0]["topic"], "$deadletter.hook");
    assert_eq!(dead[0]["data"]["event"]["seq"], bad);
    assert_eq!(dead[0]["data"]["event"]["topic"], "orders.1");
    let narrow = token("acme", "orders.>");
    assert_eq!(http_as(addr, Some(&narrow), "GET", path, "").0, 403);
    let (status, v) = http_as(addr, Some(&globex), "GET", path, "");
    assert_eq!((status, &v["events"]), (200, &json!([])), "{v}");
    server.shutdown().unwrap();
}

#[test]
fn a_webhook_removed_from_the_configuration_keeps_nothing_from_retention() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let data = dir.path().join("data");
    let start = |hooks: Vec<WebhookConfig>| {
        let mut config = common::test_config(&data, 1);
        config.webhooks = hooks;
        Server::start(config).unwrap()
    };
    let server = start(vec![
        hook("kept", "http://127.0.0.1:9/", &["a"], &secret),
        hook("gone", "http://127.0.0.1:9/", &["a"], &secret),
    ]);
    wait_for("the webhooks' consumers", Duration::from_secs(10), || {
        server.broker().consumers().len() == 2
    });
    server.shutdown().unwrap();
    let server = start(vec![hook("kept", "http://127.0.0.1:9/", &["a"], &secret)]);
    let names: Vec<String> = server
        .broker()
        .consumers()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(names, [".webhook.kept"]);
    server.shutdown().unwrap();
}

#[test]
fn bad_webhook_configurations_are_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "too short").unwrap();
    let cases: Vec<(WebhookConfig, &str)> = vec![
        (hook("bad name", "http://x/", &[">"], &secret), "name"),
        (hook("h", "ftp://x/", &[">"], &secret), "url"),
        (hook("h", "http://x/", &[], &secret), "topics"),
        (hook("h", "http://x/", &["a..b"], &secret), "topics"),
        (hook("h", "http://x/", &[">"], &short), "16 bytes"),
        (
            hook("h", "http://x/", &["$deadletter.>"], &secret),
            "dead-letter",
        ),
        (
            WebhookConfig {
                batch: 0,
                ..hook("h", "http://x/", &[">"], &secret)
            },
            "batch",
        ),
    ];
    for (bad, want) in cases {
        let mut config = common::test_config(dir.path(), 1);
        config.webhooks = vec![bad];
        let err = Server::start(config).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should name {want:?}");
    }
}
