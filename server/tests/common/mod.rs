//! Helpers shared by the server's end-to-end tests.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use herald_server::{Server, ServerConfig};

/// A small server for tests: an ephemeral loopback port, a small ring and
/// log in `dir`, 8 KiB bodies.
#[allow(dead_code)] // not every test file starts a server in process
pub(crate) fn test_config(dir: &std::path::Path, workers: usize) -> ServerConfig {
    let mut config = ServerConfig::new();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.workers = workers;
    config.broker = herald_core::BrokerConfig::new(dir);
    config.broker.ring_capacity = 1 << 16;
    config.broker.log.segment_size = 1 << 20;
    config.broker.log.prefault = false;
    config.max_body = 8192;
    config
}

/// Opens an SSE stream (resuming after `last_event_id` if given) and reads
/// its `200` head. Reads time out after 20 s, so a broken server fails the
/// test instead of hanging it.
#[allow(dead_code)] // not every test file streams
pub(crate) fn open_sse(
    server: &Server,
    path: &str,
    last_event_id: Option<u64>,
) -> BufReader<TcpStream> {
    open_sse_at(server.local_addr(), path, last_event_id)
}

/// [`open_sse`] on the server at `addr`.
#[allow(dead_code)]
pub(crate) fn open_sse_at(
    addr: std::net::SocketAddr,
    path: &str,
    last_event_id: Option<u64>,
) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n");
    if let Some(id) = last_event_id {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "head cut short");
        if line == "\r\n" {
            return reader;
        }
    }
}

/// Sends `raw` bytes on a fresh connection and returns everything the
/// server answers until it closes (reads time out after 20 s).
#[allow(dead_code)]
pub(crate) fn exchange_raw(server: &Server, raw: &[u8]) -> String {
    use std::io::Read;
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A WebSocket client of a test server.
#[allow(dead_code)]
pub(crate) type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// Connects a WebSocket to `url` (reads time out after 20 s).
#[allow(dead_code)]
pub(crate) fn ws_connect(url: &str) -> Ws {
    let (ws, response) = tungstenite::connect(url).unwrap();
    assert_eq!(response.status(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    ws
}

/// Kills (SIGKILL) the child process when dropped: a test that fails before
/// it is done with a server leaves none behind.
#[allow(dead_code)]
pub(crate) struct KillOnDrop(pub(crate) Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a server listens on `addr`. A connection to itself does not
/// count: a client whose ephemeral port happens to be the free port it
/// connects to (as `free_port`'s are) connects to itself while nothing
/// listens, and then holds the port the server was to bind.
#[allow(dead_code)]
pub(crate) fn listening(addr: impl std::net::ToSocketAddrs) -> bool {
    std::net::TcpStream::connect(addr).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

/// A loopback port free a moment ago.
#[allow(dead_code)]
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HS256 token of `tenant` with these grants, valid for ten minutes.
#[allow(dead_code)]
pub(crate) fn token(secret: &[u8], tenant: &str, publish: &[&str], subscribe: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = herald_server::Claims {
        sub: "t".into(),
        exp,
        tenant: tenant.into(),
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
    };
    herald_server::mint_hs256(&claims, secret).unwrap()
}

/// Sends one JSON message.
#[allow(dead_code)]
pub(crate) fn ws_send(ws: &mut Ws, v: serde_json::Value) {
    ws.send(tungstenite::Message::text(v.to_string())).unwrap();
}

/// The next JSON message (pings and pongs skipped).
#[allow(dead_code)]
pub(crate) fn ws_recv(ws: &mut Ws) -> serde_json::Value {
    loop {
        match ws.read().unwrap() {
            tungstenite::Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// (status, body) of one HTTP request to `addr`.
#[allow(dead_code)]
pub(crate) fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, body) = http_text(addr, method, path, headers, body);
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// (status, body text) of one HTTP request to `addr`.
#[allow(dead_code)]
pub(crate) fn http_text(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(raw.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    (status, body.to_owned())
}
