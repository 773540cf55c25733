//! File modes: what pollhook creates is private to its user, whatever the umask it inherited.
//!
//! Three mechanisms, one rule (directories 0700, files 0600):
//! - the binary runs with umask 077 ([`restrict_umask`], first thing in `main`), so every file
//!   any part of it creates — sled's files and snapshots included, which pollhook does not open
//!   itself — starts private; hooks get the inherited umask back ([`inherited_umask`]);
//! - [`private_dir`] creates the state dir 0700, and tightens an existing one (an older version,
//!   or systemd's StateDirectory= default of 0755, left it open); [`make_private`] does the same
//!   for the files of a tree pollhook owns (the sled store), whatever created them;
//! - files with a configured mode (a JSONL sink's `mode`) get exactly that mode, set after
//!   opening so the umask cannot narrow it ([`set_mode`]); [`write_private`] writes a small
//!   file 0600.
//!
//! A mode that cannot be set (a directory owned by another user) is logged, never fatal.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// The mode of every file pollhook creates.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory pollhook creates (the state dir above all).
pub const DIR_MODE: u32 = 0o700;

/// The umask the process started with; `u32::MAX` until [`restrict_umask`] ran.
static INHERITED: AtomicU32 = AtomicU32::new(u32::MAX);

/// Sets the process umask to 077, remembering the inherited one for child processes.
pub fn restrict_umask() {
    // SAFETY: umask(2) only swaps the process's file mode creation mask.
    let old = unsafe { libc::umask(0o077) };
    let _ = INHERITED.compare_exchange(u32::MAX, old as u32, Ordering::SeqCst, Ordering::SeqCst);
}

/// The umask the process inherited, when [`restrict_umask`] changed it (hooks get it back).
pub fn inherited_umask() -> Option<u32> {
    match INHERITED.load(Ordering::SeqCst) {
        u32::MAX => None,
        m => Some(m),
    }
}

/// Creates the state dir `dir` (and its parents) if needed, and makes it 0700 — when it is
/// pollhook's own: just created, empty, or holding a `store`. A directory that holds other
/// things (a `state_dir` set to `/var/lib` or `/tmp` by mistake) is left alone, with a warning:
/// changing its mode could break whatever else lives there.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let existed = dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    if !existed || empty || dir.join("store").is_dir() {
        tighten(dir, DIR_MODE);
    } else if std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        tracing::warn!(path = %dir.display(),
            "the state dir is open to other users and holds files that are not pollhook's; its mode is left alone: give pollhook a directory of its own (mode 0700)");
    }
    Ok(())
}

/// Makes every directory under `root` (itself included) 0700 and every file 0600.
pub fn make_private(root: &Path) {
    tighten(root, DIR_MODE);
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => make_private(&entry.path()),
            Ok(t) if t.is_file() => tighten(&entry.path(), FILE_MODE),
            _ => {}
        }
    }
}

/// Sets exactly `mode` on `path` (the umask does not apply to chmod).
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Clears the bits of `path`'s mode outside `allowed` (logs when it cannot).
fn tighten(path: &Path, allowed: u32) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & !allowed == 0 {
        return;
    }
    if let Err(e) = set_mode(path, mode & allowed) {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), error = %e,
            "cannot make this path private to the pollhook user; chmod it yourself (0700 for directories, 0600 for files)");
    }
}

/// Writes `bytes` to `path` (created 0600, or truncated and made 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_become_0700_and_files_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/state");
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        set_mode(&state, 0o755).unwrap();
        std::fs::create_dir(state.join("store")).unwrap();
        set_mode(&state.join("store"), 0o777).unwrap();
        std::fs::write(state.join("store/db"), "x").unwrap();
        set_mode(&state.join("store/db"), 0o666).unwrap();
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700, "an existing open dir is tightened");
        make_private(&state.join("store"));
        assert_eq!(mode(&state.join("store")), 0o700);
        assert_eq!(mode(&state.join("store/db")), 0o600);
        // A directory holding other things is not pollhook's to change.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join("someone-else"), "x").unwrap();
        set_mode(&shared, 0o755).unwrap();
        private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o755);
        let f = state.join("admin.addr");
        std::fs::write(&f, "old").unwrap();
        set_mode(&f, 0o644).unwrap();
        write_private(&f, b"127.0.0.1:1").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "127.0.0.1:1");
    }
}
