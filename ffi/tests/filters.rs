//! Filters built through the C ABI: excluded origins accumulate like types.

use std::ptr::null_mut;

use herald::herald_result::*;
use herald::*;

mod common;

#[test]
fn excluded_origins_accumulate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let b = common::open(&common::config(d));
    // SAFETY: valid pointers throughout; every handle is freed at the end.
    unsafe {
        let mut f = null_mut();
        assert_eq!(herald_filter_new(&mut f), HERALD_OK);
        assert_eq!(
            herald_filter_add_topic(f, "t".as_ptr().cast(), 1),
            HERALD_OK
        );
        assert_eq!(herald_filter_exclude_origin(f, 1), HERALD_OK);
        assert_eq!(herald_filter_exclude_origin(f, 2), HERALD_OK);
        assert_eq!(
            herald_filter_exclude_origin(f, 2),
            HERALD_OK,
            "again: no-op"
        );
        let mut s = null_mut();
        assert_eq!(
            herald_subscriber_open(b, f, HERALD_START_SEQ, 1, &mut s),
            HERALD_OK
        );
        let mut p = null_mut();
        assert_eq!(
            herald_publisher_new(b, "t".as_ptr().cast(), 1, &mut p),
            HERALD_OK
        );
        for origin in [1, 2, 3] {
            let options = herald_publish_options {
                origin,
                correlation: std::ptr::null(),
                correlation_len: 0,
            };
            let r = herald_publisher_publish(
                p,
                "e".as_ptr().cast(),
                1,
                [origin as u8].as_ptr(),
                1,
                &options,
                null_mut(),
            );
            assert_eq!(r, HERALD_OK);
        }
        let mut buf = [0u8; 256];
        let mut len = 0;
        let mut delivery = std::mem::zeroed::<herald_delivery>();
        assert_eq!(
            herald_subscriber_next(
                s,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
                &mut delivery,
                1000
            ),
            HERALD_OK
        );
        assert_eq!(
            delivery.origin, 3,
            "the events of origins 1 and 2 are both left out"
        );
        assert_eq!(
            herald_subscriber_next(s, buf.as_mut_ptr(), buf.len(), &mut len, &mut delivery, 0),
            HERALD_E_TIMEOUT
        );
        // A bounded list.
        for origin in 3..=HERALD_MAX_EXCLUDED_ORIGINS as u64 {
            assert_eq!(herald_filter_exclude_origin(f, origin), HERALD_OK);
        }
        assert_eq!(
            herald_filter_exclude_origin(f, 1000),
            HERALD_E_INVALID_ARGUMENT
        );
        herald_filter_free(f);
        herald_subscriber_free(s);
        herald_publisher_free(p);
        herald_broker_close(b);
    }
}
