//! The checks of the C caller's arguments: handles, input buffers and
//! strings, output pointers and buffers.

use std::ffi::c_char;

use crate::error::{fail, Fail};
use crate::herald_result::*;
use crate::{broker, filter, publisher, subscriber};

/// A handle type: its tag, checked on every entry. Every handle struct is
/// `repr(C)` with its `tag: u64` first, so the first 8 bytes of any handle,
/// whatever its type, are its initialised tag: reading them to tell the
/// types apart never reads padding or another type's field. (The
/// `repr(C)` is written `cfg_attr(all(), …)` so that cbindgen, which reads
/// the attribute literally, keeps the types opaque in the header.)
pub(crate) trait Handle {
    const TAG: u64;
}

// Checked at compile time: the tag is where `handle` reads it.
const _: () = {
    assert!(std::mem::offset_of!(broker::herald_broker, tag) == 0);
    assert!(std::mem::offset_of!(filter::herald_filter, tag) == 0);
    assert!(std::mem::offset_of!(publisher::herald_publisher, tag) == 0);
    assert!(std::mem::offset_of!(subscriber::herald_subscriber, tag) == 0);
};

/// Tag of a freed handle.
pub(crate) const DEAD: u64 = 0xdead_dead_dead_dead;

/// Borrows a handle, checking NULL, alignment and its tag.
///
/// # Safety
/// `p` must be NULL or point to readable memory of at least `size_of::<T>()`
/// bytes; if its tag is `T::TAG` it must be a live handle made by this
/// library.
#[inline(always)]
pub(crate) unsafe fn handle<'a, T: Handle>(p: *const T) -> Result<&'a T, Fail> {
    if p.is_null() {
        return Err(fail(HERALD_E_NULL, "the handle argument is NULL"));
    }
    if !p.is_aligned() {
        return Err(fail(
            HERALD_E_INVALID_HANDLE,
            "the handle argument is misaligned",
        ));
    }
    // SAFETY: non-NULL and aligned; the caller guarantees it points to a
    // handle this library made, of some type: every handle starts with its
    // initialised u64 tag (see `Handle`).
    let tag = unsafe { p.cast::<u64>().read() };
    if tag != T::TAG {
        return Err(fail(
            HERALD_E_INVALID_HANDLE,
            "the handle is of another type or was freed",
        ));
    }
    // SAFETY: the tag says it is a live `T`.
    Ok(unsafe { &*p })
}

/// Moves a new handle to the heap and returns its pointer.
pub(crate) fn into_raw<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Borrows a `(pointer, length)` byte buffer; NULL is allowed for length 0.
///
/// # Safety
/// If `len > 0`, `ptr` must point to `len` readable bytes that stay valid
/// and unmodified for `'a`.
#[inline(always)]
pub(crate) unsafe fn bytes_arg<'a>(
    ptr: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(fail(
            HERALD_E_NULL,
            format_args!("{what} is NULL with length {len}"),
        ));
    }
    if len > isize::MAX as usize {
        return Err(fail(
            HERALD_E_INVALID_ARGUMENT,
            format_args!("{what}: length {len} is too large"),
        ));
    }
    // SAFETY: non-NULL, len <= isize::MAX, and the caller guarantees `len`
    // readable bytes for 'a (u8 has no alignment requirement).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows a `(pointer, length)` UTF-8 string (no NUL terminator needed).
///
/// # Safety
/// As [`bytes_arg`].
#[inline(always)]
pub(crate) unsafe fn str_arg<'a>(
    ptr: *const c_char,
    len: usize,
    what: &str,
) -> Result<&'a str, Fail> {
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { bytes_arg(ptr.cast(), len, what) }?;
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8. (Names, types and ids are ASCII: this
        // skips the general decoder on the publish path.)
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(|e| {
        fail(
            HERALD_E_INVALID_UTF8,
            format_args!("{what} is not UTF-8: {e}"),
        )
    })
}

/// Checks an output pointer for NULL and alignment.
#[inline(always)]
pub(crate) fn out_arg<T>(p: *mut T, what: &str) -> Result<*mut T, Fail> {
    if p.is_null() {
        return Err(fail(
            HERALD_E_NULL,
            format_args!("the output {what} is NULL"),
        ));
    }
    if !p.is_aligned() {
        return Err(fail(
            HERALD_E_INVALID_ARGUMENT,
            format_args!("the output {what} is misaligned"),
        ));
    }
    Ok(p)
}

/// An optional output pointer: `None` for NULL, else checked as [`out_arg`].
#[inline(always)]
pub(crate) fn opt_out_arg<T>(p: *mut T, what: &str) -> Result<Option<*mut T>, Fail> {
    if p.is_null() {
        return Ok(None);
    }
    out_arg(p, what).map(Some)
}

/// Writes `value` through an output pointer checked by [`out_arg`].
///
/// # Safety
/// `p` must come from [`out_arg`] and point to writable memory for a `T`.
#[inline(always)]
pub(crate) unsafe fn write_out<T>(p: *mut T, value: T) {
    // SAFETY: non-NULL and aligned (out_arg), writable (caller). `write`
    // does not drop the old (possibly uninitialised) value.
    unsafe { p.write(value) }
}

/// Writes the `needed` size to `out_len` and fails with
/// `HERALD_E_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `out_len` checked by `out_arg`.
#[cold]
pub(crate) unsafe fn too_small(out_len: *mut usize, needed: usize, cap: usize, what: &str) -> Fail {
    // SAFETY: checked by out_arg (the caller's contract).
    unsafe { write_out(out_len, needed) };
    fail(
        HERALD_E_BUFFER_TOO_SMALL,
        format_args!("{what} needs {needed} bytes, the buffer has {cap}"),
    )
}

/// Checks a caller's output buffer: NULL only with `cap` 0.
pub(crate) fn buf_arg(buf: *mut u8, cap: usize) -> Result<(), Fail> {
    if buf.is_null() && cap > 0 {
        return Err(fail(HERALD_E_NULL, "buf is NULL with a non-zero cap"));
    }
    if cap > isize::MAX as usize {
        return Err(fail(HERALD_E_INVALID_ARGUMENT, "cap is too large"));
    }
    Ok(())
}
