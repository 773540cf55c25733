//! `mode = "adaptive"`: one task per such account drives its [`Planner`] on a 1 s tick of the
//! wall clock. Each tick polls the members that are due (earliest first, while the budget's
//! token bucket has a token) in one cycle over just those members (`Engine::tick_units`, so
//! the engine's one-cycle-at-a-time rule and the provider's member pool still hold), charges
//! what the cycle really sent beyond one request a member, folds each member's change instants
//! into its rate, and stores its schedule record (`Store::put_schedule`) so a restart keeps
//! it. The resync schedule is unchanged: its cron job asks this loop for a whole cycle with the
//! list walk, run between ticks (its requests are not charged to the budget: they come out of
//! the plan's headroom, and the resync is the safety net, never deferred).

use crate::adaptive::planner::{Planner, Saved, Settings, TICK};
use crate::adaptive::{Bounds, RateState};
use crate::config::AdaptiveSettings;
use crate::engine::{Engine, Tick};
use crate::metrics::Budget;
use crate::shutdown::Stop;
use crate::store::{ScheduleRecord, Unit};
use crate::time::{now_ms, Millis};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the roster is read again (members connected while running).
const ROSTER_EVERY: Millis = 60_000;

/// The planner's settings for an account's config.
pub fn settings(s: &AdaptiveSettings) -> Settings {
    Settings {
        budget: s.budget_per_second(),
        bounds: Bounds {
            min_interval: s.min_interval.as_secs_f64(),
            max_interval: s.max_interval.as_secs_f64(),
        },
    }
}

fn to_record(s: Saved) -> ScheduleRecord {
    ScheduleRecord {
        observed_at: s.state.observed_at,
        count: s.state.count,
        exposure: s.state.exposure,
        spread: s.state.spread,
        changed: s.state.changed,
        due: s.due,
    }
}

fn from_record(r: ScheduleRecord) -> Saved {
    Saved {
        state: RateState {
            observed_at: r.observed_at,
            count: r.count,
            exposure: r.exposure,
            spread: r.spread,
            changed: r.changed,
        },
        due: r.due,
    }
}

/// One adaptive account's scheduler.
pub struct Loop {
    engine: Arc<Engine>,
    idx: usize,
    account: String,
    planner: Planner,
    max_interval: f64,
    ids: Vec<String>,
    index: BTreeMap<String, usize>,
    roster_at: Millis,
    warned_at: Millis,
}

impl Loop {
    /// The account's members as the store knows them now (schedule records read back).
    pub fn new(engine: Arc<Engine>, idx: usize, s: &AdaptiveSettings, now: Millis) -> Loop {
        let account = engine.accounts()[idx].clone();
        let mut l = Loop {
            planner: Planner::new(settings(s), Vec::new(), now),
            max_interval: s.max_interval.as_secs_f64(),
            engine,
            idx,
            account,
            ids: Vec::new(),
            index: BTreeMap::new(),
            roster_at: now,
            warned_at: 0,
        };
        l.read_roster(now);
        l
    }

    /// Adds the members the provider lists that the planner does not know yet.
    fn read_roster(&mut self, now: Millis) {
        let store = Arc::clone(self.engine.store());
        let units = match self
            .engine
            .provider(self.idx)
            .units(&store, self.engine.shard())
        {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(account = %self.account, error = %e, "cannot read the members to schedule; trying again in a minute");
                return;
            }
        };
        for id in units {
            if self.index.contains_key(&id) {
                continue;
            }
            let saved = match store.get_schedule(Unit::new(&self.account, &id)) {
                Ok(r) => r.map(from_record),
                Err(e) => {
                    tracing::warn!(account = %self.account, member = %id, error = %e, "cannot read the member's schedule record; it starts over at the fleet's rate");
                    None
                }
            };
            let m = self.planner.add(saved, now);
            self.index.insert(id.clone(), m);
            self.ids.push(id);
        }
        self.roster_at = now;
    }

    /// The planner (for tests and `status`).
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// The index of member `id`.
    pub fn member(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// One tick at `now`: polls what is due. Returns how many members were polled.
    pub async fn tick(&mut self, now: Millis) -> usize {
        if now - self.roster_at >= ROSTER_EVERY {
            self.read_roster(now);
        }
        let due = self.planner.take_due(now);
        self.publish();
        if due.is_empty() {
            // The watchdog's and /healthz's view: the scheduler is alive.
            self.engine.metrics().account(self.idx).tick();
            return 0;
        }
        let units: BTreeSet<String> = due.iter().map(|(m, _)| self.ids[*m].clone()).collect();
        let report = match self.engine.tick_units(self.idx, units).await {
            Tick::Ran(r) => r,
            Tick::Skipped => {
                for (m, at) in &due {
                    self.planner.failed(*m, *at, now);
                }
                return 0;
            }
        };
        let sent: u64 = report.requests.values().sum();
        self.planner.charge(sent as f64 - due.len() as f64);
        let account_failed = report.failures.iter().any(|f| f.unit.is_none());
        let store = Arc::clone(self.engine.store());
        for (m, at) in &due {
            let id = &self.ids[*m];
            let failed = account_failed
                || report
                    .failures
                    .iter()
                    .any(|f| f.unit.as_deref().is_some_and(|u| u.ends_with(id.as_str())));
            if failed {
                self.planner.failed(*m, *at, now);
            } else {
                let seen = report.observed.get(id).map(Vec::as_slice).unwrap_or(&[]);
                self.planner.observed(*m, *at, now, seen);
            }
            let rec = to_record(self.planner.saved(*m));
            if let Err(e) = store.put_schedule(Unit::new(&self.account, id), &rec) {
                tracing::warn!(account = %self.account, member = %id, error = %e, "cannot store the member's schedule record (a restart would forget this poll)");
            }
        }
        self.publish();
        due.len()
    }

    /// A resync: one whole cycle with the list walk; every member counts as polled now.
    pub async fn resync(&mut self, now: Millis) {
        let Tick::Ran(report) = self.engine.tick(self.idx, true).await else {
            return;
        };
        for (id, seen) in &report.observed {
            if let Some(&m) = self.index.get(id) {
                self.planner.observed(m, now, now, seen);
            }
        }
    }

    /// The budget figures for `/metrics`, and the warning when detail calls leave the plan
    /// less than the freshness guarantee needs.
    fn publish(&mut self) {
        let p = &self.planner;
        self.engine.metrics().account(self.idx).set_budget(Budget {
            budget: p.budget(),
            planned: p.planned(),
            unplanned: p.unplanned(),
            spent: p.spent(),
            target: p.target(),
            members: p.len(),
            max_interval: self.max_interval,
        });
        let now = now_ms();
        let needed = p.floor();
        if p.planned() < needed && now - self.warned_at >= 60_000 && p.spent() > 0.0 {
            self.warned_at = now;
            tracing::warn!(
                account = %self.account,
                budget_per_min = p.budget() * 60.0,
                detail_calls_per_min = p.unplanned() * 60.0,
                "the budget left for polls after detail calls ({:.1}/min) is under what max_interval needs for {} members ({:.1}/min): idle members wait longer than max_interval; raise `budget` or `max_interval`",
                p.planned() * 60.0,
                p.len(),
                needed * 60.0
            );
        }
    }
}

/// Runs `l` on a 1 s tick until `stop`; a whole resync cycle when `resync` is raised.
pub async fn run(mut l: Loop, resync: Arc<AtomicBool>, stop: Stop) {
    let mut every = tokio::time::interval(Duration::from_millis(TICK as u64));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait() => return,
        }
        if stop.is_set() {
            return;
        }
        if resync.swap(false, Ordering::SeqCst) {
            l.resync(now_ms()).await;
        }
        l.tick(now_ms()).await;
    }
}
