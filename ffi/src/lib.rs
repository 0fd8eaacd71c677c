//! Herald's C ABI.
//!
//! Only the version query exists so far; the broker, publisher and subscriber
//! handles arrive with the C ABI issue, together with the cbindgen-generated
//! `include/herald.h`.

use std::ffi::c_char;

/// The library version as a NUL-terminated string with static lifetime,
/// e.g. `"0.1.0"`. Never NULL; the caller must not free it.
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
