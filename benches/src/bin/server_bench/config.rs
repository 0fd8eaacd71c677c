//! Command-line arguments and the parameters of a run.

use std::path::PathBuf;

use herald_benches::load::Peer;

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) runs: usize,
    pub(crate) subscribers: usize,
    /// Length of the saturated window and of each latency measurement.
    pub(crate) seconds: f64,
    /// Length of each step of the maximum-rate search.
    pub(crate) step_seconds: f64,
    pub(crate) search_steps: usize,
    /// Saturated runs: events in flight per subscriber (on average).
    pub(crate) window: u64,
    pub(crate) connections: usize,
    /// Subscribers of the measured topic among the connections; one case each.
    pub(crate) latency_subscribers: Vec<usize>,
    pub(crate) rate_10k: f64,
    pub(crate) mem_connections: usize,
    pub(crate) client_threads: usize,
    /// Herald's publisher: events per `publish` op (`--publish-batch`).
    pub(crate) publish_batch: usize,
    /// Herald's WebSocket subscribers ask for batched delivery:
    /// `(max_events, max_delay_ms)` (`--ws-batch N,D`).
    pub(crate) ws_batch: Option<(u32, u32)>,
    pub(crate) herald: PathBuf,
    pub(crate) nats: PathBuf,
    pub(crate) herald_workers: Option<usize>,
    /// Extra lines for Herald's configuration file (`--herald-config`).
    pub(crate) herald_config: Vec<String>,
    /// `--connections` / `--mem-connections` given explicitly (not clamped to
    /// the open-file limit).
    pub(crate) connections_set: bool,
    pub(crate) mem_connections_set: bool,
    /// The systems measured (`--peers`; both by default).
    pub(crate) peers: Vec<Peer>,
    pub(crate) fanout: bool,
    pub(crate) conn10k: bool,
    pub(crate) memory: bool,
    pub(crate) argv: String,
}

impl Config {
    fn full() -> Config {
        Config {
            runs: 3,
            subscribers: 1_000,
            seconds: 3.0,
            step_seconds: 1.5,
            search_steps: 6,
            window: 256,
            connections: 10_000,
            latency_subscribers: vec![100, 1],
            rate_10k: 1_000.0,
            mem_connections: 10_000,
            client_threads: 1,
            publish_batch: 1,
            ws_batch: None,
            herald: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/release/herald"
            )),
            nats: PathBuf::from("nats-server"),
            herald_workers: None,
            herald_config: Vec::new(),
            connections_set: false,
            mem_connections_set: false,
            peers: vec![Peer::Herald, Peer::Nats],
            fanout: true,
            conn10k: true,
            memory: true,
            argv: String::new(),
        }
    }

    fn quick(mut self) -> Config {
        self.runs = 1;
        self.subscribers = 100;
        self.seconds = 1.0;
        self.step_seconds = 0.5;
        self.search_steps = 3;
        self.connections = 1_000;
        self.latency_subscribers = vec![20, 1];
        self.mem_connections = 1_000;
        self
    }
}

pub(crate) const USAGE: &str = "usage: server_bench [--quick] [--runs N] [--only fanout,conn10k,memory]
    [--subscribers N] [--seconds S] [--step-seconds S] [--search-steps N] [--window N]
    [--connections N] [--latency-subscribers N,N…] [--rate-10k R] [--mem-connections N]
    [--client-threads N] [--publish-batch N] [--ws-batch N,D] [--herald PATH] [--nats-server PATH] [--herald-workers N]
    [--herald-config 'key = value']  (repeatable: a line added to Herald's configuration file)
    [--peers herald,nats]  (conn10k and memory only: the fan-out case always runs both)";

pub(crate) fn parse_args() -> Config {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = if argv.iter().any(|a| a == "--quick") {
        Config::full().quick()
    } else {
        Config::full()
    };
    cfg.argv = argv.join(" ");
    let mut args = argv.into_iter();
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
        match v.as_deref().map(str::parse) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("{flag} needs a valid value\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {}
            "--runs" => cfg.runs = value::<usize>(&arg, args.next()).max(1),
            "--subscribers" => cfg.subscribers = value::<usize>(&arg, args.next()).max(1),
            "--seconds" => cfg.seconds = value(&arg, args.next()),
            "--step-seconds" => cfg.step_seconds = value(&arg, args.next()),
            "--search-steps" => cfg.search_steps = value::<usize>(&arg, args.next()).max(1),
            "--window" => cfg.window = value::<u64>(&arg, args.next()).max(1),
            "--connections" => {
                cfg.connections = value::<usize>(&arg, args.next()).max(1);
                cfg.connections_set = true;
            }
            "--latency-subscribers" => {
                let list: String = value(&arg, args.next());
                cfg.latency_subscribers = list
                    .split(',')
                    .map(|v| value::<usize>(&arg, Some(v.to_string())).max(1))
                    .collect();
            }
            "--rate-10k" => cfg.rate_10k = value(&arg, args.next()),
            "--mem-connections" => {
                cfg.mem_connections = value::<usize>(&arg, args.next()).max(1);
                cfg.mem_connections_set = true;
            }
            "--client-threads" => cfg.client_threads = value::<usize>(&arg, args.next()).max(1),
            "--publish-batch" => {
                cfg.publish_batch = value::<usize>(&arg, args.next()).clamp(1, 1000)
            }
            "--ws-batch" => {
                let v: String = value(&arg, args.next());
                match herald_benches::load::parse_ws_batch(&v) {
                    Some(nd) => cfg.ws_batch = Some(nd),
                    None => {
                        eprintln!("--ws-batch wants MAX_EVENTS,MAX_DELAY_MS, got {v}");
                        std::process::exit(2);
                    }
                }
            }
            "--herald" => cfg.herald = value(&arg, args.next()),
            "--nats-server" => cfg.nats = value(&arg, args.next()),
            "--herald-workers" => cfg.herald_workers = Some(value(&arg, args.next())),
            "--herald-config" => cfg.herald_config.push(value(&arg, args.next())),
            "--peers" => {
                let list: String = value(&arg, args.next());
                cfg.peers = [Peer::Herald, Peer::Nats]
                    .into_iter()
                    .filter(|p| {
                        list.split(',')
                            .any(|w| w == p.name() || (w == "nats" && *p == Peer::Nats))
                    })
                    .collect();
            }
            "--only" => {
                let only: String = value(&arg, args.next());
                let wants = |w: &str| only.split(',').any(|o| o == w);
                cfg.fanout = wants("fanout");
                cfg.conn10k = wants("conn10k");
                cfg.memory = wants("memory");
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    cfg
}
