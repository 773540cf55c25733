//! Sinks: where committed events go, and the dispatcher that feeds each sink from the outbox.
//!
//! Each sink has its own ack cursor in the store and its own task, so a slow or failing sink
//! never delays another sink or the poller. Delivery is in commit order; after a crash the
//! dispatcher resumes after the sink's last ack (at-least-once; the JSONL sink makes it
//! effectively-once by reading its own tail).

pub mod jsonl;

use crate::config::{Sink as SinkConfig, SinkKind};
use crate::event::StoredEvent;
use crate::providers::BoxFuture;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Events read from the outbox per delivery.
const BATCH: usize = 512;
/// Backoff bounds after a failed delivery.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// A delivery that did not complete.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// How many of the offered events were durably delivered before the failure.
    pub delivered: usize,
    pub message: String,
}

/// A destination for events.
///
/// `deliver` gets events in seq order, some possibly already delivered before a crash (the
/// sink may skip those it can recognise). `Ok(())` means every event offered is durably
/// delivered and may be acked; `Err` says how many leading events were, and why the rest failed:
/// they will be offered again.
pub trait Sink: Send {
    fn name(&self) -> &str;
    fn deliver<'a>(&'a mut self, events: &'a [StoredEvent])
        -> BoxFuture<'a, Result<(), SinkError>>;
}

/// Builds the sink a config entry describes.
pub fn build(cfg: &SinkConfig) -> Box<dyn Sink> {
    match &cfg.kind {
        SinkKind::Jsonl { path } => Box::new(jsonl::JsonlSink::new(&cfg.name, path)),
    }
}

/// Why a drain stopped.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("sink {sink}: {source}")]
    Sink { sink: String, source: SinkError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Delivers everything committed so far to `sink`, then flushes the acks; returns how many
/// events were delivered.
pub async fn drain(store: &Store, sink: &mut dyn Sink) -> Result<u64, DrainError> {
    let mut delivered = 0u64;
    loop {
        let acked = store.acked(sink.name())?;
        let events = store.read_outbox(acked, BATCH)?;
        let Some(last) = events.last().map(|e| e.seq) else {
            if delivered > 0 {
                store.flush().await?;
            }
            return Ok(delivered);
        };
        match sink.deliver(&events).await {
            Ok(()) => {
                store.ack(sink.name(), last)?;
                delivered += events.len() as u64;
            }
            Err(e) => {
                if e.delivered > 0 {
                    store.ack(sink.name(), events[e.delivered - 1].seq)?;
                    store.flush().await?;
                }
                return Err(DrainError::Sink {
                    sink: sink.name().to_string(),
                    source: e,
                });
            }
        }
    }
}

/// Feeds `sink` for the life of the daemon: drains, waits for new commits, retries failures
/// with backoff. On `shutdown` it makes one last attempt to catch up, then returns.
pub async fn run(store: Arc<Store>, mut sink: Box<dyn Sink>, mut shutdown: watch::Receiver<bool>) {
    let mut committed = store.subscribe();
    let mut wait = RETRY_MIN;
    loop {
        let stopping = *shutdown.borrow();
        match drain(&store, sink.as_mut()).await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(sink = sink.name(), events = n, "delivered");
                }
                wait = RETRY_MIN;
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = committed.changed() => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(sink = sink.name(), error = %e, retry_in = ?wait, "delivery failed; nothing after the failure is acknowledged, retrying");
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
pub mod testutil {
    //! A recording sink for tests.
    use super::*;
    use std::sync::Mutex;

    /// Records what it is given; fails the next `fail` deliveries.
    #[derive(Clone, Default)]
    pub struct Recording {
        pub seen: Arc<Mutex<Vec<u64>>>,
        pub fail: Arc<Mutex<u32>>,
    }

    impl Sink for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        fn deliver<'a>(
            &'a mut self,
            events: &'a [StoredEvent],
        ) -> BoxFuture<'a, Result<(), SinkError>> {
            Box::pin(async move {
                let mut fail = self.fail.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    self.seen.lock().unwrap().push(events[0].seq);
                    return Err(SinkError {
                        delivered: 1,
                        message: "injected".into(),
                    });
                }
                self.seen
                    .lock()
                    .unwrap()
                    .extend(events.iter().map(|e| e.seq));
                Ok(())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::Recording;
    use super::*;
    use crate::event::{event_id, NewEvent};
    use crate::store::Batch;

    fn ev(n: u32) -> NewEvent {
        NewEvent {
            id: event_id(&["s", &n.to_string()]),
            provider: "caminvoice",
            account: "a".into(),
            event_type: "T".into(),
            occurred_at: 0,
            detected_at: 0,
            subject: "s".into(),
            payload: "{}".into(),
        }
    }

    #[tokio::test]
    async fn drain_acks_what_was_delivered_and_resumes_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .commit(Batch {
                events: (1..=3).map(ev).collect(),
                ..Batch::default()
            })
            .await
            .unwrap();
        let mut sink = Recording::default();
        *sink.fail.lock().unwrap() = 1;
        let e = drain(&store, &mut sink).await.unwrap_err();
        assert!(e.to_string().contains("injected"));
        assert_eq!(store.acked("recording").unwrap(), 1);
        assert_eq!(drain(&store, &mut sink).await.unwrap(), 2);
        assert_eq!(*sink.seen.lock().unwrap(), vec![1, 2, 3]);
        assert_eq!(drain(&store, &mut sink).await.unwrap(), 0);
    }
}
