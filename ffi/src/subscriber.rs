//! The subscriber handle: poll with a callback, next into a buffer, a
//! pollable fd for host event loops, durable-consumer acks, lag.

use std::cell::UnsafeCell;
use std::ffi::c_char;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use herald_core::broker::{DeliveryRef, EventRef, Gap};
use herald_core::ring::Doorbell;
use herald_core::{Broker, Delivery, StartAt, Subscription};

use crate::broker::herald_broker;
use crate::error::{fail, ffi_entry, herald_result, Fail};
use crate::filter::herald_filter;
use crate::herald_result::*;
use crate::{handle, into_raw, opt_out_arg, out_arg, str_arg, too_small, write_out, Handle, DEAD};

/// Start with the next event published (`start_value` ignored).
pub const HERALD_START_NOW: u32 = 0;
/// Start at global sequence `start_value` (older than retention: a gap first).
pub const HERALD_START_SEQ: u32 = 1;
/// Start at sequence `start_value` of the filter's single topic.
pub const HERALD_START_TOPIC_SEQ: u32 = 2;
/// Start at the first event published at or after `start_value` ns since
/// the Unix epoch.
pub const HERALD_START_TIME: u32 = 3;
/// Start with the last `start_value` events (of the topic for a single-topic
/// filter, otherwise of the log, filtered).
pub const HERALD_START_LAST_N: u32 = 4;

/// A delivery that is an event.
pub const HERALD_DELIVERY_EVENT: u32 = 0;
/// A delivery that is a gap notice: events `gap_from..=gap_to` were deleted
/// by retention before this subscriber read them (topic sequences if
/// `topic_len > 0`, else global sequences). Never silence: always this.
pub const HERALD_DELIVERY_GAP: u32 = 1;

/// One delivery: an event or a gap notice.
///
/// In a `herald_subscriber_poll` callback the pointers borrow the library's
/// memory and are valid only during the callback. From
/// `herald_subscriber_next` they point into the caller's buffer, laid out as
/// payload, topic, event type, correlation id, back to back from offset 0
/// (so `payload == buf`). Strings are not NUL-terminated.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct herald_delivery {
    /// `HERALD_DELIVERY_EVENT` or `HERALD_DELIVERY_GAP`.
    pub kind: u32,
    /// Global sequence (events; 0 for gaps).
    pub seq: u64,
    /// Sequence within the topic (events; 0 for gaps).
    pub topic_seq: u64,
    /// Publish time, ns since the Unix epoch (events).
    pub timestamp_ns: u64,
    /// Origin given by the publisher (0 if none).
    pub origin: u64,
    /// Gaps: first missing sequence (inclusive).
    pub gap_from: u64,
    /// Gaps: last missing sequence (inclusive).
    pub gap_to: u64,
    /// Topic name (events; gaps of a single-topic subscriber).
    pub topic: *const c_char,
    /// Length of `topic`.
    pub topic_len: usize,
    /// Event type.
    pub event_type: *const c_char,
    /// Length of `event_type`.
    pub event_type_len: usize,
    /// Correlation id (length 0: none).
    pub correlation: *const c_char,
    /// Length of `correlation`.
    pub correlation_len: usize,
    /// Payload.
    pub payload: *const u8,
    /// Length of `payload`.
    pub payload_len: usize,
}

/// Callback of `herald_subscriber_poll`: return 0 to go on, non-zero to stop
/// after this delivery. It must not unwind (no C++ exception, no longjmp).
/// It may call into the library, except on the same subscriber
/// (`HERALD_E_BUSY`).
pub type herald_poll_fn = Option<
    unsafe extern "C" fn(user: *mut std::ffi::c_void, delivery: *const herald_delivery) -> i32,
>;

/// A subscription: reads the log until it catches up, then the live ring,
/// falling back to the log by itself when lapped (lag never loses events;
/// see `herald_subscriber_lag`). Only retention can make it miss events,
/// and those arrive as `HERALD_DELIVERY_GAP`.
///
/// Thread-safety: one call at a time. A subscriber may move between threads
/// (e.g. a worker pool) but calls on it must not overlap: an overlapping
/// call returns `HERALD_E_BUSY` instead of racing. Different subscribers are
/// independent.
#[derive(Debug)]
// The tag at offset 0 (see `Handle`); the header keeps the type opaque.
#[cfg_attr(all(), repr(C))]
pub struct herald_subscriber {
    pub(crate) tag: u64,
    /// Set while a thread is inside a call; guards `state`.
    busy: AtomicBool,
    /// Outside `state`: `herald_subscriber_wake` uses it while another
    /// thread is inside a call.
    wake: Wake,
    state: UnsafeCell<SubState>,
}

/// What `herald_subscriber_wake` needs to interrupt a blocked call.
#[derive(Debug)]
struct Wake {
    /// A wake-up no blocking call has consumed yet.
    pending: AtomicBool,
    /// The doorbell's eventfd once the subscriber first slept (-1 before):
    /// written to, it ends the sleeping `poll`.
    fd: AtomicI32,
}

impl Wake {
    /// Consumes a pending wake-up: `HERALD_E_CANCELLED`.
    fn check(&self) -> Result<(), Fail> {
        // SeqCst, with the SeqCst store of `fd` before a sleep and the
        // pair in `herald_subscriber_wake`: either the waker sees the fd
        // and writes to it, or the sleeper sees `pending` before sleeping.
        if self.pending.swap(false, Ordering::SeqCst) {
            return Err(fail(
                HERALD_E_CANCELLED,
                "the wait was ended by herald_subscriber_wake",
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SubState {
    sub: Subscription,
    broker: Broker,
    doorbell: Option<Doorbell>,
    /// A delivery taken from the subscription that did not fit the caller's
    /// buffer: returned first by the next call.
    pending: Option<Delivery>,
}

impl Handle for herald_subscriber {
    const TAG: u64 = 0x4845_5241_4c44_5355; // "HERALDSU"
}

/// Exclusive access to a subscriber's state for one call.
struct Entered<'a> {
    sub: &'a herald_subscriber,
}

impl Entered<'_> {
    fn state(&mut self) -> &mut SubState {
        // SAFETY: `busy` was false and we set it (Acquire swap in `enter`),
        // so no other call is inside this subscriber until our Drop.
        unsafe { &mut *self.sub.state.get() }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire swap of the next `enter`.
        self.sub.busy.store(false, Ordering::Release);
    }
}

/// Checks and enters a subscriber handle.
///
/// # Safety
/// As [`handle`].
#[inline(always)]
unsafe fn enter<'a>(p: *const herald_subscriber) -> Result<Entered<'a>, Fail> {
    // SAFETY: forwarded from the caller.
    let sub = unsafe { handle(p) }?;
    // Acquire: pairs with the Release store in `Entered::drop`.
    if sub.busy.swap(true, Ordering::Acquire) {
        return Err(fail(
            HERALD_E_BUSY,
            "another call is inside this subscriber",
        ));
    }
    Ok(Entered { sub })
}

fn start_at(kind: u32, value: u64) -> Result<StartAt, Fail> {
    Ok(match kind {
        HERALD_START_NOW => StartAt::Now,
        HERALD_START_SEQ => StartAt::Seq(value),
        HERALD_START_TOPIC_SEQ => StartAt::TopicSeq(value),
        HERALD_START_TIME => StartAt::Time(value),
        HERALD_START_LAST_N => StartAt::LastN(value),
        other => {
            return Err(fail(
                HERALD_E_INVALID_ARGUMENT,
                format_args!("unknown start kind {other}"),
            ))
        }
    })
}

fn new_handle(sub: Subscription, broker: Broker) -> *mut herald_subscriber {
    into_raw(herald_subscriber {
        tag: herald_subscriber::TAG,
        busy: AtomicBool::new(false),
        wake: Wake {
            pending: AtomicBool::new(false),
            fd: AtomicI32::new(-1),
        },
        state: UnsafeCell::new(SubState {
            sub,
            broker,
            doorbell: None,
            pending: None,
        }),
    })
}

/// Subscribes with `filter` (copied; free it when you like) from the start
/// position `start_kind` (`HERALD_START_*`) / `start_value`. Free with
/// `herald_subscriber_free`.
///
/// # Safety
/// `broker`, `filter` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_open(
    broker: *const herald_broker,
    filter: *const herald_filter,
    start_kind: u32,
    start_value: u64,
    out: *mut *mut herald_subscriber,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let b = unsafe { handle(broker) }?;
        // SAFETY: the caller guarantees NULL or a live handle.
        let f = unsafe { handle(filter) }?;
        let out = out_arg(out, "subscriber")?;
        let start = start_at(start_kind, start_value)?;
        let sub = b.broker.subscribe(f.build()?, start)?;
        // SAFETY: checked by out_arg.
        unsafe { write_out(out, new_handle(sub, b.broker.clone())) };
        Ok(())
    })
}

/// Subscribes as the durable consumer `name` (1..=128 bytes of
/// `[A-Za-z0-9_.-]`): resumes after its checkpoint, or at the given start
/// position if the consumer is new. Acknowledge with `herald_subscriber_ack`
/// / `herald_subscriber_ack_up_to`.
///
/// # Safety
/// `broker`, `filter` NULL or live; `name` points to `name_len` bytes; `out`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_open_consumer(
    broker: *const herald_broker,
    name: *const c_char,
    name_len: usize,
    filter: *const herald_filter,
    start_kind: u32,
    start_value: u64,
    out: *mut *mut herald_subscriber,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let b = unsafe { handle(broker) }?;
        // SAFETY: the caller guarantees NULL or a live handle.
        let f = unsafe { handle(filter) }?;
        // SAFETY: the caller guarantees name_len readable bytes.
        let name = unsafe { str_arg(name, name_len, "name") }?;
        let out = out_arg(out, "subscriber")?;
        let start = start_at(start_kind, start_value)?;
        let sub = b.broker.subscribe_consumer(name, f.build()?, start)?;
        // SAFETY: checked by out_arg.
        unsafe { write_out(out, new_handle(sub, b.broker.clone())) };
        Ok(())
    })
}

/// Frees a subscriber. `NULL` is a no-op. If another thread is inside a
/// call on it (a caller bug), nothing is freed and the details go to
/// `herald_last_error`: a leak, never a use-after-free.
///
/// # Safety
/// `subscriber` must be NULL or a live handle, not used afterwards nor
/// concurrently.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_free(subscriber: *mut herald_subscriber) {
    let _ = ffi_entry!({
        if subscriber.is_null() {
            return Ok(());
        }
        // SAFETY: the caller guarantees NULL or a live handle.
        let entered = unsafe { enter(subscriber) }?;
        std::mem::forget(entered);
        // SAFETY: made by Box::into_raw; the caller gives it up and no call
        // is inside it (we hold `busy`).
        let mut s = unsafe { Box::from_raw(subscriber) };
        s.tag = DEAD;
        Ok(())
    });
}

fn event_delivery(e: &EventRef<'_>) -> herald_delivery {
    herald_delivery {
        kind: HERALD_DELIVERY_EVENT,
        seq: e.seq,
        topic_seq: e.topic_seq,
        timestamp_ns: e.timestamp_ns,
        origin: e.origin,
        gap_from: 0,
        gap_to: 0,
        topic: e.topic.as_ptr().cast(),
        topic_len: e.topic.len(),
        event_type: e.event_type.as_ptr().cast(),
        event_type_len: e.event_type.len(),
        correlation: e.correlation.as_ptr().cast(),
        correlation_len: e.correlation.len(),
        payload: e.payload.as_ptr(),
        payload_len: e.payload.len(),
    }
}

fn gap_delivery(g: &Gap) -> herald_delivery {
    let topic: &str = g.topic.as_deref().unwrap_or("");
    herald_delivery {
        kind: HERALD_DELIVERY_GAP,
        seq: 0,
        topic_seq: 0,
        timestamp_ns: 0,
        origin: 0,
        gap_from: g.from,
        gap_to: g.to,
        topic: topic.as_ptr().cast(),
        topic_len: topic.len(),
        event_type: "".as_ptr().cast(),
        event_type_len: 0,
        correlation: "".as_ptr().cast(),
        correlation_len: 0,
        payload: [].as_ptr(),
        payload_len: 0,
    }
}

fn borrowed(d: &DeliveryRef<'_>) -> herald_delivery {
    match d {
        DeliveryRef::Event(e) => event_delivery(e),
        DeliveryRef::Gap(g) => gap_delivery(g),
    }
}

/// Hands up to `limit` deliveries available now to `callback` (no waiting,
/// no copy: the delivery borrows the library's memory for the duration of
/// the callback). Returns how many were handed over (0: none available), or
/// a negated `herald_result` (e.g. `-HERALD_E_NULL`) on error; deliveries
/// handed over before an error count as handled.
///
/// # Safety
/// `subscriber` NULL or live; `callback` a valid function that does not
/// unwind; `user` is passed through untouched.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_poll(
    subscriber: *const herald_subscriber,
    callback: herald_poll_fn,
    user: *mut std::ffi::c_void,
    limit: usize,
) -> i64 {
    ffi_entry!(-(HERALD_E_PANIC as i64) => i64, {
        let result = (|| -> Result<i64, Fail> {
            // SAFETY: the caller guarantees NULL or a live handle.
            let mut entered = unsafe { enter(subscriber) }?;
            let Some(cb) = callback else {
                return Err(fail(HERALD_E_NULL, "callback is NULL"));
            };
            let st = entered.state();
            let mut n: i64 = 0;
            let mut stop = false;
            if limit == 0 {
                return Ok(0);
            }
            if let Some(d) = st.pending.take() {
                let view = borrowed(&d.as_delivery_ref());
                // SAFETY: the caller guarantees a valid callback; `view`
                // borrows `d`, alive across the call.
                stop = unsafe { cb(user, &view) } != 0;
                n += 1;
            }
            while !stop && (n as usize) < limit {
                let got = st.sub.try_next_with(|d| {
                    let view = borrowed(&d);
                    // SAFETY: as above; `view` borrows `d` for this closure.
                    unsafe { cb(user, &view) }
                })?;
                match got {
                    Some(r) => {
                        n += 1;
                        stop = r != 0;
                    }
                    None => break,
                }
            }
            Ok(n)
        })();
        match result {
            Ok(n) => n,
            Err(f) => -(f.0 as i64),
        }
    })
}

/// Copies `d` into `buf` (payload, topic, type, correlation) and describes
/// it; `Err(needed)` if it does not fit.
fn copy_into(
    d: &DeliveryRef<'_>,
    buf: *mut u8,
    cap: usize,
) -> Result<(herald_delivery, usize), usize> {
    let mut view = borrowed(d);
    let parts: [(*const u8, usize); 4] = [
        (view.payload, view.payload_len),
        (view.topic.cast(), view.topic_len),
        (view.event_type.cast(), view.event_type_len),
        (view.correlation.cast(), view.correlation_len),
    ];
    let needed: usize = parts.iter().map(|p| p.1).sum();
    if needed > cap {
        return Err(needed);
    }
    let mut at = 0;
    let mut placed = [std::ptr::null::<u8>(); 4];
    for (i, (src, len)) in parts.into_iter().enumerate() {
        // SAFETY: at + len <= needed <= cap, and `buf` has `cap` writable
        // bytes (checked non-NULL by the caller when cap > 0; here cap >=
        // needed > 0 whenever len > 0). The source is the delivery's own
        // memory, disjoint from the caller's buffer.
        let dst = unsafe { buf.add(at) };
        if len > 0 {
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        }
        placed[i] = dst;
        at += len;
    }
    view.payload = placed[0];
    view.topic = placed[1].cast();
    view.event_type = placed[2].cast();
    view.correlation = placed[3].cast();
    Ok((view, needed))
}

/// The subscriber's doorbell, made on first use.
fn doorbell<'a>(slot: &'a mut Option<Doorbell>, broker: &Broker) -> Result<&'a mut Doorbell, Fail> {
    Ok(match slot {
        Some(b) => b,
        slot => slot.insert(broker.doorbell()?),
    })
}

/// Resets and arms the doorbell: `Some(fd)` if the caller may now sleep on
/// `fd` (a publish will make it readable), `None` if something may already
/// be readable.
fn arm(st: &mut SubState) -> Result<Option<RawFd>, Fail> {
    if st.pending.is_some() {
        return Ok(None);
    }
    let bell = doorbell(&mut st.doorbell, &st.broker)?;
    bell.clear();
    Ok(st.sub.arm(bell).then(|| bell.as_raw_fd()))
}

/// Waits on the subscriber's doorbell up to `deadline`; `true` if it may
/// have something now. `HERALD_E_CANCELLED` if `herald_subscriber_wake`
/// was called (before or during the wait).
fn wait(wake: &Wake, st: &mut SubState, deadline: Option<Instant>) -> Result<bool, Fail> {
    let Some(fd) = arm(st)? else {
        return Ok(true);
    };
    wake.fd.store(fd, Ordering::SeqCst);
    loop {
        wake.check()?;
        let timeout_ms: i32 = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                left.as_millis().clamp(1, i32::MAX as u128) as i32
            }
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on our stack; fd is the doorbell's
        // eventfd, open while `bell` lives.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r > 0 {
            // Woken by `herald_subscriber_wake` rather than a publish?
            wake.check()?;
            return Ok(true);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
    }
}

/// The waiting part of a call with a `timeout_ms` (0: do not wait,
/// negative: wait forever).
struct Timeout {
    ms: i32,
    deadline: Option<Instant>,
    /// The deadline passed: one last look, then give up.
    last_try: bool,
}

impl Timeout {
    fn new(ms: i32) -> Timeout {
        Timeout {
            ms,
            deadline: (ms > 0).then(|| Instant::now() + Duration::from_millis(ms as u64)),
            last_try: false,
        }
    }

    /// After a look that found nothing: `HERALD_E_TIMEOUT` if the time is
    /// up, else waits until something may be readable or the deadline.
    fn wait(&mut self, wake: &Wake, st: &mut SubState) -> Result<(), Fail> {
        if self.ms == 0 || self.last_try {
            return Err(fail(
                HERALD_E_TIMEOUT,
                format_args!("no delivery within {} ms", self.ms),
            ));
        }
        if !wait(wake, st, self.deadline)? {
            self.last_try = true;
        }
        Ok(())
    }
}

/// Checks a caller's output buffer: NULL only with `cap` 0.
fn buf_arg(buf: *mut u8, cap: usize) -> Result<(), Fail> {
    if buf.is_null() && cap > 0 {
        return Err(fail(HERALD_E_NULL, "buf is NULL with a non-zero cap"));
    }
    if cap > isize::MAX as usize {
        return Err(fail(HERALD_E_INVALID_ARGUMENT, "cap is too large"));
    }
    Ok(())
}

/// Hands the pending delivery, else the next available one (`None`: none),
/// to `f`; one that `f` refuses (`Err`, e.g. it does not fit the caller's
/// buffer) is kept in `pending` for the next call: nothing is lost.
#[inline(always)]
fn take_next<T, E>(
    sub: &mut Subscription,
    pending: &mut Option<Delivery>,
    f: impl FnOnce(&DeliveryRef<'_>) -> Result<T, E>,
) -> Result<Option<Result<T, E>>, Fail> {
    if let Some(d) = pending.take() {
        let r = f(&d.as_delivery_ref());
        if r.is_err() {
            *pending = Some(d);
        }
        return Ok(Some(r));
    }
    Ok(sub.try_next_with(|d| {
        let r = f(&d);
        if r.is_err() {
            *pending = Some(d.to_owned_delivery());
        }
        r
    })?)
}

/// Copies the next delivery into `buf` (layout: see `herald_delivery`) and
/// describes it in `*out_delivery` (its pointers point into `buf`);
/// `*out_len` gets the bytes used. Waits up to `timeout_ms` (0: do not wait;
/// negative: wait forever) and returns `HERALD_E_TIMEOUT` if nothing came.
/// If the delivery does not fit, returns `HERALD_E_BUFFER_TOO_SMALL`, writes
/// the needed size to `*out_len` and keeps the delivery for the next call
/// (nothing is lost). `buf` may be NULL when `cap` is 0.
///
/// # Safety
/// `subscriber` NULL or live; `buf` NULL or `cap` writable bytes; outputs
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_next(
    subscriber: *const herald_subscriber,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
    out_delivery: *mut herald_delivery,
    timeout_ms: i32,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let mut entered = unsafe { enter(subscriber) }?;
        let out_len = out_arg(out_len, "out_len")?;
        let out_delivery = out_arg(out_delivery, "out_delivery")?;
        buf_arg(buf, cap)?;
        let sub_handle = entered.sub;
        let st = entered.state();
        let mut timeout = Timeout::new(timeout_ms);
        loop {
            let SubState { sub, pending, .. } = &mut *st;
            // On success both outputs are written right here (no large value
            // is moved back through the subscription's state machine).
            let copied = take_next(sub, pending, |d| {
                let (view, n) = copy_into(d, buf, cap)?;
                // SAFETY: both checked by out_arg.
                unsafe {
                    write_out(out_len, n);
                    write_out(out_delivery, view);
                }
                Ok(())
            })?;
            match copied {
                Some(Ok(())) => return Ok(()),
                Some(Err(needed)) => {
                    // SAFETY: checked by out_arg.
                    return Err(unsafe { too_small(out_len, needed, cap, "the delivery") });
                }
                None => timeout.wait(&sub_handle.wake, st)?,
            }
        }
    })
}

/// Bytes of the header of each record written by `herald_subscriber_read`.
pub const HERALD_RECORD_HEADER: usize = 64;

/// Writes `d` as one `herald_subscriber_read` record at `buf[at..]`;
/// `Err(record_len)` if it does not fit in `cap`.
fn write_record(d: &DeliveryRef<'_>, buf: *mut u8, cap: usize, at: usize) -> Result<usize, usize> {
    let v = borrowed(d);
    let body = v.payload_len + v.topic_len + v.event_type_len + v.correlation_len;
    let len = (HERALD_RECORD_HEADER + body + 7) & !7;
    if at + len > cap {
        return Err(len);
    }
    let mut h = [0u8; HERALD_RECORD_HEADER];
    h[0..4].copy_from_slice(&v.kind.to_le_bytes());
    h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    for (i, x) in [
        v.seq,
        v.topic_seq,
        v.timestamp_ns,
        v.origin,
        v.gap_from,
        v.gap_to,
    ]
    .into_iter()
    .enumerate()
    {
        h[8 + 8 * i..16 + 8 * i].copy_from_slice(&x.to_le_bytes());
    }
    h[56..60].copy_from_slice(&(v.payload_len as u32).to_le_bytes());
    // Topics are at most 255 bytes, types 128, correlation ids 126.
    h[60] = v.topic_len as u8;
    h[61] = v.event_type_len as u8;
    h[62] = v.correlation_len as u8;
    let parts: [(*const u8, usize); 5] = [
        (h.as_ptr(), HERALD_RECORD_HEADER),
        (v.payload, v.payload_len),
        (v.topic.cast(), v.topic_len),
        (v.event_type.cast(), v.event_type_len),
        (v.correlation.cast(), v.correlation_len),
    ];
    let mut pos = at;
    for (src, n) in parts {
        if n > 0 {
            // SAFETY: pos + n <= at + len <= cap, and the caller guarantees
            // `cap` writable bytes at `buf` (non-NULL, checked by the caller
            // since cap >= len > 0); sources are our own memory, disjoint
            // from the caller's buffer.
            unsafe { std::ptr::copy_nonoverlapping(src, buf.add(pos), n) };
        }
        pos += n;
    }
    // Zero the padding so the output is deterministic.
    // SAFETY: pos <= at + len <= cap, as above.
    unsafe { std::ptr::write_bytes(buf.add(pos), 0, at + len - pos) };
    Ok(at + len)
}

/// Reads up to `limit` deliveries in one call, packed into `buf` back to
/// back: the batch form of `herald_subscriber_next`, one boundary crossing
/// for many events (what host bindings use). Waits up to `timeout_ms` for
/// the first delivery (0: no wait, negative: forever; `HERALD_E_TIMEOUT` if
/// none came), then takes whatever else is available now, as long as it
/// fits. `*out_len` gets the bytes written, `*out_count` the records.
///
/// Each record starts at a multiple of 8 and is, little-endian:
/// `u32 kind` (`HERALD_DELIVERY_*`), `u32 record_len` (bytes to the next
/// record), `u64 seq`, `u64 topic_seq`, `u64 timestamp_ns`, `u64 origin`,
/// `u64 gap_from`, `u64 gap_to`, `u32 payload_len`, `u8 topic_len`,
/// `u8 event_type_len`, `u8 correlation_len`, `u8` zero
/// (`HERALD_RECORD_HEADER` = 64 bytes), then the payload, topic, event type
/// and correlation id, then zero padding to a multiple of 8.
///
/// A delivery that does not fit is kept for the next call; if not even the
/// first fits, returns `HERALD_E_BUFFER_TOO_SMALL` with its record length in
/// `*out_len`.
///
/// # Safety
/// `subscriber` NULL or live; `buf` NULL or `cap` writable bytes; outputs
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_read(
    subscriber: *const herald_subscriber,
    buf: *mut u8,
    cap: usize,
    limit: usize,
    out_len: *mut usize,
    out_count: *mut usize,
    timeout_ms: i32,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let mut entered = unsafe { enter(subscriber) }?;
        let out_len = out_arg(out_len, "out_len")?;
        let out_count = out_arg(out_count, "out_count")?;
        buf_arg(buf, cap)?;
        if limit == 0 {
            return Err(fail(HERALD_E_INVALID_ARGUMENT, "limit is 0"));
        }
        let sub_handle = entered.sub;
        let st = entered.state();
        let mut timeout = Timeout::new(timeout_ms);
        loop {
            let SubState { sub, pending, .. } = &mut *st;
            let (mut at, mut count) = (0usize, 0usize);
            while count < limit {
                match take_next(sub, pending, |d| write_record(d, buf, cap, at))? {
                    Some(Ok(end)) => {
                        at = end;
                        count += 1;
                    }
                    // Not even the first record fits.
                    Some(Err(needed)) if count == 0 => {
                        // SAFETY: checked by out_arg.
                        return Err(unsafe { too_small(out_len, needed, cap, "the next record") });
                    }
                    Some(Err(_)) | None => break,
                }
            }
            if count > 0 {
                // SAFETY: both checked by out_arg.
                unsafe {
                    write_out(out_len, at);
                    write_out(out_count, count);
                }
                return Ok(());
            }
            timeout.wait(&sub_handle.wake, st)?;
        }
    })
}

/// A file descriptor (an eventfd owned by the subscriber) that a host event
/// loop can watch for readability: libuv `uv_poll`, Go's netpoller, epoll.
/// Protocol: read until `HERALD_E_TIMEOUT` (next with timeout 0) or poll
/// returns 0; call `herald_subscriber_arm`; if it says you may sleep, wait
/// for the fd to become readable, then read again. Do not read from or close
/// the fd yourself; it stays valid until the subscriber is freed.
///
/// # Safety
/// `subscriber` NULL or live; `out_fd` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_fd(
    subscriber: *const herald_subscriber,
    out_fd: *mut i32,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let mut entered = unsafe { enter(subscriber) }?;
        let out = out_arg(out_fd, "out_fd")?;
        let st = entered.state();
        let fd = doorbell(&mut st.doorbell, &st.broker)?.as_raw_fd();
        // SAFETY: checked by out_arg.
        unsafe { write_out(out, fd) };
        Ok(())
    })
}

/// Prepares to sleep on `herald_subscriber_fd`: resets the fd and arms it.
/// `*out_may_sleep` is true if the caller may now wait for the fd (a publish
/// will make it readable), false if something may already be readable (read
/// again instead of sleeping).
///
/// # Safety
/// `subscriber` NULL or live; `out_may_sleep` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_arm(
    subscriber: *const herald_subscriber,
    out_may_sleep: *mut bool,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let mut entered = unsafe { enter(subscriber) }?;
        let out = out_arg(out_may_sleep, "out_may_sleep")?;
        let may_sleep = arm(entered.state())?.is_some();
        // SAFETY: checked by out_arg.
        unsafe { write_out(out, may_sleep) };
        Ok(())
    })
}

/// Blocks until the subscriber may have a delivery or `timeout_ms` passes
/// (negative: no limit); `*out_ready` (may be NULL) tells which. It does not
/// consume anything: read with poll/next afterwards. Meant for hosts that
/// wait on a thread of their own (JVM threads); event loops watch
/// `herald_subscriber_fd` instead.
///
/// # Safety
/// `subscriber` NULL or live; `out_ready` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_wait(
    subscriber: *const herald_subscriber,
    timeout_ms: i32,
    out_ready: *mut bool,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let mut entered = unsafe { enter(subscriber) }?;
        let out = opt_out_arg(out_ready, "out_ready")?;
        let deadline =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        let wake = &entered.sub.wake;
        let ready = wait(wake, entered.state(), deadline)?;
        if let Some(out) = out {
            // SAFETY: checked by out_arg.
            unsafe { write_out(out, ready) };
        }
        Ok(())
    })
}

/// Ends a blocking `herald_subscriber_next`, `_read` or `_wait` on this
/// subscriber, now or, if none is blocked, the next one: it returns
/// `HERALD_E_CANCELLED` (nothing is consumed or lost). The one call that
/// may run while another thread is inside the subscriber: a host calls it
/// to stop a reader thread before freeing the subscriber (free only after
/// that thread has returned).
///
/// # Safety
/// `subscriber` NULL or live (not freed concurrently).
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_wake(
    subscriber: *const herald_subscriber,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let sub = unsafe { handle(subscriber) }?;
        let wake = &sub.wake;
        // SeqCst: see `Wake::check`.
        wake.pending.store(true, Ordering::SeqCst);
        let fd = wake.fd.load(Ordering::SeqCst);
        if fd >= 0 {
            let one = 1u64.to_ne_bytes();
            // SAFETY: `fd` is the doorbell's eventfd, open while the
            // subscriber lives; an eventfd takes 8-byte writes. A failure
            // (counter full) leaves it readable anyway.
            unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
        }
        Ok(())
    })
}

/// How far behind the subscriber is: `*out_behind` = global sequences
/// published that it has not examined yet (0: caught up), `*out_live`
/// (may be NULL) whether it reads the live ring (false: replaying the log,
/// e.g. after it was lapped). Lag is never silent loss: a lapped subscriber
/// replays from the log; the broker's `lagged_fallbacks` metric counts it.
///
/// # Safety
/// `subscriber` NULL or live; outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_lag(
    subscriber: *const herald_subscriber,
    out_behind: *mut u64,
    out_live: *mut bool,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let mut entered = unsafe { enter(subscriber) }?;
        let behind = out_arg(out_behind, "out_behind")?;
        let live = opt_out_arg(out_live, "out_live")?;
        let st = entered.state();
        let lag = st.broker.next_seq().saturating_sub(st.sub.next_seq());
        // SAFETY: checked by out_arg.
        unsafe { write_out(behind, lag) };
        if let Some(live) = live {
            // SAFETY: checked by out_arg.
            unsafe { write_out(live, st.sub.is_live()) };
        }
        Ok(())
    })
}

/// Acknowledges one delivered event (durable consumers only;
/// `HERALD_E_NOT_A_CONSUMER` otherwise). The checkpoint advances over every
/// event delivered and acknowledged.
///
/// # Safety
/// `subscriber` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_ack(
    subscriber: *const herald_subscriber,
    seq: u64,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let mut entered = unsafe { enter(subscriber) }?;
        entered.state().sub.ack(seq)?;
        Ok(())
    })
}

/// Acknowledges every delivered event up to global sequence `seq` (durable
/// consumers only).
///
/// # Safety
/// `subscriber` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn herald_subscriber_ack_up_to(
    subscriber: *const herald_subscriber,
    seq: u64,
) -> herald_result {
    ffi_entry!({
        // SAFETY: the caller guarantees NULL or a live handle.
        let mut entered = unsafe { enter(subscriber) }?;
        entered.state().sub.ack_up_to(seq)?;
        Ok(())
    })
}
