//! Which store a state dir holds, and who may use it: the store identity and the state dir lock.
//!
//! A store gets a random identity when it is created. It is kept twice: inside sled (`meta`
//! `store_id`) and in `<state_dir>/store-id`, a small file written atomically beside sled's
//! directory. sled 0.34 can open a damaged store as an EMPTY one (a truncated log with no
//! snapshot yet); then the file still names the identity sled lost, and the store is refused
//! instead of starting over silently. A store from before identities (schema 1 and 2 in the
//! field) has neither and adopts one when it is opened: no false alarm.
//!
//! The lock is an exclusive `flock` on `<state_dir>/lock`, held for the life of a store and by
//! `store reset` / `store restore` while they move directories: it does not depend on sled
//! being able to open what is there.

use super::{DbError, StoreError};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The file beside sled's directory that names the store's identity.
pub const ID_FILE: &str = "store-id";
/// The lock file of the state dir.
const LOCK_FILE: &str = "lock";

/// An exclusive lock on a state dir, released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the state dir's lock, or fails with [`StoreError::Locked`] when another process
    /// (or another store in this process) holds it. Like sled's own lock, it waits up to
    /// `LOCK_GRACE` for a holder that is letting go (a store of this process whose
    /// last handle is being dropped by a task that is finishing).
    pub fn acquire(state_dir: &Path) -> Result<DirLock, StoreError> {
        let deadline = std::time::Instant::now() + super::LOCK_GRACE;
        loop {
            match DirLock::try_acquire(state_dir) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn try_acquire(state_dir: &Path) -> Result<DirLock, StoreError> {
        let open_err = |e: std::io::Error| StoreError::Open {
            dir: state_dir.to_path_buf(),
            source: DbError::io(e),
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(state_dir.join(LOCK_FILE))
            .map_err(open_err)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                StoreError::Locked(state_dir.to_path_buf())
            } else {
                open_err(e)
            });
        }
        Ok(DirLock { _file: file })
    }
}

/// A new identity: 32 hex digits from the time, the process and a random seed.
pub fn new_id() -> String {
    let mut h = Sha256::new();
    h.update(fastrand::u64(..).to_be_bytes());
    h.update(fastrand::u64(..).to_be_bytes());
    h.update(std::process::id().to_be_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.update(nanos.to_be_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `s` looks like an identity this module made.
pub fn valid_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What `<state_dir>/store-id` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdFile {
    Missing,
    Id(String),
    /// Present but not an identity (damaged).
    Unreadable,
}

pub fn read_id_file(state_dir: &Path) -> IdFile {
    match std::fs::read_to_string(state_dir.join(ID_FILE)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => IdFile::Missing,
        Err(_) => IdFile::Unreadable,
        Ok(text) => {
            let id = text.trim();
            if valid_id(id) {
                IdFile::Id(id.to_string())
            } else {
                IdFile::Unreadable
            }
        }
    }
}

/// Writes `<state_dir>/store-id` atomically (temp file, fsync, rename, fsync of the dir), 0600.
pub fn write_id_file(state_dir: &Path, id: &str) -> std::io::Result<()> {
    crate::files::write_atomically(&state_dir.join(ID_FILE), format!("{id}\n").as_bytes())
}

/// Moves the store (sled's directory and `store-id`) of `state_dir` into a new directory
/// `<state_dir>/<label>-<UTC time>/` and returns it; `None` when there was nothing to move.
/// Nothing is deleted: the operator decides what to do with the old files.
pub fn move_aside(state_dir: &Path, label: &str) -> std::io::Result<Option<PathBuf>> {
    let parts: Vec<PathBuf> = [super::SLED_DIR, ID_FILE]
        .iter()
        .map(|p| state_dir.join(p))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut aside = state_dir.join(format!("{label}-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = state_dir.join(format!("{label}-{stamp}-{n}"));
    }
    std::fs::create_dir(&aside)?;
    for p in parts {
        std::fs::rename(&p, aside.join(p.file_name().expect("a named path")))?;
    }
    File::open(state_dir)?.sync_all()?;
    Ok(Some(aside))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ids_are_distinct_and_the_file_is_written_0600_and_read_back() {
        let a = new_id();
        assert!(valid_id(&a), "{a}");
        assert_ne!(a, new_id());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_id_file(dir.path()), IdFile::Missing);
        write_id_file(dir.path(), &a).unwrap();
        assert_eq!(read_id_file(dir.path()), IdFile::Id(a.clone()));
        let mode = std::fs::metadata(dir.path().join(ID_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(ID_FILE), "garbage").unwrap();
        assert_eq!(read_id_file(dir.path()), IdFile::Unreadable);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left behind"
        );
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(StoreError::Locked(_))
        ));
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
