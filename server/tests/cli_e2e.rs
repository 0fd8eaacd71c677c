//! The `herald` binary end to end: `serve` (from a TOML file), `pub`, `sub`,
//! `token`, `log verify`, and a graceful stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, listening, KillOnDrop};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

#[test]
fn serve_pub_sub_verify_and_stop_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\ndata = \"{}\"\nworkers = 1\ndurability = \"never\"\nsegment_size = 1048576\nmax_payload = 65536\n", dir.path().join("data").display()),
    )
    .unwrap();
    let mut guard = KillOnDrop(Some(
        Command::new(HERALD)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !listening(("127.0.0.1", port)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 1..=3 {
        let out = Command::new(HERALD)
            .args([
                "pub",
                "--url",
                &url,
                "cli.test",
                "tick",
                &format!("{{\"n\":{i}}}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("\"topic_seq\":{i}")));
    }
    let bad = Command::new(HERALD)
        .args(["pub", "--url", &url, "bad topic", "tick"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let mut sub = Command::new(HERALD)
        .args(["sub", "--url", &url, "--after", "1", "cli.test"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "2 tick {\"n\":2}");
    assert_eq!(lines.next().unwrap().unwrap(), "3 tick {\"n\":3}");
    sub.kill().unwrap();
    sub.wait().unwrap();
    // SIGTERM: a graceful stop that flushes the log.
    let mut server = guard.0.take().unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert!(
        server.wait().unwrap().success(),
        "graceful shutdown exits 0"
    );
    let verify = Command::new(HERALD)
        .args(["log", "verify"])
        .arg(dir.path().join("data/log"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(String::from_utf8_lossy(&verify.stdout).contains("3 records"));
}

#[test]
fn token_minting_and_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let out = Command::new(HERALD)
        .args([
            "token",
            "--tenant",
            "acme",
            "--publish",
            "orders.*",
            "--secret-file",
        ])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split('.')
            .count(),
        3,
        "a JWT"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listn = 1\n").unwrap();
    let out = Command::new(HERALD)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
    // Anonymous access off loopback is refused.
    let out = Command::new(HERALD)
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// Starts `herald serve` on `port` with its data in `data`.
fn serve(port: u16, data: &std::path::Path, log: std::fs::File) -> KillOnDrop {
    let child = Command::new(HERALD)
        .args(["serve", "--workers", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data)
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !listening(("127.0.0.1", port)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    KillOnDrop(Some(child))
}

fn publish(url: &str, n: u32) {
    let out = Command::new(HERALD)
        .args(["pub", "--url", url, "cli.resume", "tick"])
        .arg(format!("{{\"n\":{n}}}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sub_reconnects_and_resumes_exactly_once_across_a_server_kill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let log = || std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut server = serve(port, &data, log());
    publish(&url, 1);
    let mut sub = KillOnDrop(Some(
        Command::new(HERALD)
            .args(["sub", "--url", &url, "--after", "0", "cli.resume"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let stdout = sub.0.as_mut().unwrap().stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "1 tick {\"n\":1}");
    publish(&url, 2);
    assert_eq!(lines.next().unwrap().unwrap(), "2 tick {\"n\":2}");
    // SIGKILL: the subscriber loses its connection mid-stream.
    drop(server);
    server = serve(port, &data, log());
    publish(&url, 3);
    publish(&url, 4);
    assert_eq!(lines.next().unwrap().unwrap(), "3 tick {\"n\":3}");
    assert_eq!(lines.next().unwrap().unwrap(), "4 tick {\"n\":4}");
    let sub_process = sub.0.as_mut().unwrap();
    assert!(
        sub_process.try_wait().unwrap().is_none(),
        "herald sub is still running"
    );
    drop(sub);
    // Logs written to a file carry no colour codes.
    drop(server);
    let text = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(text.contains("listening"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "ANSI escapes in a log file: {text:?}"
    );
}
