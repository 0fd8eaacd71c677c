//! `herald-bench` against a real `herald serve`: every event published
//! reaches both subscribers once, the JSON report parses, `--plot` writes a
//! PNG.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_benches::ws::free_port;

/// The workspace's `herald` binary (release if built, else debug, built
/// now if missing: the test needs a real server).
fn herald_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    for profile in ["release", "debug"] {
        let bin = target.join(profile).join("herald");
        if bin.exists() {
            return bin;
        }
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "herald-server", "--bin", "herald"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "cannot build herald");
    target.join("debug/herald")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ready(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

#[test]
fn herald_bench_counts_every_delivery_and_plots() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _server = Server(
        Command::new(herald_binary())
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data")
            .arg(dir.path().join("data"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start herald serve"),
    );
    let t = Instant::now();
    while !ready(addr) {
        assert!(t.elapsed() < Duration::from_secs(20), "herald not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let png = dir.path().join("latency.png");
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args(["--url", &format!("http://{addr}")])
        .args([
            "--subs",
            "2",
            "--pubs",
            "1",
            "--rate",
            "2000",
            "--duration",
            "2",
        ])
        .arg("--json")
        .arg("--plot")
        .arg(&png)
        .output()
        .expect("run herald-bench");
    assert!(
        out.status.success(),
        "herald-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert!(n("published") > 3_000, "{r}");
    assert_eq!(n("published"), n("sent"), "{r}");
    assert_eq!(n("delivered"), n("published") * 2, "{r}");
    assert_eq!(n("lost"), 0, "{r}");
    assert_eq!(n("duplicates"), 0, "{r}");
    assert_eq!(n("connection_errors"), 0, "{r}");
    assert!(r["latency"]["p99_ns"].as_u64().unwrap_or(0) > 0, "{r}");
    // The split at the server's timestamp covers every measured delivery,
    // and its halves add up to no more than the whole (the median of a sum
    // is at least the larger median of its parts, within a histogram step).
    let at = |part: &str, k: &str| {
        r[part][k]
            .as_u64()
            .unwrap_or_else(|| panic!("{part}.{k} in {r}"))
    };
    assert_eq!(at("ingress", "samples"), at("latency", "samples"), "{r}");
    assert_eq!(at("egress", "samples"), at("latency", "samples"), "{r}");
    let larger = at("ingress", "p50_ns").max(at("egress", "p50_ns"));
    assert!(larger <= at("latency", "p50_ns") * 101 / 100 + 1_000, "{r}");
    let image = std::fs::read(&png).expect("--plot wrote no file");
    assert!(image.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
}
