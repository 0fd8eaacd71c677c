//! Making appended records durable: group commit for `Always`, the
//! background flusher for `Interval`.
//!
//! The flusher's rounds leave the last MiB before the appender to the next
//! round, so that the appender never stores into a page being written back
//! (see [`Shared::sync_settled`]): a record appended under `Interval(d)` is
//! durable after at most two rounds, about `2d`.
//!
//! Group commit: an appender that needs sequence `s` durable either finds it
//! already durable, waits for the sync in flight, or becomes the leader: it
//! snapshots the last committed sequence, syncs every segment's unsynced
//! committed bytes, then publishes the new durable sequence and wakes all
//! waiters. Every appender whose record was committed before the leader's
//! snapshot is covered by that one sync.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{FlushRound, LogError, Shared, Synced};
use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, Ordering};

#[derive(Debug)]
struct State {
    /// Every sequence `<= durable` is on stable storage.
    durable: u64,
    /// A leader is syncing right now.
    syncing: bool,
    /// A sync failed: the log is poisoned.
    failed: bool,
}

/// Group-commit coordination.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
    /// Completed syncs (for tests and stats).
    pub(crate) syncs: AtomicU64,
}

impl GroupCommit {
    pub(crate) fn new(durable: u64) -> Self {
        GroupCommit {
            state: Mutex::new(State {
                durable,
                syncing: false,
                failed: false,
            }),
            done: Condvar::new(),
            syncs: AtomicU64::new(0),
        }
    }

    /// Fails every present and later wait: a sync outside the group
    /// commit failed (the caller poisons the log).
    pub(crate) fn fail(&self) {
        self.state.lock().failed = true;
        self.done.notify_all();
    }

    /// Highest durable sequence.
    pub(crate) fn durable(&self) -> u64 {
        self.state.lock().durable
    }

    /// Returns once every sequence `<= seq` is durable.
    pub(crate) fn wait_durable(&self, shared: &Shared, seq: u64) -> Result<(), LogError> {
        let mut st = self.state.lock();
        loop {
            if st.failed {
                return Err(LogError::Poisoned);
            }
            if st.durable >= seq {
                return Ok(());
            }
            if st.syncing {
                self.done.wait(&mut st);
                continue;
            }
            st.syncing = true;
            drop(st);
            self.lead(shared, || shared.sync_committed())?;
            st = self.state.lock();
        }
    }

    /// One round of the interval flusher: after any sync in flight, a sync
    /// that holds back the last MiB before the appender ([`Shared::sync_settled`]).
    pub(crate) fn flush(&self, shared: &Shared, previous: &mut FlushRound) -> Result<(), LogError> {
        let mut st = self.state.lock();
        while st.syncing && !st.failed {
            self.done.wait(&mut st);
        }
        if st.failed {
            return Err(LogError::Poisoned);
        }
        st.syncing = true;
        drop(st);
        self.lead(shared, || shared.sync_settled(previous))
    }

    /// Runs `sync` as the leader (the caller set `syncing`), then publishes
    /// the durable sequence it returns (counting it among the syncs if it
    /// wrote anything), or poisons the log, and wakes all waiters.
    fn lead(
        &self,
        shared: &Shared,
        sync: impl FnOnce() -> Result<Synced, LogError>,
    ) -> Result<(), LogError> {
        let result = sync();
        let mut st = self.state.lock();
        st.syncing = false;
        let result = match result {
            Ok(synced) => {
                st.durable = st.durable.max(synced.durable);
                if synced.wrote {
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                st.failed = true;
                shared.poison();
                Err(e)
            }
        };
        drop(st);
        self.done.notify_all();
        result
    }
}

/// The `Interval` policy's background thread.
#[derive(Debug)]
pub(crate) struct Flusher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Flusher {
    pub(crate) fn start(shared: Arc<Shared>, every: Duration) -> Result<Self, LogError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("herald-log-flush".into())
            .spawn(move || {
                let mut round = FlushRound::default();
                // Acquire: pairs with the Release store in `Flusher::stop`.
                while !stop2.load(Ordering::Acquire) {
                    thread::park_timeout(every);
                    if shared.group.flush(&shared, &mut round).is_err() {
                        break; // poisoned: appends now fail; nothing more to do
                    }
                }
            })
            .map_err(|e| LogError::io("starting the flusher thread", None, e))?;
        Ok(Flusher {
            stop,
            handle: Some(handle),
        })
    }

    pub(crate) fn stop(&mut self) {
        // Release: pairs with the Acquire load in the flusher loop.
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use memmap2::MmapRaw;

    use super::super::{
        AppendInfo, FlushRound, Log, LogConfig, LogIo, RecordRef, HOLD_BACK, PAGE, WRITEBACK_PIECE,
    };
    use crate::log::Durability;
    use crate::sync::{Mutex, Ordering};

    /// The real file system, recording every range synced, and every
    /// range whose write-back was started.
    #[derive(Debug, Default)]
    struct Recording(Mutex<Vec<(u64, u64)>>, Mutex<Vec<(u64, u64)>>);

    impl LogIo for Recording {
        fn sync_range(&self, map: &MmapRaw, offset: usize, len: usize) -> std::io::Result<()> {
            self.0.lock().push((offset as u64, (offset + len) as u64));
            super::super::io::StdIo.sync_range(map, offset, len)
        }
        fn start_writeback(
            &self,
            file: &std::fs::File,
            offset: u64,
            len: u64,
        ) -> std::io::Result<()> {
            self.1.lock().push((offset, offset + len));
            super::super::io::StdIo.start_writeback(file, offset, len)
        }
    }

    fn append(log: &Log) -> u64 {
        append_info(log).seq
    }

    fn append_info(log: &Log) -> AppendInfo {
        let seq = log.next_seq();
        log.append(&RecordRef {
            seq,
            topic_id: 0,
            topic_seq: seq,
            timestamp_ns: 0,
            origin: 0,
            event_type: b"e",
            payload: &[b'x'; 100],
            key: b"",
        })
        .unwrap()
    }

    fn tail_end(log: &Log) -> u64 {
        log.shared.segments.read().last().unwrap().end() as u64
    }

    /// Runs one flusher round; returns the ranges it synced and the
    /// durable sequence after it.
    fn round(log: &Log, io: &Recording, previous: &mut FlushRound) -> (Vec<(u64, u64)>, u64) {
        io.0.lock().clear();
        log.shared.group.flush(&log.shared, previous).unwrap();
        (io.0.lock().clone(), log.shared.group.durable())
    }

    /// Appends until the tail's end passes `past`; returns the last sequence.
    fn append_past(log: &Log, past: u64) -> u64 {
        let mut last = append(log);
        while tail_end(log) <= past {
            last = append(log);
        }
        last
    }

    /// A log in `dir` of `segment_size` segments on the recording file
    /// system, with no flusher thread (the tests run the rounds) and no
    /// prefault thread.
    fn recorded_log(dir: &std::path::Path, segment_size: u64) -> (Log, Arc<Recording>) {
        let io = Arc::new(Recording::default());
        let config = LogConfig {
            segment_size,
            durability: Durability::Never,
            prefault: false,
            io: io.clone(),
            ..LogConfig::default()
        };
        (Log::open(dir, config).unwrap().0, io)
    }

    #[test]
    fn the_flusher_leaves_the_last_mib_before_the_appender_to_the_next_round() {
        let dir = tempfile::tempdir().unwrap();
        let (log, io) = recorded_log(dir.path(), 8 << 20);
        let behind = |end: u64| (end - HOLD_BACK) & !(PAGE - 1);
        let last = append_past(&log, HOLD_BACK + 3 * PAGE + 200);
        let end = tail_end(&log);
        let mut previous = FlushRound::default();
        // The header was synced when the segment was made.
        let header = log.shared.segments.read()[0].synced.load(Ordering::Relaxed);

        // Up to the page boundary a MiB behind the appender; the records
        // after it are not reported durable.
        let (synced, durable) = round(&log, &io, &mut previous);
        assert_eq!(synced, vec![(header, behind(end))]);
        assert_eq!(durable, 0);

        // They were there at the previous round: now they are synced.
        let (synced, durable) = round(&log, &io, &mut previous);
        assert_eq!(synced, vec![(behind(end), end)]);
        assert_eq!(durable, last);

        // A record appended since waits for the round after.
        let newest = append(&log);
        let end2 = tail_end(&log);
        let (synced, durable) = round(&log, &io, &mut previous);
        assert_eq!(synced, vec![]);
        assert_eq!(durable, last);
        let (synced, durable) = round(&log, &io, &mut previous);
        assert_eq!(synced, vec![(end, end2)]);
        assert_eq!(durable, newest);

        // An appender more than a MiB ahead: synced up to a MiB behind it.
        let last = append_past(&log, end2 + HOLD_BACK + 2 * PAGE);
        let end3 = tail_end(&log);
        let (synced, _) = round(&log, &io, &mut previous);
        assert_eq!(synced, vec![(end2, behind(end3))]);
        let (synced, durable) = round(&log, &io, &mut previous);
        assert_eq!(synced, vec![(behind(end3), end3)]);
        assert_eq!(durable, last);

        // A full sync (`Log::sync`, a close) still syncs every byte.
        append(&log);
        log.sync().unwrap();
        assert_eq!(io.0.lock().last().map(|r| r.1), Some(tail_end(&log)));
    }

    /// A round starts its write-back a piece at a time (yielding between
    /// pieces) before its `msync`: the pieces, in order, cover exactly the
    /// range the round syncs, none longer than `WRITEBACK_PIECE`. A full
    /// sync starts none.
    #[test]
    fn the_flusher_starts_its_write_back_in_pieces_over_the_range_it_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (log, io) = recorded_log(dir.path(), 8 << 20);
        append_past(&log, HOLD_BACK + 3 * WRITEBACK_PIECE + 1000);
        let mut previous = FlushRound::default();
        // The first round syncs to a MiB behind the appender, the second
        // the rest: more than a piece each.
        for _ in 0..2 {
            io.1.lock().clear();
            let (synced, _) = round(&log, &io, &mut previous);
            let started = io.1.lock().clone();
            let [(from, to)] = synced[..] else {
                panic!("one range synced, not {synced:?}")
            };
            assert!(started.len() > 1, "{started:?}");
            assert_eq!((started[0].0, started[started.len() - 1].1), (from, to));
            assert!(started.windows(2).all(|w| w[0].1 == w[1].0), "{started:?}");
            assert!(
                started
                    .iter()
                    .all(|&(a, b)| a < b && b - a <= WRITEBACK_PIECE),
                "{started:?}"
            );
        }
        append(&log);
        io.1.lock().clear();
        log.sync().unwrap();
        assert_eq!(*io.1.lock(), vec![]);
    }

    /// Rounds between bursts of appends that roll the log: every sequence a
    /// round reports durable lies in synced bytes of its segment, and every
    /// record there at the previous round is reported durable.
    #[test]
    fn what_rounds_report_durable_is_synced_across_rolls() {
        // Segments far smaller than the hold-back (every tail held back
        // whole, several rolls between rounds), and larger than it.
        for segment_size in [64 << 10, 4 << 20] {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = recorded_log(dir.path(), segment_size);
            let mut previous = FlushRound::default();
            let mut appended: Vec<AppendInfo> = Vec::new();
            let mut checked = 0usize;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for _ in 0..60 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let before_this = appended.last().map_or(0, |a| a.seq);
                for _ in 0..x % 3000 {
                    appended.push(append_info(&log));
                }
                log.shared.group.flush(&log.shared, &mut previous).unwrap();
                let durable = log.shared.group.durable();
                assert!(
                    durable >= before_this,
                    "{durable} reported durable, {before_this} appended before the previous round"
                );
                let synced: std::collections::HashMap<u64, u64> = log
                    .shared
                    .segments
                    .read()
                    .iter()
                    .map(|s| (s.base_seq, s.synced.load(Ordering::Relaxed)))
                    .collect();
                while let Some(a) = appended.get(checked).filter(|a| a.seq <= durable) {
                    assert!(
                        synced[&a.segment_base] >= a.offset + u64::from(a.len),
                        "record {} reported durable, not synced (segment size {segment_size})",
                        a.seq
                    );
                    checked += 1;
                }
            }
            assert!(checked > 0);
        }
    }
}
