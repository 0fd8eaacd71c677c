//! TLS termination: rustls on the worker's non-blocking sockets, no async
//! runtime. A TLS connection keeps its `TcpStream` where a plain one does
//! (registered in the worker's poller) plus a boxed rustls session;
//! [`TlsStream`] joins the two for one read or write, so a plain
//! connection pays nothing for TLS.
//!
//! Reads drive the session: records are read from the socket and
//! processed until plaintext comes out or the socket has nothing more
//! (`WouldBlock`, so the edge-triggered poller wakes the worker again);
//! handshake messages and tickets that this produces are written at once.
//! Writes encrypt only once the records already made are on the socket, so
//! what a slow client has not taken stays in the connection's output, where
//! it is bounded and counted; records left waiting go out when the socket is
//! writable again ([`TlsConn::flush_records`]).

use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{InconsistentKeys, ServerConnection};

/// Builds the TLS configuration from PEM files: the certificate chain (the
/// server's first, then intermediates) and its private key (PKCS#8, PKCS#1
/// or SEC1). Errors name the file and what is wrong with it.
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let pem_error = |path: &Path, what: &str, e: pem::Error| match e {
        pem::Error::Io(e) => format!("cannot read {}: {e}", path.display()),
        pem::Error::NoItemsFound => format!("{}: no {what} in PEM form", path.display()),
        e => format!("{}: not a valid PEM file ({e})", path.display()),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(cert, "certificate", e))?;
    if certs.is_empty() {
        return Err(pem_error(cert, "certificate", pem::Error::NoItemsFound));
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, "private key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => format!(
                "the private key in {} is not the key of the certificate in {}",
                key.display(),
                cert.display()
            ),
            e => format!(
                "TLS certificate {} with key {}: {e}",
                cert.display(),
                key.display()
            ),
        })?;
    // HTTP/1.1 only: a client that offers ALPN must accept it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A connection's TLS session.
pub(crate) struct TlsConn {
    session: ServerConnection,
    /// The handshake's outcome was counted.
    counted: bool,
}

impl TlsConn {
    pub(crate) fn new(config: Arc<rustls::ServerConfig>) -> Result<TlsConn, rustls::Error> {
        Ok(TlsConn {
            session: ServerConnection::new(config)?,
            counted: false,
        })
    }

    /// The session over `socket`, for one read or write.
    pub(crate) fn stream<'a>(&'a mut self, socket: &'a mut TcpStream) -> TlsStream<'a> {
        TlsStream {
            session: &mut self.session,
            socket,
        }
    }

    /// True once, when the handshake has completed (to count it).
    pub(crate) fn handshake_completed(&mut self) -> bool {
        if self.counted || self.session.is_handshaking() {
            return false;
        }
        self.counted = true;
        true
    }

    /// The connection is closed: true if its handshake never completed
    /// (counted as failed, once).
    pub(crate) fn handshake_failed(&mut self) -> bool {
        let failed = !self.counted && self.session.is_handshaking();
        self.counted = true;
        failed
    }

    /// Records are waiting for the socket.
    #[cfg(test)]
    fn wants_write(&self) -> bool {
        self.session.wants_write()
    }

    /// Queues the close_notify alert (once; after everything written so far).
    pub(crate) fn send_close_notify(&mut self) {
        self.session.send_close_notify();
    }

    /// Writes the records waiting, as far as the socket takes them
    /// (`WouldBlock` if it did not take them all).
    pub(crate) fn flush_records(&mut self, socket: &mut TcpStream) -> io::Result<()> {
        self.stream(socket).flush_records()
    }
}

/// A TLS session and its socket, as one non-blocking stream of plaintext.
pub(crate) struct TlsStream<'a> {
    session: &'a mut ServerConnection,
    socket: &'a mut TcpStream,
}

impl TlsStream<'_> {
    fn flush_records(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            if self.session.write_tls(self.socket)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

impl Read for TlsStream<'_> {
    /// Plaintext if there is some; `Ok(0)` once the peer sent close_notify;
    /// `WouldBlock` once the socket has nothing more; an error for a broken
    /// session (a bad handshake, a TCP close without close_notify).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            // At EOF `read_tls` gives 0 and the session remembers it: the
            // reader above then reports a clean or an unclean close.
            self.session.read_tls(self.socket)?;
            if let Err(e) = self.session.process_new_packets() {
                tracing::debug!("TLS session failed: {e}");
                // The alert that says why, if the socket takes it.
                let _ = self.session.write_tls(self.socket);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages, tickets, alerts.
            match self.flush_records() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }
}

impl Write for TlsStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Records made earlier first: until they are out, new plaintext
        // stays in the caller's buffer.
        self.flush_records()?;
        let n = self.session.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // Plaintext buffered before the handshake completed fills
            // rustls's buffer; the rest waits for the handshake.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.flush_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_records()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, TcpListener};
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

    use super::*;
    use crate::conn::connection::Conn;

    /// A CA and a `localhost` certificate it signed, made with `openssl`.
    fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl command makes the test certificate");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let ca = format!("req -x509 -days 2 -subj /CN=ca {ec} -keyout ca.key -out ca.pem");
        run(&ca.split(' ').collect::<Vec<_>>());
        let csr = format!("req -subj /CN=localhost {ec} -keyout key.pem -out cert.csr");
        run(&csr.split(' ').collect::<Vec<_>>());
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName = DNS:localhost\nbasicConstraints = critical, CA:FALSE\n",
        )
        .unwrap();
        let sign = "x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 \
                    -extfile ext.cnf -out cert.pem";
        run(&sign.split_whitespace().collect::<Vec<_>>());
        (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        )
    }

    /// Writes 1000-byte pieces until rustls holds records that the socket
    /// did not take and the connection's output is empty: the state in
    /// which only a flush with nothing new to write can send them.
    fn fill(conn: &mut Conn, sent: &mut Vec<u8>) {
        for i in 0..100_000usize {
            let piece: Vec<u8> = (0..1000).map(|j| ((i * 7 + j) % 251) as u8).collect();
            conn.output.extend(&piece);
            sent.extend_from_slice(&piece);
            conn.flush().unwrap();
            if conn.tls.as_ref().unwrap().wants_write() {
                assert_eq!(conn.pending(), 0, "records waited before the last piece");
                return;
            }
        }
        panic!("the socket never filled");
    }

    /// A client that reads nothing until told: the socket fills, and
    /// records wait in rustls for the worker's next writable event.
    #[test]
    fn records_left_waiting_go_out_on_later_flushes_and_close_notify_follows_them() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = make_certs(dir.path());
        let config = server_config(&cert, &key).unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client_tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client_tcp
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (server_tcp, _) = listener.accept().unwrap();
        server_tcp.set_nonblocking(true).unwrap();
        let tls = Box::new(TlsConn::new(config).unwrap());
        let mut conn = Conn::new(
            TcpStream::from_std(server_tcp),
            Some(tls),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            false,
        );

        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&ca).unwrap())
            .unwrap();
        let client_config = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let name = ServerName::try_from("localhost").unwrap();
        // Told how many bytes to read, then to read to the end.
        let (go, told) = std::sync::mpsc::channel::<usize>();
        let client = std::thread::spawn(move || {
            let session = ClientConnection::new(client_config, name).unwrap();
            let mut tls = StreamOwned::new(session, client_tcp);
            tls.write_all(b"hello").unwrap();
            let mut first = vec![0; told.recv().unwrap()];
            tls.read_exact(&mut first).unwrap();
            told.recv().unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).map(|_| [first, rest].concat())
        });

        let deadline = Instant::now() + Duration::from_secs(20);
        let wait = || {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(1));
        };
        // Handshake, then the client's first bytes.
        while conn.input.len() < 5 {
            assert!(conn.read_available(1 << 20), "the connection failed");
            wait();
        }
        assert_eq!(conn.input, b"hello");
        assert!(conn.tls.as_mut().unwrap().handshake_completed());

        // Records left waiting go out on later flushes (the worker's
        // writable events) with nothing new to write.
        let mut sent = Vec::new();
        fill(&mut conn, &mut sent);
        go.send(sent.len()).unwrap();
        while conn.tls.as_ref().unwrap().wants_write() {
            wait();
            conn.flush().unwrap();
        }
        // The close_notify waits behind records too, and lingering starts
        // once it is written.
        fill(&mut conn, &mut sent);
        conn.close_when_flushed();
        assert!(
            !conn.start_lingering().unwrap(),
            "lingering before the records left"
        );
        go.send(0).unwrap();
        loop {
            wait();
            conn.flush().unwrap();
            if conn.start_lingering().unwrap() {
                break;
            }
        }
        let got = client
            .join()
            .unwrap()
            .expect("a clean close (close_notify)");
        assert!(
            got == sent,
            "{} bytes of {} arrived intact",
            got.len(),
            sent.len()
        );
    }
}
