//! Prefaulting: the first store to each page of a fresh segment mapping
//! costs a page fault that zero-fills the page, which dominates small-record
//! appends. A short-lived background thread walks a new segment ahead of the
//! appender with `MADV_POPULATE_WRITE` (Linux 5.14+; silently skipped where
//! unsupported), so the appender mostly finds its pages mapped already.

use std::sync::{Arc, Weak};
use std::thread;

use memmap2::Advice;

use super::segment::Segment;

/// Bytes populated per step (the thread re-checks the segment between steps).
const STEP: usize = 1 << 20;
/// Segments smaller than this are not worth a thread.
pub(crate) const MIN_SEGMENT: usize = 4 << 20;

/// Starts prefaulting `seg` in the background.
pub(crate) fn spawn(seg: &Arc<Segment>) {
    if seg.size < MIN_SEGMENT {
        return;
    }
    let weak: Weak<Segment> = Arc::downgrade(seg);
    let _ = thread::Builder::new()
        .name("herald-log-prefault".into())
        .spawn(move || {
            let mut off = 0usize;
            loop {
                let Some(seg) = weak.upgrade() else { return };
                if seg.is_sealed() || off >= seg.size {
                    return;
                }
                // Skip what the appender has already written.
                off = off.max(seg.end() & !(4096 - 1));
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
}
