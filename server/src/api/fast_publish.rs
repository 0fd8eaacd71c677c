//! The fast path for the commonest requests, publishes in their plain form
//! (a WebSocket `publish` of one event or a batch, an HTTP publish body of
//! one event or a batch), decoded in one pass over the text.
//!
//! The general decoder (`Op::decode_general`) splits the message into
//! fields with serde, decodes them into the request type, and the payload
//! is then validated by another pass. This path does all three at once,
//! but only for the plain form: keys without escapes, each at most once and
//! all known; `op` exactly `"publish"`; `topic`, `type` and
//! `correlation_id` strings without escapes; `origin` a plain unsigned
//! integer; `ref` and `data` any JSON value that `json::value_len` accepts;
//! `events` a non-empty array of at most `MAX_BATCH` plain events (each
//! with its `topic`, no `op`, `ref` or `events`), alone with `op` and `ref`.
//! Anything else (an escape, a duplicate, `null` where a string goes, an
//! idempotency key, any error) returns `None` and the general decoder decides. This
//! path never gives a verdict of its own: what it accepts, the general
//! decoder accepts with the same fields (checked by a property test here
//! and by the `ws_op` fuzz target).

use std::borrow::Cow;

use herald_core::json;
use serde_json::Value;

use super::ops::{Envelope, Publish, PublishRequest, MAX_BATCH};

/// Decodes `text` if it is a plain `publish` message: one event or a batch.
pub(super) fn publish(text: &str) -> Option<(Envelope, PublishRequest<'_>)> {
    let mut s = Scan { text, i: 0 };
    s.ws();
    let mut fields = s.object::<true>()?;
    s.ws();
    if s.i != text.len() || fields.op? != "publish" {
        return None;
    }
    let reference = match fields.reference {
        // Valid JSON (checked), decoded as the general decoder does: a
        // short run of digits (what most clients send) to the same u64
        // directly, anything else by serde.
        Some(r) if r.len() <= 19 && r.bytes().all(|b| b.is_ascii_digit()) => {
            Value::from(r.parse::<u64>().ok()?)
        }
        Some(r) => serde_json::from_str(r).ok()?,
        None => Value::Null,
    };
    let envelope = Envelope {
        op: Some("publish".into()),
        reference,
    };
    let request = match fields.events.take() {
        Some(events) => {
            let event_fields = fields.topic.is_some()
                || fields.event_type.is_some()
                || fields.data.is_some()
                || fields.origin.is_some()
                || fields.correlation_id.is_some();
            if event_fields {
                return None;
            }
            PublishRequest::Batch(events)
        }
        None => {
            let topic = fields.topic?;
            PublishRequest::One(fields.event(Cow::Borrowed(topic))?)
        }
    };
    Some((envelope, request))
}

/// Decodes an HTTP publish body if it is plain: one event object, or an
/// array of them, each without `op`, `ref` or `topic` (the path names the
/// topic, given here without escapes). Batch bounds are the caller's.
pub(super) fn publish_body<'a>(body: &'a str, topic: &str) -> Option<PublishRequest<'a>> {
    let mut s = Scan { text: body, i: 0 };
    s.ws();
    let request = if s.peek()? == b'[' {
        s.i += 1;
        s.ws();
        let mut events = Vec::new();
        loop {
            events.push(s.body_event(topic)?);
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b']' => break,
                _ => return None,
            }
        }
        PublishRequest::Batch(events)
    } else {
        PublishRequest::One(s.body_event(topic)?)
    };
    s.ws();
    (s.i == body.len()).then_some(request)
}

/// The fields of a plain object, as written.
#[derive(Default)]
struct Plain<'a> {
    op: Option<&'a str>,
    reference: Option<&'a str>,
    topic: Option<&'a str>,
    event_type: Option<&'a str>,
    data: Option<&'a str>,
    origin: Option<u64>,
    correlation_id: Option<&'a str>,
    events: Option<Vec<Publish<'a>>>,
}

impl<'a> Plain<'a> {
    /// The event these fields publish to `topic`; `None` without a type.
    fn event(self, topic: Cow<'a, str>) -> Option<Publish<'a>> {
        Some(Publish {
            topic,
            event_type: Cow::Borrowed(self.event_type?),
            // `null` is no payload, as serde reads an `Option`.
            data: self.data.filter(|d| *d != "null"),
            origin: self.origin,
            correlation_id: self.correlation_id.map(Cow::Borrowed),
            // `value` validated it as `json::validate` would.
            data_checked: true,
        })
    }
}

/// A position in the message.
struct Scan<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// A plain object: known keys without escapes, each at most once, the
    /// values of the types described above. `MESSAGE`: a whole message,
    /// which may have `op`, `ref` and `events`; otherwise an event of a
    /// batch or body, which may not (so this never calls itself: the
    /// message's form stays inlined on the single-event path).
    fn object<const MESSAGE: bool>(&mut self) -> Option<Plain<'a>> {
        let mut fields = Plain::default();
        let mut seen = 0u8;
        self.eat(b'{')?;
        self.ws();
        loop {
            let key = self.plain_string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let bit = match key {
                "op" if MESSAGE => 1,
                "ref" if MESSAGE => 2,
                "topic" => 4,
                "type" => 8,
                "data" => 16,
                "origin" => 32,
                "correlation_id" => 64,
                "events" if MESSAGE => 128,
                _ => return None,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match bit {
                1 => fields.op = Some(self.plain_string()?),
                2 => fields.reference = Some(self.value()?),
                4 => fields.topic = Some(self.plain_string()?),
                8 => fields.event_type = Some(self.plain_string()?),
                16 => fields.data = Some(self.value()?),
                32 => fields.origin = Some(self.unsigned()?),
                64 => fields.correlation_id = Some(self.plain_string()?),
                _ if MESSAGE => fields.events = Some(self.events()?),
                _ => return None,
            }
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => return Some(fields),
                _ => return None,
            }
        }
    }

    /// An event of an HTTP body: a plain object without the fields the
    /// body may not have.
    fn body_event(&mut self, topic: &str) -> Option<Publish<'a>> {
        let fields = self.object::<false>()?;
        if fields.topic.is_some() {
            return None;
        }
        fields.event(Cow::Owned(topic.to_owned()))
    }

    /// A WebSocket batch's `events`: 1 to `MAX_BATCH` plain events, each
    /// naming its topic.
    fn events(&mut self) -> Option<Vec<Publish<'a>>> {
        self.eat(b'[')?;
        self.ws();
        let mut events = Vec::new();
        loop {
            let fields = self.object::<false>()?;
            let topic = fields.topic?;
            events.push(fields.event(Cow::Borrowed(topic))?);
            if events.len() > MAX_BATCH {
                return None;
            }
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Some(events),
                _ => return None,
            }
        }
    }

    /// JSON's insignificant whitespace.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string with no escape and no control character: its content.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        let start = self.i;
        // Stops at a quote, a backslash or a control character.
        self.i = json::plain_end(bytes, start);
        if *bytes.get(self.i)? != b'"' {
            return None;
        }
        self.i += 1;
        // Both ends are ASCII quotes: character boundaries.
        self.text.get(start..self.i - 1)
    }

    /// Any JSON value, validated as payloads are: its text.
    fn value(&mut self) -> Option<&'a str> {
        let rest = self.text.get(self.i..)?;
        let len = json::value_len(rest).ok()?;
        self.i += len;
        rest.get(..len)
    }

    /// An unsigned integer in u64 range, without sign, fraction or
    /// exponent, and without leading zeros (JSON has none).
    fn unsigned(&mut self) -> Option<u64> {
        let bytes = self.text.as_bytes();
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(d @ b'0'..=b'9') = bytes.get(self.i).copied() {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && bytes[start] == b'0') {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::super::ops::Op;
    use super::*;

    /// The general decoder's reading of a message, when it is a publish
    /// without an idempotency key.
    fn general(text: &str) -> Option<(Envelope, PublishRequest<'_>)> {
        match Op::decode_general(text) {
            (envelope, Ok(Op::Publish(request, None))) => Some((envelope, request)),
            _ => None,
        }
    }

    fn events(request: PublishRequest<'_>) -> (bool, Vec<Publish<'_>>) {
        match request {
            PublishRequest::One(p) => (false, vec![p]),
            PublishRequest::Batch(list) => (true, list),
        }
    }

    fn agrees(text: &str) -> Result<bool, TestCaseError> {
        let Some((envelope, request)) = publish(text) else {
            return Ok(false);
        };
        let Some((want_envelope, want)) = general(text) else {
            return Err(TestCaseError::fail(format!(
                "the fast path accepted what the general decoder refuses: {text:?}"
            )));
        };
        prop_assert_eq!(envelope, want_envelope, "{}", text);
        let (batch, got) = events(request);
        let (want_batch, want) = events(want);
        prop_assert_eq!(batch, want_batch, "{}", text);
        prop_assert_eq!(got.len(), want.len(), "{}", text);
        for (publish, want) in got.into_iter().zip(want) {
            // What `data_checked` promises: the payload passes the check
            // that execution would otherwise make.
            prop_assert!(publish.data_checked);
            prop_assert!(json::validate(publish.data.unwrap_or("null")).is_ok());
            let want = Publish {
                data_checked: true,
                ..want
            };
            prop_assert_eq!(publish, want, "{}", text);
        }
        Ok(true)
    }

    #[test]
    fn plain_publishes_take_the_fast_path() {
        let text = r#"{"op":"publish","ref":7,"topic":"orders.eu","type":"order.created","data":{"id":1,"s":"a\"b"},"origin":42,"correlation_id":"c-1"}"#;
        let (envelope, request) = publish(text).expect("fast path");
        let PublishRequest::One(p) = request else {
            panic!("one event")
        };
        assert_eq!(envelope.reference, Value::from(7));
        assert_eq!(p.data, Some(r#"{"id":1,"s":"a\"b"}"#));
        assert_eq!(p.origin, Some(42));
        assert!(agrees(text).unwrap());
        let spaced = " {\n \"type\" : \"t\" , \"topic\":\"a\",\"op\":\"publish\"}\t";
        assert!(agrees(spaced).unwrap());
    }

    #[test]
    fn plain_batches_take_the_fast_path_up_to_the_batch_bound() {
        let event = r#"{"topic":"t.1","type":"e","data":{"k":1}}"#;
        let batch = |n: usize| {
            let events = vec![event; n].join(",");
            format!(r#"{{"op":"publish","ref":"r","events":[{events}]}}"#)
        };
        for n in [1, 2, MAX_BATCH] {
            let text = batch(n);
            let request = publish(&text).map(|(_, r)| r);
            assert!(matches!(request, Some(PublishRequest::Batch(v)) if v.len() == n));
            assert!(agrees(&text).unwrap());
        }
        // One past the bound: the general decoder gives the error.
        assert!(publish(&batch(MAX_BATCH + 1)).is_none());
        assert!(crate::fuzzing::decoders_agree(&batch(MAX_BATCH + 1)));
    }

    #[test]
    fn anything_unusual_is_left_to_the_general_decoder() {
        for text in [
            r#"{"op":"publish","topic":"a","type":"t","events":[]}"#,
            r#"{"op":"publish","topic":"a\u0062","type":"t"}"#,
            r#"{"op":"publish","topic":"a","topic":"b","type":"t"}"#,
            r#"{"op":"publish","topic":"a","type":"t","origin":-1}"#,
            r#"{"op":"publish","topic":"a","type":"t","origin":1.0}"#,
            r#"{"op":"publish","topic":"a","type":"t","origin":01}"#,
            r#"{"op":"publish","topic":"a","type":"t","origin":18446744073709551616}"#,
            r#"{"op":"publish","topic":"a","type":"t","origin":null}"#,
            r#"{"op":"publish","topic":"a","type":"t","correlation_id":null}"#,
            r#"{"op":"publish","topic":"a","type":"t","extra":1}"#,
            r#"{"op":"publish","topic":"a"}"#,
            r#"{"op":"subscribe","topic":"a","type":"t"}"#,
            r#"{"op":"publish","topic":"a","type":"t"} x"#,
            r#"{"op":"publish","events":[]}"#,
            r#"{"op":"publish","events":[{"topic":"a","type":"t","op":"publish"}]}"#,
            r#"{"op":"publish","events":[{"topic":"a","type":"t","ref":1}]}"#,
            r#"{"op":"publish","events":[{"topic":"a","type":"t","events":[]}]}"#,
            r#"{"op":"publish","events":[{"type":"t"}]}"#,
            r#"{"op":"publish","events":[{"topic":"a","type":"t"}],"idempotency_key":"k"}"#,
            r#"{"op":"publish","events":[{"topic":"a","type":"t"}],"origin":1}"#,
            r#"{"op":"publish","topic":"a","type":"t","data":[1,}"#,
            r#"{"op":"publish","topic":"a","type":"t",}"#,
            r#"{}"#,
        ] {
            assert!(publish(text).is_none(), "{text}");
        }
    }

    /// Fields built from the pieces the fast path must get right: known
    /// and unknown keys, escapes, duplicates, odd numbers, nested payloads,
    /// whitespace, broken syntax.
    fn fields() -> impl Strategy<Value = Vec<String>> {
        let key = prop::sample::select(vec![
            "\"op\"",
            "\"ref\"",
            "\"topic\"",
            "\"type\"",
            "\"data\"",
            "\"origin\"",
            "\"correlation_id\"",
            "\"events\"",
            "\"o\\u0070\"",
            "\"x\"",
        ]);
        let value = prop::sample::select(vec![
            "\"publish\"",
            "\"publish\"",
            "\"subscribe\"",
            "\"a.b\"",
            "\"a\\\"b\"",
            "\"é\"",
            "\"\"",
            "0",
            "7",
            "01",
            "-1",
            "1.5",
            "1e3",
            "18446744073709551615",
            "18446744073709551616",
            "null",
            "true",
            "[]",
            r#"[{"topic":"t.1","type":"e"}]"#,
            r#"[{"topic":"t.1","type":"e","data":{"a":1}},{"type":"f","topic":"u","origin":2,"correlation_id":"c"}]"#,
            r#"[{"type":"e"}]"#,
            r#"[{"topic":"t.1","type":"e","op":"publish"}]"#,
            r#"[{"topic":"t.1","type":"e","events":[]}]"#,
            r#"[{"topic":"t.1","type":"e"},]"#,
            r#"[{"topic":"t\u002e1","type":"e"}]"#,
            "{\"k\":[1,{\"z\":\"\\ud83d\\ude00\"}]}",
            "\"\\ud800\"",
            "[1,",
        ]);
        let ws = prop::sample::select(vec!["", "", " ", "\n\t"]);
        let field = (ws.clone(), key, ws.clone(), value, ws.clone())
            .prop_map(|(a, k, b, v, c)| format!("{a}{k}{b}:{v}{c}"));
        prop::collection::vec(field, 0..6)
    }

    /// An object of `first` and `fields`, closed in one of several ways.
    fn object(first: Option<&str>, fields: Vec<String>, close: &str) -> String {
        let all: Vec<&str> = first
            .into_iter()
            .chain(fields.iter().map(String::as_str))
            .collect();
        format!("{{{}{close}", all.join(","))
    }

    fn close() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["}", "}", "} ", "},", ""])
    }

    /// WebSocket messages: the fields, with or without a plain publish's
    /// or a plain batch's.
    fn message() -> impl Strategy<Value = String> {
        let valid = [
            r#"[{"topic":"t.1","type":"e"},{"topic":"t.2","type":"f","data":[1]}]"#,
            r#"[{"topic":"t.1","type":"e","data":{"n":[1,2.5,"x"]},"origin":9}]"#,
            r#"[{"type":"e","topic":"t.3"},{"topic":"t.3","type":"e"},{"topic":"t.3","type":"g"}]"#,
        ];
        // The valid ones weigh as much as all the others.
        let mut batches: Vec<&str> = valid.iter().copied().cycle().take(12).collect();
        batches.extend([
            r#"[{"topic":"t.1","type":"e","origin":3}]"#,
            r#"[ {"topic":"t.1","type":"e","data":null} , {"type":"e","topic":"t.1"} ]"#,
            r#"[{"topic":"t.1","type":"e","correlation_id":"c"}]"#,
            r#"[{"type":"e"}]"#,
            r#"[{"topic":"t.1","type":"e","op":"publish"}]"#,
            r#"[{"topic":"t.1","type":"e","ref":1}]"#,
            r#"[{"topic":"t.1","type":"e","events":[]}]"#,
            r#"[{"topic":"t.1","type":"e","x":1}]"#,
            r#"[{"topic":"t.1","type":"e"},]"#,
            r#"[{"topic":"t.1","type":"e"} {"topic":"t.1","type":"e"}]"#,
            r#"[]"#,
            r#"[1]"#,
            r#"{}"#,
        ]);
        let batch = prop::sample::select(batches);
        let required = prop_oneof![
            1 => Just(None),
            2 => Just(Some(r#""op":"publish","topic":"t.1","type":"e""#.to_owned())),
            3 => batch.prop_map(|b| Some(format!(r#""op":"publish","events":{b}"#))),
        ];
        (fields(), required, close())
            .prop_map(|(fields, required, close)| object(required.as_deref(), fields, close))
    }

    /// HTTP publish bodies: events of a type and the fields (which may
    /// name a topic, an op or a ref, all refused in a body), alone or in
    /// arrays.
    fn body() -> impl Strategy<Value = String> {
        let event = || {
            let plain = prop::sample::select(vec![
                r#"{"type":"e"}"#,
                r#"{"type":"e","data":{"a":[1,"\u00e9"]}}"#,
                r#" { "data" : null , "type":"e","origin":3,"correlation_id":"c"}"#,
            ]);
            let any = (fields(), prop::bool::ANY, close()).prop_map(|(fields, typed, close)| {
                object(typed.then_some(r#""type":"e""#), fields, close)
            });
            prop_oneof![plain.prop_map(str::to_owned), any]
        };
        let list_close = prop::sample::select(vec!["]", " ] ", "],", ""]);
        prop_oneof![
            event(),
            (prop::collection::vec(event(), 0..4), list_close)
                .prop_map(|(list, close)| format!("[{}{close}", list.join(","))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn the_fast_path_agrees_with_the_general_decoder(text in message()) {
            agrees(&text)?;
        }

        #[test]
        fn the_body_fast_path_agrees_with_the_general_decoder(text in body()) {
            prop_assert!(crate::fuzzing::body_decoders_agree(text.as_bytes(), "t.1"), "{}", text);
        }
    }

    #[test]
    fn plain_bodies_take_the_fast_path() {
        let one = r#"{"type":"e","data":{"k":1}}"#;
        let batch = r#" [ {"type":"e"}, {"type":"f","data":2,"origin":5} ] "#;
        assert!(matches!(
            publish_body(one, "t.1"),
            Some(PublishRequest::One(_))
        ));
        assert!(
            matches!(publish_body(batch, "t.1"), Some(PublishRequest::Batch(v)) if v.len() == 2)
        );
        assert!(publish_body(r#"{"type":"e","topic":"x"}"#, "t.1").is_none());
        assert!(publish_body("[]", "t.1").is_none());
        assert!(crate::fuzzing::body_decoders_agree(batch.as_bytes(), "t.1"));
    }

    /// The generator reaches the fast path often enough for the property
    /// to mean something.
    #[test]
    fn the_generator_reaches_the_fast_path() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = message();
        let (mut fast, mut batches) = (0, 0);
        for _ in 0..2000 {
            let text = strategy.new_tree(&mut runner).unwrap().current();
            let request = publish(&text).map(|(_, r)| r);
            fast += usize::from(request.is_some());
            batches += usize::from(matches!(request, Some(PublishRequest::Batch(_))));
        }
        eprintln!("{fast} of 2000 messages took the fast path, {batches} of them batches");
        assert!(fast > 75, "only {fast} of 2000 took the fast path");
        assert!(
            batches > 25,
            "only {batches} of 2000 batches took the fast path"
        );
        let strategy = body();
        let mut fast = 0;
        for _ in 0..2000 {
            let text = strategy.new_tree(&mut runner).unwrap().current();
            fast += usize::from(publish_body(&text, "t.1").is_some());
        }
        assert!(fast > 100, "only {fast} of 2000 bodies took the fast path");
    }
}
