//! The append path: validating a record, copying it into the tail segment,
//! publishing it to readers, rolling to a new segment, and waiting for
//! durability (group commit).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapRaw;

use super::format::{
    self, aligned, encode_record_header, encode_segment_header, MAX_KEY_LEN, MAX_TYPE_LEN,
    REC_HEADER_LEN, SEG_HEADER_LEN,
};
use super::segment::{segment_file_name, Segment};
use super::{index, prefault, retention, spare};
use super::{AppendInfo, Durability, Log, LogConfig, LogError, RecordRef, Writer};
use crate::sync::Ordering;

/// Creates segment `base` in `dir`: a temporary file is preallocated and
/// given its header, synced (unless `Never`), then renamed into place and the
/// directory synced, so the `.seg` file starts with a durable header (a
/// spare named at a roll gets those syncs later: `spare::name`).
pub(super) fn create_segment(
    dir: &Path,
    cfg: &LogConfig,
    base: u64,
    flags: u32,
) -> Result<Arc<Segment>, LogError> {
    let path = dir.join(segment_file_name(base));
    let tmp = dir.join(format!("{}.tmp", segment_file_name(base)));
    let header = encode_segment_header(base, cfg.segment_size, cfg.clock.now_ns(), flags);
    let ioerr = |ctx: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e| LogError::io(ctx, Some(p), e)
    };
    let file = cfg
        .io
        .create_segment(&tmp, cfg.segment_size, &header)
        .map_err(ioerr("creating a segment", &tmp))?;
    let durable = cfg.durability != Durability::Never;
    let result = (|| {
        if durable {
            cfg.io
                .sync_file(&file)
                .map_err(ioerr("syncing a new segment", &tmp))?;
        }
        cfg.io
            .rename(&tmp, &path)
            .map_err(ioerr("renaming a new segment", &path))?;
        if durable {
            cfg.io
                .sync_dir(dir)
                .map_err(ioerr("syncing the log directory", dir))?;
        }
        memmap2::MmapOptions::new()
            .len(cfg.segment_size as usize)
            .map_raw(&file)
            .map_err(ioerr("mapping a segment", &path))
    })();
    let map = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    Ok(install(cfg, base, path, file, map))
}

/// A new segment, named and mapped, with its header durable: the log's
/// tail-to-be, prefaulted in the background if configured.
pub(super) fn install(
    cfg: &LogConfig,
    base: u64,
    path: PathBuf,
    file: File,
    map: MmapRaw,
) -> Arc<Segment> {
    let seg = Segment::new(base, path, file, map);
    seg.synced.store(SEG_HEADER_LEN as u64, Ordering::Relaxed);
    let seg = Arc::new(seg);
    if cfg.prefault {
        prefault::spawn(&seg);
    }
    seg
}

impl Log {
    /// Appends a record; under [`Durability::Always`] returns once it is
    /// durable (sharing the sync with concurrent appenders).
    pub fn append(&self, rec: &RecordRef<'_>) -> Result<AppendInfo, LogError> {
        let info = self.append_nowait(rec)?;
        if self.shared.config.durability == Durability::Always {
            self.wait_durable(info.seq)?;
        }
        Ok(info)
    }

    /// Appends a record without waiting for durability, whatever the policy.
    /// The record is visible to readers when this returns.
    pub fn append_nowait(&self, rec: &RecordRef<'_>) -> Result<AppendInfo, LogError> {
        let sh = &*self.shared;
        let mut w = sh.writer.lock();
        // Acquire: pairs with the Release in `Shared::poison`.
        if sh.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        // Relaxed: only the appender (under `writer`) stores `next_seq`.
        let expected = sh.next_seq.load(Ordering::Relaxed);
        if rec.seq != expected {
            return Err(LogError::SequenceMismatch {
                expected,
                got: rec.seq,
            });
        }
        if rec.timestamp_ns < w.last_ts {
            return Err(LogError::TimestampRegression {
                last: w.last_ts,
                got: rec.timestamp_ns,
            });
        }
        if rec.event_type.len() > MAX_TYPE_LEN {
            return Err(LogError::RecordTooLarge {
                len: rec.event_type.len(),
                max: MAX_TYPE_LEN,
            });
        }
        if rec.key.len() > MAX_KEY_LEN {
            return Err(LogError::RecordTooLarge {
                len: rec.key.len(),
                max: MAX_KEY_LEN,
            });
        }
        let len = REC_HEADER_LEN + rec.event_type.len() + rec.payload.len() + rec.key.len();
        let alloc = aligned(len);
        let max = sh.config.max_record_len();
        if alloc > max || len > u32::MAX as usize {
            return Err(LogError::RecordTooLarge { len: alloc, max });
        }
        let mut off = w.tail.end();
        if off + alloc > w.tail.size {
            self.roll(&mut w, expected, 0)?;
            off = w.tail.end();
            if sh.config.retention.has_limit() {
                retention::enforce_in_background(&self.shared);
            }
        }
        let mut topics = sh.topics.write();
        let entries = topics.topic_mut(rec.topic_id);
        if let Some(last) = entries.last_topic_seq {
            if rec.topic_seq <= last {
                return Err(LogError::TopicSequenceRegression {
                    topic_id: rec.topic_id,
                    last,
                    got: rec.topic_seq,
                });
            }
        }
        let seg = &w.tail;
        let header = encode_record_header(rec);
        // Most records have no key: no copy call for it.
        if rec.key.is_empty() {
            seg.write_at(off, &[&header, rec.event_type, rec.payload]);
        } else {
            seg.write_at(off, &[&header, rec.event_type, rec.payload, rec.key]);
        }
        // One pass over the contiguous bytes just written (cheaper than
        // checksumming the pieces separately).
        let crc = seg.unpublished_crc(off, len);
        seg.write_at(off + format::REC_CRC_OFF, &[&crc.to_le_bytes()]);
        // Padding is already zero: the region past `end` is never written
        // except by appends, and recovery zeroes anything beyond the valid prefix.
        let idx = rec.seq - seg.base_seq;
        seg.publish(idx, off, off + alloc, rec.timestamp_ns);
        seg.kick_prefaulter(off + alloc);
        let half_full = (off + alloc) * 2 >= seg.size;
        let filled = entries.push(index::Entry {
            topic_seq: rec.topic_seq,
            seq: rec.seq,
        });
        if filled {
            topics.to_spill.push(rec.topic_id);
        }
        drop(topics);
        if filled {
            sh.wake_spiller();
        }
        let segment_base = seg.base_seq;
        w.last_ts = rec.timestamp_ns;
        if half_full && !w.spare_asked {
            // The next roll's spare, made while this segment's second half
            // fills (see `spare`).
            w.spare_asked = true;
            spare::prepare(&self.shared);
        }
        // Release: pairs with the Acquire in `Shared::next_seq` (sync leader,
        // `last_seq`, readers' range checks).
        sh.next_seq.store(expected + 1, Ordering::Release);
        Ok(AppendInfo {
            seq: rec.seq,
            segment_base,
            offset: off as u64,
            len: alloc as u32,
        })
    }

    /// Waits until every sequence `<= seq` is durable (group commit).
    pub fn wait_durable(&self, seq: u64) -> Result<(), LogError> {
        self.shared.group.wait_durable(&self.shared, seq)
    }

    /// Syncs everything appended so far, whatever the policy.
    pub fn sync(&self) -> Result<(), LogError> {
        let last = self.shared.next_seq().saturating_sub(1);
        self.wait_durable(last)
    }

    /// Retention on a timer, for a log that may not roll for a long time:
    /// what a segment roll does, and with `max_age` set, first seals the
    /// tail (a new, empty one follows) once its oldest record is older than
    /// [`max_age`](super::Retention::max_age)` / 8`, unless a reader or a
    /// retention floor still needs one of its records (it could not be
    /// deleted anyway). No segment then spans more than that, so called
    /// every minute, an unpinned record is deleted at most `max_age · 9/8`
    /// plus a minute after it was written, however slowly the log fills.
    /// Each seal starts a new segment file: at most about nine per
    /// `max_age`.
    pub fn expire(&self) -> Result<retention::RetentionReport, LogError> {
        let sh = &*self.shared;
        if let Some(max_age) = sh.config.retention.max_age {
            let mut w = sh.writer.lock();
            // Acquire: pairs with the Release in `Shared::poison`.
            let usable = !sh.poisoned.load(Ordering::Acquire);
            let oldest = w.tail.first_ts.load(Ordering::Relaxed);
            let age = sh.config.clock.now_ns().saturating_sub(oldest);
            let span = u64::try_from((max_age / 8).as_nanos()).unwrap_or(u64::MAX);
            // Relaxed: only the appender (under `writer`) stores it.
            let next = sh.next_seq.load(Ordering::Relaxed);
            let pinned = !sh.config.retention.override_pins && retention::pinned_below(sh, next);
            if usable && w.tail.count() > 0 && age > span && !pinned {
                self.roll(&mut w, next, 0)?;
            }
        }
        retention::enforce(sh)
    }

    /// Moves the log's end to `seq` without storing the sequences before
    /// it: they were never the log's (a replica's stream dropped them
    /// before this replica saw them). The next append carries `seq`, in a
    /// new segment flagged as following a skip; readers crossing the skip
    /// get a [`ReadItem::Gap`](super::ReadItem::Gap). A `seq` equal to
    /// [`Log::next_seq`] changes nothing; a lower one fails with
    /// [`LogError::SequenceMismatch`].
    pub fn skip_to(&self, seq: u64) -> Result<(), LogError> {
        let sh = &*self.shared;
        let mut w = sh.writer.lock();
        // Acquire: pairs with the Release in `Shared::poison`.
        if sh.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        // Relaxed: only the appender (under `writer`) stores `next_seq`.
        let next = sh.next_seq.load(Ordering::Relaxed);
        if seq < next {
            return Err(LogError::SequenceMismatch {
                expected: next,
                got: seq,
            });
        }
        if seq == next {
            return Ok(());
        }
        let empty = sh.first_seq() == next;
        self.roll(&mut w, seq, format::SEG_FLAG_SKIP)?;
        sh.skips.write().push(seq);
        if empty {
            sh.set_first_seq(seq);
        }
        // Release: as at the end of `append_nowait`.
        sh.next_seq.store(seq, Ordering::Release);
        Ok(())
    }

    /// The base sequence of the newest segment that follows a skip (see
    /// [`Log::skip_to`]), or 0.
    pub fn last_skip(&self) -> u64 {
        self.shared.skips.read().last().copied().unwrap_or(0)
    }

    fn roll(&self, w: &mut Writer, base: u64, flags: u32) -> Result<(), LogError> {
        let sh = &*self.shared;
        if w.tail.count() > 0 && sh.config.durability != Durability::Never && !w.tail.name_durable()
        {
            // The tail was named at a roll and the log has not synced since
            // (`spare::name`): its header and name become durable now, so
            // that only the newest segment ever lacks them.
            sync_header_and_name(sh, &w.tail)?;
        }
        if w.tail.count() == 0 {
            // An empty tail too small for the record (a short file left by
            // corruption and repair) would share the new segment's name:
            // replace it instead of sealing it.
            sh.segments.write().retain(|s| !Arc::ptr_eq(s, &w.tail));
            match sh.config.io.remove(&w.tail.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(LogError::io(
                        "removing an empty segment",
                        Some(w.tail.path.clone()),
                        e,
                    ))
                }
            }
        }
        // A spare made in the background if one is ready (see `spare`);
        // not for a skip, which is durable when `skip_to` returns.
        let ready = if flags == 0 {
            sh.spare.lock().ready.take()
        } else {
            None
        };
        let new = match ready.map(|s| spare::name(s, sh, base, flags)) {
            Some(Ok(seg)) => seg,
            // A spare that could not be named is gone: create as without.
            Some(Err(_)) | None => create_segment(&sh.dir, &sh.config, base, flags)?,
        };
        // Publish the new segment before sealing the old one, so that a reader
        // that sees `sealed` finds its successor in the list.
        sh.segments.write().push(Arc::clone(&new));
        w.tail.seal();
        w.tail = new;
        w.spare_asked = false;
        Ok(())
    }
}

/// Syncs a segment's header, then the directory: what a roll onto the
/// spare left to the next sync. A failure poisons the log, as a failed
/// sync of records does.
fn sync_header_and_name(sh: &super::Shared, seg: &Segment) -> Result<(), LogError> {
    let result = sh
        .config
        .io
        .sync_range(seg.map(), 0, SEG_HEADER_LEN)
        .map_err(|e| LogError::io("syncing a segment header", Some(seg.path.clone()), e))
        .and_then(|()| sh.sync_dir());
    if result.is_err() {
        sh.group.fail();
        sh.poison();
    }
    result
}
