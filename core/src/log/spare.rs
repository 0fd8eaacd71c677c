//! The spare segment: the next segment's file, made ahead of need by a
//! background thread so that a roll does not create a file on the
//! appender's path.
//!
//! Creating a segment (create, preallocate, sync) took 1–2 ms, and the
//! appender's first stores into a fresh mapping faulted in pages while the
//! new segment's prefault thread was still populating them: together the
//! longest publishes of a run, at every roll. Once the tail segment is half
//! full, a thread now creates `spare.seg.tmp`, preallocates and syncs it,
//! maps it and populates its first [`prefault::WINDOW`] bytes (not earlier,
//! so that an idle log does not keep a second window resident). The next roll takes it:
//! it writes the header (whose base sequence is only known then) and
//! renames the file to its segment name; the first sync that reaches the
//! segment makes the header and the name durable (see [`name`]). If no spare is ready, and
//! for a skip, the roll creates the segment itself, syncs and all.
//!
//! Only for segments of at least [`prefault::MIN_SEGMENT`] bytes (smaller
//! ones are cheap to create). Closing the log removes its spare (one still
//! being made is removed when done); a spare left by a crash is a
//! `.seg.tmp` file, which recovery removes. The disk holds at most one
//! spare more than the log.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use memmap2::MmapRaw;

use super::append::install;
use super::format::encode_segment_header;
use super::prefault;
use super::segment::{segment_file_name, Segment};
use super::{Durability, LogConfig, LogError, Shared};

/// The spare's file name: a `.seg.tmp`, removed by recovery.
const SPARE_NAME: &str = "spare.seg.tmp";

/// A prepared, unnamed segment file.
#[derive(Debug)]
pub(crate) struct Spare {
    path: PathBuf,
    file: File,
    map: MmapRaw,
}

/// The log's spare, under one lock: ready, being made, or refused because
/// the log is closed.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) ready: Option<Spare>,
    making: bool,
    closed: bool,
}

/// Starts making a spare for the log in the background, unless its
/// segments are small, or a spare is ready or being made.
pub(crate) fn prepare(shared: &Arc<Shared>) {
    if shared.config.segment_size < prefault::MIN_SEGMENT as u64 {
        return;
    }
    {
        let mut slot = shared.spare.lock();
        if slot.closed || slot.making || slot.ready.is_some() {
            return;
        }
        slot.making = true;
    }
    let maker = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("herald-log-spare".into())
        .spawn(move || {
            // A spare that cannot be made is no error: the roll creates the
            // segment itself and reports what fails then.
            let made = make(&maker).ok();
            let mut slot = maker.spare.lock();
            slot.making = false;
            if let Some(spare) = made {
                if slot.closed {
                    let _ = std::fs::remove_file(&spare.path);
                } else {
                    slot.ready = Some(spare);
                }
            }
        });
    if spawned.is_err() {
        shared.spare.lock().making = false;
    }
}

fn make(shared: &Shared) -> Result<Spare, LogError> {
    let cfg = &shared.config;
    let path = shared.dir.join(SPARE_NAME);
    let ioerr = |ctx: &'static str| {
        let p = path.clone();
        move |e| LogError::io(ctx, Some(p), e)
    };
    let file = cfg
        .io
        .create_segment(&path, cfg.segment_size, &[])
        .map_err(ioerr("creating a spare segment"))?;
    let result = (|| {
        if cfg.durability != Durability::Never {
            // The file's size and blocks: the roll then syncs one page.
            cfg.io
                .sync_file(&file)
                .map_err(ioerr("syncing a spare segment"))?;
        }
        let map = memmap2::MmapOptions::new()
            .len(cfg.segment_size as usize)
            .map_raw(&file)
            .map_err(ioerr("mapping a spare segment"))?;
        if cfg.prefault {
            // Without readahead, as the prefault thread keeps it.
            prefault::without_readahead(&map, 0);
            // The appender's first pages, faulted in here rather than by it
            // (unsupported before Linux 5.14: the appender faults them).
            let _ = prefault::populate(&map, 0, prefault::WINDOW.min(map.len()));
        }
        Ok(map)
    })();
    match result {
        Ok(map) => Ok(Spare { path, file, map }),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Turns `spare` into the segment starting at `base`: its header written
/// and the file renamed to its segment name, both in the page cache, so a
/// process that dies now loses nothing. The header's and the directory's
/// syncs are left to the first sync that reaches the segment (under
/// `Interval`, the flusher's second round after the roll at the latest,
/// since a round holds back the last MiB), which makes them durable before
/// any of the segment's records, or to the next roll if it comes first
/// (the new segment's `synced` is 0: see `Segment::name_durable`). So only
/// the newest segment may lack them, and recovery rebuilds or deletes it
/// if its header did not reach the disk (`docs/FORMAT.md`).
pub(crate) fn name(
    spare: Spare,
    shared: &Shared,
    base: u64,
    flags: u32,
) -> Result<Arc<Segment>, LogError> {
    let cfg: &LogConfig = &shared.config;
    let path = shared.dir.join(segment_file_name(base));
    let ioerr = |ctx: &'static str, p: &PathBuf| {
        let p = p.clone();
        move |e| LogError::io(ctx, Some(p), e)
    };
    let header = encode_segment_header(base, cfg.segment_size, cfg.clock.now_ns(), flags);
    let result = spare
        .file
        .write_all_at(&header, 0)
        .map_err(ioerr("writing a segment header", &spare.path))
        .and_then(|()| {
            cfg.io
                .rename(&spare.path, &path)
                .map_err(ioerr("renaming a new segment", &path))
        });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&spare.path);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    let seg = install(cfg, base, path, spare.file, spare.map);
    if cfg.durability != Durability::Never {
        // Relaxed: the segment is not shared yet (the list's lock publishes it).
        seg.synced.store(0, crate::sync::Ordering::Relaxed);
    }
    Ok(seg)
}

/// Removes a ready spare's file, and one still being made when it is done
/// (the log is closing).
pub(crate) fn discard(shared: &Shared) {
    let mut slot = shared.spare.lock();
    slot.closed = true;
    if let Some(spare) = slot.ready.take() {
        let _ = std::fs::remove_file(&spare.path);
    }
}
