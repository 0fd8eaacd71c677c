//! Deterministic regression benchmarks of the single-threaded hot paths,
//! counted in instructions (and estimated cache hits/misses) under Valgrind's
//! Callgrind with the gungraun harness.
//!
//! Each benchmark measures one operation (or a fixed small batch); the setup
//! (opening a broker, warming it up) runs in the bench arguments, outside the
//! measured function. The state is returned so that dropping it is not
//! counted either.
//!
//! Warm-up counts are 100, not a power of two: the measured operation then
//! never lands on a `Vec` doubling (the per-topic index grows by `push`),
//! which would make the count depend on the warm-up length.
//!
//! `scripts/bench check` runs these and compares them with
//! `benches/baseline.txt`; see `docs/BENCHMARKS.md`, "Regression check:
//! instruction counts".

// The macros generate undocumented public items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::Arc;

use gungraun::{library_benchmark, library_benchmark_group, main};
use herald_core::broker::{
    DeliveryRef, EventRef, Filter, PublishOptions, StartAt, Subscription, TopicPublisher,
};
use herald_core::log::{Durability, Log, LogConfig, LogReader, ReadItem, RecordRef};
use herald_core::ring::{Publisher, RingConfig, Subscriber};
use herald_core::{Broker, BrokerConfig, Ring};
use tempfile::TempDir;

const WARM: u64 = 100;
const EVENT_TYPE: &str = "order.created";

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

// ---------------------------------------------------------------- broker

/// A broker in a temporary directory (fields drop in order: the directory
/// last).
struct BrokerEnv {
    publisher: TopicPublisher,
    sub: Option<Subscription>,
    payload: Vec<u8>,
    broker: Broker,
    _dir: TempDir,
}

/// No background threads (durability `Never`, no prefault) and small sizes:
/// nothing runs beside the measured call.
fn broker_config(dir: &Path) -> BrokerConfig {
    let mut c = BrokerConfig::new(dir);
    c.ring_capacity = 4 << 20;
    c.max_payload = 64 << 10;
    c.log.segment_size = 16 << 20;
    c.log.durability = Durability::Never;
    c.log.prefault = false;
    c
}

fn broker_env(subscribe: bool) -> BrokerEnv {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let broker = Broker::open(broker_config(dir.path())).expect("the broker opens");
    let publisher = broker.publisher("orders").expect("a publisher");
    let sub = subscribe.then(|| {
        broker
            .subscribe(Filter::topic("orders").expect("a filter"), StartAt::Now)
            .expect("a subscription")
    });
    let mut env = BrokerEnv {
        publisher,
        sub,
        payload: payload(128),
        broker,
        _dir: dir,
    };
    for _ in 0..WARM {
        env.publisher
            .publish(EVENT_TYPE, &env.payload, PublishOptions::default())
            .expect("publish");
    }
    if let Some(sub) = env.sub.as_mut() {
        while sub.try_next_with(|_| ()).expect("read").is_some() {}
    }
    env
}

/// One event waiting for a live subscription.
fn broker_env_one_pending() -> BrokerEnv {
    let env = broker_env(true);
    env.publisher
        .publish(EVENT_TYPE, &env.payload, PublishOptions::default())
        .expect("publish");
    env
}

/// A single-topic subscription 256 events behind (one per-topic index
/// batch), its topic interleaved with another in the log.
fn broker_env_catchup() -> BrokerEnv {
    let mut env = broker_env(false);
    let other = env.broker.publisher("users").expect("a publisher");
    for _ in 0..256 {
        other
            .publish(EVENT_TYPE, &env.payload, PublishOptions::default())
            .expect("publish");
        env.publisher
            .publish(EVENT_TYPE, &env.payload, PublishOptions::default())
            .expect("publish");
    }
    env.sub = Some(
        env.broker
            .subscribe(
                Filter::topic("orders").expect("a filter"),
                StartAt::TopicSeq(WARM + 1),
            )
            .expect("a subscription"),
    );
    env
}

fn delivered_seq(d: DeliveryRef<'_>) -> u64 {
    match d {
        DeliveryRef::Event(e) => e.seq,
        DeliveryRef::Gap(g) => g.to,
    }
}

// Broker publish: checks, log append and ring publish of a 128-byte event.
#[library_benchmark]
#[bench::event_128b(broker_env(false))]
fn broker_publish(env: BrokerEnv) -> BrokerEnv {
    black_box(
        env.publisher
            .publish(
                black_box(EVENT_TYPE),
                black_box(&env.payload),
                PublishOptions::default(),
            )
            .expect("publish"),
    );
    env
}

// Broker read: a live subscription takes one 128-byte event from the ring.
#[library_benchmark]
#[bench::one_event(broker_env_one_pending())]
fn broker_next(mut env: BrokerEnv) -> BrokerEnv {
    let sub = env.sub.as_mut().expect("subscribed");
    black_box(sub.try_next_with(delivered_seq).expect("read"));
    env
}

// Catch-up: 256 events of one topic read from the log through the
// per-topic index.
#[library_benchmark]
#[bench::topic_256(broker_env_catchup())]
fn broker_catchup(mut env: BrokerEnv) -> BrokerEnv {
    let sub = env.sub.as_mut().expect("subscribed");
    let mut sum = 0;
    for _ in 0..256 {
        sum += sub
            .try_next_with(delivered_seq)
            .expect("read")
            .expect("an event");
    }
    black_box(sum);
    env
}

library_benchmark_group!(
    name = broker;
    benchmarks = broker_publish, broker_next, broker_catchup
);

// ------------------------------------------------------------------ ring

struct RingEnv {
    publisher: Publisher,
    sub: Subscriber,
    payload: Vec<u8>,
    _ring: Ring,
}

fn ring_env(pending: bool) -> RingEnv {
    let ring = Ring::new(RingConfig {
        capacity: 1 << 20,
        max_record: 64 << 10,
        slots: None,
        first_seq: 0,
    })
    .expect("a ring");
    let mut env = RingEnv {
        publisher: ring.publisher(),
        sub: ring.subscribe(),
        payload: payload(64),
        _ring: ring,
    };
    for _ in 0..WARM {
        env.publisher.publish(&env.payload).expect("publish");
        env.sub.try_read(|_, _| ()).expect("read");
    }
    if pending {
        env.publisher.publish(&env.payload).expect("publish");
    }
    env
}

// Ring publish of a 64-byte record (one subscriber, caught up).
#[library_benchmark]
#[bench::record_64b(ring_env(false))]
fn ring_publish(mut env: RingEnv) -> RingEnv {
    black_box(
        env.publisher
            .publish(black_box(&env.payload))
            .expect("publish"),
    );
    env
}

// Ring read of one 64-byte record, borrowed.
#[library_benchmark]
#[bench::record_64b(ring_env(true))]
fn ring_read(mut env: RingEnv) -> RingEnv {
    black_box(
        env.sub
            .try_read(|seq, p| seq + p.len() as u64)
            .expect("read"),
    );
    env
}

library_benchmark_group!(
    name = ring;
    benchmarks = ring_publish, ring_read
);

// ------------------------------------------------------------------- log

struct LogEnv {
    reader: Option<LogReader>,
    payload: Vec<u8>,
    log: Log,
    _dir: TempDir,
}

fn append(log: &Log, payload: &[u8]) {
    let seq = log.next_seq();
    log.append(&RecordRef {
        seq,
        topic_id: 1,
        topic_seq: seq,
        timestamp_ns: 1_700_000_000_000_000_000 + seq,
        origin: 0,
        event_type: EVENT_TYPE.as_bytes(),
        payload,
        key: b"",
    })
    .expect("append");
}

/// `records` records of `len` bytes appended (after the warm-up ones).
fn log_env(len: usize, records: u64, reader: bool) -> LogEnv {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = LogConfig {
        segment_size: 16 << 20,
        durability: Durability::Never,
        prefault: false,
        ..LogConfig::default()
    };
    let (log, _) = Log::open(dir.path(), config).expect("the log opens");
    let payload = payload(len);
    for _ in 0..WARM + records {
        append(&log, &payload);
    }
    let reader = reader.then(|| log.reader_from_seq(WARM + 1).expect("a reader"));
    LogEnv {
        reader,
        payload,
        log,
        _dir: dir,
    }
}

// Log append of one record (durability `Never`: no sync).
#[library_benchmark]
#[bench::payload_64b(log_env(64, 0, false))]
#[bench::payload_4k(log_env(4096, 0, false))]
fn log_append(env: LogEnv) -> LogEnv {
    append(&env.log, black_box(&env.payload));
    env
}

// Log replay: a reader over 256 records of 128 bytes (CRC checked on read,
// the default).
#[library_benchmark]
#[bench::records_256(log_env(128, 256, true))]
fn log_replay(mut env: LogEnv) -> LogEnv {
    let reader = env.reader.as_mut().expect("a reader");
    let mut sum = 0u64;
    while let Some(item) = reader.next_item() {
        if let ReadItem::Record(r) = item.expect("a record") {
            sum += r.seq + r.payload.len() as u64;
        }
    }
    black_box(sum);
    env
}

library_benchmark_group!(
    name = log;
    benchmarks = log_append, log_replay
);

// ------------------------------------------------------------------ C ABI

mod c {
    //! The C ABI called as a C host calls it (the herald-ffi crate linked
    //! as an rlib).
    use super::*;
    use herald::*;

    pub(super) struct FfiEnv {
        pub(super) broker: *mut herald_broker,
        pub(super) publisher: *mut herald_publisher,
        pub(super) sub: *mut herald_subscriber,
        pub(super) payload: Vec<u8>,
        pub(super) buf: Vec<u8>,
        _dir: TempDir,
    }

    impl Drop for FfiEnv {
        fn drop(&mut self) {
            // SAFETY: live handles from `env`, freed once.
            unsafe {
                herald_subscriber_free(self.sub);
                herald_publisher_free(self.publisher);
                herald_broker_close(self.broker);
            }
        }
    }

    fn ok(r: herald_result) {
        assert_eq!(r, herald_result::HERALD_OK);
    }

    pub(super) fn publish(env: &FfiEnv) -> herald_result {
        // SAFETY: a live publisher; the type and payload point to their lengths.
        unsafe {
            herald_publisher_publish(
                env.publisher,
                EVENT_TYPE.as_ptr().cast(),
                EVENT_TYPE.len(),
                env.payload.as_ptr(),
                env.payload.len(),
                std::ptr::null(),
                std::ptr::null_mut(),
            )
        }
    }

    pub(super) fn next(env: &mut FfiEnv) -> (herald_result, u64) {
        let mut len = 0;
        let mut d = MaybeUninit::<herald_delivery>::uninit();
        // SAFETY: a live subscriber; `buf` has `cap` writable bytes.
        let r = unsafe {
            herald_subscriber_next(
                env.sub,
                env.buf.as_mut_ptr(),
                env.buf.len(),
                &mut len,
                d.as_mut_ptr(),
                0,
            )
        };
        (r, len as u64)
    }

    unsafe extern "C" fn count_delivery(
        user: *mut std::ffi::c_void,
        d: *const herald_delivery,
    ) -> i32 {
        // SAFETY: `user` is the u64 counter `poll` passes; `d` is live for
        // the duration of the callback.
        unsafe {
            *user.cast::<u64>() += (*d).seq;
        }
        0
    }

    /// `herald_subscriber_poll` of what is available now (no copy: the
    /// callback borrows each delivery); the sum of the sequences seen.
    pub(super) fn poll(env: &FfiEnv) -> (i64, u64) {
        let mut seen = 0u64;
        // SAFETY: a live subscriber; the callback does not unwind and reads
        // only the delivery it is given and the counter passed as `user`.
        let n = unsafe {
            herald_subscriber_poll(env.sub, Some(count_delivery), (&raw mut seen).cast(), 16)
        };
        (n, seen)
    }

    /// `herald_subscriber_read` (no wait) packing what is available into
    /// `buf`: bytes written and records.
    pub(super) fn read(env: &mut FfiEnv) -> (herald_result, usize, usize) {
        let (mut len, mut count) = (0, 0);
        // SAFETY: a live subscriber; `buf` has `len()` writable bytes.
        let r = unsafe {
            herald_subscriber_read(
                env.sub,
                env.buf.as_mut_ptr(),
                env.buf.len(),
                16,
                &mut len,
                &mut count,
                0,
            )
        };
        (r, len, count)
    }

    /// A broker, a publisher of "orders" and a live subscriber of it, warmed
    /// up; `pending`: one 128-byte event waits for the subscriber.
    pub(super) fn env(pending: bool) -> FfiEnv {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().to_str().expect("a UTF-8 path").to_owned();
        let mut config = MaybeUninit::<herald_config>::uninit();
        // SAFETY: writable memory for a config, initialised by the call.
        let mut config = unsafe {
            ok(herald_config_init(config.as_mut_ptr()));
            config.assume_init()
        };
        config.data_dir = path.as_ptr().cast();
        config.data_dir_len = path.len();
        config.ring_capacity = 4 << 20;
        config.max_payload = 64 << 10;
        config.segment_size = 16 << 20;
        config.durability = HERALD_DURABILITY_NEVER;
        config.prefault = false;
        let mut env = FfiEnv {
            broker: std::ptr::null_mut(),
            publisher: std::ptr::null_mut(),
            sub: std::ptr::null_mut(),
            payload: payload(128),
            buf: vec![0; 4096],
            _dir: dir,
        };
        let topic = "orders";
        // SAFETY: valid config and outputs; strings point to their lengths.
        unsafe {
            ok(herald_broker_open(&config, &mut env.broker));
            ok(herald_publisher_new(
                env.broker,
                topic.as_ptr().cast(),
                topic.len(),
                &mut env.publisher,
            ));
            let mut filter = std::ptr::null_mut();
            ok(herald_filter_new(&mut filter));
            ok(herald_filter_add_topic(
                filter,
                topic.as_ptr().cast(),
                topic.len(),
            ));
            ok(herald_subscriber_open(
                env.broker,
                filter,
                HERALD_START_NOW,
                0,
                &mut env.sub,
            ));
            herald_filter_free(filter);
        }
        for _ in 0..WARM {
            ok(publish(&env));
            ok(next(&mut env).0);
        }
        if pending {
            ok(publish(&env));
        }
        env
    }
}

// `herald_publisher_publish` of a 128-byte event.
#[library_benchmark]
#[bench::event_128b(c::env(false))]
fn ffi_publish(env: c::FfiEnv) -> c::FfiEnv {
    black_box(c::publish(black_box(&env)));
    env
}

// `herald_subscriber_next` (no wait) copying out one 128-byte event.
#[library_benchmark]
#[bench::event_128b(c::env(true))]
fn ffi_next(mut env: c::FfiEnv) -> c::FfiEnv {
    black_box(c::next(black_box(&mut env)));
    env
}

// `herald_subscriber_poll` handing one 128-byte event to a callback.
#[library_benchmark]
#[bench::event_128b(c::env(true))]
fn ffi_poll(env: c::FfiEnv) -> c::FfiEnv {
    black_box(c::poll(black_box(&env)));
    env
}

// `herald_subscriber_read` packing one 128-byte event into a buffer.
#[library_benchmark]
#[bench::event_128b(c::env(true))]
fn ffi_read(mut env: c::FfiEnv) -> c::FfiEnv {
    black_box(c::read(black_box(&mut env)));
    env
}

library_benchmark_group!(
    name = ffi;
    benchmarks = ffi_publish, ffi_next, ffi_poll, ffi_read
);

// ----------------------------------------------------------------- server

mod srv {
    //! Inputs of the server's parsers and encoders.
    use super::*;
    use herald_server::fuzzing::{EventEncoder, TokenVerifier};

    pub(super) const HTTP_HEAD: &[u8] =
        b"GET /v1/topics/orders/events?after=1024&types=order.created HTTP/1.1\r\n\
Host: herald.example:8080\r\n\
User-Agent: bench/1.0\r\n\
Accept: text/event-stream\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl\r\n\
Last-Event-ID: 1024\r\n\
Cache-Control: no-cache\r\n\
Connection: keep-alive\r\n\r\n";

    /// A plain publish: the decoder's fast path.
    pub(super) const WS_PUBLISH: &str = r#"{"op":"publish","ref":"r-17","topic":"orders","type":"order.created","data":{"id":1234,"sku":"A-991","qty":2,"price":"19.90","note":"leave at the door"},"correlation_id":"c-0001"}"#;
    /// The same with an escape in its topic: the general decoder.
    pub(super) const WS_PUBLISH_ESCAPED: &str = r#"{"op":"publish","ref":"r-17","topic":"order\u0073","type":"order.created","data":{"id":1234,"sku":"A-991","qty":2,"price":"19.90","note":"leave at the door"},"correlation_id":"c-0001"}"#;

    pub(super) struct EncodeEnv {
        pub(super) encoder: EventEncoder,
        pub(super) topic: Arc<str>,
        pub(super) payload: Vec<u8>,
    }

    pub(super) fn event<'a>(topic: &'a Arc<str>, payload: &'a [u8]) -> EventRef<'a> {
        EventRef {
            seq: 123_456,
            topic,
            topic_seq: 4_321,
            timestamp_ns: 1_700_000_000_123_456_789,
            origin: 7,
            event_type: EVENT_TYPE,
            correlation: "c-0001",
            payload,
            payload_json: false,
        }
    }

    /// A 128-byte JSON payload, encoded once to warm the buffer.
    pub(super) fn encode_env() -> EncodeEnv {
        let mut payload = br#"{"id":1234,"sku":"A-991","qty":2,"price":"19.90","note":""#.to_vec();
        payload.resize(126, b'x');
        payload.extend_from_slice(br#""}"#);
        let mut encoder = EventEncoder::default();
        let topic: Arc<str> = Arc::from("orders");
        encoder.sse(&event(&topic, &payload), true);
        encoder.ws_body(&event(&topic, &payload));
        EncodeEnv {
            encoder,
            topic,
            payload,
        }
    }

    /// A verifier and an HS256 token it accepts (expiring in 2100).
    pub(super) fn jwt_env() -> (TokenVerifier, String) {
        let secret = b"0123456789abcdef0123456789abcdef";
        let claims = herald_server::Claims {
            sub: "device-42".into(),
            exp: 4_102_444_800,
            tenant: "acme".into(),
            publish: vec!["orders.>".into()],
            subscribe: vec!["orders.>".into(), "users.*".into()],
        };
        let token = herald_server::mint_hs256(&claims, secret).expect("a token");
        let verifier = TokenVerifier::hs256(secret);
        verifier.verify(&token).expect("the token is accepted");
        (verifier, token)
    }
}

// HTTP request head parsing (an SSE request with the usual headers).
#[library_benchmark]
#[bench::sse_get(srv::HTTP_HEAD)]
fn http_parse(head: &'static [u8]) -> herald_server::fuzzing::HttpParse {
    black_box(herald_server::fuzzing::parse_http(
        black_box(head),
        16 << 10,
        1 << 20,
    ))
}

// WebSocket operation decoding: a `publish` with a small JSON payload, on
// the fast path and (an escape in the topic) on the general decoder.
#[library_benchmark]
#[bench::publish_op(srv::WS_PUBLISH)]
#[bench::publish_general(srv::WS_PUBLISH_ESCAPED)]
fn ws_decode(
    text: &'static str,
) -> (
    Option<String>,
    serde_json::Value,
    Result<herald_server::fuzzing::WsOp, String>,
) {
    black_box(herald_server::fuzzing::decode_ws(black_box(text)))
}

// SSE frame of a 128-byte event.
#[library_benchmark]
#[bench::event_128b(srv::encode_env())]
fn encode_sse(mut env: srv::EncodeEnv) -> srv::EncodeEnv {
    let srv::EncodeEnv {
        encoder,
        topic,
        payload,
    } = &mut env;
    let e = srv::event(topic, payload);
    black_box(encoder.sse(black_box(&e), true).len());
    env
}

// WebSocket event body of a 128-byte event (its payload checked as JSON).
#[library_benchmark]
#[bench::event_128b(srv::encode_env())]
fn encode_ws(mut env: srv::EncodeEnv) -> srv::EncodeEnv {
    let srv::EncodeEnv {
        encoder,
        topic,
        payload,
    } = &mut env;
    let e = srv::event(topic, payload);
    black_box(encoder.ws_body(black_box(&e)).len());
    env
}

// JWT (HS256) verification with the grant checks.
#[library_benchmark]
#[bench::hs256(srv::jwt_env())]
fn jwt_verify(
    env: (herald_server::fuzzing::TokenVerifier, String),
) -> (
    herald_server::fuzzing::TokenVerifier,
    String,
    herald_server::Claims,
) {
    let claims = black_box(env.0.verify(black_box(&env.1)).expect("accepted"));
    (env.0, env.1, claims)
}

// Filter matching: a two-pattern filter against a topic and an event
// (type list, excluded origin), as routing asks for each event.
#[library_benchmark]
#[bench::patterns(
    Filter::patterns(&["orders.*.created", "users.>"])
        .expect("a filter")
        .with_types(&["order.created", "user.updated"])
        .excluding_origin(9)
)]
fn filter_match(filter: Filter) -> Filter {
    black_box(filter.matches_topic(black_box("users.eu.profile")));
    black_box(filter.matches_topic(black_box("orders.eu.cancelled")));
    black_box(filter.matches_event(black_box(b"user.updated"), black_box(7)));
    filter
}

library_benchmark_group!(
    name = server;
    benchmarks = http_parse, ws_decode, encode_sse, encode_ws, jwt_verify, filter_match
);

main!(library_benchmark_groups = broker, ring, log, ffi, server);
