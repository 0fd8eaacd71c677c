//! Helpers shared by the C ABI tests.

use herald::herald_result::*;
use herald::*;

/// A small valid configuration for the data directory `dir` (which must
/// outlive the configuration): a 64 KiB ring and segments, 1 KiB payloads,
/// no sync, no prefault.
pub(crate) fn config(dir: &str) -> herald_config {
    let mut cfg = std::mem::MaybeUninit::<herald_config>::uninit();
    // SAFETY: a valid out pointer.
    assert_eq!(unsafe { herald_config_init(cfg.as_mut_ptr()) }, HERALD_OK);
    // SAFETY: initialised by herald_config_init.
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.data_dir = dir.as_ptr().cast();
    cfg.data_dir_len = dir.len();
    cfg.ring_capacity = 1 << 16;
    cfg.max_payload = 1024;
    cfg.segment_size = 1 << 16;
    cfg.durability = HERALD_DURABILITY_NEVER;
    cfg.prefault = false;
    cfg
}

/// Opens a broker with `cfg`, which must be valid.
#[allow(dead_code)] // not every test file opens through it
pub(crate) fn open(cfg: &herald_config) -> *mut herald_broker {
    let mut b = std::ptr::null_mut();
    // SAFETY: a valid config and out pointer.
    assert_eq!(unsafe { herald_broker_open(cfg, &mut b) }, HERALD_OK);
    b
}
