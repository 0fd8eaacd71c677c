//! Spilling the per-topic index: a background thread writes each full
//! chunk of a topic's index entries (see `index`) to a spill file, so that
//! the index's memory does not grow with the log.
//!
//! Spill files (`topics-NNNNNNNNNN.spill`, [`CHUNKS_PER_FILE`] chunks each)
//! are a cache of what the segments hold, never read back after a restart:
//! nothing is synced, a file is removed when the last chunk in it is
//! dropped (retention, or closing the log) and the writer has moved on to
//! the next file, and opening the log removes any left by a crash. A chunk the thread could not write stays in memory.
//! The thread takes the index's read lock to find full chunks and its write
//! lock only to swap a written chunk for its place in the file; the writes
//! themselves hold no lock, so the appender never waits on them.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::index::{Entry, CHUNK};
use super::{LogError, Shared};
use crate::sync::{AtomicBool, Ordering};

/// Chunks per spill file (4 MiB).
const CHUNKS_PER_FILE: u64 = 64;
/// Bytes per entry in a spill file: `topic_seq`, then `seq`, little-endian.
const ENTRY_LEN: usize = 16;
const CHUNK_BYTES: u64 = (CHUNK * ENTRY_LEN) as u64;
/// How often the thread looks without being woken.
const IDLE: Duration = Duration::from_secs(1);

fn is_spill_file(name: &str) -> bool {
    name.starts_with("topics-") && name.ends_with(".spill")
}

/// Removes the spill files of an earlier run of the log in `dir`.
pub(crate) fn remove_stale(dir: &Path) -> Result<(), LogError> {
    let rd = fs::read_dir(dir)
        .map_err(|e| LogError::io("reading the log directory", Some(dir.into()), e))?;
    for ent in rd.flatten() {
        if ent.file_name().to_str().is_some_and(is_spill_file) {
            let path = ent.path();
            fs::remove_file(&path)
                .map_err(|e| LogError::io("removing a stale index spill file", Some(path), e))?;
        }
    }
    Ok(())
}

/// A spill file, removed when the last chunk in it is dropped.
#[derive(Debug)]
pub(crate) struct SpillFile {
    file: File,
    path: PathBuf,
}

impl SpillFile {
    /// Appends `n` entries of the chunk at byte `at`, from its `from`-th, to `out`.
    pub(crate) fn read_entries(
        &self,
        at: u64,
        from: usize,
        n: usize,
        out: &mut Vec<Entry>,
    ) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        let (mut from, mut left) = (from, n);
        out.reserve(n);
        while left > 0 {
            let take = left.min(buf.len() / ENTRY_LEN);
            let bytes = &mut buf[..take * ENTRY_LEN];
            self.file
                .read_exact_at(bytes, at + (from * ENTRY_LEN) as u64)?;
            out.extend(bytes.chunks_exact(ENTRY_LEN).map(|b| Entry {
                topic_seq: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
                seq: u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
            }));
            from += take;
            left -= take;
        }
        Ok(())
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes chunks into spill files, starting a new file when one is full.
#[derive(Debug)]
pub(crate) struct SpillWriter {
    dir: PathBuf,
    next_name: u64,
    /// The file being filled and the chunks in it so far.
    current: Option<(Arc<SpillFile>, u64)>,
    buf: Vec<u8>,
    /// Kept between rounds of [`spill_pending`], so that it does not allocate.
    topics: Vec<u64>,
    chunks: Vec<Arc<Vec<Entry>>>,
}

impl SpillWriter {
    pub(crate) fn new(dir: &Path) -> Self {
        SpillWriter {
            dir: dir.to_path_buf(),
            next_name: 0,
            current: None,
            buf: Vec::with_capacity(CHUNK_BYTES as usize),
            topics: Vec::new(),
            chunks: Vec::new(),
        }
    }

    /// Writes a full chunk; returns its file and byte position.
    pub(crate) fn write(&mut self, chunk: &[Entry]) -> io::Result<(Arc<SpillFile>, u64)> {
        debug_assert_eq!(chunk.len(), CHUNK);
        let (file, used) = match self.current.take() {
            Some((file, used)) if used < CHUNKS_PER_FILE => (file, used),
            _ => (self.create()?, 0),
        };
        self.buf.clear();
        for e in chunk {
            self.buf.extend_from_slice(&e.topic_seq.to_le_bytes());
            self.buf.extend_from_slice(&e.seq.to_le_bytes());
        }
        let at = used * CHUNK_BYTES;
        file.file.write_all_at(&self.buf, at)?;
        self.current = Some((Arc::clone(&file), used + 1));
        Ok((file, at))
    }

    fn create(&mut self) -> io::Result<Arc<SpillFile>> {
        let path = self
            .dir
            .join(format!("topics-{:010}.spill", self.next_name));
        self.next_name += 1;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(Arc::new(SpillFile { file, path }))
    }
}

/// Spills every full chunk the index lists as waiting. Returns how many
/// chunks it wrote.
pub(crate) fn spill_pending(shared: &Shared, writer: &mut SpillWriter) -> usize {
    // Swapped, not taken, so that neither side allocates a new list.
    let mut topics = std::mem::take(&mut writer.topics);
    topics.clear();
    std::mem::swap(&mut shared.topics.write().to_spill, &mut topics);
    topics.sort_unstable();
    topics.dedup();
    let mut chunks = std::mem::take(&mut writer.chunks);
    let mut written = 0;
    for &topic in &topics {
        if let Some(t) = shared.topics.read().topics.get(&topic) {
            t.entries.full_chunks(&mut chunks);
        }
        // Oldest first: a chunk that fails to be written is retried only
        // while no later one is spilled (see `Entries::full_chunks`).
        for chunk in chunks.drain(..).rev() {
            // Written with no lock held; a failure leaves the chunk in memory.
            let Ok((file, at)) = writer.write(&chunk) else {
                continue;
            };
            if let Some(t) = shared.topics.write().topics.get_mut(&topic) {
                t.entries.spilled(&chunk, &file, at);
            }
            written += 1;
        }
    }
    writer.topics = topics;
    writer.chunks = chunks;
    written
}

/// Chunks spilled in one round past which the freed memory is handed back
/// to the system (4 MiB; in practice after the index rebuilt at open).
const TRIM_AFTER: usize = 64;

/// Returns the heap's free pages to the system. The chunks freed after the
/// index rebuilt at open was spilled lie inside the heap, where the
/// allocator would keep them resident.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions; it takes each arena's
    // lock while it releases that arena's free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The spill thread of a log.
#[derive(Debug)]
pub(crate) struct Spiller {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Spiller {
    /// Starts the thread; it holds the log's state only while it works.
    pub(crate) fn start(shared: &Arc<Shared>) -> Result<Self, LogError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let weak: Weak<Shared> = Arc::downgrade(shared);
        let mut writer = SpillWriter::new(&shared.dir);
        let handle = thread::Builder::new()
            .name("herald-log-spill".into())
            .spawn(move || {
                // Acquire: pairs with the Release store in `Spiller::stop`.
                while !stop2.load(Ordering::Acquire) {
                    if let Some(shared) = weak.upgrade() {
                        if spill_pending(&shared, &mut writer) >= TRIM_AFTER {
                            give_back_freed_memory();
                        }
                    }
                    thread::park_timeout(IDLE);
                }
            })
            .map_err(|e| LogError::io("starting the index spill thread", None, e))?;
        let _ = shared.spiller.set(handle.thread().clone());
        Ok(Spiller {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Spiller {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load in the thread's loop.
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}
