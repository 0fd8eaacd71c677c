//! Criterion benchmark of schema validation on the publish path: ns per
//! publish of a 166-byte order event to the broker (log on, durability
//! `Never`), without a schema, with a rule for another topic (the rules are
//! scanned, the payload is not decoded), and with a matching rule (decoded
//! and validated, then published); and the check alone, with the matching
//! rule and with the other topic's. The publishes append to one growing
//! log, so the later cases pay for more segment rolls: the checks alone are
//! the cleaner figures.
//!
//! `cargo bench -p herald-benches --bench schema`. Results and method:
//! `docs/BENCHMARKS.md`, "Schema validation".

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use herald_core::broker::PublishOptions;
use herald_core::log::Durability;
use herald_core::{Broker, BrokerConfig};
use herald_server::fuzzing::SchemaCheck;
use herald_server::SchemaRule;

const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["id", "total", "currency", "lines"],
  "properties": {
    "id": {"type": "integer", "minimum": 1},
    "total": {"type": "number", "minimum": 0},
    "currency": {"enum": ["EUR", "USD", "GBP"]},
    "email": {"type": "string", "format": "email"},
    "lines": {
      "type": "array",
      "maxItems": 100,
      "items": {
        "type": "object",
        "required": ["sku", "qty"],
        "properties": {"sku": {"type": "string", "maxLength": 32}, "qty": {"type": "integer", "minimum": 1}}
      }
    }
  }
}"#;

const PAYLOAD: &[u8] = br#"{"id":12345,"total":99.5,"currency":"EUR","email":"ann@example.com","lines":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}"#;

fn schemas(dir: &std::path::Path, topics: &str) -> SchemaCheck {
    let file = dir.join("order.json");
    std::fs::write(&file, SCHEMA).unwrap();
    let rule = SchemaRule {
        topics: topics.into(),
        event_type: Some("order.created".into()),
        file,
    };
    SchemaCheck::compile(&[rule]).unwrap()
}

fn publish(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path().join("data"));
    config.log.durability = Durability::Never;
    config.log.prefault = false;
    let broker = Broker::open(config).unwrap();
    let publisher = broker.publisher("orders.eu").unwrap();
    let matching = schemas(dir.path(), "orders.>");
    let other = schemas(dir.path(), "invoices.>");
    assert_eq!(
        matching.check("orders.eu", "order.created", PAYLOAD),
        Ok(())
    );
    assert!(matching.check("orders.eu", "order.created", b"{}").is_err());

    let mut group = c.benchmark_group("schema_publish");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let publish = || {
        publisher
            .publish("order.created", PAYLOAD, PublishOptions::default())
            .unwrap()
    };
    group.bench_function("no_schema", |b| b.iter(publish));
    group.bench_function("other_topic_rule", |b| {
        b.iter(|| {
            other.check("orders.eu", "order.created", PAYLOAD).unwrap();
            publish()
        })
    });
    group.bench_function("matching_rule", |b| {
        b.iter(|| {
            matching
                .check("orders.eu", "order.created", PAYLOAD)
                .unwrap();
            publish()
        })
    });
    group.bench_function("check_alone", |b| {
        b.iter(|| {
            matching
                .check("orders.eu", "order.created", PAYLOAD)
                .unwrap()
        })
    });
    group.bench_function("check_alone_other_topic", |b| {
        b.iter(|| other.check("orders.eu", "order.created", PAYLOAD).unwrap())
    });
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
