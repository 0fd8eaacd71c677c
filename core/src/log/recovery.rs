//! Opening a log directory: find the segments, validate every record, rebuild
//! the in-memory indexes, truncate a torn tail, and (with `repair`) truncate
//! at mid-log corruption. See `docs/FORMAT.md`, "Recovery".

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::MmapOptions;

use super::config::{Durability, LogConfig};
use super::format::{check_record, decode_segment_header, encode_segment_header, SEG_HEADER_LEN};
use super::index::{Entry, TopicIndex};
use super::scan::scan_segment;
use super::segment::{parse_segment_file_name, Segment};
use super::LogError;

/// Bytes that recovery removed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file.
    pub path: PathBuf,
    /// Offset of the first removed byte (the first invalid record).
    pub offset: u64,
    /// Non-zero bytes zeroed from `offset` on.
    pub bytes: u64,
    /// Why the bytes at `offset` were not a valid record.
    pub reason: String,
}

/// What [`Log::open`](super::Log::open) found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segment files in use after recovery.
    pub segments: usize,
    /// Valid records found.
    pub records: u64,
    /// First retained sequence.
    pub first_seq: u64,
    /// Sequence the next append must carry.
    pub next_seq: u64,
    /// Torn tails (and, with `repair`, corrupt regions) that were zeroed,
    /// and a last segment's lost header written again (`bytes` 0).
    pub truncated: Vec<Truncation>,
    /// Files deleted: leftover temporaries, unwritten segments, and (with
    /// `repair`) segments after a corrupt point.
    pub removed_files: Vec<PathBuf>,
    /// Whether `repair` had to cut the log at mid-log corruption.
    pub repaired: bool,
    /// Wall time the recovery took.
    pub elapsed: Duration,
}

/// The state rebuilt from disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) segments: Vec<Arc<Segment>>,
    pub(crate) topics: TopicIndex,
    pub(crate) next_seq: u64,
    pub(crate) last_ts: u64,
    /// Bases of the segments that follow a skip, oldest first.
    pub(crate) skips: Vec<u64>,
    pub(crate) report: RecoveryReport,
}

/// Lists `(base_seq, path)` of the segment files in `dir`, sorted, and the
/// leftover temporary files.
/// Segment files `(base_seq, path)` and leftover temporaries.
pub(crate) type Listing = (Vec<(u64, PathBuf)>, Vec<PathBuf>);

pub(crate) fn list_segments(dir: &Path) -> Result<Listing, LogError> {
    let mut segs = Vec::new();
    let mut tmps = Vec::new();
    let rd = fs::read_dir(dir)
        .map_err(|e| LogError::io("reading the log directory", Some(dir.into()), e))?;
    for ent in rd {
        let ent =
            ent.map_err(|e| LogError::io("reading the log directory", Some(dir.into()), e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_segment_file_name(name) {
            segs.push((base, ent.path()));
        } else if name.ends_with(".seg.tmp") || name == "topics.hwm.tmp" {
            tmps.push(ent.path());
        }
    }
    segs.sort();
    Ok((segs, tmps))
}

/// Recovers the log in `dir` (which exists).
pub(crate) fn recover(dir: &Path, cfg: &LogConfig) -> Result<Recovered, LogError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let (files, tmps) = list_segments(dir)?;
    for t in tmps {
        cfg.io
            .remove(&t)
            .map_err(|e| LogError::io("removing a temporary segment", Some(t.clone()), e))?;
        report.removed_files.push(t);
    }

    let mut segments: Vec<Arc<Segment>> = Vec::new();
    let mut topics = TopicIndex::default();
    let mut expected: Option<u64> = None;
    let mut last_ts = 0u64;
    let mut skips = Vec::new();
    let n = files.len();
    let mut cut_from: Option<usize> = None;

    for (i, (base, path)) in files.iter().enumerate() {
        let is_last = i + 1 == n;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| LogError::io("opening a segment", Some(path.clone()), e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io("reading segment metadata", Some(path.clone()), e))?
            .len();
        if len > u64::from(u32::MAX) {
            fail_or_cut(cfg, path, 0, "segment file larger than 4 GiB", &mut report)?;
            cut_from = Some(i);
            break;
        }
        if len < SEG_HEADER_LEN as u64 {
            let small = fs::read(path)
                .map_err(|e| LogError::io("reading a segment", Some(path.clone()), e))?;
            if is_last && small.iter().all(|&b| b == 0) {
                drop(file);
                remove_unwritten(cfg, path, &mut report)?;
                break;
            }
            fail_or_cut(
                cfg,
                path,
                0,
                "file shorter than the segment header",
                &mut report,
            )?;
            cut_from = Some(i);
            break;
        }
        let map = MmapOptions::new()
            .len(len as usize)
            .map_raw(&file)
            .map_err(|e| LogError::io("mapping a segment", Some(path.clone()), e))?;
        let seg = Segment::new(*base, path.clone(), file, map);
        let bytes = seg.committed(seg.size);
        let header = match decode_segment_header(bytes) {
            Ok(h) => h,
            Err(why) => {
                let lost = is_last && bytes[..SEG_HEADER_LEN].iter().all(|&b| b == 0);
                let first_record =
                    check_record(bytes, SEG_HEADER_LEN).is_ok_and(|h| h.seq == *base);
                if lost && !first_record {
                    // A segment whose header never reached the disk: created
                    // but never written, or named at a roll whose syncs a
                    // power loss preempted (`spare::name`), before any of its
                    // records did: nothing to keep.
                    drop(seg);
                    remove_unwritten(cfg, path, &mut report)?;
                    break;
                }
                if lost && expected.is_none_or(|e| e == *base) {
                    // Records without their header (a power loss after some
                    // of their pages were written back, or a disk that lost
                    // the page): the name gives the base, and where the
                    // segment follows on, nothing else is missing.
                    rewrite_header(cfg, &seg, len, &mut report)?;
                    decode_segment_header(seg.committed(seg.size))
                        .map_err(|why| LogError::corrupt(path.clone(), 0, why))?
                } else {
                    fail_or_cut(cfg, path, 0, why, &mut report)?;
                    cut_from = Some(i);
                    break;
                }
            }
        };
        let bytes = seg.committed(seg.size);
        if header.base_seq != *base {
            fail_or_cut(
                cfg,
                path,
                0,
                "base sequence in header differs from the file name",
                &mut report,
            )?;
            cut_from = Some(i);
            break;
        }
        if header.skip {
            skips.push(*base);
        }
        if let Some(exp) = expected {
            // A skip moves forward only, and only where its segment says so.
            if exp != *base && !(header.skip && *base > exp) {
                let why =
                    format!("sequence gap between segments: expected base {exp}, found {base}");
                fail_or_cut(cfg, path, 0, &why, &mut report)?;
                cut_from = Some(i);
                break;
            }
        }
        let mut idx = 0u64;
        let outcome = scan_segment(bytes, *base, last_ts, |off, h| {
            let t = topics.topic_mut(h.topic_id);
            if t.last_topic_seq.is_some_and(|last| h.topic_seq <= last) {
                return Err("topic sequence does not increase");
            }
            if t.push(Entry {
                topic_seq: h.topic_seq,
                seq: h.seq,
            }) {
                topics.to_spill.push(h.topic_id);
            }
            seg.publish(
                idx,
                off,
                off + super::format::aligned(h.len),
                h.timestamp_ns,
            );
            idx += 1;
            Ok(())
        });
        let damaged = outcome.invalid.is_some() || outcome.dirty_end > outcome.end;
        if damaged {
            let reason = outcome
                .invalid
                .unwrap_or("non-zero bytes after the last record");
            let torn_tail = is_last && !outcome.valid_after;
            if !torn_tail {
                fail_or_cut(cfg, path, outcome.end as u64, reason, &mut report)?;
                cut_from = Some(i + 1);
            }
            seg.zero(outcome.end, outcome.dirty_end);
            if cfg.durability != Durability::Never {
                cfg.io
                    .sync_range(seg.map(), outcome.end, outcome.dirty_end - outcome.end)
                    .map_err(|e| {
                        LogError::io("syncing a truncated segment", Some(path.clone()), e)
                    })?;
            }
            report.truncated.push(Truncation {
                path: path.clone(),
                offset: outcome.end as u64,
                bytes: (outcome.dirty_end - outcome.end) as u64,
                reason: reason.to_string(),
            });
        }
        last_ts = outcome.last_ts;
        report.records += outcome.records;
        expected = Some(base + outcome.records);
        segments.push(Arc::new(seg));
        if cut_from.is_some() {
            break;
        }
    }

    if let Some(from) = cut_from {
        for (_, path) in &files[from..] {
            if path.exists() {
                cfg.io.remove(path).map_err(|e| {
                    LogError::io("removing a segment cut by repair", Some(path.clone()), e)
                })?;
                report.removed_files.push(path.clone());
            }
        }
        report.repaired = true;
    }

    // Topics that retention emptied keep their high-water marks.
    match super::hwm::read(dir) {
        Ok(Some(entries)) => {
            for (topic, last) in entries {
                topics.apply_high_water_mark(topic, last);
            }
        }
        Ok(None) => {}
        Err(e @ LogError::Corrupt { .. }) => {
            if !cfg.repair {
                return Err(e);
            }
            let p = dir.join(super::format::HWM_FILE_NAME);
            cfg.io.remove(&p).map_err(|e| {
                LogError::io(
                    "removing a corrupt high-water-mark file",
                    Some(p.clone()),
                    e,
                )
            })?;
            report.removed_files.push(p);
            report.repaired = true;
        }
        Err(e) => return Err(e),
    }

    // Every segment but the tail is sealed; the tail takes appends. The
    // sealed ones' pages, read in by the scan, and offset tables leave
    // memory, as at a seal (see `prefault`).
    let count = segments.len();
    for s in segments.iter().take(count.saturating_sub(1)) {
        s.seal();
        s.release_pages();
    }
    if cfg.durability != Durability::Never {
        // Records recovered from the page cache after a process crash may not
        // be durable yet; an append acknowledged later must not sit behind
        // a hole after a power loss.
        for s in &segments {
            cfg.io.sync_file(&s.file).map_err(|e| {
                LogError::io("syncing a recovered segment", Some(s.path.clone()), e)
            })?;
        }
        if !report.removed_files.is_empty() {
            cfg.io
                .sync_dir(dir)
                .map_err(|e| LogError::io("syncing the log directory", Some(dir.into()), e))?;
        }
    }
    if cfg.durability != Durability::Never {
        for s in &segments {
            s.synced
                .store(s.end() as u64, crate::sync::Ordering::Relaxed);
        }
    }
    let next_seq = expected.unwrap_or(cfg.initial_seq);
    report.segments = segments.len();
    report.first_seq = segments.first().map_or(next_seq, |s| s.base_seq);
    report.next_seq = next_seq;
    report.elapsed = started.elapsed();
    Ok(Recovered {
        segments,
        topics,
        next_seq,
        last_ts,
        skips,
        report,
    })
}

/// Writes a last segment's lost header again, from its file name.
fn rewrite_header(
    cfg: &LogConfig,
    seg: &Segment,
    len: u64,
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    use std::os::unix::fs::FileExt;
    let header = encode_segment_header(seg.base_seq, len, cfg.clock.now_ns(), 0);
    let ioerr = |ctx: &'static str| {
        let p = seg.path.clone();
        move |e| LogError::io(ctx, Some(p), e)
    };
    seg.file
        .write_all_at(&header, 0)
        .map_err(ioerr("rewriting a segment header"))?;
    if cfg.durability != Durability::Never {
        cfg.io
            .sync_range(seg.map(), 0, SEG_HEADER_LEN)
            .map_err(ioerr("syncing a segment header"))?;
    }
    report.truncated.push(Truncation {
        path: seg.path.clone(),
        offset: 0,
        bytes: 0,
        reason: "segment header lost: written again from the file name".into(),
    });
    Ok(())
}

/// Removes a last segment file whose header never reached the disk and
/// that holds no record after it.
fn remove_unwritten(
    cfg: &LogConfig,
    path: &Path,
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    cfg.io
        .remove(path)
        .map_err(|e| LogError::io("removing an unwritten segment", Some(path.to_path_buf()), e))?;
    report.removed_files.push(path.to_path_buf());
    Ok(())
}

/// Without `repair`: the corruption error. With it: note the cut and go on.
fn fail_or_cut(
    cfg: &LogConfig,
    path: &Path,
    offset: u64,
    why: &str,
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    if !cfg.repair {
        return Err(LogError::corrupt(path.to_path_buf(), offset, why));
    }
    report.repaired = true;
    Ok(())
}
