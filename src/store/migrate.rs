//! Schema 1/2 -> 3, on open, crash-safe.
//!
//! The old store is only read. The new one is written from scratch into
//! `<state_dir>/store.migrating` (a fresh sled log, so the figures on disk are the layout's,
//! with no garbage of the old one), flushed, closed, and renamed `store.v3` — the mark that it
//! is complete. Then the swap: the old `store/` moves into `replaced-<time>-schema<N>/` (kept:
//! the operator deletes it once satisfied) and `store.v3` becomes `store`. Every step is a
//! rename, so a kill at any moment leaves one of:
//! - `store.migrating` (partial): the next open deletes it and migrates again from the old
//!   store, which nothing touched;
//! - `store.v3` beside `store`: the next open does the swap;
//! - `store.v3` and no `store`: the next open does the second rename.
//!
//! The identity is carried (`store_id`; `<state_dir>/store-id` stays where it is). Memory is
//! bounded: documents are re-keyed into buckets in passes over the old state, each pass
//! holding the buckets of a range ([`PASS_RECORDS`] records at most); ids arrive sorted by
//! their bucket and are streamed; the outbox is streamed in seq order.
//!
//! The conversion ([`convert`]) also serves a restore of a schema-2 backup (`backup.rs`).

use super::bucket::{self, Hashing, Update};
use super::codec::{doc_id_bytes, event_id_bytes, put_uvarint};
use super::group::{self, Item};
use super::idset::{self, Rest};
use super::keys::{self, decode_seq};
use super::names::{Names, Numbering};
use super::open::{new_hash_key, open_db};
use super::{
    identity, DbError, StoreError, Unit, DATA, HASH_KEY, NEXT_SEQ, SCHEMA, SCHEMA_VERSION,
    SLED_DIR, STORE_ID,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The directory a migration writes into.
const MIGRATING: &str = "store.migrating";
/// The complete new store, before the swap.
const DONE: &str = "store.v3";
/// Document records held in memory per pass at most.
const PASS_RECORDS: u64 = 200_000;
/// Entries per sled batch while writing the new store.
const WRITE_BATCH: usize = 2048;

/// The trees of a schema-1/2 store.
pub(super) const LEGACY_TREES: [&str; 10] = [
    "meta",
    "state",
    "cursors",
    "outbox",
    "ids",
    "acks",
    "subjects",
    "attempts",
    "dead",
    "connections",
];

/// Trees both schemas have, copied as they are.
const KEPT_TREES: [&str; 4] = ["acks", "attempts", "dead", "connections"];

/// What a migration carried over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Migrated {
    pub documents: u64,
    pub units: u64,
    pub events: u64,
    pub ids: u64,
}

/// The schema of a store from before schema 3 (`None`: a schema-3 store, or a new one).
pub(super) fn legacy_schema(db: &sled::Db) -> Result<Option<u32>, StoreError> {
    let names = db.tree_names();
    let has = |t: &str| names.iter().any(|n| n.as_ref() == t.as_bytes());
    if !has("meta") {
        return Ok(None);
    }
    let meta = db.open_tree("meta")?;
    if let Some(v) = meta.get(SCHEMA)? {
        let found = u32::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("meta/schema_version".into()))?,
        );
        return Ok(Some(found));
    }
    let mut any = !meta.is_empty();
    for t in LEGACY_TREES.iter().filter(|t| has(t)) {
        any |= !db.open_tree(t)?.is_empty();
    }
    Ok(any.then_some(1))
}

/// Whether a migrated store waits to be put in place.
pub(super) fn swap_pending(state_dir: &Path) -> bool {
    state_dir.join(DONE).is_dir()
}

fn io_err(state_dir: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Open {
        dir: state_dir.to_path_buf(),
        source: DbError::io(e),
    }
}

/// Finishes a swap a kill interrupted (see the module docs); nothing to do otherwise.
pub(super) fn finish_swap(state_dir: &Path) -> Result<(), StoreError> {
    let done = state_dir.join(DONE);
    if !done.is_dir() {
        return Ok(());
    }
    let io = io_err(state_dir);
    let store = state_dir.join(SLED_DIR);
    if store.exists() {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let mut aside = state_dir.join(format!("replaced-{stamp}-before-schema3"));
        let mut n = 1;
        while aside.exists() {
            n += 1;
            aside = state_dir.join(format!("replaced-{stamp}-before-schema3-{n}"));
        }
        std::fs::create_dir(&aside).map_err(&io)?;
        std::fs::rename(&store, aside.join(SLED_DIR)).map_err(&io)?;
        crate::files::sync_parent(&store).map_err(&io)?;
        tracing::info!(kept = %aside.display(), "the store from before schema 3 is kept aside; delete it once the daemon runs well");
    }
    std::fs::rename(&done, &store).map_err(&io)?;
    crate::files::sync_parent(&store).map_err(&io)
}

/// Migrates the store of `state_dir` (schema 1 or 2; the caller holds the state dir lock).
pub(super) fn migrate(state_dir: &Path) -> Result<Migrated, StoreError> {
    let started = Instant::now();
    let io = io_err(state_dir);
    let partial = state_dir.join(MIGRATING);
    if partial.exists() {
        tracing::info!("removing the partial store of an interrupted migration; migrating again");
        std::fs::remove_dir_all(&partial).map_err(&io)?;
    }
    let old = open_db(&state_dir.join(SLED_DIR), state_dir)?;
    let found = legacy_schema(&old)?.unwrap_or(SCHEMA_VERSION);
    let need = old.size_on_disk()?;
    if let Some(free) = free_bytes(state_dir) {
        if free < need {
            return Err(StoreError::NoRoom {
                dir: state_dir.to_path_buf(),
                need,
                free,
            });
        }
    }
    tracing::info!(
        from = found,
        to = SCHEMA_VERSION,
        bytes = need,
        "migrating the store to schema {SCHEMA_VERSION}; a stop or crash meanwhile loses nothing (the next start migrates again from the untouched old store)"
    );
    let result = (|| {
        let new = new_db(&partial)?;
        let m = convert(&old, &new)?;
        new.flush()?;
        Ok::<_, StoreError>(m)
    })();
    drop(old);
    let m = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    crate::files::make_private(&partial);
    std::fs::rename(&partial, state_dir.join(DONE)).map_err(&io)?;
    crate::files::sync_parent(&partial).map_err(&io)?;
    finish_swap(state_dir)?;
    tracing::info!(
        from = found,
        to = SCHEMA_VERSION,
        documents = m.documents,
        units = m.units,
        events = m.events,
        ids = m.ids,
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "store migrated from schema {found} to {SCHEMA_VERSION} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(m)
}

/// A new, empty sled database at `path` with the store's settings.
pub(super) fn new_db(path: &Path) -> Result<sled::Db, StoreError> {
    Ok(super::open::config(path).open()?)
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into `s`, which outlives the call; `c` is a valid C string.
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0)
        .then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

/// Writes `old` (schema 1 or 2) into the empty `new` as schema 3; the schema mark last.
pub(super) fn convert(old: &sled::Db, new: &sled::Db) -> Result<Migrated, StoreError> {
    let data = new.open_tree(DATA)?;
    let mut w = Writer {
        data: &data,
        batch: sled::Batch::default(),
        n: 0,
    };
    let mut m = Migrated::default();

    // meta: everything but the schema mark, which goes last.
    for kv in old.open_tree("meta")?.iter() {
        let (k, v) = kv?;
        if k.as_ref() != SCHEMA {
            w.put(keys::meta(&k), v.to_vec())?;
        }
    }
    let key = new_hash_key();
    w.put(keys::meta(HASH_KEY), key.to_vec())?;
    let hashing = Hashing::new(key);

    // Progress records, numbering their units.
    let mut names = Names::default();
    for kv in old.open_tree("cursors")?.iter() {
        let (k, v) = kv?;
        let (account, unit) = split2(&k).ok_or_else(|| bad_key("cursors", &k))?;
        let no = number(&mut names, &mut w, account, unit)?;
        w.put(keys::cursor(no), v.to_vec())?;
    }

    // Documents, in passes over bucket ranges.
    let state = old.open_tree("state")?;
    let total = state.len() as u64;
    let passes = total.div_ceil(PASS_RECORDS).max(1);
    let span = u64::from(bucket::BUCKETS).div_ceil(passes);
    for p in 0..passes {
        let range = p * span..(p + 1) * span;
        let mut buckets: BTreeMap<Vec<u8>, Vec<Update>> = BTreeMap::new();
        for kv in state.iter() {
            let (k, v) = kv?;
            let (account, unit, doc) = split3(&k).ok_or_else(|| bad_key("state", &k))?;
            let b = hashing.bucket(doc);
            if !range.contains(&u64::from(b)) {
                continue;
            }
            let no = number(&mut names, &mut w, account, unit)?;
            buckets
                .entry(keys::bucket(no.account, b))
                .or_default()
                .push(Update {
                    unit: no.unit,
                    doc: doc_id_bytes(doc),
                    value: v.to_vec(),
                });
            m.documents += 1;
        }
        for (k, mut updates) in buckets {
            let v = bucket::merge(None, &mut updates).expect("a new bucket");
            w.put(k, v)?;
        }
    }
    m.units = names.units().count() as u64;

    // The outbox, in groups of consecutive seqs (schema 1: bare lines, subjects aside).
    let subjects = old.open_tree("subjects")?;
    let mut run: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
    let flush_run = |w: &mut Writer, run: &mut Vec<(u64, Vec<u8>, Vec<u8>)>| {
        let items: Vec<Item> = run
            .iter()
            .map(|(_, s, l)| Item {
                subject: s,
                line: l,
            })
            .collect();
        for r in group::boundaries(&items) {
            w.put(
                keys::outbox(run[r.start].0).to_vec(),
                group::encode(&items[r]),
            )?;
        }
        run.clear();
        Ok::<(), StoreError>(())
    };
    for kv in old.open_tree("outbox")?.iter() {
        let (k, v) = kv?;
        let seq = decode_seq(&k)?;
        let (subject, line) = match split_legacy_outbox(&v) {
            (Some(s), line) => (s.to_vec(), line.to_vec()),
            (None, line) => (
                subjects
                    .get(k.as_ref())?
                    .map(|s| s.to_vec())
                    .unwrap_or_default(),
                line.to_vec(),
            ),
        };
        if run.last().is_some_and(|(last, _, _)| last + 1 != seq) || run.len() >= 4096 {
            flush_run(&mut w, &mut run)?;
        }
        run.push((seq, subject, line));
        m.events += 1;
    }
    flush_run(&mut w, &mut run)?;

    // Event ids: sorted by text, so by bucket for pollhook's own (lowercase hex).
    let mut current: IdRun = None;
    let flush_ids = |w: &mut Writer, cur: IdRun| {
        if let Some((head, mut entries)) = cur {
            let v = idset::merge(None, &mut entries).expect("a new bucket");
            w.put(keys::id_bucket(head), v)?;
        }
        Ok::<(), StoreError>(())
    };
    for kv in old.open_tree("ids")?.iter() {
        let (k, v) = kv?;
        let seq = decode_seq(&v)?;
        m.ids += 1;
        let text = String::from_utf8_lossy(&k);
        match event_id_bytes(&text) {
            Some(b) => {
                let (head, rest) = idset::split(&b);
                if current.as_ref().is_some_and(|(h, _)| *h != head) {
                    flush_ids(&mut w, current.take())?;
                }
                current
                    .get_or_insert_with(|| (head, Vec::new()))
                    .1
                    .push((rest, seq));
            }
            None => {
                let mut sv = Vec::new();
                put_uvarint(&mut sv, seq);
                w.put(keys::text_id(&text), sv)?;
            }
        }
    }
    flush_ids(&mut w, current.take())?;
    w.finish()?;

    for name in KEPT_TREES {
        let (from, to) = (old.open_tree(name)?, new.open_tree(name)?);
        let mut b = sled::Batch::default();
        let mut n = 0;
        for kv in from.iter() {
            let (k, v) = kv?;
            b.insert(k, v);
            n += 1;
            if n % WRITE_BATCH == 0 {
                to.apply_batch(std::mem::take(&mut b))?;
            }
        }
        to.apply_batch(b)?;
    }
    new.flush()?;
    data.insert(keys::meta(SCHEMA), &SCHEMA_VERSION.to_be_bytes())?;
    Ok(m)
}

/// Batched writes into the new `data` tree.
struct Writer<'a> {
    data: &'a sled::Tree,
    batch: sled::Batch,
    n: usize,
}

impl Writer<'_> {
    fn put(
        &mut self,
        k: impl Into<sled::IVec>,
        v: impl Into<sled::IVec>,
    ) -> Result<(), StoreError> {
        self.batch.insert(k, v);
        self.n += 1;
        if self.n >= WRITE_BATCH {
            self.finish()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        self.data.apply_batch(std::mem::take(&mut self.batch))?;
        self.n = 0;
        Ok(())
    }
}

fn number(
    names: &mut Names,
    w: &mut Writer,
    account: &str,
    unit: &str,
) -> Result<keys::UnitNo, StoreError> {
    let mut n = Numbering::default();
    let no = names.number(Unit::new(account, unit), &mut n);
    for (k, v) in std::mem::take(&mut n.records) {
        w.put(k, v)?;
    }
    names.learn(n);
    Ok(no)
}

fn bad_key(tree: &str, k: &[u8]) -> StoreError {
    StoreError::Corrupt(format!(
        "{tree}: the key {:?} is not `account \\0 unit ...`",
        String::from_utf8_lossy(k)
    ))
}

/// `account \0 unit`.
fn split2(k: &[u8]) -> Option<(&str, &str)> {
    let k = std::str::from_utf8(k).ok()?;
    k.split_once('\0')
}

/// `account \0 unit \0 document`.
fn split3(k: &[u8]) -> Option<(&str, &str, &str)> {
    let (account, rest) = split2(k)?;
    let (unit, doc) = rest.split_once('\0')?;
    Some((account, unit, doc))
}

/// The subject (`None` in a schema-1 value) and the envelope line of a schema-2 outbox value:
/// `\0`, the subject's length (u16 BE), the subject, the line.
pub(super) fn split_legacy_outbox(v: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if let [0, hi, lo, rest @ ..] = v {
        let n = u16::from_be_bytes([*hi, *lo]) as usize;
        if n <= rest.len() {
            return (Some(&rest[..n]), &rest[n..]);
        }
    }
    (None, v)
}

/// The event ids of one id bucket being gathered by the migration: its head, (rest, seq)s.
type IdRun = Option<([u8; idset::HEAD], Vec<(Rest, u64)>)>;

/// A legacy store's identity, last seq and its sinks' acks.
type LegacySummary = (String, u64, Vec<(String, u64)>);

/// What a store from before schema 3 holds, read without migrating it (for a restore's
/// comparison): its identity, its last seq, its sinks' acks.
pub(super) fn legacy_summary(state_dir: &Path) -> Result<LegacySummary, StoreError> {
    let db = open_db(&state_dir.join(SLED_DIR), state_dir)?;
    let meta = db.open_tree("meta")?;
    let id = meta
        .get(STORE_ID)?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    let mut last = match meta.get(NEXT_SEQ)? {
        Some(v) => decode_seq(&v)?.saturating_sub(1),
        None => 0,
    };
    if let Some((k, _)) = db.open_tree("outbox")?.last()? {
        last = last.max(decode_seq(&k)?);
    }
    let mut acks = Vec::new();
    for kv in db.open_tree("acks")?.iter() {
        let (k, v) = kv?;
        acks.push((String::from_utf8_lossy(&k).into_owned(), decode_seq(&v)?));
    }
    Ok((id, last, acks))
}

/// A schema-2 store, for tests of the migration: what an older pollhook left in a state dir.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct LegacyStore {
    pub store_id: Option<String>,
    /// (account, unit, document id, provider record).
    pub documents: Vec<(String, String, String, Vec<u8>)>,
    /// (account, unit, progress record).
    pub cursors: Vec<(String, String, Vec<u8>)>,
    /// (seq, event id, `account \0 subject`, envelope line).
    pub events: Vec<(u64, String, String, Vec<u8>)>,
    pub acks: Vec<(String, u64)>,
    pub connections: Vec<(String, String, Vec<u8>)>,
}

/// Writes `s` into `state_dir` in the schema-2 layout (and its `store-id` file), as pollhook
/// before schema 3 did. For tests.
#[doc(hidden)]
pub fn write_legacy_store(state_dir: &Path, s: &LegacyStore) -> Result<(), StoreError> {
    crate::files::private_dir(state_dir).map_err(io_err(state_dir))?;
    let db = new_db(&state_dir.join(SLED_DIR))?;
    let tree = |n: &str| db.open_tree(n);
    let (meta, state, cursors, outbox, ids, acks, connections) = (
        tree("meta")?,
        tree("state")?,
        tree("cursors")?,
        tree("outbox")?,
        tree("ids")?,
        tree("acks")?,
        tree("connections")?,
    );
    meta.insert(SCHEMA, &2u32.to_be_bytes())?;
    let next = s.events.iter().map(|e| e.0).max().unwrap_or(0) + 1;
    meta.insert(NEXT_SEQ, &next.to_be_bytes())?;
    if let Some(id) = &s.store_id {
        meta.insert(STORE_ID, id.as_bytes())?;
        identity::write_id_file(state_dir, id).map_err(io_err(state_dir))?;
    }
    let mut b = sled::Batch::default();
    for (i, (a, u, d, v)) in s.documents.iter().enumerate() {
        b.insert(format!("{a}\0{u}\0{d}").into_bytes(), v.as_slice());
        if i % WRITE_BATCH == 0 {
            state.apply_batch(std::mem::take(&mut b))?;
        }
    }
    state.apply_batch(b)?;
    for (a, u, v) in &s.cursors {
        cursors.insert(format!("{a}\0{u}").into_bytes(), v.as_slice())?;
    }
    for (a, u, v) in &s.connections {
        connections.insert(format!("{a}\0{u}").into_bytes(), v.as_slice())?;
    }
    for (seq, id, subject, line) in &s.events {
        let subject = &subject.as_bytes()[..subject.len().min(u16::MAX as usize)];
        let mut v = vec![0];
        v.extend_from_slice(&(subject.len() as u16).to_be_bytes());
        v.extend_from_slice(subject);
        v.extend_from_slice(line);
        outbox.insert(seq.to_be_bytes(), v)?;
        ids.insert(id.as_bytes(), &seq.to_be_bytes())?;
    }
    for (sink, seq) in &s.acks {
        acks.insert(sink.as_bytes(), &seq.to_be_bytes())?;
    }
    db.flush()?;
    Ok(())
}

/// Where the store of `state_dir` from before schema 3 was kept by the last migration.
pub fn kept_aside(state_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(state_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("replaced-") && n.contains("before-schema3"))
        })
        .collect();
    out.sort();
    out
}
