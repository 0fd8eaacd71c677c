//! Durable consumer checkpoints, and the in-memory [`AckTracker`] that
//! computes them.
//!
//! A *checkpoint* is the last acknowledged global sequence of a named
//! consumer: every event with a global sequence `<=` the checkpoint is
//! consumed. Global sequences start at 1, so `0` means "nothing consumed".
//! A checkpoint never moves backwards except through an explicit
//! [`CheckpointStore::reset`].
//!
//! # Consumer names
//!
//! 1 to [`MAX_NAME_LEN`] (128) bytes, each one of `A-Z a-z 0-9 _ . -`.
//! Anything else is [`CheckpointError::InvalidName`]. The name is used as a
//! file name, so on a case-insensitive file system `Orders` and `orders`
//! would collide; Herald targets Linux, where they do not.
//!
//! # On-disk format
//!
//! The store is a directory (the broker passes `<data_dir>/consumers`) holding
//! one file per consumer, `<name>.ckpt`, of exactly [`FILE_LEN`] = 4128 bytes:
//! two 32-byte *slots*, slot 0 at offset 0 and slot 1 at offset
//! [`SLOT_STRIDE`] = 4096 (a different file-system block, so that writing one
//! slot never rewrites the block holding the other). Bytes between and after
//! the slots are zero. A slot, all integers little-endian:
//!
//! ```text
//! offset size field
//!      0    4 magic       b"HCKP"
//!      4    2 version     1
//!      6    2 flags       0
//!      8    8 generation  >= 1, +1 on every write of the file
//!     16    8 seq         the checkpoint
//!     24    4 crc         CRC32C(name bytes ++ slot bytes 0..24)
//!     28    4 reserved    0
//! ```
//!
//! An all-zero slot is *unwritten*. The CRC covers the consumer's name, so a
//! file copied or renamed to another consumer's name does not validate. The
//! current value is the valid slot with the highest generation.
//!
//! # Writing
//!
//! * **Creation** (first commit of a consumer, or the first after
//!   [`CheckpointStore::remove`]): the whole file is written to
//!   `<name>.ckpt.tmp`, fsynced, renamed to `<name>.ckpt`, and the directory is
//!   fsynced. This is always durable, whatever `sync` says. A `.ckpt` file
//!   therefore never exists half-written; leftover `.ckpt.tmp` files are
//!   deleted on open.
//! * **Update**: one 32-byte `pwrite` of a slot, followed by `fdatasync` if
//!   `sync`. The store remembers which slot holds the last *durable* value and
//!   always writes the other one, so a torn or lost unsynced write (power
//!   failure) can only damage the scratch slot; the durable one is rewritten
//!   only after the other has been synced. On open, every file is synced once,
//!   so what was read becomes the durable slot.
//!
//! # Guarantees
//!
//! After a process crash (`kill -9`) at any moment, reopening yields for every
//! consumer its latest committed value (the page cache survives). After a
//! power failure, it yields the latest value committed with `sync = true`
//! whose `commit` returned, or a later committed one. Never a value that was
//! not committed: every slot is CRC-checked.
//!
//! # Recovery
//!
//! [`CheckpointStore::open`] is strict: a `.ckpt` file with no valid slot, a
//! wrong length, or an invalid name is [`CheckpointError::Corrupt`] naming the
//! file. [`CheckpointStore::open_repair`] instead renames such files to
//! `<file>.corrupt` (kept for inspection, ignored afterwards), drops those
//! consumers, and lists them in its [`OpenReport`]. Other files in the
//! directory are ignored. Nothing on disk can make either panic.
//!
//! Only one process may use a store directory at a time; the broker holds the
//! data directory.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

/// The longest consumer name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The suffix of a checkpoint file.
const FILE_SUFFIX: &str = ".ckpt";
/// The suffix of a checkpoint file being created.
const TMP_SUFFIX: &str = ".ckpt.tmp";
/// The suffix given to a corrupt file by [`CheckpointStore::open_repair`].
const CORRUPT_SUFFIX: &str = ".corrupt";

const MAGIC: [u8; 4] = *b"HCKP";
const VERSION: u16 = 1;

const MAGIC_OFF: usize = 0;
const VERSION_OFF: usize = MAGIC_OFF + MAGIC.len();
const FLAGS_OFF: usize = VERSION_OFF + 2;
const GEN_OFF: usize = FLAGS_OFF + 2;
const SEQ_OFF: usize = GEN_OFF + 8;
const CRC_OFF: usize = SEQ_OFF + 8;
const RESERVED_OFF: usize = CRC_OFF + 4;
/// Bytes in one slot.
pub(crate) const SLOT_LEN: usize = RESERVED_OFF + 4;
/// Offset of slot 1 (slot 0 is at offset 0).
pub(crate) const SLOT_STRIDE: u64 = 4096;
/// The length of every checkpoint file.
pub(crate) const FILE_LEN: u64 = SLOT_STRIDE + SLOT_LEN as u64;

/// Everything that can go wrong with checkpoints.
#[derive(Debug)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The consumer name is not 1..=128 bytes of `[A-Za-z0-9_.-]`.
    InvalidName {
        /// The name (cut to 160 bytes).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An operating-system I/O call failed.
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A checkpoint file is not valid (found by the strict
    /// [`CheckpointStore::open`]).
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// [`CheckpointStore::commit`] was given a value below the stored one.
    /// Use [`CheckpointStore::reset`] to move a checkpoint backwards.
    Backwards {
        /// The consumer.
        name: String,
        /// The stored checkpoint.
        current: u64,
        /// The value passed to `commit`.
        requested: u64,
    },
    /// An fsync of this consumer's file failed earlier; the state of its
    /// unsynced data is unknown, so the store refuses further writes for it.
    /// Reopen the store to recover.
    Poisoned {
        /// The consumer.
        name: String,
    },
    /// [`CheckpointStore::advance`] of a consumer that has no checkpoint
    /// (never created, or removed).
    Unknown {
        /// The consumer.
        name: String,
    },
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::InvalidName { name, reason } => {
                write!(f, "invalid consumer name {name:?}: {reason}")
            }
            CheckpointError::Io {
                context,
                path,
                source,
            } => write!(f, "{context} ({}): {source}", path.display()),
            CheckpointError::Corrupt { path, reason } => {
                write!(f, "corrupt checkpoint file {}: {reason}", path.display())
            }
            CheckpointError::Backwards {
                name,
                current,
                requested,
            } => write!(
                f,
                "checkpoint of consumer {name:?} cannot move backwards from {current} to \
                 {requested} (use reset)"
            ),
            CheckpointError::Unknown { name } => {
                write!(f, "consumer {name:?} has no checkpoint")
            }
            CheckpointError::Poisoned { name } => write!(
                f,
                "an earlier fsync of consumer {name:?}'s checkpoint failed; reopen the store"
            ),
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err<'a>(
    context: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        context,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a consumer name: 1..=[`MAX_NAME_LEN`] bytes of `[A-Za-z0-9_.-]`.
pub fn validate_name(name: &str) -> Result<(), CheckpointError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_LEN {
        "longer than 128 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        "only A-Z a-z 0-9 _ . - are allowed"
    } else {
        return Ok(());
    };
    let mut cut = name.len().min(160);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    Err(CheckpointError::InvalidName {
        name: name[..cut].to_owned(),
        reason,
    })
}

fn encode_slot(name: &str, generation: u64, seq: u64) -> [u8; SLOT_LEN] {
    let mut s = [0u8; SLOT_LEN];
    s[MAGIC_OFF..VERSION_OFF].copy_from_slice(&MAGIC);
    s[VERSION_OFF..FLAGS_OFF].copy_from_slice(&VERSION.to_le_bytes());
    s[GEN_OFF..SEQ_OFF].copy_from_slice(&generation.to_le_bytes());
    s[SEQ_OFF..CRC_OFF].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(name.as_bytes()), &s[..CRC_OFF]);
    s[CRC_OFF..RESERVED_OFF].copy_from_slice(&crc.to_le_bytes());
    s
}

/// A decoded slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Unwritten,
    Valid { generation: u64, seq: u64 },
    Bad(&'static str),
}

fn u64_at(s: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[off..off + 8]);
    u64::from_le_bytes(b)
}

fn decode_slot(name: &str, s: &[u8]) -> Slot {
    if s.iter().all(|&b| b == 0) {
        return Slot::Unwritten;
    }
    if s[MAGIC_OFF..VERSION_OFF] != MAGIC {
        return Slot::Bad("bad magic");
    }
    let version = u16::from_le_bytes([s[VERSION_OFF], s[VERSION_OFF + 1]]);
    if version != VERSION {
        return Slot::Bad("unknown version");
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&s[CRC_OFF..RESERVED_OFF]);
    let want = crc32c::crc32c_append(crc32c::crc32c(name.as_bytes()), &s[..CRC_OFF]);
    if u32::from_le_bytes(crc) != want {
        return Slot::Bad("CRC mismatch");
    }
    if s[FLAGS_OFF..GEN_OFF] != [0, 0] || s[RESERVED_OFF..] != [0, 0, 0, 0] {
        return Slot::Bad("nonzero reserved bytes");
    }
    let generation = u64_at(s, GEN_OFF);
    if generation == 0 {
        return Slot::Bad("generation 0");
    }
    Slot::Valid {
        generation,
        seq: u64_at(s, SEQ_OFF),
    }
}

/// The state of one consumer's file.
#[derive(Debug)]
struct FileState {
    file: File,
    /// The latest value written.
    seq: u64,
    /// Its generation.
    generation: u64,
    /// The slot holding the latest value.
    cur_slot: u8,
    /// The slot holding the latest synced value; never overwritten until the
    /// other slot has been synced.
    durable_slot: u8,
    /// An fsync failed: refuse further writes.
    poisoned: bool,
}

#[derive(Debug, Default)]
struct Entry {
    /// `None`: not on disk (creation pending or failed).
    state: Option<FileState>,
    /// Removed from the map: a writer holding this entry must look again.
    removed: bool,
}

/// What [`CheckpointStore::open_repair`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) struct OpenReport {
    /// Consumers loaded.
    pub loaded: usize,
    /// Leftover `.ckpt.tmp` files of interrupted creations, deleted.
    pub removed_tmp: Vec<PathBuf>,
    /// Corrupt files: each one's original path, what was wrong, and the
    /// `.corrupt` path it was moved to. Those consumers are dropped.
    pub quarantined: Vec<(PathBuf, String, PathBuf)>,
}

/// Durable checkpoints of named consumers, one small file each (see the
/// module documentation for the format and guarantees).
///
/// Thread-safe: commits for different consumers proceed in parallel; commits
/// for one consumer are serialised.
#[derive(Debug)]
pub(crate) struct CheckpointStore {
    dir: PathBuf,
    entries: RwLock<HashMap<String, Arc<Mutex<Entry>>>>,
}

impl CheckpointStore {
    /// Opens (creating if needed) the store in `dir` and loads every
    /// checkpoint. Any corrupt checkpoint file is an error naming it.
    pub(crate) fn open(dir: &Path) -> Result<CheckpointStore, CheckpointError> {
        Self::open_inner(dir, false).map(|(s, _)| s)
    }

    /// Like [`open`](Self::open), but moves corrupt checkpoint files aside
    /// (renamed to `<file>.corrupt`), drops those consumers and reports them.
    #[cfg(test)]
    pub(crate) fn open_repair(
        dir: &Path,
    ) -> Result<(CheckpointStore, OpenReport), CheckpointError> {
        Self::open_inner(dir, true)
    }

    fn open_inner(
        dir: &Path,
        repair: bool,
    ) -> Result<(CheckpointStore, OpenReport), CheckpointError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io_err("create checkpoint directory", dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let mut report = OpenReport::default();
        let mut entries = HashMap::new();
        let mut files = Vec::new();
        for de in fs::read_dir(dir).map_err(io_err("read checkpoint directory", dir))? {
            let de = de.map_err(io_err("read checkpoint directory", dir))?;
            let Ok(fname) = de.file_name().into_string() else {
                continue;
            };
            files.push(fname);
        }
        files.sort();
        let mut dir_dirty = false;
        for fname in files {
            let path = dir.join(&fname);
            if fname.ends_with(TMP_SUFFIX) {
                fs::remove_file(&path).map_err(io_err("remove leftover checkpoint tmp", &path))?;
                report.removed_tmp.push(path);
                dir_dirty = true;
                continue;
            }
            let Some(name) = fname.strip_suffix(FILE_SUFFIX) else {
                continue;
            };
            let is_file = fs::symlink_metadata(&path)
                .map_err(io_err("stat checkpoint file", &path))?
                .file_type()
                .is_file();
            if !is_file {
                continue;
            }
            match load_file(name, &path)? {
                Ok(state) => {
                    entries.insert(
                        name.to_owned(),
                        Arc::new(Mutex::new(Entry {
                            state: Some(state),
                            removed: false,
                        })),
                    );
                }
                Err(reason) if repair => {
                    let mut aside = path.clone().into_os_string();
                    aside.push(CORRUPT_SUFFIX);
                    let aside = PathBuf::from(aside);
                    fs::rename(&path, &aside)
                        .map_err(io_err("move corrupt checkpoint aside", &path))?;
                    dir_dirty = true;
                    report.quarantined.push((path, reason, aside));
                }
                Err(reason) => return Err(CheckpointError::Corrupt { path, reason }),
            }
        }
        if dir_dirty {
            sync_dir(dir)?;
        }
        report.loaded = entries.len();
        Ok((
            CheckpointStore {
                dir: dir.to_path_buf(),
                entries: RwLock::new(entries),
            },
            report,
        ))
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{FILE_SUFFIX}"))
    }

    fn entry(&self, name: &str) -> Option<Arc<Mutex<Entry>>> {
        self.entries.read().get(name).cloned()
    }

    /// The checkpoint of consumer `name`, if it has one (`None` also for an
    /// invalid name).
    pub(crate) fn get(&self, name: &str) -> Option<u64> {
        let e = self.entry(name)?;
        let g = e.lock();
        g.state.as_ref().map(|s| s.seq)
    }

    /// The names of all consumers with a checkpoint, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let map = self.entries.read();
        let mut v: Vec<String> = map
            .iter()
            .filter(|(_, e)| e.lock().state.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// The number of consumers with a checkpoint.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let map = self.entries.read();
        map.values().filter(|e| e.lock().state.is_some()).count()
    }

    /// Whether no consumer has a checkpoint.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `seq` as consumer `name`'s checkpoint ("every event `<= seq` is
    /// consumed"). With `sync`, the value is on stable storage when this
    /// returns `Ok`; without, it survives a process crash but maybe not a
    /// power failure (an earlier value is then found). A consumer's first
    /// commit is always synced.
    ///
    /// Committing the current value again is a no-op (plus an fsync if `sync`
    /// and the value was not synced yet). A smaller value is
    /// [`CheckpointError::Backwards`].
    pub(crate) fn commit(&self, name: &str, seq: u64, sync: bool) -> Result<(), CheckpointError> {
        self.write(name, seq, sync, false, true)
    }

    /// [`commit`](Self::commit) to an existing checkpoint only: a consumer
    /// without one (never created, or removed, even concurrently) is
    /// [`CheckpointError::Unknown`], and is not brought back.
    pub(crate) fn advance(&self, name: &str, seq: u64, sync: bool) -> Result<(), CheckpointError> {
        self.write(name, seq, sync, false, false)
    }

    /// Sets consumer `name`'s checkpoint to `seq`, even backwards (to replay
    /// again). Always synced. Creates the consumer if it has no checkpoint.
    pub(crate) fn reset(&self, name: &str, seq: u64) -> Result<(), CheckpointError> {
        self.write(name, seq, true, true, true)
    }

    fn write(
        &self,
        name: &str,
        seq: u64,
        sync: bool,
        reset: bool,
        create: bool,
    ) -> Result<(), CheckpointError> {
        validate_name(name)?;
        let path = self.path_of(name);
        let unknown = || CheckpointError::Unknown {
            name: name.to_owned(),
        };
        loop {
            let e = match self.entry(name) {
                Some(e) => e,
                None if !create => return Err(unknown()),
                None => self
                    .entries
                    .write()
                    .entry(name.to_owned())
                    .or_default()
                    .clone(),
            };
            let mut g = e.lock();
            if g.removed {
                // `remove` took it out of the map meanwhile; look again.
                continue;
            }
            let Some(st) = g.state.as_mut() else {
                if !create {
                    return Err(unknown());
                }
                g.state = Some(self.create(name, &path, seq)?);
                return Ok(());
            };
            if st.poisoned {
                return Err(CheckpointError::Poisoned {
                    name: name.to_owned(),
                });
            }
            if !reset && seq < st.seq {
                return Err(CheckpointError::Backwards {
                    name: name.to_owned(),
                    current: st.seq,
                    requested: seq,
                });
            }
            if seq == st.seq && !reset {
                if sync && st.cur_slot != st.durable_slot {
                    sync_state(st, &path)?;
                }
                return Ok(());
            }
            let target = st.durable_slot ^ 1;
            let generation = st.generation + 1;
            let bytes = encode_slot(name, generation, seq);
            st.file
                .write_all_at(&bytes, u64::from(target) * SLOT_STRIDE)
                .map_err(io_err("write checkpoint", &path))?;
            st.seq = seq;
            st.generation = generation;
            st.cur_slot = target;
            if sync {
                sync_state(st, &path)?;
            }
            return Ok(());
        }
    }

    /// Writes a new file holding `seq` in slot 0: tmp, fsync, rename, fsync dir.
    fn create(&self, name: &str, path: &Path, seq: u64) -> Result<FileState, CheckpointError> {
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let mut buf = vec![0u8; FILE_LEN as usize];
        buf[..SLOT_LEN].copy_from_slice(&encode_slot(name, 1, seq));
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create checkpoint tmp", &tmp))?;
        f.write_all(&buf)
            .map_err(io_err("write checkpoint tmp", &tmp))?;
        f.sync_all().map_err(io_err("sync checkpoint tmp", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename checkpoint tmp", &tmp))?;
        sync_dir(&self.dir)?;
        Ok(FileState {
            file: f,
            seq,
            generation: 1,
            cur_slot: 0,
            durable_slot: 0,
            poisoned: false,
        })
    }

    /// Deletes consumer `name`'s checkpoint (durably) and returns it.
    pub(crate) fn remove(&self, name: &str) -> Result<Option<u64>, CheckpointError> {
        validate_name(name)?;
        // Hold the map lock throughout, so that no new file for `name` can be
        // created before the old one is unlinked.
        let mut map = self.entries.write();
        let Some(e) = map.remove(name) else {
            return Ok(None);
        };
        let mut g = e.lock();
        g.removed = true;
        let Some(st) = g.state.take() else {
            return Ok(None);
        };
        let path = self.path_of(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                // Keep the consumer: the file is still there.
                g.state = Some(st);
                g.removed = false;
                drop(g);
                map.insert(name.to_owned(), e.clone());
                return Err(io_err("remove checkpoint", &path)(err));
            }
        }
        sync_dir(&self.dir)?;
        Ok(Some(st.seq))
    }
}

fn sync_state(st: &mut FileState, path: &Path) -> Result<(), CheckpointError> {
    match st.file.sync_data() {
        Ok(()) => {
            st.durable_slot = st.cur_slot;
            Ok(())
        }
        Err(source) => {
            st.poisoned = true;
            Err(CheckpointError::Io {
                context: "sync checkpoint",
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync checkpoint directory", dir))
}

/// Loads one checkpoint file: `Ok(Err(reason))` if it is corrupt.
fn load_file(name: &str, path: &Path) -> Result<Result<FileState, String>, CheckpointError> {
    if let Err(e) = validate_name(name) {
        return Ok(Err(format!("file name is not a consumer name: {e}")));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open checkpoint", path))?;
    let len = file
        .metadata()
        .map_err(io_err("stat checkpoint", path))?
        .len();
    if len != FILE_LEN {
        return Ok(Err(format!("length {len}, expected {FILE_LEN}")));
    }
    let mut buf = vec![0u8; FILE_LEN as usize];
    file.read_exact(&mut buf)
        .map_err(io_err("read checkpoint", path))?;
    let s0 = decode_slot(name, &buf[..SLOT_LEN]);
    let s1 = decode_slot(name, &buf[SLOT_STRIDE as usize..]);
    let (slot, generation, seq) = match (s0, s1) {
        (
            Slot::Valid {
                generation: g0,
                seq: q0,
            },
            Slot::Valid {
                generation: g1,
                seq: q1,
            },
        ) => {
            if g0 == g1 {
                return Ok(Err(format!("both slots have generation {g0}")));
            }
            if g0 > g1 {
                (0, g0, q0)
            } else {
                (1, g1, q1)
            }
        }
        (Slot::Valid { generation, seq }, _) => (0, generation, seq),
        (_, Slot::Valid { generation, seq }) => (1, generation, seq),
        (a, b) => {
            let why = |s: Slot| match s {
                Slot::Unwritten => "unwritten",
                Slot::Bad(r) => r,
                Slot::Valid { .. } => "valid",
            };
            return Ok(Err(format!(
                "no valid slot (slot 0: {}, slot 1: {})",
                why(a),
                why(b)
            )));
        }
    };
    // What was read may still be only in the page cache of a crashed
    // predecessor: make it durable before it becomes the slot never
    // overwritten.
    file.sync_data().map_err(io_err("sync checkpoint", path))?;
    Ok(Ok(FileState {
        file,
        seq,
        generation,
        cur_slot: slot,
        durable_slot: slot,
        poisoned: false,
    }))
}

/// Why [`AckTracker`] refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckError {
    /// The acknowledged sequence was never delivered to this consumer (and is
    /// above its checkpoint).
    NotDelivered(u64),
    /// [`AckTracker::delivered`] was given a sequence not above the last
    /// delivered one (or the checkpoint).
    NotIncreasing {
        /// The sequence passed.
        seq: u64,
        /// The last delivered sequence (or the checkpoint).
        last: u64,
    },
    /// [`Broker::ack_consumer`](crate::Broker::ack_consumer) past the last
    /// published event: it would skip events not yet published.
    PastEnd {
        /// The sequence passed.
        seq: u64,
        /// The last published sequence.
        last: u64,
    },
    /// [`Broker::ack_consumer`](crate::Broker::ack_consumer) below the
    /// consumer's checkpoint, which stays where it is.
    Backwards {
        /// The sequence passed.
        seq: u64,
        /// The consumer's checkpoint.
        checkpoint: u64,
    },
    /// [`Broker::ack_consumer_events`](crate::Broker::ack_consumer_events)
    /// would keep more acknowledgements above the checkpoint than allowed:
    /// the event at the checkpoint must be acknowledged first.
    TooManyPending {
        /// The bound.
        max: usize,
    },
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::NotDelivered(seq) => write!(f, "event {seq} was not delivered"),
            AckError::NotIncreasing { seq, last } => write!(
                f,
                "delivered event {seq} is not after the last delivered or acknowledged {last}"
            ),
            AckError::PastEnd { seq, last } => {
                write!(f, "{seq} is past the last published event ({last})")
            }
            AckError::Backwards { seq, checkpoint } => write!(
                f,
                "{seq} is below the consumer's checkpoint, which stays at {checkpoint}"
            ),
            AckError::TooManyPending { max } => write!(
                f,
                "more than {max} acknowledged events would wait above the checkpoint: acknowledge the oldest event first"
            ),
        }
    }
}

impl std::error::Error for AckError {}

/// Tracks the events delivered to one consumer and its acknowledgements, and
/// computes its checkpoint. Pure and in memory; the broker keeps one per
/// subscribed durable consumer and [commits](CheckpointStore::commit) the
/// checkpoint when it advances.
///
/// Delivered sequences are global sequences, increasing but not dense (a
/// filtered consumer sees a subset). The checkpoint is the highest *delivered*
/// sequence such that every delivered sequence `<=` it is acknowledged (or the
/// initial checkpoint). It never passes an undelivered sequence beyond the
/// last delivered one, so an event still in flight is never counted as
/// consumed. Acknowledging anything `<=` the checkpoint is a no-op.
///
/// Memory: one 16-byte entry per delivered event above the checkpoint. A
/// consumer that acknowledges in order keeps it near empty; the broker bounds
/// the rest with [`unacked`](Self::unacked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckTracker {
    checkpoint: u64,
    last_delivered: u64,
    /// Delivered sequences above the checkpoint, increasing, with their acked
    /// flag. The front, if any, is not acked.
    pending: VecDeque<(u64, bool)>,
    unacked: usize,
}

impl AckTracker {
    /// A tracker whose checkpoint is `initial` (0: nothing consumed).
    pub(crate) fn new(initial: u64) -> AckTracker {
        AckTracker {
            checkpoint: initial,
            last_delivered: initial,
            pending: VecDeque::new(),
            unacked: 0,
        }
    }

    /// The checkpoint: every delivered event `<=` it is acknowledged.
    pub(crate) fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// The last delivered sequence (or the initial checkpoint).
    #[cfg(test)]
    pub(crate) fn last_delivered(&self) -> u64 {
        self.last_delivered
    }

    /// Delivered events not acknowledged yet.
    #[cfg(test)]
    pub(crate) fn unacked(&self) -> usize {
        self.unacked
    }

    /// Records that event `seq` was delivered. It must be above every
    /// sequence delivered before and above the checkpoint.
    pub(crate) fn delivered(&mut self, seq: u64) -> Result<(), AckError> {
        if seq <= self.last_delivered {
            return Err(AckError::NotIncreasing {
                seq,
                last: self.last_delivered,
            });
        }
        self.last_delivered = seq;
        self.pending.push_back((seq, false));
        self.unacked += 1;
        Ok(())
    }

    /// Acknowledges delivered event `seq`. Returns the new checkpoint if it
    /// advanced. Idempotent; `seq <= checkpoint` is `Ok(None)`.
    pub(crate) fn ack(&mut self, seq: u64) -> Result<Option<u64>, AckError> {
        if seq <= self.checkpoint {
            return Ok(None);
        }
        let i = self
            .pending
            .binary_search_by_key(&seq, |&(s, _)| s)
            .map_err(|_| AckError::NotDelivered(seq))?;
        if !self.pending[i].1 {
            self.pending[i].1 = true;
            self.unacked -= 1;
        }
        Ok(self.advance())
    }

    /// Acknowledges every delivered event `<= seq`. Returns the new checkpoint
    /// if it advanced.
    pub(crate) fn ack_up_to(&mut self, seq: u64) -> Option<u64> {
        let old = self.checkpoint;
        while let Some(&(s, acked)) = self.pending.front() {
            if s > seq {
                break;
            }
            if !acked {
                self.unacked -= 1;
            }
            self.checkpoint = s;
            self.pending.pop_front();
        }
        self.advance();
        (self.checkpoint != old).then_some(self.checkpoint)
    }

    /// Pops acknowledged events off the front; `Some(checkpoint)` if any.
    fn advance(&mut self) -> Option<u64> {
        let mut moved = false;
        while let Some(&(s, true)) = self.pending.front() {
            self.checkpoint = s;
            self.pending.pop_front();
            moved = true;
        }
        moved.then_some(self.checkpoint)
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
