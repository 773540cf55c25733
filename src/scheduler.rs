//! The daemon loop: tokio-cron-scheduler ticks each account on `schedule` (and a resync on
//! `resync_schedule`), one catch-up cycle runs at start, sink tasks feed from the outbox, and a
//! shutdown signal lets the cycles in flight finish before everything stops.
//!
//! Shutdown follows mini-redis: one `watch` flag every task listens to; `run` returns only
//! when the scheduler is stopped, cycles are idle, and sinks have caught up or given up.

use crate::config::Config;
use crate::engine::{Engine, Totals};
use crate::sinks;
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_cron_scheduler::{Job, JobScheduler};

/// How long sinks get to catch up at shutdown before the daemon exits anyway (what they miss
/// is delivered at the next start: the outbox keeps it).
const SINK_GRACE: Duration = Duration::from_secs(20);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Setup(String),
    #[error("scheduler: {0}")]
    Scheduler(String),
}

fn sched_err(e: impl std::fmt::Debug) -> DaemonError {
    DaemonError::Scheduler(format!("{e:?}"))
}

/// Opens the store and builds the engine: what `run` and `once` share.
pub fn open(config: &Config) -> Result<Arc<Engine>, DaemonError> {
    let store = Arc::new(Store::open(&config.daemon.state_dir)?);
    let engine = Engine::new(store, config).map_err(DaemonError::Setup)?;
    Ok(Arc::new(engine))
}

/// Runs the daemon until `shutdown` completes. Returns the engine's totals.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<Totals, DaemonError> {
    let engine = open(&config)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // The admin endpoint, the watchdog, READY=1: the config is valid and the store open.
    let mut service = crate::notify::Service::start(&config, &engine, stop_rx.clone())
        .await
        .map_err(DaemonError::Setup)?;

    let sink_tasks: Vec<_> = config
        .sinks
        .iter()
        .map(|s| {
            tokio::spawn(sinks::run(
                Arc::clone(engine.store()),
                sinks::build(s),
                stop_rx.clone(),
            ))
        })
        .collect();

    let mut sched = JobScheduler::new().await.map_err(sched_err)?;
    for idx in 0..engine.accounts().len() {
        let schedules = [
            Some((&config.daemon.schedule, false)),
            config.daemon.resync_schedule.as_ref().map(|s| (s, true)),
        ];
        for (schedule, resync) in schedules.into_iter().flatten() {
            let e = Arc::clone(&engine);
            let job = Job::new_async(schedule.0.as_str(), move |_, _| {
                let e = Arc::clone(&e);
                Box::pin(async move {
                    e.tick(idx, resync).await;
                })
            })
            .map_err(sched_err)?;
            sched.add(job).await.map_err(sched_err)?;
        }
    }
    tracing::info!(accounts = engine.accounts().len(), sinks = config.sinks.len(), schedule = %config.daemon.schedule.0,
        state_dir = %config.daemon.state_dir.display(), "pollhook running");

    // The catch-up cycle: whatever happened while the daemon was down, now.
    for idx in 0..engine.accounts().len() {
        let e = Arc::clone(&engine);
        tokio::spawn(async move { e.tick(idx, false).await });
    }
    sched.start().await.map_err(sched_err)?;

    shutdown.await;
    service.stopping();
    tracing::info!("shutting down: finishing the cycles in flight");
    sched.shutdown().await.map_err(sched_err)?;
    engine.wait_idle().await;
    let _ = stop_tx.send(true);
    let all = async {
        for t in sink_tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(SINK_GRACE, all).await.is_err() {
        tracing::warn!(
            "sinks did not catch up within {SINK_GRACE:?}; the rest is delivered at the next start"
        );
    }
    service.finish().await;
    engine.store().flush().await?;
    tracing::info!("stopped");
    Ok(engine.totals())
}

/// Completes on SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
