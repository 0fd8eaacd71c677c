//! The C caller's arguments, checked and converted in one place: handles,
//! input buffers and strings, input structs and arrays, output pointers and
//! output buffers.
//!
//! # The safety argument, once
//!
//! Every entry point documents its precondition (its `# Safety` section,
//! copied into `herald.h`), and for each kind of argument it is the same:
//!
//! - a **handle** is NULL or a handle this library returned and that was not
//!   freed (of any handle type: the type is checked here); `_free` and
//!   `_close` also take it from the caller (no use afterwards, no concurrent
//!   call);
//! - an **input** `(ptr, len)` (bytes, a string) is `len` readable bytes that
//!   stay valid and unchanged during the call (`ptr` may be NULL if `len` is
//!   0); an input struct or array likewise, for its size;
//! - an **output pointer** is NULL or writable for one value of its type (or
//!   for the documented number of them) during the call;
//! - an **output buffer** `(buf, cap)` is `cap` writable bytes (NULL if `cap`
//!   is 0) that overlap nothing the call reads.
//!
//! What can be checked is checked here, each failure with its code and
//! message: NULL, alignment, a handle's tag, lengths beyond `isize::MAX`,
//! UTF-8. What cannot (that a non-NULL pointer points to what it should) is
//! the caller's promise, and rests on the precondition alone.
//!
//! So these functions are safe to call **on arguments as the C caller passed
//! them**: an entry point's pointer parameters, or the pointer fields of a
//! struct it passed (the same precondition covers those). They are not
//! marked `unsafe` so that entry points do not repeat this argument at every
//! call; two rules, kept by every caller in this crate, make that sound:
//!
//! 1. only such arguments are passed, never a pointer made or computed in
//!    Rust (offsets into an output go through [`OutBuf`] and [`OutArray`],
//!    which check their bounds);
//! 2. what they return borrows the caller's memory for the call only: the
//!    lifetimes `'a` are unbounded, and nothing derived from them outlives
//!    the entry point.
//!
//! An entry point still writes `// SAFETY:` where it does something else
//! unsafe (a callback, a system call, a cell it guards itself).

use std::ffi::c_char;
use std::mem::size_of;
use std::ptr::NonNull;

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
const DEAD: u64 = 0xdead_dead_dead_dead;

/// Moves a new handle to the heap and returns its pointer, for the caller
/// to give back to [`reclaim`].
pub(crate) fn into_raw<T: Handle>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Borrows a handle argument, checking NULL, alignment and its tag.
#[inline(always)]
pub(crate) fn handle<'a, T: Handle>(p: *const T) -> Result<&'a T, Fail> {
    if p.is_null() {
        return Err(fail(HERALD_E_NULL, "the handle argument is NULL"));
    }
    if !p.is_aligned() {
        return Err(fail(
            HERALD_E_INVALID_HANDLE,
            "the handle argument is misaligned",
        ));
    }
    // SAFETY: non-NULL and aligned, and (precondition) a live handle of some
    // type: every handle starts with its initialised u64 tag (see `Handle`).
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

/// Takes back a handle argument of `_free` / `_close`: `None` for NULL,
/// else checked as [`handle`] and returned as the box [`into_raw`] made,
/// its tag already `DEAD` (a best-effort mark against use after free).
pub(crate) fn reclaim<T: Handle>(p: *mut T) -> Result<Option<Box<T>>, Fail> {
    if p.is_null() {
        return Ok(None);
    }
    handle(p)?;
    // SAFETY: a live `T` (its tag) made by `into_raw`, which the caller of
    // `_free` / `_close` gives up: no other call uses it (precondition).
    let mut b = unsafe { Box::from_raw(p) };
    // SAFETY: `Handle`: the tag is the first field, a u64.
    unsafe { std::ptr::from_mut(&mut *b).cast::<u64>().write(DEAD) };
    Ok(Some(b))
}

/// The length checks of a `(pointer, length)` argument that is not empty.
#[inline(always)]
fn check_len(is_null: bool, len: usize, what: &str) -> Result<(), Fail> {
    if is_null {
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
    Ok(())
}

/// Borrows a `(pointer, length)` byte buffer; NULL is allowed for length 0.
#[inline(always)]
pub(crate) fn bytes_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    check_len(ptr.is_null(), len, what)?;
    // SAFETY: non-NULL, len <= isize::MAX, and (precondition) `len` readable
    // bytes, unchanged during the call (u8 has no alignment requirement).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows a `(pointer, length)` UTF-8 string (no NUL terminator needed).
#[inline(always)]
pub(crate) fn str_arg<'a>(ptr: *const c_char, len: usize, what: &str) -> Result<&'a str, Fail> {
    let bytes = bytes_arg(ptr.cast(), len, what)?;
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

/// Reads an input struct by value: `None` for NULL. The read is unaligned:
/// a C caller may pack the struct.
#[inline(always)]
pub(crate) fn struct_arg<T: Copy>(p: *const T) -> Option<T> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL and (precondition) a readable, initialised `T`.
    Some(unsafe { p.read_unaligned() })
}

/// Borrows an input array of `count` > 0 entries, checking NULL, alignment
/// and that its size fits `isize`.
pub(crate) fn slice_arg<'a, T>(
    ptr: *const T,
    count: usize,
    what: &str,
    count_name: &str,
) -> Result<&'a [T], Fail> {
    if ptr.is_null() {
        return Err(fail(HERALD_E_NULL, format_args!("{what} is NULL")));
    }
    if !ptr.is_aligned() {
        return Err(fail(
            HERALD_E_INVALID_ARGUMENT,
            format_args!("{what} is misaligned"),
        ));
    }
    if count > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(fail(
            HERALD_E_INVALID_ARGUMENT,
            format_args!("{count_name} is too large"),
        ));
    }
    // SAFETY: non-NULL, aligned, size within isize, and (precondition)
    // `count` initialised entries, unchanged during the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

/// A checked output pointer: non-NULL, aligned and (precondition) writable.
/// It is written with raw writes, never through a reference, so two outputs
/// at the same address are the caller's mistake, not undefined behaviour.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<T> {}

impl<T> Out<T> {
    /// Writes `value` (not dropping the old, possibly uninitialised, one).
    #[inline(always)]
    pub(crate) fn write(self, value: T) {
        // SAFETY: non-NULL and aligned (`out_arg`), writable (precondition).
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// Checks an output pointer for NULL and alignment.
#[inline(always)]
pub(crate) fn out_arg<T>(p: *mut T, what: &str) -> Result<Out<T>, Fail> {
    let Some(p) = NonNull::new(p) else {
        return Err(fail(
            HERALD_E_NULL,
            format_args!("the output {what} is NULL"),
        ));
    };
    if !p.as_ptr().is_aligned() {
        return Err(fail(
            HERALD_E_INVALID_ARGUMENT,
            format_args!("the output {what} is misaligned"),
        ));
    }
    Ok(Out(p))
}

/// An optional output pointer: `None` for NULL, else checked as [`out_arg`].
#[inline(always)]
pub(crate) fn opt_out_arg<T>(p: *mut T, what: &str) -> Result<Option<Out<T>>, Fail> {
    if p.is_null() {
        return Ok(None);
    }
    out_arg(p, what).map(Some)
}

/// A checked output array of `len` entries (the length the precondition
/// gives it).
pub(crate) struct OutArray<T> {
    ptr: NonNull<T>,
    len: usize,
}

impl<T> OutArray<T> {
    /// Writes entry `i`; panics (a bug, reported as `HERALD_E_PANIC`) if
    /// `i >= len`.
    pub(crate) fn write(&self, i: usize, value: T) {
        assert!(i < self.len, "output entry {i} of {}", self.len);
        // SAFETY: aligned and non-NULL (`opt_out_array_arg`), `i < len`, and
        // (precondition) `len` writable entries.
        unsafe { self.ptr.as_ptr().add(i).write(value) }
    }
}

/// An optional output array of `len` entries: `None` for NULL, else checked
/// for alignment as [`out_arg`].
pub(crate) fn opt_out_array_arg<T>(
    p: *mut T,
    len: usize,
    what: &str,
) -> Result<Option<OutArray<T>>, Fail> {
    Ok(opt_out_arg(p, what)?.map(|Out(ptr)| OutArray { ptr, len }))
}

/// A checked output buffer `(buf, cap)`. Writes are bounds-checked, so the
/// entry points that fill it need no `unsafe`.
#[derive(Clone, Copy)]
pub(crate) struct OutBuf {
    ptr: *mut u8,
    cap: usize,
}

impl OutBuf {
    /// Its size in bytes.
    #[inline(always)]
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Where byte `at` is (`at <= cap`); may be NULL if `cap` is 0.
    #[inline(always)]
    pub(crate) fn ptr_at(&self, at: usize) -> *const u8 {
        assert!(at <= self.cap);
        self.ptr.wrapping_add(at)
    }

    /// Copies `src` to `buf[at..]`; panics (a bug, reported as
    /// `HERALD_E_PANIC`) if it does not fit.
    #[inline(always)]
    pub(crate) fn write(&self, at: usize, src: &[u8]) {
        assert!(at <= self.cap && src.len() <= self.cap - at);
        if !src.is_empty() {
            // SAFETY: in bounds (above), so `buf` is non-NULL (`cap > 0`) and
            // (precondition) writable there; the caller's buffer overlaps
            // nothing the call reads, `src` included.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(at), src.len()) };
        }
    }

    /// Zeroes `buf[at..at + n]`; panics if it is out of bounds.
    #[inline(always)]
    pub(crate) fn zero(&self, at: usize, n: usize) {
        assert!(at <= self.cap && n <= self.cap - at);
        if n > 0 {
            // SAFETY: in bounds and writable, as in `write`.
            unsafe { std::ptr::write_bytes(self.ptr.add(at), 0, n) };
        }
    }
}

/// Checks an output buffer named `buf` with its `cap`: NULL only with
/// `cap` 0.
pub(crate) fn buf_arg(buf: *mut u8, cap: usize) -> Result<OutBuf, Fail> {
    if buf.is_null() && cap > 0 {
        return Err(fail(HERALD_E_NULL, "buf is NULL with a non-zero cap"));
    }
    if cap > isize::MAX as usize {
        return Err(fail(HERALD_E_INVALID_ARGUMENT, "cap is too large"));
    }
    Ok(OutBuf { ptr: buf, cap })
}

/// Checks an output buffer as [`bytes_arg`] checks an input (and words its
/// failures the same way).
pub(crate) fn out_bytes_arg(buf: *mut u8, cap: usize, what: &str) -> Result<OutBuf, Fail> {
    if cap > 0 {
        check_len(buf.is_null(), cap, what)?;
    }
    Ok(OutBuf { ptr: buf, cap })
}

/// Writes the `needed` size to `out_len` and fails with
/// `HERALD_E_BUFFER_TOO_SMALL`.
#[cold]
pub(crate) fn too_small(out_len: Out<usize>, needed: usize, cap: usize, what: &str) -> Fail {
    out_len.write(needed);
    fail(
        HERALD_E_BUFFER_TOO_SMALL,
        format_args!("{what} needs {needed} bytes, the buffer has {cap}"),
    )
}
