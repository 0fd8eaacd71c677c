//! Read-only checks for `herald log verify DIR` and `herald log inspect DIR`:
//! they never modify the files (a torn tail is reported, not truncated).

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::MmapOptions;

use super::format::{check_record, decode_segment_header, REC_HEADER_LEN, SEG_HEADER_LEN};
use super::recovery::list_segments;
use super::scan::scan_segment;
use super::LogError;
use super::RecordRef;

/// One problem found by [`verify_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyIssue {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset in it.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// Whether it is in the last segment after its valid prefix (a torn tail,
    /// which opening the log truncates by itself).
    pub torn_tail: bool,
}

/// What [`verify_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files examined.
    pub segments: usize,
    /// Records whose CRC and sequence checked out.
    pub records: u64,
    /// First sequence found (if any record).
    pub first_seq: Option<u64>,
    /// Last sequence found (if any record).
    pub last_seq: Option<u64>,
    /// Skips between segments, `(from, to)` inclusive: sequences a replica
    /// never stored because its stream had dropped them (see `Log::skip_to`).
    pub skips: Vec<(u64, u64)>,
    /// Problems, in file order.
    pub issues: Vec<VerifyIssue>,
}

impl VerifyReport {
    /// No problem at all (a torn tail counts as a problem here).
    pub fn is_clean(&self) -> bool {
        self.issues.is_empty()
    }
}

fn map_read_only(path: &Path) -> Result<Option<memmap2::Mmap>, LogError> {
    let file =
        File::open(path).map_err(|e| LogError::io("opening a segment", Some(path.into()), e))?;
    let len = file
        .metadata()
        .map_err(|e| LogError::io("reading segment metadata", Some(path.into()), e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the mapping is read-only and private to this call; the caller
    // must not run verification while another process truncates the files
    // (documented on `verify_dir`: run it on a closed or live-appended log,
    // whose files are only ever appended to within their preallocated size).
    let map = unsafe { MmapOptions::new().len(len as usize).map(&file) }
        .map_err(|e| LogError::io("mapping a segment", Some(path.into()), e))?;
    Ok(Some(map))
}

/// Checks every segment header, record CRC and sequence continuity in `dir`
/// without modifying anything. Errors only on I/O failure; corruption is
/// reported in [`VerifyReport::issues`]. The files must not be truncated by
/// another process meanwhile.
pub fn verify_dir(dir: impl AsRef<Path>) -> Result<VerifyReport, LogError> {
    let mut report = VerifyReport::default();
    walk(dir.as_ref(), &mut report, &mut |_| {})?;
    Ok(report)
}

/// Calls `f` for every valid record in `dir`, in sequence order, stopping at
/// the first problem (which is returned in the report, as by [`verify_dir`]).
pub fn dump_dir(
    dir: impl AsRef<Path>,
    mut f: impl FnMut(&RecordRef<'_>),
) -> Result<VerifyReport, LogError> {
    let mut report = VerifyReport::default();
    walk(dir.as_ref(), &mut report, &mut f)?;
    Ok(report)
}

fn walk(
    dir: &Path,
    report: &mut VerifyReport,
    f: &mut dyn FnMut(&RecordRef<'_>),
) -> Result<(), LogError> {
    let (files, _tmps) = list_segments(dir)?;
    if let Err(LogError::Corrupt {
        path,
        offset,
        reason,
    }) = super::hwm::read(dir)
    {
        report.issues.push(VerifyIssue {
            path,
            offset,
            reason,
            torn_tail: false,
        });
    }
    let n = files.len();
    let mut expected: Option<u64> = None;
    let mut last_ts = 0;
    let mut topic_last = std::collections::HashMap::<u64, u64>::new();
    for (i, (base, path)) in files.iter().enumerate() {
        report.segments += 1;
        let is_last = i + 1 == n;
        let issue = |offset: u64, reason: &str, torn_tail: bool| VerifyIssue {
            path: path.clone(),
            offset,
            reason: reason.to_string(),
            torn_tail,
        };
        let map = map_read_only(path)?;
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let skip = match decode_segment_header(bytes) {
            Ok(h) if h.base_seq == *base => h.skip,
            Ok(_) => {
                report.issues.push(issue(
                    0,
                    "base sequence in header differs from the file name",
                    false,
                ));
                return Ok(());
            }
            Err(why) => {
                // The newest segment without a header on disk is one that
                // opening the log deletes, or whose header it writes again
                // if records follow on (docs/FORMAT.md, "Recovery").
                let lost = is_last && bytes.iter().take(SEG_HEADER_LEN).all(|&b| b == 0);
                let first_record = bytes.len() > SEG_HEADER_LEN
                    && check_record(bytes, SEG_HEADER_LEN).is_ok_and(|h| h.seq == *base);
                let opens = !first_record || expected.is_none_or(|e| e == *base);
                report.issues.push(issue(0, why, lost && opens));
                return Ok(());
            }
        };
        if let Some(exp) = expected {
            if skip && *base > exp {
                report.skips.push((exp, base - 1));
            } else if exp != *base {
                report.issues.push(issue(
                    0,
                    &format!("sequence gap between segments: expected base {exp}"),
                    false,
                ));
                return Ok(());
            }
        }
        let outcome = scan_segment(bytes, *base, last_ts, |off, h| {
            let body = off + REC_HEADER_LEN;
            let view = RecordRef {
                seq: h.seq,
                topic_id: h.topic_id,
                topic_seq: h.topic_seq,
                timestamp_ns: h.timestamp_ns,
                origin: h.origin,
                event_type: &bytes[body..body + h.type_len],
                payload: &bytes[body + h.type_len..body + h.type_len + h.payload_len],
                key: &bytes[body + h.type_len + h.payload_len
                    ..body + h.type_len + h.payload_len + h.key_len],
            };
            if topic_last
                .get(&h.topic_id)
                .is_some_and(|&l| h.topic_seq <= l)
            {
                return Err("topic sequence does not increase");
            }
            topic_last.insert(h.topic_id, h.topic_seq);
            f(&view);
            Ok(())
        });
        report.records += outcome.records;
        if outcome.records > 0 {
            report.first_seq.get_or_insert(*base);
            report.last_seq = Some(base + outcome.records - 1);
        }
        last_ts = outcome.last_ts;
        expected = Some(base + outcome.records);
        if outcome.invalid.is_some() || outcome.dirty_end > outcome.end {
            let reason = outcome
                .invalid
                .unwrap_or("non-zero bytes after the last record");
            report.issues.push(issue(
                outcome.end as u64,
                reason,
                is_last && !outcome.valid_after,
            ));
            return Ok(());
        }
    }
    Ok(())
}
