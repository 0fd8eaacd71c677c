//! Herald's standalone server: HTTP publishing and polling, Server-Sent
//! Events and WebSocket over mio event loops, JWT tenancy, presence,
//! Prometheus metrics, and the `herald` CLI. The wire protocol is
//! `docs/PROTOCOL.md`; the layout (`conn/`, `api/`, `fanout/`, `wire/`) is
//! in `docs/ARCHITECTURE.md`.
//!
//! ```no_run
//! use herald_server::{Server, ServerConfig};
//!
//! let mut config = ServerConfig::new(); // 127.0.0.1:7070, data in ./herald-data
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let server = Server::start(config).unwrap();
//! println!("listening on {}", server.local_addr());
//! server.shutdown().unwrap();
//! ```

mod api;
mod cluster;
pub mod config;
mod conn;
mod fanout;
/// Entry points for fuzz targets, not a stable API.
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
mod webhook;
mod wire;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herald_core::Broker;

pub use api::auth::{mint_hs256, AuthConfig, Claims};
pub use api::rate::{Rate, RateLimitConfig, TenantRates};
pub use api::schema::{check_file as check_schema_file, SchemaRule};
pub use cluster::{ClusterConfig, ClusterFile};
pub use config::ServerConfig;
use mio::net::{TcpListener, TcpStream};
pub use webhook::{WebhookConfig, WebhookStart};

use conn::limits::Refusal;
use mio::{Events, Interest, Poll, Token, Waker};

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    shutdown: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
    broker: Broker,
}

const LISTENER: Token = Token(0);
const STOP: Token = Token(1);

impl Server {
    /// Opens the broker, binds, and starts the acceptor and the workers.
    pub fn start(
        mut config: ServerConfig,
    ) -> Result<Server, Box<dyn std::error::Error + Send + Sync>> {
        let auth = Arc::new(
            api::auth::Authenticator::new(&config.auth, config.anonymous)?
                .with_query_token(config.query_token),
        );
        let schemas = Arc::new(api::schema::Schemas::compile(&config.schemas)?);
        let rate = Arc::new(api::rate::RateLimits::new(&config.rate_limits)?);
        let hooks = webhook::prepare(&config.webhooks)?;
        if auth.anonymous() && !config.listen.ip().is_loopback() {
            return Err("anonymous access is allowed only on loopback addresses: configure a token key (and leave anonymous access off)".into());
        }
        config.limits = wire::http::Limits {
            max_head: config.max_head,
            max_body: config.max_body,
        };
        config.broker.max_payload = config.broker.max_payload.min(config.max_body);
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(conn::tls::server_config(cert, key)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err("a TLS certificate is set without its key (tls_key, --tls-key)".into())
            }
            (None, Some(_)) => {
                return Err(
                    "a TLS key is set without its certificate (tls_cert, --tls-cert)".into(),
                )
            }
        };
        if let Some(cluster) = &config.cluster {
            cluster.validate()?;
            // A failing webhook's dead letters are local events, which a
            // replica refuses: its webhook would stall on them.
            if !config.webhooks.is_empty() {
                return Err("webhooks are not available on a cluster node yet (docs/CLUSTER.md): remove [[webhooks]] or [cluster]".into());
            }
            // JetStream refuses a duplicate window longer than the stream's
            // maximum age.
            let window = config.broker.idempotency_window;
            if config
                .broker
                .log
                .retention
                .max_age
                .is_some_and(|age| age < window)
            {
                return Err(format!(
                    "on a cluster node, retention_max_age_secs must be at least idempotency_window_secs ({} s): the stream's duplicate window must fit in its maximum age",
                    window.as_secs()
                )
                .into());
            }
            // Every event comes from the cluster's stream.
            config.broker.replica = true;
        }
        let broker = Broker::open(config.broker.clone())?;
        webhook::forget_removed(&broker, &hooks)?;
        let config = Arc::new(config);
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let cluster = match &config.cluster {
            Some(c) => {
                let retention = &config.broker.log.retention;
                let (cluster, thread) = cluster::Cluster::start(
                    c.clone(),
                    broker.clone(),
                    config.broker.idempotency_window,
                    config.broker.presence_ttl,
                    retention.max_age,
                    retention.max_bytes,
                    shutdown.clone(),
                )?;
                threads.push(thread);
                Some(cluster)
            }
            None => None,
        };
        let mut listener = TcpListener::bind(config.listen)?;
        let addr = listener.local_addr()?;
        let mut wakers = Vec::new();
        let limits = Arc::new(conn::limits::ConnLimits::new(
            config.max_connections,
            config.max_connections_per_ip,
        ));
        let mut senders: Vec<Sender<(TcpStream, IpAddr, Option<Refusal>)>> = Vec::new();
        let shared = conn::worker::WorkerShared {
            broker: broker.clone(),
            tls: tls.clone(),
            shutdown: shutdown.clone(),
            config: config.clone(),
            auth: auth.clone(),
            tickets: Arc::new(api::tickets::Tickets::new(config.ticket_ttl)),
            limits: limits.clone(),
            stats: Arc::new(metrics::ServerStats {
                webhooks: hooks.iter().map(|h| h.stats()).collect(),
                ..metrics::ServerStats::default()
            }),
            origins: Arc::new(api::origins::Origins::new(
                &config.allowed_origins,
                auth.anonymous(),
            )),
            schemas,
            rate: rate.clone(),
            cluster,
        };
        for i in 0..config.workers.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), Token(0))?);
            let (tx, rx) = mpsc::channel();
            let mut shared = shared.clone();
            // Answers from the cluster's stream wake the worker that waits.
            shared.cluster = shared.cluster.map(|c| c.for_worker(waker.clone()));
            let worker = conn::worker::Worker::new(poll, rx, shared, i == 0)?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("herald-worker-{i}"))
                    .spawn(move || worker.run())?,
            );
            wakers.push(waker);
            senders.push(tx);
        }
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let stop = Arc::new(Waker::new(poll.registry(), STOP)?);
        let acceptor = {
            let (shutdown, wakers) = (shutdown.clone(), wakers.clone());
            std::thread::Builder::new()
                .name("herald-acceptor".into())
                .spawn(move || {
                    accept_loop(poll, listener, senders, wakers, shutdown, limits, rate)
                })?
        };
        threads.push(acceptor);
        for hook in hooks {
            threads.push(hook.spawn(broker.clone(), shutdown.clone())?);
        }
        if let Some(max_age) = config.broker.log.retention.max_age {
            let (broker, shutdown) = (broker.clone(), shutdown.clone());
            let stats = shared.stats.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("herald-retention".into())
                    .spawn(move || expire_loop(&broker, max_age, &stats, &shutdown))?,
            );
        }
        wakers.push(stop);
        if auth.anonymous() && auth.has_keys() {
            tracing::warn!(%addr, workers = config.workers, "listening; token keys are configured, but anonymous access is on as configured: clients without a token have full access (loopback only, not through a proxy)");
        } else if auth.anonymous() {
            tracing::warn!(%addr, workers = config.workers, "listening; anonymous clients have full access (loopback only, not through a proxy)");
        } else {
            tracing::info!(%addr, workers = config.workers, "listening; bearer tokens required");
        }
        Ok(Server {
            tls: tls.is_some(),
            addr,
            shutdown,
            wakers,
            threads,
            broker,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether connections are served over TLS (`https://`, `wss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The broker behind the server.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Stops accepting, closes connections, flushes the log.
    pub fn shutdown(self) -> io::Result<()> {
        self.shutdown.store(true, Ordering::Release);
        for w in &self.wakers {
            w.wake()?;
        }
        for t in self.threads {
            let _ = t.join();
        }
        self.broker.flush().map_err(io::Error::other)
    }
}

/// Retention by age on a timer, off the workers (it creates and deletes
/// segment files): every minute, or every eighth of the age if that is
/// shorter, so an event is gone at most about `max_age · 9/8` plus a minute
/// after it was published, however slowly the log fills.
fn expire_loop(
    broker: &Broker,
    max_age: Duration,
    stats: &metrics::ServerStats,
    shutdown: &AtomicBool,
) {
    let period = (max_age / 8).clamp(Duration::from_secs(1), Duration::from_secs(60));
    while pause(shutdown, period) {
        match broker.expire() {
            Ok(0) => {}
            Ok(n) => {
                stats.expired.fetch_add(n, Ordering::Relaxed);
                tracing::info!(
                    events = n,
                    "retention deleted events older than the retention age"
                );
            }
            Err(e) => tracing::warn!("retention failed: {e}"),
        }
    }
}

/// Sleeps `d` on a background thread, waking early (and returning
/// `false`) when `stop` is set.
fn pause(stop: &AtomicBool, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

fn accept_loop(
    mut poll: Poll,
    listener: TcpListener,
    senders: Vec<Sender<(TcpStream, IpAddr, Option<Refusal>)>>,
    wakers: Vec<Arc<Waker>>,
    shutdown: Arc<AtomicBool>,
    limits: Arc<conn::limits::ConnLimits>,
    rate: Arc<api::rate::RateLimits>,
) {
    let mut events = Events::with_capacity(64);
    let mut next = 0usize;
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("acceptor poll failed: {e}");
            return;
        }
        if shutdown.load(Ordering::Acquire) {
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    // A refused connection still goes to a worker, which
                    // answers 429 or 503 (closing at once would reset it
                    // before the client reads the answer); with TLS, the
                    // worker closes it before any handshake. One refused by
                    // the rate is not counted against the connection limits.
                    let refused = match rate.connect(peer.ip()) {
                        Err(e) => Some(Refusal::Rate(e)),
                        Ok(()) => limits.admit(peer.ip()).err().map(Refusal::Capacity),
                    };
                    let counted = refused.is_none();
                    let _ = stream.set_nodelay(true);
                    let i = next % senders.len();
                    next += 1;
                    if senders[i].send((stream, peer.ip(), refused)).is_ok() {
                        let _ = wakers[i].wake();
                    } else if counted {
                        limits.release(peer.ip());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    break;
                }
            }
        }
    }
}
