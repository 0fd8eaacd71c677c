//! Retention by age on a timer: a server whose log never fills a segment
//! still deletes events older than `retention_max_age_secs`, and a reader
//! from the start gets a gap notice for them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use herald_server::Server;
use serde_json::Value;

fn request(server: &Server, method: &str, path: &str, body: &str) -> Value {
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap()
}

#[test]
fn events_older_than_the_retention_age_go_without_a_segment_roll() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path(), 1);
    // 1 MiB segments, three small events: no roll will come.
    config.broker.log.retention.max_age = Some(Duration::from_secs(2));
    let server = Server::start(config).unwrap();
    for n in 1..=3 {
        request(
            &server,
            "POST",
            "/v1/topics/old/events",
            &format!(r#"{{"type":"t","data":{n}}}"#),
        );
    }
    let started = Instant::now();
    let answer = loop {
        let v = request(&server, "GET", "/v1/topics/old/events?after=0", "");
        if v["events"][0].get("gap").is_some() {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still there after 30 s: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(answer["events"][0]["gap"]["from"], 1);
    assert_eq!(answer["events"][0]["gap"]["to"], 3);
    assert_eq!(answer["events"].as_array().unwrap().len(), 1);
    // (Counted once the pass that deleted them returns.)
    let line = "herald_server_retention_expired_events_total 3\n";
    while !common::exchange_raw(
        &server,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .contains(line)
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no {line:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // New events are kept, and follow on.
    let v = request(&server, "POST", "/v1/topics/old/events", r#"{"type":"t"}"#);
    assert_eq!(v["topic_seq"], 4);
    server.shutdown().unwrap();
}
