//! The state store: the ONLY module that opens or touches sled.
//!
//! Trees (see ARCHITECTURE.md for the byte layouts):
//! - `state`   — provider-encoded document records, keyed `account \0 member \0 document`;
//! - `cursors` — provider-encoded per-member progress (poll cursor, start, revocation);
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
//!   (or whose refresh token the provider rotated), keyed `account \0 member`.
//!
//! [`Store::commit`] writes state, cursors and new events in ONE transaction, then flushes,
//! and only then tells sinks there is something new: commit-then-emit. A commit without
//! events (a member's progress, silent records) is flushed at most every [`LAZY_FLUSH`]:
//! losing it in a crash costs only a repeat of the same work, because the diff of the same
//! observations against the same older state again yields no event. Exactly one writer
//! commits at a time (an async mutex holds the next sequence number); readers are free.
//! No I/O happens inside a transaction closure (sled may run it again). Transactions and
//! flushes are serialized process-wide (see [`SLED_WRITES`]).
//!
//! sled 0.34 is beta software, so this module also defends it: a store has an identity and
//! refuses to run when sled opens something else ([`identity`]); sinks resume only from
//! positions this store wrote ([`Origin`]); [`verify`] checks every tree and cross-reference;
//! [`backup`] writes and restores a consistent, checksummed copy.

pub mod backup;
pub mod identity;
pub mod verify;

use crate::event::{NewEvent, StoredEvent};
use crate::time::{parse_timestamp, Millis};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{IVec, Tree};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    Open { dir: PathBuf, source: sled::Error },
    #[error("the state dir {dir} was written by a newer pollhook (store schema {found}, this build reads {SCHEMA_VERSION}); upgrade pollhook or use a fresh state_dir")]
    Newer { dir: PathBuf, found: u32 },
    #[error("state store write failed: {0} (disk full or read-only? nothing was acknowledged; the daemon retries)")]
    Write(sled::Error),
    #[error(
        "the state store holds an unreadable value under {0}; was it written by another program?"
    )]
    Corrupt(String),
    #[error("the state store in {dir} is damaged or was replaced: {what}. Nothing was polled or delivered.\nhelp: restore a backup with `pollhook store restore FILE --config <your config>`, or start over on purpose with `pollhook store reset --config <your config> --yes` (it keeps the old files aside); `pollhook store verify --config <your config>` shows what is there")]
    Refused { dir: PathBuf, what: String },
    #[error("writing the backup failed: {0} (is there room for a copy of the store?)")]
    Backup(std::io::Error),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Write(e)
    }
}

/// Everything one commit writes, atomically.
#[derive(Debug, Default)]
pub struct Batch {
    /// Document records: key -> provider-encoded value.
    pub state: Vec<(Vec<u8>, Vec<u8>)>,
    /// Member progress records: key -> provider-encoded value.
    pub cursors: Vec<(Vec<u8>, Vec<u8>)>,
    /// New events, in the order they happened.
    pub events: Vec<NewEvent>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.state.is_empty() && self.cursors.is_empty() && self.events.is_empty()
    }
}

/// What a commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Events appended to the outbox.
    pub events: usize,
    /// Events dropped because their id was already in the outbox.
    pub duplicates: usize,
}

/// Told of the events each commit appended (the daemon's metrics count them by type): the
/// store reports what it wrote and keeps no counters of its own.
pub trait CommitObserver: Send + Sync {
    /// `types`: the event type of each event appended to the outbox, in commit order.
    fn committed(&self, types: &[&str]);
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
const SCHEMA: &[u8] = b"schema_version";

/// The longest an event-less commit waits for its flush (see the module docs).
const LAZY_FLUSH: i64 = 1000;

fn lazy_flush_due(last_flush: &AtomicU64) -> bool {
    crate::time::now_ms() - last_flush.load(Ordering::SeqCst) as i64 >= LAZY_FLUSH
}

impl Store {
    /// Opens (creating if needed) the store under `state_dir`. Refuses a store that sled
    /// opened without the identity `<state_dir>/store-id` names ([`StoreError::Refused`]).
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        crate::files::private_dir(state_dir).map_err(|e| StoreError::Open {
            dir: state_dir.to_path_buf(),
            source: sled::Error::Io(e),
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

    fn open_locked(
        state_dir: &Path,
        lock: Option<identity::DirLock>,
        mode: Mode,
    ) -> Result<(Store, Option<String>), StoreError> {
        let id_file = identity::read_id_file(state_dir);
        let path = state_dir.join(SLED_DIR);
        let db = open_db(&path, state_dir)?;
        // The store holds refresh tokens (`connections`): its files are the pollhook user's only.
        crate::files::make_private(&path);
        release_freed_memory();
        let tree = |name: &str| db.open_tree(name);
        let store_meta = tree("meta")?;
        let outbox = tree("outbox")?;
        let (id, problem) = reconcile_identity(state_dir, &db, &store_meta, id_file, mode)?;
        match store_meta.get(SCHEMA)? {
            None if mode == Mode::Inspect => {}
            None => {
                store_meta.insert(SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
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
                if found < SCHEMA_VERSION && mode == Mode::Run {
                    store_meta.insert(SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                }
            }
        }
        let after_last = match outbox.last()? {
            Some((k, _)) => decode_seq(&k)? + 1,
            None => 1,
        };
        let next = match store_meta.get(NEXT_SEQ)? {
            Some(v) => decode_seq(&v)?.max(after_last),
            None => after_last,
        };
        let acks = tree("acks")?;
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
            state: tree("state")?,
            cursors: tree("cursors")?,
            ids: tree("ids")?,
            acks,
            subjects: tree("subjects")?,
            attempts: tree("attempts")?,
            dead: tree("dead")?,
            connections: tree("connections")?,
            observer: Default::default(),
            outbox,
            meta: store_meta,
            db,
            next_seq: Mutex::new(next),
            durable: AtomicU64::new(next - 1),
            last_flush: Default::default(),
            notify,
            _lock: lock,
        };
        Ok((store, problem))
    }

    /// Moves the store of `state_dir` aside (into `<state_dir>/replaced-<time>/`, nothing is
    /// deleted) and creates an empty one with a new identity whose first event is `first_seq`,
    /// adopting `adopted` (event id, seq): the last lines of sink files written before it, from
    /// which those sinks continue ([`Origin::wrote`]). Returns the new store and where the old
    /// one went (`None` when there was none). Works on a store that cannot be opened.
    pub fn reset(
        state_dir: &Path,
        first_seq: u64,
        adopted: &[(String, u64)],
    ) -> Result<(Store, Option<PathBuf>), StoreError> {
        let io = |e: std::io::Error| StoreError::Open {
            dir: state_dir.to_path_buf(),
            source: sled::Error::Io(e),
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
        store.meta.insert(NEXT_SEQ, &first.to_be_bytes())?;
        for (id, seq) in adopted {
            let mut k = ADOPTED.to_vec();
            k.extend_from_slice(id.as_bytes());
            store.meta.insert(k, &seq.to_be_bytes())?;
        }
        store.db.flush()?;
        *next = first;
        drop(next);
        store.durable.store(first - 1, Ordering::SeqCst);
        store.notify.send_replace(first - 1);
        Ok((store, aside))
    }

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

    /// One document record.
    pub fn get_state(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        Ok(self.state.get(key)?)
    }

    /// How many document records start with `prefix`.
    pub fn count_state(&self, prefix: &[u8]) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.state.scan_prefix(prefix).keys() {
            kv?;
            n += 1;
        }
        Ok(n)
    }

    /// One member progress record.
    pub fn get_cursor(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        Ok(self.cursors.get(key)?)
    }

    /// Writes `batch` atomically, flushes it to disk, then wakes the sinks.
    pub async fn commit(&self, mut batch: Batch) -> Result<Committed, StoreError> {
        if batch.is_empty() {
            return Ok(Committed::default());
        }
        let mut next = self.next_seq.lock().await;
        // Drop events whose id is already in the outbox (or twice in this batch): an id is
        // written once, whatever path re-detects the change.
        let before = batch.events.len();
        let mut seen = std::collections::HashSet::new();
        let mut kept = Vec::with_capacity(before);
        for ev in batch.events.drain(..) {
            if seen.insert(ev.id.clone()) && !self.ids.contains_key(ev.id.as_bytes())? {
                kept.push(ev);
            }
        }
        let duplicates = before - kept.len();
        let lines: Vec<(u64, &NewEvent, Vec<u8>)> = kept
            .iter()
            .enumerate()
            .map(|(i, ev)| {
                let seq = *next + i as u64;
                (seq, ev, ev.to_line(seq))
            })
            .collect();
        let new_next = *next + lines.len() as u64;

        let trees = (
            self.state.clone(),
            self.cursors.clone(),
            self.outbox.clone(),
            self.ids.clone(),
            self.meta.clone(),
        );
        let db = self.db.clone();
        let last_flush = std::sync::Arc::clone(&self.last_flush);
        // (seq, id, outbox value)
        type Entry = (u64, Vec<u8>, Vec<u8>);
        let entries: Vec<Entry> = lines
            .into_iter()
            .map(|(seq, ev, line)| {
                let subject = format!("{}\0{}", ev.account, ev.subject);
                (
                    seq,
                    ev.id.clone().into_bytes(),
                    outbox_value(&subject, &line),
                )
            })
            .collect();
        let written = entries.len();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let _serial = SLED_WRITES.lock().unwrap_or_else(|p| p.into_inner());
            let (state, cursors, outbox, ids, meta) = &trees;
            let result: Result<(), TransactionError<()>> = (state, cursors, outbox, ids, meta)
                .transaction(|(state, cursors, outbox, ids, meta)| {
                    for (k, v) in &batch.state {
                        state.insert(k.as_slice(), v.as_slice())?;
                    }
                    for (k, v) in &batch.cursors {
                        cursors.insert(k.as_slice(), v.as_slice())?;
                    }
                    for (seq, id, value) in &entries {
                        outbox.insert(&seq.to_be_bytes(), value.as_slice())?;
                        ids.insert(id.as_slice(), &seq.to_be_bytes())?;
                    }
                    meta.insert(NEXT_SEQ, &new_next.to_be_bytes())?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                });
            match result {
                Ok(()) => {}
                Err(TransactionError::Storage(e)) => return Err(StoreError::Write(e)),
                Err(TransactionError::Abort(())) => unreachable!("the commit closure never aborts"),
            }
            if written > 0 || lazy_flush_due(&last_flush) {
                db.flush()?;
                last_flush.store(crate::time::now_ms() as u64, Ordering::SeqCst);
            }
            Ok(())
        })
        .await
        .expect("the commit task panicked")?;
        *next = new_next;
        drop(next);
        if let Some(o) = self
            .observer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            o.committed(
                &kept
                    .iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>(),
            );
        }
        let last = new_next - 1;
        self.durable.fetch_max(last, Ordering::SeqCst);
        self.notify.send_if_modified(|v| {
            if *v < last {
                *v = last;
                true
            } else {
                false
            }
        });
        Ok(Committed {
            events: written,
            duplicates,
        })
    }

    /// The greatest committed, durable sequence number (0 when the outbox was always empty).
    pub fn last_seq(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// A receiver that changes whenever new events are durable.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Up to `limit` outbox events with seq greater than `after`, in order.
    pub fn read_outbox(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::new();
        for kv in self.outbox.range((after + 1).to_be_bytes()..).take(limit) {
            let (k, v) = kv?;
            out.push(StoredEvent {
                seq: decode_seq(&k)?,
                line: split_outbox_value(&v).1.to_vec(),
            });
        }
        Ok(out)
    }

    /// The last seq delivered to `sink` (0 if none).
    pub fn acked(&self, sink: &str) -> Result<u64, StoreError> {
        match self.acks.get(sink.as_bytes())? {
            Some(v) => decode_seq(&v),
            None => Ok(0),
        }
    }

    /// Records that `sink` has everything up to `seq`. Never moves backwards.
    pub fn ack(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.acks.fetch_and_update(sink.as_bytes(), |old| {
            let old = old
                .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0);
            Some(old.max(seq).to_be_bytes().to_vec())
        })?;
        Ok(())
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

    /// One outbox event, if it is still there (not pruned).
    pub fn event(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        Ok(self.outbox.get(seq.to_be_bytes())?.map(|v| StoredEvent {
            seq,
            line: split_outbox_value(&v).1.to_vec(),
        }))
    }

    /// The seq an event id was committed under (ids are kept after their event is pruned).
    pub fn seq_of(&self, id: &str) -> Result<Option<u64>, StoreError> {
        self.ids
            .get(id.as_bytes())?
            .map(|v| decode_seq(&v))
            .transpose()
    }

    /// The oldest seq still in the outbox.
    pub fn first_seq(&self) -> Result<Option<u64>, StoreError> {
        self.outbox
            .first()?
            .map(|(k, _)| decode_seq(&k))
            .transpose()
    }

    /// The per-document ordering key of `seq`: `account \0 subject`. `None` for events
    /// committed before subjects were stored; callers treat those as one shared subject.
    pub fn subject(&self, seq: u64) -> Result<Option<String>, StoreError> {
        if let Some(v) = self.outbox.get(seq.to_be_bytes())? {
            if let (Some(subject), _) = split_outbox_value(&v) {
                return Ok(Some(String::from_utf8_lossy(subject).into_owned()));
            }
        }
        Ok(self
            .subjects
            .get(seq.to_be_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Failed attempts so far to deliver `seq` to `sink`.
    pub fn attempts(&self, sink: &str, seq: u64) -> Result<Option<Attempts>, StoreError> {
        match self.attempts.get(sink_key(sink, seq))? {
            None => Ok(None),
            Some(v) if v.len() == 12 => Ok(Some(Attempts {
                count: u32::from_be_bytes(v[..4].try_into().expect("4 bytes")),
                last_at: i64::from_be_bytes(v[4..].try_into().expect("8 bytes")),
            })),
            Some(_) => Err(StoreError::Corrupt(format!("attempts/{sink}/{seq}"))),
        }
    }

    /// Records a failed attempt (the caller flushes).
    pub fn record_attempts(&self, sink: &str, seq: u64, a: Attempts) -> Result<(), StoreError> {
        let mut v = a.count.to_be_bytes().to_vec();
        v.extend_from_slice(&a.last_at.to_be_bytes());
        self.attempts.insert(sink_key(sink, seq), v)?;
        Ok(())
    }

    /// Forgets the attempts of a delivered event.
    pub fn clear_attempts(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.attempts.remove(sink_key(sink, seq))?;
        Ok(())
    }

    /// Stores a dead letter and forgets its attempt count (the caller acks and flushes).
    pub fn put_dead(&self, dead: &DeadLetter) -> Result<(), StoreError> {
        let record = DeadRecord {
            attempts: dead.attempts,
            at: dead.at,
            error: &dead.error,
            event: serde_json::from_slice(&dead.event.line)
                .map_err(|_| StoreError::Corrupt(format!("outbox/{}", dead.event.seq)))?,
        };
        let key = sink_key(&dead.sink, dead.event.seq);
        self.dead.insert(
            &key,
            serde_json::to_vec(&record).expect("dead letter serializes"),
        )?;
        self.attempts.remove(key)?;
        Ok(())
    }

    /// Dead letters of `sink` (all sinks when `None`), by sink then seq.
    pub fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let prefix = sink.map(|s| sink_key(s, 0)[..s.len() + 1].to_vec());
        let mut out = Vec::new();
        for kv in self.dead.scan_prefix(prefix.unwrap_or_default()) {
            let (k, v) = kv?;
            let (name, seq) = split_sink_key(&k)?;
            let rec: DeadRead = serde_json::from_slice(&v)
                .map_err(|_| StoreError::Corrupt(format!("dead/{name}/{seq}")))?;
            out.push(DeadLetter {
                sink: name,
                attempts: rec.attempts,
                at: rec.at,
                error: rec.error,
                event: StoredEvent {
                    seq,
                    line: rec.event.get().as_bytes().to_vec(),
                },
            });
        }
        Ok(out)
    }

    /// Reports every later commit's new events to `observer` (replacing any before it).
    pub fn report_to(&self, observer: std::sync::Arc<dyn CommitObserver>) {
        *self.observer.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    /// Writes one connection record (`account \0 member` -> provider-encoded bytes) and
    /// flushes it: a connection is durable before `connect` reports it.
    pub async fn put_connection(
        &self,
        account: &str,
        member: &str,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        let key = connection_key(account, member);
        self.connections.insert(key, value)?;
        self.flush().await
    }

    /// Every connection record of `account`: (member, bytes), ordered by member.
    pub fn connections(&self, account: &str) -> Result<Vec<(String, IVec)>, StoreError> {
        let prefix = connection_key(account, "");
        let mut out = Vec::new();
        for kv in self.connections.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let member = std::str::from_utf8(&k[prefix.len()..])
                .map_err(|_| StoreError::Corrupt("a connection key".into()))?;
            out.push((member.to_string(), v));
        }
        Ok(out)
    }

    /// Removes a dead letter (after a replay delivered it).
    pub fn remove_dead(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.dead.remove(sink_key(sink, seq))?;
        Ok(())
    }

    /// Removes outbox events that every one of `sinks` has acked and that were detected before
    /// `before`, oldest first, and attempt records a sink's ack has passed. Event ids stay in
    /// `ids` (see ARCHITECTURE.md: an id is never emitted twice, even after its event is
    /// pruned). Dead letters carry their own copy of the event and are kept.
    pub async fn prune(&self, before: Millis, sinks: &[String]) -> Result<Pruned, StoreError> {
        let mut acks = std::collections::HashMap::new();
        for s in sinks {
            acks.insert(s.clone(), self.acked(s)?);
        }
        let Some(min_ack) = acks.values().copied().min() else {
            return Ok(Pruned::default());
        };
        let (outbox, subjects, attempts, db) = (
            self.outbox.clone(),
            self.subjects.clone(),
            self.attempts.clone(),
            self.db.clone(),
        );
        tokio::task::spawn_blocking(move || -> Result<Pruned, StoreError> {
            let _serial = SLED_WRITES.lock().unwrap_or_else(|p| p.into_inner());
            let mut pruned = Pruned::default();
            let mut ob = sled::Batch::default();
            let mut sb = sled::Batch::default();
            for kv in outbox.range(..=min_ack.to_be_bytes()) {
                let (k, v) = kv?;
                let detected =
                    serde_json::from_slice::<crate::event::Envelope>(split_outbox_value(&v).1)
                        .ok()
                        .and_then(|e| parse_timestamp(&e.detected_at))
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("outbox/{}", decode_seq(&k).unwrap_or(0)))
                        })?;
                if detected >= before {
                    break;
                }
                ob.remove(k.clone());
                sb.remove(k);
                pruned.events += 1;
            }
            outbox.apply_batch(ob)?;
            subjects.apply_batch(sb)?;
            let mut ab = sled::Batch::default();
            for kv in attempts.iter().keys() {
                let k = kv?;
                let (sink, seq) = split_sink_key(&k)?;
                if acks.get(&sink).is_some_and(|acked| seq <= *acked) {
                    ab.remove(k);
                    pruned.attempts += 1;
                }
            }
            attempts.apply_batch(ab)?;
            if pruned.events + pruned.attempts > 0 {
                db.flush()?;
            }
            Ok(pruned)
        })
        .await
        .expect("the prune task panicked")
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// Returns the heap memory sled's recovery allocated and freed to the operating system.
/// Reading a large store's log leaves tens of MB free but resident in glibc's heap (measured
/// with 1M documents: BENCHMARKS.md); without this the daemon would carry them for its life.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
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
    meta: &Tree,
    file: identity::IdFile,
    mode: Mode,
) -> Result<(String, Option<String>), StoreError> {
    use identity::IdFile;
    let in_sled = match meta.get(STORE_ID)? {
        None => None,
        Some(v) => match std::str::from_utf8(&v) {
            Ok(id) if identity::valid_id(id) => Some(id.to_string()),
            _ => return Err(StoreError::Corrupt("meta/store_id".into())),
        },
    };
    let write_file = |id: &str| {
        identity::write_id_file(state_dir, id).map_err(|e| StoreError::Open {
            dir: state_dir.to_path_buf(),
            source: sled::Error::Io(e),
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
            meta.insert(STORE_ID, id.as_bytes())?;
            db.flush()?;
            write_file(&id)?;
            Ok((id, None))
        }
    }
}

/// Tells a store's events from another store's: handed to sinks that keep their own position
/// (the JSONL file's last line), which resume from it only if this store wrote it. Cheap to
/// clone; reads only.
#[derive(Clone)]
pub struct Origin {
    ids: Tree,
    meta: Tree,
}

impl Origin {
    /// Whether this store committed event `id` at `seq`, or adopted it at a reset as the last
    /// line of a file written before it. `ids` is never pruned, so this holds for old events.
    pub fn wrote(&self, id: &str, seq: u64) -> Result<bool, StoreError> {
        if self.seq_of(id)? == Some(seq) {
            return Ok(true);
        }
        let mut k = ADOPTED.to_vec();
        k.extend_from_slice(id.as_bytes());
        Ok(match self.meta.get(k)? {
            Some(v) => decode_seq(&v)? == seq,
            None => false,
        })
    }

    /// The seq this store committed event `id` under.
    pub fn seq_of(&self, id: &str) -> Result<Option<u64>, StoreError> {
        self.ids
            .get(id.as_bytes())?
            .map(|v| decode_seq(&v))
            .transpose()
    }
}

/// How long `open` waits for a lock that is being released (a store closed an instant ago in
/// this process: sled's I/O threads let go of the file shortly after the last handle).
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(1000);

fn open_db(path: &Path, state_dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        let result = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None)
            .open();
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
                    source: e,
                })
            }
        }
    }
}

/// Failed delivery attempts of one event to one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    pub count: u32,
    /// When the last attempt failed.
    pub last_at: Millis,
}

/// An event a sink gave up on after `max_attempts` (or a 410 Gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub sink: String,
    pub attempts: u32,
    pub error: String,
    pub at: Millis,
    pub event: StoredEvent,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub attempts: u64,
}

/// A dead letter's stored value: small JSON embedding the envelope line as it was.
#[derive(Serialize)]
struct DeadRecord<'a> {
    attempts: u32,
    at: Millis,
    error: &'a str,
    event: &'a RawValue,
}

#[derive(Deserialize)]
struct DeadRead {
    attempts: u32,
    at: Millis,
    error: String,
    event: Box<RawValue>,
}

/// `sink \0 seq(u64 BE)`: a sink's per-event records sort by seq.
fn sink_key(sink: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(sink.len() + 9);
    k.extend_from_slice(sink.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn split_sink_key(k: &[u8]) -> Result<(String, u64), StoreError> {
    let bad = || StoreError::Corrupt("a sink record key".into());
    if k.len() < 9 || k[k.len() - 9] != 0 {
        return Err(bad());
    }
    let (name, seq) = k.split_at(k.len() - 9);
    Ok((
        String::from_utf8(name.to_vec()).map_err(|_| bad())?,
        decode_seq(&seq[1..])?,
    ))
}

fn connection_key(account: &str, member: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + member.len() + 1);
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(member.as_bytes());
    k
}

/// The outbox value of schema 2: `\0`, the subject's length (u16 BE), the subject, the line.
/// (A line is a JSON object, so a schema-1 value, the bare line, never starts with `\0`.)
fn outbox_value(subject: &str, line: &[u8]) -> Vec<u8> {
    let subject = &subject.as_bytes()[..subject.len().min(u16::MAX as usize)];
    let mut v = Vec::with_capacity(3 + subject.len() + line.len());
    v.push(0);
    v.extend_from_slice(&(subject.len() as u16).to_be_bytes());
    v.extend_from_slice(subject);
    v.extend_from_slice(line);
    v
}

/// The subject (`None` in a schema-1 value) and the envelope line of an outbox value.
fn split_outbox_value(v: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if let [0, hi, lo, rest @ ..] = v {
        let n = u16::from_be_bytes([*hi, *lo]) as usize;
        if n <= rest.len() {
            return (Some(&rest[..n]), &rest[n..]);
        }
    }
    (None, v)
}

fn decode_seq(bytes: &[u8]) -> Result<u64, StoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("a sequence number".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::event_id;

    pub(crate) fn ev(n: u32) -> NewEvent {
        NewEvent {
            id: event_id(&["t", &n.to_string()]),
            provider: "caminvoice",
            account: "a".into(),
            event_type: "DOCUMENT.DELIVERED".into(),
            occurred_at: 0,
            detected_at: 0,
            subject: format!("m/d{n}"),
            payload: format!(r#"{{"n":{n}}}"#),
        }
    }

    #[tokio::test]
    async fn commit_assigns_consecutive_seqs_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut rx = s.subscribe();
            let c = s
                .commit(Batch {
                    state: vec![(b"a\0m\0d1".to_vec(), b"rec".to_vec())],
                    cursors: vec![(b"a\0m".to_vec(), b"cur".to_vec())],
                    events: vec![ev(1), ev(2)],
                })
                .await
                .unwrap();
            assert_eq!(
                c,
                Committed {
                    events: 2,
                    duplicates: 0
                }
            );
            assert_eq!(*rx.borrow_and_update(), 2);
            assert_eq!(s.last_seq(), 2);
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.last_seq(), 2);
        let got = s.read_outbox(0, 10).unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(got[1].envelope().unwrap().payload.get(), r#"{"n":2}"#);
        assert_eq!(s.get_state(b"a\0m\0d1").unwrap().unwrap().as_ref(), b"rec");
        assert_eq!(s.get_cursor(b"a\0m").unwrap().unwrap().as_ref(), b"cur");
        assert_eq!(s.count_state(b"a\0m\0").unwrap(), 1);
        let c = s
            .commit(Batch {
                events: vec![ev(3)],
                ..Batch::default()
            })
            .await
            .unwrap();
        assert_eq!(c.events, 1);
        assert_eq!(s.read_outbox(2, 10).unwrap()[0].seq, 3);
    }

    #[tokio::test]
    async fn an_event_id_enters_the_outbox_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.commit(Batch {
            events: vec![ev(1)],
            ..Batch::default()
        })
        .await
        .unwrap();
        let c = s
            .commit(Batch {
                events: vec![ev(1), ev(2), ev(2)],
                ..Batch::default()
            })
            .await
            .unwrap();
        assert_eq!(
            c,
            Committed {
                events: 1,
                duplicates: 2
            }
        );
        assert_eq!(s.read_outbox(0, 10).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn acks_are_per_sink_and_never_go_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.acked("a").unwrap(), 0);
        s.ack("a", 5).unwrap();
        s.ack("a", 3).unwrap();
        s.ack("b", 1).unwrap();
        assert_eq!(s.acked("a").unwrap(), 5);
        assert_eq!(s.acked("b").unwrap(), 1);
    }

    #[test]
    fn a_second_opener_gets_a_clear_locked_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(e @ StoreError::Locked(_)) => {
                assert!(e.to_string().contains("in use by another pollhook"))
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened a locked store"),
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.meta
                .insert(SCHEMA, &(SCHEMA_VERSION + 1).to_be_bytes())
                .unwrap();
            s.db.flush().unwrap();
        }
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Newer { .. })
        ));
    }

    #[tokio::test]
    async fn a_schema_1_store_is_read_as_is_and_marked_2() {
        let dir = tempfile::tempdir().unwrap();
        let line = ev(1).to_line(1);
        {
            // What schema 1 wrote: the bare line, the subject in its own tree.
            let s = Store::open(dir.path()).unwrap();
            s.meta.insert(SCHEMA, &1u32.to_be_bytes()).unwrap();
            s.outbox
                .insert(1u64.to_be_bytes(), line.as_slice())
                .unwrap();
            s.subjects
                .insert(1u64.to_be_bytes(), &b"acme\0old/doc"[..])
                .unwrap();
            s.meta.insert(NEXT_SEQ, &2u64.to_be_bytes()).unwrap();
            s.db.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.meta.get(SCHEMA).unwrap().unwrap().as_ref(),
            &SCHEMA_VERSION.to_be_bytes()
        );
        assert_eq!(s.read_outbox(0, 10).unwrap()[0].line, line);
        assert_eq!(s.subject(1).unwrap().as_deref(), Some("acme\0old/doc"));
        // A new event next to it: its subject travels in the outbox value.
        s.commit(Batch {
            events: vec![ev(2)],
            ..Batch::default()
        })
        .await
        .unwrap();
        let both = s.read_outbox(0, 10).unwrap();
        assert_eq!(both.len(), 2);
        assert!(both[1].envelope().is_ok(), "the line comes back bare");
        assert_eq!(s.event(2).unwrap().unwrap().line, both[1].line);
        assert!(s.subjects.get(2u64.to_be_bytes()).unwrap().is_none());
        let subject = s.subject(2).unwrap().unwrap();
        assert!(
            subject.starts_with(&format!("{}\0", ev(2).account)),
            "{subject}"
        );
    }

    #[tokio::test]
    async fn prune_removes_only_old_events_every_sink_finished_and_keeps_ids_and_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let events: Vec<NewEvent> = (1..=5)
            .map(|n| NewEvent {
                detected_at: if n <= 4 { 1_000 } else { 10_000 },
                ..ev(n)
            })
            .collect();
        s.commit(Batch {
            events,
            ..Batch::default()
        })
        .await
        .unwrap();
        assert_eq!(s.subject(2).unwrap().as_deref(), Some("a\0m/d2"));
        s.ack("fast", 5).unwrap();
        s.ack("slow", 3).unwrap();
        s.record_attempts(
            "fast",
            2,
            Attempts {
                count: 1,
                last_at: 0,
            },
        )
        .unwrap(); // stale
        s.record_attempts(
            "slow",
            4,
            Attempts {
                count: 2,
                last_at: 0,
            },
        )
        .unwrap();
        s.put_dead(&DeadLetter {
            sink: "fast".into(),
            attempts: 3,
            error: "e".into(),
            at: 0,
            event: s.event(1).unwrap().unwrap(),
        })
        .unwrap();
        let sinks = ["fast".to_string(), "slow".to_string()];
        let p = s.prune(5_000, &sinks).await.unwrap();
        // 1..=3 are acked by both and old; 4 is old but "slow" has not finished it; 5 is young.
        assert_eq!(
            p,
            Pruned {
                events: 3,
                attempts: 1
            }
        );
        assert_eq!(s.first_seq().unwrap(), Some(4));
        assert_eq!(s.event(2).unwrap(), None);
        assert_eq!(s.subject(2).unwrap(), None);
        assert_eq!(
            s.seq_of(&ev(2).id).unwrap(),
            Some(2),
            "ids outlive their events"
        );
        assert_eq!(s.attempts("slow", 4).unwrap().unwrap().count, 2);
        assert_eq!(s.attempts("fast", 2).unwrap(), None);
        let dead = s.dead_letters(Some("fast")).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            dead[0].event.envelope().unwrap().id,
            ev(1).id,
            "the dead letter keeps its event"
        );
        // The id guard still holds after pruning: the same change is not emitted again.
        let c = s
            .commit(Batch {
                events: vec![ev(2)],
                ..Batch::default()
            })
            .await
            .unwrap();
        assert_eq!(c.duplicates, 1);
        assert!(
            s.dead_letters(Some("fas")).unwrap().is_empty(),
            "a sink's prefix is exact"
        );
        s.remove_dead("fast", 1).unwrap();
        assert!(s.dead_letters(None).unwrap().is_empty());
    }

    async fn with_events(dir: &Path, n: u32) -> Store {
        let s = Store::open(dir).unwrap();
        s.commit(Batch {
            events: (1..=n).map(ev).collect(),
            ..Batch::default()
        })
        .await
        .unwrap();
        s
    }

    fn refusal(dir: &Path) -> String {
        match Store::open(dir) {
            Err(e @ StoreError::Refused { .. }) => e.to_string(),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened"),
        }
    }

    #[tokio::test]
    async fn a_store_that_sled_opens_empty_or_without_its_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(with_events(dir.path(), 3).await);
        // sled's directory lost (or opened empty): the identity file remembers.
        std::fs::remove_dir_all(dir.path().join(SLED_DIR)).unwrap();
        let e = refusal(dir.path());
        assert!(
            e.contains("EMPTY")
                && e.contains("pollhook store restore")
                && e.contains("pollhook store reset"),
            "{e}"
        );
        // Refusing wrote nothing: it stays refused.
        refusal(dir.path());
        let (s, problem) = Store::inspect(dir.path()).unwrap();
        assert!(problem.unwrap().contains("damaged"));
        assert_eq!(s.last_seq(), 0);
    }

    #[tokio::test]
    async fn a_store_that_lost_events_a_sink_already_has_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = with_events(dir.path(), 3).await;
        s.ack("hook", 3).unwrap();
        s.flush().await.unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        // What a store that lost its last events looks like: the ack survived them.
        s.acks.insert(b"hook", &5u64.to_be_bytes()).unwrap();
        s.db.flush().unwrap();
        drop(s);
        let e = refusal(dir.path());
        assert!(
            e.contains(
                "sink hook is acknowledged up to seq 5, but the store's last event is seq 3"
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_store_directory_replaced_by_another_stores_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        drop(with_events(a.path(), 3).await);
        drop(with_events(b.path(), 1).await);
        std::fs::remove_dir_all(a.path().join(SLED_DIR)).unwrap();
        std::fs::rename(b.path().join(SLED_DIR), a.path().join(SLED_DIR)).unwrap();
        let e = refusal(a.path());
        assert!(e.contains("was replaced by another store"), "{e}");
    }

    #[tokio::test]
    async fn a_store_from_before_identities_adopts_one_and_a_lost_id_file_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What an older pollhook left: no identity anywhere.
            let s = with_events(dir.path(), 2).await;
            s.meta.remove(STORE_ID).unwrap();
            s.db.flush().unwrap();
        }
        std::fs::remove_file(dir.path().join(identity::ID_FILE)).unwrap();
        let s = Store::open(dir.path()).unwrap();
        let id = s.id().to_string();
        assert!(identity::valid_id(&id));
        assert_eq!(s.last_seq(), 2, "the old events are still there");
        assert_eq!(
            identity::read_id_file(dir.path()),
            identity::IdFile::Id(id.clone())
        );
        drop(s);
        std::fs::remove_file(dir.path().join(identity::ID_FILE)).unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.id(), id, "sled's identity is kept");
        assert_eq!(identity::read_id_file(dir.path()), identity::IdFile::Id(id));
    }

    #[tokio::test]
    async fn reset_keeps_the_old_store_aside_and_continues_after_the_adopted_tails() {
        let dir = tempfile::tempdir().unwrap();
        let old = with_events(dir.path(), 3).await;
        let old_id = old.id().to_string();
        drop(old);
        let (s, aside) = Store::reset(dir.path(), 8, &[("evt_file_tail".into(), 7)]).unwrap();
        let aside = aside.expect("the old store is kept");
        assert!(aside.join(SLED_DIR).is_dir() && aside.join(identity::ID_FILE).is_file());
        assert_ne!(s.id(), old_id);
        assert_eq!(s.last_seq(), 7);
        let origin = s.origin();
        assert!(origin.wrote("evt_file_tail", 7).unwrap());
        assert!(!origin.wrote("evt_file_tail", 6).unwrap());
        assert!(
            !origin.wrote(&ev(3).id, 3).unwrap(),
            "the old store's events are not this one's"
        );
        drop(origin); // it holds sled open
        s.commit(Batch {
            events: vec![ev(1)],
            ..Batch::default()
        })
        .await
        .unwrap();
        assert_eq!(s.read_outbox(0, 10).unwrap()[0].seq, 8);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.last_seq(), 8);
        assert!(s.origin().wrote(&ev(1).id, 8).unwrap());
    }
}
