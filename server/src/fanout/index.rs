//! The router's index of streams that are not a single plain topic: a trie
//! of topic tokens, as NATS's sublist. An event is matched by walking its
//! topic's tokens down the literal, `*` and `>` branches, so its cost
//! depends on the topic and on the branches that match it, not on how many
//! patterns the worker's streams hold.
//!
//! Semantics are [`TopicPattern::matches`](herald_core::broker::TopicPattern::matches)'s:
//! `*` is one token, `>` (last) one or more, and a system topic (`$…`) is
//! matched only by patterns whose first token is its own, literally.

use std::collections::HashMap;

use herald_core::broker::Filter;

use super::StreamId;

#[derive(Default)]
struct Node {
    /// Literal tokens (client-chosen: a keyed hash, see the workspace
    /// manifest).
    children: HashMap<Box<str>, Node, ahash::RandomState>,
    /// `*`: any one token.
    star: Option<Box<Node>>,
    /// Streams with a pattern ending at this node.
    here: Vec<StreamId>,
    /// Streams with a pattern ending in `>` after this node's tokens.
    rest: Vec<StreamId>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.rest.is_empty()
    }

    /// Adds the streams matching `topic` (the tokens left; `None`: none
    /// left). `root_of_system`: at the root of a `$` topic, where wildcards
    /// do not apply.
    fn collect(&self, topic: Option<&str>, root_of_system: bool, out: &mut Vec<StreamId>) {
        let Some(topic) = topic else {
            out.extend_from_slice(&self.here);
            return;
        };
        let (token, tail) = match topic.split_once('.') {
            Some((token, tail)) => (token, Some(tail)),
            None => (topic, None),
        };
        if !root_of_system {
            out.extend_from_slice(&self.rest);
            if let Some(star) = &self.star {
                star.collect(tail, false, out);
            }
        }
        if let Some(child) = self.children.get(token) {
            child.collect(tail, false, out);
        }
    }

    /// Takes `id` off the pattern's end (`tokens` left of it) and prunes
    /// what is left empty. Returns whether this node is now empty.
    fn remove<'a>(&mut self, mut tokens: impl Iterator<Item = &'a str>, id: StreamId) -> bool {
        match tokens.next() {
            None => drop_one(&mut self.here, id),
            Some(">") => drop_one(&mut self.rest, id),
            Some("*") => {
                if let Some(star) = &mut self.star {
                    if star.remove(tokens, id) {
                        self.star = None;
                    }
                }
            }
            Some(token) => {
                if let Some(child) = self.children.get_mut(token) {
                    if child.remove(tokens, id) {
                        self.children.remove(token);
                    }
                }
            }
        }
        self.is_empty()
    }
}

/// Streams by topic pattern (plain topics of multi-topic streams included).
#[derive(Default)]
pub(crate) struct TopicIndex {
    root: Node,
}

impl TopicIndex {
    /// Indexes `id` under each of its filter's topics and patterns.
    pub(crate) fn insert(&mut self, id: StreamId, filter: &Filter) {
        for pattern in distinct(filter) {
            let mut node = &mut self.root;
            let mut tokens = pattern.split('.');
            loop {
                match tokens.next() {
                    None => {
                        node.here.push(id);
                        break;
                    }
                    Some(">") => {
                        node.rest.push(id);
                        break;
                    }
                    Some("*") => node = node.star.get_or_insert_with(Box::default),
                    Some(token) => node = node.children.entry(token.into()).or_default(),
                }
            }
        }
    }

    /// Takes `id` out; `filter` must be the one it was inserted with.
    pub(crate) fn remove(&mut self, id: StreamId, filter: &Filter) {
        for pattern in distinct(filter) {
            self.root.remove(pattern.split('.'), id);
        }
    }

    /// The streams with a topic or pattern matching `topic`, each once (in
    /// no particular order), into `out` (cleared first).
    pub(crate) fn matches(&self, topic: &str, out: &mut Vec<StreamId>) {
        out.clear();
        // No pattern stream: not even a hash of the first token.
        if self.root.is_empty() {
            return;
        }
        self.root.collect(Some(topic), topic.starts_with('$'), out);
        // A stream is found once per pattern of it that matches.
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }

    /// Whether nothing is indexed (removals leave no node behind).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
}

/// What a filter costs the index: the tokens of its distinct topics and
/// patterns (an upper bound on the nodes it adds).
pub(crate) fn tokens(filter: &Filter) -> usize {
    distinct(filter).iter().map(|p| p.split('.').count()).sum()
}

/// A filter's topics and patterns without repeats: a stream is listed once
/// per trie position, so that one removal undoes one insertion.
fn distinct(filter: &Filter) -> Vec<&str> {
    let mut patterns: Vec<&str> = filter.topic_patterns().iter().map(|p| p.as_str()).collect();
    patterns.sort_unstable();
    patterns.dedup();
    patterns
}

fn drop_one(ids: &mut Vec<StreamId>, id: StreamId) {
    if let Some(i) = ids.iter().position(|&x| x == id) {
        ids.swap_remove(i);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A pattern: a system or plain first token or a wildcard, then plain
    /// tokens and wildcards; cut after a `>`, which may only be last.
    fn pattern() -> impl Strategy<Value = String> {
        let first = prop_oneof![
            Just("a"),
            Just("b"),
            Just("$s"),
            Just("$t"),
            Just("*"),
            Just(">")
        ];
        let rest = prop::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("*"), Just(">")],
            0..4,
        );
        (first, rest).prop_map(|(first, rest)| {
            let mut tokens = vec![first];
            for t in rest {
                if tokens.last() == Some(&">") {
                    break;
                }
                tokens.push(t);
            }
            tokens.join(".")
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        let first = prop_oneof![Just("a"), Just("b"), Just("c"), Just("$s"), Just("$t")];
        let rest = prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 0..5);
        (first, rest).prop_map(|(first, rest)| {
            std::iter::once(first)
                .chain(rest)
                .collect::<Vec<_>>()
                .join(".")
        })
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A stream of these topics and patterns (repeats allowed).
        Add(Vec<String>),
        /// Removes the stream at this position among those present.
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop::collection::vec(pattern(), 1..6).prop_map(Op::Add),
            // Some patterns twice, and plain topics beside patterns.
            1 => (pattern(), topic(), pattern()).prop_map(|(p, t, q)| {
                Op::Add(vec![p.clone(), t, q, p])
            }),
            2 => any::<usize>().prop_map(Op::Remove),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The trie finds exactly the streams whose filter matches, through
        /// additions and removals that reuse ids as the router does.
        #[test]
        fn the_trie_matches_as_the_filters_do(
            ops in prop::collection::vec(op(), 1..40),
            topics in prop::collection::vec(topic(), 1..12),
        ) {
            let mut index = TopicIndex::default();
            let mut live: BTreeMap<StreamId, Filter> = BTreeMap::new();
            let (mut free, mut next) = (Vec::new(), 0);
            let mut found = Vec::new();
            for op in ops {
                match op {
                    Op::Add(patterns) => {
                        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
                        let filter = Filter::patterns(&refs).unwrap();
                        let id = free.pop().unwrap_or_else(|| {
                            next += 1;
                            next - 1
                        });
                        index.insert(id, &filter);
                        live.insert(id, filter);
                    }
                    Op::Remove(i) if !live.is_empty() => {
                        let id = *live.keys().nth(i % live.len()).unwrap();
                        let filter = live.remove(&id).unwrap();
                        index.remove(id, &filter);
                        free.push(id);
                    }
                    Op::Remove(_) => {}
                }
                for topic in &topics {
                    index.matches(topic, &mut found);
                    found.sort_unstable();
                    let expected: Vec<StreamId> = live
                        .iter()
                        .filter(|(_, f)| f.matches_topic(topic))
                        .map(|(&id, _)| id)
                        .collect();
                    prop_assert_eq!(&found, &expected, "topic {}, streams {:?}", topic, live);
                }
            }
            for (id, filter) in std::mem::take(&mut live) {
                index.remove(id, &filter);
            }
            prop_assert!(index.is_empty(), "removals leave no node behind");
        }
    }

    #[test]
    fn system_topics_need_their_own_first_token() {
        let mut index = TopicIndex::default();
        let filters = [">", "*.a", "$s.>", "$s.*", "$s.a", "a.>"];
        for (id, p) in filters.iter().enumerate() {
            index.insert(id, &Filter::patterns(&[p]).unwrap());
        }
        let mut found = Vec::new();
        let mut check = |topic: &str, expected: &[StreamId]| {
            index.matches(topic, &mut found);
            found.sort_unstable();
            assert_eq!(found, expected, "{topic}");
        };
        check("$s.a", &[2, 3, 4]);
        check("$s.a.b", &[2]);
        check("$t.a", &[]);
        check("x.a", &[0, 1]);
        check("a.a", &[0, 1, 5]);
        check("a", &[0]);
    }
}
