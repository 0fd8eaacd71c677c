//! Topic names, patterns, filters, event types, correlation ids and consumer
//! names: each validator against a reference written here from the rules in
//! the docs, and the pattern matcher against a reference NATS matcher (`*`
//! one token, `>` one or more trailing tokens, `$` topics matched only by
//! patterns that name them).
//!
//! The server's grant check (`covers`: does a grant match every topic a
//! requested pattern matches?) is checked on topics built from the
//! requested pattern by filling its wildcards, so that the fuzzer need not
//! guess matching topics.
#![no_main]

use arbitrary::Arbitrary;
use herald_core::broker::validate_consumer_name as validate_name;
use herald_core::broker::{
    validate_correlation, validate_event_type, validate_topic, TopicPattern,
};
use herald_core::Filter;
use herald_server::fuzzing::covers;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    pattern: Name,
    topic: Name,
    grant: Name,
    /// Tokens that fill the requested pattern's wildcards.
    fill: Vec<Name>,
    event_type: String,
    correlation: String,
    consumer: String,
    origin: u8,
    exclude: Option<u8>,
}

/// A name from plausible tokens (most inputs should be valid) or free text.
#[derive(Debug, Arbitrary)]
enum Name {
    Tokens(Vec<Token>),
    Text(String),
}

#[derive(Debug, Arbitrary)]
enum Token {
    Star,
    Tail,
    Word(u8),
    Text(String),
}

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Text(t) => t.clone(),
            Name::Tokens(list) => list
                .iter()
                .map(|t| match t {
                    Token::Star => "*".to_owned(),
                    Token::Tail => ">".to_owned(),
                    Token::Word(w) => ["a", "b", "acme", "$presence", "ws-1", "_", "$sys"]
                        [*w as usize % 7]
                        .to_owned(),
                    Token::Text(t) => t.clone(),
                })
                .collect::<Vec<_>>()
                .join("."),
        }
    }
}

fn name_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A topic name: 1 to 255 bytes of dot-separated tokens; a leading `$`
/// (system topics) only if `system`.
fn ref_topic(name: &str, system: bool) -> bool {
    let body = match name.strip_prefix('$') {
        Some(rest) if system => rest,
        Some(_) => return false,
        None => name,
    };
    !name.is_empty() && name.len() <= 255 && body.split('.').all(name_token)
}

/// A pattern: a name whose tokens may be `*`, and whose last may be `>`.
fn ref_pattern(p: &str) -> bool {
    if p.is_empty() || p.len() > 255 {
        return false;
    }
    let tokens: Vec<&str> = p.split('.').collect();
    tokens.iter().enumerate().all(|(i, &t)| {
        let t = if i == 0 {
            t.strip_prefix('$').unwrap_or(t)
        } else {
            t
        };
        match t {
            "*" => !tokens[i].starts_with('$'),
            ">" => i + 1 == tokens.len() && !tokens[i].starts_with('$'),
            _ => name_token(t),
        }
    })
}

fn ref_matches(pattern: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !pattern.starts_with('$') {
        return false;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    for (i, pt) in p.iter().enumerate() {
        match *pt {
            ">" => return t.len() > i,
            "*" if i < t.len() => {}
            lit if t.get(i) == Some(&lit) => {}
            _ => return false,
        }
    }
    p.len() == t.len()
}

/// A topic that `pattern` matches, its wildcards filled from `fill`.
fn instantiate(pattern: &str, fill: &[Name]) -> String {
    let mut fill = fill.iter().map(Name::text).filter(|t| name_token(t));
    let mut out = Vec::new();
    for t in pattern.split('.') {
        match t {
            "*" => out.push(fill.next().unwrap_or_else(|| "f".into())),
            ">" => {
                out.push(fill.next().unwrap_or_else(|| "g".into()));
                out.extend(fill.by_ref().take(2));
            }
            lit => out.push(lit.to_owned()),
        }
    }
    out.join(".")
}

fuzz_target!(|input: Input| {
    let (p, t, g) = (input.pattern.text(), input.topic.text(), input.grant.text());

    assert_eq!(
        validate_topic(&t).is_ok(),
        ref_topic(&t, false),
        "topic {t:?}"
    );
    let pattern = TopicPattern::parse(&p);
    assert_eq!(pattern.is_ok(), ref_pattern(&p), "pattern {p:?}");
    // A name (system names included) is a pattern without wildcards.
    let as_pattern = TopicPattern::parse(&t);
    assert_eq!(
        as_pattern.as_ref().is_ok_and(|x| x.is_exact()),
        ref_topic(&t, true),
        "name {t:?}"
    );

    if let Ok(pattern) = &pattern {
        assert_eq!(
            pattern.is_exact(),
            !p.split('.').any(|x| x == "*" || x == ">")
        );
        assert_eq!(pattern.as_str(), p);
        if ref_topic(&t, true) {
            assert_eq!(
                pattern.matches(&t),
                ref_matches(&p, &t),
                "{p:?} matches {t:?}?"
            );
        }
        let filled = instantiate(&p, &input.fill);
        if ref_topic(&filled, true) && filled.len() <= 255 {
            assert_eq!(
                pattern.matches(&filled),
                ref_matches(&p, &filled),
                "{p:?} matches {filled:?}?"
            );
        }
    }

    // Grants: what `covers` allows, the grant must really match. The server
    // only compares tenant-prefixed names, which never start with `$`.
    if let (Ok(grant), Ok(requested)) = (TopicPattern::parse(&g), &pattern) {
        if !g.starts_with('$') && !p.starts_with('$') && covers(&g, &p) {
            let filled = instantiate(&p, &input.fill);
            if requested.matches(&filled) {
                assert!(
                    grant.matches(&filled),
                    "{g:?} covers {p:?} but not {filled:?}"
                );
            }
            if ref_topic(&t, false) && requested.matches(&t) {
                assert!(grant.matches(&t), "{g:?} covers {p:?} but not {t:?}");
            }
        }
    }

    // Filters: any pattern matches; then type and origin.
    let patterns = [p.as_str(), g.as_str()];
    if let Ok(filter) = Filter::patterns(&patterns) {
        assert!(TopicPattern::parse(&p).is_ok() && TopicPattern::parse(&g).is_ok());
        let mut filter = filter.with_types(&[input.event_type.as_str()]);
        if let Some(o) = input.exclude {
            filter = filter.excluding_origin(u64::from(o));
        }
        if ref_topic(&t, true) {
            assert_eq!(
                filter.matches_topic(&t),
                ref_matches(&p, &t) || ref_matches(&g, &t)
            );
        }
        let origin = u64::from(input.origin);
        assert_eq!(
            filter.matches_event(input.event_type.as_bytes(), origin),
            input.exclude != Some(input.origin)
        );
        if input.event_type != "\0never" {
            assert!(!filter.matches_event(b"\0never", origin));
        }
        assert!(
            filter.single_topic().is_none(),
            "two patterns are never one topic"
        );
    }
    if let Ok(f) = Filter::topic(&p) {
        assert_eq!(
            f.single_topic().is_some(),
            !p.split('.').any(|x| x == "*" || x == ">")
        );
    }

    let et = &input.event_type;
    let et_ok = !et.is_empty()
        && et.len() <= 128
        && et
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    assert_eq!(validate_event_type(et).is_ok(), et_ok, "event type {et:?}");
    let c = &input.correlation;
    let c_ok = c.len() <= 126 && c.bytes().all(|b| b.is_ascii_graphic());
    assert_eq!(validate_correlation(c).is_ok(), c_ok, "correlation {c:?}");
    let n = &input.consumer;
    let n_ok = !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    assert_eq!(validate_name(n).is_ok(), n_ok, "consumer {n:?}");
});
