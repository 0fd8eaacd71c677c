//! Durable-consumer acknowledgements and lag.

use crate::args::{opt_out_arg, out_arg};
use crate::error::{ffi_entry, herald_result};

use super::{enter, herald_subscriber};

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
        let mut entered = enter(subscriber)?;
        let behind = out_arg(out_behind, "out_behind")?;
        let live = opt_out_arg(out_live, "out_live")?;
        let st = entered.state();
        let lag = st.broker.next_seq().saturating_sub(st.sub.next_seq());
        behind.write(lag);
        if let Some(live) = live {
            live.write(st.sub.is_live());
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
        let mut entered = enter(subscriber)?;
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
        let mut entered = enter(subscriber)?;
        entered.state().sub.ack_up_to(seq)?;
        Ok(())
    })
}
