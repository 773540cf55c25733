//! The state store: the ONLY module that opens or touches sled. Nothing of sled leaves it:
//! reads return owned bytes, errors are [`StoreError`]s, and the store builds every key
//! itself from typed parts ([`Unit`] and a document id, a sink and a seq).
//!
//! Trees (schema 3; ARCHITECTURE.md has the byte layouts):
//! - `data` — everything a commit writes, under one-byte key prefixes (`keys.rs`): meta
//!   (schema, next seq, identity, the bucket hash key), interned account and unit numbers
//!   (`names.rs`), each unit's progress record, the documents' provider records in buckets
//!   of ~15 (`bucket.rs`), the outbox as compressed groups of consecutive events
//!   (`group.rs`), and the event-id index in buckets (`idset.rs`);
//! - `acks`    — sink name -> last delivered seq;
//! - `attempts` — `sink \0 seq` -> failed attempts so far and when the last one failed, so
//!   `max_attempts` holds across restarts;
//! - `dead`    — `sink \0 seq` -> a dead letter: attempts, last error, time, the envelope;
//! - `connections` — provider-encoded records of members connected by `pollhook connect`
//!   (or whose refresh token the provider rotated), keyed `account \0 member`;
//! - `schedule` — the adaptive scheduler's record per member (rate estimate, next poll),
//!   keyed `account \0 member` ([`ScheduleRecord`], `schedule.rs`).
//!
//! [`Store::commit`] writes documents, progress and new events as ONE atomic batch of the
//! `data` tree, then flushes, and only then tells sinks there is something new:
//! commit-then-emit. A commit without events (a member's progress, silent records) is flushed
//! at most every `LAZY_FLUSH`: losing it in a crash costs only a repeat of the same work,
//! because the diff of the same observations against the same older state again yields no
//! event. Exactly one writer commits at a time (an async mutex holds the next sequence
//! number), so what a commit reads before its batch (buckets to merge, ids already taken) no
//! other writer changes; readers are free. Batches and flushes are serialized process-wide
//! (see `SLED_WRITES`).
//!
//! sled 0.34 is beta software, so this module also defends it: a store has an identity and
//! refuses to run when sled opens something else ([`identity`]); sinks resume only from
//! positions this store wrote ([`Origin`]); [`verify`] checks every tree and cross-reference;
//! [`backup`] writes and restores a consistent, checksummed copy. A schema-2 store (or
//! backup) is migrated on open into a new directory and swapped in ([`migrate`]).
//!
//! # Layout
//! - this file: the [`Store`] handle, its errors, what is shared by the rest;
//! - `open`: open, inspect (for `verify`), reset; schema marks; the identity check;
//! - `keys`: every key layout ([`Unit`], the `data` prefixes, sink records, seqs);
//! - `codec`, `bucket`, `idset`, `group`, `names`: the schema-3 encodings, pure;
//! - `commit`: [`Batch`], [`Store::commit`] (the one committer), [`CommitObserver`];
//! - `records`: the providers' records (documents, progress, connections), as bytes;
//! - `outbox`: reading events, subjects, acks, [`Origin`];
//! - `delivery`: attempt counts and dead letters per sink;
//! - `prune`: retention;
//! - [`migrate`]: schema 2 -> 3, crash-safe;
//! - [`identity`], [`verify`], [`backup`]: the defences against a beta database.

pub mod backup;
mod bucket;
mod codec;
mod commit;
mod delivery;
mod group;
pub mod identity;
mod idset;
mod keys;
pub mod migrate;
mod names;
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
use sled::Tree;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use tokio::sync::{watch, Mutex};

/// The store layout version this build reads and writes.
/// Schema 3: one `data` tree (documents in buckets, outbox in compressed groups, ids in
/// buckets, interned names); one atomic batch per commit. Schemas 1 and 2 are migrated on
/// open ([`migrate`]).
pub const SCHEMA_VERSION: u32 = 3;

/// sled's page cache. Its default is 1 GiB; a poller needs little: the working set is one
/// chunk of documents at a time. Schema 3 keeps ~16x fewer pages resident than schema 2
/// (documents in buckets), which pays for a larger cache than schema 2's 4 MiB
/// (BENCHMARKS.md: the figures per cache size).
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

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
    #[error("the store in {dir} is schema {found}, from an older pollhook; start pollhook once (`pollhook once` or the service) to migrate it to schema {SCHEMA_VERSION}, then run this again")]
    Legacy { dir: PathBuf, found: u32 },
    #[error("not enough free space in {dir} to migrate the store to schema {SCHEMA_VERSION}: it needs up to {need} bytes for the new store beside the old one, {free} are free; free some space (the old store is kept aside after the migration and can be deleted then)")]
    NoRoom { dir: PathBuf, need: u64, free: u64 },
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
/// The tree everything a commit writes lives in (schema 3).
const DATA: &str = "data";

/// The open store. Share it as `Arc<Store>`.
pub struct Store {
    dir: PathBuf,
    /// This store's identity (see [`identity`]).
    id: String,
    db: sled::Db,
    /// Everything a commit writes (see `keys.rs`).
    data: Tree,
    acks: Tree,
    attempts: Tree,
    dead: Tree,
    connections: Tree,
    /// Which bucket a document id goes to.
    hashing: bucket::Hashing,
    /// Interned account and unit numbers.
    names: std::sync::RwLock<names::Names>,
    /// The outbox group read last (sinks read one event's subject at a time).
    last_group: std::sync::Mutex<Option<(u64, std::sync::Arc<group::Group>)>>,
    /// Told of every commit's new events ([`Store::report_to`]).
    observer: std::sync::RwLock<Option<std::sync::Arc<dyn CommitObserver>>>,
    /// The next sequence number; holding the lock makes the holder the only committer.
    next_seq: Mutex<u64>,
    /// The greatest seq that is committed and flushed.
    durable: AtomicU64,
    /// When the last commit flushed (ms since the epoch).
    last_flush: std::sync::Arc<AtomicU64>,
    /// Documents committed since memory was last handed back (see [`Store::trim_memory`]).
    written_since_trim: AtomicU64,
    notify: watch::Sender<u64>,
    /// The state dir lock (dropped last; `None` while `store restore` holds it itself).
    _lock: Option<identity::DirLock>,
}

/// Meta names (`m` keys of the `data` tree; schema 2 used the same names in its `meta` tree).
const NEXT_SEQ: &[u8] = b"next_seq";
/// The store's identity.
const STORE_ID: &[u8] = b"store_id";
/// A file tail adopted at a reset: `adopted \0 event id` -> seq.
const ADOPTED: &[u8] = b"adopted\0";
const SCHEMA: &[u8] = b"schema_version";
/// The 16-byte SipHash key of the document buckets, random per store.
const HASH_KEY: &[u8] = b"hash_key";

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
            data: self.data.clone(),
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

    /// Hands freed heap memory back to the operating system when commits since the last call
    /// wrote more than a few chunks (the end of a busy cycle): a burst's buffers are freed by
    /// then, and glibc would keep their pages. Cheap when there is nothing to give back.
    pub fn trim_memory(&self) {
        const BUSY: u64 = 4096;
        if self
            .written_since_trim
            .swap(0, std::sync::atomic::Ordering::Relaxed)
            >= BUSY
        {
            crate::memory::trim();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
