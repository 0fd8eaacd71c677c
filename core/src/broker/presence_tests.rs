//! The presence registry (`broker::presence`): join / heartbeat / leave /
//! expire with a fake clock, limits, the `$presence` event encoding, and a
//! property test against a naive model. (The JSON toolkit's own tests are in
//! `json.rs`.)

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    presence_event, Presence, PresenceChange, PresenceConfig, PresenceError, PresenceKind, Session,
};
use crate::json;
use proptest::prelude::*;

const S: u64 = 1_000_000_000;

fn joined(c: PresenceChange) -> Session {
    match c {
        PresenceChange::Joined(s) => s,
        other => panic!("expected Joined, got {other:?}"),
    }
}

// ---------------------------------------------------------------- lifecycle

#[test]
fn join_heartbeat_leave_expire_with_a_fake_clock() {
    let p = Presence::new(Duration::from_secs(10));
    assert!(p.is_empty());
    let s = joined(p.join("room", "c1", "alice", "phone", "", 100 * S).unwrap());
    assert_eq!(
        s,
        Session {
            client_id: "c1".into(),
            user: "alice".into(),
            device: "phone".into(),
            metadata: String::new(),
            connected_at_ns: 100 * S,
            last_heartbeat_ns: 100 * S,
        }
    );
    joined(
        p.join("room", "c0", "bob", "web", r#"{"x":1}"#, 101 * S)
            .unwrap(),
    );
    joined(
        p.join("lobby", "c1", "alice", "phone", "", 102 * S)
            .unwrap(),
    );
    assert_eq!(p.len(), 3);
    let ids: Vec<_> = p.list("room").into_iter().map(|s| s.client_id).collect();
    assert_eq!(ids, ["c0", "c1"], "sorted by client id");
    assert_eq!(p.topics_of("c1"), ["lobby", "room"]);
    assert_eq!(p.topics(), ["lobby", "room"]);
    assert_eq!(p.count("room"), 2);

    // Heartbeats keep c1 in `room` alive; c0 goes silent.
    p.heartbeat("room", "c1", 108 * S).unwrap();
    assert_eq!(p.session("room", "c1").unwrap().last_heartbeat_ns, 108 * S);
    assert!(
        p.expire(111 * S).is_empty(),
        "exactly the TTL old: still there"
    );
    let gone = p.expire(111 * S + 1);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].0, "room");
    assert_eq!(gone[0].1.client_id, "c0");
    assert_eq!(p.count("room"), 1);

    // c1 left `lobby` explicitly; its `room` session then expires.
    let left = p.leave("lobby", "c1", 113 * S).unwrap();
    assert_eq!(left.connected_at_ns, 102 * S);
    assert_eq!(p.leave("lobby", "c1", 113 * S), None);
    assert_eq!(p.topics_of("c1"), ["room"]);
    assert_eq!(p.topics(), ["room"]);
    let gone = p.expire(200 * S);
    assert_eq!(gone.len(), 1);
    assert!(p.is_empty());
    assert!(p.topics_of("c1").is_empty());
    assert!(p.list("room").is_empty());
    assert_eq!(
        p.heartbeat("room", "c1", 201 * S),
        Err(PresenceError::UnknownSession {
            topic: "room".into(),
            client_id: "c1".into()
        })
    );
}

#[test]
fn rejoin_refreshes_and_keeps_connected_at() {
    let p = Presence::new(Duration::from_secs(5));
    joined(p.join("t", "c", "u", "d", "", 10).unwrap());
    let r = p.join("t", "c", "u2", "d2", "[1]", 20).unwrap();
    let PresenceChange::Refreshed(s) = &r else {
        panic!("{r:?}")
    };
    assert_eq!(
        (
            s.user.as_str(),
            s.device.as_str(),
            s.metadata.as_str(),
            s.connected_at_ns,
            s.last_heartbeat_ns
        ),
        ("u2", "d2", "[1]", 10, 20)
    );
    assert_eq!(r.session(), s);
    assert_eq!(p.len(), 1);
}

#[test]
fn heartbeats_never_move_backwards() {
    let p = Presence::new(Duration::from_nanos(100));
    p.join("t", "c", "u", "d", "", 1000).unwrap();
    p.heartbeat("t", "c", 500).unwrap();
    p.join("t", "c", "u", "d", "", 700).unwrap();
    assert_eq!(p.session("t", "c").unwrap().last_heartbeat_ns, 1000);
    assert!(p.expire(1100).is_empty());
    assert_eq!(p.expire(1101).len(), 1);
    // A clock behind every heartbeat expires nothing.
    p.join("t", "c", "u", "d", "", 5000).unwrap();
    assert!(p.expire(0).is_empty());
}

#[test]
fn expire_returns_oldest_first() {
    let p = Presence::new(Duration::from_nanos(10));
    p.join("b", "x", "u", "d", "", 3).unwrap();
    p.join("a", "y", "u", "d", "", 1).unwrap();
    p.join("a", "x", "u", "d", "", 3).unwrap();
    p.join("z", "x", "u", "d", "", 50).unwrap();
    let order: Vec<_> = p
        .expire(20)
        .into_iter()
        .map(|(t, s)| (t, s.client_id, s.last_heartbeat_ns))
        .collect();
    assert_eq!(
        order,
        [
            ("a".to_owned(), "y".to_owned(), 1),
            ("a".to_owned(), "x".to_owned(), 3),
            ("b".to_owned(), "x".to_owned(), 3),
        ]
    );
    assert_eq!(p.topics_of("x"), ["z"]);
}

#[test]
fn client_wide_heartbeat_and_leave() {
    let p = Presence::new(Duration::from_nanos(10));
    for t in ["t3", "t1", "t2"] {
        p.join(t, "conn", "u", "d", "", 0).unwrap();
    }
    p.join("t1", "other", "u", "d", "", 0).unwrap();
    assert_eq!(p.heartbeat_client("conn", 8), 3);
    assert_eq!(p.heartbeat_client("nobody", 8), 0);
    let gone = p.expire(15);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].1.client_id, "other");
    let left: Vec<_> = p
        .leave_client("conn", 16)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(left, ["t1", "t2", "t3"]);
    assert!(p.is_empty());
    assert!(p.leave_client("conn", 17).is_empty());
}

#[test]
fn huge_ttl_never_overflows() {
    let p = Presence::new(Duration::MAX);
    p.join("t", "c", "u", "d", "", u64::MAX - 1).unwrap();
    assert!(p.expire(u64::MAX).is_empty());
    let p = Presence::new(Duration::ZERO);
    p.join("t", "c", "u", "d", "", 5).unwrap();
    assert!(p.expire(5).is_empty());
    assert_eq!(p.expire(6).len(), 1);
}

// ---------------------------------------------------------------- limits

#[test]
fn field_limits_are_enforced() {
    let p = Presence::new(Duration::from_secs(1));
    let ok = "x".repeat(256);
    let long = "x".repeat(257);
    p.join("t", &ok, &ok, &ok, "", 0).unwrap();
    for (field, args) in [
        ("client_id", [long.as_str(), "u", "d"]),
        ("user", ["c", long.as_str(), "d"]),
        ("device", ["c", "u", long.as_str()]),
    ] {
        let e = p.join("t", args[0], args[1], args[2], "", 0).unwrap_err();
        assert_eq!(
            e,
            PresenceError::FieldTooLong {
                field,
                len: 257,
                max: 256
            }
        );
        assert!(e.to_string().contains(field), "{e}");
    }
    // Metadata: 4096 bytes of valid JSON are fine, 4097 are not.
    let meta_ok = format!("\"{}\"", "m".repeat(4094));
    assert_eq!(meta_ok.len(), 4096);
    p.join("t", "m", "u", "d", &meta_ok, 0).unwrap();
    let meta_long = format!("\"{}\"", "m".repeat(4095));
    assert!(matches!(
        p.join("t", "m2", "u", "d", &meta_long, 0),
        Err(PresenceError::FieldTooLong {
            field: "metadata",
            len: 4097,
            max: 4096
        })
    ));
    assert_eq!(
        p.join("", "c", "u", "d", "", 0),
        Err(PresenceError::EmptyField("topic"))
    );
    assert_eq!(
        p.join("t", "", "u", "d", "", 0),
        Err(PresenceError::EmptyField("client_id"))
    );
    for bad in ["{", "nope", "{\"a\":}", "[1,]", "\"\u{1}\"", "1 2"] {
        let e = p.join("t", "c", "u", "d", bad, 0).unwrap_err();
        assert!(matches!(e, PresenceError::InvalidMetadata(_)), "{bad:?}");
        assert!(e.to_string().contains("metadata"), "{e}");
    }
    // Failed joins left nothing behind.
    assert_eq!(p.len(), 2);
}

#[test]
fn sessions_per_topic_are_capped() {
    let p = Presence::with_config(PresenceConfig {
        max_sessions_per_topic: 3,
        ..PresenceConfig::with_ttl(Duration::from_secs(1))
    });
    for c in ["a", "b", "c"] {
        p.join("t", c, "u", "d", "", 0).unwrap();
    }
    let e = p.join("t", "d", "u", "d", "", 0).unwrap_err();
    assert_eq!(
        e,
        PresenceError::TopicFull {
            topic: "t".into(),
            max: 3
        }
    );
    // Rejoining an existing session is not a new one; other topics are free.
    assert!(matches!(
        p.join("t", "a", "u", "d", "", 1),
        Ok(PresenceChange::Refreshed(_))
    ));
    p.join("t2", "d", "u", "d", "", 0).unwrap();
    p.leave("t", "b", 2);
    p.join("t", "d", "u", "d", "", 2).unwrap();
    assert_eq!(p.count("t"), 3);
    assert_eq!(PresenceConfig::default().max_sessions_per_topic, 100_000);
}

#[test]
fn concurrent_use_is_consistent() {
    let p = Presence::new(Duration::from_nanos(1000));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let p = &p;
            s.spawn(move || {
                for i in 0..2000u64 {
                    let topic = format!("t{}", i % 7);
                    let client = format!("c{t}-{}", i % 13);
                    p.join(&topic, &client, "u", "d", "", i).unwrap();
                    if i % 3 == 0 {
                        p.leave(&topic, &client, i);
                    }
                    if i % 50 == 0 {
                        p.expire(i);
                    }
                }
            });
        }
    });
    let total: usize = p.topics().iter().map(|t| p.count(t)).sum();
    assert_eq!(total, p.len());
    for t in p.topics() {
        for s in p.list(&t) {
            assert!(p.topics_of(&s.client_id).contains(&t));
        }
    }
}

// ---------------------------------------------------------------- events

fn escaped(s: &str) -> String {
    let mut v = Vec::new();
    json::write_string(&mut v, s);
    String::from_utf8(v).unwrap()
}

#[test]
fn presence_event_payloads() {
    let s = Session {
        client_id: "c\"1".into(),
        user: "al\\ice".into(),
        device: "ph\none".into(),
        metadata: " { \"role\" : \"admin\" } ".into(),
        connected_at_ns: 5,
        last_heartbeat_ns: u64::MAX,
    };
    let (ty, payload) = presence_event(PresenceKind::Join, "acme.ws.42", &s);
    assert_eq!(ty, "presence.join");
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        r#"{"topic":"acme.ws.42","client_id":"c\"1","user":"al\\ice","device":"ph\none","metadata":{"role":"admin"},"connected_at_ns":5,"last_heartbeat_ns":18446744073709551615}"#
    );
    assert_eq!(
        presence_event(PresenceKind::Leave, "t", &s).0,
        "presence.leave"
    );
    assert_eq!(
        presence_event(PresenceKind::Expire, "t", &s).0,
        "presence.expire"
    );
    let empty = Session {
        metadata: String::new(),
        ..s.clone()
    };
    let (_, p) = presence_event(PresenceKind::Leave, "t", &empty);
    assert!(String::from_utf8(p).unwrap().contains(r#""metadata":null"#));
    // A hand-built session with invalid metadata yields null there, as the
    // server's presence list always did.
    let bad = Session {
        metadata: "{oops\n".into(),
        ..s
    };
    let (_, p) = presence_event(PresenceKind::Expire, "t", &bad);
    let p = String::from_utf8(p).unwrap();
    assert!(p.contains(r#","metadata":null,"#), "{p}");
    json::validate(&p).unwrap();
    assert_eq!(p, format!("{{\"topic\":\"t\",{}", &bad.to_json()[1..]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the fields, the event payload is valid JSON, and its strings
    /// decode to the fields.
    #[test]
    fn presence_payload_is_always_valid_json(
        topic in any::<String>(),
        client in any::<String>(),
        user in ".*",
        meta in prop_oneof![Just(String::new()), any::<String>(), Just("[1, {\"a\": \"\\u00e9\"}]".to_owned())],
        t in any::<u64>(),
    ) {
        let s = Session {
            client_id: client.clone(),
            user: user.clone(),
            device: "d".into(),
            metadata: meta,
            connected_at_ns: t,
            last_heartbeat_ns: t,
        };
        let (_, p) = presence_event(PresenceKind::Join, &topic, &s);
        let p = String::from_utf8(p).unwrap();
        prop_assert!(json::validate(&p).is_ok(), "{}", p);
        prop_assert!(p.contains(&escaped(&client)));
        prop_assert!(p.contains(&escaped(&user)));
        let head = format!("{{\"topic\":{}", escaped(&topic));
        prop_assert!(p.starts_with(&head));
    }
}

// ---------------------------------------------------------------- model

const TOPICS: [&str; 3] = ["t0", "t1", "t2"];
const CLIENTS: [&str; 4] = ["c0", "c1", "c2", "c3"];
const METAS: [&str; 4] = ["", "{}", "{\"a\": [1, 2]}", "bad{"];
const TTL: u64 = 10;
const CAP: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Join(usize, usize, usize, usize),
    Heartbeat(usize, usize),
    HeartbeatClient(usize),
    Leave(usize, usize),
    LeaveClient(usize),
    Expire,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..4usize, 0..2usize, 0..4usize).prop_map(|(t, c, u, m)| Op::Join(t, c, u, m)),
        3 => (0..3usize, 0..4usize).prop_map(|(t, c)| Op::Heartbeat(t, c)),
        1 => (0..4usize).prop_map(Op::HeartbeatClient),
        2 => (0..3usize, 0..4usize).prop_map(|(t, c)| Op::Leave(t, c)),
        1 => (0..4usize).prop_map(Op::LeaveClient),
        2 => Just(Op::Expire),
        3 => (0..8u64).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn presence_matches_model(ops in prop::collection::vec((op(), 0..3u64), 0..150)) {
        let p = Presence::with_config(PresenceConfig {
            max_sessions_per_topic: CAP,
            ..PresenceConfig::with_ttl(Duration::from_nanos(TTL))
        });
        // (topic, client) → session
        let mut m: BTreeMap<(String, String), Session> = BTreeMap::new();
        let mut clock = 100u64;
        for (op, skew) in ops {
            // Calls may carry a slightly stale clock.
            let now = clock - skew;
            match op {
                Op::Join(t, c, u, mi) => {
                    let (t, c, u, meta) = (TOPICS[t], CLIENTS[c], ["u0", "u1"][u], METAS[mi]);
                    let got = p.join(t, c, u, "dev", meta, now);
                    let key = (t.to_owned(), c.to_owned());
                    if meta == "bad{" {
                        prop_assert!(matches!(got, Err(PresenceError::InvalidMetadata(_))));
                    } else if let Some(s) = m.get_mut(&key) {
                        s.user = u.into();
                        s.metadata = meta.into();
                        s.last_heartbeat_ns = s.last_heartbeat_ns.max(now);
                        prop_assert_eq!(got, Ok(PresenceChange::Refreshed(s.clone())));
                    } else if m.keys().filter(|(mt, _)| mt == t).count() >= CAP {
                        prop_assert_eq!(got, Err(PresenceError::TopicFull { topic: t.into(), max: CAP }));
                    } else {
                        let s = Session {
                            client_id: c.into(),
                            user: u.into(),
                            device: "dev".into(),
                            metadata: meta.into(),
                            connected_at_ns: now,
                            last_heartbeat_ns: now,
                        };
                        m.insert(key, s.clone());
                        prop_assert_eq!(got, Ok(PresenceChange::Joined(s)));
                    }
                }
                Op::Heartbeat(t, c) => {
                    let got = p.heartbeat(TOPICS[t], CLIENTS[c], now);
                    match m.get_mut(&(TOPICS[t].to_owned(), CLIENTS[c].to_owned())) {
                        Some(s) => {
                            s.last_heartbeat_ns = s.last_heartbeat_ns.max(now);
                            prop_assert_eq!(got, Ok(()));
                        }
                        None => prop_assert_eq!(got, Err(PresenceError::UnknownSession {
                            topic: TOPICS[t].into(),
                            client_id: CLIENTS[c].into(),
                        })),
                    }
                }
                Op::HeartbeatClient(c) => {
                    let mut n = 0;
                    for ((_, mc), s) in m.iter_mut() {
                        if mc == CLIENTS[c] {
                            s.last_heartbeat_ns = s.last_heartbeat_ns.max(now);
                            n += 1;
                        }
                    }
                    prop_assert_eq!(p.heartbeat_client(CLIENTS[c], now), n);
                }
                Op::Leave(t, c) => {
                    let want = m.remove(&(TOPICS[t].to_owned(), CLIENTS[c].to_owned()));
                    prop_assert_eq!(p.leave(TOPICS[t], CLIENTS[c], now), want);
                }
                Op::LeaveClient(c) => {
                    let keys: Vec<_> = m.keys().filter(|(_, mc)| mc == CLIENTS[c]).cloned().collect();
                    let want: Vec<_> = keys.into_iter().map(|k| {
                        let s = m.remove(&k).unwrap();
                        (k.0, s)
                    }).collect();
                    prop_assert_eq!(p.leave_client(CLIENTS[c], now), want);
                }
                Op::Expire => {
                    let keys: Vec<_> = m.iter()
                        .filter(|(_, s)| now.saturating_sub(s.last_heartbeat_ns) > TTL)
                        .map(|(k, _)| k.clone())
                        .collect();
                    let mut want: Vec<_> = keys.into_iter().map(|k| {
                        let s = m.remove(&k).unwrap();
                        (k.0, s)
                    }).collect();
                    want.sort_by(|a, b| {
                        (a.1.last_heartbeat_ns, &a.0, &a.1.client_id)
                            .cmp(&(b.1.last_heartbeat_ns, &b.0, &b.1.client_id))
                    });
                    prop_assert_eq!(p.expire(now), want);
                }
                Op::Advance(d) => clock += d,
            }
            // The whole observable state agrees.
            prop_assert_eq!(p.len(), m.len());
            for t in TOPICS {
                let want: Vec<Session> = m.iter().filter(|((mt, _), _)| mt == t).map(|(_, s)| s.clone()).collect();
                prop_assert_eq!(p.list(t), want);
            }
            for c in CLIENTS {
                let want: Vec<String> = m.keys().filter(|(_, mc)| mc == c).map(|(t, _)| t.clone()).collect();
                prop_assert_eq!(p.topics_of(c), want);
            }
            let mut topics: Vec<String> = m.keys().map(|(t, _)| t.clone()).collect();
            topics.dedup();
            prop_assert_eq!(p.topics(), topics);
        }
    }
}
