//! Result codes, the thread-local last-error message, and the one
//! panic-catching wrapper every entry point goes through.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
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
            // (The C ABI opens no replicas: the last two do not reach it.)
            BrokerError::ForeignPublisher
            | BrokerError::InvalidIdempotencyKey(_)
            | BrokerError::Replica(_)
            | BrokerError::ReplicaOrder { .. } => HERALD_E_INVALID_ARGUMENT,
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

/// Each code with its short message (what `herald_strerror` returns), and
/// from them the conversions. The enum itself is written out above, where
/// cbindgen can read it; this table's `match` on it has no wildcard arm, so
/// a code added there without its message here does not compile.
macro_rules! messages {
    ($($code:ident => $message:literal,)*) => {
        impl herald_result {
            /// Every code, in the table's order.
            #[cfg(test)]
            pub(crate) const ALL: &[herald_result] = &[$($code),*];

            /// The short, static description of this code.
            pub(crate) fn message(self) -> &'static CStr {
                match self {
                    $($code => $message,)*
                }
            }
        }

        impl TryFrom<i32> for herald_result {
            type Error = i32;

            /// The code numbered `code`; `Err(code)` if there is none.
            fn try_from(code: i32) -> Result<herald_result, i32> {
                match code {
                    $(n if n == $code as i32 => Ok($code),)*
                    _ => Err(code),
                }
            }
        }
    };
}

messages! {
    HERALD_OK => c"success",
    HERALD_E_NULL => c"a required pointer argument was NULL",
    HERALD_E_INVALID_HANDLE => c"invalid handle (wrong type or already freed)",
    HERALD_E_INVALID_ARGUMENT => c"invalid argument",
    HERALD_E_INVALID_UTF8 => c"a string argument is not UTF-8",
    HERALD_E_INVALID_TOPIC => c"invalid topic name or pattern",
    HERALD_E_INVALID_FILTER => c"invalid filter",
    HERALD_E_INVALID_EVENT_TYPE => c"invalid event type",
    HERALD_E_INVALID_CORRELATION => c"invalid correlation id",
    HERALD_E_PAYLOAD_TOO_LARGE => c"payload too large",
    HERALD_E_NEEDS_SINGLE_TOPIC => c"this start position needs a filter naming exactly one topic",
    HERALD_E_INVALID_CONFIG => c"invalid broker configuration",
    HERALD_E_BUFFER_TOO_SMALL => c"buffer too small (the needed size was reported)",
    HERALD_E_TIMEOUT => c"no delivery within the timeout",
    HERALD_E_BUSY => c"handle busy (concurrent call or outstanding claim)",
    HERALD_E_NO_CLAIM => c"no outstanding claim",
    HERALD_E_UNKNOWN_CONSUMER => c"unknown durable consumer",
    HERALD_E_NOT_A_CONSUMER => c"not a durable consumer's subscriber",
    HERALD_E_ACK => c"acknowledgement refused",
    HERALD_E_CHECKPOINT => c"consumer checkpoint failure",
    HERALD_E_PRESENCE => c"presence failure",
    HERALD_E_LOG => c"log failure",
    HERALD_E_IO => c"I/O failure",
    HERALD_E_CORRUPT => c"stored data is corrupt",
    HERALD_E_PANIC => c"internal error (panic caught)",
    HERALD_E_CANCELLED => c"the wait was ended by herald_subscriber_wake",
}

/// A short, static description of a result code (never NULL; the caller
/// must not free it). Unknown codes give `"unknown result code"`.
#[no_mangle]
pub extern "C" fn herald_strerror(code: i32) -> *const c_char {
    match herald_result::try_from(code) {
        Ok(code) => code.message().as_ptr(),
        Err(_) => c"unknown result code".as_ptr(),
    }
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
    fn every_code_converts_back_and_has_its_own_message() {
        let text = |code: i32| {
            // SAFETY: herald_strerror returns a static NUL-terminated string.
            unsafe { CStr::from_ptr(herald_strerror(code)) }
                .to_str()
                .unwrap()
        };
        let mut seen = std::collections::HashSet::new();
        for &code in herald_result::ALL {
            assert_eq!(herald_result::try_from(code as i32), Ok(code));
            assert_ne!(text(code as i32), "unknown result code", "{code:?}");
            assert!(
                seen.insert(text(code as i32)),
                "{code:?}: message not unique"
            );
        }
        // Every other number is unknown.
        for n in (-2..100).chain([i32::MIN, i32::MAX]) {
            match herald_result::ALL.iter().find(|&&c| c as i32 == n) {
                Some(&code) => assert_eq!(herald_result::try_from(n), Ok(code)),
                None => {
                    assert_eq!(herald_result::try_from(n), Err(n));
                    assert_eq!(text(n), "unknown result code");
                }
            }
        }
    }
}
