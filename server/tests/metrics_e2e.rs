//! `/metrics` against a real server on loopback: what subscriptions deliver
//! shows within a second, and a gap notice at once, however few events a
//! subscription has read.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;

use common::{open_sse, test_config};
use herald_server::Server;

/// Sends one request on a fresh connection; returns (status, body).
fn request(server: &Server, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Publishes `n` events with `data` as their payload, in batches of `batch`.
fn publish(server: &Server, topic: &str, n: usize, batch: usize, data: &str) {
    let mut left = n;
    while left > 0 {
        let k = left.min(batch);
        let one = format!(r#"{{"type":"t","data":{data}}}"#);
        let body = format!("[{}]", vec![one; k].join(","));
        let (status, answer) = request(
            server,
            "POST",
            &format!("/v1/topics/{topic}/events"),
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{answer}");
        left -= k;
    }
}

/// The value of the sample named `name` (no labels) in an exposition.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes `/metrics` until `ok` holds for it, for at most one second;
/// returns the last scrape and whether `ok` held.
fn scrape_until(server: &Server, ok: impl Fn(&str) -> bool) -> (String, bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (status, text) = request(server, "GET", "/metrics", b"");
        assert_eq!(status, 200);
        if ok(&text) {
            return (text, true);
        }
        if Instant::now() >= deadline {
            return (text, false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_few_hundred_deliveries_show_within_a_second() {
    const EVENTS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(test_config(dir.path(), 2)).unwrap();
    let mut sse = open_sse(&server, "/v1/topics/m/events", None);
    publish(&server, "m", EVENTS as usize, 100, "1");
    let mut ids = 0;
    let mut line = String::new();
    while ids < EVENTS {
        line.clear();
        assert!(sse.read_line(&mut line).unwrap() > 0, "stream ended");
        ids += u64::from(line.starts_with("id: "));
    }
    // Each worker's feed is a broker subscription that sees every event,
    // far fewer than the thousands after which counts used to be folded.
    let (text, ok) = scrape_until(&server, |t| {
        sample(t, "herald_delivered_events_total").is_some_and(|n| n >= EVENTS)
            && sample(t, "herald_server_deliveries_total").is_some_and(|n| n >= EVENTS)
            && sample(t, "herald_delivery_latency_p50_ns").is_some_and(|ns| ns > 0)
            && sample(t, "herald_delivery_latency_max_ns").is_some_and(|ns| ns > 0)
    });
    assert!(ok, "deliveries not shown within a second:\n{text}");
    server.shutdown().unwrap();
}

#[test]
fn a_gap_notice_shows_at_once_while_the_stream_is_still_catching_up() {
    const EVENTS: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 1);
    config.max_body = 1 << 18;
    config.broker.ring_capacity = 1 << 21;
    config.max_output = 4096;
    // About 11 MiB of 16 KiB events kept: the first events are deleted, and
    // what is kept is more than the sockets can buffer for a client that
    // does not read, so its stream stays behind, its subscription open.
    config.broker.log.retention = herald_core::log::Retention {
        max_records: Some(700),
        override_pins: true,
        ..Default::default()
    };
    let server = Server::start(config).unwrap();
    let data = format!("\"{}\"", "x".repeat(16 * 1024));
    publish(&server, "r", EVENTS, 10, &data);
    let (before, _) = scrape_until(&server, |_| true);
    assert_eq!(
        sample(&before, "herald_gap_notices_total"),
        Some(0),
        "{before}"
    );
    // Replays from the first event: a gap notice, then the kept events.
    let mut sse = open_sse(&server, "/v1/topics/r/events?after=0", None);
    let (text, ok) = scrape_until(&server, |t| {
        sample(t, "herald_gap_notices_total") == Some(1)
    });
    assert!(ok, "the gap notice not counted within a second:\n{text}");
    // It was delivered, and the stream is still behind: its client has not
    // read anything yet.
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let mut line = String::new();
        assert!(sse.read_line(&mut line).unwrap() > 0, "stream ended");
        if !line.trim().is_empty() && !line.starts_with("retry:") {
            lines.push(line.trim_end().to_owned());
        }
    }
    assert_eq!(
        lines,
        ["event: connected", r#"data: {"position":0}"#, "event: gap"]
    );
    server.shutdown().unwrap();
}
