//! What writing a growing file through a mapping costs on this machine,
//! and what it does to other processes: writes through a shared file
//! mapping at a steady rate, a MiB at a time, the way the log's appender
//! and prefault thread do.
//!
//! ```sh
//! cargo run --release -p herald-benches --bin page_churn -- --mode fresh --mib-per-s 33 --seconds 60
//! ```
//!
//! `--mode fresh`: every 64 MiB file is new, so every page written is a page
//! the kernel has to find and zero (as for a log that grows); the files are
//! removed 32 behind to bound the disk used. `--mode reuse`: the same 64 MiB
//! file over and over, whose pages stay in the page cache (the same writes,
//! no new pages). `--advice random` marks each mapping `MADV_RANDOM` first
//! (no readahead on its faults), as the log does with the part of a segment
//! it has yet to write; the default is the kernel's normal advice. The files
//! go in a scratch directory under `--dir` (default: the current one).
//!
//! Each file's line gives the time its MiB steps took (the step's writes,
//! not the pacing sleep): total, median and maximum, and the slowest step's
//! CPU time and page faults. Run it next to a benchmark (`server_bench`,
//! say) to see what the churn does to a process that writes no such file.

use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const FILE: usize = 64 << 20;
const STEP: usize = 1 << 20;
const KEEP: usize = 32;

fn main() {
    let mut fresh = true;
    let mut rate = 33.0f64;
    let mut seconds = f64::INFINITY;
    let mut dir: Option<PathBuf> = None;
    let mut advice = libc::MADV_NORMAL;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&a));
        match a.as_str() {
            "--mode" => match value().as_str() {
                "fresh" => fresh = true,
                "reuse" => fresh = false,
                _ => usage("--mode"),
            },
            "--mib-per-s" => rate = value().parse().unwrap_or_else(|_| usage("--mib-per-s")),
            "--seconds" => seconds = value().parse().unwrap_or_else(|_| usage("--seconds")),
            "--dir" => dir = Some(value().into()),
            "--advice" => match value().as_str() {
                "normal" => advice = libc::MADV_NORMAL,
                "random" => advice = libc::MADV_RANDOM,
                _ => usage("--advice"),
            },
            _ => usage(&a),
        }
    }
    // The current directory by default, not the temporary one: that may be
    // a tmpfs, whose pages are memory with no readahead to measure.
    let tmp = tempfile::tempdir_in(dir.unwrap_or_else(|| PathBuf::from(".")))
        .expect("a scratch directory");
    let start = Instant::now();
    let mut steps = 0u64;
    for n in 0.. {
        let path = tmp
            .path()
            .join(format!("{}.seg", if fresh { n } else { 0 }));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("a scratch file");
        file.set_len(FILE as u64).expect("sizing the scratch file");
        // SAFETY: a fresh shared mapping of FILE bytes of a file this
        // process alone uses; no Rust reference points into it, and it is
        // unmapped below before the file goes.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                FILE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "mapping the scratch file");
        // SAFETY: advice over the mapping made above; neither changes its
        // contents.
        let advised = unsafe { libc::madvise(map, FILE, advice) };
        assert_eq!(advised, 0, "madvise: {}", std::io::Error::last_os_error());
        let mut took = Vec::with_capacity(FILE / STEP);
        // The slowest step: its wall time, CPU time and page faults.
        let mut slowest = (Duration::ZERO, Duration::ZERO, 0);
        for at in (0..FILE).step_by(STEP) {
            let (cpu0, faults0) = thread_usage();
            let t = Instant::now();
            // SAFETY: `at + STEP <= FILE`, inside the mapping made above.
            unsafe { std::ptr::write_bytes(map.cast::<u8>().add(at), steps as u8, STEP) };
            let wall = t.elapsed();
            let (cpu1, faults1) = thread_usage();
            if wall > slowest.0 {
                slowest = (wall, cpu1.saturating_sub(cpu0), faults1 - faults0);
            }
            took.push(wall);
            steps += 1;
            let due = Duration::from_secs_f64(steps as f64 / rate);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            if start.elapsed().as_secs_f64() >= seconds {
                break;
            }
        }
        // SAFETY: the mapping made above, of FILE bytes, no longer used.
        unsafe { libc::munmap(map, FILE) };
        took.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "file {n}: {} MiB written in {:.1} ms (steps: median {:.2} ms, max {:.2} ms: \
             {:.2} ms on CPU, {} page faults)",
            took.len(),
            ms(took.iter().sum()),
            ms(took[took.len() / 2]),
            ms(slowest.0),
            ms(slowest.1),
            slowest.2,
        );
        if fresh && n >= KEEP {
            let _ = fs::remove_file(tmp.path().join(format!("{}.seg", n - KEEP)));
        }
        if start.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
}

/// The calling thread's CPU time (user and system) and page faults.
fn thread_usage() -> (Duration, i64) {
    // SAFETY: all-zero is a valid `rusage`, which getrusage then fills.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    (t(ru.ru_utime) + t(ru.ru_stime), ru.ru_minflt + ru.ru_majflt)
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "page_churn: bad or missing value for {flag}\n\
         usage: page_churn [--mode fresh|reuse] [--advice normal|random] [--mib-per-s N] [--seconds S] [--dir DIR]"
    );
    std::process::exit(2);
}
