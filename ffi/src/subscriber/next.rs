//! `herald_subscriber_next`: one delivery copied into the caller's buffer.

use herald_core::broker::DeliveryRef;

use crate::args::{buf_arg, out_arg, too_small, OutBuf};
use crate::error::{ffi_entry, herald_result};

use super::{
    borrowed, enter, herald_delivery, herald_subscriber, parts, take_next, SubState, Timeout,
};

/// Copies `d` into `buf` (payload, topic, type, correlation) and describes
/// it; `Err(needed)` if it does not fit.
fn copy_into(d: &DeliveryRef<'_>, buf: OutBuf) -> Result<(herald_delivery, usize), usize> {
    let mut view = borrowed(d);
    let parts = parts(d);
    let needed: usize = parts.iter().map(|p| p.len()).sum();
    if needed > buf.cap() {
        return Err(needed);
    }
    let mut at = 0;
    let mut placed = [std::ptr::null::<u8>(); 4];
    for (i, part) in parts.into_iter().enumerate() {
        buf.write(at, part);
        placed[i] = buf.ptr_at(at);
        at += part.len();
    }
    view.payload = placed[0];
    view.topic = placed[1].cast();
    view.event_type = placed[2].cast();
    view.correlation = placed[3].cast();
    Ok((view, needed))
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
        let mut entered = enter(subscriber)?;
        let out_len = out_arg(out_len, "out_len")?;
        let out_delivery = out_arg(out_delivery, "out_delivery")?;
        let buf = buf_arg(buf, cap)?;
        let sub_handle = entered.sub;
        let st = entered.state();
        let mut timeout = Timeout::new(timeout_ms);
        loop {
            let SubState { sub, pending, .. } = &mut *st;
            // On success both outputs are written right here (no large value
            // is moved back through the subscription's state machine).
            let copied = take_next(sub, pending, |d| {
                let (view, n) = copy_into(d, buf)?;
                out_len.write(n);
                out_delivery.write(view);
                Ok(())
            })?;
            match copied {
                Some(Ok(())) => return Ok(()),
                Some(Err(needed)) => {
                    return Err(too_small(out_len, needed, cap, "the delivery"));
                }
                None => timeout.wait(&sub_handle.wake, st)?,
            }
        }
    })
}
