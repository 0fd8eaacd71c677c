//! Configurations that cannot work are refused at open with
//! `HERALD_E_INVALID_CONFIG` and a message naming the setting, and no
//! claim can ask the allocator for more than `max_payload`.

use std::ffi::CStr;
use std::ptr::null_mut;

use herald::herald_result::*;
use herald::*;

mod common;
use common::config;

/// Opens with `cfg`; returns the code, the message, and closes any broker.
fn open(cfg: &herald_config) -> (herald_result, String) {
    let mut b = null_mut();
    // SAFETY: a valid config and out pointer.
    let r = unsafe { herald_broker_open(cfg, &mut b) };
    // SAFETY: herald_last_error never returns NULL.
    let msg = unsafe { CStr::from_ptr(herald_last_error()) }
        .to_string_lossy()
        .into_owned();
    if r == HERALD_OK {
        // SAFETY: a live broker from open.
        unsafe { herald_broker_close(b) };
    }
    (r, msg)
}

#[test]
fn impossible_configurations_are_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    type Edit = Box<dyn Fn(&mut herald_config)>;
    let cases: Vec<(&str, Edit)> = vec![
        // Near SIZE_MAX, the record-size sum used to wrap: the broker opened
        // and live subscribers silently skipped large events.
        ("max_payload", Box::new(|c| c.max_payload = usize::MAX - 8)),
        ("max_payload", Box::new(|c| c.max_payload = 0)),
        ("segment_size", Box::new(|c| c.segment_size = (1 << 16) + 4)),
        ("segment_size", Box::new(|c| c.segment_size = 0)),
        // A segment that cannot hold the largest event.
        (
            "segment_size",
            Box::new(|c| {
                c.segment_size = 8192;
                c.max_payload = 8192;
                c.ring_capacity = 1 << 20;
            }),
        ),
        (
            "sync interval",
            Box::new(|c| {
                c.durability = HERALD_DURABILITY_INTERVAL;
                c.sync_interval_ms = 0;
            }),
        ),
        ("ring_capacity", Box::new(|c| c.ring_capacity = 1024)),
    ];
    for (setting, break_it) in cases {
        let mut cfg = config(&d);
        break_it(&mut cfg);
        let (r, msg) = open(&cfg);
        assert_eq!(r, HERALD_E_INVALID_CONFIG, "{setting}: {msg}");
        assert!(msg.contains(setting), "{setting}: {msg}");
        assert!(
            !msg.contains("Durability::"),
            "no Rust names in C messages: {msg}"
        );
    }
    assert_eq!(open(&config(&d)).0, HERALD_OK, "the valid one opens");
}

#[test]
fn a_huge_claim_is_refused_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    let cfg = config(&d);
    let mut b = null_mut();
    let mut p = null_mut();
    let mut buf = null_mut();
    // SAFETY: valid pointers throughout; the handles are closed at the end.
    unsafe {
        assert_eq!(herald_broker_open(&cfg, &mut b), HERALD_OK);
        assert_eq!(
            herald_publisher_new(b, "t".as_ptr().cast(), 1, &mut p),
            HERALD_OK
        );
        assert_eq!(
            herald_publisher_claim(p, 1 << 40, &mut buf),
            HERALD_E_PAYLOAD_TOO_LARGE
        );
        // The publisher is still usable.
        assert_eq!(herald_publisher_claim(p, 16, &mut buf), HERALD_OK);
        assert_eq!(herald_publisher_abort(p), HERALD_OK);
        herald_publisher_free(p);
        herald_broker_close(b);
    }
}
