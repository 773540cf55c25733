//! The daemon loop: tokio-cron-scheduler ticks each account on `schedule` (and a resync on
//! `resync_schedule`), one catch-up cycle runs at start, sink tasks feed from the outbox, and a
//! shutdown signal lets the cycles in flight finish before everything stops.
//!
//! Shutdown follows mini-redis — flags every task listens to — on a timeline with a budget
//! well inside systemd's `TimeoutStopSec=90s` (README, "Stopping"): at the signal, HTTP stops
//! (no new request or retry; requests in flight are abandoned) and ticks stop; cycles get
//! [`CYCLE_GRACE`] to commit what they finished; sinks then get [`SINK_GRACE`] to catch up,
//! and hooks still running [`hook::TERM_GRACE`] before its end get SIGTERM, then SIGKILL at
//! its end. At most [`STOP_BUDGET`] in all; nothing unfinished is acked, and what was not
//! committed is polled again at the next start. A second SIGTERM or SIGINT exits at once
//! ([`signal`]).
//! Two housekeeping tasks run beside them: SIGHUP fires the [`Reopen`](sinks::jsonl::Reopen)
//! handle the JSONL sinks were built with, so they reopen their files (logrotate), and the
//! outbox is pruned of events past `retention` at start and hourly. The service side (admin
//! endpoint, watchdog, READY/STOPPING) starts and stops in `service`.

mod service;

use crate::config::Config;
use crate::engine::{Engine, Totals};
use crate::shutdown::Stop;
use crate::sinks::{self, hook};
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_cron_scheduler::{Job, JobScheduler};

/// After the stop signal, how long cycles get to end. They send nothing more from the signal
/// on, so this bounds only work already in hand (a commit, a DNS lookup).
pub const CYCLE_GRACE: Duration = Duration::from_secs(10);
/// How long sinks get to catch up at shutdown before the daemon exits anyway (what they miss
/// is delivered at the next start: the outbox keeps it). Hooks still running
/// [`hook::TERM_GRACE`] before its end get SIGTERM; at its end, SIGKILL.
pub const SINK_GRACE: Duration = Duration::from_secs(15);
/// The longest shutdown: cycles, sinks, and a little for the final flush. systemd's unit
/// allows 90 s (`TimeoutStopSec`).
pub const STOP_BUDGET: Duration = Duration::from_secs(30);
/// How often the outbox is pruned (and once at start). Retention is counted in days; an hour
/// late is nothing, and a prune scans only the prunable head of the outbox.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Why the daemon could not run, by phase. The CLI picks the exit code and the hint from the
/// variant (`cli::Failure`).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store cannot be opened (held by another process, unreadable, refused as damaged
    /// or replaced, of a newer schema), or a write failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A sink's own position does not belong to the store, or cannot be read (see
    /// `sinks::check_positions`).
    #[error(transparent)]
    Positions(#[from] sinks::jsonl::PositionError),
    /// An account's provider client cannot be built (a secret cannot be read).
    #[error(transparent)]
    Provider(#[from] crate::providers::BuildError),
    /// A sink cannot be built (a secret or file it names, or its HTTP client).
    #[error(transparent)]
    Sink(#[from] sinks::BuildError),
    /// The admin endpoint cannot start.
    #[error(transparent)]
    Admin(#[from] crate::admin::StartError),
    /// tokio-cron-scheduler failed `while` doing something.
    #[error("the scheduler failed while {while_}: {source}")]
    Scheduler {
        while_: &'static str,
        source: tokio_cron_scheduler::JobSchedulerError,
    },
}

/// A scheduler error, saying what the daemon was doing.
fn sched_err(
    while_: &'static str,
) -> impl Fn(tokio_cron_scheduler::JobSchedulerError) -> DaemonError {
    move |source| DaemonError::Scheduler { while_, source }
}

/// Opens the store and builds the engine: what `run` and `once` share.
pub fn open(config: &Config) -> Result<Arc<Engine>, DaemonError> {
    open_with_stop(config, &Stop::never())
}

fn open_with_stop(config: &Config, stop: &Stop) -> Result<Arc<Engine>, DaemonError> {
    let store = Arc::new(Store::open(&config.daemon.state_dir)?);
    sinks::check_positions(&store, &config.sinks)?;
    let engine = Engine::with_stop(store, config, stop)?;
    Ok(Arc::new(engine))
}

/// Runs the daemon until `shutdown` completes. Returns the engine's totals.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<Totals, DaemonError> {
    // Fired at the signal: providers send nothing more.
    let (stop_polls, polls_stopped) = crate::shutdown::channel();
    // Fired near the end of the sinks' grace: hooks still running are terminated.
    let (stop_hooks, hooks_stopped) = crate::shutdown::channel();
    let engine = open_with_stop(&config, &polls_stopped)?;
    // Fired at every SIGHUP: JSONL sinks reopen their files (logrotate).
    let reopen = sinks::jsonl::Reopen::default();
    let mut runners = Vec::new();
    for s in &config.sinks {
        runners.push(sinks::build_with(s, &hooks_stopped, &reopen)?);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // The admin endpoint, the watchdog, READY=1: the config is valid (every secret read, every
    // sink built) and the store open.
    let mut service = service::Service::start(&config, &engine, stop_rx.clone()).await?;
    let sink_tasks: Vec<_> = runners
        .into_iter()
        .map(|r| tokio::spawn(sinks::run(Arc::clone(engine.store()), r, stop_rx.clone())))
        .collect();
    let hup = tokio::spawn(reopen_on_sighup(
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()),
        reopen,
    ));
    let pruner = {
        let (store, config, mut stop) =
            (Arc::clone(engine.store()), config.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                prune(&store, &config).await;
                tokio::select! {
                    _ = tokio::time::sleep(PRUNE_EVERY) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    };

    let mut sched = JobScheduler::new().await.map_err(sched_err("setting up"))?;
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
            .map_err(sched_err("reading a schedule"))?;
            sched
                .add(job)
                .await
                .map_err(sched_err("adding an account's schedule"))?;
        }
    }
    tracing::info!(accounts = engine.accounts().len(), sinks = config.sinks.len(), schedule = %config.daemon.schedule.0,
        state_dir = %config.daemon.state_dir.display(), "pollhook running");

    // The catch-up cycle: whatever happened while the daemon was down, now.
    for idx in 0..engine.accounts().len() {
        let e = Arc::clone(&engine);
        tokio::spawn(async move { e.tick(idx, false).await });
    }
    sched.start().await.map_err(sched_err("starting"))?;

    shutdown.await;
    let began = std::time::Instant::now();
    service.stopping();
    stop_polls.fire();
    tracing::info!(
        budget = ?STOP_BUDGET,
        "shutting down: no new requests; cycles commit what they finished, then sinks catch up"
    );
    sched.shutdown().await.map_err(sched_err("stopping"))?;
    if tokio::time::timeout(CYCLE_GRACE, engine.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!("cycles still busy after {CYCLE_GRACE:?}; stopping without them (what they did not commit is polled again at the next start)");
    }
    let _ = stop_tx.send(true);
    hup.abort();
    pruner.abort();
    let all = async {
        for t in sink_tasks {
            let _ = t.await;
        }
    };
    tokio::pin!(all);
    let caught_up = tokio::select! {
        _ = &mut all => true,
        _ = tokio::time::sleep(SINK_GRACE - hook::TERM_GRACE) => {
            stop_hooks.fire();
            tokio::time::timeout(hook::TERM_GRACE, &mut all).await.is_ok()
        }
    };
    if !caught_up {
        tracing::warn!(
            "sinks did not catch up within {SINK_GRACE:?}; the rest is delivered at the next start"
        );
    }
    service.finish().await;
    engine.store().flush().await?;
    tracing::info!(elapsed_ms = began.elapsed().as_millis() as u64, "stopped");
    Ok(engine.totals())
}

/// Removes outbox events that every configured sink has finished and that are older than
/// `retention`; logs what it did (a failure is logged and retried at the next round).
pub async fn prune(store: &Store, config: &Config) {
    let names: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
    let before = crate::time::now_ms() - config.daemon.retention.as_millis() as i64;
    match store.prune(before, &names).await {
        Ok(p) if p.events + p.attempts > 0 => {
            tracing::info!(
                events = p.events,
                "pruned outbox events delivered to every sink and older than `retention`"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "pruning the outbox failed; retrying in an hour"),
    }
}

/// Fires `reopen` (the JSONL sinks' reopen signal) on every SIGHUP (logrotate's
/// `postrotate`). The handler is installed by the caller before anything else starts, so an
/// early SIGHUP cannot kill the daemon.
async fn reopen_on_sighup(
    hup: std::io::Result<tokio::signal::unix::Signal>,
    reopen: sinks::jsonl::Reopen,
) {
    let Ok(mut hup) = hup else {
        tracing::warn!(
            "cannot install the SIGHUP handler; JSONL files will not be reopened on SIGHUP"
        );
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: JSONL sinks reopen their files before their next write");
        reopen.fire();
    }
}

/// Completes on SIGTERM or SIGINT. From then on a second SIGTERM or SIGINT exits the process
/// at once (exit status 128 + the signal's number), after SIGKILLing running hooks: an operator
/// who presses Ctrl-C twice, or a supervisor that insists, is obeyed. Nothing is lost by it —
/// state is committed transactionally, and what was not is polled again at the next start —
/// but events already committed may wait until then for their sinks.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    let first = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{first} received: stopping (a second SIGTERM or SIGINT exits at once)");
    tokio::spawn(async move {
        let (name, number) = tokio::select! {
            _ = term.recv() => ("SIGTERM", libc::SIGTERM),
            _ = int.recv() => ("SIGINT", libc::SIGINT),
        };
        tracing::warn!("{name} received again: exiting now; running hooks are killed, and what was not committed is polled again at the next start");
        hook::kill_all_groups();
        std::process::exit(128 + number);
    });
}
