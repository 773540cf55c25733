//! Per-sink delivery records: failed attempt counts (`attempts`, so `max_attempts` holds
//! across restarts) and dead letters (`dead`, each with its own copy of the envelope so that
//! pruning the outbox keeps it).

use super::keys::{sink_key, split_sink_key};
use super::{Store, StoreError};
use crate::event::StoredEvent;
use crate::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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

/// A dead letter's stored value: small JSON embedding the envelope line as it was.
#[derive(Serialize)]
struct DeadRecord<'a> {
    attempts: u32,
    at: Millis,
    error: &'a str,
    event: &'a RawValue,
}

#[derive(Deserialize)]
pub(super) struct DeadRead {
    attempts: u32,
    at: Millis,
    error: String,
    pub(super) event: Box<RawValue>,
}

impl Store {
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

    /// Removes a dead letter (after a replay delivered it).
    pub fn remove_dead(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.dead.remove(sink_key(sink, seq))?;
        Ok(())
    }
}
