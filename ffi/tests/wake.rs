//! `herald_subscriber_wake` ends a call blocked forever, from another
//! thread, and a wake-up that comes first is not lost.

use std::ptr::null_mut;
use std::sync::mpsc;
use std::time::Duration;

use herald::herald_result::*;
use herald::*;

mod common;

struct Ptr<T>(*mut T);
// SAFETY: the test hands the subscriber to one reader thread and only
// calls herald_subscriber_wake (documented as callable concurrently) here.
unsafe impl<T> Send for Ptr<T> {}

#[test]
fn a_blocked_next_is_ended_by_wake_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    let b = common::open(&common::config(&d));
    // SAFETY: valid pointers throughout; handles are freed at the end, the
    // subscriber only after its reader thread returned.
    unsafe {
        let mut f = null_mut();
        assert_eq!(herald_filter_new(&mut f), HERALD_OK);
        assert_eq!(
            herald_filter_add_topic(f, "t".as_ptr().cast(), 1),
            HERALD_OK
        );
        let mut s = null_mut();
        assert_eq!(
            herald_subscriber_open(b, f, HERALD_START_NOW, 0, &mut s),
            HERALD_OK
        );
        herald_filter_free(f);

        let (tx, rx) = mpsc::channel();
        let reader = {
            let s = Ptr(s);
            std::thread::spawn(move || {
                let s = s;
                let mut buf = [0u8; 256];
                let mut len = 0;
                let mut d = std::mem::zeroed::<herald_delivery>();
                // Blocks forever unless woken.
                let r =
                    herald_subscriber_next(s.0, buf.as_mut_ptr(), buf.len(), &mut len, &mut d, -1);
                tx.send(r).unwrap();
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "next(-1) blocks while nothing is published"
        );
        assert_eq!(herald_subscriber_wake(s), HERALD_OK);
        let r = rx.recv_timeout(Duration::from_secs(10)).expect("woken");
        assert_eq!(r, HERALD_E_CANCELLED);
        reader.join().unwrap();

        // A blocked `wait` too: woken, it says so (not "ready").
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let s = Ptr(s);
            std::thread::spawn(move || {
                let s = s;
                let mut ready = false;
                tx.send(herald_subscriber_wait(s.0, -1, &mut ready))
                    .unwrap();
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "wait(-1) blocks"
        );
        assert_eq!(herald_subscriber_wake(s), HERALD_OK);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).expect("woken"),
            HERALD_E_CANCELLED
        );
        waiter.join().unwrap();

        // A wake before the call is kept for it; the event published
        // meanwhile is still delivered afterwards.
        let mut p = null_mut();
        assert_eq!(
            herald_publisher_new(b, "t".as_ptr().cast(), 1, &mut p),
            HERALD_OK
        );
        assert_eq!(herald_subscriber_wake(s), HERALD_OK);
        let mut ready = false;
        assert_eq!(
            herald_subscriber_wait(s, -1, &mut ready),
            HERALD_E_CANCELLED
        );
        let payload = b"x";
        let r = herald_publisher_publish(
            p,
            "e".as_ptr().cast(),
            1,
            payload.as_ptr(),
            1,
            std::ptr::null(),
            null_mut(),
        );
        assert_eq!(r, HERALD_OK);
        let mut buf = [0u8; 256];
        let mut len = 0;
        let mut d = std::mem::zeroed::<herald_delivery>();
        assert_eq!(
            herald_subscriber_next(s, buf.as_mut_ptr(), buf.len(), &mut len, &mut d, 1000),
            HERALD_OK
        );
        assert_eq!(d.seq, 1);
        herald_publisher_free(p);
        herald_subscriber_free(s);
        herald_broker_close(b);
    }
}
