//! The topic publisher handle: copying publish, and claim → write → commit.

use std::cell::UnsafeCell;
use std::ffi::c_char;
use std::sync::atomic::{AtomicU8, Ordering};

use herald_core::broker::{BatchEvent, Once, PublishOptions, Published, TopicPublisher};

use crate::args::{
    bytes_arg, handle, into_raw, opt_out_arg, opt_out_array_arg, out_arg, reclaim, slice_arg,
    str_arg, struct_arg, Handle, Out, OutArray,
};
use crate::broker::herald_broker;
use crate::error::{fail, ffi_entry, herald_result, Fail};
use crate::herald_result::*;

/// Options of one publish (pass NULL for the defaults: origin 0, no
/// correlation id).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct herald_publish_options {
    /// Who published (device or user id), for "not my own events" filters.
    pub origin: u64,
    /// Correlation id carried to subscribers (may be NULL when the length is 0).
    pub correlation: *const c_char,
    /// Length of `correlation` in bytes (0: none).
    pub correlation_len: usize,
}

/// The sequences a published event got.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct herald_published {
    /// Global sequence (dense across all topics).
    pub seq: u64,
    /// Sequence within the topic (dense per topic).
    pub topic_seq: u64,
}

const IDLE: u8 = 0;
const CLAIMED: u8 = 1;
/// A thread is inside claim/commit and owns `scratch`.
const BUSY: u8 = 2;

/// Publishes to one topic (resolved once, at creation).
///
/// Thread-safety: `herald_publisher_publish` is thread-safe: any number of
/// threads may publish through one handle concurrently. A handle holds at
/// most one outstanding claim: a second `claim` before `commit`/`abort`
/// returns `HERALD_E_BUSY`; use one publisher per thread for concurrent
/// claims. The claimed buffer belongs to the claiming thread until
/// commit/abort.
#[derive(Debug)]
// The tag at offset 0 (see `Handle`); the header keeps the type opaque.
#[cfg_attr(all(), repr(C))]
pub struct herald_publisher {
    pub(crate) tag: u64,
    publisher: TopicPublisher,
    max_payload: usize,
    /// IDLE → (claim) BUSY → CLAIMED → (commit) BUSY → IDLE, or CLAIMED →
    /// (abort) IDLE. `scratch` is touched by Rust only by the thread that
    /// moved the state to BUSY, and by the C caller only while CLAIMED.
    state: AtomicU8,
    scratch: UnsafeCell<Vec<u8>>,
}

impl Handle for herald_publisher {
    const TAG: u64 = 0x4845_5241_4c44_5055; // "HERALDPU"
}

/// A publisher for `topic` (registered on first use); free with
/// `herald_publisher_free`. `HERALD_E_INVALID_TOPIC` for a bad name.
///
/// # Safety
/// `broker` NULL or live; `topic` points to `topic_len` bytes; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_publisher_new(
    broker: *const herald_broker,
    topic: *const c_char,
    topic_len: usize,
    out: *mut *mut herald_publisher,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let topic = str_arg(topic, topic_len, "topic")?;
        let out = out_arg(out, "publisher")?;
        let publisher = b.broker.publisher(topic)?;
        let p = herald_publisher {
            tag: herald_publisher::TAG,
            publisher,
            max_payload: b.max_payload,
            state: AtomicU8::new(IDLE),
            scratch: UnsafeCell::new(Vec::new()),
        };
        out.write(into_raw(p));
        Ok(())
    })
}

/// Frees a publisher (an outstanding claim is dropped). `NULL` is a no-op.
///
/// # Safety
/// `publisher` must be NULL or a live handle, not used afterwards nor
/// concurrently.
#[no_mangle]
pub unsafe extern "C" fn herald_publisher_free(publisher: *mut herald_publisher) {
    let _ = ffi_entry!({
        drop(reclaim(publisher)?);
        Ok(())
    });
}

/// Reads the optional publish options (an argument, see `args`).
#[inline(always)]
fn options<'a>(options: *const herald_publish_options) -> Result<PublishOptions<'a>, Fail> {
    let Some(o) = struct_arg(options) else {
        return Ok(PublishOptions::default());
    };
    let correlation = if o.correlation_len == 0 {
        None
    } else {
        Some(str_arg(
            o.correlation,
            o.correlation_len,
            "options.correlation",
        )?)
    };
    // Payloads from C are unchecked bytes (payload_is_json false): the
    // server checks them if it needs JSON.
    Ok(PublishOptions {
        origin: o.origin,
        correlation,
        ..PublishOptions::default()
    })
}

/// Publishes through `p` and writes the sequences to `out` if it is given
/// (checked by `opt_out_arg`).
#[inline(always)]
fn publish(
    p: &herald_publisher,
    event_type: &str,
    payload: &[u8],
    opts: PublishOptions<'_>,
    out: Option<Out<herald_published>>,
) -> Result<(), Fail> {
    let published = p.publisher.publish(event_type, payload, opts)?;
    if let Some(out) = out {
        let published = herald_published {
            seq: published.seq,
            topic_seq: published.topic_seq,
        };
        out.write(published);
    }
    Ok(())
}

/// Publishes one event, copying `payload`. `options` may be NULL;
/// `out` (may be NULL) receives its sequences. With
/// `HERALD_DURABILITY_ALWAYS` it returns once the event is durable.
///
/// # Safety
/// `publisher` NULL or live; `event_type`/`payload` point to their lengths
/// in bytes; `options` NULL or valid; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_publisher_publish(
    publisher: *const herald_publisher,
    event_type: *const c_char,
    event_type_len: usize,
    payload: *const u8,
    payload_len: usize,
    options: *const herald_publish_options,
    out: *mut herald_published,
) -> herald_result {
    ffi_entry!({
        let p = handle(publisher)?;
        let event_type = str_arg(event_type, event_type_len, "event_type")?;
        let payload = bytes_arg(payload, payload_len, "payload")?;
        let opts = self::options(options)?;
        let out = opt_out_arg(out, "published")?;
        publish(p, event_type, payload, opts, out)
    })
}

/// One event of a batch (see `herald_broker_publish_batch`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct herald_batch_event {
    /// Its topic's publisher (of the same broker).
    pub publisher: *const herald_publisher,
    /// Its type.
    pub event_type: *const c_char,
    /// Length of `event_type` in bytes.
    pub event_type_len: usize,
    /// Its payload (copied).
    pub payload: *const u8,
    /// Length of `payload` in bytes.
    pub payload_len: usize,
    /// Its options, or NULL for the defaults.
    pub options: *const herald_publish_options,
}

/// Publishes `count` events, to one topic or several, under one acquisition
/// of the broker's publish lock: their global sequences are consecutive and
/// nothing else lands between them. Every event is checked first: an
/// invalid one (type, correlation id, payload size, a publisher of another
/// broker) fails the whole batch and stores nothing. `out` (may be NULL)
/// receives `count` sequences, in order. With `HERALD_DURABILITY_ALWAYS` it
/// returns once the last is durable. `count` 0 is a no-op.
///
/// Unlike `herald_publisher_publish`, it allocates (the list of events it
/// passes to the broker).
///
/// # Safety
/// `broker` NULL or live; `events` points to `count` valid entries, each
/// with a live publisher and buffers of their lengths; `out` NULL or
/// writable for `count` entries.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_publish_batch(
    broker: *const herald_broker,
    events: *const herald_batch_event,
    count: usize,
    out: *mut herald_published,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        if count == 0 {
            return Ok(());
        }
        let out = opt_out_array_arg(out, count, "published")?;
        let batch = batch_arg(events, count)?;
        let mut published = Vec::with_capacity(count);
        b.broker.publish_batch(&batch, &mut published)?;
        write_published(&published, out.as_ref());
        Ok(())
    })
}

/// [`herald_broker_publish_batch`] at most once per idempotency `key` (1 to
/// 128 printable ASCII characters, no spaces): a publish repeating a key
/// used within the broker's idempotency window (default 120 s) stores
/// nothing and answers with the sequences of the key's first publish, and
/// `*out_duplicate` (may be NULL) is set to true. `scope` (at most 255
/// bytes; length 0 for none) keeps keys of different callers apart, as a
/// tenant does. The key is stored in the log with the last event, so the
/// window survives a restart. `out` (may be NULL) has room for `count`
/// entries and receives the first `count` sequences; `*out_count` (may be
/// NULL) receives how many the publish has (on a duplicate, the first
/// publish's count, which differs from `count` if the retry's batch does).
/// `count` must be at least 1.
///
/// # Safety
/// As [`herald_broker_publish_batch`]; `scope` and `key` point to their
/// lengths in bytes; `out_count` and `out_duplicate` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_broker_publish_batch_once(
    broker: *const herald_broker,
    scope: *const c_char,
    scope_len: usize,
    key: *const c_char,
    key_len: usize,
    events: *const herald_batch_event,
    count: usize,
    out: *mut herald_published,
    out_count: *mut usize,
    out_duplicate: *mut bool,
) -> herald_result {
    ffi_entry!({
        let b = handle(broker)?;
        let scope = if scope_len == 0 {
            ""
        } else {
            str_arg(scope, scope_len, "scope")?
        };
        let key = str_arg(key, key_len, "key")?;
        if count == 0 {
            return Err(fail(
                HERALD_E_INVALID_ARGUMENT,
                format_args!("a keyed publish needs at least one event"),
            ));
        }
        let out = opt_out_array_arg(out, count, "published")?;
        let out_count = opt_out_arg(out_count, "count")?;
        let out_duplicate = opt_out_arg(out_duplicate, "duplicate")?;
        let batch = batch_arg(events, count)?;
        let mut published = Vec::with_capacity(count);
        let once = b
            .broker
            .publish_batch_once(scope, key, &batch, &mut published)?;
        let n = published.len().min(count);
        write_published(&published[..n], out.as_ref());
        if let Some(c) = out_count {
            c.write(published.len());
        }
        if let Some(d) = out_duplicate {
            d.write(once == Once::Duplicate);
        }
        Ok(())
    })
}

/// The broker's batch of `count` (at least 1) C batch events, each checked.
fn batch_arg<'a>(
    events: *const herald_batch_event,
    count: usize,
) -> Result<Vec<BatchEvent<'a>>, Fail> {
    let events = slice_arg(events, count, "events", "count")?;
    let mut batch = Vec::with_capacity(count);
    for e in events {
        let p = handle(e.publisher)?;
        let event_type = str_arg(e.event_type, e.event_type_len, "event_type")?;
        let payload = bytes_arg(e.payload, e.payload_len, "payload")?;
        let options = self::options(e.options)?;
        batch.push(BatchEvent {
            publisher: &p.publisher,
            event_type,
            payload,
            options,
        });
    }
    Ok(batch)
}

/// Writes `published` to the first entries of `out`, if given.
fn write_published(published: &[Published], out: Option<&OutArray<herald_published>>) {
    if let Some(out) = out {
        for (i, p) in published.iter().enumerate() {
            let value = herald_published {
                seq: p.seq,
                topic_seq: p.topic_seq,
            };
            out.write(i, value);
        }
    }
}

/// Claims a buffer of `len` bytes (at most the broker's `max_payload`) for
/// the next event's payload: `*out_buf` points to it. Fill it in place, then
/// `herald_publisher_commit` or `herald_publisher_abort`.
///
/// What it does: the buffer is the publisher's own scratch buffer, reused
/// across claims (no allocation once it has grown to the largest claim).
/// The event is not yet sequenced or visible; the copy into the log and the
/// ring happens at commit, under the broker's publish lock, so a slow writer
/// never holds other publishers back. The buffer stays valid until
/// commit/abort/free. `HERALD_E_BUSY` if this handle already has a claim.
///
/// # Safety
/// `publisher` NULL or live; `out_buf` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_publisher_claim(
    publisher: *const herald_publisher,
    len: usize,
    out_buf: *mut *mut u8,
) -> herald_result {
    ffi_entry!({
        let p = handle(publisher)?;
        let out = out_arg(out_buf, "out_buf")?;
        if len > p.max_payload {
            return Err(fail(
                HERALD_E_PAYLOAD_TOO_LARGE,
                format_args!("claim of {len} bytes exceeds max_payload {}", p.max_payload),
            ));
        }
        // Acquire: pairs with the Release stores that end a commit/abort, so
        // the previous owner's use of `scratch` happens before ours.
        if p.state
            .compare_exchange(IDLE, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(fail(
                HERALD_E_BUSY,
                "this publisher already has an outstanding claim",
            ));
        }
        // SAFETY: state BUSY, set by our CAS: no other thread touches scratch.
        let scratch = unsafe { &mut *p.scratch.get() };
        scratch.clear();
        // Fallible: an allocation failure must be an error code, never an
        // abort of the host process.
        if let Err(e) = scratch.try_reserve(len) {
            // Release: pairs with the Acquire CAS of the next claim.
            p.state.store(IDLE, Ordering::Release);
            return Err(fail(
                HERALD_E_PAYLOAD_TOO_LARGE,
                format_args!("cannot allocate a claim of {len} bytes: {e}"),
            ));
        }
        scratch.resize(len, 0);
        let ptr = scratch.as_mut_ptr();
        // Release: pairs with the Acquire CAS in commit/abort.
        p.state.store(CLAIMED, Ordering::Release);
        out.write(ptr);
        Ok(())
    })
}

/// Publishes the claimed buffer's first `len` bytes (`len` ≤ the claimed
/// length) as an event of `event_type`, and releases the claim (also when
/// the publish fails). `HERALD_E_NO_CLAIM` without an outstanding claim.
///
/// # Safety
/// As `herald_publisher_publish`; the caller must not touch the claimed
/// buffer after this call.
#[no_mangle]
pub unsafe extern "C" fn herald_publisher_commit(
    publisher: *const herald_publisher,
    event_type: *const c_char,
    event_type_len: usize,
    len: usize,
    options: *const herald_publish_options,
    out: *mut herald_published,
) -> herald_result {
    ffi_entry!({
        let p = handle(publisher)?;
        let event_type = str_arg(event_type, event_type_len, "event_type")?;
        let opts = self::options(options)?;
        let out = opt_out_arg(out, "published")?;
        // Acquire: pairs with the Release store at the end of claim.
        if p.state
            .compare_exchange(CLAIMED, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(fail(
                HERALD_E_NO_CLAIM,
                "commit without an outstanding claim",
            ));
        }
        struct Release<'a>(&'a AtomicU8);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                // Release: pairs with the Acquire CAS of the next claim.
                self.0.store(IDLE, Ordering::Release);
            }
        }
        let _release = Release(&p.state);
        // SAFETY: state BUSY, set by our CAS: no other thread touches scratch.
        let scratch = unsafe { &*p.scratch.get() };
        let Some(payload) = scratch.get(..len) else {
            return Err(fail(
                HERALD_E_INVALID_ARGUMENT,
                format_args!(
                    "commit of {len} bytes exceeds the claimed {}",
                    scratch.len()
                ),
            ));
        };
        publish(p, event_type, payload, opts, out)
    })
}

/// Drops the outstanding claim without publishing.
/// `HERALD_E_NO_CLAIM` without one.
///
/// # Safety
/// `publisher` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn herald_publisher_abort(
    publisher: *const herald_publisher,
) -> herald_result {
    ffi_entry!({
        let p = handle(publisher)?;
        // Release: pairs with the Acquire CAS of the next claim.
        if p.state
            .compare_exchange(CLAIMED, IDLE, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            return Err(fail(
                HERALD_E_NO_CLAIM,
                "abort without an outstanding claim",
            ));
        }
        Ok(())
    })
}
