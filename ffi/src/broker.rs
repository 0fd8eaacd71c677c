//! The broker handle: open/close, config, metrics, durable consumers,
//! presence.

use std::ffi::c_char;
use std::path::PathBuf;
use std::time::Duration;

use herald_core::log::{Durability, Retention};
use herald_core::{Broker, BrokerConfig};

use crate::args::{
    handle, into_raw, opt_out_arg, out_arg, out_bytes_arg, reclaim, str_arg, struct_arg, too_small,
    Handle,
};
use crate::error::{fail, ffi_entry, herald_result};
use crate::herald_result::*;

/// Durability: never sync explicitly (the OS writes back; close syncs).
pub const HERALD_DURABILITY_NEVER: u32 = 0;
/// Durability: a background thread syncs every `sync_interval_ms`.
pub const HERALD_DURABILITY_INTERVAL: u32 = 1;
/// Durability: a publish returns only once its event is on stable storage
/// (group commit).
pub const HERALD_DURABILITY_ALWAYS: u32 = 2;

/// How to open a broker. Initialise with `herald_config_init`, then set
/// `data_dir` and whatever else differs from the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct herald_config {
    /// Data directory (created if missing), UTF-8, no NUL needed. Required.
    pub data_dir: *const c_char,
    /// Length of `data_dir` in bytes.
    pub data_dir_len: usize,
    /// Bytes of the in-memory ring, a power of two (default 16 MiB).
    pub ring_capacity: usize,
    /// Largest payload accepted, bytes (default 1 MiB).
    pub max_payload: usize,
    /// Log segment size, bytes, a multiple of 8 (default 64 MiB).
    pub segment_size: u64,
    /// One of `HERALD_DURABILITY_*` (default `INTERVAL`).
    pub durability: u32,
    /// Sync interval for `HERALD_DURABILITY_INTERVAL`, ms (default 100).
    pub sync_interval_ms: u32,
    /// Retention: delete segments older than this, ms; 0 = no limit.
    pub retention_max_age_ms: u64,
    /// Retention: keep at most about this many bytes; 0 = no limit.
    pub retention_max_bytes: u64,
    /// Retention: keep at most about this many records; 0 = no limit.
    pub retention_max_records: u64,
    /// Presence sessions expire after this long without a heartbeat, ms
    /// (default 30 000).
    pub presence_ttl_ms: u64,
    /// Prefault new log segments from a background thread (default true).
    pub prefault: bool,
}

/// Writes the defaults into `*config` (`data_dir` NULL: set it).
///
/// # Safety
/// `config` must be NULL or point to writable memory for a `herald_config`.
#[no_mangle]
pub unsafe extern "C" fn herald_config_init(config: *mut herald_config) -> herald_result {
    ffi_entry!({
        let out = out_arg(config, "config")?;
        let d = BrokerConfig::new("");
        let defaults = herald_config {
            data_dir: std::ptr::null(),
            data_dir_len: 0,
            ring_capacity: d.ring_capacity,
            max_payload: d.max_payload,
            segment_size: d.log.segment_size,
            durability: HERALD_DURABILITY_INTERVAL,
            sync_interval_ms: 100,
            retention_max_age_ms: 0,
            retention_max_bytes: 0,
            retention_max_records: 0,
            presence_ttl_ms: d.presence_ttl.as_millis() as u64,
            prefault: d.log.prefault,
        };
        out.write(defaults);
        Ok(())
    })
}

/// An open broker.
///
/// Thread-safety: fully thread-safe; any thread may call any broker
/// function concurrently. Publishers and subscribers made from it keep the
/// broker's files open until they are freed too, so closing the broker while
/// they live is safe (they keep working). The data directory stays locked
/// (a second open fails with `HERALD_E_IO`) until the broker and every handle
/// made from it are freed.
#[derive(Debug)]
// The tag at offset 0 (see `Handle`); the header keeps the type opaque.
#[cfg_attr(all(), repr(C))]
pub struct herald_broker {
    pub(crate) tag: u64,
    pub(crate) broker: Broker,
    pub(crate) max_payload: usize,
}

impl Handle for herald_broker {
    const TAG: u64 = 0x4845_5241_4c44_4252; // "HERALDBR"
}

/// Opens (creating or recovering) a broker; `*out` receives the handle,
/// to be closed with `herald_broker_close`.
///
/// # Safety
/// `config` must be NULL or point to a valid `herald_config` whose
/// `data_dir` points to `data_dir_len` readable bytes; `out` must be NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_open(
    config: *const herald_config,
    out: *mut *mut herald_broker,
) -> herald_result {
    ffi_entry!({
        let c = struct_arg(config).ok_or_else(|| fail(HERALD_E_NULL, "config is NULL"))?;
        let out = out_arg(out, "broker")?;
        let dir = str_arg(c.data_dir, c.data_dir_len, "config.data_dir")?;
        if dir.is_empty() {
            return Err(fail(HERALD_E_INVALID_CONFIG, "config.data_dir is empty"));
        }
        let mut bc = BrokerConfig::new(PathBuf::from(dir));
        bc.ring_capacity = c.ring_capacity;
        bc.max_payload = c.max_payload;
        bc.log.segment_size = c.segment_size;
        bc.log.durability = match c.durability {
            HERALD_DURABILITY_NEVER => Durability::Never,
            HERALD_DURABILITY_INTERVAL => {
                Durability::Interval(Duration::from_millis(u64::from(c.sync_interval_ms)))
            }
            HERALD_DURABILITY_ALWAYS => Durability::Always,
            other => {
                return Err(fail(
                    HERALD_E_INVALID_CONFIG,
                    format_args!("unknown durability {other}"),
                ))
            }
        };
        let limit = |v: u64| (v != 0).then_some(v);
        bc.log.retention = Retention {
            max_age: limit(c.retention_max_age_ms).map(Duration::from_millis),
            max_bytes: limit(c.retention_max_bytes),
            max_records: limit(c.retention_max_records),
            override_pins: false,
            max_pinned_age: None,
        };
        bc.log.prefault = c.prefault;
        bc.presence_ttl = Duration::from_millis(c.presence_ttl_ms);
        let max_payload = bc.max_payload;
        let broker = Broker::open(bc)?;
        out.write(into_raw(herald_broker {
            tag: herald_broker::TAG,
            broker,
            max_payload,
        }));
        Ok(())
    })
}

/// Flushes the log and frees the handle. `NULL` is a no-op (returns
/// `HERALD_OK`). The handle is freed even if the flush fails (the error is
/// returned). Not to be called concurrently with other calls on the same
/// broker handle.
///
/// # Safety
/// `broker` must be NULL or a live handle from `herald_broker_open`, not
/// used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_close(broker: *mut herald_broker) -> herald_result {
    ffi_entry!({
        let Some(b) = reclaim(broker)? else {
            return Ok(());
        };
        b.broker.flush()?;
        Ok(())
    })
}

/// Syncs the log to stable storage.
///
/// # Safety
/// `broker` must be NULL or a live broker handle.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_flush(broker: *const herald_broker) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        b.broker.flush()?;
        Ok(())
    })
}

/// The next global sequence the broker will assign (one past the last).
///
/// # Safety
/// `broker` must be NULL or a live broker handle; `out_seq` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_next_seq(
    broker: *const herald_broker,
    out_seq: *mut u64,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let out = out_arg(out_seq, "out_seq")?;
        out.write(b.broker.next_seq());
        Ok(())
    })
}

/// A snapshot of the broker's counters and latency percentiles.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct herald_metrics {
    /// Events published.
    pub published: u64,
    /// Events delivered to subscribers (each subscriber counts).
    pub delivered: u64,
    /// Times a subscriber was lapped on the ring and fell back to the log.
    pub lagged_fallbacks: u64,
    /// Gap notices delivered.
    pub gaps: u64,
    /// Events delivered from the log rather than the ring.
    pub replayed: u64,
    /// Subscribers currently open.
    pub active_subscribers: u64,
    /// Publish→deliver latency, 50th percentile, ns.
    pub latency_p50_ns: u64,
    /// 95th percentile, ns.
    pub latency_p95_ns: u64,
    /// 99th percentile, ns.
    pub latency_p99_ns: u64,
    /// Maximum, ns.
    pub latency_max_ns: u64,
}

/// Copies the broker's metrics into `*out`. A subscriber's deliveries and
/// latency samples are included once a read of it finds nothing to deliver
/// (or times out), at least every 100 ms while it keeps delivering, and when
/// it is freed; its gap notices at once.
///
/// # Safety
/// `broker` must be NULL or a live broker handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_metrics(
    broker: *const herald_broker,
    out: *mut herald_metrics,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let out = out_arg(out, "metrics")?;
        let m = b.broker.metrics();
        let snapshot = herald_metrics {
            published: m.published,
            delivered: m.delivered,
            lagged_fallbacks: m.lagged_fallbacks,
            gaps: m.gaps,
            replayed: m.replayed,
            active_subscribers: m.active_subscribers,
            latency_p50_ns: m.latency_p50_ns,
            latency_p95_ns: m.latency_p95_ns,
            latency_p99_ns: m.latency_p99_ns,
            latency_max_ns: m.latency_max_ns,
        };
        out.write(snapshot);
        Ok(())
    })
}

/// The last acknowledged global sequence of the durable consumer `name`
/// (`HERALD_E_UNKNOWN_CONSUMER` if it never acknowledged anything).
///
/// # Safety
/// `broker` NULL or live; `name` points to `name_len` bytes; `out_seq` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_consumer_checkpoint(
    broker: *const herald_broker,
    name: *const c_char,
    name_len: usize,
    out_seq: *mut u64,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let name = str_arg(name, name_len, "name")?;
        let out = out_arg(out_seq, "out_seq")?;
        let seq = b.broker.consumer_checkpoint(name)?;
        out.write(seq);
        Ok(())
    })
}

/// Acknowledges everything up to global sequence `seq` for the durable
/// consumer `name` (for hosts that track delivery themselves). The consumer
/// must exist (`HERALD_E_UNKNOWN_CONSUMER`; it is created by its first
/// `herald_subscriber_open_consumer`). `seq` past the last published event,
/// or below the checkpoint, is refused with `HERALD_E_ACK` and changes
/// nothing; acknowledging the checkpoint again is a no-op.
///
/// # Safety
/// `broker` NULL or live; `name` points to `name_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_consumer_ack(
    broker: *const herald_broker,
    name: *const c_char,
    name_len: usize,
    seq: u64,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let name = str_arg(name, name_len, "name")?;
        b.broker.ack_consumer(name, seq)?;
        Ok(())
    })
}

/// Forgets the durable consumer `name` and releases what retention kept for it.
///
/// # Safety
/// `broker` NULL or live; `name` points to `name_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_consumer_remove(
    broker: *const herald_broker,
    name: *const c_char,
    name_len: usize,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let name = str_arg(name, name_len, "name")?;
        b.broker.remove_consumer(name)?;
        Ok(())
    })
}

/// Joins (or refreshes) presence session `client_id` on `topic`; a new
/// session publishes `presence.join` on `$presence.<topic>`. `metadata` is
/// empty or a JSON document.
///
/// # Safety
/// `broker` NULL or live; every string points to its length in bytes.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_presence_join(
    broker: *const herald_broker,
    topic: *const c_char,
    topic_len: usize,
    client_id: *const c_char,
    client_id_len: usize,
    user: *const c_char,
    user_len: usize,
    device: *const c_char,
    device_len: usize,
    metadata: *const c_char,
    metadata_len: usize,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let topic = str_arg(topic, topic_len, "topic")?;
        let client_id = str_arg(client_id, client_id_len, "client_id")?;
        let user = str_arg(user, user_len, "user")?;
        let device = str_arg(device, device_len, "device")?;
        let metadata = str_arg(metadata, metadata_len, "metadata")?;
        b.broker
            .presence_join(topic, client_id, user, device, metadata)?;
        Ok(())
    })
}

/// Refreshes presence session `client_id` on `topic`
/// (`HERALD_E_PRESENCE` if it is unknown or expired).
///
/// # Safety
/// `broker` NULL or live; every string points to its length in bytes.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_presence_heartbeat(
    broker: *const herald_broker,
    topic: *const c_char,
    topic_len: usize,
    client_id: *const c_char,
    client_id_len: usize,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let topic = str_arg(topic, topic_len, "topic")?;
        let client_id = str_arg(client_id, client_id_len, "client_id")?;
        b.broker.presence_heartbeat(topic, client_id)?;
        Ok(())
    })
}

/// Ends presence session `client_id` on `topic` (publishing
/// `presence.leave`); `*out_was_present` (may be NULL) tells whether it existed.
///
/// # Safety
/// `broker` NULL or live; every string points to its length in bytes;
/// `out_was_present` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_presence_leave(
    broker: *const herald_broker,
    topic: *const c_char,
    topic_len: usize,
    client_id: *const c_char,
    client_id_len: usize,
    out_was_present: *mut bool,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let topic = str_arg(topic, topic_len, "topic")?;
        let client_id = str_arg(client_id, client_id_len, "client_id")?;
        let was = b.broker.presence_leave(topic, client_id)?;
        if let Some(out) = opt_out_arg(out_was_present, "out_was_present")? {
            out.write(was);
        }
        Ok(())
    })
}

/// Expires sessions without a recent heartbeat (publishing
/// `presence.expire` for each); `*out_count` (may be NULL) gets how many.
///
/// # Safety
/// `broker` NULL or live; `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_presence_expire(
    broker: *const herald_broker,
    out_count: *mut usize,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let n = b.broker.presence_expire()?;
        if let Some(out) = opt_out_arg(out_count, "out_count")? {
            out.write(n);
        }
        Ok(())
    })
}

/// Lists who is present on `topic` as a JSON array written to `buf`:
/// `[{"client_id":…,"user":…,"device":…,"metadata":<JSON or null>,
/// "connected_at_ns":…,"last_heartbeat_ns":…}, …]` (not NUL-terminated),
/// each session encoded as the server and the `$presence` events encode it
/// (metadata compacted).
/// `*out_len` gets its length and `*out_count` (may be NULL) the number of
/// sessions. If `cap` is too small, returns `HERALD_E_BUFFER_TOO_SMALL` and
/// writes only the needed size to `*out_len` (`buf` may be NULL with `cap` 0
/// to ask for it).
///
/// # Safety
/// `broker` NULL or live; `topic` points to `topic_len` bytes; `buf` NULL or
/// `cap` writable bytes; outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_presence_list(
    broker: *const herald_broker,
    topic: *const c_char,
    topic_len: usize,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
    out_count: *mut usize,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let topic = str_arg(topic, topic_len, "topic")?;
        let out_len = out_arg(out_len, "out_len")?;
        herald_core::broker::validate_topic(topic)?;
        let sessions = b.broker.presence(topic);
        let mut json = Vec::with_capacity(64 + sessions.len() * 128);
        json.push(b'[');
        for (i, s) in sessions.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            s.write_json(&mut json);
        }
        json.push(b']');
        if json.len() > cap {
            return Err(too_small(out_len, json.len(), cap, "the presence list"));
        }
        let buf = out_bytes_arg(buf, cap, "buf")?;
        let out_count = opt_out_arg(out_count, "out_count")?;
        buf.write(0, &json);
        out_len.write(json.len());
        if let Some(out_count) = out_count {
            out_count.write(sessions.len());
        }
        Ok(())
    })
}
