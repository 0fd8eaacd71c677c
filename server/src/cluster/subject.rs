//! How an event is written in the cluster's stream: its subject (from the
//! broker's topic name) and its headers (everything else but the payload).
//!
//! Subjects: `herald.e.<topic>` for an event topic, `herald.s.<topic
//! without its '$'>` for a system topic, so that a subscriber's `herald.e.>`
//! never matches a system event. The broker's topic names (tenant prefix
//! included) are NATS subject tokens already: letters, digits, `_`, `-`,
//! separated by dots.

use async_nats::HeaderMap;

/// Subjects of event topics.
pub(crate) const EVENTS: &str = "herald.e.";
/// Subjects of system topics (`$presence.…`, `$deadletter.…`).
pub(crate) const SYSTEM: &str = "herald.s.";
/// Every subject of the stream.
pub(crate) const ALL: &str = "herald.>";

/// The event's type.
pub(crate) const TYPE: &str = "Herald-Type";
/// Its topic sequence, as its publisher assigned it.
pub(crate) const TOPIC_SEQ: &str = "Herald-Topic-Seq";
/// Present (`1`) when the publisher chose a topic sequence past any the
/// topic can have had, not knowing its last (see
/// `Broker::topic_sequence_after_skip`): replicas accept the jump.
pub(crate) const TOPIC_JUMP: &str = "Herald-Topic-Jump";
/// When it was published, in nanoseconds since the Unix epoch.
pub(crate) const TIME: &str = "Herald-Time";
/// The publisher's origin (absent: 0).
pub(crate) const ORIGIN: &str = "Herald-Origin";
/// The correlation id (absent: none).
pub(crate) const CORRELATION: &str = "Herald-Correlation-Id";

/// The subject of a broker topic.
pub(crate) fn of(topic: &str) -> String {
    match topic.strip_prefix('$') {
        Some(system) => format!("{SYSTEM}{system}"),
        None => format!("{EVENTS}{topic}"),
    }
}

/// The broker topic of a subject; `None` if it is not one [`of`] makes.
pub(crate) fn topic(subject: &str) -> Option<String> {
    if let Some(t) = subject.strip_prefix(EVENTS) {
        return Some(t.to_owned());
    }
    subject.strip_prefix(SYSTEM).map(|t| format!("${t}"))
}

/// An event's fields, as read back from a stream message's headers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) event_type: String,
    pub(crate) topic_seq: u64,
    pub(crate) topic_jump: bool,
    pub(crate) timestamp_ns: u64,
    pub(crate) origin: u64,
    pub(crate) correlation: Option<String>,
}

/// The headers of an event.
pub(crate) fn headers(f: &Fields) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(TYPE, f.event_type.as_str());
    h.insert(TOPIC_SEQ, f.topic_seq.to_string().as_str());
    if f.topic_jump {
        h.insert(TOPIC_JUMP, "1");
    }
    h.insert(TIME, f.timestamp_ns.to_string().as_str());
    if f.origin != 0 {
        h.insert(ORIGIN, f.origin.to_string().as_str());
    }
    if let Some(c) = &f.correlation {
        h.insert(CORRELATION, c.as_str());
    }
    h
}

/// An event's fields from its headers; the error names what is missing
/// or malformed (a message Herald did not write).
pub(crate) fn fields(h: Option<&HeaderMap>) -> Result<Fields, String> {
    let get = |name: &str| h.and_then(|h| h.get(name)).map(|v| v.as_str());
    let number = |name: &str, required: bool| -> Result<u64, String> {
        match get(name) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("header {name} is not a number: {v:?}")),
            None if required => Err(format!("no {name} header")),
            None => Ok(0),
        }
    };
    Ok(Fields {
        event_type: get(TYPE).ok_or(format!("no {TYPE} header"))?.to_owned(),
        topic_seq: number(TOPIC_SEQ, true)?,
        topic_jump: number(TOPIC_JUMP, false)? == 1,
        timestamp_ns: number(TIME, true)?,
        origin: number(ORIGIN, false)?,
        correlation: get(CORRELATION).map(str::to_owned),
    })
}

/// The topic sequence a stream message carries, if it is Herald's.
pub(crate) fn topic_seq(h: Option<&HeaderMap>) -> Option<u64> {
    h?.get(TOPIC_SEQ)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_subjects_map_one_to_one_and_system_topics_stay_apart() {
        for (name, subject) in [
            ("orders", "herald.e.orders"),
            ("acme.orders.eu", "herald.e.acme.orders.eu"),
            ("$presence.acme.room", "herald.s.presence.acme.room"),
        ] {
            assert_eq!(of(name), subject);
            assert_eq!(topic(subject).as_deref(), Some(name));
        }
        assert_eq!(topic("other.orders"), None);
    }

    #[test]
    fn fields_survive_the_headers_and_missing_ones_are_named() {
        let f = Fields {
            event_type: "order.created".into(),
            topic_seq: 42,
            topic_jump: true,
            timestamp_ns: 1_700_000_000_000_000_000,
            origin: 9,
            correlation: Some("req-1".into()),
        };
        assert_eq!(fields(Some(&headers(&f))).unwrap(), f);
        let plain = Fields {
            topic_jump: false,
            origin: 0,
            correlation: None,
            ..f
        };
        assert_eq!(fields(Some(&headers(&plain))).unwrap(), plain);
        assert_eq!(fields(None).unwrap_err(), "no Herald-Type header");
        let mut h = headers(&plain);
        h.insert(TOPIC_SEQ, "x");
        assert_eq!(
            fields(Some(&h)).unwrap_err(),
            "header Herald-Topic-Seq is not a number: \"x\""
        );
    }
}
