//! Sinks: where committed events go, and the dispatchers that feed each sink from the outbox.
//!
//! Two shapes of sink share one front, [`Runner`]:
//! - a batch [`Sink`] (the JSONL file) takes runs of events, writes them durably and is acked
//!   per batch; a failure is retried with backoff, forever (a full disk heals);
//! - an [`Endpoint`] (hook, webhook, NATS) takes one event at a time and answers delivered /
//!   failed / gone; [`queue`] retries it on the sink's `retry_schedule`, makes it a dead letter after
//!   `max_attempts`, and keeps order (in-order, or per document with `concurrency`).
//!
//! Every sink has its own ack cursor in the store and its own task, so a slow or failing sink
//! never delays another sink or the poller. The ack only ever covers a contiguous prefix of
//! finished events (delivered, filtered out, or dead-lettered); after a crash the dispatcher
//! resumes after it (at-least-once; the JSONL sink makes it effectively-once by reading its own
//! tail). This module never talks to providers, and never moves an ack backwards: replays go
//! straight through the sink ([`replay`]).

pub mod hook;
pub mod jsonl;
pub mod nats;
pub mod queue;
pub mod replay;
pub mod tail;
pub mod webhook;

use crate::backoff::{Backoff, Retry};
use crate::config::{Delivery, Filter, Sink as SinkConfig, SinkKind};
use crate::event::{Envelope, StoredEvent};
use crate::shutdown::Stop;
use crate::store::{Origin, Store, StoreError};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Events read from the outbox per batch delivery.
const BATCH: usize = 512;
/// After a failed batch delivery (a full disk heals): 1 s, doubling, at most a minute.
const BATCH_RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// A batch delivery that did not complete.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// How many of the offered events were durably delivered before the failure.
    pub delivered: usize,
    pub message: String,
}

/// A destination that takes events in batches (the JSONL file).
///
/// `deliver` gets events in seq order, some possibly already delivered before a crash (the
/// sink may skip those it can recognise). `Ok(())` means every event offered is durably
/// delivered and may be acked; `Err` says how many leading events were, and why the rest failed:
/// they will be offered again.
pub trait Sink: Send {
    fn name(&self) -> &str;
    fn deliver<'a>(&'a mut self, events: &'a [StoredEvent])
        -> BoxFuture<'a, Result<(), SinkError>>;
    /// The store it delivers from, handed over before every drain. A sink that keeps its own
    /// position (the JSONL file's last line) resumes from it only if `origin` wrote it, and
    /// fails the delivery otherwise: a seq means nothing in another store.
    fn attach(&mut self, _origin: &Origin) {}
}

/// One delivery attempt of one event.
#[derive(Debug, Clone)]
pub struct Job {
    pub event: Arc<StoredEvent>,
    pub envelope: Arc<Envelope>,
    /// 1-based; counts attempts across restarts.
    pub attempt: u32,
}

/// What an [`Endpoint`] made of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The consumer has it: ack.
    Delivered,
    /// Try again later: after `retry_after` when the consumer asked for it (already capped),
    /// else on the sink's retry schedule.
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
    /// The consumer will never take it (410 Gone): a dead letter now, no retries.
    Gone { error: String },
    /// The daemon's shutdown cut the attempt (or kept it from starting): the event stays
    /// unfinished and unacknowledged, no attempt is counted, and it is delivered after the
    /// next start.
    Interrupted { error: String },
}

/// A destination that takes one event at a time (hook, webhook).
///
/// `deliver` must return within the sink's own timeout and must be safe to call concurrently
/// for different events (per-document ordering runs several at once). Dropping the future
/// cancels the attempt and must leave nothing running (a hook's process group is killed).
pub trait Endpoint: Send + Sync {
    fn deliver(&self, job: Job) -> BoxFuture<'_, Outcome>;

    /// Runs before the dispatcher delivers anything after the ack cursor `acked` (it is
    /// retried until it succeeds). An endpoint that can see what its destination already holds
    /// (NATS) learns it here, so that nothing after the ack is delivered twice.
    fn prepare<'a>(&'a self, _store: &'a Store, _acked: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// A configured sink ready to run: its name (which keys its ack cursor), its filter, and
/// its delivery machinery.
pub struct Runner {
    name: String,
    filter: Filter,
    kind: RunnerKind,
}

enum RunnerKind {
    Batch(Box<dyn Sink>),
    Queue {
        endpoint: Arc<dyn Endpoint>,
        delivery: Delivery,
    },
}

impl Runner {
    /// A batch sink behind a filter.
    pub fn batch(filter: Filter, sink: Box<dyn Sink>) -> Runner {
        Runner {
            name: sink.name().to_string(),
            filter,
            kind: RunnerKind::Batch(sink),
        }
    }

    /// A per-event endpoint with its retry and ordering policy.
    pub fn queue(
        name: &str,
        filter: Filter,
        endpoint: Arc<dyn Endpoint>,
        delivery: Delivery,
    ) -> Runner {
        Runner {
            name: name.to_string(),
            filter,
            kind: RunnerKind::Queue { endpoint, delivery },
        }
    }

    /// The sink's name, which keys its ack cursor, attempts and dead letters.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The endpoint of a hook, webhook or NATS sink (`None` for a batch sink).
    pub fn endpoint(&self) -> Option<&Arc<dyn Endpoint>> {
        match &self.kind {
            RunnerKind::Queue { endpoint, .. } => Some(endpoint),
            RunnerKind::Batch(_) => None,
        }
    }
}

/// Why a sink could not be built from its config, by phase.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A secret (webhook secret, NATS credential) cannot be read.
    #[error("sink {sink}: {source}")]
    Secret {
        sink: String,
        source: crate::config::ResolveError,
    },
    /// A secret was read but is not what the sink needs (not `whsec_` + base64, not a NATS
    /// credentials file); `message` names where it is configured.
    #[error("sink {sink}: {message}")]
    BadSecret { sink: String, message: String },
    /// A file the sink's config names (a TLS certificate or key) cannot be read.
    #[error("sink {sink}: cannot read {}: {source}", path.display())]
    File {
        sink: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("sink {sink}: cannot build the HTTP client: {source}")]
    Client {
        sink: String,
        source: reqwest::Error,
    },
}

impl BuildError {
    /// Whether the config is at fault (a secret or file it names), not the machine: what
    /// `check-config` reports too.
    pub fn is_config(&self) -> bool {
        !matches!(self, BuildError::Client { .. })
    }
}

/// Builds the sink a config entry describes. Resolves webhook and NATS secrets (the error
/// names the config location and the source, never a value). Connects to nothing.
pub fn build(cfg: &SinkConfig) -> Result<Runner, BuildError> {
    build_with(cfg, &Stop::never(), &jsonl::Reopen::default())
}

/// [`build`], for the daemon: a hook sink terminates its running hooks (SIGTERM, then
/// SIGKILL) and starts none once `stop` is set; a JSONL sink reopens its file whenever
/// `reopen` fires (SIGHUP).
pub fn build_with(
    cfg: &SinkConfig,
    stop: &Stop,
    reopen: &jsonl::Reopen,
) -> Result<Runner, BuildError> {
    Ok(match &cfg.kind {
        SinkKind::Jsonl(j) => Runner::batch(
            cfg.filter.clone(),
            Box::new(
                jsonl::JsonlSink::new(&cfg.name, &j.path)
                    .rotate(j.rotate_bytes, j.rotate_keep)
                    .mode(j.mode)
                    .reopen_on(reopen),
            ),
        ),
        SinkKind::Hook(h) => Runner::queue(
            &cfg.name,
            cfg.filter.clone(),
            Arc::new(hook::Hook::new(&cfg.name, h).with_stop(stop.clone())),
            h.delivery.clone(),
        ),
        SinkKind::Webhook(w) => Runner::queue(
            &cfg.name,
            cfg.filter.clone(),
            Arc::new(webhook::Webhook::new(&cfg.name, w)?),
            w.delivery.clone(),
        ),
        SinkKind::Nats(n) => Runner::queue(
            &cfg.name,
            cfg.filter.clone(),
            Arc::new(nats::Nats::new(&cfg.name, n)?),
            n.delivery.clone(),
        ),
    })
}

/// Checks, before anything runs, that every sink that keeps its own position (JSONL) can
/// resume from it with `store`: see [`jsonl::check`]. The error says what to do.
pub fn check_positions(store: &Store, sinks: &[SinkConfig]) -> Result<(), jsonl::PositionError> {
    let origin = store.origin();
    for s in sinks {
        if let SinkKind::Jsonl(j) = &s.kind {
            jsonl::check(&s.name, &j.path, j.rotate_bytes.is_some(), &origin)?;
        }
    }
    Ok(())
}

/// Why a drain stopped.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("sink {sink}: {source}")]
    Sink { sink: String, source: SinkError },
    #[error("sink {sink}: {pending} event(s) failed and wait for a retry (the next is due in {next_in:?}); last error: {error}")]
    Retrying {
        sink: String,
        pending: usize,
        next_in: Duration,
        error: String,
    },
    #[error("sink {sink}: the outbox holds an unreadable event at seq {seq}: {message}")]
    Unreadable {
        sink: String,
        seq: u64,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Delivers everything committed so far to the sink, then flushes the acks; returns how many
/// events were delivered (filtered-out events are acked but not counted). A hook, webhook or NATS
/// event that fails is recorded and left for its retry (it makes the drain an error unless
/// every such event became a dead letter).
pub async fn drain(store: &Store, runner: &mut Runner) -> Result<u64, DrainError> {
    match &mut runner.kind {
        RunnerKind::Batch(sink) => drain_batch(store, &runner.filter, sink.as_mut()).await,
        RunnerKind::Queue { endpoint, delivery } => {
            queue::Queue::new(&runner.name, &runner.filter, endpoint.clone(), delivery)
                .drain(store)
                .await
        }
    }
}

/// Feeds the sink for the life of the daemon. On `shutdown` it makes one last attempt to
/// catch up (without waiting out retry backoffs), then returns.
pub async fn run(store: Arc<Store>, runner: Runner, shutdown: watch::Receiver<bool>) {
    match runner.kind {
        RunnerKind::Batch(sink) => run_batch(store, &runner.filter, sink, shutdown).await,
        RunnerKind::Queue { endpoint, delivery } => {
            queue::Queue::new(&runner.name, &runner.filter, endpoint, &delivery)
                .run(store, shutdown)
                .await
        }
    }
}

async fn drain_batch(
    store: &Store,
    filter: &Filter,
    sink: &mut dyn Sink,
) -> Result<u64, DrainError> {
    sink.attach(&store.origin());
    let mut delivered = 0u64;
    loop {
        let acked = store.acked(sink.name())?;
        let mut events = store.read_outbox(acked, BATCH)?;
        let Some(last) = events.last().map(|e| e.seq) else {
            if delivered > 0 {
                store.flush().await?;
            }
            return Ok(delivered);
        };
        if !filter.is_all() {
            let mut kept = Vec::with_capacity(events.len());
            for e in events {
                let env = e.envelope().map_err(|err| DrainError::Unreadable {
                    sink: sink.name().to_string(),
                    seq: e.seq,
                    message: err.to_string(),
                })?;
                if filter.matches(&env.event_type, &env.account) {
                    kept.push(e);
                }
            }
            events = kept;
        }
        match sink.deliver(&events).await {
            Ok(()) => {
                store.ack(sink.name(), last)?;
                delivered += events.len() as u64;
            }
            Err(e) => {
                // Everything before the first event not delivered is finished (delivered or
                // filtered out).
                let upto = events.get(e.delivered).map(|f| f.seq - 1).unwrap_or(last);
                if upto > acked {
                    store.ack(sink.name(), upto)?;
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

async fn run_batch(
    store: Arc<Store>,
    filter: &Filter,
    mut sink: Box<dyn Sink>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut committed = store.subscribe();
    let mut retry = Retry::new(BATCH_RETRY);
    loop {
        let stopping = *shutdown.borrow();
        committed.borrow_and_update();
        match drain_batch(&store, filter, sink.as_mut()).await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(sink = sink.name(), events = n, "delivered");
                }
                retry.reset();
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = committed.changed() => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                let wait = retry.failed();
                tracing::error!(sink = sink.name(), error = %e, retry_in = ?wait, "delivery failed; nothing after the failure is acknowledged, retrying");
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

#[cfg(test)]
pub mod testutil {
    //! A recording sink for tests.
    use super::*;
    use std::sync::Mutex;

    /// An event to commit: `n` makes its id, `tag` keeps ids of different tests apart.
    pub fn new_event(tag: &str, n: u32) -> crate::event::NewEvent {
        crate::event::NewEvent {
            id: crate::event::event_id(&[tag, &n.to_string()]),
            provider: "caminvoice",
            account: "a".into(),
            event_type: "T".into(),
            occurred_at: 0,
            detected_at: 0,
            subject: "s".into(),
            payload: "{}".into(),
        }
    }

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
    use crate::event::NewEvent;
    use crate::store::Batch;

    fn ev(n: u32) -> NewEvent {
        super::testutil::new_event("s", n)
    }

    #[tokio::test]
    async fn drain_acks_what_was_delivered_and_resumes_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .commit(Batch::of_events((1..=3).map(ev).collect()))
            .await
            .unwrap();
        let recording = Recording::default();
        *recording.fail.lock().unwrap() = 1;
        let mut sink = Runner::batch(Filter::default(), Box::new(recording.clone()));
        let e = drain(&store, &mut sink).await.unwrap_err();
        assert!(e.to_string().contains("injected"));
        assert_eq!(store.acked("recording").unwrap(), 1);
        assert_eq!(drain(&store, &mut sink).await.unwrap(), 2);
        assert_eq!(*recording.seen.lock().unwrap(), vec![1, 2, 3]);
        assert_eq!(drain(&store, &mut sink).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_batch_sink_behind_a_filter_gets_only_matching_events_and_acks_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut events: Vec<NewEvent> = (1..=4).map(ev).collect();
        events[1].event_type = "DOCUMENT.DELIVERED".into();
        events[3].account = "other".into();
        events[3].event_type = "DOCUMENT.RECEIVED".into();
        store.commit(Batch::of_events(events)).await.unwrap();
        let recording = Recording::default();
        let filter = Filter {
            events: vec!["DOCUMENT.*".into()],
            accounts: vec!["a".into()],
        };
        let mut sink = Runner::batch(filter, Box::new(recording.clone()));
        assert_eq!(drain(&store, &mut sink).await.unwrap(), 1);
        assert_eq!(*recording.seen.lock().unwrap(), vec![2]);
        assert_eq!(store.acked("recording").unwrap(), 4);
    }
}
