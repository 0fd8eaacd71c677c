//! Prefaulting: the first store to each page of a fresh segment mapping
//! costs a page fault that zero-fills the page, which dominates small-record
//! appends. A background thread per tail segment keeps a window of
//! [`WINDOW`] bytes ahead of the appender populated with
//! `MADV_POPULATE_WRITE` (Linux 5.14+; silently skipped where unsupported),
//! so the appender mostly finds its pages mapped already, while an idle log
//! keeps only that window resident (not the whole segment). The appender
//! wakes the thread each time it crosses a [`STEP`]; the thread also looks
//! by itself every 100 ms. When the segment is sealed (woken by the seal),
//! the thread drops the segment's pages from the process
//! ([`Segment::release_pages`]) and ends: a sealed segment is read only by
//! readers catching up, which fault its pages back in from the page cache
//! and release them again when they leave it, so the resident memory of the
//! log stays a window ahead of the appender instead of growing with it.
//!
//! While a segment is the tail, the part of it not yet written when it
//! became the tail (a spare's whole length) is advised `MADV_RANDOM`
//! ([`without_readahead`]). A write fault on a shared file mapping
//! otherwise runs the kernel's readahead, whose window grows as the faults
//! go on, until a single fault reads in (zero-fills) megabytes of the
//! file's hole: up to 30 ms of a core in one fault (benches' `page_churn`,
//! on a 2-core virtual machine), in kernel code that a kernel built without
//! preemption does not interrupt, so every thread queued on that core
//! waited as long. Nothing ahead of the appender is worth reading ahead;
//! without it the pages are faulted one at a time, each MiB slower, a
//! 64 MiB segment about as slow in all. At the seal the whole mapping gets
//! the normal advice back, for readers catching up through the segment.
//! And the thread populates a [`PIECE`] at a time, yielding its core
//! between pieces ([`populate`]), so that a worker waking on that core
//! waits for a piece, not for a megabyte of faults.

use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use memmap2::{Advice, MmapRaw};

use super::io;
use super::segment::Segment;

/// Bytes populated per step (the thread re-checks the segment between steps).
pub(crate) const STEP: usize = 1 << 20;
/// Bytes populated by one call, between which the thread yields its core.
const PIECE: usize = 64 << 10;
/// Bytes kept populated ahead of the appender.
pub(crate) const WINDOW: usize = 8 << 20;
/// Segments smaller than this are not worth a thread.
pub(crate) const MIN_SEGMENT: usize = 4 << 20;

/// Starts prefaulting `seg` in the background.
pub(crate) fn spawn(seg: &Arc<Segment>) {
    if seg.size < MIN_SEGMENT {
        return;
    }
    let weak: Weak<Segment> = Arc::downgrade(seg);
    let spawned = thread::Builder::new()
        .name("herald-log-prefault".into())
        .spawn(move || {
            let mut off = 0usize;
            // Here rather than on the appender's path: advice that changes
            // a mapping's flags takes the process's mapping lock to write.
            if let Some(seg) = weak.upgrade() {
                without_readahead(seg.map(), seg.end());
            }
            loop {
                let Some(seg) = weak.upgrade() else { return };
                if seg.is_sealed() {
                    let _ = seg.map().advise(Advice::Normal);
                    seg.release_pages();
                    return;
                }
                if off >= seg.size {
                    // Populated to the end: parked until the seal.
                    drop(seg);
                    thread::park_timeout(Duration::from_millis(100));
                    continue;
                }
                // Skip what the appender has already written.
                let end = seg.end();
                off = off.max(end & !(4096 - 1));
                if off >= (end + WINDOW).min(seg.size) {
                    drop(seg); // not kept alive while parked
                    thread::park_timeout(Duration::from_millis(100));
                    continue;
                }
                let len = STEP.min(seg.size - off);
                off = match populate(seg.map(), off, len) {
                    Ok(()) => off + len,
                    // Unsupported (before Linux 5.14): the appender faults
                    // its own pages; the thread still waits for the seal,
                    // to give the advice back and release the pages.
                    Err(_) => seg.size,
                };
            }
        });
    match spawned {
        Ok(handle) => seg.set_prefaulter(handle.thread().clone()),
        // A spare is advised without readahead whole: without the thread
        // that would give the advice back at the seal, it gets it back now.
        Err(_) => {
            let _ = seg.map().advise(Advice::Normal);
        }
    }
}

/// Advises the part of `map` from the page holding byte `from` to its end
/// `MADV_RANDOM`: its faults read nothing ahead (see the module's docs).
pub(crate) fn without_readahead(map: &MmapRaw, from: usize) {
    let from = from & !(4096 - 1);
    if from < map.len() {
        let _ = map.advise_range(Advice::Random, from, map.len() - from);
    }
}

/// Populates `len` bytes of `map` from `from` (`MADV_POPULATE_WRITE`), a
/// [`PIECE`] at a time, yielding the core between pieces
/// ([`io::in_pieces`]): a megabyte of faults takes one to four milliseconds
/// here.
pub(crate) fn populate(map: &MmapRaw, from: usize, len: usize) -> std::io::Result<()> {
    let (from, to) = (from as u64, (from + len) as u64);
    io::in_pieces(from, to, PIECE as u64, |at, len| {
        map.advise_range(Advice::PopulateWrite, at as usize, len as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which pages of `map` are in memory (`mincore`).
    fn resident(map: &MmapRaw) -> Vec<bool> {
        let mut vec = vec![0u8; map.len().div_ceil(4096)];
        // SAFETY: `map` is a live mapping of `map.len()` bytes, and `vec`
        // holds a byte per page of it.
        let rc = unsafe { libc::mincore(map.as_mut_ptr().cast(), map.len(), vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().map(|b| b & 1 == 1).collect()
    }

    #[test]
    fn populate_faults_in_the_range_it_is_given_and_no_more() {
        let file = tempfile::tempfile().unwrap();
        let pages = 2 * PIECE / 4096 + 40;
        file.set_len((pages * 4096) as u64).unwrap();
        let map = memmap2::MmapOptions::new().map_raw(&file).unwrap();
        without_readahead(&map, 0);
        if populate(&map, 4096, PIECE + 37 * 4096).is_err() {
            return; // MADV_POPULATE_WRITE unsupported (before Linux 5.14)
        }
        let want: Vec<bool> = (0..pages)
            .map(|p| (1..=PIECE / 4096 + 37).contains(&p))
            .collect();
        assert_eq!(resident(&map), want);
    }
}
