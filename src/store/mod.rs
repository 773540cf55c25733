//! The state store: the ONLY module that opens or touches sled. Nothing of sled leaves it:
//! reads return owned bytes, errors are [`StoreError`]s, and the store builds every key
//! itself from typed parts ([`Unit`] and a document id, a sink and a seq).
//!
//! Trees (see ARCHITECTURE.md for the byte layouts):
//! - `state`   — provider-encoded document records, keyed `account \0 unit \0 document`;
//! - `cursors` — provider-encoded per-unit progress (poll cursor, start, revocation), keyed
//!   `account \0 unit`;
//! - `outbox`  — big-endian seq -> `\0`, subject length (u16 BE), `account \0 subject` (the
//!   per-document ordering key), then the envelope line (the JSONL line, without newline);
//! - `ids`     — event id -> seq, so an id is never written to the outbox twice;
//! - `acks`    — sink name -> last delivered seq;
//! - `subjects` — legacy (schema 1): seq -> subject, for outbox entries written before the
//!   subject moved into the outbox value (a plain envelope line). Read, pruned, never written;
//! - `attempts` — `sink \0 seq` -> failed attempts so far and when the last one failed, so
//!   `max_attempts` holds across restarts;
//! - `dead`    — `sink \0 seq` -> a dead letter: attempts, last error, time, the envelope;
//! - `meta`    — schema version, next seq, the store's identity (`store_id`, also in
//!   `<state_dir>/store-id`: see [`identity`]), and the file tails a reset adopted;
//! - `connections` — provider-encoded records of members connected by `pollhook connect`
//!   (or whose refresh token the provider rotated), keyed `account \0 member`;
//! - `schedule` — the adaptive scheduler's record per member (rate estimate, next poll),
//!   keyed `account \0 member` ([`ScheduleRecord`], `schedule.rs`).
//!
//! [`Store::commit`] writes state, cursors and new events in ONE transaction, then flushes,
//! and only then tells sinks there is something new: commit-then-emit. A commit without
//! events (a member's progress, silent records) is flushed at most every `LAZY_FLUSH`:
//! losing it in a crash costs only a repeat of the same work, because the diff of the same
//! observations against the same older state again yields no event. Exactly one writer
//! commits at a time (an async mutex holds the next sequence number); readers are free.
//! No I/O happens inside a transaction closure (sled may run it again). Transactions and
//! flushes are serialized process-wide (see `SLED_WRITES`).
//!
//! sled 0.34 is beta software, so this module also defends it: a store has an identity and
//! refuses to run when sled opens something else ([`identity`]); sinks resume only from
//! positions this store wrote ([`Origin`]); [`verify`] checks every tree and cross-reference;
//! [`backup`] writes and restores a consistent, checksummed copy.
//!
//! # Layout
//! - this file: the [`Store`] handle, its errors, what is shared by the rest;
//! - `open`: open, inspect (for `verify`), reset; schema marks; the identity check;
//! - `keys`: every key layout ([`Unit`], sink records, seqs, connections);
//! - `commit`: [`Batch`], [`Store::commit`] (the one committer), [`CommitObserver`];
//! - `records`: the providers' records (documents, progress, connections), as bytes;
//! - `outbox`: reading events, subjects, acks, [`Origin`];
//! - `delivery`: attempt counts and dead letters per sink;
//! - `prune`: retention;
//! - [`identity`], [`verify`], [`backup`]: the defences against a beta database.

pub mod backup;
mod commit;
mod delivery;
pub mod identity;
mod keys;
mod open;
mod outbox;
mod prune;
mod records;
mod schedule;
pub mod verify;

pub use commit::{Batch, CommitObserver, Committed};
pub use delivery::{Attempts, DeadLetter};
pub use keys::Unit;
pub use outbox::Origin;
pub use prune::Pruned;
pub use schedule::ScheduleRecord;

use delivery::DeadRead;
use keys::{decode_seq, split_sink_key};
use open::{Mode, LOCK_GRACE};
use outbox::split_outbox_value;
use sled::Tree;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use tokio::sync::{watch, Mutex};

/// The store layout version this build reads and writes.
/// Schema 2: the subject lives in the outbox value (one insert less per event). A schema-1
/// store is read as is (plain lines, subjects in their own tree) and marked 2 on open.
pub const SCHEMA_VERSION: u32 = 2;

/// sled's page cache. Its default is 1 GiB; a poller needs little: the working set is one
/// member's documents at a time.
const CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// What went wrong with the store, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state dir {0} is in use by another pollhook process; stop it first (systemctl stop pollhook), or point this one at another state_dir")]
    Locked(PathBuf),
    #[error("cannot open the state store in {dir}: {source}; check that the directory exists and is writable by this user")]
    Open { dir: PathBuf, source: DbError },
    #[error("the state dir {dir} was written by a newer pollhook (store schema {found}, this build reads {SCHEMA_VERSION}); upgrade pollhook or use a fresh state_dir")]
    Newer { dir: PathBuf, found: u32 },
    #[error("state store write failed: {0} (disk full or read-only? nothing was acknowledged; the daemon retries)")]
    Write(DbError),
    #[error(
        "the state store holds an unreadable value under {0}; was it written by another program?"
    )]
    Corrupt(String),
    #[error("the state store in {dir} is damaged or was replaced: {what}. Nothing was polled or delivered.\nhelp: restore a backup with `pollhook store restore FILE --config <your config>`, or start over on purpose with `pollhook store reset --config <your config> --yes` (it keeps the old files aside); `pollhook store verify --config <your config>` shows what is there")]
    Refused { dir: PathBuf, what: String },
    #[error("writing the backup failed: {0} (is there room for a copy of the store?)")]
    Backup(std::io::Error),
}

/// An error of the embedded database, opaque outside this module (nothing else names sled).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DbError(sled::Error);

impl DbError {
    /// An I/O error met while opening or writing the store's files.
    pub(super) fn io(e: std::io::Error) -> DbError {
        DbError(sled::Error::Io(e))
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Write(DbError(e))
    }
}

/// sled's directory inside the state dir.
pub const SLED_DIR: &str = "store";

/// The open store. Share it as `Arc<Store>`.
pub struct Store {
    dir: PathBuf,
    /// This store's identity (see [`identity`]).
    id: String,
    db: sled::Db,
    state: Tree,
    cursors: Tree,
    outbox: Tree,
    ids: Tree,
    acks: Tree,
    subjects: Tree,
    attempts: Tree,
    dead: Tree,
    meta: Tree,
    connections: Tree,
    /// Told of every commit's new events ([`Store::report_to`]).
    observer: std::sync::RwLock<Option<std::sync::Arc<dyn CommitObserver>>>,
    /// The next sequence number; holding the lock makes the holder the only committer.
    next_seq: Mutex<u64>,
    /// The greatest seq that is committed and flushed.
    durable: AtomicU64,
    /// When the last commit flushed (ms since the epoch).
    last_flush: std::sync::Arc<AtomicU64>,
    notify: watch::Sender<u64>,
    /// The state dir lock (dropped last; `None` while `store restore` holds it itself).
    _lock: Option<identity::DirLock>,
}

const NEXT_SEQ: &[u8] = b"next_seq";
/// `meta` key of the store's identity.
const STORE_ID: &[u8] = b"store_id";
/// `meta` key prefix of a file tail adopted at a reset: `adopted \0 event id` -> seq.
const ADOPTED: &[u8] = b"adopted\0";

const SCHEMA: &[u8] = b"schema_version";

/// Serializes sled transactions and flushes across the whole process.
///
/// sled 0.34 guards transactions with a process-global reader-writer lock, and `flush_async`
/// waits for log stability on sled's small internal thread pool. With several commits and
/// flushes in flight (several members, or several stores in one test process) every pool
/// thread ended up waiting for a write that needed a pool thread: a deadlock, reproduced in
/// this crate's tests. One transaction-then-flush at a time, flushed synchronously on a
/// blocking thread, cannot starve that pool. sled's own background flusher is off for the same
/// reason: every commit flushes, and sinks flush their acks (see `sinks::drain`). Commits are batched, so this costs one fsync per
/// chunk of documents, which is the cost of durability anyway.
static SLED_WRITES: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Store {
    /// This store's identity.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What a sink needs to tell this store's events from another store's.
    pub fn origin(&self) -> Origin {
        Origin {
            ids: self.ids.clone(),
            meta: self.meta.clone(),
        }
    }

    /// The state dir this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes everything written so far (acks included).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let _serial = SLED_WRITES.lock().unwrap_or_else(|p| p.into_inner());
            db.flush().map(|_| ())
        })
        .await
        .expect("the flush task panicked")?;
        Ok(())
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
pub(crate) mod tests;
