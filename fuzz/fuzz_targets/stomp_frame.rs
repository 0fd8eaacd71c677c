//! Feeds arbitrary bytes to the server's STOMP frame parser, as one input
//! and as the same input arriving in pieces.
//!
//! Checked:
//! - no panic; a frame uses at most the input, and the same frame parses
//!   from exactly those bytes;
//! - the session's shortcut is sound: after an incomplete parse, it parses
//!   again only when what the partial frame waits for arrives. Feeding the
//!   input in pieces that way must give the outcome of parsing it whole
//!   (so a frame sent a byte at a time is never missed, and costs a bounded
//!   number of parses);
//! - a frame re-encoded the way the server encodes frames (headers escaped,
//!   `content-length` for a body) parses back to the same headers and body
//!   (not for CONNECT and STOMP, whose headers are not escaped).
#![no_main]

use herald_server::fuzzing::{encode_stomp, parse_stomp, stomp_waits_for, StompParse};
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 256;

fuzz_target!(|input: (u8, &[u8])| {
    let (piece, data) = input;
    let whole = parse_stomp(data, MAX_BODY);
    if let StompParse::Frame(frame, used) = &whole {
        assert!(*used <= data.len());
        assert_eq!(parse_stomp(&data[..*used], MAX_BODY), whole);
        if !matches!(frame.command, "CONNECT" | "STOMP") {
            let headers: Vec<(&str, &str)> = frame
                .headers
                .iter()
                .filter(|(n, _)| n != "content-length")
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let encoded = encode_stomp(frame.command, &headers, &frame.body);
            let StompParse::Frame(back, n) = parse_stomp(&encoded, MAX_BODY) else {
                panic!("re-encoded frame does not parse: {encoded:?}");
            };
            assert_eq!(n, encoded.len());
            assert_eq!(back.body, frame.body);
            let names: Vec<&str> = back.headers.iter().map(|(n, _)| n.as_str()).collect();
            for (name, value) in &headers {
                let i = names.iter().position(|n| n == name).expect("header kept");
                assert_eq!(&back.headers[i].1, value);
            }
        }
    }
    // The same bytes in pieces of `piece + 1`, parsed again only when the
    // partial frame's wait is over.
    let step = usize::from(piece) + 1;
    let mut have = 0;
    // Where the last parse was made: what arrived since is checked against
    // what that parse said it waits for.
    let mut parsed_at = 0;
    let mut outcome = parse_stomp(&data[..0], MAX_BODY);
    while have < data.len() && outcome == StompParse::Incomplete {
        let next = (have + step).min(data.len());
        let waits_over = stomp_waits_for(&data[..parsed_at], MAX_BODY, &data[parsed_at..next])
            .expect("the last parse was incomplete");
        have = next;
        if waits_over {
            outcome = parse_stomp(&data[..have], MAX_BODY);
            parsed_at = have;
        }
    }
    if outcome == StompParse::Incomplete {
        // Everything arrived without the wait ending: the whole input is
        // incomplete too, or refused for what the shortcut defers (a line
        // over its bound without a line feed yet: the session refuses the
        // input once it outgrows a frame's bound).
        assert!(
            matches!(&whole, StompParse::Incomplete | StompParse::Refused(_)),
            "pieces: incomplete, whole: {whole:?}"
        );
    } else {
        same_outcome(data, &outcome, &whole);
    }
});

/// The outcome from pieces is the whole input's, except that a frame parsed
/// before the EOLs after its NUL arrived has not taken them yet (they then
/// read as heart-beats).
fn same_outcome(data: &[u8], pieces: &StompParse, whole: &StompParse) {
    match (pieces, whole) {
        (StompParse::Frame(a, used_a), StompParse::Frame(b, used_b)) => {
            assert_eq!(a, b, "pieces differ from whole");
            assert!(used_a <= used_b);
            assert!(data[*used_a..*used_b].iter().all(|&c| c == b'\r' || c == b'\n'));
        }
        _ => assert_eq!(pieces, whole, "pieces differ from whole"),
    }
}
