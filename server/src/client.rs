//! `herald pub` and `herald sub`: a minimal HTTP/1.1 client over `TcpStream`
//! for the server's own endpoints (plain `http://` URLs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

/// `http://host:port` → `host:port`.
fn authority(url: &str) -> Result<&str, String> {
    url.strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| format!("unsupported URL {url:?}: expected http://host:port"))
}

fn connect(url: &str, request: &str) -> Result<TcpStream, String> {
    let addr = authority(url)?;
    let mut stream =
        TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    Ok(stream)
}

fn auth_header(token: Option<&str>) -> String {
    token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default()
}

/// Publishes one event; prints the server's answer.
pub(crate) fn publish(
    url: &str,
    token: Option<&str>,
    topic: &str,
    event_type: &str,
    data: &str,
) -> ExitCode {
    let data: serde_json::Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("herald: the payload is not JSON: {e}");
            return ExitCode::FAILURE;
        }
    };
    let body = serde_json::json!({ "type": event_type, "data": data }).to_string();
    let host = authority(url).unwrap_or_default();
    let request = format!(
        "POST /v1/topics/{topic}/events HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        auth_header(token),
        body.len()
    );
    let mut response = String::new();
    let result = connect(url, &request)
        .and_then(|mut s| s.read_to_string(&mut response).map_err(|e| e.to_string()));
    if let Err(e) = result {
        eprintln!("herald: {e}");
        return ExitCode::FAILURE;
    }
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    println!("{body}");
    if head.starts_with("HTTP/1.1 200") {
        ExitCode::SUCCESS
    } else {
        eprintln!("herald: {}", head.lines().next().unwrap_or("no answer"));
        ExitCode::FAILURE
    }
}

/// Streams a topic's events, one line each: `<topic_seq> <type> <payload>`.
/// When the connection is lost after it was established, reconnects (after
/// the server's `retry:` delay, doubling while the server stays away, at
/// most 30 s) and resumes with `Last-Event-ID`: nothing is printed twice,
/// nothing is skipped. Refusals (4xx) end it with a failure.
pub(crate) fn subscribe(
    url: &str,
    token: Option<&str>,
    topic: &str,
    after: Option<u64>,
) -> ExitCode {
    let mut last_id = after;
    let mut retry = Duration::from_secs(1);
    let mut delay = retry;
    let mut connected_once = false;
    loop {
        match stream_once(url, token, topic, &mut last_id, &mut retry) {
            Ok(()) => {
                connected_once = true;
                delay = retry;
                eprintln!("herald: the stream ended; reconnecting");
            }
            Err(Failure::Final(e)) => {
                eprintln!("herald: {e}");
                return ExitCode::FAILURE;
            }
            Err(Failure::Retry(e)) if connected_once => {
                eprintln!("herald: {e}; retrying in {delay:?}");
            }
            Err(Failure::Retry(e)) => {
                eprintln!("herald: {e}");
                return ExitCode::FAILURE;
            }
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(MAX_RETRY);
    }
}

const MAX_RETRY: Duration = Duration::from_secs(30);

enum Failure {
    /// The server refused the request: retrying would not help.
    Final(String),
    /// The server is away or unavailable.
    Retry(String),
}

/// One connection's stream, until it ends. Keeps `last_id` (the last event
/// printed) and `retry` (the server's reconnect delay) up to date.
fn stream_once(
    url: &str,
    token: Option<&str>,
    topic: &str,
    last_id: &mut Option<u64>,
    retry: &mut Duration,
) -> Result<(), Failure> {
    let resume = last_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    let host = authority(url).map_err(Failure::Final)?;
    let request = format!(
        "GET /v1/topics/{topic}/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{resume}{}\r\n",
        auth_header(token)
    );
    let stream = connect(url, &request).map_err(Failure::Retry)?;
    let mut lines = BufReader::new(stream).lines();
    match lines.next() {
        Some(Ok(status)) if status.starts_with("HTTP/1.1 200") => {}
        Some(Ok(status)) if status.starts_with("HTTP/1.1 4") => {
            return Err(Failure::Final(status));
        }
        Some(Ok(status)) => return Err(Failure::Retry(status)),
        _ => return Err(Failure::Retry("no answer".into())),
    }
    let (mut id, mut event, mut data) = (String::new(), String::new(), Vec::new());
    let mut out = std::io::stdout().lock();
    for line in lines {
        let Ok(line) = line else { break };
        if line.is_empty() {
            // `connected` only says where the stream starts: not printed.
            if !data.is_empty() && event != "connected" {
                let _ = writeln!(out, "{id} {event} {}", data.join("\n"));
                let _ = out.flush();
            }
            if let Ok(seq) = id.parse() {
                *last_id = Some(seq);
            }
            (id, event, data) = (String::new(), String::new(), Vec::new());
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = v.to_owned();
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_owned();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push(v.to_owned());
        } else if let Some(ms) = line.strip_prefix("retry: ").and_then(|v| v.parse().ok()) {
            *retry = Duration::from_millis(ms);
        }
    }
    Ok(())
}
