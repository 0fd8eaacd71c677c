//! Herald's C ABI: `libherald.so` / `libherald.a`, described by the
//! cbindgen-generated `include/herald.h` (committed, checked fresh by
//! `tests/header_fresh.rs`).
//!
//! Conventions (rustls-ffi, hyper's C API, Aeron's `aeronc.h`):
//! `herald_<type>_<verb>` names; opaque handles; `_free(NULL)` is a no-op;
//! outputs written only on success; every buffer followed by its `size_t`
//! length; stable numbered [`herald_result`] codes with
//! [`herald_strerror`] and the thread-local [`herald_last_error`]; every
//! entry point wrapped in [`ffi_entry!`](error::ffi_entry), so no panic
//! crosses the boundary; NULL or invalid arguments return a code.
//!
//! Handles carry a tag checked on entry, which catches a handle of the wrong
//! type (and, on a best-effort basis, a freed one). Every pointer argument
//! is checked and converted by `args`, which also states, once, why that is
//! sound given each entry point's documented precondition.
#![allow(non_camel_case_types)]

use std::ffi::c_char;

mod args;
mod broker;
mod error;
mod filter;
mod publisher;
mod subscriber;

pub use broker::*;
pub use error::{herald_last_error, herald_result, herald_strerror};
pub use filter::*;
pub use publisher::*;
pub use subscriber::*;

/// The library version as a NUL-terminated string with static lifetime,
/// e.g. `"0.1.0"` (equal to `HERALD_VERSION_STRING` of a matching header).
/// Never NULL; the caller must not free it. Thread-safe.
#[no_mangle]
pub extern "C" fn herald_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn version_matches_cargo_manifest() {
        // SAFETY: herald_version returns a pointer to a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(herald_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
