//! Formatting of the report and facts about the build and the machine.

use std::fs;
use std::process::Command;

use herald_benches::report::median;

/// `median (min–max)` of `values` formatted by `f`.
pub(crate) fn spread(values: &[f64], f: impl Fn(f64) -> String) -> String {
    let m = median(values);
    if values.len() < 2 {
        return f(m);
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} ({}–{})", f(m), f(lo), f(hi))
}

pub(crate) fn fmt_bytes(b: f64) -> String {
    if !b.is_finite() {
        "–".into()
    } else if b >= 10.0 * 1024.0 * 1024.0 {
        format!("{:.0} MiB", b / (1024.0 * 1024.0))
    } else if b >= 10_240.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

pub(crate) fn version_of(cmd: &std::path::Path, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn git(args: &[&str]) -> String {
    Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Whether a source file under `server/src` or `core/src` is newer than
/// `binary`.
pub(crate) fn binary_is_stale(binary: &std::path::Path) -> bool {
    fn newest(dir: &std::path::Path) -> Option<std::time::SystemTime> {
        let mut best = None;
        for entry in fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let t = if path.is_dir() {
                newest(&path)
            } else {
                entry.metadata().and_then(|m| m.modified()).ok()
            };
            best = best.max(t);
        }
        best
    }
    let Ok(built) = fs::metadata(binary).and_then(|m| m.modified()) else {
        return false;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["server/src", "core/src"]
        .iter()
        .filter_map(|d| newest(&root.join(d)))
        .any(|t| t > built)
}

pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn yes(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}
