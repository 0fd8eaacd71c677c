//! What a subscription selects: topics (exact names or patterns), event
//! types, and "not my own events" (an origin to exclude).
//!
//! Patterns follow the NATS convention: `*` matches exactly one token
//! (`acme.ws.*` matches `acme.ws.42`, not `acme.ws.42.x`), and `>` as the last
//! token matches one or more tokens (`acme.>` matches `acme.ws` and
//! `acme.ws.42`, not `acme`).

use super::topics::validate;
use super::BrokerError;

/// A topic name or pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    text: String,
    exact: bool,
}

impl TopicPattern {
    /// Parses a pattern; an exact name is a pattern without wildcards.
    pub fn parse(text: &str) -> Result<TopicPattern, BrokerError> {
        let invalid = |why: &'static str| {
            Err(BrokerError::InvalidTopic {
                name: text.to_owned(),
                why,
            })
        };
        if text.is_empty() || text.len() > super::topics::MAX_TOPIC_LEN {
            return invalid("must be 1 to 255 bytes");
        }
        let tokens: Vec<&str> = text.split('.').collect();
        let mut exact = true;
        for (i, token) in tokens.iter().enumerate() {
            match *token {
                "*" => exact = false,
                ">" if i + 1 == tokens.len() => exact = false,
                ">" => return invalid("'>' may only be the last token"),
                _ if token.contains(['*', '>']) => {
                    return invalid("wildcards must be whole tokens")
                }
                _ => {}
            }
        }
        // Validate the non-wildcard tokens with the name rules.
        let literal: Vec<&str> = tokens
            .iter()
            .map(|t| if *t == "*" || *t == ">" { "x" } else { t })
            .collect();
        validate(&literal.join("."), true)?;
        Ok(TopicPattern {
            text: text.to_owned(),
            exact,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is a plain topic name.
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// Does `topic` match? System topics (`$…`) match only patterns that
    /// name them explicitly: `>` does not select `$presence.x`.
    pub fn matches(&self, topic: &str) -> bool {
        if self.exact {
            return self.text == topic;
        }
        if topic.starts_with('$') && !self.text.starts_with('$') {
            return false;
        }
        let mut names = topic.split('.');
        let mut pats = self.text.split('.').peekable();
        while let Some(p) = pats.next() {
            if p == ">" {
                return names.next().is_some();
            }
            match names.next() {
                Some(n) if p == "*" || p == n => {}
                _ => return false,
            }
            if pats.peek().is_none() {
                return names.next().is_none();
            }
        }
        false
    }
}

/// A subscription's selection. Empty `types` means every type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub(crate) topics: Vec<TopicPattern>,
    pub(crate) types: Vec<String>,
    /// Origins whose events are left out (a handful at most: a list).
    pub(crate) exclude_origins: Vec<u64>,
}

impl Filter {
    /// Events of one exact topic.
    pub fn topic(name: &str) -> Result<Filter, BrokerError> {
        Filter::patterns(&[name])
    }

    /// Events of every topic matching any of `patterns`.
    pub fn patterns(patterns: &[&str]) -> Result<Filter, BrokerError> {
        if patterns.is_empty() {
            return Err(BrokerError::InvalidFilter(
                "a filter needs at least one topic or pattern",
            ));
        }
        let topics = patterns
            .iter()
            .map(|p| TopicPattern::parse(p))
            .collect::<Result<_, _>>()?;
        Ok(Filter {
            topics,
            types: Vec::new(),
            exclude_origins: Vec::new(),
        })
    }

    /// Only events whose type is one of `types`.
    pub fn with_types<S: AsRef<str>>(mut self, types: &[S]) -> Filter {
        self.types = types.iter().map(|t| t.as_ref().to_owned()).collect();
        self
    }

    /// Leaves out events published with this origin ("not my own events");
    /// called again, with that origin too.
    pub fn excluding_origin(mut self, origin: u64) -> Filter {
        if !self.exclude_origins.contains(&origin) {
            self.exclude_origins.push(origin);
        }
        self
    }

    /// The single exact topic this filter names, if that is all it selects.
    pub fn single_topic(&self) -> Option<&str> {
        match self.topics.as_slice() {
            [only] if only.is_exact() => Some(only.as_str()),
            _ => None,
        }
    }

    /// The topics and patterns, as given (duplicates kept): for a caller
    /// indexing many filters by topic instead of asking each one.
    pub fn topic_patterns(&self) -> &[TopicPattern] {
        &self.topics
    }

    /// Does a topic name match the topic part of the filter?
    pub fn matches_topic(&self, topic: &str) -> bool {
        self.topics.iter().any(|p| p.matches(topic))
    }

    /// Do an event's type and origin pass the filter (its topic already did)?
    pub fn matches_event(&self, event_type: &[u8], origin: u64) -> bool {
        if self.exclude_origins.contains(&origin) {
            return false;
        }
        self.types.is_empty() || self.types.iter().any(|t| t.as_bytes() == event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        TopicPattern::parse(p).unwrap().matches(t)
    }

    #[test]
    fn wildcards_follow_nats_semantics() {
        assert!(m("acme.ws.42", "acme.ws.42"));
        assert!(!m("acme.ws.42", "acme.ws.43"));
        assert!(m("acme.ws.*", "acme.ws.42"));
        assert!(!m("acme.ws.*", "acme.ws.42.x"));
        assert!(!m("acme.ws.*", "acme.ws"));
        assert!(m("acme.*.42", "acme.ws.42"));
        assert!(m("acme.>", "acme.ws"));
        assert!(m("acme.>", "acme.ws.42.x"));
        assert!(!m("acme.>", "acme"));
        assert!(!m("acme.>", "other.ws"));
        assert!(m(">", "anything.at.all"));
        assert!(!m(">", "$presence.a"));
        assert!(m("$presence.>", "$presence.a"));
        assert!(m("*", "one"));
        assert!(!m("*", "one.two"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "a.>.b", "a*", "a.b>", "a..b", "a b"] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn type_and_origin_filters() {
        let f = Filter::topic("a")
            .unwrap()
            .with_types(&["x", "y"])
            .excluding_origin(7);
        assert!(f.matches_event(b"x", 1));
        assert!(!f.matches_event(b"z", 1));
        assert!(!f.matches_event(b"x", 7));
        assert_eq!(f.single_topic(), Some("a"));
        assert_eq!(Filter::patterns(&["a.*"]).unwrap().single_topic(), None);
    }
}
