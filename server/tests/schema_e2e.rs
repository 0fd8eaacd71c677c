//! Configured JSON Schemas against a real server: an invalid publish is
//! refused with 422 (WebSocket: an error with the same code and message)
//! naming the failing path and keyword, and nothing is stored, batches
//! included; `herald schema check` gives the same verdict offline.

use std::path::Path;
use std::process::Command;

mod common;

use common::{exchange_raw, test_config, ws_connect, ws_recv, ws_send};
use herald_server::{SchemaRule, Server};
use serde_json::{json, Value};

const ORDER_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["id", "total"],
  "properties": {
    "id": {"type": "integer", "minimum": 1},
    "total": {"type": "number", "minimum": 0},
    "email": {"type": "string", "format": "email"}
  }
}"#;

fn start(dir: &Path) -> Server {
    let file = dir.join("order.json");
    std::fs::write(&file, ORDER_SCHEMA).unwrap();
    let mut config = test_config(&dir.join("data"), 1);
    config.schemas = vec![SchemaRule {
        topics: "orders.>".into(),
        event_type: Some("order.created".into()),
        file,
    }];
    Server::start(config).unwrap()
}

/// (status, body) of one HTTP request.
fn http(server: &Server, method: &str, path: &str, body: &str) -> (u16, Value) {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange_raw(server, raw.as_bytes());
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn stored(server: &Server) -> Vec<Value> {
    let (status, page) = http(server, "GET", "/v1/events?topics=orders.>&after=0", "");
    assert_eq!(status, 200, "{page}");
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].clone())
        .collect()
}

#[test]
fn invalid_publishes_are_refused_alike_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let publish = |topic: &str, body: &str| {
        http(&server, "POST", &format!("/v1/topics/{topic}/events"), body)
    };
    let (status, ok) = publish(
        "orders.eu",
        r#"{"type":"order.created","data":{"id":1,"total":9.5}}"#,
    );
    assert_eq!(status, 200, "{ok}");
    // A failing keyword deep in the payload, named by path and keyword.
    let (status, e) = publish(
        "orders.eu",
        r#"{"type":"order.created","data":{"id":0,"total":1}}"#,
    );
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["code"], "schema");
    let message = e["error"].as_str().unwrap().to_owned();
    assert!(message.contains("at /id: 'minimum'"), "{message}");
    assert!(message.contains("orders.> order.created"), "{message}");
    // Formats are checked.
    let (status, e) = publish(
        "orders.eu",
        r#"{"type":"order.created","data":{"id":2,"total":1,"email":"not an address"}}"#,
    );
    assert_eq!((status, e["code"].as_str()), (422, Some("schema")), "{e}");
    // A batch with one invalid event stores none of them.
    let (status, e) = publish(
        "orders.us",
        r#"[{"type":"order.created","data":{"id":3,"total":1}},{"type":"order.created","data":{"id":4}}]"#,
    );
    assert_eq!(status, 422, "{e}");
    assert!(e["error"].as_str().unwrap().contains("'required'"), "{e}");
    // Other types and topics are not checked.
    assert_eq!(
        publish("orders.us", r#"{"type":"order.paid","data":1}"#).0,
        200
    );
    assert_eq!(
        publish("invoices", r#"{"type":"order.created","data":1}"#).0,
        200
    );

    // The same refusal over WebSocket: same code, same message.
    let mut ws = ws_connect(&format!("ws://{}/v1/ws", server.local_addr()));
    ws_send(
        &mut ws,
        json!({"op": "publish", "ref": 1, "topic": "orders.eu", "type": "order.created", "data": {"id": 0, "total": 1}}),
    );
    let reply = ws_recv(&mut ws);
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "schema");
    assert_eq!(reply["message"], message.as_str());
    ws_send(
        &mut ws,
        json!({"op": "publish", "ref": 2, "events": [
            {"topic": "orders.eu", "type": "order.created", "data": {"id": 5, "total": 1}},
            {"topic": "orders.eu", "type": "order.created", "data": {"id": "5", "total": 1}},
        ]}),
    );
    let reply = ws_recv(&mut ws);
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("schema")),
        "{reply}"
    );
    ws_send(
        &mut ws,
        json!({"op": "publish", "ref": 3, "topic": "orders.eu", "type": "order.created", "data": {"id": 6, "total": 0}}),
    );
    assert_eq!(ws_recv(&mut ws)["type"], "published");

    // Only the valid events were stored.
    assert_eq!(
        stored(&server),
        [
            json!({"id": 1, "total": 9.5}),
            json!(1),
            json!({"id": 6, "total": 0})
        ]
    );
    // Five events refused: three over HTTP, two over WebSocket.
    let metrics = exchange_raw(
        &server,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("herald_server_schema_refusals_total 5\n"),
        "{metrics}"
    );
    server.shutdown().unwrap();
}

#[test]
fn schema_check_gives_the_verdict_offline() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("order.json");
    std::fs::write(&schema, ORDER_SCHEMA).unwrap();
    let check = |data: &str| {
        let file = dir.path().join("data.json");
        std::fs::write(&file, data).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["schema", "check"])
            .args([&schema, &file])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    assert_eq!(check(r#"{"id":1,"total":2}"#), (Some(0), "valid\n".into()));
    let (code, text) = check(r#"{"id":0}"#);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("invalid: at /id: 'minimum'"), "{text}");
    assert!(text.contains("invalid: at /: 'required'"), "{text}");
    let (code, text) = check("{");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("not JSON"), "{text}");
}

#[test]
fn a_bad_schema_stops_the_server_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(&file, r#"{"type": 5}"#).unwrap();
    let mut config = test_config(&dir.path().join("data"), 1);
    config.schemas = vec![SchemaRule {
        topics: "orders.>".into(),
        event_type: None,
        file,
    }];
    let Err(e) = Server::start(config) else {
        panic!("a bad schema was accepted")
    };
    assert!(e.to_string().contains("not a valid JSON Schema"), "{e}");
}
