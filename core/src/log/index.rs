//! The per-topic index: for each topic, its records' `(topic_seq, global seq)`
//! pairs in order. Rebuilt from the segments on open (the segments are the
//! only source of truth; the index is never read back from disk after a
//! restart).
//!
//! A topic reader binary-searches its topic's entries, then jumps straight to
//! each record through the segment's offset table, so replaying one topic
//! visits only that topic's records whatever the other topics' traffic.
//! Cost: 16 bytes per retained record, in memory only until its chunk is
//! spilled (below).
//!
//! A topic's entries live in fixed-size chunks ([`Entries`]), so that
//! growing or trimming the index never copies it: an append adds at most one
//! chunk, retention drops whole chunks from the front. (A `Vec` that doubles
//! copies every entry when it grows: with ten million entries, 160 MB copied
//! while the publisher waits.)
//!
//! A full chunk never changes again, so the log's spill thread (`spill`)
//! writes it to a spill file and the chunk keeps only where it is and its
//! first and last entries: the index's memory is then the chunks being
//! filled (at most one per topic) and those waiting for the thread, not the
//! whole log. Reads of a spilled chunk are `pread`s of the page cache.
//! Retention drops a spilled chunk only whole (once its last record is
//! gone); a reader given entries of deleted records reports them as a gap,
//! as it does for any entry whose segment retention deleted.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::Arc;

use super::spill::SpillFile;

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
    /// Topics with a full chunk still in memory, for the spill thread
    /// (a topic may be listed more than once).
    pub(crate) to_spill: Vec<u64>,
}

impl TopicIndex {
    /// Last topic sequence of `topic`, if it has ever had a record.
    pub(crate) fn last_topic_seq(&self, topic: u64) -> Option<u64> {
        self.topics.get(&topic).and_then(|t| t.last_topic_seq)
    }

    /// Global sequence of the last retained record of `topic`, if any.
    pub(crate) fn last_record_seq(&self, topic: u64) -> Option<u64> {
        self.topics.get(&topic)?.entries.last().map(|e| e.seq)
    }

    /// The entries of `topic` (created empty if new), for a check-then-push
    /// with a single hash lookup.
    pub(crate) fn topic_mut(&mut self, topic: u64) -> &mut TopicEntries {
        self.topics.entry(topic).or_default()
    }

    /// Drops entries with `seq < first_seq` (their segments were deleted),
    /// except those of a spilled chunk that still holds a retained record.
    /// Returns the whole chunks it took out, for the caller to drop
    /// where it suits (a spilled one removes its file when dropped).
    pub(crate) fn trim_below(&mut self, first_seq: u64) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for t in self.topics.values_mut() {
            if let Some(last_dropped) = t.entries.drop_below(first_seq, &mut chunks) {
                t.trimmed_through = t.trimmed_through.max(last_dropped.topic_seq);
            }
        }
        chunks
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

    /// Entries held in memory (not spilled), over every topic.
    pub(crate) fn entries_in_memory(&self) -> usize {
        let chunks = self.topics.values().flat_map(|t| t.entries.chunks.iter());
        chunks
            .filter_map(Chunk::in_memory)
            .map(<[Entry]>::len)
            .sum()
    }

    /// Copies up to `max` entries of `topic` with `topic_seq >= from` into `out`.
    /// Returns the topic's `trimmed_through`. Fails only if a spill file
    /// cannot be read.
    pub(crate) fn fetch(
        &self,
        topic: u64,
        from: u64,
        max: usize,
        out: &mut Vec<Entry>,
    ) -> io::Result<u64> {
        let Some(t) = self.topics.get(&topic) else {
            return Ok(0);
        };
        let start = t.entries.start_of(from)?;
        t.entries.copy_out(start, max, out)?;
        Ok(t.trimmed_through)
    }
}

impl TopicEntries {
    /// Appends `e`, whose topic sequence the caller checked is above the
    /// last. Returns whether it filled a chunk: the caller lists the topic
    /// in [`TopicIndex::to_spill`].
    pub(crate) fn push(&mut self, e: Entry) -> bool {
        self.last_topic_seq = Some(e.topic_seq);
        self.entries.push(e)
    }
}

/// Entries per chunk (64 KiB).
pub(crate) const CHUNK: usize = 4096;

/// One chunk of a topic's entries.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// The chunk being filled: always the last one.
    Filling(Vec<Entry>),
    /// Full ([`CHUNK`] entries), in memory until the spill thread writes it.
    Full(Arc<Vec<Entry>>),
    /// Full, in a spill file at byte `at`.
    Spilled {
        file: Arc<SpillFile>,
        at: u64,
        first: Entry,
        last: Entry,
    },
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Filling(v) => v.len(),
            Chunk::Full(_) | Chunk::Spilled { .. } => CHUNK,
        }
    }

    fn in_memory(&self) -> Option<&[Entry]> {
        match self {
            Chunk::Filling(v) => Some(v),
            Chunk::Full(v) => Some(v),
            Chunk::Spilled { .. } => None,
        }
    }

    fn first(&self) -> Option<Entry> {
        match self {
            Chunk::Spilled { first, .. } => Some(*first),
            c => c.in_memory().and_then(|v| v.first().copied()),
        }
    }

    fn last(&self) -> Option<Entry> {
        match self {
            Chunk::Spilled { last, .. } => Some(*last),
            c => c.in_memory().and_then(|v| v.last().copied()),
        }
    }

    /// Copies entries `from..to` of the chunk to `out`.
    fn copy_to(&self, from: usize, to: usize, out: &mut Vec<Entry>) -> io::Result<()> {
        match self {
            Chunk::Spilled { file, at, .. } => file.read_entries(*at, from, to - from, out),
            c => {
                out.extend_from_slice(&c.in_memory().unwrap_or_default()[from..to]);
                Ok(())
            }
        }
    }
}

/// A topic's entries in fixed-size chunks: appended at the back, dropped
/// from the front, never moved once a chunk is full (a topic's first chunk
/// grows by doubling up to `CHUNK`: at most 64 KiB copied).
#[derive(Debug, Default)]
pub(crate) struct Entries {
    /// Every chunk is full but the last; the first starts at `front`.
    chunks: VecDeque<Chunk>,
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

    /// Appends `e`; returns whether it filled a chunk (for the spill thread).
    pub(crate) fn push(&mut self, e: Entry) -> bool {
        if let Some(back) = self.chunks.back_mut() {
            if let Chunk::Filling(last) = back {
                last.push(e);
                if last.len() < CHUNK {
                    return false;
                }
                *back = Chunk::Full(Arc::new(std::mem::take(last)));
                return true;
            }
        }
        // A topic's first chunk grows as it fills (most topics hold a few
        // entries); the next ones are allocated whole.
        let mut chunk = if self.chunks.is_empty() {
            Vec::new()
        } else {
            Vec::with_capacity(CHUNK)
        };
        chunk.push(e);
        self.chunks.push_back(Chunk::Filling(chunk));
        false
    }

    /// The last retained entry.
    pub(crate) fn last(&self) -> Option<Entry> {
        (!self.is_empty()).then(|| self.chunks.back()?.last())?
    }

    /// The position of the first entry with `topic_seq >= from`.
    pub(crate) fn start_of(&self, from: u64) -> io::Result<usize> {
        // The first chunk whose last entry is at or past `from` holds it.
        let whole = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|e| e.topic_seq < from));
        let Some(chunk) = self.chunks.get(whole) else {
            return Ok(self.len());
        };
        let skip = if whole == 0 { self.front } else { 0 };
        let within = match (chunk.in_memory(), chunk.first(), chunk.last()) {
            (Some(v), ..) => skip + v[skip..].partition_point(|e| e.topic_seq < from),
            (None, Some(first), Some(last))
                if last.topic_seq - first.topic_seq == CHUNK as u64 - 1 =>
            {
                // Dense (no jump across a skip): no need to read it.
                skip.max(from.saturating_sub(first.topic_seq) as usize)
            }
            (None, ..) => {
                let mut v = Vec::with_capacity(CHUNK);
                chunk.copy_to(0, CHUNK, &mut v)?;
                skip + v[skip..].partition_point(|e| e.topic_seq < from)
            }
        };
        Ok(whole * CHUNK + within - self.front)
    }

    /// Drops the entries with `seq < first_seq`, all but those of a spilled
    /// chunk that keeps a later one; returns the last entry dropped. Whole
    /// chunks go to `taken`.
    pub(crate) fn drop_below(&mut self, first_seq: u64, taken: &mut Vec<Chunk>) -> Option<Entry> {
        let mut dropped = None;
        while let Some(chunk) = self.chunks.front() {
            match chunk.last() {
                Some(last) if last.seq < first_seq => {
                    dropped = Some(last);
                    taken.extend(self.chunks.pop_front());
                    self.front = 0;
                }
                _ => break,
            }
        }
        let Some(front) = self.chunks.front().and_then(Chunk::in_memory) else {
            return dropped;
        };
        let cut = self.front + front[self.front..].partition_point(|e| e.seq < first_seq);
        if cut > self.front {
            dropped = Some(front[cut - 1]);
            self.front = cut;
        }
        dropped
    }

    /// Appends up to `max` entries from the `start`-th on to `out`.
    pub(crate) fn copy_out(
        &self,
        start: usize,
        max: usize,
        out: &mut Vec<Entry>,
    ) -> io::Result<()> {
        let end = (start + max).min(self.len());
        let (mut i, end) = (start + self.front, end + self.front);
        while i < end {
            let chunk = &self.chunks[i / CHUNK];
            let to = end.min((i / CHUNK + 1) * CHUNK);
            chunk.copy_to(i % CHUNK, to - (i / CHUNK) * CHUNK, out)?;
            i = to;
        }
        Ok(())
    }

    /// Appends the full chunks not yet spilled to `out`, newest first.
    pub(crate) fn full_chunks(&self, out: &mut Vec<Arc<Vec<Entry>>>) {
        let full = self
            .chunks
            .iter()
            .rev()
            .skip_while(|c| matches!(c, Chunk::Filling(_)))
            .map_while(|c| match c {
                Chunk::Full(v) => Some(Arc::clone(v)),
                _ => None,
            });
        out.extend(full);
    }

    /// Replaces the full chunk `chunk` (if still held) by its copy at byte
    /// `at` of `file`.
    pub(crate) fn spilled(&mut self, chunk: &Arc<Vec<Entry>>, file: &Arc<SpillFile>, at: u64) {
        let held = self
            .chunks
            .iter_mut()
            .rev()
            .find(|c| matches!(c, Chunk::Full(v) if Arc::ptr_eq(v, chunk)));
        if let Some(c) = held {
            *c = Chunk::Spilled {
                file: Arc::clone(file),
                at,
                first: chunk[0],
                last: chunk[CHUNK - 1],
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::spill::SpillWriter;
    use super::*;
    use proptest::prelude::*;

    fn all(chunked: &Entries) -> Vec<Entry> {
        let mut out = Vec::new();
        chunked.copy_out(0, usize::MAX, &mut out).unwrap();
        out
    }

    proptest! {
        /// Chunked entries behave as a `Vec` of the same entries: pushes,
        /// retention's drops, searches and copies across chunk boundaries,
        /// with full chunks spilled or not and topic sequences that jump
        /// (across a skip) or not. A spilled chunk is dropped only whole, so
        /// what is held is the pushed entries from some point on, and any
        /// below the cut are in one spilled chunk at the front.
        #[test]
        fn chunked_entries_behave_as_a_vec(
            steps in proptest::collection::vec(
                (1usize..6000, 0u64..30000, 0u64..20000, 0usize..5000, any::<bool>(), 0u64..3),
                1..8,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut writer = SpillWriter::new(dir.path());
            let (mut pushed, mut chunked) = (Vec::new(), Entries::default());
            let (mut seq, mut topic_seq, mut cut) = (0u64, 0u64, 0u64);
            for (pushes, drop_below, probe, max, spill, jump) in steps {
                topic_seq += jump * 100;
                for _ in 0..pushes {
                    seq += 3;
                    topic_seq += 1;
                    let e = Entry { topic_seq, seq };
                    pushed.push(e);
                    let filled = chunked.push(e);
                    prop_assert_eq!(filled, matches!(chunked.chunks.back(), Some(Chunk::Full(_))));
                }
                if spill {
                    let mut full = Vec::new();
                    chunked.full_chunks(&mut full);
                    for c in full.into_iter().rev() {
                        let (file, at) = writer.write(&c).unwrap();
                        chunked.spilled(&c, &file, at);
                    }
                }
                cut = cut.max(drop_below);
                let before = all(&chunked);
                let dropped = chunked.drop_below(cut, &mut Vec::new());
                let held = all(&chunked);
                prop_assert_eq!(dropped, before[..before.len() - held.len()].last().copied());
                prop_assert_eq!(held.len(), chunked.len());
                prop_assert_eq!(chunked.is_empty(), held.is_empty());
                let kept: Vec<Entry> = pushed.iter().copied().filter(|e| e.seq >= cut).collect();
                let stale = held.len() - kept.len();
                prop_assert_eq!(&held[stale..], &kept[..]);
                prop_assert_eq!(&held[..], &pushed[pushed.len() - held.len()..]);
                prop_assert!(stale < CHUNK);
                let front_spilled = matches!(chunked.chunks.front(), Some(Chunk::Spilled { .. }));
                prop_assert!(stale == 0 || front_spilled);
                let at = held.partition_point(|e| e.topic_seq < probe);
                prop_assert_eq!(chunked.start_of(probe).unwrap(), at);
                let mut out = vec![Entry { topic_seq: 0, seq: 0 }];
                chunked.copy_out(at, max, &mut out).unwrap();
                let end = (at + max).min(held.len());
                prop_assert_eq!(&out[1..], &held[at..end]);
                prop_assert_eq!(chunked.last(), held.last().copied());
            }
        }
    }
}
