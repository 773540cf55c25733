//! The one committer: [`Store::commit`] writes a [`Batch`] — document records, progress
//! records, new events — in ONE sled transaction, flushes it (lazily when it carries no
//! events, see [`LAZY_FLUSH`]), then wakes the sinks and reports the new events to the
//! [`CommitObserver`]. An event id already in `ids` is dropped: it enters the outbox once.

use super::keys::Unit;
use super::outbox::outbox_value;
use super::{Store, StoreError, NEXT_SEQ, SLED_WRITES};
use crate::event::NewEvent;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::sync::atomic::{AtomicU64, Ordering};

/// Everything one commit writes, atomically.
#[derive(Debug, Default)]
pub struct Batch {
    /// Document records: key -> provider-encoded value ([`Batch::put_state`]).
    pub(super) state: Vec<(Vec<u8>, Vec<u8>)>,
    /// Unit progress records: key -> provider-encoded value ([`Batch::put_cursor`]).
    pub(super) cursors: Vec<(Vec<u8>, Vec<u8>)>,
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

    /// Writes the record of document `document` of `unit`.
    pub fn put_state(&mut self, unit: Unit, document: &str, value: Vec<u8>) {
        self.state.push((unit.document_key(document), value));
    }

    /// Writes the progress record of `unit`.
    pub fn put_cursor(&mut self, unit: Unit, value: Vec<u8>) {
        self.cursors.push((unit.key(), value));
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

impl Store {
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
                Err(TransactionError::Storage(e)) => return Err(e.into()),
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
            for e in &kept {
                o.detected(&e.account, e.detected_at - e.occurred_at);
            }
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

    /// Reports every later commit's new events to `observer` (replacing any before it).
    pub fn report_to(&self, observer: std::sync::Arc<dyn CommitObserver>) {
        *self.observer.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }
}
