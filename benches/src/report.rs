//! What every benchmark table states beside its figures: the machine, the
//! versions measured, and numbers formatted the same way everywhere.

use std::fs;
use std::process::Command;

/// The workspace's `Cargo.lock`, read at build time so that the versions
/// printed are the versions compiled in.
const CARGO_LOCK: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"));

/// The version of `name` in the workspace's `Cargo.lock` (the first entry if
/// several versions are locked).
pub fn locked_version(name: &str) -> Option<&'static str> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = CARGO_LOCK.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim();
            return version.strip_prefix("version = \"")?.strip_suffix('"');
        }
    }
    None
}

/// One line describing the machine: CPU model, cores, memory, kernel.
pub fn machine_description() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let clock =
        fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    format!(
        "{model}, {cores} cores available, {mem_gib:.0} GiB RAM, Linux {}, clocksource {}",
        kernel.trim(),
        clock.trim()
    )
}

/// `rustc --version` and the short git revision of the working tree (flagged
/// if the ring or the benches have uncommitted changes), when they can be
/// found.
pub fn toolchain_and_revision() -> String {
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rustc = run("rustc", &["--version"]).unwrap_or_else(|| "rustc (unknown)".into());
    let rev = run("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Only the files this benchmark compiles from.
    let paths = [
        "core/src/ring",
        "core/src/sync.rs",
        "benches",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
    ];
    let mut args = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    args.extend(paths);
    let dirty = run("git", &args).is_some_and(|s| !s.is_empty());
    format!(
        "{rustc}, herald at git {rev}{}",
        if dirty {
            " (+ uncommitted changes to the ring or benches)"
        } else {
            ""
        }
    )
}

/// The median of `values` (the mean of the middle two for an even count);
/// NaN for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// A duration in nanoseconds, with a unit that keeps 3 significant digits.
pub fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        return "–".into();
    }
    let (v, unit) = if ns < 1e3 {
        return format!("{ns:.0} ns");
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    if v < 10.0 {
        format!("{v:.2} {unit}")
    } else if v < 100.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

/// A rate per second, e.g. `12.3 M/s`.
pub fn fmt_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() {
        "–".into()
    } else if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1} k/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0} /s")
    }
}

/// A ratio, e.g. `2.31×`.
pub fn fmt_ratio(ratio: f64) -> String {
    if !ratio.is_finite() {
        "–".into()
    } else if ratio >= 100.0 {
        format!("{ratio:.0}×")
    } else if ratio >= 10.0 {
        format!("{ratio:.1}×")
    } else if ratio >= 0.1 || ratio == 0.0 {
        format!("{ratio:.2}×")
    } else {
        // Two significant digits, however small.
        let digits = (-ratio.log10()).ceil() as usize + 1;
        format!("{ratio:.digits$}×")
    }
}

/// Whole-machine CPU ticks from `/proc/stat`, over all cores: (busy, total).
/// Busy counts user, nice, system, irq, softirq and steal; total adds idle
/// and iowait.
pub fn machine_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| cpu.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    (busy, busy + at(3) + at(4))
}

/// Measures how busy the machine was with *other* processes while a
/// benchmark ran: all CPU time the kernel accounted (including steal) minus
/// this process's own, as a fraction of the cores' wall time.
#[derive(Debug)]
pub struct CpuMeter {
    start: (u64, u64, u64),
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start() -> Self {
        CpuMeter {
            start: Self::sample(),
        }
    }

    /// The fraction (0..=1) of all cores' time spent on other processes since
    /// [`start`](Self::start); `None` where `/proc` cannot tell.
    pub fn others_busy(&self) -> Option<f64> {
        let (busy0, total0, own0) = self.start;
        let (busy1, total1, own1) = Self::sample();
        if total1 <= total0 {
            return None;
        }
        let others = (busy1 - busy0).saturating_sub(own1 - own0);
        Some(others as f64 / (total1 - total0) as f64)
    }

    /// (busy ticks, total ticks over all cores, this process's ticks).
    fn sample() -> (u64, u64, u64) {
        let (busy, total) = machine_ticks();
        (busy, total, proc_ticks("self"))
    }
}

/// User + system CPU ticks of process `pid` (`"self"` for this one) from
/// `/proc/<pid>/stat`, all threads; 0 if it cannot be read.
pub fn proc_ticks(pid: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (in parentheses): utime and stime
            // are fields 14 and 15, tokens 11 and 12 after the name.
            let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `RssFile`, …)
/// in KiB; `None` if the process or the field is gone.
pub fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident KiB of process `pid`'s mappings of files under `dir` (from
/// `/proc/<pid>/smaps`); `None` if it cannot be read.
pub fn proc_mapped_rss_kib(pid: &str, dir: &str) -> Option<u64> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping's header: range, perms, offset, device, inode, path.
            inside = words.nth(4).is_some_and(|path| path.starts_with(dir));
        } else if inside && first == "Rss:" {
            kib += words.next()?.parse::<u64>().ok()?;
        }
    }
    Some(kib)
}

/// Open descriptors of process `pid` from `/proc/<pid>/fd`: (all, sockets);
/// `None` if the directory cannot be read.
pub fn proc_fds(pid: &str) -> Option<(usize, usize)> {
    let dir = format!("/proc/{pid}/fd");
    let (mut all, mut sockets) = (0, 0);
    for entry in fs::read_dir(&dir).ok()?.flatten() {
        all += 1;
        // A descriptor closed since read_dir listed it has no link: not counted as a socket.
        if fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    Some((all, sockets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_versions_come_from_the_lock_file() {
        for peer in [
            "tokio",
            "bus",
            "disruptor",
            "crossbeam-channel",
            "hdrhistogram",
        ] {
            assert!(
                locked_version(peer).is_some_and(|v| v.chars().next().unwrap().is_ascii_digit()),
                "{peer}"
            );
        }
        assert_eq!(locked_version("no-such-crate"), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn proc_readers_read_this_process() {
        assert!(proc_status_kib("self", "VmRSS").is_some_and(|k| k > 0));
        assert_eq!(proc_status_kib("self", "NoSuchField"), None);
        let (all, sockets) = proc_fds("self").unwrap();
        assert!(all >= 3 && sockets <= all);
        assert!(proc_ticks("self") < u64::MAX);
        // This test's binary is mapped; nothing is mapped from a directory that does not exist.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().to_string_lossy().to_string();
        assert!(proc_mapped_rss_kib("self", &dir).is_some_and(|k| k > 0));
        assert_eq!(proc_mapped_rss_kib("self", "/no/such/dir"), Some(0));
    }

    #[test]
    fn formatting_picks_units() {
        assert_eq!(fmt_ns(850.0), "850 ns");
        assert_eq!(fmt_ns(12_345.0), "12.3 µs");
        assert_eq!(fmt_ns(4_100_000.0), "4.10 ms");
        assert_eq!(fmt_rate(12_340_000.0), "12.34 M/s");
        assert_eq!(fmt_ratio(2.314), "2.31×");
        assert_eq!(fmt_ratio(0.0012), "0.0012×");
        assert_eq!(fmt_ratio(0.05), "0.050×");
    }
}
