//! Topic names, their validation, and the name ↔ id registry persisted in
//! `<data_dir>/topics`.
//!
//! # Names
//! 1 to 255 bytes; dot-separated tokens; each token is non-empty and made of
//! ASCII letters, digits, `_` and `-`. A leading `$` marks a system topic
//! (`$presence.acme.room.1`), which only the broker itself publishes to.
//! `*` and `>` are wildcards in [filters](super::filter), never in names.
//!
//! # The registry file
//! One line per topic, `"<id> <name>\n"`, appended and synced before the
//! topic's first record can reach the log, so every topic id in the log has a
//! name after any crash. A torn last line (no newline) is ignored on open.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::presence::PRESENCE_PREFIX;
use super::BrokerError;
use crate::sync::AtomicU64;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// Prefix of dead-letter topics: `$deadletter.<webhook>` holds the events a
/// server-side consumer (a webhook) gave up delivering.
pub const DEADLETTER_PREFIX: &str = "$deadletter.";

/// The prefixes of system topics that name a client's topic (or webhook)
/// after them: whatever reads every topic reads these too.
pub const SYSTEM_PREFIXES: [&str; 2] = [PRESENCE_PREFIX, DEADLETTER_PREFIX];

/// Splits a system topic or pattern into its system prefix and the rest:
/// `$presence.` and `$deadletter.` topics name a client's topic (or
/// webhook) after the prefix, with its tenant prefix there, not in front.
/// `("", name)` for every other name.
pub fn split_system(name: &str) -> (&'static str, &str) {
    for prefix in SYSTEM_PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (prefix, rest);
        }
    }
    ("", name)
}

/// Checks a topic name a client may publish or subscribe to.
pub fn validate_topic(name: &str) -> Result<(), BrokerError> {
    validate(name, false)
}

const SYSTEM_RESERVED: &str = "topics starting with '$' are reserved for the system";

pub(crate) fn validate(name: &str, allow_system: bool) -> Result<(), BrokerError> {
    let invalid = |why: &'static str| {
        Err(BrokerError::InvalidTopic {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() || name.len() > MAX_TOPIC_LEN {
        return invalid("must be 1 to 255 bytes");
    }
    let body = match name.strip_prefix('$') {
        Some(rest) if allow_system => rest,
        Some(_) => return invalid(SYSTEM_RESERVED),
        None => name,
    };
    // One pass (every publish names a topic), tokens checked left to
    // right: an empty token or a bad byte, whichever comes first.
    let mut token_len = 0;
    for &b in body.as_bytes() {
        match TOPIC_BYTE[b as usize] {
            TOKEN => token_len += 1,
            DOT if token_len > 0 => token_len = 0,
            DOT => return invalid(EMPTY_TOKEN),
            _ => return invalid(BAD_BYTE),
        }
    }
    if token_len == 0 {
        return invalid(EMPTY_TOKEN);
    }
    Ok(())
}

const EMPTY_TOKEN: &str = "empty token (leading, trailing or double '.')";
const BAD_BYTE: &str = "tokens may hold only ASCII letters, digits, '_' and '-'";
const TOKEN: u8 = 1;
const DOT: u8 = 2;
/// What each byte is in a topic name: `TOKEN` (ASCII letters, digits, `_`
/// and `-`), `DOT`, or 0 (never allowed).
const TOPIC_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
            t[b] = TOKEN;
        }
        b += 1;
    }
    t[b'.' as usize] = DOT;
    t
};

/// One topic's broker-side state.
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    /// The next topic sequence. Read and written only under the broker's
    /// publish lock, which orders every access: Relaxed is enough, and no
    /// second lock is taken per publish.
    pub(crate) next_seq: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Registry {
    path: PathBuf,
    /// Client-chosen names: a keyed hash (see the workspace manifest).
    by_name: RwLock<HashMap<Arc<str>, Arc<Topic>, ahash::RandomState>>,
    /// Index `id - 1` → topic.
    by_id: RwLock<Vec<Arc<Topic>>>,
    file: Mutex<File>,
}

impl Registry {
    /// Loads `<dir>/topics`; `last_topic_seq` gives each topic's last sequence
    /// found in the log.
    pub(crate) fn open(
        dir: &Path,
        last_topic_seq: impl Fn(u64) -> Option<u64>,
    ) -> Result<Registry, BrokerError> {
        let path = dir.join("topics");
        let io = |what: &'static str| {
            let path = path.clone();
            move |e| BrokerError::Io {
                what,
                path: path.clone(),
                source: e,
            }
        };
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("reading the topic registry")(e)),
        };
        let mut by_id: Vec<Arc<Topic>> = Vec::new();
        let mut by_name = HashMap::default();
        let mut valid_len = 0;
        for line in text.split_inclusive(|&b| b == b'\n') {
            let Some(line) = line.strip_suffix(b"\n") else {
                break;
            }; // torn tail
            let parsed = std::str::from_utf8(line).ok().and_then(|l| {
                let (id, name) = l.split_once(' ')?;
                Some((id.parse::<u64>().ok()?, name))
            });
            let Some((id, name)) = parsed
                .filter(|(id, name)| *id == by_id.len() as u64 + 1 && validate(name, true).is_ok())
            else {
                return Err(BrokerError::CorruptRegistry {
                    path,
                    line: by_id.len() + 1,
                });
            };
            let next = last_topic_seq(id).map_or(1, |s| s + 1);
            let topic = Arc::new(Topic {
                id,
                name: name.into(),
                next_seq: AtomicU64::new(next),
            });
            by_name.insert(topic.name.clone(), topic.clone());
            by_id.push(topic);
            valid_len += line.len() + 1;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("opening the topic registry"))?;
        if valid_len < text.len() {
            file.set_len(valid_len as u64)
                .map_err(io("truncating a torn topic registry line"))?;
        }
        Ok(Registry {
            path,
            by_name: RwLock::new(by_name),
            by_id: RwLock::new(by_id),
            file: Mutex::new(file),
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.by_name.read().get(name).cloned()
    }

    pub(crate) fn by_id(&self, id: u64) -> Option<Arc<Topic>> {
        self.by_id.read().get(id.checked_sub(1)? as usize).cloned()
    }

    /// Every topic, in id order.
    pub(crate) fn all(&self) -> Vec<Arc<Topic>> {
        self.by_id.read().clone()
    }

    /// The topic named `name`, registering it (durably) if new.
    pub(crate) fn get_or_create(
        &self,
        name: &str,
        allow_system: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        // A system topic is the broker's to write, even once it exists.
        if !allow_system && name.starts_with('$') {
            return Err(BrokerError::InvalidTopic {
                name: name.to_owned(),
                why: SYSTEM_RESERVED,
            });
        }
        if let Some(topic) = self.get(name) {
            return Ok(topic);
        }
        validate(name, allow_system)?;
        let mut file = self.file.lock();
        if let Some(topic) = self.get(name) {
            return Ok(topic);
        }
        let id = self.by_id.read().len() as u64 + 1;
        let line = format!("{id} {name}\n");
        let io = |what| {
            let path = self.path.clone();
            move |e| BrokerError::Io {
                what,
                path,
                source: e,
            }
        };
        file.write_all(line.as_bytes())
            .map_err(io("appending to the topic registry"))?;
        file.sync_data().map_err(io("syncing the topic registry"))?;
        let topic = Arc::new(Topic {
            id,
            name: name.into(),
            next_seq: AtomicU64::new(1),
        });
        self.by_id.write().push(topic.clone());
        self.by_name
            .write()
            .insert(topic.name.clone(), topic.clone());
        Ok(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["a", "acme.ws.42", "a-b_c.D9", &"x".repeat(255)] {
            assert!(validate_topic(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a.*",
            "a.>",
            "é",
            "$presence.a",
            &"x".repeat(256),
        ] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
        assert!(validate("$presence.acme.room", true).is_ok());
    }

    /// The token-by-token rules the one-pass check implements.
    fn reference(name: &str) -> Result<(), &'static str> {
        for token in name.split('.') {
            if token.is_empty() {
                return Err(EMPTY_TOKEN);
            }
            if !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(BAD_BYTE);
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Same verdict and same reason as the token-by-token rules.
        #[test]
        fn one_pass_check_agrees_with_the_token_rules(name in "[a-c_.* é-]{1,12}") {
            let got = validate(&name, false).map_err(|e| match e {
                BrokerError::InvalidTopic { why, .. } => why,
                other => panic!("{other:?}"),
            });
            proptest::prop_assert_eq!(got, reference(&name));
        }
    }

    #[test]
    fn registry_persists_and_ignores_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let reg = Registry::open(dir.path(), |_| None).unwrap();
            assert_eq!(reg.get_or_create("a.b", false).unwrap().id, 1);
            assert_eq!(reg.get_or_create("c", false).unwrap().id, 2);
            assert_eq!(reg.get_or_create("a.b", false).unwrap().id, 1);
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("topics"))
            .unwrap();
        f.write_all(b"3 torn").unwrap();
        let reg = Registry::open(dir.path(), |id| (id == 2).then_some(41)).unwrap();
        assert_eq!(reg.get("c").unwrap().id, 2);
        assert_eq!(
            reg.get("c")
                .unwrap()
                .next_seq
                .load(crate::sync::Ordering::Relaxed),
            42
        );
        assert_eq!(reg.get_or_create("d", false).unwrap().id, 3);
        drop(reg);
        let reg = Registry::open(dir.path(), |_| None).unwrap();
        assert_eq!(reg.by_id(3).unwrap().name.as_ref(), "d");
    }

    #[test]
    fn a_system_topic_stays_the_systems_once_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path(), |_| None).unwrap();
        let system = reg.get_or_create("$presence.room", true).unwrap();
        assert!(matches!(
            reg.get_or_create("$presence.room", false),
            Err(BrokerError::InvalidTopic { .. })
        ));
        assert_eq!(
            reg.get_or_create("$presence.room", true).unwrap().id,
            system.id
        );
    }

    #[test]
    fn a_corrupt_registry_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("topics"), b"1 a\n7 b\n").unwrap();
        assert!(matches!(
            Registry::open(dir.path(), |_| None),
            Err(BrokerError::CorruptRegistry { line: 2, .. })
        ));
    }
}
