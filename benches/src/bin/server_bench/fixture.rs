//! A server, its subscribers and a publisher; observations made along the way.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use herald_benches::load::{Clients, Options, Peer, Plan, Publisher, Ready};

use crate::config::Config;
use crate::servers::{counter, ServerProc};

pub(crate) struct Fixture {
    pub(crate) peer: Peer,
    plans: Vec<Plan>,
    // Drop order: publisher, clients, then the server.
    pub(crate) publ: Publisher,
    pub(crate) clients: Clients,
    pub(crate) server: ServerProc,
    /// Deliveries expected per published event (open measured subscribers).
    pub(crate) per_event: u64,
    pub(crate) opened: Ready,
}

impl Fixture {
    pub(crate) fn new(peer: Peer, cfg: &Config, plans: Vec<Plan>) -> Fixture {
        let server = ServerProc::start(peer, cfg, plans.len() + 1_000);
        let options = Options {
            ws_batch: cfg.ws_batch.filter(|_| peer == Peer::Herald),
            ..Options::default()
        };
        let mut clients = Clients::with_options(peer, server.addr, cfg.client_threads, options);
        let t = Instant::now();
        let opened = clients.open(plans.clone());
        eprintln!(
            "  {}: {} connections ready, {} failed, in {:.1} s",
            peer.name(),
            opened.ok,
            opened.failed,
            t.elapsed().as_secs_f64()
        );
        let per_event = clients.snapshot().measured as u64;
        let publ = Publisher::connect(peer, server.addr, cfg.publish_batch)
            .unwrap_or_else(|e| panic!("{}: publisher cannot connect: {e}", peer.name()));
        Fixture {
            peer,
            plans,
            publ,
            clients,
            server,
            per_event,
            opened,
        }
    }

    /// Stops everything and starts afresh (after a run that left a backlog
    /// or lost connections).
    pub(crate) fn restart(self, cfg: &Config, notes: &mut Notes) -> Fixture {
        let (peer, plans) = (self.peer, self.plans.clone());
        self.finish(notes);
        Fixture::new(peer, cfg, plans)
    }

    fn expected(&self) -> u64 {
        self.publ.sent * self.per_event
    }

    /// Waits until every published event reached every measured subscriber;
    /// how long that took, or `None` after `limit`.
    pub(crate) fn drain(&self, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        while self.clients.delivered() < self.expected() {
            if t.elapsed() > limit || self.clients.dead() > 0 {
                return None;
            }
            thread::sleep(Duration::from_micros(200));
        }
        Some(t.elapsed())
    }

    pub(crate) fn broken(&mut self) -> bool {
        self.clients.dead() > 0
            || self.publ.shared.closed.load(Ordering::Relaxed)
            || !self.server.alive()
    }

    /// Records what went wrong, if anything, then stops everything.
    pub(crate) fn finish(mut self, notes: &mut Notes) {
        let name = self.peer.name();
        let _ = self.drain(Duration::from_secs(5));
        let snap = self.clients.snapshot();
        for m in self.opened.messages.iter().chain(&snap.messages) {
            notes.add(format!("{name}: subscriber {m}"));
        }
        if snap.dead > 0 {
            notes.add(format!(
                "{name}: {} subscriber connection(s) closed by the server",
                snap.dead
            ));
        }
        for e in self.publ.errors() {
            notes.add(format!("{name}: publisher received {e}"));
        }
        if self.peer == Peer::Herald {
            thread::sleep(Duration::from_millis(50));
            if self.publ.acks() != self.publ.sent {
                notes.add(format!(
                    "herald: {} publishes sent, {} acknowledged at the end of a fixture",
                    self.publ.sent,
                    self.publ.acks()
                ));
            }
        }
        if !self.server.alive() {
            notes.add(format!("{name}: the server process exited during the run"));
        }
        let m = self.server.metrics();
        for name in [
            "herald_server_slow_client_closes_total",
            "herald_gap_notices_total",
        ] {
            let value = counter(&m, name);
            if value > 0.0 {
                notes.add(format!("herald: {name} = {value} at the end of a fixture"));
            }
        }
        for w in self.server.log_warnings() {
            notes.add(format!("{name} log: {w}"));
        }
    }
}

/// Observations worth reporting (deduplicated, counted).
#[derive(Debug, Default)]
pub(crate) struct Notes(pub(crate) Vec<(String, usize)>);

impl Notes {
    pub(crate) fn add(&mut self, note: String) {
        // Connection ids and sequence numbers differ; compare without digits.
        let key = |s: &str| {
            s.chars()
                .filter(|c| !c.is_ascii_digit())
                .collect::<String>()
        };
        let k = key(&note);
        if let Some(e) = self.0.iter_mut().find(|(n, _)| key(n) == k) {
            e.1 += 1;
        } else if self.0.len() < 40 {
            eprintln!("  note: {note}");
            self.0.push((note, 1));
        }
    }
}
