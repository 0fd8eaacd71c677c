//! `herald_subscriber_poll`: deliveries handed to a callback, no copy.

use crate::error::{fail, ffi_entry, Fail};
use crate::herald_result::*;

use super::{borrowed, enter, herald_delivery, herald_subscriber};

/// Callback of `herald_subscriber_poll`: return 0 to go on, non-zero to stop
/// after this delivery. It must not unwind (no C++ exception, no longjmp).
/// It may call into the library, except on the same subscriber
/// (`HERALD_E_BUSY`).
pub type herald_poll_fn = Option<
    unsafe extern "C" fn(user: *mut std::ffi::c_void, delivery: *const herald_delivery) -> i32,
>;

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
            let mut entered = enter(subscriber)?;
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
