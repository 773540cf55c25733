//! Retention: [`Store::prune`] removes outbox events every configured sink has finished and
//! that are older than `retention`, oldest first, and attempt records behind a sink's ack.
//! Event ids stay (an id is never emitted twice); dead letters stay. A group whose first
//! events go and whose last stay is written again, holding the rest, under its new first seq.

use super::group::{self, Item};
use super::keys::{self, split_sink_key, OUTBOX};
use super::outbox::decode_group;
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
    /// the id index (see ARCHITECTURE.md: an id is never emitted twice, even after its event is
    /// pruned). Dead letters carry their own copy of the event and are kept.
    pub async fn prune(&self, before: Millis, sinks: &[String]) -> Result<Pruned, StoreError> {
        let mut acks = std::collections::HashMap::new();
        for s in sinks {
            acks.insert(s.clone(), self.acked(s)?);
        }
        let Some(min_ack) = acks.values().copied().min() else {
            return Ok(Pruned::default());
        };
        let (data, attempts, db) = (self.data.clone(), self.attempts.clone(), self.db.clone());
        let pruned = tokio::task::spawn_blocking(move || -> Result<Pruned, StoreError> {
            let _serial = SLED_WRITES.lock().unwrap_or_else(|p| p.into_inner());
            let mut pruned = Pruned::default();
            let mut ob = sled::Batch::default();
            'groups: for kv in data.scan_prefix([OUTBOX]) {
                let (k, v) = kv?;
                let first = keys::outbox_seq(&k)?;
                if first > min_ack {
                    break;
                }
                let g = decode_group(first, &v)?;
                let mut gone = 0;
                while gone < g.len() {
                    let seq = first + gone as u64;
                    let (_, line) = g.get(gone).expect("in range");
                    let detected = serde_json::from_slice::<crate::event::Envelope>(line)
                        .ok()
                        .and_then(|e| parse_timestamp(&e.detected_at))
                        .ok_or_else(|| StoreError::Corrupt(format!("outbox/{seq}")))?;
                    if seq > min_ack || detected >= before {
                        break;
                    }
                    gone += 1;
                }
                pruned.events += gone as u64;
                if gone == 0 {
                    break;
                }
                ob.remove(k);
                if gone < g.len() {
                    let items: Vec<Item> = (gone..g.len())
                        .map(|i| {
                            let (subject, line) = g.get(i).expect("in range");
                            Item { subject, line }
                        })
                        .collect();
                    ob.insert(&keys::outbox(first + gone as u64), group::encode(&items));
                    break 'groups;
                }
            }
            data.apply_batch(ob)?;
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
        .expect("the prune task panicked")?;
        if pruned.events > 0 {
            self.forget_group();
        }
        Ok(pruned)
    }
}
