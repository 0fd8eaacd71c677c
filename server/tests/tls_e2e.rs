//! TLS termination end to end: a certificate made by the `openssl` command
//! for this run, the server with `tls_cert`/`tls_key`, and a rustls client
//! for HTTPS publishing, an SSE stream, WebSocket (tungstenite over the
//! rustls stream) and metrics; plain HTTP and garbage on the TLS port are
//! refused without harming the server; bad key material stops startup with
//! a message naming it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::test_config;
use herald_server::Server;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};
use tungstenite::Message;

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A certificate authority and a `localhost` / 127.0.0.1 certificate it
/// signed, made with the `openssl` command in `dir`.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian's openssl package) makes the test certificate");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_certs(dir: &Path) -> Certs {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=Herald test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "cert.csr"]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\nkeyUsage = digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "cert.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    );
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

fn start(dir: &Path, certs: &Certs) -> Server {
    let mut config = test_config(&dir.join("data"), 2);
    config.tls_cert = Some(certs.cert.clone());
    config.tls_key = Some(certs.key.clone());
    // Messages larger than a TLS record (16 KiB).
    config.max_body = 32 * 1024;
    config.broker.ring_capacity = 1 << 18;
    let server = Server::start(config).unwrap();
    assert!(server.is_tls());
    server
}

fn client_config(certs: &Certs) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&certs.ca).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connection to the server, verified against the test CA as
/// `localhost` (reads time out after 20 s).
fn connect(server: &Server, client: &Arc<ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(server.local_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    StreamOwned::new(ClientConnection::new(client.clone(), name).unwrap(), tcp)
}

/// One request on a fresh TLS connection, `Connection: close`; the whole
/// answer, read to the server's close_notify (an unclean close fails).
fn request(
    server: &Server,
    client: &Arc<ClientConfig>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let mut tls = connect(server, client);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(body).unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .expect("the answer, ended by close_notify");
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn publish(server: &Server, client: &Arc<ClientConfig>, topic: &str, data: &Value) -> Value {
    let body = json!({"type": "msg", "data": data}).to_string();
    let (status, body) = request(
        server,
        client,
        "POST",
        &format!("/v1/topics/{topic}/events"),
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Opens an SSE stream over TLS and reads its `200` head.
fn open_sse(server: &Server, client: &Arc<ClientConfig>, topic: &str) -> BufReader<Tls> {
    let mut tls = connect(server, client);
    let req = format!(
        "GET /v1/topics/{topic}/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(tls);
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

/// Reads SSE frames until `n` events arrived; their `data:` as JSON.
/// Events are the frames with an `id:` (not the stream's other notices).
fn read_sse(reader: &mut BufReader<Tls>, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let (mut id, mut data) = (false, None);
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
        let l = line.trim_end();
        if l.is_empty() {
            if let (true, Some(d)) = (std::mem::take(&mut id), data.take()) {
                out.push(d);
            }
        } else if l.starts_with("id: ") {
            id = true;
        } else if let Some(d) = l.strip_prefix("data: ") {
            data = Some(serde_json::from_str(d).unwrap());
        }
    }
    out
}

fn metric(server: &Server, client: &Arc<ClientConfig>, name: &str) -> u64 {
    let (status, text) = request(server, client, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line[name.len() + 1..].parse().unwrap()
}

#[test]
fn https_publish_sse_and_websocket_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let server = start(dir.path(), &certs);
    let client = client_config(&certs);

    assert_eq!(
        request(&server, &client, "GET", "/readyz", b"").0,
        200,
        "HTTPS"
    );

    // SSE: live events, then a burst the client reads only after it was
    // all published (many TLS records; several events per write). Records
    // left waiting for a full socket are the unit tests' (`conn::tls`):
    // loopback's socket buffers take all of this at once.
    let mut sse = open_sse(&server, &client, "room.1");
    let first = publish(&server, &client, "room.1", &json!({"n": 1}));
    assert_eq!(first["topic_seq"], 1);
    assert_eq!(read_sse(&mut sse, 1), vec![json!({"n": 1})]);
    let pad = "x".repeat(6000);
    for n in 2..=40 {
        publish(&server, &client, "room.1", &json!({"n": n, "pad": pad}));
    }
    let burst = read_sse(&mut sse, 39);
    let ns: Vec<u64> = burst.iter().map(|v| v["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (2..=40).collect::<Vec<_>>());
    assert!(burst.iter().all(|v| v["pad"] == pad.as_str()));

    // WebSocket over the same TLS client: subscribe, publish over the
    // socket and over HTTPS, receive both.
    let tls = connect(&server, &client);
    let url = format!("wss://localhost:{}/v1/ws", server.local_addr().port());
    let (mut ws, response) = tungstenite::client(url.as_str(), tls).unwrap();
    assert_eq!(response.status(), 101);
    let send = |ws: &mut tungstenite::WebSocket<Tls>, v: Value| {
        ws.send(Message::text(v.to_string())).unwrap()
    };
    let recv = |ws: &mut tungstenite::WebSocket<Tls>| loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str::<Value>(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "a", "topic": "room.2"}),
    );
    assert_eq!(
        recv(&mut ws),
        json!({"type": "subscribed", "id": "a", "recovered": false})
    );
    // Larger than a TLS record and than the server's WebSocket read buffer.
    let big = json!({"big": "y".repeat(20_000)});
    send(
        &mut ws,
        json!({"op": "publish", "topic": "room.2", "type": "msg", "data": big, "ref": 1}),
    );
    let (mut acked, mut got) = (false, Vec::new());
    while !acked || got.is_empty() {
        let m = recv(&mut ws);
        match m["type"].as_str().unwrap() {
            "published" => acked = m["ref"] == 1,
            "event" => got.push(m["data"].clone()),
            other => panic!("unexpected {other}: {m}"),
        }
    }
    assert_eq!(got, vec![big]);
    publish(&server, &client, "room.2", &json!({"over": "https"}));
    let event = recv(&mut ws);
    assert_eq!(event["type"], "event");
    assert_eq!(event["data"], json!({"over": "https"}));
    ws.close(None).unwrap();
    // The server answers the close frame, then ends TLS with close_notify.
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unclean WebSocket close over TLS: {e}"),
        }
    }

    drop(sse);
    assert_eq!(
        metric(
            &server,
            &client,
            "herald_server_tls_handshake_failures_total"
        ),
        0
    );
    // Every connection above (and this one, counted before its request is
    // read): readyz, SSE, 40 publishes, WebSocket, a publish, a metrics.
    assert_eq!(
        metric(&server, &client, "herald_server_tls_handshakes_total"),
        46
    );
    server.shutdown().unwrap();
}

#[test]
fn plain_http_and_garbage_on_the_tls_port_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let server = start(dir.path(), &certs);
    let client = client_config(&certs);

    // Plain HTTP: not a TLS record. The server closes (after an alert, if
    // the socket takes it); no HTTP answer comes back.
    let mut plain = TcpStream::connect(server.local_addr()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A TLS record header announcing a client hello, then junk.
    let mut junk = TcpStream::connect(server.local_addr()).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    junk.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x08, 1, 0, 0, 4, 0xff, 0xff, 0xff, 0xff,
    ])
    .unwrap();
    let _ = junk.read_to_end(&mut Vec::new());
    // A client that connects and leaves without a word.
    drop(TcpStream::connect(server.local_addr()).unwrap());
    // A TLS client that does not trust the server's certificate.
    let stranger = {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        )
    };
    let mut untrusting = connect(&server, &stranger);
    assert!(untrusting
        .write_all(b"GET /readyz HTTP/1.1\r\n\r\n")
        .is_err());
    drop(untrusting);

    // The server still serves TLS clients, and counted the four.
    assert_eq!(request(&server, &client, "GET", "/readyz", b"").0, 200);
    let failed = "herald_server_tls_handshake_failures_total";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&server, &client, failed) < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(&server, &client, failed), 4);
    server.shutdown().unwrap();
}

#[test]
fn missing_or_mismatched_key_material_stops_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let start_err = |cert: Option<&Path>, key: Option<&Path>| {
        let mut config = test_config(&dir.path().join("data"), 1);
        config.tls_cert = cert.map(Path::to_path_buf);
        config.tls_key = key.map(Path::to_path_buf);
        Server::start(config).unwrap_err().to_string()
    };
    let e = start_err(Some(&certs.cert), None);
    assert!(e.contains("without its key"), "{e}");
    let e = start_err(None, Some(&certs.key));
    assert!(e.contains("without its certificate"), "{e}");
    let missing = dir.path().join("missing.pem");
    let e = start_err(Some(&missing), Some(&certs.key));
    assert!(
        e.contains("cannot read") && e.contains("missing.pem"),
        "{e}"
    );
    // The certificate given as the key, the key as the certificate.
    let e = start_err(Some(&certs.cert), Some(&certs.cert));
    assert!(
        e.contains("no private key") && e.contains("cert.pem"),
        "{e}"
    );
    let e = start_err(Some(&certs.key), Some(&certs.key));
    assert!(e.contains("no certificate") && e.contains("key.pem"), "{e}");
    // The CA's key with the server's certificate.
    let e = start_err(Some(&certs.cert), Some(&dir.path().join("ca.key")));
    assert!(
        e.contains("ca.key is not the key of the certificate in") && e.contains("cert.pem"),
        "{e}"
    );
}
