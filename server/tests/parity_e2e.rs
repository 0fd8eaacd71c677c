//! The same request gets the same verdict over HTTP and over WebSocket:
//! accepted with a result of the same shape, or refused with the same error
//! code (and, where both transports carry the request as JSON, the same
//! message). Against a real server with bearer tokens, from a table of
//! valid and invalid requests and from generated publish bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;

use common::test_config;
use herald_server::{mint_hs256, AuthConfig, Claims, Server};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tungstenite::{Message, WebSocket};

const SECRET: &[u8] = b"parity-secret";

type Ws = WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// What a transport said.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Accepted; the result's field names.
    Accepted(Vec<String>),
    /// Refused with this code (and message).
    Refused(String, String),
}

impl Verdict {
    /// Same outcome; `same_message`: refusals must also say the same thing.
    fn agrees(&self, other: &Verdict, same_message: bool) -> bool {
        match (self, other) {
            (Verdict::Accepted(a), Verdict::Accepted(b)) => a == b,
            // (An HTTP body over the limit is refused by the framing,
            // before it is read: the same code, its own message.)
            (Verdict::Refused(c1, m1), Verdict::Refused(c2, m2)) => {
                c1 == c2 && (!same_message || m1 == m2 || c1 == "too_large")
            }
            _ => false,
        }
    }
}

/// A request, as either transport carries it.
#[derive(Debug, Clone)]
enum Request {
    /// `POST /v1/topics/{topic}/events` | `{"op":"publish","topic":…}`.
    Publish(&'static str, Value),
    /// A batch: a JSON array body | `{"op":"publish","events":[…]}`, each
    /// event given the topic.
    PublishBatch(&'static str, Vec<Value>),
    /// A poll of `GET /v1/topics/{topic}/events` | `{"op":"subscribe","topic":…}`;
    /// `topic` None: `GET /v1/events` | `"topics"` (in the fields).
    Subscribe(Option<&'static str>, Value),
    /// `POST /v1/consumers/{name}/ack` | `{"op":"ack","consumer":…}`.
    Ack(&'static str, Value),
    /// `POST /v1/presence/{op}` | `{"op":op,…}`.
    Presence(&'static str, Value),
    /// `GET /v1/topics/{topic}/presence` | `{"op":"presence","topic":…}`.
    PresenceList(&'static str),
}

impl Request {
    /// Whether the request travels as JSON on both transports (so their
    /// error messages must match too; a query string carries only text).
    fn json_on_both(&self) -> bool {
        // (A batch's errors name an event by its place in the HTTP array,
        // by its path in the WebSocket message.)
        !matches!(self, Request::Subscribe(..) | Request::PublishBatch(..))
    }
}

struct Client {
    server: Server,
    token: String,
    ws: Ws,
    next_ref: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Client {
    fn start(dir: &std::path::Path) -> Client {
        let mut config = test_config(dir, 1);
        config.anonymous = Some(false);
        config.auth = AuthConfig {
            hs256_secret: Some(SECRET.to_vec()),
            rs256_public_pem: None,
        };
        let server = Server::start(config).unwrap();
        let claims = Claims {
            sub: "parity".into(),
            exp: now() + 3600,
            tenant: "acme".into(),
            publish: vec!["orders.*".into(), "rooms.>".into()],
            subscribe: vec!["orders.>".into(), "rooms.>".into()],
        };
        let token = mint_hs256(&claims, SECRET).unwrap();
        let url = format!("ws://{}/v1/ws?access_token={token}", server.local_addr());
        let (ws, _) = tungstenite::connect(url).unwrap();
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        }
        Client {
            server,
            token,
            ws,
            next_ref: 0,
        }
    }

    fn http(&self, method: &str, target: &str, body: &str) -> Verdict {
        let mut s = TcpStream::connect(self.server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]);
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let body: Value = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Verdict::Accepted(fields(&body));
        }
        let code = body["code"]
            .as_str()
            .map_or_else(|| format!("status {status}"), str::to_owned);
        let message = body["error"].as_str().unwrap_or("").to_owned();
        Verdict::Refused(code, message)
    }

    /// Sends one WebSocket message and reads its reply (by `ref`).
    fn ws(&mut self, mut msg: Map<String, Value>) -> (Verdict, Value) {
        self.next_ref += 1;
        let reference = self.next_ref;
        msg.insert("ref".into(), json!(reference));
        self.ws
            .send(Message::text(Value::Object(msg).to_string()))
            .unwrap();
        loop {
            let Message::Text(text) = self.ws.read().unwrap() else {
                continue;
            };
            let reply: Value = serde_json::from_str(text.as_str()).unwrap();
            if reply["type"] == "event" || reply["type"] == "gap" {
                continue; // a delivery to an earlier subscription
            }
            // Replies come in order: this one answers our message.
            let verdict = if reply["ref"] != json!(reference) {
                Verdict::Refused("ref not echoed".into(), reply.to_string())
            } else if reply["type"] == "error" {
                let code = reply["code"]
                    .as_str()
                    .map_or_else(|| "error".to_owned(), str::to_owned);
                let message = reply["message"].as_str().unwrap_or("").to_owned();
                Verdict::Refused(code, message)
            } else {
                Verdict::Accepted(fields(&reply))
            };
            return (verdict, reply);
        }
    }

    /// Both transports' verdicts on `req`.
    fn both(&mut self, req: &Request) -> (Verdict, Verdict) {
        match req {
            Request::Publish(topic, body) => {
                let http = self.http(
                    "POST",
                    &format!("/v1/topics/{topic}/events"),
                    &body.to_string(),
                );
                let msg = message(body, [("op", json!("publish")), ("topic", json!(topic))]);
                (http, self.ws(msg).0)
            }
            Request::PublishBatch(topic, events) => {
                let http = self.http(
                    "POST",
                    &format!("/v1/topics/{topic}/events"),
                    &Value::Array(events.clone()).to_string(),
                );
                let with_topic: Vec<Value> = events
                    .iter()
                    .map(|e| Value::Object(message(e, [("topic", json!(topic))])))
                    .collect();
                let msg = message(
                    &json!({}),
                    [
                        ("op", json!("publish")),
                        ("events", Value::Array(with_topic)),
                    ],
                );
                (http, self.ws(msg).0)
            }
            Request::Subscribe(topic, fields) => {
                let mut query: Vec<String> = message(fields, [])
                    .iter()
                    .map(|(k, v)| format!("{k}={}", query_value(v)))
                    .collect();
                query.push("wait=0".into());
                let path = match topic {
                    Some(t) => format!("/v1/topics/{t}/events"),
                    None => "/v1/events".to_owned(),
                };
                let http = self.http("GET", &format!("{path}?{}", query.join("&")), "");
                let id = format!("s{}", self.next_ref + 1);
                let mut msg = message(fields, [("op", json!("subscribe")), ("id", json!(id))]);
                if let Some(t) = topic {
                    msg.insert("topic".into(), json!(t));
                }
                let (ws, _) = self.ws(msg);
                if let Verdict::Accepted(_) = ws {
                    let unsubscribe = [("op", json!("unsubscribe")), ("id", json!(id))];
                    let (done, _) = self.ws(message(&json!({}), unsubscribe));
                    assert!(matches!(done, Verdict::Accepted(_)), "{done:?}");
                }
                (http, ws)
            }
            Request::Ack(consumer, body) => {
                let http = self.http(
                    "POST",
                    &format!("/v1/consumers/{consumer}/ack"),
                    &body.to_string(),
                );
                let msg = message(body, [("op", json!("ack")), ("consumer", json!(consumer))]);
                (http, self.ws(msg).0)
            }
            Request::Presence(op, body) => {
                let http = self.http("POST", &format!("/v1/presence/{op}"), &body.to_string());
                (http, self.ws(message(body, [("op", json!(op))])).0)
            }
            Request::PresenceList(topic) => {
                let http = self.http("GET", &format!("/v1/topics/{topic}/presence"), "");
                let msg = message(
                    &json!({}),
                    [("op", json!("presence")), ("topic", json!(topic))],
                );
                (http, self.ws(msg).0)
            }
        }
    }
}

/// A WebSocket message: a body's fields (a non-object has none) and
/// `extra` fields.
fn message<const N: usize>(body: &Value, extra: [(&str, Value); N]) -> Map<String, Value> {
    let mut msg = body.as_object().cloned().unwrap_or_default();
    for (k, v) in extra {
        msg.insert(k.into(), v);
    }
    msg
}

/// A JSON value as a query string carries it: strings and numbers as
/// their text, arrays comma-separated, anything else as JSON text.
fn query_value(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(query_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    };
    text.replace('%', "%25")
        .replace('&', "%26")
        .replace(' ', "%20")
        .replace('#', "%23")
}

/// A result's field names, without the WebSocket envelope, with the HTTP
/// acknowledgement's `checkpoint` under its WebSocket name `seq`.
fn fields(v: &Value) -> Vec<String> {
    let mut names: Vec<String> = v
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| !matches!(k.as_str(), "type" | "ref" | "id" | "recovered"))
                .map(|k| {
                    if k == "checkpoint" {
                        "seq".into()
                    } else {
                        k.clone()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    // A subscription's result is the subscription (WebSocket) or a poll
    // answer (HTTP): only whether it was accepted is compared.
    names.retain(|k| !matches!(k.as_str(), "events" | "next_after"));
    names.sort();
    names
}

fn table() -> Vec<Request> {
    use Request::*;
    let long = |n: usize| "x".repeat(n);
    let many: Vec<String> = (0..33).map(|i| format!("orders.{i}")).collect();
    let many_types: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    vec![
        // publish
        Publish(
            "orders.1",
            json!({"type": "order.created", "data": {"id": 1}}),
        ),
        Publish(
            "orders.1",
            json!({"type": "order.created", "origin": 7, "correlation_id": "req-1"}),
        ),
        Publish("orders.1", json!({"type": "order.created", "origin": "7"})),
        Publish("orders.1", json!({"type": "order.created", "origin": -1})),
        Publish(
            "orders.1",
            json!({"type": "order.created", "origin": null, "correlation_id": null}),
        ),
        Publish(
            "orders.1",
            json!({"type": "order.created", "correlation_id": 5}),
        ),
        Publish(
            "orders.1",
            json!({"type": "order.created", "correlation_id": "has space"}),
        ),
        Publish(
            "orders.1",
            json!({"type": "order.created", "correlation_id": long(127)}),
        ),
        Publish("orders.1", json!({"data": 1})),
        Publish("orders.1", json!({"type": 5})),
        Publish("orders.1", json!({"type": "bad type"})),
        Publish("orders.1", json!({"type": long(129)})),
        Publish("orders.1", json!({"type": "e", "colour": "red"})),
        Publish("orders.1", json!({"type": "e", "data": long(9000)})),
        Publish("secret.1", json!({"type": "e"})),
        Publish("orders..1", json!({"type": "e"})),
        Publish("rooms.a.b", json!({"type": "e"})),
        // batches
        PublishBatch(
            "orders.2",
            vec![
                json!({"type": "a", "data": 1}),
                json!({"type": "b", "origin": 3}),
            ],
        ),
        PublishBatch(
            "orders.2",
            vec![json!({"type": "a"}), json!({"type": "bad type"})],
        ),
        PublishBatch(
            "orders.2",
            vec![json!({"type": "a"}), json!({"type": "b", "origin": "3"})],
        ),
        PublishBatch("orders.2", vec![]),
        PublishBatch("secret.2", vec![json!({"type": "a"})]),
        Publish(
            "orders.1",
            json!({"type": "e", "data": {"deep": (0..70).fold(json!(1), |v, _| json!([v]))}}),
        ),
        Presence(
            "heartbeat",
            json!({"topic": "rooms.1", "client_id": "c3", "user": null, "device": null}),
        ),
        // subscribe / poll
        Subscribe(Some("orders.1"), json!({"after": 0})),
        Subscribe(Some("orders.1"), json!({"since": 5})),
        Subscribe(
            Some("orders.1"),
            json!({"last": 2, "types": ["order.created"]}),
        ),
        Subscribe(Some("orders.1"), json!({"after": "x"})),
        Subscribe(Some("orders.1"), json!({"after": -1})),
        Subscribe(Some("orders.1"), json!({"after": u64::MAX})),
        Subscribe(Some("orders.1"), json!({"types": ["bad type"]})),
        Subscribe(Some("orders.1"), json!({"types": many_types})),
        Subscribe(Some("orders.1"), json!({"exclude_origin": 7})),
        Subscribe(Some("orders.1"), json!({"exclude_origin": "x"})),
        Subscribe(Some("orders.1"), json!({"colour": "red"})),
        Subscribe(Some("orders.*"), json!({"after": 1})),
        Subscribe(Some("orders..1"), json!({})),
        Subscribe(Some("secret.1"), json!({})),
        Subscribe(None, json!({"topics": ["orders.*", "rooms.>"]})),
        Subscribe(None, json!({"topics": ["orders.*"], "after": 1})),
        Subscribe(None, json!({"topics": []})),
        Subscribe(None, json!({"topics": many})),
        Subscribe(None, json!({"topics": ["orders.>", "secret.>"]})),
        Subscribe(None, json!({"topics": ["orders.*", "a b"]})),
        // acknowledgements
        Ack("worker-1", json!({"seq": 1})),
        Ack("worker-1", json!({"seq": 1_000_000})),
        Ack("worker-1", json!({"seq": "1"})),
        Ack("worker-1", json!({})),
        Ack("worker-1", json!({"seq": 1, "extra": true})),
        Ack("bad*name", json!({"seq": 1})),
        // presence
        Presence(
            "heartbeat",
            json!({"topic": "rooms.1", "client_id": "c1", "user": "u", "device": "d", "metadata": {"a": 1}}),
        ),
        Presence(
            "heartbeat",
            json!({"topic": "rooms.1", "client_id": "c1", "user": 5}),
        ),
        Presence("heartbeat", json!({"topic": "rooms.1"})),
        Presence("heartbeat", json!({"topic": "rooms.1", "client_id": ""})),
        Presence(
            "heartbeat",
            json!({"topic": "rooms.1", "client_id": long(300)}),
        ),
        Presence(
            "heartbeat",
            json!({"topic": "rooms.1", "client_id": "c2", "metadata": long(5000)}),
        ),
        Presence("heartbeat", json!({"topic": "secret.1", "client_id": "c1"})),
        Presence(
            "heartbeat",
            json!({"topic": "rooms.1", "client_id": "c1", "colour": 1}),
        ),
        Presence("leave", json!({"topic": "rooms.1", "client_id": "c1"})),
        Presence("leave", json!({"topic": "rooms.1", "client_id": 1})),
        PresenceList("rooms.1"),
        PresenceList("secret.1"),
        PresenceList("rooms..1"),
    ]
}

#[test]
fn every_request_gets_the_same_verdict_over_http_and_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let mut client = Client::start(dir.path());
    let mut disagreements = Vec::new();
    let mut refused = 0;
    for req in table() {
        let (http, ws) = client.both(&req);
        if !http.agrees(&ws, req.json_on_both()) {
            let mut shown = format!("{req:?}");
            shown.truncate(300);
            disagreements.push(format!("{shown}\n    HTTP: {http:?}\n    WS:   {ws:?}"));
        }
        refused += usize::from(matches!(http, Verdict::Refused(..)));
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    // The table exercises both outcomes.
    assert!(refused > 20 && refused < table().len() - 10, "{refused}");
}

/// A generated value of a random JSON type.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..4).prop_map(Value::from),
        "[a-z. :_-]{0,12}".prop_map(Value::from),
        Just(json!({"id": 1})),
        Just(json!([1, "a"])),
    ]
}

/// A generated request body: an operation's fields (and an unknown one),
/// each of a random JSON type, most often of the right one.
fn generated_request() -> impl Strategy<Value = Request> {
    let fields = |keys: &'static [&'static str]| {
        proptest::collection::btree_map(
            proptest::sample::select(keys),
            any_value(),
            0..keys.len() + 1,
        )
    };
    let body = |m: std::collections::BTreeMap<&str, Value>| {
        Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    };
    prop_oneof![
        (
            fields(&["type", "data", "origin", "correlation_id", "extra"]),
            any::<bool>()
        )
            .prop_map(move |(m, typed)| {
                let mut b = body(m);
                if typed {
                    b["type"] = json!("order.created");
                }
                Request::Publish("orders.7", b)
            }),
        fields(&["seq", "extra"]).prop_map(move |m| Request::Ack("worker-9", body(m))),
        (
            fields(&["topic", "client_id", "user", "device", "metadata", "extra"]),
            any::<bool>()
        )
            .prop_map(move |(m, named)| {
                let mut b = body(m);
                if named {
                    b["topic"] = json!("rooms.7");
                    b["client_id"] = json!("gen");
                }
                Request::Presence("heartbeat", b)
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn generated_requests_get_the_same_verdict(req in generated_request()) {
        thread_local! {
            static CLIENT: std::cell::RefCell<Option<(tempfile::TempDir, Client)>> =
                const { std::cell::RefCell::new(None) };
        }
        let (http, ws) = CLIENT.with(|c| {
            let mut c = c.borrow_mut();
            let (_, client) = c.get_or_insert_with(|| {
                let dir = tempfile::tempdir().unwrap();
                let client = Client::start(dir.path());
                (dir, client)
            });
            client.both(&req)
        });
        prop_assert!(http.agrees(&ws, true), "{:?}\nHTTP: {:?}\nWS:   {:?}", req, http, ws);
    }
}

/// The table's publishes that STOMP can say (a string type, a string or no
/// correlation id, any `data`, nothing else) as `SEND` frames, each on a
/// fresh STOMP connection (an `ERROR` closes it): the verdict's code must be
/// HTTP's (invariant 8 on the third transport).
#[test]
fn stomp_sends_get_the_same_verdict_as_http() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::start(dir.path());
    let (mut compared, mut refused, mut disagreements) = (0, 0, Vec::new());
    for req in table() {
        let Request::Publish(topic, body) = &req else {
            continue;
        };
        let Some(fields) = body.as_object() else {
            continue;
        };
        let sayable = fields
            .keys()
            .all(|k| ["type", "data", "correlation_id"].contains(&k.as_str()))
            && fields.get("type").is_some_and(Value::is_string)
            && fields.get("correlation_id").is_none_or(Value::is_string);
        if !sayable {
            continue;
        }
        let http = client.http(
            "POST",
            &format!("/v1/topics/{topic}/events"),
            &body.to_string(),
        );
        let stomp = client.stomp_send(topic, fields);
        let agree = match (&http, &stomp) {
            (Verdict::Accepted(_), Verdict::Accepted(_)) => true,
            (Verdict::Refused(c1, _), Verdict::Refused(c2, _)) => c1 == c2,
            _ => false,
        };
        if !agree {
            disagreements.push(format!(
                "{req:?}\n    HTTP:  {http:?}\n    STOMP: {stomp:?}"
            ));
        }
        compared += 1;
        refused += usize::from(matches!(http, Verdict::Refused(..)));
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    // Both outcomes are exercised.
    assert!(
        compared >= 10 && refused > 1 && refused < compared,
        "{compared} {refused}"
    );
}

impl Client {
    /// A `SEND` of `fields` to `topic` with a receipt, on a new STOMP
    /// connection: `RECEIPT` is accepted, `ERROR` refused with its code.
    fn stomp_send(&self, topic: &str, fields: &Map<String, Value>) -> Verdict {
        let url = format!(
            "ws://{}/v1/stomp?access_token={}",
            self.server.local_addr(),
            self.token
        );
        let (mut ws, _) = tungstenite::connect(url).unwrap();
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        }
        let connect =
            herald_server::fuzzing::encode_stomp("CONNECT", &[("accept-version", "1.2")], b"");
        ws.send(Message::binary(connect)).unwrap();
        let destination = format!("/topic/{topic}");
        let mut headers = vec![
            ("destination", destination.as_str()),
            ("herald-type", fields["type"].as_str().unwrap()),
            ("receipt", "r"),
        ];
        if let Some(c) = fields.get("correlation_id").and_then(Value::as_str) {
            headers.push(("herald-correlation-id", c));
        }
        let data = fields
            .get("data")
            .map_or_else(String::new, Value::to_string);
        let send = herald_server::fuzzing::encode_stomp("SEND", &headers, data.as_bytes());
        ws.send(Message::binary(send)).unwrap();
        loop {
            let frame = match ws.read().unwrap() {
                Message::Text(t) => t.as_str().to_owned(),
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                _ => continue,
            };
            if frame.starts_with("RECEIPT\n") {
                return Verdict::Accepted(Vec::new());
            }
            if frame.starts_with("ERROR\n") {
                let code = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("herald-code:"))
                    .unwrap_or("no herald-code")
                    .to_owned();
                return Verdict::Refused(code, frame);
            }
        }
    }
}
