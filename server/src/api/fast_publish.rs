//! The fast path for the commonest WebSocket message, a single-event
//! `publish` in its plain form, decoded in one pass over the text.
//!
//! The general decoder (`Op::decode_general`) splits the message into
//! fields with serde, decodes them into the request type, and the payload
//! is then validated by another pass. This path does all three at once,
//! but only for the plain form: keys without escapes, each at most once and
//! all known; `op` exactly `"publish"`; `topic`, `type` and
//! `correlation_id` strings without escapes; `origin` a plain unsigned
//! integer; `ref` and `data` any JSON value that `json::value_len` accepts.
//! Anything else (a batch, an escape, a duplicate, `null` where a string
//! goes, any error) returns `None` and the general decoder decides. This
//! path never gives a verdict of its own: what it accepts, the general
//! decoder accepts with the same fields (checked by a property test here
//! and by the `ws_op` fuzz target).

use herald_core::json;
use serde_json::Value;

use super::ops::{Envelope, Publish};

/// Decodes `text` if it is a plain single-event `publish`.
pub(super) fn publish(text: &str) -> Option<(Envelope, Publish<'_>)> {
    let mut s = Scan { text, i: 0 };
    let mut seen = 0u8;
    let mut op = None;
    let mut reference = None;
    let mut topic = None;
    let mut event_type = None;
    let mut data = None;
    let mut origin = None;
    let mut correlation_id = None;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    loop {
        let key = s.plain_string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        let bit = match key {
            "op" => 1,
            "ref" => 2,
            "topic" => 4,
            "type" => 8,
            "data" => 16,
            "origin" => 32,
            "correlation_id" => 64,
            _ => return None,
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        match bit {
            1 => op = Some(s.plain_string()?),
            2 => reference = Some(s.value()?),
            4 => topic = Some(s.plain_string()?),
            8 => event_type = Some(s.plain_string()?),
            16 => data = Some(s.value()?),
            32 => origin = Some(s.unsigned()?),
            _ => correlation_id = Some(s.plain_string()?),
        }
        s.ws();
        match s.next()? {
            b',' => s.ws(),
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if s.i != text.len() || op? != "publish" {
        return None;
    }
    let reference = match reference {
        // Valid JSON (checked above), decoded as the general decoder does.
        Some(r) => serde_json::from_str(r).ok()?,
        None => Value::Null,
    };
    let envelope = Envelope {
        op: Some("publish".to_owned()),
        reference,
    };
    let publish = Publish {
        topic: topic?.to_owned(),
        event_type: event_type?.to_owned(),
        // `null` is no payload, as serde reads an `Option`.
        data: data.filter(|d| *d != "null"),
        origin,
        correlation_id: correlation_id.map(str::to_owned),
        // `value` validated it as `json::validate` would.
        data_checked: true,
    };
    Some((envelope, publish))
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
        loop {
            match *bytes.get(self.i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
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

    use super::super::ops::{Op, PublishRequest};
    use super::*;

    /// The general decoder's reading of a message, when it is a single
    /// publish.
    fn general(text: &str) -> Option<(Envelope, Publish<'_>)> {
        match Op::decode_general(text) {
            (envelope, Ok(Op::Publish(PublishRequest::One(p)))) => Some((envelope, p)),
            _ => None,
        }
    }

    fn agrees(text: &str) -> Result<bool, TestCaseError> {
        let Some((envelope, publish)) = publish(text) else {
            return Ok(false);
        };
        let Some((want_envelope, want)) = general(text) else {
            return Err(TestCaseError::fail(format!(
                "the fast path accepted what the general decoder refuses: {text:?}"
            )));
        };
        prop_assert_eq!(envelope, want_envelope, "{}", text);
        prop_assert!(publish.data_checked);
        let want = Publish {
            data_checked: true,
            ..want
        };
        prop_assert_eq!(publish, want, "{}", text);
        Ok(true)
    }

    #[test]
    fn plain_publishes_take_the_fast_path() {
        let text = r#"{"op":"publish","ref":7,"topic":"orders.eu","type":"order.created","data":{"id":1,"s":"a\"b"},"origin":42,"correlation_id":"c-1"}"#;
        let (envelope, p) = publish(text).expect("fast path");
        assert_eq!(envelope.reference, Value::from(7));
        assert_eq!(p.data, Some(r#"{"id":1,"s":"a\"b"}"#));
        assert_eq!(p.origin, Some(42));
        assert!(agrees(text).unwrap());
        let spaced = " {\n \"type\" : \"t\" , \"topic\":\"a\",\"op\":\"publish\"}\t";
        assert!(agrees(spaced).unwrap());
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
            r#"{"op":"publish","topic":"a","type":"t","data":[1,}"#,
            r#"{"op":"publish","topic":"a","type":"t",}"#,
            r#"{}"#,
        ] {
            assert!(publish(text).is_none(), "{text}");
        }
    }

    /// Messages built from the pieces the fast path must get right: known
    /// and unknown keys, escapes, duplicates, odd numbers, nested payloads,
    /// whitespace, broken syntax.
    fn message() -> impl Strategy<Value = String> {
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
            "{\"k\":[1,{\"z\":\"\\ud83d\\ude00\"}]}",
            "\"\\ud800\"",
            "[1,",
        ]);
        let ws = prop::sample::select(vec!["", "", " ", "\n\t"]);
        let field = (ws.clone(), key, ws.clone(), value, ws.clone())
            .prop_map(|(a, k, b, v, c)| format!("{a}{k}{b}:{v}{c}"));
        let required = Just(r#""op":"publish","topic":"t.1","type":"e""#.to_owned());
        (
            prop::collection::vec(field, 0..6),
            prop::bool::ANY,
            prop::sample::select(vec!["}", "}", "} ", "},", ""]),
            required,
        )
            .prop_map(|(fields, with_required, close, required)| {
                let mut all = fields;
                if with_required {
                    all.insert(0, required);
                }
                format!("{{{}{close}", all.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn the_fast_path_agrees_with_the_general_decoder(text in message()) {
            agrees(&text)?;
        }
    }

    /// The generator reaches the fast path often enough for the property
    /// to mean something.
    #[test]
    fn the_generator_reaches_the_fast_path() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = message();
        let mut fast = 0;
        for _ in 0..2000 {
            let text = strategy.new_tree(&mut runner).unwrap().current();
            fast += usize::from(publish(&text).is_some());
        }
        assert!(fast > 100, "only {fast} of 2000 took the fast path");
    }
}
