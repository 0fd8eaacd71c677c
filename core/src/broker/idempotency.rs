//! Idempotent publishing: a publish that repeats a key seen within the
//! window is answered with the first publish's sequences and stores nothing.
//!
//! The key is stored in the log with the events it published (the record
//! key of the last event of the publish, see `docs/FORMAT.md`), so the
//! events and their key are durable together, and the window is rebuilt from the
//! log's records of the last window at open: a retry after a crash or a
//! restart is still recognised. Kept under the publish lock (the check, the
//! append and the insert are one step, so two racing retries store once).
//!
//! A key is the publisher's `scope` (a tenant; empty for none) and its `key`.
//! In the log a record key is `batch_len` (u16 LE, the events of the
//! publish), `scope_len` (u8), the scope, then the key.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{BrokerError, Published};

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// Longest scope of an idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_SCOPE_LEN: usize = 255;

/// Keys: 1 to 128 bytes of printable ASCII (no spaces).
pub fn validate_idempotency_key(key: &str) -> Result<(), BrokerError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(BrokerError::InvalidIdempotencyKey(key.to_owned()))
    }
}

/// The record key of a publish of `batch_len` events under `scope`/`key`
/// (both checked by the caller).
pub(crate) fn encode(batch_len: usize, scope: &str, key: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(3 + scope.len() + key.len());
    b.extend_from_slice(&(batch_len as u16).to_le_bytes());
    b.push(scope.len() as u8);
    b.extend_from_slice(scope.as_bytes());
    b.extend_from_slice(key.as_bytes());
    b
}

/// Splits a record key into the publish's event count and its window key
/// (scope length, scope and key); `None` if it is not one [`encode`] wrote.
fn decode(record_key: &[u8]) -> Option<(usize, &[u8])> {
    let (count, rest) = record_key.split_first_chunk::<2>()?;
    let scope_len = *rest.first()? as usize;
    (rest.len() > 1 + scope_len).then_some((u16::from_le_bytes(*count) as usize, rest))
}

#[derive(Debug)]
struct Entry {
    at_ns: u64,
    published: Box<[Published]>,
}

/// The keys of the last `window_ns`, at most `max_events` events' worth
/// (the oldest are forgotten first beyond that).
#[derive(Debug)]
pub(crate) struct Window {
    window_ns: u64,
    max_events: usize,
    events: usize,
    by_key: HashMap<Arc<[u8]>, Entry>,
    /// Keys in insertion (and so time) order, with the first sequence of
    /// the publish each slot stands for.
    order: VecDeque<(Arc<[u8]>, u64)>,
    /// Keys forgotten before their time because of `max_events`.
    pub(crate) evicted: u64,
}

impl Window {
    pub(crate) fn new(window_ns: u64, max_events: usize) -> Window {
        Window {
            window_ns,
            max_events,
            events: 0,
            by_key: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// The sequences the key's first publish got, if it is in the window.
    pub(crate) fn get(&mut self, record_key: &[u8], now_ns: u64) -> Option<&[Published]> {
        self.expire(now_ns);
        let (_, window_key) = decode(record_key)?;
        self.by_key.get(window_key).map(|e| &*e.published)
    }

    /// Remembers a publish (`record_key` as [`encode`] wrote it).
    pub(crate) fn insert(&mut self, record_key: &[u8], at_ns: u64, published: &[Published]) {
        let Some((_, window_key)) = decode(record_key) else {
            return;
        };
        let (key, Some(first)) = (Arc::<[u8]>::from(window_key), published.first()) else {
            return;
        };
        let first = first.seq;
        self.events += published.len();
        let entry = Entry {
            at_ns,
            published: published.into(),
        };
        if let Some(old) = self.by_key.insert(key.clone(), entry) {
            // Only when rebuilding from a log that holds a key twice (its
            // first use had left the window): the newer answer wins.
            self.events -= old.published.len();
        }
        self.order.push_back((key, first));
        while self.events > self.max_events && self.pop_oldest() {
            self.evicted += 1;
        }
    }

    /// Forgets the keys older than the window.
    fn expire(&mut self, now_ns: u64) {
        let horizon = now_ns.saturating_sub(self.window_ns);
        while let Some((key, first)) = self.order.front() {
            match self.by_key.get(key) {
                Some(e) if e.published[0].seq == *first && e.at_ns >= horizon => break,
                _ => {
                    self.pop_oldest();
                }
            }
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some((key, first)) = self.order.pop_front() else {
            return false;
        };
        // The map may hold a newer use of the key (see `insert`): remove
        // only the entry this slot stands for.
        if self
            .by_key
            .get(&key)
            .is_some_and(|e| e.published[0].seq == first)
        {
            if let Some(e) = self.by_key.remove(&key) {
                self.events -= e.published.len();
            }
        }
        true
    }

    /// Rebuilds from the log: called with each record, in order, from the
    /// window's start (`key`: its record key). The key is on a publish's
    /// last record, so a key read means the whole publish is in the log (it
    /// holds a prefix of what was appended); a publish whose tail a crash
    /// lost has no key record and was never acknowledged.
    pub(crate) fn rebuild_step(
        &mut self,
        rebuild: &mut Rebuild,
        seq: u64,
        topic_seq: u64,
        ts: u64,
        key: &[u8],
    ) {
        if rebuild.recent.len() == MAX_BATCH {
            rebuild.recent.pop_front();
        }
        rebuild.recent.push_back(Published { seq, topic_seq });
        let Some((count, _)) = decode(key) else {
            return;
        };
        let Some(start) = rebuild.recent.len().checked_sub(count) else {
            // It began before the window's start.
            return;
        };
        let batch: Vec<Published> = rebuild.recent.range(start..).copied().collect();
        // A batch's sequences are consecutive (one lock acquisition).
        if count > 0 && batch[0].seq + count as u64 - 1 == seq {
            self.insert(key, ts, &batch);
        }
    }
}

/// The largest batch a record key describes.
const MAX_BATCH: usize = u16::MAX as usize;

/// The log's last records as read back (see [`Window::rebuild_step`]).
#[derive(Debug, Default)]
pub(crate) struct Rebuild {
    recent: VecDeque<Published>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(seq: u64) -> Published {
        Published {
            seq,
            topic_seq: seq,
        }
    }

    #[test]
    fn a_key_is_found_within_the_window_only() {
        let mut w = Window::new(100, 1000);
        let k = encode(1, "acme", "k1");
        assert!(w.get(&k, 0).is_none());
        w.insert(&k, 10, &[p(1)]);
        assert_eq!(w.get(&k, 110), Some(&[p(1)][..]));
        assert!(w.get(&encode(1, "other", "k1"), 110).is_none(), "scoped");
        assert!(w.get(&k, 111).is_none(), "expired");
        assert_eq!(w.events, 0);
    }

    #[test]
    fn beyond_max_events_the_oldest_keys_go() {
        let mut w = Window::new(u64::MAX, 3);
        w.insert(&encode(2, "", "a"), 1, &[p(1), p(2)]);
        w.insert(&encode(1, "", "b"), 2, &[p(3)]);
        w.insert(&encode(1, "", "c"), 3, &[p(4)]);
        assert!(w.get(&encode(1, "", "a"), 4).is_none());
        assert!(w.get(&encode(1, "", "b"), 4).is_some());
        assert_eq!((w.events, w.evicted), (2, 1));
    }

    #[test]
    fn a_reused_key_keeps_its_newer_answer_when_the_older_expires() {
        let mut w = Window::new(100, 1000);
        let k = encode(1, "", "k");
        w.insert(&k, 10, &[p(1)]);
        w.insert(&k, 50, &[p(9)]);
        assert_eq!(w.get(&k, 120), Some(&[p(9)][..]));
        assert!(w.get(&k, 151).is_none());
    }

    #[test]
    fn rebuild_keeps_complete_publishes_only() {
        let mut w = Window::new(u64::MAX, 1000);
        let mut r = Rebuild::default();
        // A batch that began before the window's start: its key is not enough.
        let early = encode(2, "t", "early");
        w.rebuild_step(&mut r, 10, 1, 5, &early);
        let k = encode(2, "t", "batch");
        w.rebuild_step(&mut r, 11, 2, 5, b"");
        w.rebuild_step(&mut r, 12, 1, 6, &k);
        // A batch whose tail (and key) recovery cut off, followed by a later
        // publish taking the lost sequence: nothing is remembered.
        w.rebuild_step(&mut r, 13, 2, 7, b"");
        w.rebuild_step(&mut r, 14, 3, 8, b"");
        let one = encode(1, "t", "one");
        w.rebuild_step(&mut r, 15, 4, 9, &one);
        let expect = [
            Published {
                seq: 11,
                topic_seq: 2,
            },
            Published {
                seq: 12,
                topic_seq: 1,
            },
        ];
        assert_eq!(w.get(&k, 10), Some(&expect[..]));
        assert!(w.get(&early, 10).is_none());
        let one_answer = [Published {
            seq: 15,
            topic_seq: 4,
        }];
        assert_eq!(w.get(&one, 10), Some(&one_answer[..]));
        assert_eq!(w.events, 3);
    }

    #[test]
    fn keys_are_validated() {
        assert!(validate_idempotency_key("order-42:retry").is_ok());
        for bad in ["", "has space", "é", &"x".repeat(129)] {
            assert!(validate_idempotency_key(bad).is_err(), "{bad:?}");
        }
        assert!(decode(b"").is_none() && decode(&[1, 0, 0]).is_none());
    }
}
