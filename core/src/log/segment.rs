//! One segment file: a preallocated, memory-mapped region holding a segment
//! header and then records back to back.
//!
//! # Publication protocol
//! Only the appender (holding the writer lock) writes into a segment, and
//! only past `count`'s committed bytes. For each record it copies the bytes
//! into the mapping, stores the record's offset into `offsets[i]` (Relaxed),
//! then release-stores `count = i + 1`. A reader acquire-loads `count` and may
//! then read `offsets[j]` and the bytes of record `j` for any `j < count`:
//! those bytes never change again (recovery zeroes only bytes beyond the
//! valid prefix, before any reader exists). Once the segment is sealed,
//! its offset table may be released: an offset then reads as 0, never a
//! record's, and [`Segment::offset_near`] walks to it instead.
//!
//! The loom model
//! `a_log_reader_racing_appends_and_a_segment_roll_reads_each_record_once`
//! checks this protocol's atomics (not the mapped bytes, which loom cannot
//! see): a reader racing two appends and a segment roll reads each record
//! once, intact.

use memmap2::MmapRaw;
use std::fs::File;
use std::path::PathBuf;

use super::format::{aligned, REC_HEADER_LEN, REC_LEN_OFF, SEG_HEADER_LEN};
use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// File name of the segment whose first record has global sequence `base`.
pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// Parses a segment file name back into its base sequence.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A sealed segment keeps the offset of every this many records once its
/// offset table is released.
pub(crate) const SPARSE_EVERY: u64 = 64;

/// Most records that fit in a segment of `size` bytes.
pub(crate) fn max_records(size: usize) -> usize {
    size.saturating_sub(SEG_HEADER_LEN) / aligned(REC_HEADER_LEN) + 1
}

/// A mapped segment, shared by the appender and readers through `Arc`.
///
/// Dropping the last `Arc` unmaps it; a segment removed by retention stays
/// readable by readers that still hold it (the file is unlinked, the mapping
/// lives on).
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_seq: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    map: MmapRaw,
    /// Mapped length in bytes.
    pub(crate) size: usize,
    /// Records committed. Written only by the appender with Release (pairs with
    /// readers' Acquire loads); see the module docs.
    count: AtomicU64,
    /// Byte offset just past the last committed record. Written by the
    /// appender with Release after `count`; read by the syncer and retention.
    end: AtomicU64,
    /// Bytes `0..synced` are known durable. Only the sync leader writes it
    /// (once the segment is shared). 0 for a segment named at a roll whose
    /// header and name are not durable yet (see [`Self::name_durable`]).
    pub(crate) synced: AtomicU64,
    /// Set (Release) by the appender once no record will be added; pairs with
    /// the Acquire load in readers, which then know `count` is final.
    sealed: AtomicBool,
    /// Timestamp of the first and of the last committed record (0 if none).
    pub(crate) first_ts: AtomicU64,
    pub(crate) last_ts: AtomicU64,
    /// `offsets[i]` is the byte offset of record `base_seq + i`, or 0 once
    /// the table is released (see [`Self::offset_of`]).
    offsets: OffsetTable,
    /// Of a sealed segment whose offset table was released: the offset of
    /// every [`SPARSE_EVERY`]-th record.
    sparse: std::sync::OnceLock<Box<[u32]>>,
    /// The thread keeping pages populated ahead of the appender, if any.
    prefaulter: std::sync::OnceLock<std::thread::Thread>,
    /// The appender wakes the prefaulter when `end` reaches this offset.
    /// Appender only (Relaxed).
    next_kick: AtomicU64,
}

impl Segment {
    /// Wraps an opened file and its mapping.
    pub(crate) fn new(base_seq: u64, path: PathBuf, file: File, map: MmapRaw) -> Self {
        let size = map.len();
        let cap = max_records(size);
        Segment {
            base_seq,
            path,
            file,
            map,
            size,
            count: AtomicU64::new(0),
            end: AtomicU64::new(SEG_HEADER_LEN as u64),
            synced: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
            first_ts: AtomicU64::new(0),
            last_ts: AtomicU64::new(0),
            offsets: OffsetTable::new(cap),
            sparse: std::sync::OnceLock::new(),
            prefaulter: std::sync::OnceLock::new(),
            next_kick: AtomicU64::new(0),
        }
    }

    /// Records the prefault thread (see `prefault`).
    pub(crate) fn set_prefaulter(&self, thread: std::thread::Thread) {
        let _ = self.prefaulter.set(thread);
    }

    /// Wakes the prefault thread when the appender has crossed another
    /// step since the last wake-up. Appender only.
    #[inline]
    pub(crate) fn kick_prefaulter(&self, end: usize) {
        // Relaxed: only the appender reads and writes `next_kick`.
        if (end as u64) < self.next_kick.load(Ordering::Relaxed) {
            return;
        }
        self.next_kick
            .store((end + super::prefault::STEP) as u64, Ordering::Relaxed);
        if let Some(t) = self.prefaulter.get() {
            t.unpark();
        }
    }

    pub(crate) fn map(&self) -> &MmapRaw {
        &self.map
    }

    /// Records committed (Acquire; pairs with the Release in [`Self::publish`]).
    #[inline]
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Byte end of the committed records (Acquire; pairs with the Release in
    /// [`Self::publish`]).
    #[inline]
    pub(crate) fn end(&self) -> usize {
        self.end.load(Ordering::Acquire) as usize
    }

    /// Whether the segment is closed to appends (Acquire; pairs with the
    /// Release in [`Self::seal`]).
    #[inline]
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Drops the segment's pages from the process's resident memory
    /// (`MADV_DONTNEED`); they stay in the page cache. For sealed segments:
    /// their prefaulter at the seal, and each log reader that has read to
    /// the end of one, so a reader catching up through the log leaves no
    /// resident trail behind it.
    ///
    /// The offset table goes too, once the sparse table that replaces it
    /// is built (an offset every [`SPARSE_EVERY`] records).
    pub(crate) fn release_pages(&self) {
        self.release_range(0, self.size as u64);
        if self.is_sealed() {
            // Built once, from the whole table, before any release of it.
            self.sparse.get_or_init(|| {
                let every = SPARSE_EVERY as usize;
                let count = self.count() as usize;
                (0..count.div_ceil(every))
                    .map(|k| self.offsets[k * every].load(Ordering::Relaxed))
                    .collect()
            });
            self.offsets.release();
        }
    }

    /// Drops the pages of bytes `from..to` from the process
    /// (`MADV_DONTNEED`); they stay in the page cache. From the page holding
    /// `from` up to the page holding `to`, exclusive, or to the end of the
    /// mapping. For [`Self::release_pages`] (the whole segment), and for the
    /// flusher, ahead of its write-back of a range behind the appender (see
    /// `Shared::start_writeback_in_pieces`).
    pub(crate) fn release_range(&self, from: u64, to: u64) {
        let (page, size) = (super::PAGE, self.size as u64);
        let from = from / page * page;
        let to = if to >= size { size } else { to / page * page };
        if from < to {
            // SAFETY: `from..to` lies within the mapping (`to` is at most
            // its size). A shared file mapping: MADV_DONTNEED only unmaps
            // its pages from this process (dirty ones stay in the page
            // cache, to be written back). Any later access, by a reader
            // holding a slice of the mapping, faults in the same file
            // contents, so no reference ever sees different bytes.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    from as usize,
                    (to - from) as usize,
                )
            };
        }
    }

    /// Whether the segment's header and name are durable: not so for a spare
    /// named at a roll until the first sync that reaches it (`spare::name`). Meaningless
    /// under `Durability::Never`, where nothing is.
    pub(crate) fn name_durable(&self) -> bool {
        // Acquire: pairs with the sync leader's Release store, made after
        // the header's and the directory's syncs returned.
        self.synced.load(Ordering::Acquire) > 0
    }

    /// Marks the segment closed to appends. Appender only.
    pub(crate) fn seal(&self) {
        // Release: pairs with the Acquire in `is_sealed`; every `publish`
        // before it is visible to a reader that sees `sealed == true`.
        self.sealed.store(true, Ordering::Release);
        // Its prefaulter releases the pages now (see `prefault`).
        if let Some(t) = self.prefaulter.get() {
            t.unpark();
        }
    }

    /// Whether the offset table was released (lookups walk, see
    /// [`Self::offset_near`]).
    #[inline]
    pub(crate) fn offsets_released(&self) -> bool {
        self.sparse.get().is_some()
    }

    /// Offset of record `idx`; only valid for `idx < count()` as loaded by the caller.
    #[inline]
    pub(crate) fn offset_of(&self, idx: u64) -> usize {
        self.offset_near(idx, None)
    }

    /// Offset of record `idx`, as [`Self::offset_of`]; `known` is the
    /// offset of an earlier record of this segment, `(its idx, offset)`, a
    /// place to walk from when the table is released and it is nearer than
    /// the sparse table's entry (a reader's last record).
    #[inline]
    pub(crate) fn offset_near(&self, idx: u64, known: Option<(u64, usize)>) -> usize {
        // Relaxed: ordered by the caller's Acquire load of `count`.
        match self.offsets[idx as usize].load(Ordering::Relaxed) {
            0 => self.offset_by_walk(idx, known),
            off => off as usize,
        }
    }

    /// Offset of record `idx` of a sealed segment whose offset table was
    /// released: from the nearest known offset below it (the sparse
    /// table's, or `known`), record by record. A corrupt length makes a
    /// wrong offset, which the reader's record check refuses (the sequence
    /// differs).
    #[cold]
    fn offset_by_walk(&self, idx: u64, known: Option<(u64, usize)>) -> usize {
        let (mut i, mut off) = match self.sparse.get() {
            Some(sparse) => {
                let k = idx / SPARSE_EVERY;
                (k * SPARSE_EVERY, sparse[k as usize] as usize)
            }
            None => (0, SEG_HEADER_LEN),
        };
        if let Some((at, at_off)) = known.filter(|&(at, _)| i <= at && at <= idx) {
            (i, off) = (at, at_off);
        }
        let bytes = self.committed(self.end());
        while i < idx {
            let Some(len) = bytes.get(off + REC_LEN_OFF..off + REC_LEN_OFF + 4) else {
                break;
            };
            off += aligned(super::format::get_u32(len, 0) as usize);
            i += 1;
        }
        off
    }

    /// The committed bytes `0..end`.
    #[inline]
    pub(crate) fn committed(&self, end: usize) -> &[u8] {
        debug_assert!(end <= self.size);
        // SAFETY: the mapping is `self.size` bytes long and lives as long as
        // `self`; `end <= size` (callers pass a value loaded from `end` or
        // computed by recovery, both bounded by `size`). Bytes below a
        // published `end` are never written again (module docs), so no write
        // races with this shared borrow.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), end.min(self.size)) }
    }

    /// Writes `parts` back to back at `off`. Appender only, past `end()`.
    pub(crate) fn write_at(&self, off: usize, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert!(
            off >= self.end() && off + total <= self.size,
            "write outside the free region"
        );
        let mut at = off;
        for p in parts {
            // SAFETY: `at..at + p.len()` lies within the mapping (checked just
            // above) and beyond the published `end`, so no reader reads it and
            // no other writer exists (the caller holds the writer lock).
            unsafe {
                std::ptr::copy_nonoverlapping(p.as_ptr(), self.map.as_mut_ptr().add(at), p.len())
            };
            at += p.len();
        }
    }

    /// CRC of the record just written at `off` (`len` bytes), not yet
    /// published. Appender only.
    pub(crate) fn unpublished_crc(&self, off: usize, len: usize) -> u32 {
        assert!(
            off >= self.end() && off + len <= self.size,
            "read outside the free region"
        );
        // SAFETY: `off..off + len` is within the mapping (checked above) and
        // past the published `end`: only the appender, which is the caller
        // (holding the writer lock), writes or reads it, and it does not
        // write it while this borrow lives.
        let body = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(off), len) };
        super::format::record_crc(body)
    }

    /// Zeroes `from..to`. Recovery only (no reader exists yet), or appender past `end()`.
    pub(crate) fn zero(&self, from: usize, to: usize) {
        let to = to.min(self.size);
        if from >= to {
            return;
        }
        // SAFETY: `from..to` is within the mapping; callers guarantee no
        // reader can observe these bytes (they are beyond the published `end`).
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(from), 0, to - from) };
    }

    /// Publishes record `idx` at `off`, ending at `new_end`. Appender only.
    pub(crate) fn publish(&self, idx: u64, off: usize, new_end: usize, ts: u64) {
        // Relaxed: published by the Release store of `count` below.
        self.offsets[idx as usize].store(off as u32, Ordering::Relaxed);
        if idx == 0 {
            self.first_ts.store(ts, Ordering::Relaxed);
        }
        self.last_ts.store(ts, Ordering::Relaxed);
        // Release: pairs with the Acquire in `end()` (syncer, retention).
        self.end.store(new_end as u64, Ordering::Release);
        // Release: pairs with the Acquire in `count()` (readers); makes the
        // record bytes and `offsets[idx]` visible.
        self.count.store(idx + 1, Ordering::Release);
    }
}

/// A segment's offset table: zeroed `AtomicU32`s whose untouched pages
/// cost nothing. In an anonymous mapping of its own, so that a sealed
/// segment's table can leave memory ([`OffsetTable::release`]); on the heap
/// if that mapping cannot be made (and under loom).
#[derive(Debug)]
enum OffsetTable {
    #[cfg(not(loom))]
    Mapped {
        map: MmapRaw,
        len: usize,
    },
    Boxed(Box<[AtomicU32]>),
}

impl OffsetTable {
    fn new(len: usize) -> Self {
        #[cfg(not(loom))]
        if let Ok(map) = memmap2::MmapOptions::new().len((len * 4).max(4)).map_anon() {
            return OffsetTable::Mapped {
                map: map.into(),
                len,
            };
        }
        OffsetTable::Boxed(zeroed_atomic_u32s(len))
    }

    /// Drops the table's pages: it reads as zeros from then on (a zero
    /// offset is never a record's: the segment header comes first).
    fn release(&self) {
        #[cfg(not(loom))]
        if let OffsetTable::Mapped { map, .. } = self {
            // SAFETY: a private anonymous mapping owned by this table.
            // MADV_DONTNEED replaces its pages with zero pages; every access
            // to them is an atomic load or store (`Deref` below), so a
            // concurrent reader sees either the offset or zero, and
            // `Segment::offset_of` takes zero to mean "released" and walks
            // from the sparse table instead. Nothing stores into a released
            // table: only the appender stores, before the seal.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

impl std::ops::Deref for OffsetTable {
    type Target = [AtomicU32];
    fn deref(&self) -> &[AtomicU32] {
        match self {
            #[cfg(not(loom))]
            // SAFETY: the mapping is at least `len * 4` bytes, page-aligned,
            // zero-filled (a valid `AtomicU32` bit pattern) and lives as long
            // as `self`; it is only ever accessed through these atomics.
            OffsetTable::Mapped { map, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().cast::<AtomicU32>(), *len)
            },
            OffsetTable::Boxed(b) => b,
        }
    }
}

/// A boxed slice of zeroed `AtomicU32`s, allocated with `calloc` so that
/// untouched pages cost nothing.
#[cfg(not(loom))]
fn zeroed_atomic_u32s(n: usize) -> Box<[AtomicU32]> {
    let plain: Box<[u32]> = vec![0u32; n].into_boxed_slice();
    let raw = Box::into_raw(plain) as *mut [AtomicU32];
    // SAFETY: `AtomicU32` has the same size, alignment and bit validity as
    // `u32` (documented guarantee), so the allocation is a valid
    // `[AtomicU32]` of the same length and the same layout for deallocation.
    unsafe { Box::from_raw(raw) }
}

/// Loom's atomics are not laid out like `u32`: build them one by one (models
/// use tiny segments).
#[cfg(loom)]
fn zeroed_atomic_u32s(n: usize) -> Box<[AtomicU32]> {
    (0..n).map(|_| AtomicU32::new(0)).collect()
}
