//! Retention: [`Store::prune`] removes outbox events every configured sink has finished and
//! that are older than `retention`, oldest first, and attempt records behind a sink's ack.
//! Event ids stay (an id is never emitted twice); dead letters stay.

use super::keys::{decode_seq, split_sink_key};
use super::outbox::split_outbox_value;
use super::{Store, StoreError, SLED_WRITES};
use crate::time::{parse_timestamp, Millis};

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub attempts: u64,
}

impl Store {
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
}
