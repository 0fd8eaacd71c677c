//! The per-topic index: for each topic, its records' `(topic_seq, global seq)`
//! pairs in order. Rebuilt from the segments on open (the segments are the
//! only source of truth; the index is never written to disk).
//!
//! A topic reader binary-searches its topic's entries, then jumps straight to
//! each record through the segment's offset table, so replaying one topic
//! visits only that topic's records whatever the other topics' traffic.
//! Cost: 16 bytes of memory per retained record.
//!
//! A topic's entries live in fixed-size chunks ([`Entries`]), so that
//! growing or trimming the index never copies it: an append adds at most one
//! chunk, retention drops whole chunks from the front. (A `Vec` that doubles
//! copies every entry when it grows: with ten million entries, 160 MB copied
//! while the publisher waits.)

use std::collections::{HashMap, VecDeque};
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
    pub(crate) entries: Entries,
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

    /// Global sequence of the last retained record of `topic`, if any.
    pub(crate) fn last_record_seq(&self, topic: u64) -> Option<u64> {
        let t = self.topics.get(&topic)?;
        let n = t.entries.len();
        (n > 0).then(|| t.entries.get(n - 1).seq)
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
                t.trimmed_through = t.trimmed_through.max(t.entries.get(cut - 1).topic_seq);
                t.entries.drop_front(cut);
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
        t.entries.copy_out(start, max, out);
        t.trimmed_through
    }
}

/// Entries per chunk (64 KiB).
const CHUNK: usize = 4096;

/// A topic's entries in fixed-size chunks: appended at the back, dropped
/// from the front, never moved once a chunk is full (a topic's first chunk
/// grows by doubling up to `CHUNK`: at most 64 KiB copied).
#[derive(Debug, Default)]
pub(crate) struct Entries {
    /// Every chunk is full but the last; the first starts at `front`.
    chunks: VecDeque<Vec<Entry>>,
    /// Entries of the first chunk already dropped.
    front: usize,
}

impl Entries {
    pub(crate) fn len(&self) -> usize {
        match self.chunks.len() {
            0 => 0,
            n => (n - 1) * CHUNK + self.chunks[n - 1].len() - self.front,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn push(&mut self, e: Entry) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => last.push(e),
            _ => {
                // A topic's first chunk grows as it fills (most topics hold
                // a few entries); the next ones are allocated whole.
                let mut chunk = if self.chunks.is_empty() {
                    Vec::new()
                } else {
                    Vec::with_capacity(CHUNK)
                };
                chunk.push(e);
                self.chunks.push_back(chunk);
            }
        }
    }

    /// The `i`-th retained entry (`i < len()`).
    pub(crate) fn get(&self, i: usize) -> Entry {
        let i = i + self.front;
        self.chunks[i / CHUNK][i % CHUNK]
    }

    /// The number of leading entries for which `pred` holds (entries are
    /// ordered, so `pred` holds for a prefix), as `slice::partition_point`.
    pub(crate) fn partition_point(&self, pred: impl Fn(&Entry) -> bool) -> usize {
        // The first chunk whose last entry fails `pred` holds the point.
        let whole = self.chunks.partition_point(|c| c.last().is_some_and(&pred));
        let Some(chunk) = self.chunks.get(whole) else {
            return self.len();
        };
        let skip = if whole == 0 { self.front } else { 0 };
        whole * CHUNK + skip + chunk[skip..].partition_point(&pred) - self.front
    }

    /// Drops the first `n` entries (`n <= len()`).
    pub(crate) fn drop_front(&mut self, n: usize) {
        let n = n + self.front;
        self.chunks.drain(..n / CHUNK);
        self.front = n % CHUNK;
        if self.chunks.front().is_some_and(|c| self.front == c.len()) {
            self.chunks.pop_front();
            self.front = 0;
        }
    }

    /// Appends up to `max` entries from the `start`-th on to `out`.
    pub(crate) fn copy_out(&self, start: usize, max: usize, out: &mut Vec<Entry>) {
        let end = (start + max).min(self.len());
        let (mut i, end) = (start + self.front, end + self.front);
        while i < end {
            let chunk = &self.chunks[i / CHUNK];
            let to = end.min((i / CHUNK + 1) * CHUNK);
            out.extend_from_slice(&chunk[i % CHUNK..to - (i / CHUNK) * CHUNK]);
            i = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(n: u64) -> Entry {
        Entry {
            topic_seq: n,
            seq: 3 * n,
        }
    }

    proptest! {
        /// Chunked entries behave as a `Vec` of the same entries: pushes,
        /// front drops, searches and copies across chunk boundaries.
        #[test]
        fn chunked_entries_behave_as_a_vec(
            steps in proptest::collection::vec((1usize..6000, 0usize..7000, 0u64..20000, 0usize..5000), 1..8)
        ) {
            let (mut model, mut chunked) = (Vec::new(), Entries::default());
            let mut next = 1u64;
            for (pushes, drop, probe, max) in steps {
                for _ in 0..pushes {
                    model.push(entry(next));
                    chunked.push(entry(next));
                    next += 1;
                }
                let drop = drop.min(model.len());
                model.drain(..drop);
                chunked.drop_front(drop);
                prop_assert_eq!(chunked.len(), model.len());
                prop_assert_eq!(chunked.is_empty(), model.is_empty());
                let at = model.partition_point(|e| e.topic_seq < probe);
                prop_assert_eq!(chunked.partition_point(|e| e.topic_seq < probe), at);
                let by_seq = model.partition_point(|e| e.seq < probe);
                prop_assert_eq!(chunked.partition_point(|e| e.seq < probe), by_seq);
                let mut out = vec![entry(0)];
                chunked.copy_out(at, max, &mut out);
                let end = (at + max).min(model.len());
                prop_assert_eq!(&out[1..], &model[at..end]);
                if !model.is_empty() {
                    prop_assert_eq!(chunked.get(model.len() - 1), model[model.len() - 1]);
                    prop_assert_eq!(chunked.get(0), model[0]);
                }
            }
        }
    }
}
