//! Result codes, the thread-local last-error message, and the one
//! panic-catching wrapper every entry point goes through.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::fmt::Display;

use herald_core::broker::BrokerError;

/// Result of every call. Codes are stable: a code's meaning never changes and
/// a retired code is never reused. `HERALD_OK` is 0; errors are positive.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum herald_result {
    /// Success.
    HERALD_OK = 0,
    /// A required pointer argument (handle, output, buffer) was NULL.
    HERALD_E_NULL = 1,
    /// A handle of the wrong type, or one already freed (detected on a
    /// best-effort basis: never use a freed handle).
    HERALD_E_INVALID_HANDLE = 2,
    /// An argument value is out of range (unknown enum value, bad length).
    HERALD_E_INVALID_ARGUMENT = 3,
    /// A string argument is not UTF-8.
    HERALD_E_INVALID_UTF8 = 4,
    /// A topic name or pattern breaks the naming rules.
    HERALD_E_INVALID_TOPIC = 5,
    /// A filter that cannot select anything (e.g. no topic pattern).
    HERALD_E_INVALID_FILTER = 6,
    /// An event type breaks the rules (1..=128 bytes of `[A-Za-z0-9_.:-]`).
    HERALD_E_INVALID_EVENT_TYPE = 7,
    /// A correlation id breaks the rules (up to 126 printable ASCII bytes).
    HERALD_E_INVALID_CORRELATION = 8,
    /// A payload (or claim) larger than the broker's `max_payload`.
    HERALD_E_PAYLOAD_TOO_LARGE = 9,
    /// The start position needs a filter naming exactly one topic.
    HERALD_E_NEEDS_SINGLE_TOPIC = 10,
    /// The broker configuration cannot work.
    HERALD_E_INVALID_CONFIG = 11,
    /// The caller's buffer is too small; the needed size was written to the
    /// length output. Nothing was consumed: call again with a larger buffer.
    HERALD_E_BUFFER_TOO_SMALL = 12,
    /// No delivery arrived within the timeout (or, with timeout 0, none is
    /// available now). Not a failure of the subscriber.
    HERALD_E_TIMEOUT = 13,
    /// The handle is in use: another thread is inside a call on this
    /// subscriber, or this publisher already has an outstanding claim.
    HERALD_E_BUSY = 14,
    /// `commit`/`abort` without an outstanding claim.
    HERALD_E_NO_CLAIM = 15,
    /// No durable consumer of that name exists.
    HERALD_E_UNKNOWN_CONSUMER = 16,
    /// `ack` on a subscriber that is not a durable consumer's.
    HERALD_E_NOT_A_CONSUMER = 17,
    /// An acknowledgement of an event that was not delivered.
    HERALD_E_ACK = 18,
    /// A consumer checkpoint failure (bad name, I/O, corrupt file).
    HERALD_E_CHECKPOINT = 19,
    /// A presence failure (empty or too long field, bad metadata JSON,
    /// unknown session, topic full).
    HERALD_E_PRESENCE = 20,
    /// The log failed (I/O, full, corrupt, poisoned after a failed sync).
    HERALD_E_LOG = 21,
    /// A file-system or OS call failed.
    HERALD_E_IO = 22,
    /// Stored data is corrupt (e.g. the topic registry).
    HERALD_E_CORRUPT = 23,
    /// A bug: the library panicked. The call had no effect beyond what the
    /// message says; the handle may be used again.
    HERALD_E_PANIC = 24,
    /// A blocking call was ended by `herald_subscriber_wake`.
    HERALD_E_CANCELLED = 25,
}

use herald_result::*;

/// An error already recorded as this thread's last error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fail(pub(crate) herald_result);

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error and returns `code`.
#[cold]
pub(crate) fn fail(code: herald_result, message: impl Display) -> Fail {
    let mut text = message.to_string().into_bytes();
    text.retain(|&b| b != 0);
    let text = CString::new(text).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
    Fail(code)
}

impl From<BrokerError> for Fail {
    #[cold]
    fn from(e: BrokerError) -> Fail {
        let code = match &e {
            BrokerError::InvalidTopic { .. } => HERALD_E_INVALID_TOPIC,
            BrokerError::InvalidFilter(_) => HERALD_E_INVALID_FILTER,
            BrokerError::InvalidEventType(_) => HERALD_E_INVALID_EVENT_TYPE,
            BrokerError::InvalidCorrelation(_) => HERALD_E_INVALID_CORRELATION,
            BrokerError::PayloadTooLarge { .. } => HERALD_E_PAYLOAD_TOO_LARGE,
            BrokerError::NeedsSingleTopic => HERALD_E_NEEDS_SINGLE_TOPIC,
            BrokerError::UnknownConsumer(_) => HERALD_E_UNKNOWN_CONSUMER,
            BrokerError::NotAConsumer => HERALD_E_NOT_A_CONSUMER,
            BrokerError::Ack(_) => HERALD_E_ACK,
            BrokerError::Checkpoint(_) => HERALD_E_CHECKPOINT,
            BrokerError::Presence(_) => HERALD_E_PRESENCE,
            BrokerError::Log(_) => HERALD_E_LOG,
            BrokerError::Io { .. } => HERALD_E_IO,
            BrokerError::CorruptRegistry { .. } => HERALD_E_CORRUPT,
            BrokerError::InvalidConfig(_) => HERALD_E_INVALID_CONFIG,
            BrokerError::ForeignPublisher => HERALD_E_INVALID_ARGUMENT,
        };
        fail(code, e)
    }
}

impl From<std::io::Error> for Fail {
    #[cold]
    fn from(e: std::io::Error) -> Fail {
        fail(HERALD_E_IO, e)
    }
}

#[cold]
pub(crate) fn record_panic(payload: Box<dyn Any + Send>) {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    let _ = fail(
        HERALD_E_PANIC,
        format_args!("internal error (panic): {what}"),
    );
}

/// The one panic-catching wrapper of every entry point.
///
/// `ffi_entry!({ body })` runs `body` (a block evaluating to
/// `Result<(), Fail>`) and returns a `herald_result`;
/// `ffi_entry!(on_panic => value_type, { body })` runs a body evaluating to
/// `value_type` and returns `on_panic` if it panics.
macro_rules! ffi_entry {
    ($body:block) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(
            || -> ::std::result::Result<(), $crate::error::Fail> { $body },
        )) {
            Ok(Ok(())) => $crate::error::herald_result::HERALD_OK,
            Ok(Err(fail)) => fail.0,
            Err(panic) => {
                $crate::error::record_panic(panic);
                $crate::error::herald_result::HERALD_E_PANIC
            }
        }
    };
    ($on_panic:expr => $ty:ty, $body:block) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| -> $ty { $body })) {
            Ok(value) => value,
            Err(panic) => {
                $crate::error::record_panic(panic);
                $on_panic
            }
        }
    };
}
pub(crate) use ffi_entry;

/// A short, static description of a result code (never NULL; the caller
/// must not free it). Unknown codes give `"unknown result code"`.
#[no_mangle]
pub extern "C" fn herald_strerror(code: i32) -> *const c_char {
    let text: &'static str = match code {
        0 => "success\0",
        1 => "a required pointer argument was NULL\0",
        2 => "invalid handle (wrong type or already freed)\0",
        3 => "invalid argument\0",
        4 => "a string argument is not UTF-8\0",
        5 => "invalid topic name or pattern\0",
        6 => "invalid filter\0",
        7 => "invalid event type\0",
        8 => "invalid correlation id\0",
        9 => "payload too large\0",
        10 => "this start position needs a filter naming exactly one topic\0",
        11 => "invalid broker configuration\0",
        12 => "buffer too small (the needed size was reported)\0",
        13 => "no delivery within the timeout\0",
        14 => "handle busy (concurrent call or outstanding claim)\0",
        15 => "no outstanding claim\0",
        16 => "unknown durable consumer\0",
        17 => "not a durable consumer's subscriber\0",
        18 => "acknowledgement refused\0",
        19 => "consumer checkpoint failure\0",
        20 => "presence failure\0",
        21 => "log failure\0",
        22 => "I/O failure\0",
        23 => "stored data is corrupt\0",
        24 => "internal error (panic caught)\0",
        25 => "the wait was ended by herald_subscriber_wake\0",
        _ => "unknown result code\0",
    };
    text.as_ptr().cast()
}

/// The detailed message of the most recent failed call on the calling
/// thread (`""` if none failed yet). Never NULL. The string is owned by the
/// library and stays valid until the next failing call on this thread; copy
/// it to keep it.
#[no_mangle]
pub extern "C" fn herald_last_error() -> *const c_char {
    ffi_entry!(c"".as_ptr() => *const c_char, {
        // The CString lives in the thread-local until the next `fail` on this
        // thread replaces it, which the documented validity rule allows for.
        LAST_ERROR.with(|e| e.borrow().as_ptr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: herald_last_error never returns NULL; the string is valid
        // until the next failure on this thread.
        unsafe { CStr::from_ptr(herald_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_herald_e_panic_with_its_message() {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let rc = ffi_entry!({
            if last().len() < usize::MAX {
                panic!("boom {}", 42);
            }
            Ok(())
        });
        let value = ffi_entry!(-1i64 => i64, { panic!("static message") });
        std::panic::set_hook(hook);
        assert_eq!(rc, HERALD_E_PANIC);
        assert_eq!(value, -1);
        assert!(last().contains("static message"), "{}", last());
    }

    #[test]
    fn errors_are_recorded_per_thread() {
        let rc = ffi_entry!({ Err(fail(HERALD_E_INVALID_TOPIC, "bad \0name")) });
        assert_eq!(rc, HERALD_E_INVALID_TOPIC);
        assert_eq!(last(), "bad name");
        std::thread::spawn(|| assert_eq!(last(), ""))
            .join()
            .unwrap();
    }

    #[test]
    fn every_code_has_a_description_and_unknown_codes_are_named() {
        for code in 0..=HERALD_E_CANCELLED as i32 {
            // SAFETY: static NUL-terminated strings.
            let s = unsafe { CStr::from_ptr(herald_strerror(code)) }
                .to_str()
                .unwrap();
            assert_ne!(s, "unknown result code", "code {code}");
        }
        // SAFETY: as above.
        let s = unsafe { CStr::from_ptr(herald_strerror(HERALD_E_CANCELLED as i32 + 1)) };
        assert_eq!(s.to_str().unwrap(), "unknown result code");
    }
}
