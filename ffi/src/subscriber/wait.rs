//! Waiting: the pollable fd for host event loops (`_fd`, `_arm`), the
//! blocking wait (`_wait`, and the timeouts of next and read), and `_wake`,
//! which ends a blocked call.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_core::ring::Doorbell;
use herald_core::Broker;

use crate::args::{handle, opt_out_arg, out_arg};
use crate::error::{fail, ffi_entry, herald_result, Fail};
use crate::herald_result::*;

use super::{enter, herald_subscriber, SubState, Wake};

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
pub(super) struct Timeout {
    ms: i32,
    deadline: Option<Instant>,
    /// The deadline passed: one last look, then give up.
    last_try: bool,
}

impl Timeout {
    pub(super) fn new(ms: i32) -> Timeout {
        Timeout {
            ms,
            deadline: (ms > 0).then(|| Instant::now() + Duration::from_millis(ms as u64)),
            last_try: false,
        }
    }

    /// After a look that found nothing: `HERALD_E_TIMEOUT` if the time is
    /// up, else waits until something may be readable or the deadline.
    pub(super) fn wait(&mut self, wake: &Wake, st: &mut SubState) -> Result<(), Fail> {
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
        let mut entered = enter(subscriber)?;
        let out = out_arg(out_fd, "out_fd")?;
        let st = entered.state();
        let fd = doorbell(&mut st.doorbell, &st.broker)?.as_raw_fd();
        out.write(fd);
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
        let mut entered = enter(subscriber)?;
        let out = out_arg(out_may_sleep, "out_may_sleep")?;
        let may_sleep = arm(entered.state())?.is_some();
        out.write(may_sleep);
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
        let mut entered = enter(subscriber)?;
        let out = opt_out_arg(out_ready, "out_ready")?;
        let deadline =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        let wake = &entered.sub.wake;
        let ready = wait(wake, entered.state(), deadline)?;
        if let Some(out) = out {
            out.write(ready);
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
        let sub = handle(subscriber)?;
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
