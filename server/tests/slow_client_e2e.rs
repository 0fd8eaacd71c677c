//! A slow client does not hold the others back: one client stops reading
//! while 100 others (50 SSE, 50 WebSocket) keep up; the others receive every
//! event, exactly once and in order, while the slow one is still stalled; the
//! slow one then catches up with nothing missing.
//!
//! Nothing here measures time: the evidence is the order in which things
//! happen. Every fast client has received everything before the slow client
//! reads its first byte, and what the slow client then reads is complete.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{open_sse, test_config};
use herald_server::Server;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

const TOPIC: &str = "flood";
const EVENT_TYPE: &str = "blob";
/// Events published while the slow client reads nothing: about 10 MB per
/// connection, far more than the ring (64 KiB), the output bound (16 KiB)
/// and the kernel's socket buffers (a few MB on loopback) hold.
const N: u64 = 5_000;
/// Bytes of padding in each payload (the payload is about 2 KB).
const PAD: usize = 2000;
const FAST_SSE: usize = 50;
const FAST_WS: usize = 50;
/// The publisher stays at most this many events ahead of the slowest fast
/// client (about 32 KiB, half the ring), so that the fast clients really
/// keep up and only the slow client falls behind.
const WINDOW: u64 = 16;
/// Bounds every blocking read: a broken server fails the test, never hangs it.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Payloads of events `1..=N + 1` (index `topic_seq - 1`): JSON objects
/// whose content depends on the index, so a lost, repeated, reordered or
/// corrupted event cannot go unnoticed.
struct Expected {
    pads: Vec<String>,
    payloads: Vec<String>,
}

impl Expected {
    fn new() -> Expected {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let pads: Vec<String> = (1..=N + 1)
            .map(|i| {
                // xorshift64, seeded by the index.
                let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                (0..PAD)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
                    })
                    .collect()
            })
            .collect();
        let payloads = pads
            .iter()
            .enumerate()
            .map(|(k, pad)| format!(r#"{{"i":{},"pad":"{pad}"}}"#, k + 1))
            .collect();
        Expected { pads, payloads }
    }

    fn payload(&self, topic_seq: u64) -> &str {
        &self.payloads[(topic_seq - 1) as usize]
    }

    fn pad(&self, topic_seq: u64) -> &str {
        &self.pads[(topic_seq - 1) as usize]
    }
}

type Ws = WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Sse,
    Ws,
}

/// A subscriber to `TOPIC`, subscribed from the next event published.
enum Client {
    Sse {
        reader: BufReader<TcpStream>,
        line: String,
    },
    Ws(Box<Ws>),
}

impl Client {
    /// Connects and subscribes; returns once the server has confirmed the
    /// subscription (the SSE `connected` notice, the WebSocket
    /// `subscribed`).
    fn open(server: &Server, kind: Kind) -> Client {
        match kind {
            Kind::Sse => {
                let mut reader = open_sse(server, &format!("/v1/topics/{TOPIC}/events"), None);
                let mut line = String::new();
                for expected in [
                    "retry: 2000",
                    "",
                    "event: connected",
                    r#"data: {"position":0}"#,
                    "",
                ] {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    assert_eq!(line.trim_end_matches(['\r', '\n']), expected, "subscribing");
                }
                Client::Sse { reader, line }
            }
            Kind::Ws => {
                let (mut ws, response) =
                    tungstenite::connect(format!("ws://{}/v1/ws", server.local_addr())).unwrap();
                assert_eq!(response.status(), 101);
                if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
                    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                }
                let subscribe = json!({"op": "subscribe", "id": "f", "topic": TOPIC});
                ws.send(Message::text(subscribe.to_string())).unwrap();
                let mut client = Client::Ws(Box::new(ws));
                assert_eq!(
                    client.next_ws_message("subscribing"),
                    json!({"type": "subscribed", "id": "f", "recovered": false})
                );
                client
            }
        }
    }

    /// The next text message; `context` names the client and what it waits
    /// for in failures.
    fn next_ws_message(&mut self, context: &str) -> Value {
        let Client::Ws(ws) = self else {
            unreachable!("not a WebSocket client")
        };
        loop {
            match ws.read() {
                Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).unwrap(),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => panic!("{context}: unexpected {other:?}"),
                Err(e) => panic!("{context}: {e}"),
            }
        }
    }

    /// Reads the next event and checks that it is event `k` of `TOPIC`,
    /// with its payload intact. `who` names the client in failures.
    fn expect_event(&mut self, k: u64, expected: &Expected, who: &str) {
        match self {
            Client::Sse { reader, line } => {
                let (mut id, mut event, mut data) = (None, None, None::<String>);
                loop {
                    line.clear();
                    let read = reader
                        .read_line(line)
                        .unwrap_or_else(|e| panic!("{who}: waiting for event {k}: {e}"));
                    assert!(read > 0, "{who}: the stream ended before event {k}");
                    let l = line.trim_end_matches(['\r', '\n']);
                    if l.is_empty() {
                        if id.is_none() && event.is_none() && data.is_none() {
                            continue; // the end of `retry:` or of a comment
                        }
                        break;
                    } else if l.starts_with(':') || l.starts_with("retry:") {
                        continue;
                    } else if let Some(v) = l.strip_prefix("id: ") {
                        id = Some(v.parse::<u64>().unwrap());
                    } else if let Some(v) = l.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = l.strip_prefix("data: ") {
                        // The payloads are single lines.
                        assert!(data.is_none(), "{who}: event {k}: a second data line");
                        data = Some(v.to_owned());
                    } else {
                        panic!("{who}: unexpected line {l:?}");
                    }
                }
                let event = event.unwrap_or_else(|| "message".to_owned());
                assert_eq!(
                    event,
                    EVENT_TYPE,
                    "{who}: expected event {k}, got {event} {}",
                    data.unwrap_or_default()
                );
                assert_eq!(id, Some(k), "{who}: events out of order");
                assert!(
                    data.as_deref() == Some(expected.payload(k)),
                    "{who}: event {k}: wrong payload"
                );
            }
            Client::Ws(_) => {
                let m = self.next_ws_message(&format!("{who}: waiting for event {k}"));
                assert_eq!(m["type"], "event", "{who}: expected event {k}, got {m}");
                assert_eq!(m["topic_seq"], k, "{who}: events out of order");
                assert_eq!(m["sub"], "f", "{who}");
                assert_eq!(m["topic"], TOPIC, "{who}");
                assert_eq!(m["event_type"], EVENT_TYPE, "{who}");
                assert_eq!(m["data"]["i"], k, "{who}: event {k}: wrong payload");
                assert!(
                    m["data"]["pad"].as_str() == Some(expected.pad(k)),
                    "{who}: event {k}: wrong payload"
                );
            }
        }
    }
}

fn one_slow_client_among_100_fast_ones(slow_kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), 2);
    config.max_output = 16 << 10;
    // Slow, not dead: the slow client must not be closed while it waits.
    config.slow_client_deadline = Duration::from_secs(60);
    let server = Server::start(config).unwrap();
    let expected = Expected::new();
    let publisher = server.broker().publisher(TOPIC).unwrap();
    let publish = |k: u64| {
        let p = publisher
            .publish(
                EVENT_TYPE,
                expected.payload(k).as_bytes(),
                Default::default(),
            )
            .unwrap();
        assert_eq!(p.topic_seq, k);
    };

    let mut slow = Client::open(&server, slow_kind);
    let fast: Vec<(String, Client)> = (0..FAST_SSE)
        .map(|i| (format!("fast SSE client {i}"), Kind::Sse))
        .chain((0..FAST_WS).map(|i| (format!("fast WebSocket client {i}"), Kind::Ws)))
        .map(|(who, kind)| (who, Client::open(&server, kind)))
        .collect();
    // Events each fast client has received and checked.
    let progress: Vec<AtomicU64> = fast.iter().map(|_| AtomicU64::new(0)).collect();

    let mut fast = std::thread::scope(|scope| {
        let readers: Vec<_> = fast
            .into_iter()
            .zip(&progress)
            .map(|((who, mut client), progress)| {
                let expected = &expected;
                scope.spawn(move || {
                    for k in 1..=N {
                        client.expect_event(k, expected, &who);
                        progress.store(k, Ordering::Release);
                    }
                    (who, client)
                })
            })
            .collect();
        // Publish as fast as the fast clients read, never further than
        // WINDOW ahead of the slowest of them.
        let (mut published, mut last_min, mut last_change) = (0, 0, Instant::now());
        while published < N {
            let min = progress
                .iter()
                .map(|p| p.load(Ordering::Acquire))
                .min()
                .unwrap();
            if min + WINDOW / 2 >= published {
                while published < (min + WINDOW).min(N) {
                    published += 1;
                    publish(published);
                }
                continue;
            }
            if readers.iter().any(|r| r.is_finished()) {
                break; // one failed: its panic is raised below
            }
            if min != last_min {
                (last_min, last_change) = (min, Instant::now());
            }
            assert!(
                last_change.elapsed() < READ_TIMEOUT,
                "the fast clients stopped at event {min} of {published} published"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        // A reader that failed early goes first: its panic is the cause, not
        // the others' timeouts.
        let mut readers = readers;
        if let Some(i) = readers.iter().position(|r| r.is_finished()) {
            readers.swap(0, i);
        }
        readers
            .into_iter()
            .map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Vec<_>>()
    });

    // Every fast client has all N events, and the slow client has read
    // nothing since it subscribed: it starts now, and gets everything, once,
    // in order, intact.
    let slow_who = format!("the slow {slow_kind:?} client");
    for k in 1..=N {
        slow.expect_event(k, &expected, &slow_who);
    }
    // Caught up, it is live again, like the others.
    publish(N + 1);
    slow.expect_event(N + 1, &expected, &slow_who);
    for (who, client) in &mut fast {
        client.expect_event(N + 1, &expected, who);
    }
    server.shutdown().unwrap();
}

#[test]
fn a_stalled_sse_client_does_not_hold_back_100_others_and_catches_up() {
    one_slow_client_among_100_fast_ones(Kind::Sse);
}

#[test]
fn a_stalled_websocket_client_does_not_hold_back_100_others_and_catches_up() {
    one_slow_client_among_100_fast_ones(Kind::Ws);
}
