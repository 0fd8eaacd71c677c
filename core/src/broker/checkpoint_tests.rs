//! Durable consumer checkpoints (`broker::checkpoint`): the store's API and
//! on-disk robustness (corrupt, truncated, misplaced files), a kill -9 crash
//! test, and the `AckTracker` against a naive model.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{
    validate_name, AckError, AckTracker, CheckpointError, CheckpointStore, FILE_LEN, SLOT_STRIDE,
};
use proptest::prelude::*;

fn ckpt_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.ckpt"))
}

// ---------------------------------------------------------------- names

#[test]
fn names_are_validated() {
    let long_ok = "a".repeat(128);
    for good in [
        "a",
        "Z",
        "0",
        "orders-worker_1.v2",
        ".",
        "..",
        "-",
        long_ok.as_str(),
    ] {
        assert!(validate_name(good).is_ok(), "{good:?} should be valid");
    }
    let long_bad = "a".repeat(129);
    let bads = [
        "",
        long_bad.as_str(),
        "a b",
        "a/b",
        "../etc",
        "é",
        "a\0b",
        "a\n",
        "a:b",
        "*",
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    for bad in bads {
        assert!(
            matches!(validate_name(bad), Err(CheckpointError::InvalidName { .. })),
            "{bad:?} should be invalid"
        );
        let e = store.commit(bad, 1, true).unwrap_err();
        assert!(matches!(e, CheckpointError::InvalidName { .. }), "{e}");
        assert!(!e.to_string().is_empty());
        assert!(matches!(
            store.reset(bad, 1),
            Err(CheckpointError::InvalidName { .. })
        ));
        assert!(matches!(
            store.remove(bad),
            Err(CheckpointError::InvalidName { .. })
        ));
        assert_eq!(store.get(bad), None);
    }
    // Nothing but (maybe) nothing was created.
    assert!(store.is_empty());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    // A huge name is cut in the error, not echoed whole.
    let huge = "x y".repeat(10_000);
    let msg = validate_name(&huge).unwrap_err().to_string();
    assert!(msg.len() < 400, "{msg}");
}

// ---------------------------------------------------------------- store API

#[test]
fn commit_get_remove_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let consumers = dir.path().join("consumers");
    {
        let store = CheckpointStore::open(&consumers).unwrap();
        assert!(store.is_empty());
        assert_eq!(store.get("a"), None);
        store.commit("a", 5, true).unwrap();
        store.commit("b", 0, false).unwrap();
        store.commit("c.x", 9, false).unwrap();
        store.commit("a", 7, false).unwrap();
        store.commit("a", 8, true).unwrap();
        assert_eq!(store.get("a"), Some(8));
        assert_eq!(store.get("b"), Some(0));
        assert_eq!(store.names(), ["a", "b", "c.x"]);
        assert_eq!(store.len(), 3);
        assert_eq!(store.remove("b").unwrap(), Some(0));
        assert_eq!(store.remove("b").unwrap(), None);
        assert_eq!(store.remove("never").unwrap(), None);
        assert_eq!(store.get("b"), None);
        assert!(!ckpt_path(&consumers, "b").exists());
        assert_eq!(
            fs::metadata(ckpt_path(&consumers, "a")).unwrap().len(),
            FILE_LEN
        );
    }
    let store = CheckpointStore::open(&consumers).unwrap();
    assert_eq!(store.names(), ["a", "c.x"]);
    assert_eq!(store.get("a"), Some(8));
    assert_eq!(store.get("c.x"), Some(9));
    // A removed consumer can come back, from scratch.
    store.commit("b", 3, false).unwrap();
    assert_eq!(store.get("b"), Some(3));
}

#[test]
fn checkpoints_never_move_backwards_without_reset() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    store.commit("c", 100, true).unwrap();
    let e = store.commit("c", 99, true).unwrap_err();
    assert!(
        matches!(
            e,
            CheckpointError::Backwards {
                current: 100,
                requested: 99,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("reset"), "{e}");
    assert_eq!(store.get("c"), Some(100));
    // Same value: idempotent, with or without sync.
    store.commit("c", 100, false).unwrap();
    store.commit("c", 100, true).unwrap();
    store.reset("c", 10).unwrap();
    assert_eq!(store.get("c"), Some(10));
    store.commit("c", 11, false).unwrap();
    drop(store);
    let store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.get("c"), Some(11));
    store.reset("c", 2).unwrap();
    store.reset("new", 4).unwrap();
    drop(store);
    let store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.get("c"), Some(2));
    assert_eq!(store.get("new"), Some(4));
}

#[test]
fn many_commits_mixing_sync_reopen_to_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5u64 {
        let store = CheckpointStore::open(dir.path()).unwrap();
        let start = store.get("x").map_or(0, |v| v + 1);
        assert_eq!(start, round * 1000, "round {round}");
        for v in start..start + 1000 {
            store.commit("x", v, v % 3 == 0).unwrap();
            assert_eq!(store.get("x"), Some(v));
        }
    }
}

#[test]
fn leftover_tmp_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.commit("keep", 1, true).unwrap();
    }
    fs::write(dir.path().join("half.ckpt.tmp"), b"partial").unwrap();
    fs::write(dir.path().join("README"), b"not a checkpoint").unwrap();
    fs::create_dir(dir.path().join("sub.ckpt")).unwrap();
    let (store, report) = CheckpointStore::open_repair(dir.path()).unwrap();
    assert_eq!(report.removed_tmp, [dir.path().join("half.ckpt.tmp")]);
    assert!(report.quarantined.is_empty());
    assert_eq!(report.loaded, 1);
    assert_eq!(store.names(), ["keep"]);
    assert!(!dir.path().join("half.ckpt.tmp").exists());
    assert!(dir.path().join("README").exists());
    store.commit("half", 2, false).unwrap();
    assert_eq!(store.get("half"), Some(2));
}

#[test]
fn concurrent_commits_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = &store;
            s.spawn(move || {
                let own = format!("own{t}");
                for v in 1..=300u64 {
                    store.commit(&own, v, v % 50 == 0).unwrap();
                    // A shared consumer: commits race, so some are Backwards.
                    match store.commit("shared", v * 4 + t, false) {
                        Ok(()) | Err(CheckpointError::Backwards { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                    if t == 0 && v % 30 == 0 {
                        store.remove("flaky").unwrap();
                    } else if v % 7 == 0 {
                        match store.commit("flaky", v, false) {
                            Ok(()) | Err(CheckpointError::Backwards { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
        }
    });
    for t in 0..4 {
        assert_eq!(store.get(&format!("own{t}")), Some(300));
    }
    let shared = store.get("shared").unwrap();
    assert!(shared >= 1200, "{shared}");
    let flaky = store.get("flaky");
    drop(store);
    let store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.get("shared"), Some(shared));
    assert_eq!(store.get("flaky"), flaky);
    assert_eq!(store.len(), 5 + usize::from(flaky.is_some()));
}

/// The two slots of a checkpoint file as (generation, seq), decoded by hand
/// from the layout in the module documentation.
fn slots(path: &Path) -> [(u64, u64); 2] {
    let b = fs::read(path).unwrap();
    assert_eq!(b.len() as u64, FILE_LEN);
    let slot = |off: usize| {
        let u = |o: usize| u64::from_le_bytes(b[off + o..off + o + 8].try_into().unwrap());
        (u(8), u(16))
    };
    [slot(0), slot(SLOT_STRIDE as usize)]
}

/// Writes a file by hand, following the documented layout byte by byte.
fn handmade_slot(name: &str, generation: u64, seq: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[0..4].copy_from_slice(b"HCKP");
    s[4..6].copy_from_slice(&1u16.to_le_bytes());
    s[8..16].copy_from_slice(&generation.to_le_bytes());
    s[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(name.as_bytes()), &s[..24]);
    s[24..28].copy_from_slice(&crc.to_le_bytes());
    s
}

#[test]
fn the_documented_format_is_the_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = vec![0u8; FILE_LEN as usize];
    b[..32].copy_from_slice(&handmade_slot("hand", 3, 111));
    b[SLOT_STRIDE as usize..].copy_from_slice(&handmade_slot("hand", 4, 222));
    fs::write(ckpt_path(dir.path(), "hand"), &b).unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.get("hand"), Some(222));
    store.commit("hand", 333, true).unwrap();
    assert_eq!(slots(&ckpt_path(dir.path(), "hand")), [(5, 333), (4, 222)]);
    store.commit("fresh", 9, false).unwrap();
    let written = fs::read(ckpt_path(dir.path(), "fresh")).unwrap();
    assert_eq!(&written[..32], &handmade_slot("fresh", 1, 9));
    assert!(written[32..].iter().all(|&x| x == 0));
}

/// Unsynced commits go to the scratch slot only: the last synced value stays
/// on disk untouched, so losing or tearing unsynced writes (a power failure)
/// falls back to it.
#[test]
fn unsynced_commits_never_overwrite_the_durable_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = ckpt_path(dir.path(), "c");
    let store = CheckpointStore::open(dir.path()).unwrap();
    let mut durable = 0;
    for v in 0..200u64 {
        let sync = v % 7 == 0 || v % 11 == 3;
        store.commit("c", v, sync).unwrap();
        if sync || v == 0 {
            durable = v;
        }
        let [a, b] = slots(&path);
        assert!(
            a.1 == durable || b.1 == durable,
            "after {v}: synced {durable} overwritten: {a:?} {b:?}"
        );
        assert!(a.1 == v || b.1 == v);
    }
    drop(store);
    // Simulate the power failure: the scratch slot's write was lost or torn.
    let [a, b] = slots(&path);
    let scratch = if a.1 == durable && b.1 != durable {
        SLOT_STRIDE
    } else {
        0
    };
    if a.1 != b.1 {
        let mut bytes = fs::read(&path).unwrap();
        bytes[scratch as usize + 12] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
    }
    let store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.get("c"), Some(durable));
}

// ---------------------------------------------------------------- corruption

/// A store with consumers `good` = 42 and `victim` = 7 (in slot 0 or 1, the
/// other slot holding 6).
fn setup(dir: &Path, victim_in_slot1: bool) {
    let store = CheckpointStore::open(dir).unwrap();
    store.commit("good", 42, true).unwrap();
    if victim_in_slot1 {
        store.commit("victim", 6, true).unwrap(); // created: slot 0
        store.commit("victim", 7, true).unwrap(); // slot 1
    } else {
        store.commit("victim", 5, true).unwrap(); // slot 0
        store.commit("victim", 6, true).unwrap(); // slot 1
        store.commit("victim", 7, true).unwrap(); // slot 0
    }
}

/// Strict open must fail naming the file; repair must move it aside and keep
/// the other consumer.
fn assert_corrupt(dir: &Path, what: &str) {
    let victim = ckpt_path(dir, "victim");
    match CheckpointStore::open(dir) {
        Err(CheckpointError::Corrupt { path, reason }) => {
            assert_eq!(path, victim, "{what}: {reason}");
            let msg = CheckpointError::Corrupt {
                path: path.clone(),
                reason,
            }
            .to_string();
            assert!(msg.contains("victim.ckpt"), "{what}: {msg}");
        }
        Err(e) => panic!("{what}: expected Corrupt, got {e}"),
        Ok(s) => panic!("{what}: opened with {:?}", s.get("victim")),
    }
    let (store, report) = CheckpointStore::open_repair(dir).unwrap();
    assert_eq!(report.quarantined.len(), 1, "{what}: {report:?}");
    assert_eq!(report.quarantined[0].0, victim);
    assert!(report.quarantined[0].2.exists());
    assert!(!victim.exists());
    assert_eq!(store.get("good"), Some(42), "{what}");
    assert_eq!(store.get("victim"), None, "{what}");
    // The name is usable again and a strict open now succeeds.
    store.commit("victim", 1, false).unwrap();
    drop(store);
    let store = CheckpointStore::open(dir).unwrap();
    assert_eq!(store.get("victim"), Some(1));
}

#[test]
fn corrupt_files_are_reported_not_panicked_on() {
    type Damage = fn(&Path);
    let cases: &[(&str, Damage)] = &[
        ("empty file", |p| fs::write(p, b"").unwrap()),
        ("truncated", |p| {
            let b = fs::read(p).unwrap();
            fs::write(p, &b[..100]).unwrap();
        }),
        ("extended", |p| {
            let mut b = fs::read(p).unwrap();
            b.push(0);
            fs::write(p, &b).unwrap();
        }),
        ("all zero", |p| {
            fs::write(p, vec![0u8; FILE_LEN as usize]).unwrap()
        }),
        ("garbage", |p| {
            let b: Vec<u8> = (0..FILE_LEN).map(|i| (i * 7 + 3) as u8).collect();
            fs::write(p, &b).unwrap();
        }),
        ("both slots flipped", |p| {
            let mut b = fs::read(p).unwrap();
            b[17] ^= 1;
            b[SLOT_STRIDE as usize + 17] ^= 1;
            fs::write(p, &b).unwrap();
        }),
        ("other consumer's file", |p| {
            let good = p.with_file_name("good.ckpt");
            fs::copy(good, p).unwrap();
        }),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path(), true);
        damage(&ckpt_path(dir.path(), "victim"));
        assert_corrupt(dir.path(), what);
    }
}

#[test]
fn a_damaged_slot_falls_back_to_the_other() {
    for in_slot1 in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path(), in_slot1);
        let p = ckpt_path(dir.path(), "victim");
        let mut b = fs::read(&p).unwrap();
        // Which slot holds 7? Damage it: the other one (6 or 7) must be used.
        let latest = if u64::from_le_bytes(b[8..16].try_into().unwrap())
            > u64::from_le_bytes(
                b[SLOT_STRIDE as usize + 8..SLOT_STRIDE as usize + 16]
                    .try_into()
                    .unwrap(),
            ) {
            0
        } else {
            SLOT_STRIDE as usize
        };
        b[latest + 20] ^= 0x40;
        fs::write(&p, &b).unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let v = store.get("victim").unwrap();
        assert!(v == 6 || v == 7, "{v}");
        // And it keeps working.
        store.commit("victim", 8, true).unwrap();
        drop(store);
        assert_eq!(
            CheckpointStore::open(dir.path()).unwrap().get("victim"),
            Some(8)
        );
    }
}

#[test]
fn invalid_name_on_disk_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), true);
    let bad = dir.path().join("bad name.ckpt");
    fs::copy(ckpt_path(dir.path(), "good"), &bad).unwrap();
    match CheckpointStore::open(dir.path()) {
        Err(CheckpointError::Corrupt { path, .. }) => assert_eq!(path, bad),
        other => panic!("{other:?}"),
    }
    let (store, report) = CheckpointStore::open_repair(dir.path()).unwrap();
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(store.names(), ["good", "victim"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any byte damage to a checkpoint file: open never panics, and either
    /// loads a value that was committed or reports the file corrupt.
    #[test]
    fn random_damage_never_panics(
        edits in prop::collection::vec((0..FILE_LEN as usize, any::<u8>()), 1..6),
        cut in prop::option::of(0..FILE_LEN as usize),
    ) {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path(), true);
        let p = ckpt_path(dir.path(), "victim");
        let mut b = fs::read(&p).unwrap();
        for (i, v) in edits {
            b[i] = v;
        }
        if let Some(c) = cut {
            b.truncate(c);
        }
        fs::write(&p, &b).unwrap();
        match CheckpointStore::open(dir.path()) {
            Ok(s) => {
                let v = s.get("victim").unwrap();
                prop_assert!(v == 6 || v == 7, "loaded {}", v);
            }
            Err(CheckpointError::Corrupt { path, .. }) => prop_assert_eq!(path, p),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
        let (s, _) = CheckpointStore::open_repair(dir.path()).unwrap();
        prop_assert_eq!(s.get("good"), Some(42));
    }
}

// ---------------------------------------------------------------- crash test

const CHILD_DIR: &str = "HERALD_CKPT_CRASH_DIR";
const CHILD_FRESH: &str = "HERALD_CKPT_CRASH_FRESH";
const CONSUMERS: [&str; 3] = ["alpha", "beta", "gamma"];

/// The child: commit increasing checkpoints for three consumers forever,
/// printing `TRY name seq` before and `OK name seq` after each commit.
/// `gamma` commits without sync. A fourth consumer, new to each child, is
/// created first (so that some kills land in the middle of a creation).
#[test]
fn crash_child() {
    let (Ok(dir), Ok(fresh)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_FRESH)) else {
        return;
    };
    let store = CheckpointStore::open(Path::new(&dir)).expect("child open");
    let names: Vec<&str> = [fresh.as_str()].into_iter().chain(CONSUMERS).collect();
    let mut next: Vec<u64> = names
        .iter()
        .map(|c| store.get(c).map_or(1, |v| v + 1))
        .collect();
    let mut out = std::io::stdout().lock();
    loop {
        for (i, c) in names.iter().enumerate() {
            let v = next[i];
            writeln!(out, "TRY {c} {v}").unwrap();
            out.flush().unwrap();
            store.commit(c, v, *c != "gamma").expect("commit");
            writeln!(out, "OK {c} {v}").unwrap();
            out.flush().unwrap();
            next[i] += 1 + (v % 3);
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_9_at_any_moment_keeps_a_committed_value() {
    let kills = if std::env::var("HERALD_LONG").is_ok_and(|v| v == "1") {
        200
    } else {
        40
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Per consumer: the last value known committed (OK) and the last tried.
    let mut ok: BTreeMap<String, u64> = BTreeMap::new();
    let mut total_ok = 0usize;
    for i in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "broker::checkpoint::tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_FRESH, format!("fresh{i}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        // Mostly kill while committing; one time in four, at a random moment
        // from the start (maybe while opening or creating files).
        if i % 4 != 3 {
            let mut line = String::new();
            loop {
                line.clear();
                if out.read_line(&mut line).unwrap() == 0 {
                    let mut err = String::new();
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    panic!("child exited before committing: {err}");
                }
                lines.push(line.trim().to_owned());
                if line.contains("OK ") {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 6000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        lines.extend(out.lines().map(|l| l.unwrap()));
        let mut tried: BTreeMap<String, u64> = BTreeMap::new();
        for l in &lines {
            // The harness prints `test crash_child ... ` with no newline
            // before the first line: take the last three words.
            let words: Vec<&str> = l.split_whitespace().collect();
            let [.., kind, name, v] = words[..] else {
                continue; // harness output or a cut line
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            match kind {
                "TRY" => {
                    tried.insert(name.to_owned(), v);
                }
                "OK" => {
                    ok.insert(name.to_owned(), v);
                    total_ok += 1;
                }
                _ => {}
            }
        }
        let store = CheckpointStore::open(dir.path())
            .unwrap_or_else(|e| panic!("kill {i}: reopen failed: {e}"));
        let fresh = format!("fresh{i}");
        for c in CONSUMERS.into_iter().chain([fresh.as_str()]) {
            let got = store.get(c);
            let last_ok = ok.get(c).copied();
            let last_try = tried.get(c).copied();
            match got {
                None => assert!(
                    last_ok.is_none(),
                    "kill {i}: {c} lost (last OK {last_ok:?})"
                ),
                Some(v) => {
                    // Either the last acknowledged commit or the one in flight.
                    assert!(
                        Some(v) == last_ok || Some(v) == last_try,
                        "kill {i}: {c} = {v}, last OK {last_ok:?}, in flight {last_try:?}"
                    );
                }
            }
            // What is on disk now is the base of the next child.
            if let Some(v) = got {
                ok.insert(c.to_owned(), v);
            }
        }
    }
    assert!(
        total_ok > kills,
        "the children barely committed ({total_ok})"
    );
    let finals: Vec<_> = CONSUMERS.iter().map(|c| (c, ok.get(*c))).collect();
    eprintln!("{kills} kills, {total_ok} acknowledged commits, final {finals:?}");
}

// ---------------------------------------------------------------- AckTracker

#[test]
fn ack_tracker_basics() {
    let mut t = AckTracker::new(0);
    assert_eq!(t.checkpoint(), 0);
    for s in [2, 5, 9, 10] {
        t.delivered(s).unwrap();
    }
    assert_eq!(
        t.delivered(10),
        Err(AckError::NotIncreasing { seq: 10, last: 10 })
    );
    assert_eq!(
        t.delivered(3),
        Err(AckError::NotIncreasing { seq: 3, last: 10 })
    );
    assert_eq!(t.unacked(), 4);
    assert_eq!(t.ack(3), Err(AckError::NotDelivered(3)));
    assert_eq!(t.ack(11), Err(AckError::NotDelivered(11)));
    assert_eq!(t.ack(5), Ok(None));
    assert_eq!(t.ack(5), Ok(None)); // idempotent
    assert_eq!(t.unacked(), 3);
    assert_eq!(t.ack(2), Ok(Some(5)));
    assert_eq!(t.checkpoint(), 5);
    assert_eq!(t.ack(2), Ok(None)); // below the checkpoint: no-op
    assert_eq!(t.ack(1), Ok(None));
    assert_eq!(t.ack(10), Ok(None));
    assert_eq!(t.ack_up_to(9), Some(10));
    assert_eq!(t.unacked(), 0);
    // The checkpoint never passes the last delivered event.
    assert_eq!(t.ack_up_to(1000), None);
    assert_eq!(t.checkpoint(), 10);
    t.delivered(20).unwrap();
    assert_eq!(t.ack_up_to(19), None);
    assert_eq!(t.ack_up_to(20), Some(20));
    assert!(AckError::NotDelivered(3).to_string().contains('3'));
}

#[test]
fn ack_tracker_starts_from_a_checkpoint() {
    let mut t = AckTracker::new(100);
    assert_eq!(
        t.delivered(100),
        Err(AckError::NotIncreasing {
            seq: 100,
            last: 100
        })
    );
    t.delivered(101).unwrap();
    assert_eq!(t.ack(50), Ok(None));
    assert_eq!(t.ack(101), Ok(Some(101)));
}

#[test]
fn ack_tracker_stays_small_when_acked_in_order() {
    let mut t = AckTracker::new(0);
    for s in 1..1_000_000u64 {
        t.delivered(s * 2).unwrap();
        if s > 8 {
            assert_eq!(t.ack((s - 8) * 2), Ok(Some((s - 8) * 2)));
        }
        assert!(t.unacked() <= 8);
    }
    // Nothing is left behind: acknowledging the rest leaves exactly a fresh
    // tracker at the last delivered sequence.
    let last = t.last_delivered();
    t.ack_up_to(last);
    assert_eq!(t, AckTracker::new(last));
}

#[derive(Debug, Clone)]
enum AckOp {
    Deliver(u64),
    Ack(u64),
    AckUpTo(u64),
}

fn ack_op() -> impl Strategy<Value = AckOp> {
    prop_oneof![
        4 => (1u64..6).prop_map(AckOp::Deliver), // gap to the next delivery
        4 => (0u64..80).prop_map(AckOp::Ack),
        1 => (0u64..80).prop_map(AckOp::AckUpTo),
        1 => (0u64..80).prop_map(AckOp::Deliver), // absolute, maybe not increasing
    ]
}

/// The naive model: the delivered set, the acked set, and the checkpoint
/// recomputed from scratch.
struct Model {
    initial: u64,
    delivered: Vec<u64>,
    acked: BTreeSet<u64>,
}

impl Model {
    fn checkpoint(&self) -> u64 {
        let mut cp = self.initial;
        for d in &self.delivered {
            if self.acked.contains(d) {
                cp = *d;
            } else {
                break;
            }
        }
        cp
    }
    fn last(&self) -> u64 {
        self.delivered.last().copied().unwrap_or(self.initial)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn ack_tracker_matches_model(
        initial in 0u64..10,
        ops in prop::collection::vec((ack_op(), any::<bool>()), 0..120),
    ) {
        let mut t = AckTracker::new(initial);
        let mut m = Model { initial, delivered: Vec::new(), acked: BTreeSet::new() };
        for (op, relative) in ops {
            match op {
                AckOp::Deliver(x) => {
                    let seq = if relative { m.last() + x } else { x };
                    let r = t.delivered(seq);
                    if seq > m.last() {
                        prop_assert_eq!(r, Ok(()));
                        m.delivered.push(seq);
                    } else {
                        prop_assert_eq!(r, Err(AckError::NotIncreasing { seq, last: m.last() }));
                    }
                }
                AckOp::Ack(seq) => {
                    let before = m.checkpoint();
                    let want = if seq <= before {
                        Ok(None)
                    } else if m.delivered.contains(&seq) {
                        m.acked.insert(seq);
                        let after = m.checkpoint();
                        Ok((after != before).then_some(after))
                    } else {
                        Err(AckError::NotDelivered(seq))
                    };
                    prop_assert_eq!(t.ack(seq), want);
                }
                AckOp::AckUpTo(seq) => {
                    let before = m.checkpoint();
                    for d in m.delivered.iter().filter(|d| **d <= seq) {
                        m.acked.insert(*d);
                    }
                    let after = m.checkpoint();
                    prop_assert_eq!(t.ack_up_to(seq), (after != before).then_some(after));
                }
            }
            prop_assert_eq!(t.checkpoint(), m.checkpoint());
            prop_assert_eq!(t.last_delivered(), m.last());
            let unacked = m.delivered.iter().filter(|d| !m.acked.contains(d)).count();
            prop_assert_eq!(t.unacked(), unacked);
        }
    }
}
