//! Opening a store: the state dir lock, sled itself ([`LOCK_GRACE`] for a store closed an
//! instant ago), the schema mark, the identity check against `<state_dir>/store-id`
//! ([`reconcile_identity`]), the refusal of a store that lost events a sink has, and
//! [`Store::reset`] (a new, empty store whose seqs continue the sinks' files).

use super::names::Names;
use super::{
    bucket, decode_seq, group, identity, keys, migrate, DbError, Store, StoreError, ADOPTED,
    CACHE_BYTES, DATA, HASH_KEY, NEXT_SEQ, SCHEMA, SCHEMA_VERSION, SLED_DIR, STORE_ID,
};
use sled::Tree;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{watch, Mutex};

impl Store {
    /// Opens (creating if needed) the store under `state_dir`. Refuses a store that sled
    /// opened without the identity `<state_dir>/store-id` names ([`StoreError::Refused`]).
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        crate::files::private_dir(state_dir).map_err(|e| StoreError::Open {
            dir: state_dir.to_path_buf(),
            source: DbError::io(e),
        })?;
        let lock = identity::DirLock::acquire(state_dir)?;
        let (store, problem) = Store::open_locked(state_dir, Some(lock), Mode::Run)?;
        debug_assert!(problem.is_none(), "Mode::Run refuses instead");
        Ok(store)
    }

    /// Opens the store whatever its identity says, writing nothing, for `store verify`:
    /// returns the identity problem that [`Store::open`] would refuse it for.
    pub fn inspect(state_dir: &Path) -> Result<(Store, Option<String>), StoreError> {
        if !state_dir.join(SLED_DIR).is_dir() {
            return Err(StoreError::Refused {
                dir: state_dir.to_path_buf(),
                what: format!("there is no store in it ({} is missing)", SLED_DIR),
            });
        }
        let lock = identity::DirLock::acquire(state_dir)?;
        Store::open_locked(state_dir, Some(lock), Mode::Inspect)
    }

    pub(super) fn open_locked(
        state_dir: &Path,
        lock: Option<identity::DirLock>,
        mode: Mode,
    ) -> Result<(Store, Option<String>), StoreError> {
        let id_file = identity::read_id_file(state_dir);
        if mode == Mode::Run {
            migrate::finish_swap(state_dir)?;
        } else if migrate::swap_pending(state_dir) {
            return Err(StoreError::Refused {
                dir: state_dir.to_path_buf(),
                what: "a store migration was interrupted while its new store was being put in place; start pollhook (`pollhook once` or the service) to finish it".into(),
            });
        }
        let path = state_dir.join(SLED_DIR);
        let mut db = open_db(&path, state_dir)?;
        if let Some(found) = migrate::legacy_schema(&db)? {
            if found > SCHEMA_VERSION {
                return Err(StoreError::Newer {
                    dir: state_dir.to_path_buf(),
                    found,
                });
            }
            match mode {
                Mode::Run => {
                    drop(db);
                    migrate::migrate(state_dir)?;
                    db = open_db(&path, state_dir)?;
                }
                Mode::Inspect => {
                    return Err(StoreError::Legacy {
                        dir: state_dir.to_path_buf(),
                        found,
                    })
                }
            }
        }
        // The store holds refresh tokens (`connections`): its files are the pollhook user's only.
        crate::files::make_private(&path);
        crate::memory::trim();
        let data = db.open_tree(DATA)?;
        let (id, problem) = reconcile_identity(state_dir, &db, &data, id_file, mode)?;
        match data.get(keys::meta(SCHEMA))? {
            None if mode == Mode::Inspect => {}
            None => {
                data.insert(keys::meta(SCHEMA), &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("meta/schema_version".into()))?,
                );
                if found > SCHEMA_VERSION {
                    return Err(StoreError::Newer {
                        dir: state_dir.to_path_buf(),
                        found,
                    });
                }
            }
        }
        let hashing = match data.get(keys::meta(HASH_KEY))? {
            Some(v) => bucket::Hashing::new(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("meta/hash_key".into()))?,
            ),
            None => {
                if data.scan_prefix([keys::STATE]).next().is_some() {
                    return Err(StoreError::Corrupt(
                        "meta/hash_key (documents are stored, but not the key that places them)"
                            .into(),
                    ));
                }
                let key = new_hash_key();
                if mode == Mode::Run {
                    data.insert(keys::meta(HASH_KEY), &key[..])?;
                }
                bucket::Hashing::new(key)
            }
        };
        let names = Names::load(&data)?;
        let after_last = match data.scan_prefix([keys::OUTBOX]).next_back() {
            Some(kv) => {
                let (k, v) = kv?;
                let first = keys::outbox_seq(&k)?;
                first
                    + group::count(&v)
                        .map_err(|_| StoreError::Corrupt(format!("outbox group {first}")))?
            }
            None => 1,
        };
        let next = match data.get(keys::meta(NEXT_SEQ))? {
            Some(v) => decode_seq(&v)?.max(after_last),
            None => after_last,
        };
        let acks = db.open_tree("acks")?;
        if mode == Mode::Run {
            // An ack past the last event: the store lost events a sink already has, and new
            // events would take their seqs and be skipped by that sink.
            for kv in acks.iter() {
                let (k, v) = kv?;
                let acked = decode_seq(&v)?;
                if acked >= next {
                    return Err(StoreError::Refused {
                        dir: state_dir.to_path_buf(),
                        what: format!(
                            "sink {} is acknowledged up to seq {acked}, but the store's last event is seq {}: it lost events that sink already has",
                            String::from_utf8_lossy(&k),
                            next - 1
                        ),
                    });
                }
            }
        }
        let (notify, _) = watch::channel(next - 1);
        let store = Store {
            dir: state_dir.to_path_buf(),
            id,
            data,
            acks,
            attempts: db.open_tree("attempts")?,
            dead: db.open_tree("dead")?,
            connections: db.open_tree("connections")?,
            hashing,
            names: std::sync::RwLock::new(names),
            last_group: Default::default(),
            observer: Default::default(),
            db,
            next_seq: Mutex::new(next),
            durable: AtomicU64::new(next - 1),
            last_flush: Default::default(),
            written_since_trim: AtomicU64::new(0),
            notify,
            _lock: lock,
        };
        Ok((store, problem))
    }

    /// Moves the store of `state_dir` aside (into `<state_dir>/replaced-<time>/`, nothing is
    /// deleted) and creates an empty one with a new identity whose first event is `first_seq`,
    /// adopting `adopted` (event id, seq): the last lines of sink files written before it, from
    /// which those sinks continue ([`Origin::wrote`](super::Origin::wrote)). Returns the new store and where the old
    /// one went (`None` when there was none). Works on a store that cannot be opened.
    pub fn reset(
        state_dir: &Path,
        first_seq: u64,
        adopted: &[(String, u64)],
    ) -> Result<(Store, Option<PathBuf>), StoreError> {
        let io = |e: std::io::Error| StoreError::Open {
            dir: state_dir.to_path_buf(),
            source: DbError::io(e),
        };
        crate::files::private_dir(state_dir).map_err(io)?;
        let lock = identity::DirLock::acquire(state_dir)?;
        let aside = identity::move_aside(state_dir, "replaced").map_err(io)?;
        let (store, _) = Store::open_locked(state_dir, Some(lock), Mode::Run)?;
        let mut next = store
            .next_seq
            .try_lock()
            .expect("nobody else has this store yet");
        debug_assert_eq!(*next, 1, "a new store");
        let first = first_seq.max(1);
        store
            .data
            .insert(keys::meta(NEXT_SEQ), &first.to_be_bytes())?;
        for (id, seq) in adopted {
            let mut k = ADOPTED.to_vec();
            k.extend_from_slice(id.as_bytes());
            store.data.insert(keys::meta(&k), &seq.to_be_bytes())?;
        }
        store.db.flush()?;
        *next = first;
        drop(next);
        store.durable.store(first - 1, Ordering::SeqCst);
        store.notify.send_replace(first - 1);
        Ok((store, aside))
    }
}

/// A new random bucket hash key.
pub(super) fn new_hash_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    key[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    key
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// For use: refuse an identity mismatch; adopt an identity, mark the schema.
    Run,
    /// For `store verify`: report an identity mismatch, write nothing.
    Inspect,
}

/// Compares sled's identity with `<state_dir>/store-id`. Returns the identity and, in
/// [`Mode::Inspect`], the problem [`Mode::Run`] refuses the store for.
///
/// A new store (and one from before identities) gets an identity: first in sled, flushed,
/// then in the file, so a crash in between leaves sled's copy, which the next open writes to
/// the file again; never a file naming an identity sled does not have.
fn reconcile_identity(
    state_dir: &Path,
    db: &sled::Db,
    data: &Tree,
    file: identity::IdFile,
    mode: Mode,
) -> Result<(String, Option<String>), StoreError> {
    use identity::IdFile;
    let in_sled = match data.get(keys::meta(STORE_ID))? {
        None => None,
        Some(v) => match std::str::from_utf8(&v) {
            Ok(id) if identity::valid_id(id) => Some(id.to_string()),
            _ => return Err(StoreError::Corrupt("meta/store_id".into())),
        },
    };
    let write_file = |id: &str| {
        identity::write_id_file(state_dir, id).map_err(|e| StoreError::Open {
            dir: state_dir.to_path_buf(),
            source: DbError::io(e),
        })
    };
    let empty = db
        .tree_names()
        .iter()
        .all(|name| db.open_tree(name).is_ok_and(|t| t.is_empty()));
    let problem = match (&in_sled, &file) {
        (Some(s), IdFile::Id(f)) if s == f => None,
        (Some(s), IdFile::Id(f)) => Some(format!(
            "{}/{SLED_DIR} holds store {s}, but this state dir belongs to store {f} ({}): the store directory was replaced by another store's",
            state_dir.display(),
            identity::ID_FILE
        )),
        (Some(s), IdFile::Missing | IdFile::Unreadable) => {
            if mode == Mode::Run {
                if file == IdFile::Unreadable {
                    tracing::warn!(store = %s, file = identity::ID_FILE, "the store identity file was unreadable; rewritten from the store");
                }
                write_file(s)?;
            }
            None
        }
        (None, IdFile::Id(f)) => Some(format!(
            "sled opened {}/{SLED_DIR} {} the identity {f} that {} records: its files were damaged, deleted or replaced",
            state_dir.display(),
            if empty { "EMPTY, without" } else { "without" },
            identity::ID_FILE
        )),
        (None, IdFile::Unreadable) => Some(format!(
            "{} is unreadable and sled opened {}/{SLED_DIR} without an identity: its files were damaged",
            identity::ID_FILE,
            state_dir.display()
        )),
        (None, IdFile::Missing) => None,
    };
    if let Some(what) = problem {
        return match mode {
            Mode::Run => Err(StoreError::Refused {
                dir: state_dir.to_path_buf(),
                what,
            }),
            Mode::Inspect => Ok((in_sled.unwrap_or_default(), Some(what))),
        };
    }
    match in_sled {
        Some(id) => Ok((id, None)),
        None if mode == Mode::Inspect => Ok((String::new(), None)),
        None => {
            // A new store, or one from before identities: adopt one.
            let id = identity::new_id();
            data.insert(keys::meta(STORE_ID), id.as_bytes())?;
            db.flush()?;
            write_file(&id)?;
            Ok((id, None))
        }
    }
}

/// How long `open` waits for a lock that is being released (a store closed an instant ago in
/// this process: sled's I/O threads let go of the file shortly after the last handle).
pub(super) const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(1000);

/// sled's log segment for a new store. sled's default, 512 KiB, left up to 194 bytes on disk
/// per document after a baseline walk of 1,000 members (records: 27): a segment is cleaned
/// only once at most half of it is live, and a walk that rewrites each ~400-byte bucket some
/// fifteen times leaves its garbage spread thinly over large segments. Smaller segments
/// drain sooner (BENCHMARKS.md: the figures per size). Its quarter (32 KiB) is the largest
/// page sled keeps inline; a leaf of 16 buckets is ~7 KB.
const SEGMENT_BYTES: usize = 128 * 1024;

/// sled's segment size cannot change once a store exists: the one its `conf` file names.
const SLED_DEFAULT_SEGMENT: usize = 512 * 1024;

/// The settings every sled database of the store opens with: [`CACHE_BYTES`], no periodic
/// flush (commits flush), and the segment size — [`SEGMENT_BYTES`] for a new database, the
/// size it was created with for an existing one.
pub(super) fn config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_BYTES)
        .flush_every_ms(None)
        .segment_size(segment_size(path))
}

/// The segment size of the sled database at `path`: what its `conf` file says (sled writes
/// `segment_size: N` as its first line), [`SEGMENT_BYTES`] when there is none yet.
fn segment_size(path: &Path) -> usize {
    match std::fs::read(path.join("conf")) {
        Err(_) => SEGMENT_BYTES,
        Ok(conf) => conf
            .split(|b| *b == b'\n')
            .filter_map(|line| line.strip_prefix(b"segment_size: "))
            .find_map(|n| std::str::from_utf8(n).ok()?.trim().parse().ok())
            .unwrap_or(SLED_DEFAULT_SEGMENT),
    }
}

pub(super) fn open_db(path: &Path, state_dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        let result = config(path).open();
        match result {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked(state_dir.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e @ sled::Error::Corruption { .. }) => {
                return Err(StoreError::Refused {
                    dir: state_dir.to_path_buf(),
                    what: format!(
                        "sled cannot read {} ({e}): its files are damaged",
                        path.display()
                    ),
                })
            }
            Err(e) => {
                return Err(StoreError::Open {
                    dir: state_dir.to_path_buf(),
                    source: DbError(e),
                })
            }
        }
    }
}
