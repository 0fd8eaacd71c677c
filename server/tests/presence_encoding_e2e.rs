//! One encoding of a presence session on every path: the broker's
//! `$presence` events, the C ABI's `herald_broker_presence_list`, and the
//! server's presence list and events give the same bytes for the same
//! session, tricky strings and metadata included. The reference is the
//! server's wire output: metadata compacted, `null` when it is empty or not
//! valid JSON.

use std::ffi::c_char;
use std::time::Duration;

mod common;

use common::{exchange_raw, test_config};
use herald_core::broker::{Session, StartAt};
use herald_core::{Broker, BrokerConfig, Delivery, Filter};
use herald_server::Server;
use serde_json::json;

const TOPIC: &str = "room.1";
const CLIENT: &str = "c\"1";
/// DEL and U+2028 are escaped (`\u007f`, `\u2028`), as everywhere.
const USER: &str = "al\\ice \u{2028}\u{7f}";
const DEVICE: &str = "ph\none 😀 </script>";
/// The metadata as the server stores what its clients send (serde_json's
/// text: keys sorted, no needless escapes), with insignificant whitespace,
/// which every path drops.
const METADATA: &str = " {\"a\" : null, \"b\" : [1, 2500.0, \"é\\\\n\"]} ";

/// Every path's encoding of the session up to its timestamps.
const HEAD: &str = r#"{"client_id":"c\"1","user":"al\\ice \u2028\u007f","device":"ph\none 😀 </script>","metadata":{"a":null,"b":[1,2500.0,"é\\n"]},"connected_at_ns":"#;

/// Checks that `got` is [`HEAD`], the timestamps, and the closing brace.
fn check(path: &str, got: &str) {
    let tail = got
        .strip_prefix(HEAD)
        .unwrap_or_else(|| panic!("{path}: {got}\nwanted it to start with {HEAD}"));
    let (connected, rest) = tail
        .split_once(r#","last_heartbeat_ns":"#)
        .unwrap_or_else(|| panic!("{path}: {got}"));
    let heartbeat = rest
        .strip_suffix('}')
        .unwrap_or_else(|| panic!("{path}: {got}"));
    for n in [connected, heartbeat] {
        assert!(
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
            "{path}: {got}"
        );
    }
}

/// A `$presence` event payload is the topic, then the session's fields.
fn session_of_event(path: &str, payload: &str) -> String {
    let fields = payload
        .strip_prefix(r#"{"topic":"room.1","#)
        .unwrap_or_else(|| panic!("{path}: {payload}"));
    format!("{{{fields}")
}

#[test]
fn core_events_c_abi_and_server_encode_a_session_alike() {
    // Core: the broker's own event, and its sessions' encoder.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path().join("core"))).unwrap();
    broker
        .presence_join(TOPIC, CLIENT, USER, DEVICE, METADATA)
        .unwrap();
    let mut sub = broker
        .subscribe(Filter::topic("$presence.room.1").unwrap(), StartAt::Seq(1))
        .unwrap();
    let Some(Delivery::Event(e)) = sub.next_timeout(Duration::from_secs(5)).unwrap() else {
        panic!("no presence.join event");
    };
    let payload = String::from_utf8(e.payload).unwrap();
    check("core event", &session_of_event("core event", &payload));
    check("core session", &broker.presence(TOPIC)[0].to_json());
    // Metadata that is not valid JSON (only a hand-built session holds
    // any: joins refuse it) is null, as the server always answered.
    for bad in ["{oops\n", "[1,]", "\"unterminated", "nul"] {
        let s = Session {
            metadata: bad.into(),
            ..broker.presence(TOPIC)[0].clone()
        };
        let mut hand_built = s.to_json();
        assert!(hand_built.contains(r#","metadata":null,"#), "{hand_built}");
        hand_built = hand_built.replace(
            r#","metadata":null,"#,
            r#","metadata":{"a":null,"b":[1,2500.0,"é\\n"]},"#,
        );
        check("hand-built session", &hand_built);
        assert!(matches!(
            broker.presence_join(TOPIC, "c2", "", "", bad),
            Err(herald_core::BrokerError::Presence(_))
        ));
    }

    // The C ABI's presence list.
    let c_dir = dir.path().join("c");
    let c_dir = c_dir.to_str().unwrap();
    let text = |s: &str| (s.as_ptr().cast::<c_char>(), s.len());
    let mut list = vec![0u8; 4096];
    let mut len = 0usize;
    // SAFETY: every pointer is a live local or string with its true length;
    // the broker handle is used only while open.
    unsafe {
        let mut config = std::mem::zeroed::<herald::herald_config>();
        assert_eq!(
            herald::herald_config_init(&mut config),
            herald::herald_result::HERALD_OK
        );
        (config.data_dir, config.data_dir_len) = text(c_dir);
        let mut b = std::ptr::null_mut();
        assert_eq!(
            herald::herald_broker_open(&config, &mut b),
            herald::herald_result::HERALD_OK
        );
        let [t, c, u, d, m] = [TOPIC, CLIENT, USER, DEVICE, METADATA].map(text);
        let r = herald::herald_broker_presence_join(
            b, t.0, t.1, c.0, c.1, u.0, u.1, d.0, d.1, m.0, m.1,
        );
        assert_eq!(r, herald::herald_result::HERALD_OK);
        let bad = text("{oops");
        let r = herald::herald_broker_presence_join(
            b, t.0, t.1, c.0, c.1, u.0, u.1, d.0, d.1, bad.0, bad.1,
        );
        assert_eq!(r, herald::herald_result::HERALD_E_PRESENCE);
        let r = herald::herald_broker_presence_list(
            b,
            t.0,
            t.1,
            list.as_mut_ptr(),
            list.len(),
            &mut len,
            std::ptr::null_mut(),
        );
        assert_eq!(r, herald::herald_result::HERALD_OK);
        assert_eq!(
            herald::herald_broker_close(b),
            herald::herald_result::HERALD_OK
        );
    }
    let list = std::str::from_utf8(&list[..len]).unwrap();
    let one = list
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or_else(|| panic!("C ABI list: {list}"));
    check("C ABI list", one);

    // The server: its presence list and its event, over HTTP.
    let server = Server::start(test_config(&dir.path().join("server"), 1)).unwrap();
    let metadata: serde_json::Value = serde_json::from_str(METADATA).unwrap();
    let body = json!({"topic": TOPIC, "client_id": CLIENT, "user": USER, "device": DEVICE,
                      "metadata": metadata})
    .to_string();
    let http = |method: &str, path: &str, body: &str| {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = exchange_raw(&server, raw.as_bytes());
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
        body.to_owned()
    };
    http("POST", "/v1/presence/heartbeat", &body);
    let list = http("GET", "/v1/topics/room.1/presence", "");
    let one = list
        .strip_prefix(r#"{"topic":"room.1","present":["#)
        .and_then(|l| l.strip_suffix("]}"))
        .unwrap_or_else(|| panic!("server list: {list}"));
    check("server list", one);
    let poll = http("GET", "/v1/topics/$presence.room.1/events?after=0", "");
    let data = poll
        .split_once(r#""data":"#)
        .and_then(|(_, d)| d.split_once(r#"}}],"next_after""#))
        .map(|(d, _)| format!("{d}}}"))
        .unwrap_or_else(|| panic!("server event: {poll}"));
    check("server event", &session_of_event("server event", &data));
    server.shutdown().unwrap();
}
