//! Private directories and files: mode 0700 and 0600, whatever the umask.
//!
//! The demo and the emulator command keep an emulator private key (and the
//! demo a store, which holds channel tokens) in a directory of their own
//! under the temp dir: [`ScratchDir`], removed when dropped unless the user
//! asked to keep it. The store makes its own directory private with
//! [`create_dir`] and [`restrict_tree`].

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `path` (and missing parents) and makes `path` itself 0700.
pub fn create_dir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(0o700))
}

/// Writes `contents` to a file readable by its owner alone (0600, also
/// when the file existed with wider permissions).
pub fn write_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(0o600))?;
    f.write_all(contents)
}

/// Makes every file directly in `dir` 0600 and every directory 0700 (one
/// level deep, then recursively). Errors on single entries are skipped: a
/// file removed meanwhile is not a problem.
pub fn restrict_tree(dir: &Path) {
    let _ = std::fs::set_permissions(dir, Permissions::from_mode(0o700));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => restrict_tree(&entry.path()),
            Ok(t) if t.is_file() => {
                let _ = std::fs::set_permissions(entry.path(), Permissions::from_mode(0o600));
            }
            _ => {}
        }
    }
}

/// A private directory under the temp dir, named `gcal-syncd-<what>-<pid>`,
/// removed on drop unless [`ScratchDir::keep`] was called.
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    pub fn new(what: &str) -> std::io::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("gcal-syncd-{what}-{}", std::process::id()));
        // A leftover of an earlier process with the same pid is ours to reuse.
        let _ = std::fs::remove_dir_all(&path);
        create_dir(&path)?;
        Ok(ScratchDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place when dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Writes a private file in the directory; returns its path.
    pub fn write(&self, name: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
        let p = self.path.join(name);
        write_file(&p, contents)?;
        Ok(p)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777)
    }

    #[test]
    fn scratch_dir_is_private_and_removed_unless_kept() {
        let dir = ScratchDir::new("unit-private-dir").expect("create");
        let file = dir.write("key.json", b"secret").expect("write");
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&file), 0o600);
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());

        let mut kept = ScratchDir::new("unit-private-dir-kept").expect("create");
        kept.keep();
        let path = kept.path().to_path_buf();
        drop(kept);
        assert!(path.exists());
        std::fs::write(path.join("loose"), b"x").expect("write");
        restrict_tree(&path);
        assert_eq!(mode(&path.join("loose")), 0o600);
        let _ = std::fs::remove_dir_all(&path);
    }
}
