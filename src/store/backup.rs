//! Backups of the store: a consistent, self-describing, checksummed copy, and its restore.
//!
//! The format (version 1), in one file:
//! - the line `pollhook-store-backup`;
//! - a JSON [`Header`] line: format, store identity, schema, when, the last seq it holds;
//! - records: `1, name length (u16 BE), name` opens a tree; `2, key length (u32 BE), key,
//!   value length (u32 BE), value` is one entry of the open tree;
//! - the end: `0, entry count (u64 BE)`, then the SHA-256 of every byte before it. Nothing
//!   may follow.
//!
//! [`Store::backup`] writes it under the commit lock (no commit can interleave, so outbox,
//! `ids`, state, cursors and `next_seq` agree; acks never pass a committed seq), through the
//! running daemon too (`admin` streams it). [`Staged::load`] reads a backup into a staging
//! directory beside the store, checking everything before anything is replaced;
//! [`Staged::import`] carries forward events that sinks already hold beyond the backup (read
//! from their files by the caller), and [`Staged::install`] moves the current store aside and
//! puts the restored one in its place.

use super::group::{self, Item};
use super::identity::{self, DirLock};
use super::idset::{self, Rest};
use super::{codec, keys, migrate, DbError, DATA};
use super::{
    decode_seq, Mode, Origin, Store, StoreError, NEXT_SEQ, SCHEMA_VERSION, SLED_DIR, STORE_ID,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The first line of every backup.
const MAGIC: &[u8] = b"pollhook-store-backup\n";
/// The format this build writes and reads.
pub const FORMAT: u32 = 1;
/// Every tree of the store (schema 3), in the order a backup holds them.
pub const TREES: [&str; 5] = [DATA, "acks", "attempts", "dead", "connections"];

/// The trees a backup of `schema` may hold.
fn trees_of(schema: u32) -> &'static [&'static str] {
    if schema >= 3 {
        &TREES
    } else {
        &migrate::LEGACY_TREES
    }
}
const TREE: u8 = 1;
const ENTRY: u8 = 2;
const END: u8 = 0;
/// The staging directory of a restore, beside sled's.
const STAGING: &str = "store.restoring";
/// Where a backup from before schema 3 is read before it is migrated into [`STAGING`].
const STAGING_LEGACY: &str = "store.restoring-legacy";

/// What a backup says about itself (its second line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// The identity of the store it is a copy of.
    pub store_id: String,
    pub schema: u32,
    /// When it was taken (RFC 3339).
    pub created_at: String,
    /// The greatest seq the store had assigned (0: none).
    pub last_seq: u64,
    /// The pollhook version that wrote it.
    pub pollhook: String,
}

/// What a backup holds, once read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub header: Header,
    pub entries: u64,
    pub bytes: u64,
}

/// Why a backup cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read the backup {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a pollhook store backup (it does not start with `pollhook-store-backup`)")]
    NotABackup(PathBuf),
    #[error("{path} is a backup of format {format}, written by a newer pollhook ({by}); this build reads format {FORMAT}: use that version to restore it")]
    Newer {
        path: PathBuf,
        format: u32,
        by: String,
    },
    #[error("{path} is damaged: {what}; nothing was restored (use another backup)")]
    Damaged { path: PathBuf, what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A writer that hashes what it writes.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what it reads.
struct Hashed<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl Store {
    /// Writes a backup of the whole store to `file` and fsyncs it; returns the file and what
    /// it holds. Holds the commit lock meanwhile (commits wait; sinks and readers do not).
    pub async fn backup(&self, file: File) -> Result<(File, Summary), StoreError> {
        let next = self.next_seq.lock().await;
        let header = Header {
            format: FORMAT,
            store_id: self.id.clone(),
            schema: SCHEMA_VERSION,
            created_at: crate::time::format_ms(crate::time::now_ms()),
            last_seq: *next - 1,
            pollhook: env!("CARGO_PKG_VERSION").to_string(),
        };
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || write_backup(&db, header, file))
            .await
            .expect("the backup task panicked");
        drop(next);
        result.map_err(StoreError::Backup)
    }
}

fn write_backup(db: &sled::Db, header: Header, file: File) -> std::io::Result<(File, Summary)> {
    let mut w = Hashing {
        inner: BufWriter::with_capacity(256 * 1024, file),
        hash: Sha256::new(),
        bytes: 0,
    };
    w.write_all(MAGIC)?;
    serde_json::to_writer(&mut w, &header)?;
    w.write_all(b"\n")?;
    let mut entries = 0u64;
    for name in TREES {
        let tree = db.open_tree(name).map_err(std::io::Error::other)?;
        w.write_all(&[TREE])?;
        w.write_all(&(name.len() as u16).to_be_bytes())?;
        w.write_all(name.as_bytes())?;
        for kv in tree.iter() {
            let (k, v) = kv.map_err(std::io::Error::other)?;
            w.write_all(&[ENTRY])?;
            w.write_all(&(k.len() as u32).to_be_bytes())?;
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_be_bytes())?;
            w.write_all(&v)?;
            entries += 1;
        }
    }
    w.write_all(&[END])?;
    w.write_all(&entries.to_be_bytes())?;
    let digest = w.hash.clone().finalize();
    w.inner.write_all(&digest)?;
    let bytes = w.bytes + digest.len() as u64;
    let file = w.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((
        file,
        Summary {
            header,
            entries,
            bytes,
        },
    ))
}

/// Reads a backup from start to end, checking its format and checksum, and hands each entry
/// to `entry(tree, key, value)`. Nothing is trusted before the checksum matched, so callers
/// write entries only somewhere they can throw away.
fn read_backup(
    path: &Path,
    mut entry: impl FnMut(&str, Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<Summary, BackupError> {
    let io = |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    };
    let damaged = |what: &str| BackupError::Damaged {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    let file = File::open(path).map_err(io)?;
    let mut r = Hashed {
        inner: BufReader::with_capacity(256 * 1024, file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut magic = [0u8; MAGIC.len()];
    if r.read_exact(&mut magic).is_err() || magic != MAGIC {
        return Err(BackupError::NotABackup(path.to_path_buf()));
    }
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)
            .map_err(|_| damaged("it ends in its header"))?;
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 64 * 1024 {
            return Err(damaged("its header line is too long"));
        }
    }
    let header: Header = match serde_json::from_slice::<serde_json::Value>(&line) {
        Ok(v) => {
            let format = v["format"].as_u64().unwrap_or(0) as u32;
            if format > FORMAT {
                return Err(BackupError::Newer {
                    path: path.to_path_buf(),
                    format,
                    by: v["pollhook"].as_str().unwrap_or("?").to_string(),
                });
            }
            serde_json::from_value(v).map_err(|e| damaged(&format!("its header: {e}")))?
        }
        Err(e) => return Err(damaged(&format!("its header is not JSON: {e}"))),
    };
    if header.schema > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            dir: path.to_path_buf(),
            found: header.schema,
        }
        .into());
    }
    let truncated = || damaged("it ends early (truncated?)");
    let mut tree: Option<String> = None;
    let mut entries = 0u64;
    let read_len = |r: &mut Hashed<BufReader<File>>, n: usize| -> Option<Vec<u8>> {
        let mut b = vec![0u8; n];
        r.read_exact(&mut b).ok().map(|_| b)
    };
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(|_| truncated())?;
        match tag[0] {
            TREE => {
                let n = read_len(&mut r, 2).ok_or_else(truncated)?;
                let n = u16::from_be_bytes([n[0], n[1]]) as usize;
                let name = read_len(&mut r, n).ok_or_else(truncated)?;
                let name = String::from_utf8(name).map_err(|_| damaged("a tree name"))?;
                if !trees_of(header.schema).contains(&name.as_str()) {
                    return Err(damaged(&format!("it holds an unknown tree {name:?}")));
                }
                tree = Some(name);
            }
            ENTRY => {
                let Some(t) = &tree else {
                    return Err(damaged("an entry before any tree"));
                };
                let mut kv = [Vec::new(), Vec::new()];
                for part in &mut kv {
                    let n = read_len(&mut r, 4).ok_or_else(truncated)?;
                    let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize;
                    if n > 1 << 30 {
                        return Err(damaged("an entry claims more than 1 GiB"));
                    }
                    *part = read_len(&mut r, n).ok_or_else(truncated)?;
                }
                let [k, v] = kv;
                entry(t, k, v)?;
                entries += 1;
            }
            END => {
                let n = read_len(&mut r, 8).ok_or_else(truncated)?;
                let count = u64::from_be_bytes(n.try_into().expect("8 bytes"));
                let expected = r.hash.clone().finalize();
                let mut digest = [0u8; 32];
                r.inner.read_exact(&mut digest).map_err(|_| truncated())?;
                if digest[..] != expected[..] {
                    return Err(damaged("its checksum does not match its content"));
                }
                if count != entries {
                    return Err(damaged("its entry count does not match"));
                }
                let mut rest = [0u8; 1];
                if r.inner.read(&mut rest).map_err(io)? != 0 {
                    return Err(damaged("something follows its end"));
                }
                return Ok(Summary {
                    header,
                    entries,
                    bytes: r.bytes + 32,
                });
            }
            _ => return Err(damaged("an unknown record")),
        }
    }
}

/// Reads and checks a whole backup without restoring it.
pub fn check_file(path: &Path) -> Result<Summary, BackupError> {
    read_backup(path, |_, _, _| Ok(()))
}

/// What the state dir holds before a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// No store.
    Missing,
    /// A store that `Store::open` refuses (or cannot open): why.
    Refused(String),
    /// A sound store: its identity, last seq and per-sink acks.
    Sound {
        id: String,
        last_seq: u64,
        acks: Vec<(String, u64)>,
    },
}

/// An event a sink already holds beyond the backup, carried into the restored store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub seq: u64,
    pub id: String,
    /// The envelope line, as the sink holds it.
    pub line: Vec<u8>,
}

/// A backup read into a staging directory, with the state dir locked; dropped without
/// [`Staged::install`], it is removed and nothing has changed.
pub struct Staged {
    state_dir: PathBuf,
    staging: PathBuf,
    db: Option<sled::Db>,
    pub summary: Summary,
    current: Current,
    _lock: DirLock,
}

impl Staged {
    /// Locks `state_dir` (the daemon must be stopped), reads what it holds now, and reads
    /// `backup` into `<state_dir>/store.restoring`, checking it whole.
    pub fn load(state_dir: &Path, backup: &Path) -> Result<Staged, BackupError> {
        let io = |e: std::io::Error| {
            BackupError::Store(StoreError::Open {
                dir: state_dir.to_path_buf(),
                source: DbError::io(e),
            })
        };
        // Check the file before touching the state dir.
        let checked = check_file(backup)?;
        crate::files::private_dir(state_dir).map_err(io)?;
        let lock = DirLock::acquire(state_dir)?;
        let current = current(state_dir);
        let staging = state_dir.join(STAGING);
        let legacy = checked.header.schema < 3;
        // A backup from before schema 3 is read as it is, then migrated into the staging dir.
        let raw = if legacy {
            state_dir.join(STAGING_LEGACY)
        } else {
            staging.clone()
        };
        for dir in [&staging, &raw] {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(io)?;
            }
        }
        let db = migrate::new_db(&raw)?;
        let mut staged = Staged {
            state_dir: state_dir.to_path_buf(),
            staging,
            db: None,
            summary: checked,
            current,
            _lock: lock,
        };
        let mut batch: Option<(String, sled::Batch, usize)> = None;
        let flush = |b: Option<(String, sled::Batch, usize)>| -> Result<(), StoreError> {
            if let Some((name, batch, _)) = b {
                db.open_tree(name)?.apply_batch(batch)?;
            }
            Ok(())
        };
        let loaded = read_backup(backup, |tree, k, v| {
            if batch
                .as_ref()
                .is_some_and(|(t, _, n)| t != tree || *n >= 10_000)
            {
                flush(batch.take())?;
            }
            let (_, b, n) =
                batch.get_or_insert_with(|| (tree.to_string(), sled::Batch::default(), 0));
            b.insert(k, v);
            *n += 1;
            Ok(())
        });
        let result = loaded.and_then(|summary| {
            flush(batch.take())?;
            db.flush().map_err(StoreError::from)?;
            Ok(summary)
        });
        let summary = match result {
            Ok(s) => s,
            Err(e) => {
                drop(db);
                let _ = std::fs::remove_dir_all(&raw);
                return Err(e);
            }
        };
        let db = if legacy {
            let converted = (|| {
                let new = migrate::new_db(&staged.staging)?;
                migrate::convert(&db, &new)?;
                new.flush()?;
                Ok::<_, StoreError>(new)
            })();
            drop(db);
            let _ = std::fs::remove_dir_all(&raw);
            converted?
        } else {
            db
        };
        staged.summary = summary;
        staged.db = Some(db);
        Ok(staged)
    }

    /// What the state dir holds now.
    pub fn current(&self) -> &Current {
        &self.current
    }

    /// Tells the backup's events from others (for the sinks' files).
    pub fn origin(&self) -> Result<Origin, StoreError> {
        let db = self.db.as_ref().expect("loaded");
        Ok(Origin {
            data: db.open_tree(DATA)?,
        })
    }

    /// Carries events that sinks hold beyond the backup into the restored store: each goes
    /// into the outbox (without subject: such events share one ordering key) and into the id
    /// index, so polling that re-detects the change finds its id taken and emits nothing
    /// again. The next seq moves past them.
    pub fn import(&self, events: &[Carried]) -> Result<(), StoreError> {
        let Some(max) = events.iter().map(|e| e.seq).max() else {
            return Ok(());
        };
        let db = self.db.as_ref().expect("loaded");
        let data = db.open_tree(DATA)?;
        let mut sorted: Vec<&Carried> = events.iter().collect();
        sorted.sort_by_key(|e| e.seq);
        let mut writes = sled::Batch::default();
        // Runs of consecutive seqs, each written as groups.
        let mut start = 0;
        for i in 1..=sorted.len() {
            if i == sorted.len() || sorted[i].seq != sorted[i - 1].seq + 1 {
                let run = &sorted[start..i];
                let items: Vec<Item> = run
                    .iter()
                    .map(|e| Item {
                        subject: b"",
                        line: &e.line,
                    })
                    .collect();
                for r in group::boundaries(&items) {
                    writes.insert(&keys::outbox(run[r.start].seq), group::encode(&items[r]));
                }
                start = i;
            }
        }
        let mut buckets: std::collections::BTreeMap<[u8; idset::HEAD], Vec<(Rest, u64)>> =
            Default::default();
        for e in &sorted {
            match codec::event_id_bytes(&e.id) {
                Some(b) => {
                    let (head, rest) = idset::split(&b);
                    buckets.entry(head).or_default().push((rest, e.seq));
                }
                None => {
                    let mut v = Vec::new();
                    codec::put_uvarint(&mut v, e.seq);
                    writes.insert(keys::text_id(&e.id), v);
                }
            }
        }
        for (head, mut new) in buckets {
            let key = keys::id_bucket(head);
            let old = data.get(&key)?;
            let v = idset::merge(old.as_deref(), &mut new)
                .map_err(|_| StoreError::Corrupt(format!("event id bucket {head:02x?}")))?;
            writes.insert(key, v);
        }
        let next = match data.get(keys::meta(NEXT_SEQ))? {
            Some(v) => decode_seq(&v)?,
            None => 1,
        };
        writes.insert(keys::meta(NEXT_SEQ), &next.max(max + 1).to_be_bytes());
        data.apply_batch(writes)?;
        db.flush()?;
        Ok(())
    }

    /// Moves the current store aside (into `<state_dir>/replaced-<time>/`) and puts the
    /// restored one in its place, with its identity. Returns where the old one went.
    pub fn install(mut self) -> Result<Option<PathBuf>, StoreError> {
        let io = |e: std::io::Error| StoreError::Open {
            dir: self.state_dir.clone(),
            source: DbError::io(e),
        };
        let db = self.db.take().expect("loaded");
        let id = db
            .open_tree(DATA)?
            .get(keys::meta(STORE_ID))?
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .filter(|id| identity::valid_id(id));
        db.flush()?;
        drop(db);
        let aside = identity::move_aside(&self.state_dir, "replaced").map_err(io)?;
        std::fs::rename(&self.staging, self.state_dir.join(SLED_DIR)).map_err(io)?;
        if let Some(id) = id {
            identity::write_id_file(&self.state_dir, &id).map_err(io)?;
        }
        crate::files::sync_parent(&self.state_dir.join(SLED_DIR)).map_err(io)?;
        Ok(aside)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.db.take().is_some() {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// What `state_dir` holds, read without changing it (the caller holds the lock).
fn current(state_dir: &Path) -> Current {
    let sled_dir = state_dir.join(SLED_DIR);
    if !sled_dir.exists() {
        return match identity::read_id_file(state_dir) {
            identity::IdFile::Missing => Current::Missing,
            _ => Current::Refused(format!(
                "{} is missing but {} names a store",
                sled_dir.display(),
                identity::ID_FILE
            )),
        };
    }
    match Store::open_locked(state_dir, None, Mode::Inspect) {
        Err(StoreError::Legacy { .. }) => match migrate::legacy_summary(state_dir) {
            Ok((id, last_seq, acks)) => Current::Sound { id, last_seq, acks },
            Err(e) => Current::Refused(e.to_string()),
        },
        Err(e) => Current::Refused(e.to_string()),
        Ok((_, Some(problem))) => Current::Refused(problem),
        Ok((store, None)) => {
            let mut acks = Vec::new();
            for (k, v) in store.acks.iter().flatten() {
                if let Ok(seq) = decode_seq(&v) {
                    acks.push((String::from_utf8_lossy(&k).into_owned(), seq));
                }
            }
            Current::Sound {
                id: store.id.clone(),
                last_seq: store.last_seq(),
                acks,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::ev;
    use crate::store::Batch;

    async fn store_with_events(dir: &Path, n: u32) -> Store {
        let s = Store::open(dir).unwrap();
        s.commit(crate::store::tests::with_records((1..=n).map(ev).collect()))
            .await
            .unwrap();
        s.ack("j", n as u64).unwrap();
        s
    }

    fn backup_file(dir: &Path) -> File {
        std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(dir.join("b"))
            .unwrap()
    }

    #[tokio::test]
    async fn a_backup_restores_every_tree_and_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let s = store_with_events(&state, 3).await;
        let id = s.id().to_string();
        let (_, summary) = s.backup(backup_file(dir.path())).await.unwrap();
        assert_eq!(summary.header.last_seq, 3);
        assert_eq!(summary.header.store_id, id);
        assert_eq!(check_file(&dir.path().join("b")).unwrap(), summary);
        // More happens after the backup; then the store is lost.
        s.commit(Batch {
            events: vec![ev(4)],
            ..Batch::default()
        })
        .await
        .unwrap();
        drop(s);
        std::fs::remove_dir_all(&state).unwrap();

        let staged = Staged::load(&state, &dir.path().join("b")).unwrap();
        assert_eq!(staged.current(), &Current::Missing);
        assert!(staged.origin().unwrap().wrote(&ev(3).id, 3).unwrap());
        assert_eq!(staged.install().unwrap(), None);
        let s = Store::open(&state).unwrap();
        assert_eq!(s.id(), id);
        assert_eq!(s.last_seq(), 3);
        assert_eq!(s.acked("j").unwrap(), 3);
        assert_eq!(
            s.get_state(crate::store::Unit::new("a", "m"), "d1")
                .unwrap()
                .unwrap()
                .as_slice(),
            b"rec"
        );
        assert_eq!(s.read_outbox(0, 10).unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_damaged_backup_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let s = store_with_events(&state, 2).await;
        s.backup(backup_file(dir.path())).await.unwrap();
        drop(s);
        let good = std::fs::read(dir.path().join("b")).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 40].to_vec(), "truncated"),
            (
                {
                    let mut b = good.clone();
                    let i = b.len() / 2;
                    b[i] ^= 0x55;
                    b
                },
                "damaged",
            ),
            (
                b"{\"not\":\"a backup\"}".to_vec(),
                "not a pollhook store backup",
            ),
            (
                [good.clone(), b"x".to_vec()].concat(),
                "something follows its end",
            ),
        ];
        for (bytes, want) in cases {
            let bad = dir.path().join("bad");
            std::fs::write(&bad, bytes).unwrap();
            let e = Staged::load(&state, &bad).err().expect(want).to_string();
            assert!(e.contains(want), "{want}: {e}");
            let s = Store::open(&state).unwrap();
            assert_eq!(s.last_seq(), 2, "the store was changed");
            drop(s);
        }
    }

    #[tokio::test]
    async fn carried_events_take_their_ids_and_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let s = store_with_events(&state, 2).await;
        s.backup(backup_file(dir.path())).await.unwrap();
        drop(s);
        let staged = Staged::load(&state, &dir.path().join("b")).unwrap();
        assert!(matches!(
            staged.current(),
            Current::Sound { last_seq: 2, .. }
        ));
        staged
            .import(&[Carried {
                seq: 5,
                id: ev(5).id,
                line: ev(5).to_line(5),
            }])
            .unwrap();
        staged
            .install()
            .unwrap()
            .expect("the old store is kept aside");
        let s = Store::open(&state).unwrap();
        assert_eq!(s.last_seq(), 5);
        assert_eq!(s.seq_of(&ev(5).id).unwrap(), Some(5));
        let c = s
            .commit(Batch {
                events: vec![ev(5), ev(6)],
                ..Batch::default()
            })
            .await
            .unwrap();
        assert_eq!(c.duplicates, 1, "a carried event is not emitted again");
        assert_eq!(s.read_outbox(5, 10).unwrap()[0].seq, 6);
    }
}
