//! Cluster mode against a real nats-server with JetStream (Debian's
//! `nats-server`; `scripts/test` installs it) and up to three `herald serve`
//! processes on loopback:
//! - concurrent publishers on every node keep every topic dense and every
//!   replica identical;
//! - SSE, WebSocket and long-poll clients whose node is SIGKILLed resume on
//!   another node exactly once, in order;
//! - a client ahead of a lagging (frozen) replica is held, not reset;
//! - an idempotency key retried on another node gets the first sequences;
//! - WebSocket and pipelined HTTP publishes are answered in order;
//! - publishes during a NATS outage get 503, and replication resumes;
//! - presence is shared, and a killed node's sessions expire once;
//! - a durable consumer resumes on any node after its checkpoint;
//! - a data directory that is not a replica of the stream is refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{free_port, http, http_text, listening, open_sse_at, KillOnDrop};
use serde_json::Value;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// One test at a time: each runs a nats-server and up to three nodes, and
/// timing-sensitive steps (an outage, a frozen node, presence expiry) must
/// not compete with the others for two cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The nats-server binary: `HERALD_NATS_SERVER`, else the one on the PATH
/// or Debian's.
fn nats_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("HERALD_NATS_SERVER") {
        return p.into();
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!("nats-server not found (scripts/test installs Debian's nats-server; or set HERALD_NATS_SERVER)");
}

fn wait_for_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !listening(addr) {
        assert!(Instant::now() < deadline, "{what} did not start on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A nats-server with JetStream, its store in `dir`.
struct Nats {
    port: u16,
    dir: PathBuf,
    process: KillOnDrop,
}

impl Nats {
    fn start(dir: &Path) -> Nats {
        let mut nats = Nats {
            port: free_port(),
            dir: dir.to_owned(),
            process: KillOnDrop(None),
        };
        nats.restart();
        nats
    }

    fn restart(&mut self) {
        let child = Command::new(nats_binary())
            .args(["-js", "-sd"])
            .arg(&self.dir)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.process = KillOnDrop(Some(child));
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], self.port)), "nats-server");
    }

    fn kill(&mut self) {
        self.process = KillOnDrop(None);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A `herald serve` node of the cluster.
struct Node {
    addr: SocketAddr,
    process: KillOnDrop,
}

impl Node {
    fn start(dir: &Path, nats: &Nats, name: &str) -> Node {
        Node::start_with(dir, nats, name, "")
    }

    /// [`Node::start`] with more configuration lines (`extra`).
    fn start_with(dir: &Path, nats: &Nats, name: &str, extra: &str) -> Node {
        let node = Node::spawn_with(dir, nats, name, extra);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(node.addr, "GET", "/readyz", "", "").0 != 200 {
            assert!(Instant::now() < deadline, "{name} never became ready");
            thread::sleep(Duration::from_millis(20));
        }
        node
    }

    /// Sends `signal` (`STOP`, `CONT`) to the node's process.
    fn signal(&self, signal: &str) {
        let pid = self.process.0.as_ref().unwrap().id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts a node and waits for it to listen (not to be ready).
    fn spawn(dir: &Path, nats: &Nats, name: &str) -> Node {
        Node::spawn_with(dir, nats, name, "")
    }

    fn spawn_with(dir: &Path, nats: &Nats, name: &str, extra: &str) -> Node {
        let port = free_port();
        let data = dir.join(name);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "workers = 1\ndurability = \"never\"\nsegment_size = 1048576\nring_capacity = 1048576\nmax_payload = 65536\nmax_body = 65536\npresence_expiry_secs = 2\n{extra}\n[cluster]\nnode_id = \"{name}\"\npublish_timeout_ms = 2000\nreplica_wait_ms = 1500\n"
            ),
        )
        .unwrap();
        let child = Command::new(HERALD)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(&data)
            .args(["--cluster", &nats.url()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let node = Node {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            process: KillOnDrop(Some(child)),
        };
        wait_for_port(node.addr, "herald");
        node
    }
}

fn publish(addr: SocketAddr, topic: &str, data: &str, key: Option<&str>) -> (u16, Value) {
    let headers = key.map_or(String::new(), |k| format!("Idempotency-Key: {k}\r\n"));
    let body = format!("{{\"type\":\"t.n\",\"data\":{data}}}");
    http(
        addr,
        "POST",
        &format!("/v1/topics/{topic}/events"),
        &headers,
        &body,
    )
}

/// Every event a node holds, in order, as the poll endpoint gives them.
fn all_events(addr: SocketAddr) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |e: &Value| e["seq"].as_u64().unwrap());
        let (status, page) = http(
            addr,
            "GET",
            &format!("/v1/events?topics=>&after={after}&limit=1000&wait=0"),
            "",
            "",
        );
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return out;
        }
        out.extend(events);
    }
}

/// Waits until every node holds `n` events.
fn wait_for_replicas(nodes: &[&Node], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in nodes {
        loop {
            let have = all_events(node.addr).len();
            if have == n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a replica holds {have} of {n} events"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn concurrent_publishers_on_three_nodes_keep_every_topic_dense_and_every_replica_identical() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(dir.path(), &nats, n))
        .collect();
    const PER_NODE: usize = 120;
    let acks: Vec<Vec<(String, u64, u64)>> = thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                s.spawn(move || {
                    (0..PER_NODE)
                        .map(|j| {
                            // Three topics written by every node at once.
                            let topic = format!("orders.t{}", j % 3);
                            let (status, ack) = publish(
                                node.addr,
                                &topic,
                                &format!("{{\"node\":{i},\"j\":{j}}}"),
                                None,
                            );
                            assert_eq!(status, 200, "{ack}");
                            (
                                topic,
                                ack["seq"].as_u64().unwrap(),
                                ack["topic_seq"].as_u64().unwrap(),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = 3 * PER_NODE;
    wait_for_replicas(&nodes.iter().collect::<Vec<_>>(), total);
    let first = all_events(nodes[0].addr);
    for node in &nodes[1..] {
        assert_eq!(all_events(node.addr), first, "replicas differ");
    }
    // Global sequences 1..=total; every topic's dense from 1.
    let seqs: Vec<u64> = first.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    for t in 0..3 {
        let topic = format!("orders.t{t}");
        let topic_seqs: Vec<u64> = first
            .iter()
            .filter(|e| e["topic"] == topic.as_str())
            .map(|e| e["topic_seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            topic_seqs,
            (1..=topic_seqs.len() as u64).collect::<Vec<_>>(),
            "{topic}"
        );
    }
    // Every acknowledgement names the event the log holds there.
    for (i, node_acks) in acks.iter().enumerate() {
        for (j, (topic, seq, topic_seq)) in node_acks.iter().enumerate() {
            let e = &first[*seq as usize - 1];
            assert_eq!(
                (&e["topic"], e["topic_seq"].as_u64().unwrap()),
                (&Value::from(topic.as_str()), *topic_seq)
            );
            assert_eq!(
                (e["data"]["node"].as_u64(), e["data"]["j"].as_u64()),
                (Some(i as u64), Some(j as u64))
            );
        }
    }
}

/// Reads SSE events from `reader` until `n` arrived or the stream ends;
/// each as (id, data).
fn read_sse(reader: &mut BufReader<TcpStream>, n: usize, out: &mut Vec<(u64, Value)>) {
    let mut id = None;
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("data: ") {
            if let Some(id) = id.take() {
                out.push((id, serde_json::from_str(v.trim()).unwrap()));
            }
        }
    }
}

/// Reads a WebSocket subscription's events until `out` holds `n` topic
/// sequences or the connection ends.
fn read_ws(ws: &mut common::Ws, n: usize, out: &mut Vec<u64>) {
    while out.len() < n {
        let Ok(message) = ws.read() else { return };
        let tungstenite::Message::Text(text) = message else {
            continue;
        };
        let m: Value = serde_json::from_str(text.as_str()).unwrap();
        match m["type"].as_str() {
            Some("event") => out.push(m["topic_seq"].as_u64().unwrap()),
            Some("subscribed") => {}
            _ => panic!("unexpected {m}"),
        }
    }
}

#[test]
fn clients_of_a_killed_node_resume_on_another_exactly_once_in_order() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let mut a = Some(Node::start(dir.path(), &nats, "a"));
    let b = Node::start(dir.path(), &nats, "b");
    let c = Node::start(dir.path(), &nats, "c");
    let a_addr = a.as_ref().unwrap().addr;
    const N: u64 = 300;
    let publisher = {
        let addr = c.addr;
        thread::spawn(move || {
            for i in 1..=N {
                let (status, ack) = publish(addr, "rooms.r1", &format!("{{\"i\":{i}}}"), None);
                assert_eq!(status, 200, "{ack}");
                if i % 50 == 0 {
                    thread::sleep(Duration::from_millis(30));
                }
            }
        })
    };
    // An SSE, a WebSocket and a long-poll client on node a, from the start.
    let mut sse = open_sse_at(a_addr, "/v1/topics/rooms.r1/events?after=0", None);
    let mut seen_sse = Vec::new();
    read_sse(&mut sse, 40, &mut seen_sse);
    let subscribe = |addr: SocketAddr, after: u64| {
        let mut ws = common::ws_connect(&format!("ws://{addr}/v1/ws"));
        common::ws_send(
            &mut ws,
            serde_json::json!({"op": "subscribe", "id": "w", "topic": "rooms.r1", "after": after}),
        );
        ws
    };
    let mut ws = subscribe(a_addr, 0);
    let mut seen_ws = Vec::new();
    read_ws(&mut ws, 50, &mut seen_ws);
    let mut polled: Vec<Value> = Vec::new();
    while polled.len() < 60 {
        let after = polled
            .last()
            .map_or(0, |e| e["topic_seq"].as_u64().unwrap());
        let (_, page) = http(
            a_addr,
            "GET",
            &format!("/v1/topics/rooms.r1/events?after={after}&wait=1000"),
            "",
            "",
        );
        polled.extend(page["events"].as_array().unwrap().iter().cloned());
    }
    // Node a dies mid-stream (SIGKILL). What it had sent is read first.
    a.take();
    read_sse(&mut sse, usize::MAX, &mut seen_sse);
    read_ws(&mut ws, usize::MAX, &mut seen_ws);
    // Each resumes on another node with what it last saw.
    let last_sse = seen_sse.last().unwrap().0;
    let mut sse = open_sse_at(b.addr, "/v1/topics/rooms.r1/events", Some(last_sse));
    read_sse(&mut sse, N as usize, &mut seen_sse);
    let mut ws = subscribe(c.addr, *seen_ws.last().unwrap());
    read_ws(&mut ws, N as usize, &mut seen_ws);
    while polled.len() < N as usize {
        let after = polled.last().unwrap()["topic_seq"].as_u64().unwrap();
        let (status, page) = http(
            c.addr,
            "GET",
            &format!("/v1/topics/rooms.r1/events?after={after}&wait=2000"),
            "",
            "",
        );
        assert_eq!(status, 200, "{page}");
        polled.extend(page["events"].as_array().unwrap().iter().cloned());
    }
    publisher.join().unwrap();
    let ids: Vec<u64> = seen_sse.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=N).collect::<Vec<_>>(),
        "SSE: exactly once, in order"
    );
    let data: Vec<u64> = seen_sse
        .iter()
        .map(|(_, d)| d["data"]["i"].as_u64().or(d["i"].as_u64()).unwrap())
        .collect();
    assert_eq!(data, (1..=N).collect::<Vec<_>>());
    assert_eq!(
        seen_ws,
        (1..=N).collect::<Vec<_>>(),
        "WebSocket: exactly once, in order"
    );
    let polled_seqs: Vec<u64> = polled
        .iter()
        .map(|e| e["topic_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        polled_seqs,
        (1..=N).collect::<Vec<_>>(),
        "poll: exactly once, in order"
    );
}

#[test]
fn an_idempotency_key_retried_on_another_node_gets_the_first_sequences() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let a = Node::start(dir.path(), &nats, "a");
    let b = Node::start(dir.path(), &nats, "b");
    publish(a.addr, "orders", "{}", None);
    let (status, first) = publish(a.addr, "orders", "{\"n\":1}", Some("order-17"));
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["seq"].as_u64(), first["topic_seq"].as_u64()),
        (Some(2), Some(2))
    );
    publish(b.addr, "orders", "{}", None);
    let (status, retry) = publish(b.addr, "orders", "{\"n\":1}", Some("order-17"));
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["duplicate"], true);
    assert_eq!(
        (retry["seq"].as_u64(), retry["topic_seq"].as_u64()),
        (Some(2), Some(2))
    );
    wait_for_replicas(&[&a, &b], 3);
    // A batch of more than one event is refused whole, clearly.
    let (status, e) = http(
        a.addr,
        "POST",
        "/v1/topics/orders/events",
        "",
        r#"[{"type":"t","data":1},{"type":"t","data":2}]"#,
    );
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("cluster node"), "{e}");
    wait_for_replicas(&[&a, &b], 3);
    // What each node published, and that its replica is current.
    for (node, published) in [(&a, 2), (&b, 1)] {
        let (status, metrics) = http_text(node.addr, "GET", "/metrics", "", "");
        assert_eq!(status, 200);
        for line in [
            format!("herald_cluster_published_events_total {published}\n"),
            "herald_cluster_connected 1\n".to_owned(),
            "herald_cluster_replication_lag 0\n".to_owned(),
        ] {
            assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
        }
    }
}

#[test]
fn publishes_in_a_nats_outage_get_503_and_replication_resumes_after_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(&dir.path().join("nats"));
    let a = Node::start(dir.path(), &nats, "a");
    let b = Node::start(dir.path(), &nats, "b");
    for i in 0..10 {
        assert_eq!(publish(a.addr, "orders", &i.to_string(), None).0, 200);
    }
    wait_for_replicas(&[&a, &b], 10);
    nats.kill();
    // Nothing is acknowledged while NATS is down; subscribers are still
    // served from the replicas.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = publish(a.addr, "orders", "99", None);
        if status == 503 {
            assert!(
                body["code"] == "unavailable" && body["error"].is_string(),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishes still answered {status} with NATS down"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // (Each node notices the outage on its own connection.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(b.addr, "GET", "/readyz", "", "").0 != 503 {
        assert!(Instant::now() < deadline, "b still ready with NATS down");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(all_events(b.addr).len(), 10);
    nats.restart();
    // The nodes reconnect by themselves; publishes succeed again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stored = 0;
    while stored < 5 {
        let (status, _) = publish(b.addr, "orders", "100", None);
        if status == 200 {
            stored += 1;
        } else {
            assert!(
                Instant::now() < deadline,
                "publishes still fail after NATS came back"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
    // Both replicas converge on the same events, every acknowledged one
    // among them. (A publish that timed out when the outage began may be
    // stored after it: its client was told to retry, not that it failed.)
    let n = 10 + stored;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (on_a, on_b) = (all_events(a.addr), all_events(b.addr));
        if on_a == on_b && on_a.len() >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas differ: {} and {} events, {n} acknowledged",
            on_a.len(),
            on_b.len()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn websocket_and_pipelined_http_publishes_are_answered_in_order() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let a = Node::start(dir.path(), &nats, "a");
    // WebSocket: 300 publishes sent at once (more than a connection may
    // have awaiting the stream), to two topics, one with a bad type.
    let mut ws = common::ws_connect(&format!("ws://{}/v1/ws", a.addr));
    const N: usize = 300;
    for i in 0..N {
        let kind = if i == 7 { "bad type" } else { "t.n" };
        let topic = if i % 2 == 0 { "even" } else { "odd" };
        common::ws_send(
            &mut ws,
            serde_json::json!({"op": "publish", "ref": i, "topic": topic, "type": kind, "data": i}),
        );
    }
    // Within a topic, the sequences follow the order of the publishes
    // (two topics are written concurrently: between them, no order).
    // Past 256 awaiting the stream, a publish is refused (503), in its
    // place among the answers.
    let mut last_seq = [0, 0];
    let mut stored = 0;
    for i in 0..N {
        let answer = common::ws_recv(&mut ws);
        assert_eq!(
            answer["ref"], i,
            "answers in the order of the publishes: {answer}"
        );
        if i == 7 {
            assert_eq!(answer["code"], "invalid", "{answer}");
            continue;
        }
        if answer["type"] == "error" {
            assert_eq!(answer["code"], "unavailable", "{answer}");
            assert!(i >= 256, "refused with fewer than 256 awaiting: {answer}");
            continue;
        }
        assert_eq!(answer["type"], "published", "{answer}");
        stored += 1;
        let seq = answer["seq"].as_u64().unwrap();
        assert!(seq > last_seq[i % 2], "{answer}");
        last_seq[i % 2] = seq;
    }
    let last_seq = last_seq[0].max(last_seq[1]);
    // A message that is not a publish is answered at once, the publishes
    // in their order.
    for i in 0..5 {
        common::ws_send(
            &mut ws,
            serde_json::json!({"op": "publish", "ref": 1000 + i, "topic": "odd", "type": "t.n"}),
        );
    }
    common::ws_send(&mut ws, serde_json::json!({"op": "ping", "ref": "p"}));
    let answers: Vec<Value> = (0..6).map(|_| common::ws_recv(&mut ws)).collect();
    let publishes: Vec<&Value> = answers
        .iter()
        .filter(|a| a["type"] == "published")
        .collect();
    let refs: Vec<u64> = publishes
        .iter()
        .map(|a| a["ref"].as_u64().unwrap())
        .collect();
    assert_eq!(refs, (1000..1005).collect::<Vec<_>>(), "{answers:?}");
    assert_eq!(answers.iter().filter(|a| a["type"] == "pong").count(), 1);
    let last_seq = last_seq + 5;
    // HTTP: three publishes pipelined on one connection, answered in order.
    let mut s = TcpStream::connect(a.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut raw = String::new();
    for i in 0..3 {
        let body = format!("{{\"type\":\"t.n\",\"data\":{i}}}");
        raw.push_str(&format!(
            "POST /v1/topics/even/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    s.write_all(raw.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        seqs.push(answer["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, [last_seq + 1, last_seq + 2, last_seq + 3]);
    wait_for_replicas(&[&a], stored + 5 + 3);
}

#[test]
fn a_data_directory_that_is_not_a_replica_of_the_stream_is_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let a = Node::start(dir.path(), &nats, "a");
    assert_eq!(publish(a.addr, "orders", "1", None).0, 200);
    // A single node's data directory, with more events than the stream.
    let port = free_port();
    let data = dir.path().join("b");
    let single = KillOnDrop(Some(
        Command::new(HERALD)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(&data)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, "herald");
    for i in 0..3 {
        assert_eq!(publish(addr, "orders", &i.to_string(), None).0, 200);
    }
    drop(single);
    // As a cluster node it never becomes ready, says why, and publishes
    // nothing.
    let b = Node::spawn(dir.path(), &nats, "b");
    let deadline = Instant::now() + Duration::from_secs(5);
    let why = loop {
        let (status, text) = http_text(b.addr, "GET", "/readyz", "", "");
        assert_eq!(status, 503, "{text}");
        if text.contains("not a replica") {
            break text;
        }
        assert!(Instant::now() < deadline, "no reason given: {text}");
        thread::sleep(Duration::from_millis(50));
    };
    assert!(why.contains("holds 3 events"), "{why}");
    let (status, e) = publish(b.addr, "orders", "9", None);
    assert_eq!(status, 503, "{e}");
    assert_eq!(all_events(a.addr).len(), 1, "nothing reached the stream");
}

fn heartbeat(addr: SocketAddr, client: &str) -> (u16, Value) {
    let body = format!("{{\"topic\":\"room\",\"client_id\":\"{client}\",\"user\":\"u-{client}\"}}");
    http(addr, "POST", "/v1/presence/heartbeat", "", &body)
}

fn present(addr: SocketAddr) -> Vec<String> {
    let (status, list) = http(addr, "GET", "/v1/topics/room/presence", "", "");
    assert_eq!(status, 200, "{list}");
    let mut ids: Vec<String> = list["present"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn presence_is_shared_by_the_nodes_and_a_killed_nodes_sessions_expire_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let mut a = Some(Node::start(dir.path(), &nats, "a"));
    let b = Node::start(dir.path(), &nats, "b");
    let c = Node::start(dir.path(), &nats, "c");
    let a_addr = a.as_ref().unwrap().addr;
    for (addr, client) in [(a_addr, "c1"), (a_addr, "c2"), (b.addr, "c3")] {
        let (status, joined) = heartbeat(addr, client);
        assert_eq!(
            (status, &joined["joined"]),
            (200, &Value::from(true)),
            "{joined}"
        );
    }
    // A heartbeat on another node refreshes the session: no second join.
    let (status, again) = heartbeat(c.addr, "c1");
    assert_eq!(
        (status, &again["joined"]),
        (200, &Value::from(false)),
        "{again}"
    );
    // Every node lists every session.
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in [&b, &c] {
        while present(node.addr) != ["c1", "c2", "c3"] {
            assert!(Instant::now() < deadline, "{:?}", present(node.addr));
            thread::sleep(Duration::from_millis(50));
        }
    }
    // A node started later lists the sessions that were there before it.
    let d = Node::start(dir.path(), &nats, "d");
    while present(d.addr) != ["c1", "c2", "c3"] {
        assert!(Instant::now() < deadline, "{:?}", present(d.addr));
        thread::sleep(Duration::from_millis(50));
    }
    drop(d);
    // A leave on another node than the join's.
    let leave = r#"{"topic":"room","client_id":"c3"}"#;
    let (status, left) = http(c.addr, "POST", "/v1/presence/leave", "", leave);
    assert_eq!((status, &left["left"]), (200, &Value::from(true)), "{left}");
    let (_, left) = http(b.addr, "POST", "/v1/presence/leave", "", leave);
    assert_eq!(left["left"], false, "{left}");
    // Node a dies with c1 and c2 joined; c1 goes on heartbeating on b.
    a.take();
    let deadline = Instant::now() + Duration::from_secs(15);
    while present(c.addr) != ["c1"] {
        assert!(Instant::now() < deadline, "{:?}", present(c.addr));
        assert_eq!(heartbeat(b.addr, "c1").0, 200);
        thread::sleep(Duration::from_millis(300));
    }
    // One event per change, the same on every node.
    thread::sleep(Duration::from_millis(1500));
    let events = |addr| {
        let (status, page) = http(
            addr,
            "GET",
            "/v1/topics/$presence.room/events?after=0",
            "",
            "",
        );
        assert_eq!(status, 200, "{page}");
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let who = e["data"]["client_id"].as_str().unwrap().to_owned();
                (e["type"].as_str().unwrap().to_owned(), who)
            })
            .collect::<Vec<_>>()
    };
    let seen = events(c.addr);
    let count = |kind: &str, who: &str| seen.iter().filter(|(k, w)| k == kind && w == who).count();
    for who in ["c1", "c2", "c3"] {
        assert_eq!(count("presence.join", who), 1, "{seen:?}");
    }
    assert_eq!(count("presence.leave", "c3"), 1, "{seen:?}");
    assert_eq!(count("presence.expire", "c2"), 1, "{seen:?}");
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(events(b.addr), seen);
}

#[test]
fn a_client_ahead_of_a_lagging_replica_is_held_not_reset() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let a = Node::start(dir.path(), &nats, "a");
    let b = Node::start(dir.path(), &nats, "b");
    // Node b is frozen while a takes 300 events: b lags by all of them.
    b.signal("STOP");
    let mut ws = common::ws_connect(&format!("ws://{}/v1/ws", a.addr));
    for i in 0..300 {
        common::ws_send(
            &mut ws,
            serde_json::json!({"op": "publish", "ref": i, "topic": "lag", "type": "t.n", "data": i}),
        );
        if i % 200 == 199 {
            for _ in 0..200 {
                assert_eq!(common::ws_recv(&mut ws)["type"], "published");
            }
        }
    }
    for _ in 0..100 {
        assert_eq!(common::ws_recv(&mut ws)["type"], "published");
    }
    b.signal("CONT");
    // At once, before b has caught up: a client that saw 250 on a resumes
    // on b (SSE), and a poller after 280 polls b.
    let mut sse = open_sse_at(b.addr, "/v1/events?topics=lag", Some(250));
    let (status, page) = http(
        b.addr,
        "GET",
        "/v1/events?topics=lag&after=280&wait=5000",
        "",
        "",
    );
    assert_eq!(status, 200, "{page}");
    let first = page["events"][0]["seq"].as_u64();
    assert_eq!(
        first,
        Some(281),
        "the poll starts after its position: {page}"
    );
    let mut seen = Vec::new();
    read_sse(&mut sse, 50, &mut seen);
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (251..=300).collect::<Vec<_>>(),
        "held, then exactly what followed"
    );
    // A position past the whole stream is not the cluster's: refused.
    let (status, e) = http(
        b.addr,
        "GET",
        "/v1/events?topics=lag&after=100000&wait=0",
        "",
        "",
    );
    assert_eq!(status, 503, "{e}");
}

#[test]
fn a_durable_consumer_acknowledged_on_one_node_resumes_after_it_on_another() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let a = Node::start(dir.path(), &nats, "a");
    let b = Node::start(dir.path(), &nats, "b");
    // The consumer's next `n` events on `node` (WebSocket: a consumer's
    // subscription), then the connection closes.
    let poll = |node: &Node, n: usize| {
        let mut ws = common::ws_connect(&format!("ws://{}/v1/ws", node.addr));
        common::ws_send(
            &mut ws,
            serde_json::json!({"op": "subscribe", "id": "s", "topics": ["orders"], "consumer": "billing", "after": 0}),
        );
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let m = common::ws_recv(&mut ws);
            match m["type"].as_str() {
                Some("subscribed") => {}
                Some("event") => seqs.push(m["seq"].as_u64().unwrap()),
                _ => panic!("unexpected {m}"),
            }
        }
        seqs
    };
    let ack = |node: &Node, seq: u64| {
        let body = format!("{{\"seq\":{seq}}}");
        let (status, answer) = http(node.addr, "POST", "/v1/consumers/billing/ack", "", &body);
        assert_eq!(status, 200, "{answer}");
        answer["checkpoint"].as_u64().unwrap()
    };
    for i in 0..5 {
        assert_eq!(publish(a.addr, "orders", &i.to_string(), None).0, 200);
    }
    wait_for_replicas(&[&a, &b], 5);
    assert_eq!(poll(&a, 5), [1, 2, 3, 4, 5]);
    assert_eq!(ack(&a, 3), 3);
    // On b, the consumer resumes after what a acknowledged.
    assert_eq!(poll(&b, 2), [4, 5]);
    assert_eq!(ack(&b, 5), 5);
    // And on a again, after what b acknowledged.
    assert_eq!(publish(b.addr, "orders", "6", None).0, 200);
    wait_for_replicas(&[&a, &b], 6);
    assert_eq!(poll(&a, 1), [6]);
}

/// A poll page's items: `Ok(seq)` for an event, `Err((from, to))` for a
/// gap notice.
fn poll_items(addr: SocketAddr, path: &str) -> Vec<Result<u64, (u64, u64)>> {
    let (status, page) = http(addr, "GET", path, "", "");
    assert_eq!(status, 200, "{page}");
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| match item.get("gap") {
            Some(g) => Err((g["from"].as_u64().unwrap(), g["to"].as_u64().unwrap())),
            None => Ok(item["seq"].as_u64().unwrap()),
        })
        .collect()
}

#[test]
fn events_the_stream_dropped_before_a_node_had_them_reach_its_clients_as_a_gap() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    // The stream keeps about 16 KiB: a hundred-odd of these events.
    let small = "retention_max_bytes = 16384\n";
    let a = Node::start_with(dir.path(), &nats, "a", small);
    let b = Node::start_with(dir.path(), &nats, "b", small);
    for i in 0..3 {
        assert_eq!(publish(a.addr, "early", &i.to_string(), None).0, 200);
    }
    for i in 0..2 {
        assert_eq!(publish(a.addr, "orders", &i.to_string(), None).0, 200);
    }
    wait_for_replicas(&[&a, &b], 5);
    drop(b); // SIGKILL: b has 1..=5
    for i in 0..400 {
        let (status, body) = publish(a.addr, "orders", &format!("{{\"n\":{i}}}"), None);
        assert_eq!(status, 200, "{body}");
    }
    let b = Node::start_with(dir.path(), &nats, "b", small);
    wait_for_replicas(&[&a], 405);
    // b's clients, resuming where they were: a gap for what the stream
    // dropped, then every event it still holds, in order.
    let deadline = Instant::now() + Duration::from_secs(20);
    let items = loop {
        let items = poll_items(b.addr, "/v1/events?topics=>&after=5&limit=1000&wait=0");
        if items.last() == Some(&Ok(405)) || Instant::now() > deadline {
            break items;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let Err((6, last_dropped)) = items[0] else {
        panic!("expected a gap from 6 first: {items:?}");
    };
    let first_kept = last_dropped + 1;
    assert!(
        first_kept > 6 && first_kept < 400,
        "the stream starts at {first_kept}"
    );
    let expected: Vec<_> = (first_kept..=405).map(Ok).collect();
    assert_eq!(items[1..], expected[..], "then every event it holds");
    // A single-topic reader gets the gap in its topic's sequences.
    let topic_items = poll_items(b.addr, "/v1/topics/orders/events?after=2&limit=5&wait=0");
    assert_eq!(
        topic_items[0],
        Err((3, first_kept - 4)),
        "orders' events 3.. were at global sequences 6..: {topic_items:?}"
    );
    let (_, metrics) = http_text(b.addr, "GET", "/metrics", "", "");
    assert!(
        metrics.contains(&format!(
            "herald_cluster_skipped_sequences_total {}",
            first_kept - 6
        )),
        "{metrics}"
    );
    // A new node with an empty data directory joins though the stream no
    // longer holds sequence 1: its readers get the gap from 1.
    let c = Node::start_with(dir.path(), &nats, "c", small);
    let items = poll_items(c.addr, "/v1/events?topics=>&after=0&limit=1000&wait=0");
    assert_eq!(items[0], Err((1, last_dropped)), "{items:?}");
    assert_eq!(items.len() as u64, 1 + 405 - last_dropped);
    // c knows nothing of "early", whose events the stream dropped: it
    // publishes past any topic sequence "early" can have had, and a (which
    // has early 1..=3) and b accept the jump.
    let (status, first_early) = publish(c.addr, "early", "1", None);
    assert_eq!(status, 200, "{first_early}");
    let jumped = first_early["topic_seq"].as_u64().unwrap();
    assert!(jumped > 3, "{first_early}");
    let (status, next_early) = publish(a.addr, "early", "2", None);
    assert_eq!(status, 200, "{next_early}");
    assert_eq!(next_early["topic_seq"].as_u64(), Some(jumped + 1));
    wait_for_replicas(&[&a], 407);
    for node in [&b, &c] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while all_events(node.addr).last().map(|e| e["seq"].as_u64()) != Some(Some(407)) {
            assert!(Instant::now() < deadline, "a replica did not take the jump");
            thread::sleep(Duration::from_millis(50));
        }
    }
    let tail = |addr| -> Vec<Value> {
        all_events(addr)
            .into_iter()
            .filter(|e| e["seq"].as_u64().is_some_and(|s| s > last_dropped))
            .collect()
    };
    let reference = tail(a.addr);
    assert_eq!(tail(b.addr), reference);
    assert_eq!(tail(c.addr), reference);
    // The skip is in b's log, where `herald log verify` shows it.
    drop(b);
    let out = Command::new(HERALD)
        .args(["log", "verify"])
        .arg(dir.path().join("b").join("log"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "skip: sequences 6..={last_dropped} were never stored"
        )),
        "{text}"
    );
}

/// The head of the answer to a raw HTTP request (status line and headers).
fn answer_head(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "head cut short: {head}"
        );
        if line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

#[test]
fn a_client_held_longer_than_replica_wait_gets_503_and_one_the_replica_reaches_is_served() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"));
    let a = Node::start(dir.path(), &nats, "a");
    for i in 0..3 {
        assert_eq!(publish(a.addr, "held", &i.to_string(), None).0, 200);
    }
    // Topic positions ahead of the replica are held (nothing asks the
    // stream for them); the replica never reaches 10 here. Each transport
    // waits replica_wait_ms (1 500), then refuses with a retryable 503.
    let started = Instant::now();
    let poll = thread::spawn(move || {
        let (status, body) = http(
            a.addr,
            "GET",
            "/v1/topics/held/events?after=10&wait=20000",
            "",
            "",
        );
        (status, body, Instant::now())
    });
    let addr = a.addr;
    let sse = thread::spawn(move || {
        answer_head(
            addr,
            "GET /v1/topics/held/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nLast-Event-ID: 10\r\n\r\n",
        )
    });
    let mut ws = common::ws_connect(&format!("ws://{}/v1/ws", a.addr));
    common::ws_send(
        &mut ws,
        serde_json::json!({"op": "subscribe", "ref": "r1", "id": "h", "topic": "held", "after": 10}),
    );
    assert_eq!(common::ws_recv(&mut ws)["type"], "subscribed");
    let error = common::ws_recv(&mut ws);
    assert_eq!(
        (
            error["type"].as_str(),
            error["ref"].as_str(),
            error["code"].as_str()
        ),
        (Some("error"), Some("r1"), Some("unavailable")),
        "{error}"
    );
    let (status, body, answered) = poll.join().unwrap();
    assert_eq!(status, 503, "{body}");
    let waited = answered - started;
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(15),
        "answered after {waited:?}, not at the hold's end"
    );
    let head = sse.join().unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("Retry-After: 1\r\n"), "{head}");
    // The subscription is gone: unsubscribing it is refused.
    common::ws_send(&mut ws, serde_json::json!({"op": "unsubscribe", "id": "h"}));
    assert_eq!(common::ws_recv(&mut ws)["code"], "not_found");
    // A position the replica reaches within the hold is served: a poll
    // after 4 while the topic has 3, then two more events.
    let poll = thread::spawn(move || {
        http(
            addr,
            "GET",
            "/v1/topics/held/events?after=4&wait=20000",
            "",
            "",
        )
    });
    thread::sleep(Duration::from_millis(200));
    for i in 3..5 {
        assert_eq!(publish(addr, "held", &i.to_string(), None).0, 200);
    }
    let (status, page) = poll.join().unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"][0]["topic_seq"], 5, "{page}");
}
