//! The durable-head marker: `head.json` in the store directory, next to
//! sled's files, holding the store's id and the highest seq the feed made
//! durable. It is the daemon's memory of the feed independent of sled's
//! data file: a store whose data is behind it (restored from a backup,
//! truncated, damaged) or missing is detected at open instead of handing
//! the same seqs out again.
//!
//! Written only after the records it names were flushed, so it is never
//! ahead of the data; written atomically (temporary file, fsync, rename,
//! fsync of the directory), so it is either the old or the new one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE: &str = "head.json";

/// What the marker holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Marker {
    pub store_id: String,
    pub durable_head: super::Seq,
}

fn file(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The marker in `dir`: `Ok(None)` when there is none, `Err` (why) when
/// it exists but cannot be read.
pub(super) fn read(dir: &Path) -> Result<Option<Marker>, String> {
    let path = file(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} cannot be read: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{} cannot be read: {e}", path.display())),
    }
}

/// Replaces the marker in `dir`, durably.
pub(super) fn write(dir: &Path, marker: &Marker) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .mode(0o600)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(marker).unwrap_or_default())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, file(dir))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tells_missing_from_unreadable() {
        let dir = std::env::temp_dir().join(format!("marker-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).expect("dir");
        assert_eq!(read(&dir), Ok(None));
        let m = Marker {
            store_id: "abc".into(),
            durable_head: super::super::Seq::new(340),
        };
        write(&dir, &m).expect("write");
        assert_eq!(read(&dir), Ok(Some(m)));
        std::fs::write(file(&dir), b"{\"store_id\": 3").expect("damage");
        assert!(read(&dir).is_err_and(|e| e.contains("head.json")));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
