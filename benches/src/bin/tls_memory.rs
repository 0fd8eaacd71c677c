//! Memory per idle connection, TLS next to plain: starts `herald serve`
//! (a private copy of the release binary, a fresh data directory, a
//! certificate made with `openssl` for TLS), opens `--connections`
//! connections from this process, and reads the server's `VmRSS`
//! (`/proc/PID/status`) after start and 1 s after every connection is
//! established (TLS: handshake completed) and idle; then, with a fresh
//! server, the same with an SSE stream open on each (its `200` head read;
//! no events). Per connection = growth ÷ connections. Kernel socket buffers
//! are not in `VmRSS`.
//!
//! ```text
//! cargo build --release -p herald-server --bin herald
//! cargo run --release -p herald-benches --bin tls_memory [-- --connections N] [--runs R] [--herald PATH]
//! ```
//! Plain and TLS servers alternate; the table gives medians of the runs
//! (min–max in parentheses). The idle reading must come within the
//! server's 10 s request-head timeout, which closes connections that send
//! nothing; the run stops if it does not.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_benches::report::{
    machine_description, median, proc_status_kib, toolchain_and_revision,
};
use herald_benches::ws::{find, free_port};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const SETTLE: Duration = Duration::from_secs(1);

enum Client {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Client {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Client::Plain(s) => s,
            Client::Tls(s) => s.as_mut(),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    let run = |args: &str| {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .expect("the openssl command");
        assert!(out.status.success(), "openssl {args}: {out:?}");
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    run(&format!(
        "req -x509 -days 2 -subj /CN=ca {ec} -keyout ca.key -out ca.pem"
    ));
    run(&format!(
        "req -subj /CN=localhost {ec} -keyout key.pem -out cert.csr"
    ));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n",
    )
    .expect("ext.cnf");
    run("x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 -extfile ext.cnf -out cert.pem");
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

/// Raises this process's soft limit of open files to the hard limit.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit read by the call; raising the soft
        // limit up to the hard limit needs no privilege.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(herald: &Path, dir: &Path, certs: Option<&Certs>, connections: usize) -> Server {
    let port = free_port();
    let data = dir.join(format!("data-{port}"));
    let config = dir.join(format!("herald-{port}.toml"));
    let limit = connections + 100;
    std::fs::write(
        &config,
        format!("max_connections = {limit}\nmax_connections_per_ip = {limit}\n"),
    )
    .expect("config");
    let mut cmd = Command::new(herald);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(c) = certs {
        cmd.arg("--tls-cert")
            .arg(&c.cert)
            .arg("--tls-key")
            .arg(&c.key);
    }
    let child = cmd.spawn().expect("herald serve");
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "herald did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

fn connect(port: u16, tls: Option<&Arc<ClientConfig>>) -> Client {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let Some(config) = tls else {
        return Client::Plain(tcp);
    };
    let name = ServerName::try_from("localhost").expect("name");
    let mut session = ClientConnection::new(config.clone(), name).expect("session");
    let mut tcp = tcp;
    while session.is_handshaking() {
        session.complete_io(&mut tcp).expect("TLS handshake");
    }
    Client::Tls(Box::new(StreamOwned::new(session, tcp)))
}

/// Opens an SSE stream and reads its response head.
fn open_sse(client: &mut Client, topic: &str) {
    let io = client.io();
    let req = format!(
        "GET /v1/topics/{topic}/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
    );
    io.write_all(req.as_bytes()).expect("request");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while find(&head, b"\r\n\r\n").is_none() {
        let n = io.read(&mut buf).expect("SSE head");
        assert!(n > 0, "closed before the SSE head");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

fn rss_kib(server: &Server) -> u64 {
    proc_status_kib(&server.child.id().to_string(), "VmRSS").expect("VmRSS")
}

/// Bytes of server VmRSS per connection: `connections` established (TLS:
/// handshake completed) and idle, or each with an SSE stream open.
fn measure(
    herald: &Path,
    dir: &Path,
    certs: Option<&Certs>,
    tls: Option<&Arc<ClientConfig>>,
    connections: usize,
    sse: bool,
) -> f64 {
    let server = start(herald, dir, certs, connections);
    std::thread::sleep(SETTLE);
    let base = rss_kib(&server);
    let started = Instant::now();
    let clients: Vec<Client> = (0..connections)
        .map(|i| {
            let mut c = connect(server.port, tls);
            if sse {
                open_sse(&mut c, &format!("idle.{}", i % 10));
            }
            c
        })
        .collect();
    std::thread::sleep(SETTLE);
    let rss = rss_kib(&server);
    // Idle connections that sent no request are closed by the server's
    // request-head timeout (10 s from the accept): the reading must come
    // before it.
    assert!(
        sse || started.elapsed() < Duration::from_secs(9),
        "{connections} connections took {:?} to open: the server closes idle ones after 10 s; use fewer",
        started.elapsed()
    );
    drop(clients);
    (rss.saturating_sub(base) * 1024) as f64 / connections as f64
}

fn main() {
    let mut connections = 1000usize;
    let mut runs = 3usize;
    let mut herald = PathBuf::from("target/release/herald");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--connections", Some(v)) => connections = v.parse().expect("--connections N"),
            ("--runs", Some(v)) => runs = v.parse::<usize>().expect("--runs R").max(1),
            ("--herald", Some(v)) => herald = PathBuf::from(v),
            _ => {
                eprintln!("usage: tls_memory [--connections N] [--runs R] [--herald PATH]");
                std::process::exit(2);
            }
        }
    }
    raise_nofile();
    let dir = tempfile::Builder::new()
        .prefix("herald-tls-memory")
        .tempdir()
        .expect("temp dir");
    // A private copy: another build cannot replace it mid-run.
    let binary = dir.path().join("herald");
    std::fs::copy(&herald, &binary).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (cargo build --release -p herald-server --bin herald)",
            herald.display()
        )
    });
    let certs = make_certs(dir.path());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&certs.ca).expect("ca.pem"))
        .expect("root");
    let client = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    // (idle, SSE) per run.
    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // Alternating which goes first; a fresh server per reading.
        for use_tls in [run % 2 == 1, run % 2 == 0] {
            let (certs, client, into) = match use_tls {
                true => (Some(&certs), Some(&client), &mut tls),
                false => (None, None, &mut plain),
            };
            let idle = measure(&binary, dir.path(), certs, client, connections, false);
            let sse = measure(&binary, dir.path(), certs, client, connections, true);
            into.push((idle, sse));
        }
        eprintln!(
            "run {}/{runs}: plain {:?}, TLS {:?}",
            run + 1,
            plain.last(),
            tls.last()
        );
    }

    println!("{}", machine_description());
    println!("{}", toolchain_and_revision());
    println!("{connections} connections, runs: {runs}; bytes of server VmRSS per connection, median (min–max)\n");
    let cell = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        format!("{:.0} B ({:.0}–{:.0})", median(v), lo, hi)
    };
    let col = |v: &[(f64, f64)], sse: bool| -> Vec<f64> {
        v.iter().map(|(i, s)| if sse { *s } else { *i }).collect()
    };
    println!("| connection | plain | TLS | TLS − plain |");
    println!("|---|---:|---:|---:|");
    for (label, sse) in [("established, idle", false), ("SSE stream open", true)] {
        let (p, t) = (col(&plain, sse), col(&tls, sse));
        println!(
            "| {label} | {} | {} | {:.0} B |",
            cell(&p),
            cell(&t),
            median(&t) - median(&p)
        );
    }
}
