//! No input across the C ABI crashes the process (invariant 8 of `docs/DESIGN.md`):
//! NULL and wrong-type handles, NULL buffers with lengths, invalid UTF-8,
//! random bytes for every string argument, out-of-range enum values, and
//! concurrent calls on one subscriber all come back as documented codes.

use std::ffi::c_char;
use std::ptr::{null, null_mut};

use herald::herald_result::*;
use herald::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = (self.next() % 40) as usize;
        let alphabet = b"ab.*>$_- \xff\x00\xc3\xa9Z9";
        (0..len)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
            .collect()
    }
}

fn open(dir: &std::path::Path) -> *mut herald_broker {
    let mut cfg = std::mem::MaybeUninit::<herald_config>::uninit();
    // SAFETY: a valid out pointer.
    assert_eq!(unsafe { herald_config_init(cfg.as_mut_ptr()) }, HERALD_OK);
    // SAFETY: initialised by herald_config_init.
    let mut cfg = unsafe { cfg.assume_init() };
    let d = dir.to_str().unwrap();
    cfg.data_dir = d.as_ptr().cast();
    cfg.data_dir_len = d.len();
    cfg.ring_capacity = 1 << 16;
    cfg.max_payload = 1024;
    cfg.segment_size = 1 << 16;
    cfg.durability = HERALD_DURABILITY_NEVER;
    cfg.prefault = false;
    let mut b = null_mut();
    // SAFETY: valid config and out pointer.
    assert_eq!(unsafe { herald_broker_open(&cfg, &mut b) }, HERALD_OK);
    b
}

/// A documented outcome: success or an error other than a caught panic (a
/// panic is a library bug, even if `ffi_entry!` stops it at the boundary).
/// Any value of the `herald_result` enum is a known code, so checking the
/// range alone could not fail.
fn assert_documented(r: herald_result) {
    // SAFETY: herald_last_error never returns NULL.
    let msg = unsafe { std::ffi::CStr::from_ptr(herald_last_error()) };
    assert!(r != HERALD_E_PANIC, "caught a panic: {msg:?}");
}

#[test]
fn null_and_wrong_type_handles_return_codes() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let mut f = null_mut();
    // SAFETY: every pointer is NULL, a live handle, or a valid local;
    // wrong-type handles point to live handles of another type.
    unsafe {
        assert_eq!(herald_filter_new(&mut f), HERALD_OK);
        let mut seq = 0u64;
        assert_eq!(herald_broker_next_seq(null(), &mut seq), HERALD_E_NULL);
        assert_eq!(herald_broker_next_seq(b, null_mut()), HERALD_E_NULL);
        assert_eq!(
            herald_broker_next_seq(f.cast(), &mut seq),
            HERALD_E_INVALID_HANDLE
        );
        assert_eq!(
            herald_filter_add_topic(b.cast(), c"a".as_ptr(), 1),
            HERALD_E_INVALID_HANDLE
        );
        let mut p = null_mut();
        assert_eq!(herald_publisher_new(b, null(), 5, &mut p), HERALD_E_NULL);
        assert_eq!(
            herald_publisher_new(b, c"a".as_ptr(), 1, null_mut()),
            HERALD_E_NULL
        );
        assert!(p.is_null());
        assert_eq!(
            herald_publisher_publish(null(), null(), 0, null(), 0, null(), null_mut()),
            HERALD_E_NULL
        );
        assert_eq!(herald_publisher_claim(null(), 1, null_mut()), HERALD_E_NULL);
        assert_eq!(
            herald_publisher_commit(null(), null(), 0, 0, null(), null_mut()),
            HERALD_E_NULL
        );
        assert_eq!(herald_publisher_abort(null()), HERALD_E_NULL);
        let mut s = null_mut();
        assert_eq!(
            herald_subscriber_open(b, null(), 0, 0, &mut s),
            HERALD_E_NULL
        );
        assert_eq!(
            herald_subscriber_open(null(), f, 0, 0, &mut s),
            HERALD_E_NULL
        );
        assert_eq!(
            herald_subscriber_poll(null(), None, null_mut(), 1),
            -(HERALD_E_NULL as i64)
        );
        let (mut len, mut count, mut ready, mut fd) = (0usize, 0usize, false, 0i32);
        assert_eq!(
            herald_subscriber_read(null(), null_mut(), 0, 1, &mut len, &mut count, 0),
            HERALD_E_NULL
        );
        assert_eq!(herald_subscriber_wait(null(), 0, &mut ready), HERALD_E_NULL);
        assert_eq!(herald_subscriber_arm(null(), &mut ready), HERALD_E_NULL);
        assert_eq!(herald_subscriber_fd(null(), &mut fd), HERALD_E_NULL);
        assert_eq!(herald_subscriber_ack(null(), 1), HERALD_E_NULL);
        assert_eq!(
            herald_subscriber_lag(null(), null_mut(), null_mut()),
            HERALD_E_NULL
        );
        assert_eq!(herald_broker_metrics(null(), null_mut()), HERALD_E_NULL);
        assert_eq!(
            herald_broker_presence_list(b, null(), 0, null_mut(), 0, null_mut(), null_mut()),
            HERALD_E_NULL
        );
        assert_eq!(herald_config_init(null_mut()), HERALD_E_NULL);
        assert_eq!(herald_broker_open(null(), null_mut()), HERALD_E_NULL);
        herald_filter_free(f);
        assert_eq!(herald_broker_close(b), HERALD_OK);
    }
}

#[test]
fn random_strings_never_crash_and_return_known_codes() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut p = null_mut();
    let mut f = null_mut();
    // SAFETY: live handles and valid locals throughout; every string is a
    // live Vec with its true length.
    unsafe {
        assert_eq!(
            herald_publisher_new(b, c"fuzz".as_ptr(), 4, &mut p),
            HERALD_OK
        );
        assert_eq!(herald_filter_new(&mut f), HERALD_OK);
        assert_eq!(herald_filter_add_topic(f, c"fuzz".as_ptr(), 4), HERALD_OK);
        for _ in 0..5_000 {
            let (a, c, d) = (rng.bytes(), rng.bytes(), rng.bytes());
            let s = |v: &Vec<u8>| v.as_ptr().cast::<c_char>();
            let mut q = null_mut();
            let r = herald_publisher_new(b, s(&a), a.len(), &mut q);
            assert_documented(r);
            herald_publisher_free(q);
            let opts = herald_publish_options {
                origin: rng.next(),
                correlation: s(&c),
                correlation_len: c.len(),
            };
            let r =
                herald_publisher_publish(p, s(&d), d.len(), a.as_ptr(), a.len(), &opts, null_mut());
            assert_documented(r);
            let r = herald_filter_add_type(f, s(&a), a.len());
            assert_documented(r);
            let mut g = null_mut();
            let _ = herald_filter_new(&mut g);
            let r = herald_filter_add_topic(g, s(&c), c.len());
            assert_documented(r);
            let mut sub = null_mut();
            let kind = (rng.next() % 7) as u32;
            let r = herald_subscriber_open(b, g, kind, rng.next() % 100, &mut sub);
            assert_documented(r);
            herald_subscriber_free(sub);
            // A failed open leaves `sub` as it was: reset it, or the free
            // below would be a second free of the handle freed above.
            sub = null_mut();
            let r = herald_subscriber_open_consumer(b, s(&d), d.len(), g, kind, 0, &mut sub);
            assert_documented(r);
            herald_subscriber_free(sub);
            herald_filter_free(g);
            let r = herald_broker_presence_join(
                b,
                s(&a),
                a.len(),
                s(&c),
                c.len(),
                s(&d),
                d.len(),
                s(&a),
                a.len(),
                s(&c),
                c.len(),
            );
            assert_documented(r);
            let mut len = 0;
            let r =
                herald_broker_presence_list(b, s(&a), a.len(), null_mut(), 0, &mut len, null_mut());
            assert_documented(r);
            let mut cp = 0;
            let r = herald_broker_consumer_checkpoint(b, s(&d), d.len(), &mut cp);
            assert_documented(r);
        }
        herald_filter_free(f);
        herald_publisher_free(p);
        assert_eq!(herald_broker_close(b), HERALD_OK);
    }
}

#[test]
fn concurrent_calls_on_one_subscriber_are_refused_not_raced() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let (mut f, mut s) = (null_mut(), null_mut());
    // SAFETY: live handles and valid locals.
    unsafe {
        assert_eq!(herald_filter_new(&mut f), HERALD_OK);
        assert_eq!(herald_filter_add_topic(f, c"c".as_ptr(), 1), HERALD_OK);
        assert_eq!(
            herald_subscriber_open(b, f, HERALD_START_NOW, 0, &mut s),
            HERALD_OK
        );
    }
    let addr = s as usize;
    // One thread blocks in `wait`; the other's calls meet HERALD_E_BUSY.
    let waiter = std::thread::spawn(move || {
        let mut ready = false;
        // SAFETY: the subscriber outlives this thread (joined below).
        unsafe { herald_subscriber_wait(addr as *const herald_subscriber, 500, &mut ready) }
    });
    let mut saw_busy = false;
    for _ in 0..200 {
        let (mut len, mut d) = (0usize, std::mem::MaybeUninit::<herald_delivery>::uninit());
        // SAFETY: live handle, valid locals.
        let r = unsafe { herald_subscriber_next(s, null_mut(), 0, &mut len, d.as_mut_ptr(), 0) };
        assert!(r == HERALD_E_BUSY || r == HERALD_E_TIMEOUT, "{r:?}");
        if r == HERALD_E_BUSY {
            saw_busy = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(saw_busy);
    assert_eq!(waiter.join().unwrap(), HERALD_OK);
    // SAFETY: no call in flight any more; each handle freed once.
    unsafe {
        herald_subscriber_free(s);
        herald_filter_free(f);
        assert_eq!(herald_broker_close(b), HERALD_OK);
    }
}
