//! The operations a client can ask for, as typed requests: decoded from
//! JSON (WebSocket messages, HTTP bodies) or from a query string, and
//! validated here, once, whatever the transport.
//!
//! Every request type refuses unknown fields and wrong types, naming the
//! field. Every client-supplied string and count has a bound (below, and
//! the broker's own: topics 255 bytes, event types 128, correlation ids
//! 126, consumer names 128, presence fields 256, presence metadata 4 KiB).

use herald_core::broker::{validate_event_type, StartAt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::ApiError;

/// Most subscriptions one WebSocket connection may hold.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 64;
/// Longest subscription id, in bytes.
pub(crate) const MAX_SUBSCRIPTION_ID: usize = 128;
/// Most topics and patterns one subscription may name.
pub(crate) const MAX_FILTER_TOPICS: usize = 32;
/// Most event types one subscription may name.
pub(crate) const MAX_FILTER_TYPES: usize = 32;
/// Most events one poll returns.
pub(crate) const MAX_POLL_LIMIT: u64 = 1000;
/// Events a poll returns unless it says otherwise.
pub(crate) const DEFAULT_POLL_LIMIT: u64 = 100;
/// Longest long-poll wait.
pub(crate) const MAX_WAIT_MS: u64 = 60_000;

/// `publish`: one event to one topic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Publish {
    pub(crate) topic: String,
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    /// The payload, any JSON (`null` when absent).
    #[serde(default)]
    pub(crate) data: Value,
    /// The publisher's id, for "not my own events" filters (0: none).
    #[serde(default)]
    pub(crate) origin: Option<u64>,
    #[serde(default)]
    pub(crate) correlation_id: Option<String>,
}

/// `subscribe` (WebSocket): a stream of events under an id of the
/// connection's choosing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Subscribe {
    pub(crate) id: String,
    pub(crate) topic: Option<String>,
    pub(crate) topics: Option<Vec<String>>,
    pub(crate) types: Option<Vec<String>>,
    pub(crate) exclude_origin: Option<u64>,
    pub(crate) after: Option<u64>,
    pub(crate) since: Option<u64>,
    pub(crate) last: Option<u64>,
    /// A durable consumer: resumes after its checkpoint.
    pub(crate) consumer: Option<String>,
}

/// `unsubscribe` (WebSocket).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Unsubscribe {
    pub(crate) id: String,
}

/// `ack`: a durable consumer has processed everything up to `seq`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ack {
    pub(crate) consumer: String,
    /// Global sequence acknowledged up to.
    pub(crate) seq: u64,
}

/// `heartbeat`: joins a topic's presence, or refreshes the session.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Heartbeat {
    pub(crate) topic: String,
    pub(crate) client_id: String,
    #[serde(default)]
    pub(crate) user: String,
    #[serde(default)]
    pub(crate) device: String,
    #[serde(default)]
    pub(crate) metadata: Value,
}

/// `leave`: ends a presence session.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Leave {
    pub(crate) topic: String,
    pub(crate) client_id: String,
}

/// `presence`: who is present on a topic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PresenceQuery {
    pub(crate) topic: String,
}

/// `ping`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ping {}

/// A WebSocket message: `{"op": …, "ref": …, fields of the op}`.
///
/// Decoded in two steps (the `op` names the type of the rest) rather than
/// with serde's internally tagged enums, which buffer the fields and lose
/// the name of the one that is wrong.
#[derive(Debug)]
pub(crate) enum Op {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Publish(Publish),
    Ack(Ack),
    Heartbeat(Heartbeat),
    Leave(Leave),
    Presence(PresenceQuery),
    Ping(Ping),
}

/// A WebSocket message's envelope: what is echoed whatever the outcome.
#[derive(Debug, Default)]
pub(crate) struct Envelope {
    /// The `op`, if it was a string.
    pub(crate) op: Option<String>,
    /// The client's `ref`, echoed in the reply (`null` if none).
    pub(crate) reference: Value,
}

impl Op {
    /// Decodes a WebSocket text message.
    pub(crate) fn decode(text: &str) -> (Envelope, Result<Op, ApiError>) {
        let mut envelope = Envelope::default();
        let mut fields = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                return (
                    envelope,
                    Err(ApiError::invalid("a message is a JSON object")),
                )
            }
            Err(e) => return (envelope, Err(ApiError::invalid(format!("not JSON: {e}")))),
        };
        envelope.reference = fields.remove("ref").unwrap_or(Value::Null);
        let op = match fields.remove("op") {
            Some(Value::String(op)) => op,
            Some(_) => return (envelope, Err(ApiError::invalid("'op' must be a string"))),
            None => return (envelope, Err(ApiError::invalid("missing 'op'"))),
        };
        let op = envelope.op.insert(op);
        let decoded = match op.as_str() {
            "subscribe" => from_fields(fields).map(Op::Subscribe),
            "unsubscribe" => from_fields(fields).map(Op::Unsubscribe),
            "publish" => from_fields(fields).map(Op::Publish),
            "ack" => from_fields(fields).map(Op::Ack),
            "heartbeat" => from_fields(fields).map(Op::Heartbeat),
            "leave" => from_fields(fields).map(Op::Leave),
            "presence" => from_fields(fields).map(Op::Presence),
            "ping" => from_fields(fields).map(Op::Ping),
            other => Err(ApiError::invalid(format!("unknown op {other:?}"))),
        };
        (envelope, decoded)
    }
}

/// Decodes a request from the fields of a JSON object.
pub(crate) fn from_fields<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, ApiError> {
    Ok(serde_path_to_error::deserialize(Value::Object(fields))?)
}

/// Decodes a JSON object body, adding fields the transport supplies (an
/// HTTP path's topic or consumer). A body field of the same name is refused:
/// the path says it.
pub(crate) fn from_body<T: DeserializeOwned>(
    body: &[u8],
    supplied: &[(&str, &str)],
) -> Result<T, ApiError> {
    let mut fields = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => return Err(ApiError::invalid("the body must be a JSON object")),
        Err(e) => return Err(ApiError::invalid(format!("body is not JSON: {e}"))),
    };
    for (name, value) in supplied {
        if fields.contains_key(*name) {
            return Err(ApiError::invalid(format!(
                "'{name}': unknown field (the path names it)"
            )));
        }
        fields.insert((*name).to_owned(), Value::String((*value).to_owned()));
    }
    from_fields(fields)
}

/// Decodes a query string (`a=1&b=x%20y`).
pub(crate) fn from_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs = form_urlencoded::parse(query.as_bytes());
    Ok(serde_path_to_error::deserialize(
        serde_urlencoded::Deserializer::new(pairs),
    )?)
}

/// The query of `GET /v1/topics/{topic}/events` and `GET /v1/events`:
/// the same selection as a WebSocket `subscribe`, lists comma-separated.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    pub(crate) topics: Option<CommaList>,
    pub(crate) types: Option<CommaList>,
    pub(crate) exclude_origin: Option<u64>,
    pub(crate) after: Option<u64>,
    pub(crate) since: Option<u64>,
    pub(crate) last: Option<u64>,
    /// Polls: most events in the answer (1–1000, default 100).
    pub(crate) limit: Option<u64>,
    /// Polls: milliseconds to wait for a first event (at most 60 000).
    pub(crate) wait: Option<u64>,
    /// The bearer token, for clients that cannot set headers (read by
    /// authentication, listed here so that it is not an unknown field).
    #[allow(dead_code)]
    pub(crate) access_token: Option<String>,
}

/// The query of endpoints that take no parameters but the token.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoQuery {
    #[allow(dead_code)]
    pub(crate) access_token: Option<String>,
}

/// A comma-separated list in a query string (`a,b`; empty: none).
#[derive(Debug, Default)]
pub(crate) struct CommaList(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for CommaList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CommaList, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(CommaList(Vec::new()));
        }
        Ok(CommaList(text.split(',').map(str::to_owned).collect()))
    }
}

/// Which topics a stream reads: one topic (positions are its topic
/// sequences), or topics and patterns (positions are global sequences).
#[derive(Debug)]
pub(crate) enum Topics {
    One(String),
    Many(Vec<String>),
}

/// Where a stream starts, as the client said it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Position {
    /// The last sequence the client has.
    pub(crate) after: Option<u64>,
    /// Nanoseconds since the epoch.
    pub(crate) since: Option<u64>,
    pub(crate) last: Option<u64>,
}

/// Where a stream without a position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartDefault {
    /// Live streams: with the next event published.
    Now,
    /// Polls: from the first event.
    Beginning,
}

impl Position {
    /// The one rule from a client's position to the broker's: `after`
    /// wins over `since`, which wins over `last`.
    pub(crate) fn start(self, single: bool, default: StartDefault) -> Result<StartAt, ApiError> {
        let next = |a: u64| {
            a.checked_add(1)
                .ok_or_else(|| ApiError::invalid("'after' is out of range"))
        };
        Ok(match (self.after, self.since, self.last) {
            (Some(a), _, _) if single => StartAt::TopicSeq(next(a)?),
            (Some(a), _, _) => StartAt::Seq(next(a)?),
            (None, Some(ts), _) => StartAt::Time(ts),
            (None, None, Some(n)) => StartAt::LastN(n),
            (None, None, None) => match (default, single) {
                (StartDefault::Now, _) => StartAt::Now,
                (StartDefault::Beginning, true) => StartAt::TopicSeq(1),
                (StartDefault::Beginning, false) => StartAt::Seq(1),
            },
        })
    }
}

/// What a client asked to read, from any transport.
#[derive(Debug)]
pub(crate) struct Selection {
    pub(crate) topics: Topics,
    pub(crate) types: Vec<String>,
    pub(crate) exclude_origin: Option<u64>,
    pub(crate) position: Position,
    pub(crate) consumer: Option<String>,
}

impl Selection {
    /// Checks the bounds of what the client named (names themselves are
    /// checked by the broker when the filter is built).
    pub(crate) fn validate(&self) -> Result<(), ApiError> {
        if let Topics::Many(list) = &self.topics {
            if list.is_empty() {
                return Err(ApiError::invalid(
                    "'topics' must name at least one topic or pattern",
                ));
            }
            if list.len() > MAX_FILTER_TOPICS {
                return Err(ApiError::invalid(format!(
                    "'topics': at most {MAX_FILTER_TOPICS} topics and patterns per subscription"
                )));
            }
        }
        if self.types.len() > MAX_FILTER_TYPES {
            return Err(ApiError::invalid(format!(
                "'types': at most {MAX_FILTER_TYPES} event types per subscription"
            )));
        }
        for t in &self.types {
            validate_event_type(t).map_err(|e| ApiError::invalid(format!("'types': {e}")))?;
        }
        Ok(())
    }
}

impl Subscribe {
    /// The selection, with the subscription id checked.
    pub(crate) fn selection(self) -> Result<(String, Selection), ApiError> {
        if self.id.is_empty() || self.id.len() > MAX_SUBSCRIPTION_ID {
            return Err(ApiError::invalid(format!(
                "'id': 1 to {MAX_SUBSCRIPTION_ID} bytes"
            )));
        }
        let topics =
            match (self.topic, self.topics) {
                (Some(t), None) => Topics::One(t),
                (None, Some(list)) => Topics::Many(list),
                _ => return Err(ApiError::invalid(
                    "subscribe needs 'topic' (a name) or 'topics' (names and patterns), not both",
                )),
            };
        let selection = Selection {
            topics,
            types: self.types.unwrap_or_default(),
            exclude_origin: self.exclude_origin,
            position: Position {
                after: self.after,
                since: self.since,
                last: self.last,
            },
            consumer: self.consumer,
        };
        selection.validate()?;
        Ok((self.id, selection))
    }
}

impl EventsQuery {
    /// The selection of a GET on `/v1/topics/{topic}/events` (`path_topic`)
    /// or `/v1/events`. `last_event_id`: an SSE client's resume position,
    /// which wins over `after` (a browser reconnects to the URL it opened,
    /// with its `after`, and adds the header).
    pub(crate) fn selection(
        &self,
        path_topic: Option<&str>,
        last_event_id: Option<u64>,
    ) -> Result<Selection, ApiError> {
        let topics = match (path_topic, &self.topics) {
            (Some(t), None) => Topics::One(t.to_owned()),
            (None, Some(list)) => Topics::Many(list.0.clone()),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "'topics': unknown field on a topic's own endpoint (the path names it)",
                ))
            }
            (None, None) => {
                return Err(ApiError::invalid(
                    "missing the 'topics' query parameter (comma-separated topics or patterns)",
                ))
            }
        };
        let selection = Selection {
            topics,
            types: self.types.as_ref().map(|t| t.0.clone()).unwrap_or_default(),
            exclude_origin: self.exclude_origin,
            position: Position {
                after: last_event_id.or(self.after),
                since: self.since,
                last: self.last,
            },
            consumer: None,
        };
        selection.validate()?;
        Ok(selection)
    }

    /// A poll's most events and wait, clamped to their bounds.
    pub(crate) fn poll_bounds(&self) -> (usize, u64) {
        let limit = self
            .limit
            .unwrap_or(DEFAULT_POLL_LIMIT)
            .clamp(1, MAX_POLL_LIMIT);
        (limit as usize, self.wait.unwrap_or(0).min(MAX_WAIT_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        match Op::decode(text).1 {
            Err(e) => e.message().to_owned(),
            Ok(op) => panic!("{text} was accepted as {op:?}"),
        }
    }

    #[test]
    fn wrong_types_and_unknown_fields_name_the_field() {
        assert!(
            refused(r#"{"op":"publish","topic":"t","type":"x","origin":"7"}"#)
                .starts_with("'origin': invalid type: string")
        );
        assert!(
            refused(r#"{"op":"publish","topic":"t","type":"x","colour":1}"#)
                .contains("unknown field `colour`")
        );
        assert!(refused(r#"{"op":"publish","topic":"t"}"#).contains("missing field `type`"));
        assert!(
            refused(r#"{"op":"subscribe","id":"s","topic":"t","after":-1}"#)
                .starts_with("'after': invalid value")
        );
        assert!(refused(r#"{"op":"ping","x":1}"#).contains("unknown field `x`"));
        assert_eq!(refused(r#"{"op":"nope"}"#), r#"unknown op "nope""#);
        assert_eq!(refused(r#"[1]"#), "a message is a JSON object");
        assert_eq!(refused(r#"{"ref":1}"#), "missing 'op'");
    }

    #[test]
    fn the_envelope_survives_a_bad_op() {
        let (envelope, op) = Op::decode(r#"{"op":"publish","ref":{"n":1},"topic":5}"#);
        assert!(op.is_err());
        assert_eq!(envelope.op.as_deref(), Some("publish"));
        assert_eq!(envelope.reference, serde_json::json!({"n": 1}));
    }

    #[test]
    fn queries_decode_to_the_same_types() {
        let q: EventsQuery = from_query("after=5&types=a,b&exclude_origin=7").unwrap();
        assert_eq!(q.after, Some(5));
        assert_eq!(q.types.unwrap().0, ["a", "b"]);
        let e = from_query::<EventsQuery>("after=x").unwrap_err();
        assert!(e.message().starts_with("'after': "), "{e}");
        let e = from_query::<EventsQuery>("colour=red").unwrap_err();
        assert!(e.message().contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn positions_follow_one_rule() {
        let at = |after, since, last, single, default| {
            Position { after, since, last }.start(single, default)
        };
        use StartDefault::*;
        assert_eq!(
            at(Some(4), Some(1), None, true, Now),
            Ok(StartAt::TopicSeq(5))
        );
        assert_eq!(at(Some(4), None, None, false, Now), Ok(StartAt::Seq(5)));
        assert_eq!(at(None, Some(9), Some(2), true, Now), Ok(StartAt::Time(9)));
        assert_eq!(at(None, None, Some(2), false, Now), Ok(StartAt::LastN(2)));
        assert_eq!(at(None, None, None, true, Now), Ok(StartAt::Now));
        assert_eq!(
            at(None, None, None, true, Beginning),
            Ok(StartAt::TopicSeq(1))
        );
        assert_eq!(at(None, None, None, false, Beginning), Ok(StartAt::Seq(1)));
        assert!(at(Some(u64::MAX), None, None, true, Now).is_err());
    }

    #[test]
    fn bounds_are_enforced() {
        let long_id = format!(
            r#"{{"op":"subscribe","id":"{}","topic":"t"}}"#,
            "x".repeat(MAX_SUBSCRIPTION_ID + 1)
        );
        let Ok(Op::Subscribe(s)) = Op::decode(&long_id).1 else {
            panic!()
        };
        assert!(s.selection().is_err());
        let many: Vec<String> = (0..=MAX_FILTER_TOPICS).map(|i| format!("t{i}")).collect();
        let text = serde_json::json!({"op": "subscribe", "id": "s", "topics": many}).to_string();
        let Ok(Op::Subscribe(s)) = Op::decode(&text).1 else {
            panic!()
        };
        assert!(s.selection().unwrap_err().message().contains("at most"));
        let text = r#"{"op":"subscribe","id":"s","topic":"t","types":["bad type"]}"#;
        let Ok(Op::Subscribe(s)) = Op::decode(text).1 else {
            panic!()
        };
        assert!(s
            .selection()
            .unwrap_err()
            .message()
            .starts_with("'types': "));
    }
}
