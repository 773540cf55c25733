//! The engine: runs one cycle of one account, never two of the same account at once, and
//! keeps the totals the demo and `once` report.
//!
//! It knows nothing of HTTP or sled layouts: a cycle is `provider.cycle(ctx)`; the provider
//! commits through the store. A tick that finds the account's previous cycle still running is
//! skipped and logged (not queued); a skipped resync is remembered for the next cycle. It also
//! wires the metrics to what reports to them: each provider's HTTP client, and the store's
//! commits.

use crate::config::{Config, Start};
use crate::metrics::Metrics;
use crate::providers::{self, CycleContext, CycleReport, FailureKind, Provider, RequestCount};
use crate::shard::Shard;
use crate::shutdown::Stop;
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One account: its provider, and what keeps its cycles one at a time and numbered.
struct AccountCycles {
    provider: Arc<dyn Provider>,
    /// `cron` or `adaptive` (for `status`).
    mode: &'static str,
    running: tokio::sync::Mutex<()>,
    resync_pending: AtomicBool,
    /// The next cycle's number (the `cycle` log field): 1 for the account's first cycle of
    /// this run.
    next_cycle: AtomicU64,
}

impl AccountCycles {
    fn new(provider: Arc<dyn Provider>, mode: &'static str) -> AccountCycles {
        AccountCycles {
            provider,
            mode,
            running: tokio::sync::Mutex::new(()),
            resync_pending: AtomicBool::new(false),
            next_cycle: AtomicU64::new(1),
        }
    }
}

/// Cumulative figures since the engine started.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub cycles: u64,
    pub skipped_ticks: u64,
    pub units_polled: u64,
    pub changed: u64,
    pub events: u64,
    pub failed_cycles: u64,
    /// Sum of the cycles' floors (fewest requests their work could cost) ...
    pub floor: u64,
    /// ... and of the requests they sent of the kinds the floor counts.
    pub core_requests: u64,
    pub requests: BTreeMap<&'static str, u64>,
}

/// What a tick did.
#[derive(Debug)]
pub enum Tick {
    Ran(CycleReport),
    /// The account's previous cycle was still running.
    Skipped,
}

pub struct Engine {
    store: Arc<Store>,
    start: Start,
    shard: Shard,
    accounts: Vec<AccountCycles>,
    totals: Mutex<Totals>,
    metrics: Arc<Metrics>,
    /// The daemon's shutdown: failures after it are interruptions, not provider faults.
    stop: Stop,
}

impl Engine {
    /// Builds every account's provider client (resolving secrets).
    pub fn new(store: Arc<Store>, config: &Config) -> Result<Engine, providers::BuildError> {
        Engine::with_stop(store, config, &Stop::never())
    }

    /// [`Engine::new`], whose providers send nothing more once `stop` is set.
    pub fn with_stop(
        store: Arc<Store>,
        config: &Config,
        stop: &Stop,
    ) -> Result<Engine, providers::BuildError> {
        let metrics = Arc::new(Metrics::new(config));
        // The store reports the events it commits; the metrics count them by type.
        store.report_to(Arc::clone(&metrics) as Arc<dyn crate::store::CommitObserver>);
        let mut accounts = Vec::new();
        for (idx, a) in config.accounts.iter().enumerate() {
            let provider = providers::build(a, Arc::clone(metrics.account(idx)), stop)?;
            let mode = match a.polling {
                crate::config::Polling::Cron => "cron",
                crate::config::Polling::Adaptive(_) => "adaptive",
            };
            accounts.push(AccountCycles::new(provider, mode));
        }
        Ok(Engine {
            store,
            start: config.daemon.start,
            shard: config.daemon.shard,
            accounts,
            totals: Mutex::default(),
            metrics,
            stop: stop.clone(),
        })
    }

    /// Counters, health and progress (for `/metrics`, `/healthz` and the watchdog).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Which members this daemon polls.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Account names, in config order (their index is the account's id here).
    pub fn accounts(&self) -> Vec<String> {
        self.accounts
            .iter()
            .map(|r| r.provider.account().to_string())
            .collect()
    }

    /// How account `idx` is scheduled: `cron` or `adaptive`.
    pub fn mode(&self, idx: usize) -> &'static str {
        self.accounts[idx].mode
    }

    pub fn provider(&self, idx: usize) -> &Arc<dyn Provider> {
        &self.accounts[idx].provider
    }

    /// Runs one cycle of account `idx` unless one is running already.
    pub async fn tick(&self, idx: usize, resync: bool) -> Tick {
        self.cycle(idx, resync, None).await
    }

    /// Runs one cycle of account `idx` over `units` only (adaptive mode: the members due now),
    /// unless one is running already. A resync left pending by a skipped tick waits for the
    /// next whole cycle.
    pub async fn tick_units(&self, idx: usize, units: std::collections::BTreeSet<String>) -> Tick {
        self.cycle(idx, false, Some(Arc::new(units))).await
    }

    async fn cycle(
        &self,
        idx: usize,
        resync: bool,
        units: Option<Arc<std::collections::BTreeSet<String>>>,
    ) -> Tick {
        let r = &self.accounts[idx];
        let account = r.provider.account();
        let m = self.metrics.account(idx);
        m.tick();
        let Ok(_guard) = r.running.try_lock() else {
            m.skipped();
            if resync {
                r.resync_pending.store(true, Ordering::SeqCst);
            }
            crate::locks::lock(&self.totals).skipped_ticks += 1;
            tracing::warn!(account, "tick skipped: the previous cycle of this account is still running (schedule shorter than a cycle?)");
            return Tick::Skipped;
        };
        let resync = resync || (units.is_none() && r.resync_pending.swap(false, Ordering::SeqCst));
        let cycle = r.next_cycle.fetch_add(1, Ordering::SeqCst);
        let began = Instant::now();
        m.cycle_started(cycle);
        let ctx = CycleContext {
            store: Arc::clone(&self.store),
            resync,
            start: self.start,
            requests: Arc::new(RequestCount::default()),
            shard: self.shard,
            units,
            observed: Arc::default(),
        };
        let observed = Arc::clone(&ctx.observed);
        let span = tracing::info_span!("cycle", account, cycle);
        let mut report =
            tracing::Instrument::instrument(Arc::clone(&r.provider).cycle(ctx), span).await;
        report.observed = observed.take();
        let elapsed_ms = began.elapsed().as_millis() as u64;
        // A busy cycle's buffers are freed by now: hand their memory back.
        self.store.trim_memory();
        m.cycle_finished(report.ok());
        let requests: u64 = report.requests.values().sum();
        // Failures once the daemon is stopping are interruptions (requests not sent), not
        // provider faults: logged as such, and the cycle is left out of the failure count and
        // of the floor comparison (it did not do its work).
        let interrupted = self.stop.is_set() && !report.ok();
        for f in &report.failures {
            if interrupted || f.kind == FailureKind::Interrupted {
                tracing::info!(account, cycle, "interrupted by the shutdown: {f}");
            } else {
                tracing::error!(account, cycle, kind = ?f.kind, "{f}");
            }
        }
        // Quiet cycles log at debug; the account's first of the run (a baseline, or the
        // catch-up after a stop) says at info that the account works.
        if report.events > 0 || !report.ok() || resync || cycle == 1 {
            tracing::info!(
                account,
                cycle,
                resync,
                units = report.units,
                changed = report.changed,
                events = report.events,
                requests,
                elapsed_ms,
                failures = report.failures.len(),
                "cycle done"
            );
        } else {
            tracing::debug!(
                account,
                cycle,
                units = report.units,
                requests,
                elapsed_ms,
                "cycle done, nothing new"
            );
        }
        let mut t = crate::locks::lock(&self.totals);
        t.cycles += 1;
        t.units_polled += report.units as u64;
        t.changed += report.changed;
        t.events += report.events;
        if !interrupted {
            t.failed_cycles += u64::from(!report.ok());
            t.floor += report.floor;
            t.core_requests += report.core_requests;
        }
        for (k, v) in &report.requests {
            *t.requests.entry(k).or_default() += v;
        }
        Tick::Ran(report)
    }

    /// One cycle of every account, concurrently; reports in account order.
    pub async fn cycle_all(&self) -> Vec<(String, Tick)> {
        let ticks = (0..self.accounts.len()).map(|i| self.tick(i, false));
        let results = futures_util::future::join_all(ticks).await;
        self.accounts().into_iter().zip(results).collect()
    }

    /// Waits until no cycle is running.
    pub async fn wait_idle(&self) {
        for r in &self.accounts {
            let _ = r.running.lock().await;
        }
    }

    pub fn totals(&self) -> Totals {
        crate::locks::lock(&self.totals).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::AccountMetrics;
    use crate::providers::UnitStatus;
    use crate::store::StoreError;
    use futures_util::future::BoxFuture;
    use std::sync::atomic::AtomicUsize;

    /// A provider whose cycle takes a while, counts how many run at once, and notes the number
    /// the engine gave each of its cycles (as the metrics show it while the cycle runs).
    struct Slow {
        metrics: Arc<AccountMetrics>,
        running: AtomicUsize,
        max_seen: AtomicUsize,
        cycles: Mutex<Vec<u64>>,
    }

    impl Provider for Slow {
        fn kind(&self) -> &'static str {
            "slow"
        }
        fn account(&self) -> &str {
            &self.metrics.name
        }
        fn cycle(self: Arc<Self>, _ctx: CycleContext) -> BoxFuture<'static, CycleReport> {
            Box::pin(async move {
                let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_seen.fetch_max(now, Ordering::SeqCst);
                if let Some((cycle, _)) = self.metrics.snapshot().running {
                    self.cycles.lock().unwrap().push(cycle);
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                self.running.fetch_sub(1, Ordering::SeqCst);
                CycleReport {
                    units: 1,
                    ..CycleReport::default()
                }
            })
        }
        fn status(&self, _: &Store, _: Shard) -> Result<Vec<UnitStatus>, StoreError> {
            Ok(vec![])
        }
    }

    /// An engine over one `Slow` provider per name, on a store in `dir`.
    fn engine(dir: &std::path::Path, names: &[&str]) -> (Engine, Vec<Arc<Slow>>) {
        let slow: Vec<Arc<Slow>> = names
            .iter()
            .map(|name| {
                Arc::new(Slow {
                    metrics: Arc::new(AccountMetrics::new(
                        name,
                        "slow",
                        std::time::Duration::from_secs(1),
                        std::time::Duration::from_secs(1),
                    )),
                    running: AtomicUsize::new(0),
                    max_seen: AtomicUsize::new(0),
                    cycles: Mutex::default(),
                })
            })
            .collect();
        let engine = Engine {
            store: Arc::new(Store::open(dir).unwrap()),
            start: Start::Now,
            shard: Shard::ALL,
            accounts: slow
                .iter()
                .map(|p| AccountCycles::new(Arc::clone(p) as Arc<dyn Provider>, "cron"))
                .collect(),
            totals: Mutex::default(),
            stop: Stop::never(),
            metrics: Arc::new(Metrics::with_accounts(
                crate::config::Schedule("* * * * * *".into()),
                3,
                slow.iter().map(|p| Arc::clone(&p.metrics)).collect(),
            )),
        };
        (engine, slow)
    }

    #[tokio::test]
    async fn a_tick_during_a_running_cycle_is_skipped_not_stacked() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, slow) = engine(dir.path(), &["slow"]);
        let (a, b, c) = tokio::join!(
            engine.tick(0, false),
            engine.tick(0, true),
            engine.tick(0, false)
        );
        let ran = [&a, &b, &c]
            .iter()
            .filter(|t| matches!(t, Tick::Ran(_)))
            .count();
        assert_eq!(ran, 1, "{a:?} {b:?} {c:?}");
        assert_eq!(slow[0].max_seen.load(Ordering::SeqCst), 1);
        assert_eq!(engine.totals().skipped_ticks, 2);
        // The skipped resync is remembered for the next cycle.
        assert!(engine.accounts[0].resync_pending.load(Ordering::SeqCst));
        assert!(matches!(engine.tick(0, false).await, Tick::Ran(_)));
        assert!(!engine.accounts[0].resync_pending.load(Ordering::SeqCst));
    }

    /// Regression (issue 15): one `cycle` counter was shared by every account (the log's
    /// `cycle` field, the watchdog's "cycle N made no progress"). Each account's first quiet
    /// cycle logging at info is checked in `tests/service.rs` (a log of its own process).
    #[tokio::test]
    async fn cycles_are_numbered_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, slow) = engine(dir.path(), &["a", "b"]);
        for idx in [0, 1, 0, 0, 1] {
            engine.tick(idx, false).await;
        }
        assert_eq!(*slow[0].cycles.lock().unwrap(), [1, 2, 3]);
        assert_eq!(*slow[1].cycles.lock().unwrap(), [1, 2]);
    }
}
