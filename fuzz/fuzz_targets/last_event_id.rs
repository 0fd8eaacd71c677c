//! An SSE client's `Last-Event-ID` and query, from the request head the
//! server parses to the start position of its event stream.
//!
//! The first input byte picks the shape: a request built around a fuzzed
//! `Last-Event-ID` value and query (most inputs), or the input as a whole
//! request head. Checked:
//! - the header counts only on event-stream requests;
//! - accepted ids are decimal sequence numbers (surrounding whitespace and a
//!   `+` sign tolerated), refused ones are not;
//! - the stream starts right after the id, which wins over `after`, and an
//!   id of `u64::MAX` is refused rather than wrapped.
#![no_main]

use herald_core::StartAt;
use herald_server::fuzzing::{self, HttpParse, HttpRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let raw = if mode % 4 == 0 {
        rest.to_vec()
    } else {
        // `id` NUL `query`: the id may hold any bytes the head allows.
        let (id, query) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let mut raw = b"GET /v1/topics/t/events?".to_vec();
        raw.extend_from_slice(query);
        raw.extend_from_slice(b" HTTP/1.1\r\nAccept: text/event-stream\r\nLast-Event-ID: ");
        raw.extend_from_slice(id);
        raw.extend_from_slice(b"\r\n\r\n");
        raw
    };
    let HttpParse::Complete(req, _) = fuzzing::parse_http(&raw, 16 * 1024, 0) else {
        return;
    };
    check(&req);
});

/// The id a header value names, by the protocol's rule.
fn reference_id(value: &str) -> Option<u64> {
    let v = value.trim();
    let digits = v.strip_prefix('+').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn check(req: &HttpRequest) {
    assert_eq!(
        fuzzing::last_event_id(req, false),
        Ok(None),
        "ignored without SSE"
    );
    let header = req
        .headers
        .iter()
        .find(|(n, _)| n == "last-event-id")
        .map(|(_, v)| v.as_str());
    let id = fuzzing::last_event_id(req, true);
    match header {
        None => assert_eq!(id, Ok(None)),
        Some(v) => match reference_id(v) {
            Some(n) => assert_eq!(id, Ok(Some(n)), "{v:?}"),
            None => assert!(id.is_err(), "{v:?} accepted as {id:?}"),
        },
    }
    let Ok(id) = id else { return };

    for path_topic in [Some("t"), None] {
        let Ok(start) = fuzzing::sse_start(req, path_topic) else {
            continue;
        };
        let query = fuzzing::events_query(&req.query).expect("a started stream's query decodes");
        let single = path_topic.is_some();
        let want = match (id.or(query.after), query.since, query.last) {
            (Some(a), _, _) => {
                let next = a.checked_add(1).expect("u64::MAX must be refused");
                if single {
                    StartAt::TopicSeq(next)
                } else {
                    StartAt::Seq(next)
                }
            }
            (None, Some(t), _) => StartAt::Time(t),
            (None, None, Some(n)) => StartAt::LastN(n),
            (None, None, None) => StartAt::Now,
        };
        assert_eq!(start, want, "{req:?}");
    }
}
