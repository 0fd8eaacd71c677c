//! Crash and reopen: a child process publishes and acknowledges as a durable
//! consumer until it is killed with SIGKILL at a random moment. After every
//! kill the broker reopens with dense global and per-topic sequences, keeps
//! every event whose publish returned (durability `Always`), continues the
//! sequences without reuse, and resumes the consumer at or after its last
//! acknowledged checkpoint.
//!
//! `HERALD_LONG=1` runs more kills.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald_core::broker::{Delivery, Filter, PublishOptions, StartAt};
use herald_core::log::Durability;
use herald_core::{Broker, BrokerConfig};

const TOPICS: [&str; 3] = ["crash.a", "crash.b", "crash.c"];
const CHILD_ENV: &str = "HERALD_BROKER_CRASH_CHILD";

fn config(dir: &std::path::Path, durability: Durability) -> BrokerConfig {
    let mut c = BrokerConfig::new(dir);
    c.ring_capacity = 1 << 16;
    c.max_payload = 256;
    c.log.segment_size = 1 << 14;
    c.log.durability = durability;
    c.log.prefault = false;
    c
}

/// The child: publish forever, report each acknowledged publish and ack.
fn child(dir: &str) {
    let broker = Broker::open(config(dir.as_ref(), Durability::Always)).unwrap();
    let pubs: Vec<_> = TOPICS
        .iter()
        .map(|t| broker.publisher(t).unwrap())
        .collect();
    let mut consumer = broker
        .subscribe_consumer(
            "crash-consumer",
            Filter::patterns(&["crash.*"]).unwrap(),
            StartAt::Seq(1),
        )
        .unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let p = pubs[(i % 3) as usize]
            .publish("e", &i.to_le_bytes(), PublishOptions::default())
            .unwrap();
        writeln!(out, "P {} {} {}", p.seq, i % 3, p.topic_seq).unwrap();
        if i % 7 == 0 {
            // Consume what is there and acknowledge it.
            let mut last = None;
            while let Some(Delivery::Event(e)) = consumer.try_next().unwrap() {
                last = Some(e.seq);
            }
            if let Some(seq) = last {
                consumer.ack_up_to(seq).unwrap();
                writeln!(out, "A {seq}").unwrap();
            }
        }
        out.flush().unwrap();
    }
}

#[test]
fn broker_survives_sigkill_with_dense_sequences_and_checkpoints() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let kills = if std::env::var_os("HERALD_LONG").is_some() {
        100
    } else {
        15
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let (mut max_acked_pub, mut max_ack, mut child_publishes, mut child_acks) =
        (0u64, 0u64, 0u64, 0u64);
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "broker_survives_sigkill_with_dense_sequences_and_checkpoints",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(20 + rng % 80);
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        let started = Instant::now();
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["P", seq, _, _] => {
                    max_acked_pub = max_acked_pub.max(seq.parse().unwrap());
                    child_publishes += 1;
                }
                ["A", seq] => {
                    max_ack = max_ack.max(seq.parse().unwrap());
                    child_acks += 1;
                }
                _ => {} // a line torn by the kill, or test-harness output
            }
        }
        // Reopen and check.
        let broker = Broker::open(config(dir.path(), Durability::Always)).unwrap();
        let mut all = broker
            .subscribe(Filter::patterns(&["crash.*"]).unwrap(), StartAt::Seq(1))
            .unwrap();
        let mut next_seq = 1;
        let mut topic_seq = [0u64; 3];
        while let Some(d) = all.try_next().unwrap() {
            let Delivery::Event(e) = d else {
                panic!("no retention configured, yet {d:?}")
            };
            assert_eq!(e.seq, next_seq, "round {round}: global sequences are dense");
            next_seq += 1;
            let t = TOPICS.iter().position(|t| **t == *e.topic).unwrap();
            topic_seq[t] += 1;
            assert_eq!(
                e.topic_seq, topic_seq[t],
                "round {round}: topic sequences are dense"
            );
        }
        assert!(
            next_seq > max_acked_pub,
            "round {round}: acknowledged event {max_acked_pub} lost (log ends at {})",
            next_seq - 1
        );
        let checkpoint = broker.consumer_checkpoint("crash-consumer").unwrap_or(0);
        assert!(
            checkpoint >= max_ack,
            "round {round}: checkpoint {checkpoint} behind acknowledged {max_ack}"
        );
        assert!(checkpoint < next_seq);
        // Sequences continue without reuse.
        let p = broker
            .publisher(TOPICS[0])
            .unwrap()
            .publish("probe", b"", PublishOptions::default())
            .unwrap();
        assert_eq!(p.seq, next_seq, "round {round}");
        assert_eq!(p.topic_seq, topic_seq[0] + 1, "round {round}");
        max_acked_pub = p.seq;
        broker.close().unwrap();
    }
    eprintln!(
        "{kills} kills, {child_publishes} acknowledged publishes, {child_acks} consumer acks"
    );
    assert!(
        child_publishes > 10 * kills as u64 && child_acks > 0,
        "the children made progress"
    );
}
