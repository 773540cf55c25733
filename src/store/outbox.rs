//! Reading the outbox: events by seq, their subjects (the per-document ordering key), the
//! ids tree, the durable head a `watch` announces, each sink's ack; and [`Origin`], what a
//! sink that keeps its own position asks to know whether this store wrote an event.

use super::{decode_seq, Store, StoreError, ADOPTED};
use crate::event::StoredEvent;
use sled::Tree;
use std::sync::atomic::Ordering;
use tokio::sync::watch;

impl Store {
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
}

/// Tells a store's events from another store's: handed to sinks that keep their own position
/// (the JSONL file's last line), which resume from it only if this store wrote it. Cheap to
/// clone; reads only.
#[derive(Clone)]
pub struct Origin {
    pub(super) ids: Tree,
    pub(super) meta: Tree,
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

/// The outbox value of schema 2: `\0`, the subject's length (u16 BE), the subject, the line.
/// (A line is a JSON object, so a schema-1 value, the bare line, never starts with `\0`.)
pub(super) fn outbox_value(subject: &str, line: &[u8]) -> Vec<u8> {
    let subject = &subject.as_bytes()[..subject.len().min(u16::MAX as usize)];
    let mut v = Vec::with_capacity(3 + subject.len() + line.len());
    v.push(0);
    v.extend_from_slice(&(subject.len() as u16).to_be_bytes());
    v.extend_from_slice(subject);
    v.extend_from_slice(line);
    v
}

/// The subject (`None` in a schema-1 value) and the envelope line of an outbox value.
pub(super) fn split_outbox_value(v: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if let [0, hi, lo, rest @ ..] = v {
        let n = u16::from_be_bytes([*hi, *lo]) as usize;
        if n <= rest.len() {
            return (Some(&rest[..n]), &rest[n..]);
        }
    }
    (None, v)
}
