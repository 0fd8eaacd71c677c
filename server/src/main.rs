//! The `herald` command: `serve` runs the server; `pub`, `sub` and `token`
//! are small clients of a running one (publish an event, print a topic's
//! events, mint a development token); `log verify|inspect` reads a data
//! directory offline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use herald_server::config::{read_key, FileConfig};
use herald_server::{Server, ServerConfig};

mod client;

#[derive(Parser)]
#[command(name = "herald", version, about = "Herald: real-time event fan-out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `herald serve`: flags and environment, over the configuration file.
#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (flags and environment override it).
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "HERALD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory [default: herald-data].
    #[arg(long, env = "HERALD_DATA")]
    data: Option<PathBuf>,
    /// Event-loop threads [default: one per core].
    #[arg(long, env = "HERALD_WORKERS")]
    workers: Option<usize>,
    /// File holding the HS256 secret that signs accepted tokens.
    #[arg(long, env = "HERALD_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// PEM file of the RS256 public key that verifies accepted tokens.
    #[arg(long, env = "HERALD_JWT_RS256_PUBLIC_KEY")]
    jwt_rs256_public_key: Option<PathBuf>,
    /// Refuse clients without a token (the default once a token key is
    /// configured; required off loopback).
    #[arg(long, env = "HERALD_NO_ANONYMOUS", conflicts_with = "anonymous")]
    no_anonymous: bool,
    /// Serve clients without a token even though token keys are configured
    /// (loopback only; never to requests that came through a proxy).
    #[arg(long, env = "HERALD_ANONYMOUS")]
    anonymous: bool,
    /// A web origin whose pages may use the server cross-origin
    /// (repeatable; `*` allows any). Other pages get 403.
    #[arg(
        long = "allow-origin",
        env = "HERALD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// PEM file of the TLS certificate chain: serve `https://` and `wss://`
    /// (with --tls-key).
    #[arg(long, env = "HERALD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM file of the TLS certificate's private key.
    #[arg(long, env = "HERALD_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Cluster mode: a NATS server URL (`nats://host:4222`, repeatable) of
    /// the JetStream stream this node shares with the others (see
    /// `[cluster]` in the configuration file for the rest).
    #[arg(long = "cluster", env = "HERALD_CLUSTER", value_delimiter = ',')]
    cluster: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (defaults: 127.0.0.1:7070, data in ./herald-data).
    Serve(ServeArgs),
    /// Publish one event to a running server.
    Pub {
        /// Server URL.
        #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:7070")]
        url: String,
        /// Bearer token.
        #[arg(long, env = "HERALD_TOKEN")]
        token: Option<String>,
        /// Topic.
        topic: String,
        /// Event type.
        event_type: String,
        /// JSON payload.
        #[arg(default_value = "null")]
        data: String,
    },
    /// Print a topic's events as they arrive (Server-Sent Events).
    Sub {
        /// Server URL.
        #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:7070")]
        url: String,
        /// Bearer token.
        #[arg(long, env = "HERALD_TOKEN")]
        token: Option<String>,
        /// Start after this topic sequence (default: with the next event).
        #[arg(long)]
        after: Option<u64>,
        /// Topic.
        topic: String,
    },
    /// Mint an HS256 token for local use.
    Token {
        /// File holding the HS256 secret (the server's --jwt-secret-file).
        #[arg(long)]
        secret_file: PathBuf,
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Subject.
        #[arg(long, default_value = "local")]
        sub: String,
        /// Patterns the bearer may publish to (repeatable).
        #[arg(long)]
        publish: Vec<String>,
        /// Patterns the bearer may subscribe to (repeatable).
        #[arg(long)]
        subscribe: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Inspect a log directory offline.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Work with the JSON Schemas of `[[schemas]]` offline.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Check an event's payload against a schema, as a publish would be:
    /// prints every violation; exit 1 if there is one, 2 if a file is bad.
    Check {
        /// The JSON Schema file.
        schema: PathBuf,
        /// A file holding the event's payload (its `data`).
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Check every record's CRC and sequence; exit 1 if anything is wrong.
    Verify {
        /// The log directory (`<data>/log`).
        dir: PathBuf,
    },
    /// Print every record, one line each.
    Inspect {
        /// The log directory (`<data>/log`).
        dir: PathBuf,
        /// Print at most this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => match server_config(args) {
            Ok(config) => serve(config),
            Err(e) => {
                eprintln!("herald: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Pub {
            url,
            token,
            topic,
            event_type,
            data,
        } => client::publish(&url, token.as_deref(), &topic, &event_type, &data),
        Command::Sub {
            url,
            token,
            after,
            topic,
        } => client::subscribe(&url, token.as_deref(), &topic, after),
        Command::Token {
            secret_file,
            tenant,
            sub,
            publish,
            subscribe,
            ttl,
        } => {
            let secret = match read_key(&secret_file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("herald: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let claims = herald_server::Claims {
                sub,
                exp: now + ttl,
                tenant,
                publish,
                subscribe,
            };
            match herald_server::mint_hs256(&claims, &secret) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("herald: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Schema {
            command: SchemaCommand::Check { schema, data },
        } => match herald_server::check_schema_file(&schema, &data) {
            Ok(violations) if violations.is_empty() => {
                println!("valid");
                ExitCode::SUCCESS
            }
            Ok(violations) => {
                for v in violations {
                    println!("invalid: {v}");
                }
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("herald: {e}");
                ExitCode::from(2)
            }
        },
        Command::Log {
            command: LogCommand::Verify { dir },
        } => match herald_core::log::verify_dir(&dir) {
            Ok(report) => {
                println!(
                    "{} segments, {} records, sequences {:?}..={:?}",
                    report.segments, report.records, report.first_seq, report.last_seq
                );
                for (from, to) in &report.skips {
                    println!(
                        "skip: sequences {from}..={to} were never stored (a cluster replica's stream had dropped them)"
                    );
                }
                for issue in &report.issues {
                    println!(
                        "{}: offset {}: {}{}",
                        issue.path.display(),
                        issue.offset,
                        issue.reason,
                        if issue.torn_tail { " (torn tail)" } else { "" }
                    );
                }
                if report.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("herald: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Log {
            command: LogCommand::Inspect { dir, limit },
        } => {
            let mut n = 0u64;
            let limit = limit.unwrap_or(u64::MAX);
            let result = herald_core::log::dump_dir(&dir, |r| {
                if n < limit {
                    println!(
                        "seq={} topic_id={} topic_seq={} ts_ns={} origin={} type={:?} payload={:?}",
                        r.seq,
                        r.topic_id,
                        r.topic_seq,
                        r.timestamp_ns,
                        r.origin,
                        String::from_utf8_lossy(r.event_type),
                        String::from_utf8_lossy(r.payload)
                    );
                }
                n += 1;
            });
            match result {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("herald: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Defaults, then the file, then flags and environment (applied as a
/// second file).
fn server_config(args: ServeArgs) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::new();
    if let Some(path) = &args.config {
        FileConfig::load(path)?.apply(&mut config)?;
    }
    FileConfig {
        listen: args.listen,
        data: args.data,
        workers: args.workers,
        jwt_secret_file: args.jwt_secret_file,
        jwt_rs256_public_key: args.jwt_rs256_public_key,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        anonymous: match (args.anonymous, args.no_anonymous) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        allowed_origins: (!args.allowed_origins.is_empty()).then_some(args.allowed_origins),
        cluster: (!args.cluster.is_empty()).then(|| herald_server::ClusterFile {
            nats: Some(args.cluster),
            ..Default::default()
        }),
        ..FileConfig::default()
    }
    .apply(&mut config)?;
    Ok(config)
}

/// Raises the soft limit of open files to the hard one: a connection is a
/// descriptor, and the usual soft limit (1024) is far below what the server
/// serves.
fn raise_open_file_limit() {
    // SAFETY: getrlimit fills the struct it is given; setrlimit only reads it.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn serve(config: ServerConfig) -> ExitCode {
    raise_open_file_limit();
    // Block the signals before any thread starts, so every thread inherits
    // the mask and only `sigwait` below receives them.
    let signals = block_signals();
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("herald: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "herald listening on {}://{} (Ctrl-C to stop)",
        if server.is_tls() { "https" } else { "http" },
        server.local_addr()
    );
    wait_for_signal(&signals);
    tracing::info!("shutting down");
    match server.shutdown() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and threads it spawns later).
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use;
    // pthread_sigmask only reads the set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for one of the blocked signals.
fn wait_for_signal(set: &libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: `set` is an initialised signal set, `sig` a live int.
    unsafe { libc::sigwait(set, &mut sig) };
}
