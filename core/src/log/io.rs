//! The I/O seam: every file-system call the log makes that can fail goes
//! through [`LogIo`], so tests can inject failures (fail the Nth sync, the Nth
//! segment creation, ...). Writes themselves are `memcpy`s into a mapping and
//! cannot fail; the calls that can are creating/preallocating a segment,
//! syncing, and removing. The clock used by retention is injectable too.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::MmapRaw;

/// The fallible file-system operations of the log.
pub trait LogIo: Send + Sync + fmt::Debug {
    /// Creates `path` (which must not exist), preallocates it to `len` zero
    /// bytes and writes `header` at offset 0. The file is not synced.
    fn create_segment(&self, path: &Path, len: u64, header: &[u8]) -> io::Result<File> {
        StdIo.create_segment(path, len, header)
    }
    /// Makes bytes `offset..offset+len` of a mapped segment durable (`msync`).
    fn sync_range(&self, map: &MmapRaw, offset: usize, len: usize) -> io::Result<()> {
        StdIo.sync_range(map, offset, len)
    }
    /// Starts writing back bytes `offset..offset+len` of a file without
    /// waiting for them (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`);
    /// makes nothing durable. Where there is no such call, does nothing.
    fn start_writeback(&self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        StdIo.start_writeback(file, offset, len)
    }
    /// `fsync`s a file (data and metadata).
    fn sync_file(&self, file: &File) -> io::Result<()> {
        StdIo.sync_file(file)
    }
    /// `fsync`s a directory, making creations, renames and removals durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdIo.sync_dir(dir)
    }
    /// Renames a file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdIo.rename(from, to)
    }
    /// Removes a segment file.
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdIo.remove(path)
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdIo;

impl LogIo for StdIo {
    fn create_segment(&self, path: &Path, len: u64, header: &[u8]) -> io::Result<File> {
        use std::os::unix::fs::FileExt;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        preallocate(&file, len)?;
        file.write_all_at(header, 0)?;
        Ok(file)
    }
    fn sync_range(&self, map: &MmapRaw, offset: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        map.flush_range(offset, len)
    }
    fn start_writeback(&self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            };
            // SAFETY: a plain system call on an open descriptor; it reads no
            // memory of ours.
            let rc = unsafe {
                libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (file, offset, len);
        Ok(())
    }
    fn sync_file(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

/// Sets the file length to `len` and reserves its blocks, so that a later
/// store into the mapping cannot hit `SIGBUS` on a full disk.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    file.set_len(len)?;
    let off_len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `posix_fallocate` only reads its integer arguments; the fd is
    // open and owned by `file` for the duration of the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off_len) };
    match rc {
        0 => Ok(()),
        // File systems without fallocate: the file is already `len` long (sparse).
        libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Runs `op` over `from..to` a piece at a time, pieces ending on multiples
/// of `piece`, and yields the core between pieces; stops at the first
/// error. For the log's background work whose kernel side runs for
/// milliseconds (populating pages, starting write-back): the scheduler let
/// such a call run to its end while a worker that woke on the same core
/// waited for it.
pub(crate) fn in_pieces<E>(
    from: u64,
    to: u64,
    piece: u64,
    mut op: impl FnMut(u64, u64) -> Result<(), E>,
) -> Result<(), E> {
    let mut at = from;
    while at < to {
        let end = ((at / piece + 1) * piece).min(to);
        op(at, end - at)?;
        at = end;
        if at < to {
            std::thread::yield_now();
        }
    }
    Ok(())
}

/// Wall-clock time for retention by age.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Nanoseconds since the Unix epoch.
    fn now_ns(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
}
