//! Criterion benchmarks of Herald's ring against its peers, in the same run
//! (the disruptor crate's style: `iter_custom`, a baseline case first).
//!
//! - `ring_fanout/{N}sub/*`: 1 publisher → N subscribers, 64 B messages, flat
//!   out; one iteration is one message delivered to every subscriber. The
//!   `baseline` case stamps and checks the same messages in one thread, with
//!   no hand-over: the floor under every system.
//! - `ring_publish/{N}sub/*`: ns per publish, single thread, with 1 or 64
//!   idle subscribers (drained between rounds, untimed).
//!
//! `cargo bench -p herald-benches --bench ring`. The markdown table with
//! latency percentiles and ratios comes from the `ring_table` binary.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_benches::ring::{baseline, publish_cost, run, Pace, System, Workload};

fn fanout(c: &mut Criterion) {
    for subscribers in [1, 4, 16] {
        let mut group = c.benchmark_group(format!("ring_fanout/{subscribers}sub"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        group.throughput(Throughput::Elements(1));
        let workload = |messages| Workload {
            subscribers,
            messages,
            pace: Pace::FlatOut,
            sample_every: 8,
        };
        group.bench_function("baseline", |b| {
            b.iter_custom(|iters| baseline(&workload(iters)))
        });
        for system in System::ALL {
            group.bench_function(BenchmarkId::from_parameter(system.id()), |b| {
                b.iter_custom(|iters| {
                    let outcome = run(system, &workload(iters.max(1)));
                    outcome.check().expect("the system delivered the workload");
                    outcome.elapsed
                })
            });
        }
        group.finish();
    }
}

fn publish(c: &mut Criterion) {
    const BATCH: usize = 4096;
    for subscribers in [1, 64] {
        let mut group = c.benchmark_group(format!("ring_publish/{subscribers}sub"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2));
        group.throughput(Throughput::Elements(1));
        for system in System::ALL {
            group.bench_function(BenchmarkId::from_parameter(system.id()), |b| {
                b.iter_custom(|iters| {
                    let rounds = (iters as usize).div_ceil(BATCH).max(1);
                    let ns: f64 = publish_cost(system, subscribers, rounds, BATCH)
                        .iter()
                        .sum::<f64>()
                        * BATCH as f64;
                    // Scale to the requested iteration count.
                    Duration::from_nanos((ns * iters as f64 / (rounds * BATCH) as f64) as u64)
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, fanout, publish);
criterion_main!(benches);
