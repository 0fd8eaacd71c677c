//! The filter builder handle.

use std::ffi::c_char;
use std::sync::{Mutex, MutexGuard};

use herald_core::broker::TopicPattern;
use herald_core::Filter;

use crate::args::{handle, into_raw, out_arg, reclaim, str_arg, Handle};
use crate::error::{fail, ffi_entry, herald_result};
use crate::herald_result::*;

/// Most origins one filter leaves out (`herald_filter_exclude_origin`).
pub const HERALD_MAX_EXCLUDED_ORIGINS: usize = 32;

/// What a subscriber selects: topic names or patterns (NATS-style `*` one
/// token, `>` one or more trailing tokens), optionally event types, and an
/// origin to exclude ("not my own events"). Build it, pass it to
/// `herald_subscriber_open*` (which copy it), free it.
///
/// Thread-safety: thread-safe (calls on one filter are serialised internally).
#[derive(Debug)]
// The tag at offset 0 (see `Handle`); the header keeps the type opaque.
#[cfg_attr(all(), repr(C))]
pub struct herald_filter {
    pub(crate) tag: u64,
    spec: Mutex<FilterSpec>,
}

#[derive(Debug, Default)]
pub(crate) struct FilterSpec {
    topics: Vec<String>,
    types: Vec<String>,
    exclude_origins: Vec<u64>,
}

impl Handle for herald_filter {
    const TAG: u64 = 0x4845_5241_4c44_4649; // "HERALDFI"
}

impl herald_filter {
    /// Locks the spec (a panic while it was held leaves it usable: every
    /// change is a single push or assignment).
    fn spec(&self) -> MutexGuard<'_, FilterSpec> {
        self.spec.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The core filter this builder describes.
    pub(crate) fn build(&self) -> Result<Filter, crate::error::Fail> {
        let spec = self.spec();
        let patterns: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
        let mut filter = Filter::patterns(&patterns)?;
        if !spec.types.is_empty() {
            filter = filter.with_types(&spec.types);
        }
        for &origin in &spec.exclude_origins {
            filter = filter.excluding_origin(origin);
        }
        Ok(filter)
    }
}

/// A new, empty filter (add at least one topic before subscribing).
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn herald_filter_new(out: *mut *mut herald_filter) -> herald_result {
    ffi_entry!({
        let out = out_arg(out, "filter")?;
        let f = herald_filter {
            tag: herald_filter::TAG,
            spec: Mutex::new(FilterSpec::default()),
        };
        out.write(into_raw(f));
        Ok(())
    })
}

/// Frees a filter. `NULL` is a no-op.
///
/// # Safety
/// `filter` must be NULL or a live filter handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn herald_filter_free(filter: *mut herald_filter) {
    let _ = ffi_entry!({
        drop(reclaim(filter)?);
        Ok(())
    });
}

/// Adds a topic name or pattern (checked now: `HERALD_E_INVALID_TOPIC`).
///
/// # Safety
/// `filter` NULL or live; `pattern` points to `pattern_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn herald_filter_add_topic(
    filter: *const herald_filter,
    pattern: *const c_char,
    pattern_len: usize,
) -> herald_result {
    ffi_entry!({
        let f = handle(filter)?;
        let pattern = str_arg(pattern, pattern_len, "pattern")?;
        TopicPattern::parse(pattern)?;
        f.spec().topics.push(pattern.to_owned());
        Ok(())
    })
}

/// Restricts the filter to events of this type (call again to allow several).
///
/// # Safety
/// `filter` NULL or live; `event_type` points to `event_type_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn herald_filter_add_type(
    filter: *const herald_filter,
    event_type: *const c_char,
    event_type_len: usize,
) -> herald_result {
    ffi_entry!({
        let f = handle(filter)?;
        let t = str_arg(event_type, event_type_len, "event_type")?;
        let ok = !t.is_empty()
            && t.len() <= herald_core::broker::MAX_TYPE_LEN
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !ok {
            return Err(fail(
                HERALD_E_INVALID_EVENT_TYPE,
                format_args!("invalid event type {t:?}"),
            ));
        }
        f.spec().types.push(t.to_owned());
        Ok(())
    })
}

/// Leaves out events published with this origin ("not my own events").
/// Called again, it leaves out that origin too (at most
/// `HERALD_MAX_EXCLUDED_ORIGINS` origins: `HERALD_E_INVALID_ARGUMENT` beyond).
///
/// # Safety
/// `filter` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn herald_filter_exclude_origin(
    filter: *const herald_filter,
    origin: u64,
) -> herald_result {
    ffi_entry!({
        let f = handle(filter)?;
        let mut spec = f.spec();
        if !spec.exclude_origins.contains(&origin) {
            if spec.exclude_origins.len() >= HERALD_MAX_EXCLUDED_ORIGINS {
                return Err(fail(
                    HERALD_E_INVALID_ARGUMENT,
                    format_args!("a filter excludes at most {HERALD_MAX_EXCLUDED_ORIGINS} origins"),
                ));
            }
            spec.exclude_origins.push(origin);
        }
        Ok(())
    })
}
