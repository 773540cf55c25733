//! Reading the outbox: events by seq out of their groups, their subjects (the per-document
//! ordering key), the id index, the durable head a `watch` announces, each sink's ack; and
//! [`Origin`], what a sink that keeps its own position asks to know whether this store wrote
//! an event.

use super::codec::{event_id_bytes, get_uvarint};
use super::group::{self, Group};
use super::idset;
use super::keys::{self, decode_seq, OUTBOX};
use super::{Store, StoreError, ADOPTED};
use crate::event::StoredEvent;
use sled::Tree;
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
        let from = match self.group_at(after + 1)? {
            Some((first, _)) => first,
            None => after + 1,
        };
        for kv in self.data.range(keys::outbox(from)..keys::outbox(u64::MAX)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let first = keys::outbox_seq(&k)?;
            let g = decode_group(first, &v)?;
            for i in 0..g.len() {
                let seq = first + i as u64;
                if seq <= after {
                    continue;
                }
                if out.len() >= limit {
                    break;
                }
                let (_, line) = g.get(i).expect("in range");
                out.push(StoredEvent {
                    seq,
                    line: line.to_vec(),
                });
            }
        }
        Ok(out)
    }

    /// The group holding `seq`, if it is still there: (its first seq, the group).
    fn group_at(&self, seq: u64) -> Result<Option<(u64, Arc<Group>)>, StoreError> {
        if let Some((first, g)) = self
            .last_group
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if (*first..*first + g.len() as u64).contains(&seq) {
                return Ok(Some((*first, Arc::clone(g))));
            }
        }
        let Some(kv) = self
            .data
            .range(keys::outbox(0)..=keys::outbox(seq))
            .next_back()
        else {
            return Ok(None);
        };
        let (k, v) = kv?;
        let first = keys::outbox_seq(&k)?;
        let n = group::count(&v).map_err(|_| corrupt_group(first))?;
        if seq >= first.saturating_add(n) {
            return Ok(None);
        }
        let g = Arc::new(decode_group(first, &v)?);
        *self.last_group.lock().unwrap_or_else(|p| p.into_inner()) = Some((first, Arc::clone(&g)));
        Ok(Some((first, g)))
    }

    /// Forgets the group read last (after pruning changed the outbox).
    pub(super) fn forget_group(&self) {
        *self.last_group.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// One outbox event, if it is still there (not pruned).
    pub fn event(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        Ok(self.group_at(seq)?.map(|(first, g)| StoredEvent {
            seq,
            line: g.get((seq - first) as usize).expect("in range").1.to_vec(),
        }))
    }

    /// The seq an event id was committed under (ids are kept after their event is pruned).
    pub fn seq_of(&self, id: &str) -> Result<Option<u64>, StoreError> {
        seq_of(&self.data, id)
    }

    /// The oldest seq still in the outbox.
    pub fn first_seq(&self) -> Result<Option<u64>, StoreError> {
        match self.data.scan_prefix([OUTBOX]).next() {
            Some(kv) => Ok(Some(keys::outbox_seq(&kv?.0)?)),
            None => Ok(None),
        }
    }

    /// The per-document ordering key of `seq`: `account \0 subject`. `None` when the event is
    /// gone, or was carried in by a restore without one; callers treat those as one shared
    /// subject.
    pub fn subject(&self, seq: u64) -> Result<Option<String>, StoreError> {
        Ok(self.group_at(seq)?.and_then(|(first, g)| {
            let (subject, _) = g.get((seq - first) as usize).expect("in range");
            (!subject.is_empty()).then(|| String::from_utf8_lossy(subject).into_owned())
        }))
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

pub(super) fn decode_group(first: u64, v: &[u8]) -> Result<Group, StoreError> {
    group::decode(v).map_err(|_| corrupt_group(first))
}

fn corrupt_group(first: u64) -> StoreError {
    StoreError::Corrupt(format!("outbox group {first}"))
}

/// The seq event `id` was committed under, in the `data` tree `data`.
pub(super) fn seq_of(data: &Tree, id: &str) -> Result<Option<u64>, StoreError> {
    match event_id_bytes(id) {
        Some(b) => {
            let (head, rest) = idset::split(&b);
            match data.get(keys::id_bucket(head))? {
                None => Ok(None),
                Some(v) => idset::find(&v, &rest)
                    .map_err(|_| StoreError::Corrupt(format!("event id bucket {head:02x?}"))),
            }
        }
        None => match data.get(keys::text_id(id))? {
            None => Ok(None),
            Some(v) => match get_uvarint(&v) {
                Some((seq, n)) if n == v.len() => Ok(Some(seq)),
                _ => Err(StoreError::Corrupt(format!("the seq of event {id}"))),
            },
        },
    }
}

/// Tells a store's events from another store's: handed to sinks that keep their own position
/// (the JSONL file's last line), which resume from it only if this store wrote it. Cheap to
/// clone; reads only.
#[derive(Clone)]
pub struct Origin {
    pub(super) data: Tree,
}

impl Origin {
    /// Whether this store committed event `id` at `seq`, or adopted it at a reset as the last
    /// line of a file written before it. Ids are never pruned, so this holds for old events.
    pub fn wrote(&self, id: &str, seq: u64) -> Result<bool, StoreError> {
        if self.seq_of(id)? == Some(seq) {
            return Ok(true);
        }
        let mut name = ADOPTED.to_vec();
        name.extend_from_slice(id.as_bytes());
        Ok(match self.data.get(keys::meta(&name))? {
            Some(v) => decode_seq(&v)? == seq,
            None => false,
        })
    }

    /// The seq this store committed event `id` under.
    pub fn seq_of(&self, id: &str) -> Result<Option<u64>, StoreError> {
        seq_of(&self.data, id)
    }
}
