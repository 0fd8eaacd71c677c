//! The per-topic index: for each topic, its records' `(topic_seq, global seq)`
//! pairs in order. Rebuilt from the segments on open (the segments are the
//! only source of truth; the index is never written to disk).
//!
//! A topic reader binary-searches its topic's entries, then jumps straight to
//! each record through the segment's offset table, so replaying one topic
//! visits only that topic's records whatever the other topics' traffic.
//! Cost: 16 bytes of memory per retained record.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One indexed record of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) topic_seq: u64,
    pub(crate) seq: u64,
}

/// The entries of one topic.
#[derive(Debug, Default)]
pub(crate) struct TopicEntries {
    /// Retained entries, ordered by both `topic_seq` and `seq`.
    pub(crate) entries: Vec<Entry>,
    /// Highest topic sequence removed by retention in this process (0: none).
    pub(crate) trimmed_through: u64,
    /// Last topic sequence ever appended (survives trimming); `None` before the first.
    pub(crate) last_topic_seq: Option<u64>,
}

/// A multiplicative hasher for `u64` keys, much cheaper than SipHash on the
/// append path. Topic ids are assigned by the broker, not chosen by clients,
/// so hash flooding is not a concern here.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing, then fold the high bits down for hashbrown's use
        // of the top 7 bits and the low bits.
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

/// Topic id → entries.
#[derive(Debug, Default)]
pub(crate) struct TopicIndex {
    pub(crate) topics: HashMap<u64, TopicEntries, BuildHasherDefault<U64Hasher>>,
}

impl TopicIndex {
    /// Last topic sequence of `topic`, if it has ever had a record.
    pub(crate) fn last_topic_seq(&self, topic: u64) -> Option<u64> {
        self.topics.get(&topic).and_then(|t| t.last_topic_seq)
    }

    /// The entries of `topic` (created empty if new), for a check-then-push
    /// with a single hash lookup.
    pub(crate) fn topic_mut(&mut self, topic: u64) -> &mut TopicEntries {
        self.topics.entry(topic).or_default()
    }

    /// Drops entries with `seq < first_seq` (their segments were deleted).
    pub(crate) fn trim_below(&mut self, first_seq: u64) {
        for t in self.topics.values_mut() {
            let cut = t.entries.partition_point(|e| e.seq < first_seq);
            if cut > 0 {
                t.trimmed_through = t.trimmed_through.max(t.entries[cut - 1].topic_seq);
                t.entries.drain(..cut);
            }
        }
    }

    /// `(topic, last_topic_seq)` of every topic with no retained record.
    pub(crate) fn emptied(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .topics
            .iter()
            .filter(|(_, t)| t.entries.is_empty())
            .filter_map(|(&id, t)| Some((id, t.last_topic_seq?)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Raises a topic's high-water mark from the `topics.hwm` file; a topic
    /// with no retained record counts as trimmed up to it.
    pub(crate) fn apply_high_water_mark(&mut self, topic: u64, last: u64) {
        let t = self.topic_mut(topic);
        t.last_topic_seq = Some(t.last_topic_seq.map_or(last, |l| l.max(last)));
        if t.entries.is_empty() {
            t.trimmed_through = t.trimmed_through.max(last);
        }
    }

    /// Copies up to `max` entries of `topic` with `topic_seq >= from` into `out`.
    /// Returns the topic's `trimmed_through`.
    pub(crate) fn fetch(&self, topic: u64, from: u64, max: usize, out: &mut Vec<Entry>) -> u64 {
        let Some(t) = self.topics.get(&topic) else {
            return 0;
        };
        let start = t.entries.partition_point(|e| e.topic_seq < from);
        let end = (start + max).min(t.entries.len());
        out.extend_from_slice(&t.entries[start..end]);
        t.trimmed_through
    }
}
