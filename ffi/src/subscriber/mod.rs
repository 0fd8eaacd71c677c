//! The subscriber handle: poll with a callback, next into a buffer, a
//! pollable fd for host event loops, durable-consumer acks, lag.
//!
//! This file holds the handle, its one-call-at-a-time guard, and
//! open/free; each way of reading, the waiting, and the acknowledgements
//! have a file of their own.

use std::cell::UnsafeCell;
use std::ffi::c_char;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use herald_core::broker::DeliveryRef;
use herald_core::ring::Doorbell;
use herald_core::{Broker, Delivery, StartAt, Subscription};

use crate::args::{handle, into_raw, out_arg, reclaim, str_arg, Handle};
use crate::broker::herald_broker;
use crate::error::{fail, ffi_entry, herald_result, Fail};
use crate::filter::herald_filter;
use crate::herald_result::*;

// Declared in the order the header lists their functions (cbindgen reads
// the modules in declaration order).
/// `herald_delivery`: one delivery as poll and next describe it.
mod delivery;

/// `herald_subscriber_poll`: deliveries handed to a callback.
mod poll;

/// `herald_subscriber_next`: one delivery copied into a buffer.
mod next;

/// `herald_subscriber_read`: a batch packed as records.
mod read;

/// The pollable fd, the blocking wait, and the wake-up.
mod wait;

/// Acknowledgements and lag.
mod ack;

pub use ack::*;
pub use delivery::*;
pub use next::*;
pub use poll::*;
pub use read::*;
pub use wait::*;

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

/// Checks and enters a subscriber handle (an argument, see `args`).
#[inline(always)]
fn enter<'a>(p: *const herald_subscriber) -> Result<Entered<'a>, Fail> {
    let sub = handle(p)?;
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
        let b = handle(broker)?;
        let f = handle(filter)?;
        let out = out_arg(out, "subscriber")?;
        let start = start_at(start_kind, start_value)?;
        let sub = b.broker.subscribe(f.build()?, start)?;
        out.write(new_handle(sub, b.broker.clone()));
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
        let b = handle(broker)?;
        let f = handle(filter)?;
        let name = str_arg(name, name_len, "name")?;
        let out = out_arg(out, "subscriber")?;
        let start = start_at(start_kind, start_value)?;
        let sub = b.broker.subscribe_consumer(name, f.build()?, start)?;
        out.write(new_handle(sub, b.broker.clone()));
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
        // `busy` stays set: no call gets in while it is freed.
        std::mem::forget(enter(subscriber)?);
        drop(reclaim(subscriber)?);
        Ok(())
    });
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
