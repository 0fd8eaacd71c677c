//! A replica's one way in: events of a cluster's stream, appended with the
//! sequences the stream gave them (the global sequence is the stream's, the
//! topic sequence the one its publisher wrote), in the stream's order.
//!
//! Every replica appends the same events in the same order through the same
//! code, so their logs hold the same records: an event's timestamp is its
//! publisher's, raised to the previous event's like any other (the log's
//! time index needs them in order), which every replica computes alike.
//! An event out of order is refused, never stored: the caller (the cluster
//! bridge) has read the stream wrong, and storing it would make this replica
//! differ from the others.

use crate::sync::Ordering;

use super::{Broker, BrokerError, Checked, PublishOptions, Published};

/// An event of a cluster's stream, as the stream ordered it.
#[derive(Debug, Clone, Copy)]
pub struct Replicated<'a> {
    /// Its global sequence: its position in the stream.
    pub seq: u64,
    /// Its topic (the broker's name; system topics start with `$`).
    pub topic: &'a str,
    /// Its topic sequence, as its publisher assigned it.
    pub topic_seq: u64,
    /// Its publisher could not know the topic's last sequence (the stream
    /// held none of the topic's events, and the publisher's replica had
    /// skipped some), so it chose one past any the topic can have had (see
    /// [`Broker::topic_sequence_after_skip`]): the topic's sequence may jump
    /// forward here.
    pub topic_may_jump: bool,
    /// When its publisher published it (ns since the Unix epoch).
    pub timestamp_ns: u64,
    /// Its type.
    pub event_type: &'a str,
    /// Its payload.
    pub payload: &'a [u8],
    /// Origin, correlation id, and whether the caller checked the payload.
    pub options: PublishOptions<'a>,
}

impl Broker {
    /// Whether this broker is a replica (see [`super::BrokerConfig::replica`]).
    pub fn is_replica(&self) -> bool {
        self.inner.config.replica
    }

    /// The topic sequence the next event of `topic` gets (1 for a topic
    /// never published). A cluster publisher's fallback when the stream no
    /// longer holds any of the topic's events.
    pub fn topic_next_seq(&self, topic: &str) -> u64 {
        // Relaxed: a snapshot; the publish lock orders the writes.
        self.inner
            .topics
            .get(topic)
            .map_or(1, |t| t.next_seq.load(Ordering::Relaxed))
    }

    /// The topic sequence a publisher on this replica gives `topic`'s next
    /// event when the stream holds none of the topic's events: the
    /// replica's own count, unless the replica skipped sequences since the
    /// topic's last record here (the skipped ones may have held more of
    /// the topic). Then `Some(seq)`: one past any topic sequence the topic
    /// can have had, which every replica accepts for an event marked
    /// [`Replicated::topic_may_jump`]. (A topic sequence never exceeds its
    /// event's global sequence, and the topic's events all came before the
    /// stream's first, which is at most this replica's next sequence.)
    pub fn topic_sequence_after_skip(&self, topic: &str) -> Option<u64> {
        let inner = &*self.inner;
        let crossed = match inner.topics.get(topic) {
            Some(t) => inner.log.topic_crossed_skip(t.id),
            None => inner.log.last_skip() > 0,
        };
        crossed.then(|| inner.log.next_seq().max(self.topic_next_seq(topic)))
    }

    /// Appends the next event of the cluster's stream (replicas only).
    /// `event.seq` must be the log's next sequence and `event.topic_seq`
    /// its topic's next; anything else is refused with
    /// [`BrokerError::ReplicaOrder`] and stores nothing.
    pub fn replicate(&self, event: &Replicated<'_>) -> Result<Published, BrokerError> {
        let inner = &*self.inner;
        if !inner.config.replica {
            return Err(BrokerError::Replica(
                "this broker is not a replica: it takes no replicated events",
            ));
        }
        let checked = Checked::new(inner, event.event_type, event.payload, event.options, 0)?;
        let topic = inner
            .topics
            .get_or_create(event.topic, event.topic.starts_with('$'))?;
        let published = {
            let mut state = inner.publish.lock();
            let next = inner.log.next_seq();
            if event.seq != next {
                return Err(BrokerError::ReplicaOrder {
                    sequence: "global",
                    expected: next,
                    got: event.seq,
                });
            }
            // Relaxed: the publish lock orders every access (see `Topic`).
            let next_topic = topic.next_seq.load(Ordering::Relaxed);
            // Across a skip, the topic's events in between may have been
            // dropped with it: its sequences may jump forward, never back.
            let jump = event.topic_seq > next_topic
                && (event.topic_may_jump || inner.log.topic_crossed_skip(topic.id));
            if event.topic_seq != next_topic && !jump {
                return Err(BrokerError::ReplicaOrder {
                    sequence: "topic",
                    expected: next_topic,
                    got: event.topic_seq,
                });
            }
            if jump {
                topic.next_seq.store(event.topic_seq, Ordering::Relaxed);
            }
            inner.append_stamped(&mut state, &topic, &checked, &[], event.timestamp_ns)?
        };
        inner.finish_publish(published.seq, 1)?;
        Ok(published)
    }

    /// Moves this replica past the stream's sequences below `seq`, which it
    /// never received because the stream dropped them first (retention): the
    /// next replicated event carries `seq`. Readers crossing the skip get a
    /// [`Gap`](super::Gap), never silence: the log records it (see
    /// `Log::skip_to`), and live subscriptions, which the ring's skip sends
    /// back to the log, read it there. A `seq` below the log's next
    /// sequence is refused with [`BrokerError::ReplicaOrder`].
    pub fn skip_to(&self, seq: u64) -> Result<(), BrokerError> {
        let inner = &*self.inner;
        if !inner.config.replica {
            return Err(BrokerError::Replica(
                "this broker is not a replica: only a replica skips sequences",
            ));
        }
        let mut state = inner.publish.lock();
        let next = inner.log.next_seq();
        if seq < next {
            return Err(BrokerError::ReplicaOrder {
                sequence: "global",
                expected: next,
                got: seq,
            });
        }
        inner.log.skip_to(seq)?;
        state.ring.skip_to(seq);
        Ok(())
    }
}
