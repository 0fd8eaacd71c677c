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
//! The part of the segment still to be written is advised `MADV_RANDOM`
//! while it is the tail ([`without_readahead`]). A write fault on a shared
//! file mapping otherwise runs the kernel's readahead, whose window grows
//! as the faults go on, until a single fault reads in (zero-fills) megabytes
//! of the file's hole: 15 to 25 ms of a core in one fault, every 8 MiB, in
//! kernel code that a kernel built without preemption does not interrupt,
//! so every thread queued on that core waited as long. Nothing ahead of the
//! appender is worth reading ahead; without it the same pages cost about
//! as much in all, a page per fault. At the seal the whole mapping gets
//! the normal advice back, for readers catching up through the segment.

use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use memmap2::{Advice, MmapRaw};

use super::segment::Segment;

/// Bytes populated per step (the thread re-checks the segment between steps).
pub(crate) const STEP: usize = 1 << 20;
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
                if seg
                    .map()
                    .advise_range(Advice::PopulateWrite, off, len)
                    .is_err()
                {
                    return;
                }
                off += len;
            }
        });
    if let Ok(handle) = spawned {
        seg.set_prefaulter(handle.thread().clone());
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
