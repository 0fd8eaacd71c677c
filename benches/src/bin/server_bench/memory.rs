//! Server memory per idle connection.

use std::thread;
use std::time::Duration;

use herald_benches::load::{Clients, Peer, Plan};

use crate::config::Config;
use crate::fixture::Notes;
use crate::servers::ServerProc;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MemRun {
    pub(crate) n: usize,
    pub(crate) base_kib: u64,
    /// Bytes per connection: handshake only, then subscribed.
    pub(crate) handshake: f64,
    pub(crate) subscribed: f64,
}

/// The server's RSS growth per idle connection.
pub(crate) fn memory_run(peer: Peer, cfg: &Config, distinct: bool, notes: &mut Notes) -> MemRun {
    let n = cfg.mem_connections;
    let mut server = ServerProc::start(peer, cfg, n + 1_000);
    let settle = || thread::sleep(Duration::from_millis(500));
    settle();
    let rss0 = server.rss_kib();
    let mut clients = Clients::new(peer, server.addr, cfg.client_threads);
    let opened = clients.open(vec![Plan::Idle; n]);
    settle();
    let rss1 = server.rss_kib();
    let subscribed = clients.subscribe(distinct);
    settle();
    let rss2 = server.rss_kib();
    let per = |kib: u64| (kib.saturating_sub(rss0) * 1024) as f64 / opened.ok.max(1) as f64;
    let run = MemRun {
        n: opened.ok,
        base_kib: rss0,
        handshake: per(rss1),
        subscribed: per(rss2),
    };
    eprintln!(
        "  {} ({}): {} connections ({} subscribed); RSS {} → {} → {} KiB: {:.0} B/conn handshake only, {:.0} B/conn subscribed",
        peer.name(),
        if distinct { "a topic each" } else { "one topic" },
        opened.ok,
        subscribed.ok,
        rss0,
        rss1,
        rss2,
        run.handshake,
        run.subscribed
    );
    for m in opened.messages.iter().chain(&subscribed.messages) {
        notes.add(format!("{} (memory): {m}", peer.name()));
    }
    if opened.failed > 0 || subscribed.failed > 0 {
        notes.add(format!(
            "{} (memory): {} connections and {} subscriptions failed",
            peer.name(),
            opened.failed,
            subscribed.failed
        ));
    }
    if !server.alive() {
        notes.add(format!(
            "{}: the server process exited during the memory run",
            peer.name()
        ));
    }
    drop(clients);
    for w in server.log_warnings() {
        notes.add(format!("{} log: {w}", peer.name()));
    }
    run
}
