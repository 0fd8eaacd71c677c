//! The topic high-water-mark file (`topics.hwm`): the last topic sequence of
//! every topic that retention emptied, so that after a restart the log still
//! refuses to reuse a topic's old sequences and topic readers still get a gap
//! for them. Written (temporary file, sync, rename, directory sync) before
//! retention removes segment files; read on open. Layout in `docs/FORMAT.md`.

use std::path::Path;

use super::config::{Durability, LogConfig};
use super::format::{
    get_u32, get_u64, HWM_COUNT_OFF, HWM_ENTRIES_OFF, HWM_ENTRY_LEN, HWM_FORMAT_VERSION,
};
use super::format::{HWM_FILE_NAME, HWM_MAGIC, HWM_MAGIC_OFF, HWM_VERSION_OFF};
use super::LogError;

/// Encodes `(topic_id, last_topic_seq)` pairs.
pub(crate) fn encode(entries: &[(u64, u64)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HWM_ENTRIES_OFF + entries.len() * HWM_ENTRY_LEN + 4);
    b.extend_from_slice(&HWM_MAGIC);
    b.extend_from_slice(&HWM_FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (t, s) in entries {
        b.extend_from_slice(&t.to_le_bytes());
        b.extend_from_slice(&s.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the file; `Err` says what is wrong. Never panics.
pub(crate) fn decode(b: &[u8]) -> Result<Vec<(u64, u64)>, &'static str> {
    if b.len() < HWM_ENTRIES_OFF + 4 {
        return Err("high-water-mark file too short");
    }
    if b[HWM_MAGIC_OFF..HWM_MAGIC_OFF + 8] != HWM_MAGIC {
        return Err("bad high-water-mark magic");
    }
    if get_u32(b, HWM_VERSION_OFF) != HWM_FORMAT_VERSION {
        return Err("unsupported high-water-mark version");
    }
    let count = get_u32(b, HWM_COUNT_OFF) as usize;
    let end = count
        .checked_mul(HWM_ENTRY_LEN)
        .and_then(|n| n.checked_add(HWM_ENTRIES_OFF));
    let Some(end) = end.filter(|&e| e + 4 == b.len()) else {
        return Err("high-water-mark length disagrees with its count");
    };
    if crc32c::crc32c(&b[..end]) != get_u32(b, end) {
        return Err("high-water-mark CRC mismatch");
    }
    Ok((0..count)
        .map(|i| {
            let o = HWM_ENTRIES_OFF + i * HWM_ENTRY_LEN;
            (get_u64(b, o), get_u64(b, o + 8))
        })
        .collect())
}

/// Reads `dir/topics.hwm`: `Ok(None)` if absent, `Err(Corrupt)` if invalid.
pub(crate) fn read(dir: &Path) -> Result<Option<Vec<(u64, u64)>>, LogError> {
    let path = dir.join(HWM_FILE_NAME);
    match std::fs::read(&path) {
        Ok(b) => decode(&b)
            .map(Some)
            .map_err(|why| LogError::corrupt(path, 0, why)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(
            "reading the high-water-mark file",
            Some(path),
            e,
        )),
    }
}

/// Replaces `dir/topics.hwm` atomically.
pub(crate) fn write(dir: &Path, cfg: &LogConfig, entries: &[(u64, u64)]) -> Result<(), LogError> {
    let path = dir.join(HWM_FILE_NAME);
    let tmp = dir.join(format!("{HWM_FILE_NAME}.tmp"));
    let bytes = encode(entries);
    let err = |ctx: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e| LogError::io(ctx, Some(p), e)
    };
    let _ = std::fs::remove_file(&tmp);
    let file = cfg
        .io
        .create_segment(&tmp, bytes.len() as u64, &bytes)
        .map_err(err("writing the high-water-mark file", &tmp))?;
    let durable = cfg.durability != Durability::Never;
    if durable {
        cfg.io
            .sync_file(&file)
            .map_err(err("syncing the high-water-mark file", &tmp))?;
    }
    cfg.io
        .rename(&tmp, &path)
        .map_err(err("renaming the high-water-mark file", &path))?;
    if durable {
        cfg.io
            .sync_dir(dir)
            .map_err(err("syncing the log directory", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let e = vec![(1, 10), (u64::MAX, 3)];
        let mut b = encode(&e);
        assert_eq!(decode(&b), Ok(e));
        b[20] ^= 1;
        assert!(decode(&b).is_err());
        assert!(decode(&b[..10]).is_err());
        assert_eq!(decode(&encode(&[])), Ok(vec![]));
    }
}
