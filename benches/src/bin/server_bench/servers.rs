//! The systems measured: a server under test started as its own process,
//! and what is read from it (readiness, RSS, CPU ticks, metrics, log).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use herald_benches::load::Peer;
use herald_benches::report::{proc_status_kib, proc_ticks};
use herald_benches::ws::free_port;

use crate::config::Config;

/// Run `r` measures the peers in this order (alternating between runs).
pub(crate) fn order(r: usize) -> [Peer; 2] {
    if r % 2 == 0 {
        [Peer::Herald, Peer::Nats]
    } else {
        [Peer::Nats, Peer::Herald]
    }
}

/// CPU ticks used by server processes that have exited (for the noise
/// estimate: they are not "other" load).
pub(crate) static SERVER_TICKS: AtomicU64 = AtomicU64::new(0);

/// A server process on a free loopback port, in its own temporary
/// directory; killed on drop.
pub(crate) struct ServerProc {
    peer: Peer,
    child: Child,
    pub(crate) addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl ServerProc {
    /// Starts `peer` allowing `max_connections` clients, and waits until it
    /// is ready (Herald: `GET /readyz` answers 200; NATS: the `INFO` line).
    pub(crate) fn start(peer: Peer, cfg: &Config, max_connections: usize) -> ServerProc {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = File::create(dir.path().join("server.log")).expect("server log");
        let mut cmd = match peer {
            Peer::Herald => {
                // The defaults admit 10 000 connections in all and 1 000 per
                // IP address: every client here is 127.0.0.1.
                let conf = dir.path().join("herald.toml");
                let mut text = format!(
                    "max_connections = {max_connections}\nmax_connections_per_ip = {max_connections}\n"
                );
                for line in &cfg.herald_config {
                    text.push_str(line);
                    text.push('\n');
                }
                fs::write(&conf, text).expect("herald config");
                let mut c = Command::new(&cfg.herald);
                c.arg("serve")
                    .arg("--config")
                    .arg(&conf)
                    .arg("--listen")
                    .arg(addr.to_string())
                    .arg("--data")
                    .arg(dir.path().join("data"))
                    .env("NO_COLOR", "1");
                if let Some(w) = cfg.herald_workers {
                    c.arg("--workers").arg(w.to_string());
                }
                c
            }
            Peer::Nats => {
                let mut c = Command::new(&cfg.nats);
                c.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {}: {e}", peer.name());
        });
        let mut server = ServerProc {
            peer,
            child,
            addr,
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited during start-up ({status}); its log:\n{}",
                    self.peer.name(),
                    self.log()
                );
            }
            if self.probe().unwrap_or(false) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after 20 s; its log:\n{}",
                self.peer.name(),
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn probe(&self) -> io::Result<bool> {
        let mut s = StdTcpStream::connect_timeout(&self.addr, Duration::from_millis(200))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        if self.peer == Peer::Herald {
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        }
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = s.read(&mut buf[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(match self.peer {
            Peer::Herald => buf[..got].starts_with(b"HTTP/1.1 200"),
            Peer::Nats => buf[..got].starts_with(b"INFO "),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Herald's `/metrics` as (name, value) pairs; empty for NATS or if the
    /// scrape fails.
    pub(crate) fn metrics(&self) -> Vec<(String, f64)> {
        if self.peer != Peer::Herald {
            return Vec::new();
        }
        let scrape = || -> io::Result<String> {
            let mut s = StdTcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        };
        scrape()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("herald_"))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// One of Herald's counters (0 if absent).
    pub(crate) fn metric(&self, name: &str) -> f64 {
        counter(&self.metrics(), name)
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident set size in KiB (`VmRSS`).
    pub(crate) fn rss_kib(&self) -> u64 {
        proc_status_kib(&self.pid().to_string(), "VmRSS").unwrap_or(0)
    }

    pub(crate) fn ticks(&self) -> u64 {
        proc_ticks(&self.pid().to_string())
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Warning and error lines of the server's log.
    pub(crate) fn log_warnings(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| !l.contains("anonymous clients have full access"))
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("[ERR]")
                    || l.contains("[WRN]")
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        SERVER_TICKS.fetch_add(self.ticks(), Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value; no pointers involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Raises this process's soft limit of open files to the hard limit (the
/// servers, started from here, inherit it); returns the soft limit now.
pub(crate) fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit read by the call; raising the
        // soft limit up to the hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// The counter sample `name` (`…_total`) of a scrape, 0 if absent. A build
/// from before counters were named `…_total` (`--herald PATH`) exposed the
/// same value as a gauge without the suffix.
pub(crate) fn counter(metrics: &[(String, f64)], name: &str) -> f64 {
    let old = name.strip_suffix("_total").unwrap_or(name);
    [name, old]
        .iter()
        .find_map(|n| metrics.iter().find(|(k, _)| k == n))
        .map_or(0.0, |(_, v)| *v)
}
