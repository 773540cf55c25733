//! The one committer: [`Store::commit`] writes a [`Batch`] — document records, progress
//! records, new events — as ONE atomic batch of the `data` tree, flushes it (lazily when it
//! carries no events, see [`LAZY_FLUSH`]), then wakes the sinks and reports the new events to
//! the [`CommitObserver`]. An event id already in the id index is dropped: it enters the
//! outbox once.
//!
//! Everything a commit reads before its batch — the document buckets it merges into, the id
//! buckets it checks and extends, the interned numbers — is written only by commits, and the
//! committer holds the `next_seq` lock: nothing changes between the read and the batch.
//! sled's `apply_batch` on one tree is atomic (recovered whole or not at all), which is what
//! lets one tree replace a multi-tree transaction (and its per-insert re-reads).

use super::bucket::{self, Update};
use super::codec::{doc_id_bytes, event_id_bytes, put_uvarint};
use super::group::{self, Item};
use super::idset::{self, Rest};
use super::keys::{self, Unit, UnitNo};
use super::names::Numbering;
use super::{Store, StoreError, NEXT_SEQ, SLED_WRITES};
use crate::event::NewEvent;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

/// Everything one commit writes, atomically.
#[derive(Debug, Default)]
pub struct Batch {
    /// The units named by this batch: (account, unit id).
    pub(super) units: Vec<(String, String)>,
    /// Document records: (unit index, document id, provider-encoded value).
    pub(super) state: Vec<(usize, String, Vec<u8>)>,
    /// Unit progress records: (unit index, provider-encoded value).
    pub(super) cursors: Vec<(usize, Vec<u8>)>,
    /// New events, in the order they happened.
    pub events: Vec<NewEvent>,
}

impl Batch {
    /// A batch of new events only.
    pub fn of_events(events: Vec<NewEvent>) -> Batch {
        Batch {
            events,
            ..Batch::default()
        }
    }

    fn unit_index(&mut self, unit: Unit) -> usize {
        match self
            .units
            .iter()
            .position(|(a, u)| a == unit.account && u == unit.id)
        {
            Some(i) => i,
            None => {
                self.units
                    .push((unit.account.to_string(), unit.id.to_string()));
                self.units.len() - 1
            }
        }
    }

    /// Writes the record of document `document` of `unit`.
    pub fn put_state(&mut self, unit: Unit, document: &str, value: Vec<u8>) {
        let i = self.unit_index(unit);
        self.state.push((i, document.to_string(), value));
    }

    /// Writes the progress record of `unit`.
    pub fn put_cursor(&mut self, unit: Unit, value: Vec<u8>) {
        let i = self.unit_index(unit);
        self.cursors.push((i, value));
    }

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
    /// Each event appended: its account and its detection latency (`detected_at −
    /// occurred_at`, ms).
    fn detected(&self, _account: &str, _latency_ms: crate::time::Millis) {}
}

/// The longest an event-less commit waits for its flush (see the module docs).
const LAZY_FLUSH: i64 = 1000;

fn lazy_flush_due(last_flush: &AtomicU64) -> bool {
    crate::time::now_ms() - last_flush.load(Ordering::SeqCst) as i64 >= LAZY_FLUSH
}

/// How an event id is indexed.
enum IdKey {
    /// A pollhook id: its bucket and its rest.
    Bucketed([u8; idset::HEAD], Rest),
    /// Any other id: its own entry.
    Text(Vec<u8>),
}

fn id_key(id: &str) -> IdKey {
    match event_id_bytes(id) {
        Some(b) => {
            let (head, rest) = idset::split(&b);
            IdKey::Bucketed(head, rest)
        }
        None => IdKey::Text(keys::text_id(id)),
    }
}

impl Store {
    /// Writes `batch` atomically, flushes it to disk, then wakes the sinks.
    pub async fn commit(&self, mut batch: Batch) -> Result<Committed, StoreError> {
        if batch.is_empty() {
            return Ok(Committed::default());
        }
        let mut next = self.next_seq.lock().await;
        let mut writes = sled::Batch::default();

        // Interned numbers of the units this batch names (new ones numbered in this batch).
        let mut numbering = Numbering::default();
        let nos: Vec<UnitNo> = {
            let names = self.names.read().unwrap_or_else(|p| p.into_inner());
            batch
                .units
                .iter()
                .map(|(a, u)| names.number(Unit::new(a, u), &mut numbering))
                .collect()
        };
        for (k, v) in &numbering.records {
            writes.insert(k.as_slice(), v.as_slice());
        }

        // Events: drop ids already in the index (or twice in this batch); index the rest.
        let before = batch.events.len();
        let mut seen = HashSet::with_capacity(before);
        let mut id_buckets: BTreeMap<[u8; idset::HEAD], Vec<(Rest, usize)>> = BTreeMap::new();
        let mut kept = Vec::with_capacity(before);
        for ev in batch.events.drain(..) {
            if !seen.insert(ev.id.clone()) {
                continue;
            }
            match id_key(&ev.id) {
                IdKey::Bucketed(head, rest) => {
                    id_buckets.entry(head).or_default().push((rest, kept.len()));
                    kept.push(ev);
                }
                IdKey::Text(k) => {
                    if !self.data.contains_key(&k)? {
                        kept.push(ev);
                    }
                }
            }
        }
        let mut dup = vec![false; kept.len()];
        let mut id_values = Vec::with_capacity(id_buckets.len());
        for (head, ids) in &id_buckets {
            let key = keys::id_bucket(*head);
            let old = self.data.get(&key)?;
            for (rest, i) in ids {
                let found = match &old {
                    Some(b) => idset::find(b, rest).map_err(|_| corrupt_ids(head))?,
                    None => None,
                };
                dup[*i] = found.is_some();
            }
            id_values.push((key, old));
        }
        // The seq of each kept event, by its index before the duplicates go.
        let first = *next;
        let mut seqs = Vec::with_capacity(dup.len());
        let mut n = first;
        for d in &dup {
            seqs.push((!d).then(|| {
                n += 1;
                n - 1
            }));
        }
        for (key, old) in id_values {
            let head: [u8; idset::HEAD] = key[1..].try_into().expect("an id bucket key");
            let mut new: Vec<(Rest, u64)> = id_buckets[&head]
                .iter()
                .filter_map(|(rest, i)| seqs[*i].map(|s| (*rest, s)))
                .collect();
            if new.is_empty() {
                continue;
            }
            let value = idset::merge(old.as_deref(), &mut new).map_err(|_| corrupt_ids(&head))?;
            writes.insert(key, value);
        }
        let mut i = 0;
        kept.retain(|_| {
            i += 1;
            !dup[i - 1]
        });
        let duplicates = before - kept.len();
        let new_next = first + kept.len() as u64;
        for (i, ev) in kept.iter().enumerate() {
            if let IdKey::Text(k) = id_key(&ev.id) {
                let mut v = Vec::with_capacity(4);
                put_uvarint(&mut v, first + i as u64);
                writes.insert(k, v);
            }
        }

        // The outbox: the commit's events in groups of consecutive seqs.
        let lines: Vec<(Vec<u8>, Vec<u8>)> = kept
            .iter()
            .enumerate()
            .map(|(i, ev)| {
                let subject = format!("{}\0{}", ev.account, ev.subject).into_bytes();
                (subject, ev.to_line(first + i as u64))
            })
            .collect();
        let items: Vec<Item> = lines
            .iter()
            .map(|(s, l)| Item {
                subject: s,
                line: l,
            })
            .collect();
        for range in group::boundaries(&items) {
            let seq = first + range.start as u64;
            writes.insert(&keys::outbox(seq), group::encode(&items[range]));
        }

        // Documents: each touched bucket read, merged, written whole.
        let mut buckets: BTreeMap<Vec<u8>, Vec<Update>> = BTreeMap::new();
        for (u, doc, value) in batch.state.drain(..) {
            let no = nos[u];
            buckets
                .entry(keys::bucket(no.account, self.hashing.bucket(&doc)))
                .or_default()
                .push(Update {
                    unit: no.unit,
                    doc: doc_id_bytes(&doc),
                    value,
                });
        }
        let documents = buckets.values().map(Vec::len).sum::<usize>() as u64;
        for (key, mut updates) in buckets {
            let old = self.data.get(&key)?;
            let value = bucket::merge(old.as_deref(), &mut updates)
                .map_err(|_| StoreError::Corrupt(format!("document bucket {key:?}")))?;
            writes.insert(key, value);
        }
        for (u, value) in batch.cursors.drain(..) {
            writes.insert(keys::cursor(nos[u]), value);
        }
        writes.insert(keys::meta(NEXT_SEQ), &new_next.to_be_bytes());

        let data = self.data.clone();
        let db = self.db.clone();
        let last_flush = std::sync::Arc::clone(&self.last_flush);
        let written = kept.len();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let _serial = SLED_WRITES.lock().unwrap_or_else(|p| p.into_inner());
            data.apply_batch(writes)?;
            if written > 0 || lazy_flush_due(&last_flush) {
                db.flush()?;
                last_flush.store(crate::time::now_ms() as u64, Ordering::SeqCst);
            }
            Ok(())
        })
        .await
        .expect("the commit task panicked")?;
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .learn(numbering);
        self.written_since_trim
            .fetch_add(documents + written as u64, Ordering::Relaxed);
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
            for e in &kept {
                o.detected(&e.account, e.detected_at - e.occurred_at);
            }
        }
        if written > 0 {
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
        }
        Ok(Committed {
            events: written,
            duplicates,
        })
    }

    /// Reports every later commit's new events to `observer` (replacing any before it).
    pub fn report_to(&self, observer: std::sync::Arc<dyn CommitObserver>) {
        *self.observer.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }
}

fn corrupt_ids(head: &[u8]) -> StoreError {
    StoreError::Corrupt(format!("event id bucket {head:02x?}"))
}
