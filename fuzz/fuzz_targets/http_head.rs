//! Feeds arbitrary bytes to the server's HTTP request parser, then decodes
//! the query of whatever it accepts as the endpoints do.
//!
//! Checked on every accepted request:
//! - framing: the bytes used are the head plus exactly `Content-Length`
//!   body bytes; every `Content-Length` is `1*DIGIT` and all agree (a
//!   disagreement would let a proxy and the server frame differently);
//!   the same request parses from exactly those bytes, and one byte fewer
//!   is incomplete;
//! - header names are lower-cased; no `Transfer-Encoding` gets through;
//! - the query decodes as a reference decoder (written here from the
//!   protocol's rules) decodes it: `access_token` ignored, every other key
//!   known and given once, numbers as `u64`, lists split on commas.
#![no_main]

use herald_server::fuzzing::{self, EventsQuery, HttpParse, HttpRequest};
use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 2048;
const MAX_BODY: usize = 512;

fuzz_target!(|data: &[u8]| {
    let HttpParse::Complete(req, used) = fuzzing::parse_http(data, MAX_HEAD, MAX_BODY) else {
        return;
    };
    check_framing(data, &req, used);
    check_query(&req);
});

fn check_framing(data: &[u8], req: &HttpRequest, used: usize) {
    assert!(used <= data.len());
    let head_len = used - req.body.len();
    assert!(head_len <= MAX_HEAD && req.body.len() <= MAX_BODY);
    assert_eq!(req.body, &data[head_len..used]);
    assert!(data[..head_len].ends_with(b"\n\n") || data[..head_len].ends_with(b"\n\r\n"));
    assert!(!req.method.is_empty());
    assert!(!req.path.contains('?'));

    let mut lengths = Vec::new();
    for (name, value) in &req.headers {
        assert_eq!(
            *name,
            name.to_ascii_lowercase(),
            "header names are lower-cased"
        );
        assert_ne!(name, "transfer-encoding", "chunked bodies are refused");
        if name == "content-length" {
            let digits = value.trim_matches([' ', '\t']);
            assert!(
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
                "Content-Length {value:?} accepted"
            );
            lengths.push(digits.parse::<usize>().unwrap());
        }
    }
    assert!(
        lengths.iter().all(|&n| n == req.body.len()),
        "Content-Length values {lengths:?} but a body of {}",
        req.body.len()
    );

    // Bytes after a request do not change it.
    let HttpParse::Complete(again, used_again) =
        fuzzing::parse_http(&data[..used], MAX_HEAD, MAX_BODY)
    else {
        panic!("the request's own bytes do not parse");
    };
    assert_eq!(used_again, used);
    assert_eq!(
        (
            &again.method,
            &again.path,
            &again.query,
            &again.headers,
            &again.body,
            again.keep_alive
        ),
        (
            &req.method,
            &req.path,
            &req.query,
            &req.headers,
            &req.body,
            req.keep_alive
        )
    );
    // A request is never complete before its last byte.
    assert!(matches!(
        fuzzing::parse_http(&data[..used - 1], MAX_HEAD, MAX_BODY),
        HttpParse::Partial
    ));
}

fn check_query(req: &HttpRequest) {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(req.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // Authentication reads the first `access_token`.
    let token = pairs
        .iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.clone());
    assert_eq!(fuzzing::query_param(req, "access_token"), token);

    let rest: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != "access_token").collect();
    assert_eq!(
        fuzzing::no_query(&req.query).is_ok(),
        rest.is_empty(),
        "no-parameter query {:?}",
        req.query
    );
    let got = fuzzing::events_query(&req.query);
    let want = reference_events_query(&rest);
    match (&got, &want) {
        (Ok(g), Some(w)) => assert_eq!(g, w, "query {:?}", req.query),
        (Err(_), None) => {}
        _ => panic!("query {:?}: decoded {got:?}, reference {want:?}", req.query),
    }
    if let Ok(q) = got {
        let (limit, wait) = q.poll_bounds;
        assert!((1..=1000).contains(&limit) && wait <= 60_000);
    }
}

fn reference_events_query(pairs: &[&(String, String)]) -> Option<EventsQuery> {
    let mut q = EventsQuery {
        topics: None,
        types: None,
        exclude_origin: None,
        after: None,
        since: None,
        last: None,
        limit: None,
        wait: None,
        poll_bounds: (0, 0),
    };
    for (k, v) in pairs {
        let list = || {
            Some(
                v.split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
        };
        let num = v.parse::<u64>().ok();
        let origins = || {
            v.split(',')
                .filter(|t| !t.is_empty())
                .map(|o| o.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()
        };
        let slot_was_empty = match k.as_str() {
            "topics" => q.topics.replace(list()?).is_none(),
            "types" => q.types.replace(list()?).is_none(),
            "exclude_origin" => q.exclude_origin.replace(origins()?).is_none(),
            "after" => q.after.replace(num?).is_none(),
            "since" => q.since.replace(num?).is_none(),
            "last" => q.last.replace(num?).is_none(),
            "limit" => q.limit.replace(num?).is_none(),
            "wait" => q.wait.replace(num?).is_none(),
            _ => return None,
        };
        if !slot_was_empty {
            return None; // a key given twice
        }
    }
    q.poll_bounds = (
        q.limit.unwrap_or(100).clamp(1, 1000) as usize,
        q.wait.unwrap_or(0).min(60_000),
    );
    Some(q)
}
