//! `herald-bench`: load against a running Herald server, like `nats bench`.
//!
//! Opens `--subs` subscribers of one topic (WebSocket or Server-Sent
//! Events) and `--pubs` publishers (WebSocket or HTTP; at `--pub-url`, another
//! node of a cluster, if given), publishes at
//! `--rate` events/s in all (0: flat out, at most 256 events in flight per
//! publisher, as server_bench's saturated runs) for `--duration` seconds or
//! `--count` events, then waits up to 5 s for the subscribers to receive
//! everything and prints publishes/s, deliveries/s, end-to-end latency
//! percentiles, lost and duplicate events, and connection errors (`--json`:
//! the same as JSON). `--plot FILE.png` draws the latency-percentile curve;
//! `--compare A.json B.json … --plot FILE.png` overlays saved `--json` runs.
//!
//! The clients are server_bench's load generator ([`herald_benches::load`]):
//! every payload carries its send time, subscribers record publisher-write
//! to subscriber-read latency, and check that the topic sequences they
//! receive are dense and never repeat. Lost and duplicate counts assume that
//! nothing else publishes to the topic during the run.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald_benches::load::{Clients, Options, Peer, Plan, Publisher};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use serde_json::{json, Value};

const USAGE: &str = "usage: herald-bench [--url http://127.0.0.1:7070] [--pub-url URL] [--token T]
    [--subs S] [--sub-transport ws|sse] [--pubs P] [--pub-transport ws|http]
    [--rate N (events/s in all; 0: flat out)] [--size BYTES] [--duration SECS | --count N]
    [--topic T] [--batch N] [--ws-batch MAX_EVENTS,MAX_DELAY_MS] [--json] [--plot FILE.png]
  herald-bench --compare A.json B.json ... --plot FILE.png";

/// Flat out: events in flight (sent, not yet received by every subscriber)
/// per publisher, as server_bench's `--window` default.
const WINDOW: u64 = 256;

#[derive(Debug, Clone)]
struct Args {
    url: String,
    /// Publishers connect here (another node of a cluster); default `url`.
    pub_url: Option<String>,
    token: Option<String>,
    subs: usize,
    sse: bool,
    pubs: usize,
    http: bool,
    rate: f64,
    size: usize,
    duration: Option<f64>,
    count: Option<u64>,
    topic: String,
    batch: usize,
    /// WebSocket subscribers ask for batched delivery.
    ws_batch: Option<(u32, u32)>,
    json: bool,
    plot: Option<PathBuf>,
    compare: Vec<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:7070".into(),
        pub_url: None,
        token: None,
        subs: 1,
        sse: false,
        pubs: 1,
        http: false,
        rate: 0.0,
        size: 128,
        duration: None,
        count: None,
        topic: "bench.herald".into(),
        batch: 1,
        ws_batch: None,
        json: false,
        plot: None,
        compare: Vec::new(),
    };
    let mut args = std::env::args().skip(1).peekable();
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
        match v.as_deref().map(str::parse) {
            Some(Ok(v)) => v,
            _ => usage(&format!("{flag} needs a valid value")),
        }
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => a.url = value(&arg, args.next()),
            "--pub-url" => a.pub_url = Some(value(&arg, args.next())),
            "--token" => a.token = Some(value(&arg, args.next())),
            "--subs" => a.subs = value(&arg, args.next()),
            "--pubs" => a.pubs = value::<usize>(&arg, args.next()).max(1),
            "--sub-transport" => {
                a.sse = match value::<String>(&arg, args.next()).as_str() {
                    "ws" => false,
                    "sse" => true,
                    _ => usage("--sub-transport is ws or sse"),
                }
            }
            "--pub-transport" => {
                a.http = match value::<String>(&arg, args.next()).as_str() {
                    "ws" => false,
                    "http" => true,
                    _ => usage("--pub-transport is ws or http"),
                }
            }
            "--rate" => a.rate = value::<f64>(&arg, args.next()).max(0.0),
            "--size" => a.size = value::<usize>(&arg, args.next()).max(32),
            "--duration" => a.duration = Some(value(&arg, args.next())),
            "--count" => a.count = Some(value(&arg, args.next())),
            "--topic" => a.topic = value(&arg, args.next()),
            "--batch" => a.batch = value::<usize>(&arg, args.next()).clamp(1, 1000),
            "--ws-batch" => {
                let v: String = value(&arg, args.next());
                match herald_benches::load::parse_ws_batch(&v) {
                    Some(nd) => a.ws_batch = Some(nd),
                    None => usage("--ws-batch is MAX_EVENTS,MAX_DELAY_MS"),
                }
            }
            "--json" => a.json = true,
            "--plot" => a.plot = Some(value(&arg, args.next())),
            "--compare" => {
                while let Some(f) = args.next_if(|f| !f.starts_with("--")) {
                    a.compare.push(f.into());
                }
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!("herald-bench: {why}\n{USAGE}");
    std::process::exit(2);
}

/// The server's address from `http://host:port` (TLS is not supported).
fn resolve(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let hostport = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))
}

/// Percentiles reported, as quantiles.
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

fn run(a: &Args) -> Result<Value, String> {
    let addr = resolve(&a.url)?;
    let pub_addr = match &a.pub_url {
        Some(url) => resolve(url)?,
        None => addr,
    };
    let opts = Options {
        topic: a.topic.clone(),
        size: a.size,
        token: a.token.clone(),
        sse: a.sse,
        http: a.http,
        ws_batch: a.ws_batch,
        split_latency: true,
    };
    let threads = a.subs.clamp(1, 2);
    let mut clients = Clients::with_options(Peer::Herald, addr, threads, opts.clone());
    let opened = clients.open(vec![Plan::Sub(a.topic.clone()); a.subs]);
    let mut conn_errors = opened.failed as u64;
    let mut notes = opened.messages.clone();
    let mut pubs = Vec::new();
    for _ in 0..a.pubs {
        match Publisher::connect_with(Peer::Herald, pub_addr, a.batch, opts.clone()) {
            Ok(p) => pubs.push(p),
            Err(e) => {
                conn_errors += 1;
                notes.push(format!("publisher: {e}"));
            }
        }
    }
    if pubs.is_empty() {
        return Err(format!(
            "no publisher could connect to {pub_addr}: {notes:?}"
        ));
    }
    let subs = opened.ok as u64;
    // Bounded in time either way: --count stops early, never late.
    let limit =
        Duration::from_secs_f64(
            a.duration
                .unwrap_or(if a.count.is_some() { 300.0 } else { 10.0 }),
        );
    let count = a.count.unwrap_or(u64::MAX);
    let bar = if a.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(limit.as_millis() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {elapsed}/{duration} {msg}")
            .expect("progress template"),
    );

    let _ = clients.snapshot(); // resets the histogram
    let d0 = clients.delivered();
    clients.record(true);
    let t0 = Instant::now();
    let (mut sent, mut next, mut last_draw) = (0u64, 0usize, Instant::now());
    let window = WINDOW * pubs.len() as u64;
    let mut failed = false;
    while t0.elapsed() < limit && sent < count && !failed {
        let el = t0.elapsed();
        let want = if a.rate > 0.0 {
            ((el.as_secs_f64() * a.rate) as u64 + 1).saturating_sub(sent)
        } else {
            let received = (clients.delivered() - d0) / subs.max(1);
            let in_flight = sent.saturating_sub(received);
            window.saturating_sub(in_flight).min(64)
        };
        let want = want.min(count - sent).min(256);
        if want > 0 {
            let k = pubs.len();
            let p = &mut pubs[next];
            next = (next + 1) % k;
            if let Err(e) = p.publish(want as usize) {
                notes.push(format!("publisher: {e}"));
                conn_errors += 1;
                failed = true;
            }
            sent += want;
        } else if a.rate > 0.0 {
            let due = Duration::from_secs_f64(sent as f64 / a.rate);
            thread::sleep(due.saturating_sub(el).max(Duration::from_micros(20)));
        } else {
            thread::sleep(Duration::from_micros(50));
        }
        if last_draw.elapsed() > Duration::from_millis(100) {
            last_draw = Instant::now();
            let s = el.as_secs_f64().max(1e-9);
            bar.set_position(el.as_millis() as u64);
            bar.set_message(format!(
                "{sent} published ({:.0}/s), {} delivered ({:.0}/s)",
                sent as f64 / s,
                clients.delivered() - d0,
                (clients.delivered() - d0) as f64 / s
            ));
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let delivered_in_window = clients.delivered() - d0;
    bar.finish_and_clear();

    // Everything acknowledged should reach every subscriber.
    let acks = |pubs: &[Publisher]| pubs.iter().map(Publisher::acks).sum::<u64>();
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(5)
        && (acks(&pubs) < sent || clients.delivered() - d0 < acks(&pubs) * subs)
    {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(50)); // duplicates would arrive now
    clients.record(false);
    let published = acks(&pubs);
    let snap = clients.snapshot();
    let delivered = clients.delivered() - d0;
    let lost: u64 = snap
        .unique
        .iter()
        .map(|&u| published.saturating_sub(u))
        .sum::<u64>()
        + published * (subs - snap.unique.len() as u64);
    conn_errors += snap.dead
        + pubs
            .iter()
            .filter(|p| p.shared.closed.load(std::sync::atomic::Ordering::Relaxed))
            .count() as u64;
    for p in &pubs {
        notes.extend(
            p.errors()
                .into_iter()
                .map(|e| format!("publisher received {e}")),
        );
    }
    notes.extend(snap.messages.iter().cloned());
    drop(pubs);
    drop(clients);

    let h = &snap.hist;
    let latency = percentiles(h);
    Ok(json!({
        "url": a.url,
        "pub_url": a.pub_url,
        "topic": a.topic,
        "subs": a.subs,
        "sub_transport": if a.sse { "sse" } else { "ws" },
        "ws_batch": a.ws_batch.map(|(n, d)| json!({"max_events": n, "max_delay_ms": d})),
        "pubs": a.pubs,
        "pub_transport": if a.http { "http" } else { "ws" },
        "rate": a.rate,
        "size": a.size,
        "batch": a.batch,
        "seconds": elapsed,
        "sent": sent,
        "published": published,
        "delivered": delivered,
        "publishes_per_s": sent as f64 / elapsed,
        "deliveries_per_s": delivered_in_window as f64 / elapsed,
        "latency": latency,
        // Split at the server's timestamp (WebSocket subscribers only).
        "ingress": percentiles(&snap.ingress),
        "egress": percentiles(&snap.egress),
        "curve": curve(h),
        "lost": lost,
        "duplicates": snap.duplicates,
        "connection_errors": conn_errors,
        "error_replies": snap.errors,
        "notes": notes,
    }))
}

/// A histogram's percentiles, maximum and sample count, in ns.
fn percentiles(h: &Histogram<u64>) -> Value {
    let mut p = serde_json::Map::new();
    for (name, q) in QUANTILES {
        p.insert(format!("{name}_ns"), json!(h.value_at_quantile(q)));
    }
    p.insert("max_ns".into(), json!(h.max()));
    p.insert("samples".into(), json!(h.len()));
    Value::Object(p)
}

/// The latency-percentile curve: (percentile, latency in ns) at the
/// histogram's own steps, ticks halving the distance to 100 %. The last
/// point, 100 %, is placed at 1 − 1/samples: the most a run can resolve.
fn curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let top = 1.0 - 1.0 / h.len() as f64;
    h.iter_quantiles(5)
        .map(|v| {
            (
                v.quantile_iterated_to().min(top) * 100.0,
                v.value_iterated_to(),
            )
        })
        .collect()
}

fn fmt_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

fn table(r: &Value) -> String {
    let n = |k: &str| r[k].as_f64().unwrap_or(0.0);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} {} subscriber(s) ({}), {} publisher(s) ({}), {} B, rate {}, {:.1} s",
        r["url"].as_str().unwrap_or_default(),
        r["subs"],
        r["sub_transport"].as_str().unwrap_or_default(),
        r["pubs"],
        r["pub_transport"].as_str().unwrap_or_default(),
        r["size"],
        if n("rate") > 0.0 {
            format!("{}/s", n("rate"))
        } else {
            "flat out".into()
        },
        n("seconds")
    );
    let _ = writeln!(t, "| metric | value |\n|---|---|");
    let _ = writeln!(t, "| publishes/s | {:.0} |", n("publishes_per_s"));
    let _ = writeln!(t, "| deliveries/s | {:.0} |", n("deliveries_per_s"));
    let lat = &r["latency"];
    for (name, _) in QUANTILES {
        let v = lat[format!("{name}_ns")].as_u64().unwrap_or(0);
        let _ = writeln!(t, "| latency {name} | {} |", fmt_ns(v));
    }
    let _ = writeln!(
        t,
        "| latency max | {} |",
        fmt_ns(lat["max_ns"].as_u64().unwrap_or(0))
    );
    for (part, what) in [
        ("ingress", "publisher → server timestamp"),
        ("egress", "server timestamp → subscriber"),
    ] {
        let p = &r[part];
        if p["samples"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let at = |k: &str| fmt_ns(p[k].as_u64().unwrap_or(0));
        let _ = writeln!(
            t,
            "| {what}: p50 / p99 / p99.9 / max | {} / {} / {} / {} |",
            at("p50_ns"),
            at("p99_ns"),
            at("p99.9_ns"),
            at("max_ns")
        );
    }
    for k in ["published", "delivered", "lost", "duplicates"] {
        let _ = writeln!(t, "| {k} | {} |", r[k]);
    }
    let _ = writeln!(t, "| connection errors | {} |", r["connection_errors"]);
    if r["error_replies"].as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(t, "| error replies | {} |", r["error_replies"]);
    }
    for note in r["notes"].as_array().into_iter().flatten() {
        let _ = writeln!(t, "note: {}", note.as_str().unwrap_or_default());
    }
    t
}

/// DejaVu Sans reduced to ASCII: plotters' `ab_glyph` text needs a font,
/// and an embedded one spares users a fontconfig dependency.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-ascii.ttf");

/// Draws the latency-percentile curves of `runs` (label, run) into `path`:
/// x is the percentile on a log scale of 1/(1 − q), y the latency in µs.
fn plot(path: &Path, runs: &[(String, Value)]) -> Result<(), String> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "embedded font unreadable".to_string())?;
    let curves: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(label, r)| {
            let pts = r["curve"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let q = p[0].as_f64()? / 100.0;
                    // 1/(1 − q), capped where the histogram ends (q = 1).
                    let x = (1.0 / (1.0 - q).max(1e-7)).log10();
                    Some((x, p[1].as_f64()? / 1e3))
                })
                .collect();
            (label.clone(), pts)
        })
        .collect();
    let x_max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(2.0f64, f64::max)
        .ceil();
    let y_max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.05;
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("End-to-end latency by percentile", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| {
            // 0 → 0, 1 → 90, 2 → 99, 3 → 99.9 …
            let k = x.round() as i32;
            if k == 0 {
                "0".into()
            } else {
                let p = 100.0 - 100.0 / 10f64.powi(k);
                format!("{p:.*}", (k - 2).max(0) as usize)
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("percentile")
        .y_desc("latency (µs)".replace('µ', "u"))
        .draw()
        .map_err(|e| e.to_string())?;
    let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (label, pts)) in curves.into_iter().enumerate() {
        let c = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn main() {
    let a = parse_args();
    if !a.compare.is_empty() {
        let Some(out) = &a.plot else {
            usage("--compare needs --plot FILE.png")
        };
        let runs: Vec<(String, Value)> = a
            .compare
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f)
                    .unwrap_or_else(|e| usage(&format!("{}: {e}", f.display())));
                let v = serde_json::from_str(&text)
                    .unwrap_or_else(|e| usage(&format!("{}: {e}", f.display())));
                (
                    f.file_stem().unwrap_or_default().to_string_lossy().into(),
                    v,
                )
            })
            .collect();
        if let Err(e) = plot(out, &runs) {
            eprintln!("herald-bench: plot: {e}");
            std::process::exit(1);
        }
        return;
    }
    let r = match run(&a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald-bench: {e}");
            std::process::exit(1);
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
    } else {
        print!("{}", table(&r));
    }
    if let Some(out) = &a.plot {
        let label = format!(
            "{} sub(s) {}, {} pub(s) {}",
            a.subs,
            if a.sse { "sse" } else { "ws" },
            a.pubs,
            if a.http { "http" } else { "ws" }
        );
        if let Err(e) = plot(out, &[(label, r)]) {
            eprintln!("herald-bench: plot: {e}");
            std::process::exit(1);
        }
    }
}
