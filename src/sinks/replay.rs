//! Replay: re-delivers chosen events straight through a hook or webhook sink, with the same
//! event ids (so consumers that dedupe see the same `webhook-id` / `POLLHOOK_EVENT_ID`).
//!
//! A replay never moves an ack cursor: the daemon's own delivery state is untouched, so a
//! replay can neither skip nor re-order what the daemon still has to deliver. A dead letter
//! that a replay delivers is removed; one that fails again is kept with the new error. Each
//! event gets one attempt per replay (no retry schedule: the operator is watching).
//! This module reads the store and calls the sink; it never touches the JSONL file (that sink
//! keeps every event in its file already, so it is not replayable).

use super::{Job, Outcome, Runner};
use crate::event::StoredEvent;
use crate::store::{DeadLetter, Store, StoreError};
use crate::time::{now_ms, parse_timestamp, Millis};
use std::sync::Arc;

/// Which events to re-deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every outbox event detected at or after this instant that the sink's filter passes.
    Since(Millis),
    /// One event, by id (even if the sink's filter would skip it: it was asked for by name).
    Id(String),
    /// The sink's dead letters.
    Dead,
}

/// One event's replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub seq: u64,
    pub id: String,
    /// `None` when delivered.
    pub error: Option<String>,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Report {
    pub events: Vec<Replayed>,
    /// Events in the time range that the sink's filter skips.
    pub filtered: usize,
    /// The oldest seq still in the outbox (older events were pruned), for `Since`.
    pub oldest: Option<u64>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.events.iter().filter(|e| e.error.is_some()).count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("sink {0} is a JSONL sink: its file already holds every event (find one with grep on its id); replay re-delivers to hook and webhook sinks")]
    NotReplayable(String),
    #[error("no event {0} in the store; `pollhook events list` shows the ids")]
    UnknownId(String),
    #[error("event {id} (seq {seq}) was pruned after the retention window (`retention` in [daemon]); it can no longer be replayed")]
    Pruned { id: String, seq: u64 },
    #[error("the outbox holds an unreadable event at seq {0}")]
    Unreadable(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Re-delivers the selected events through `runner`, one attempt each, in seq order.
pub async fn replay(
    store: &Store,
    runner: &Runner,
    selection: Selection,
) -> Result<Report, ReplayError> {
    let endpoint = runner
        .endpoint()
        .ok_or_else(|| ReplayError::NotReplayable(runner.name().to_string()))?;
    let sink = runner.name();
    let mut report = Report::default();
    // The dead letters of this sink, so a replay that delivers one also clears it.
    let mut dead: std::collections::HashMap<u64, DeadLetter> = store
        .dead_letters(Some(sink))?
        .into_iter()
        .map(|d| (d.event.seq, d))
        .collect();
    let chosen: Vec<StoredEvent> = match &selection {
        Selection::Dead => {
            let mut v: Vec<StoredEvent> = dead.values().map(|d| d.event.clone()).collect();
            v.sort_by_key(|e| e.seq);
            v
        }
        Selection::Id(id) => {
            let seq = store
                .seq_of(id)?
                .ok_or_else(|| ReplayError::UnknownId(id.clone()))?;
            match store
                .event(seq)?
                .or_else(|| dead.get(&seq).map(|d| d.event.clone()))
            {
                Some(e) => vec![e],
                None => {
                    return Err(ReplayError::Pruned {
                        id: id.clone(),
                        seq,
                    })
                }
            }
        }
        Selection::Since(since) => {
            report.oldest = store.first_seq()?;
            let mut v = Vec::new();
            let mut after = 0;
            loop {
                let batch = store.read_outbox(after, 512)?;
                let Some(last) = batch.last() else { break };
                after = last.seq;
                for e in batch {
                    let env = e.envelope().map_err(|_| ReplayError::Unreadable(e.seq))?;
                    if parse_timestamp(&env.detected_at).map_or(true, |t| t < *since) {
                        continue;
                    }
                    if runner.filter().matches(&env.event_type, &env.account) {
                        v.push(e);
                    } else {
                        report.filtered += 1;
                    }
                }
            }
            v
        }
    };
    for event in chosen {
        let envelope = event
            .envelope()
            .map_err(|_| ReplayError::Unreadable(event.seq))?;
        let was_dead = dead.remove(&event.seq);
        let attempt = was_dead.as_ref().map(|d| d.attempts + 1).unwrap_or(1);
        let (seq, id) = (event.seq, envelope.id.clone());
        let event = Arc::new(event);
        let job = Job {
            event: Arc::clone(&event),
            envelope: Arc::new(envelope),
            attempt,
        };
        let error = match endpoint.deliver(job).await {
            Outcome::Delivered => None,
            Outcome::Failed { error, .. }
            | Outcome::Gone { error }
            | Outcome::Interrupted { error } => Some(error),
        };
        match (&error, was_dead) {
            (None, Some(_)) => store.remove_dead(sink, seq)?,
            (Some(e), Some(d)) => store.put_dead(&DeadLetter {
                attempts: attempt,
                error: e.clone(),
                at: now_ms(),
                ..d
            })?,
            _ => {}
        }
        match &error {
            None => tracing::info!(sink, seq, event_id = %id, "replayed"),
            Some(e) => tracing::warn!(sink, seq, event_id = %id, error = %e, "replay failed"),
        }
        report.events.push(Replayed { seq, id, error });
    }
    store.flush().await?;
    Ok(report)
}
