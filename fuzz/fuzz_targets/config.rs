//! Arbitrary text as the server's TOML configuration file: parsing and
//! applying it must never panic, and what the typed parser accepts must
//! agree with a generic TOML reading of the same text (every key known,
//! every value carried over unchanged), and with what `apply` sets.
//!
//! The key-file settings are dropped before `apply`: they name files to
//! read, which a fuzzer must not choose.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use herald_core::log::Durability;
use herald_server::config::FileConfig;
use herald_server::ServerConfig;
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

const KEYS: &[&str] = &[
    "listen",
    "data",
    "workers",
    "anonymous",
    "allowed_origins",
    "jwt_secret_file",
    "jwt_rs256_public_key",
    "max_body",
    "max_output",
    "max_connections",
    "max_connections_per_ip",
    "keepalive_secs",
    "slow_client_deadline_secs",
    "ring_capacity",
    "max_payload",
    "segment_size",
    "durability",
    "retention_max_age_secs",
    "retention_max_bytes",
];

fn int(t: &Table, k: &str) -> Option<u64> {
    t.get(k).map(|v| {
        let i = v
            .as_integer()
            .unwrap_or_else(|| panic!("{k} accepted as {v:?}"));
        u64::try_from(i).unwrap_or_else(|_| panic!("{k} = {i} accepted"))
    })
}

fn string(t: &Table, k: &str) -> Option<String> {
    t.get(k).map(|v| {
        v.as_str()
            .unwrap_or_else(|| panic!("{k} accepted as {v:?}"))
            .to_owned()
    })
}

fn durability(s: &str) -> Option<Durability> {
    match s {
        "never" => Some(Durability::Never),
        "always" => Some(Durability::Always),
        _ => {
            let ms = s.strip_prefix("interval:")?;
            let digits = ms.strip_prefix('+').unwrap_or(ms);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let ms: u64 = digits.parse().ok()?;
            (ms > 0).then(|| Durability::Interval(Duration::from_millis(ms)))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut file) = toml::from_str::<FileConfig>(text) else {
        return;
    };
    let table: Table = toml::from_str(text).expect("typed parse accepted what TOML refuses");
    for k in table.keys() {
        assert!(KEYS.contains(&k.as_str()), "unknown key {k:?} accepted");
    }
    let usize_of = |v: Option<usize>| v.map(|v| v as u64);
    assert_eq!(usize_of(file.workers), int(&table, "workers"));
    assert_eq!(usize_of(file.max_body), int(&table, "max_body"));
    assert_eq!(usize_of(file.max_output), int(&table, "max_output"));
    assert_eq!(
        usize_of(file.max_connections),
        int(&table, "max_connections")
    );
    assert_eq!(
        usize_of(file.max_connections_per_ip),
        int(&table, "max_connections_per_ip")
    );
    assert_eq!(usize_of(file.ring_capacity), int(&table, "ring_capacity"));
    assert_eq!(usize_of(file.max_payload), int(&table, "max_payload"));
    assert_eq!(file.keepalive_secs, int(&table, "keepalive_secs"));
    assert_eq!(
        file.slow_client_deadline_secs,
        int(&table, "slow_client_deadline_secs")
    );
    assert_eq!(file.segment_size, int(&table, "segment_size"));
    assert_eq!(
        file.retention_max_age_secs,
        int(&table, "retention_max_age_secs")
    );
    assert_eq!(file.retention_max_bytes, int(&table, "retention_max_bytes"));
    assert_eq!(
        file.anonymous,
        table.get("anonymous").map(|v| v.as_bool().unwrap())
    );
    assert_eq!(file.durability, string(&table, "durability"));
    let listen = string(&table, "listen").map(|s| s.parse::<SocketAddr>().unwrap());
    assert_eq!(file.listen, listen);
    assert_eq!(
        file.data
            .as_ref()
            .and_then(|p| p.to_str())
            .map(str::to_owned),
        string(&table, "data")
    );
    let origins = table.get("allowed_origins").map(|v| {
        let list = v.as_array().expect("origins are a list");
        list.iter()
            .map(|o| o.as_str().expect("an origin is a string").to_owned())
            .collect::<Vec<_>>()
    });
    assert_eq!(file.allowed_origins, origins);
    assert!(!matches!(table.get("workers"), Some(Value::Float(_))));

    file.jwt_secret_file = None;
    file.jwt_rs256_public_key = None;
    let expected_durability = file.durability.as_deref().map(durability);
    let (max_body, workers) = (file.max_body, file.workers);
    let mut config = ServerConfig::new();
    let applied = file.apply(&mut config);
    match expected_durability {
        Some(None) => assert!(applied.is_err(), "durability accepted"),
        Some(Some(d)) => {
            applied.expect("a valid file applies");
            assert_eq!(config.broker.log.durability, d);
        }
        None => applied.expect("a valid file applies"),
    }
    if let Some(b) = max_body {
        assert_eq!(config.max_body, b);
    }
    if let Some(w) = workers {
        assert_eq!(config.workers, w);
    }
});
