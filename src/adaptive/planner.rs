//! The adaptive scheduler of one account as a state machine over a clock it is given: which
//! members to poll now, and what to do with what a poll saw. The daemon drives it on the wall
//! clock (`scheduler`, one 1 s tick per account); `pollhook bench latency` drives the very
//! same code on a simulated clock. ARCHITECTURE.md ("Adaptive polling") has the loop.
//!
//! Every [`REALLOCATE`] the fleet's prior is refitted, the tail guard adjusted and the water
//! level allocated over the poll budget (the budget less [`HEADROOM`], less the measured
//! unplanned requests: detail calls and follow-up polls). [`Planner::take_due`] refills a token
//! bucket of the whole budget ([`BURST`] seconds deep, empty at start: no burst after a
//! restart) and hands out due members earliest-deadline-first while a token is left, one token
//! each; [`Planner::charge`] pays the rest of what the polls cost (detail calls are never
//! deferred, so the bucket may go below zero; the next polls then wait). So over any span the
//! requests charged never exceed `budget × span` plus what the last polls' details took below
//! zero. [`Planner::observed`] folds a poll's change instants into the member's rate at once
//! and sets its next poll.

use super::{
    allocate, anchor, equal_quantile, interval, next_poll_at, poll_budget, Bounds, Changes,
    Estimator, FollowUps, Level, Millis, Objective, Prior, RateState, TailGuard,
};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The scheduler's tick: due members are polled on it.
pub const TICK: Millis = 1000;
/// How often the water level is recomputed.
pub const REALLOCATE: Millis = 30_000;
/// The share of the budget the allocation leaves unplanned (retries, token refreshes, walks).
pub const HEADROOM: f64 = 0.02;
/// The token bucket's depth, seconds of budget (at least one request).
pub const BURST: f64 = 10.0;
/// The memory of the measured unplanned rate, seconds.
const UNPLANNED_TAU: f64 = 600.0;

/// An account's adaptive settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Requests a second, every kind (polls, detail calls, follow-ups).
    pub budget: f64,
    pub bounds: Bounds,
}

/// What the store keeps of a member between runs: its rate estimate and its next poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Saved {
    pub state: RateState,
    pub due: Millis,
}

/// A member as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberView {
    /// The next planned poll.
    pub due: Millis,
    /// The rate the plan uses (shrunk towards the fleet's), changes an hour.
    pub rate_per_hour: f64,
    /// The member's own measured rate, changes an hour (`None` before its first poll).
    pub own_per_hour: Option<f64>,
    /// Its current interval, seconds.
    pub interval: f64,
}

/// One account's adaptive scheduler (see the module docs).
pub struct Planner {
    settings: Settings,
    est: Estimator,
    objective: Objective,
    states: Vec<RateState>,
    due: Vec<Millis>,
    anchors: Vec<Millis>,
    /// Each member's pending follow-up: the changes its rate predicts for it, when it is one.
    follow_up: Vec<Option<f64>>,
    /// The member has been polled (or was restored): its due instant follows from its anchor.
    polled: Vec<bool>,
    /// Polls handed out per member since the start.
    polls: Vec<u64>,
    prior: Prior,
    follow_ups: FollowUps,
    guard: TailGuard,
    equal_x: f64,
    level: Level,
    heap: BinaryHeap<Reverse<(Millis, usize)>>,
    tokens: f64,
    refilled_at: Millis,
    next_realloc: Millis,
    /// Unplanned requests a second (EWMA), and those charged since it was last updated.
    unplanned: f64,
    extra: f64,
    planned: f64,
    spent: f64,
}

impl Planner {
    /// A planner at `now` for members restored from the store (`Some`) or new (`None`: due at
    /// once, at the fleet's rate).
    pub fn new(settings: Settings, members: Vec<Option<Saved>>, now: Millis) -> Planner {
        let est = Estimator::default();
        let objective = Objective::default();
        let mut p = Planner {
            settings,
            est,
            objective,
            states: Vec::new(),
            due: Vec::new(),
            anchors: Vec::new(),
            follow_up: Vec::new(),
            polled: Vec::new(),
            polls: Vec::new(),
            prior: Prior::fit(&[], &est),
            follow_ups: FollowUps::default(),
            guard: TailGuard::default(),
            equal_x: f64::INFINITY,
            level: Level::everyone_at(objective, true),
            heap: BinaryHeap::new(),
            tokens: 0.0,
            refilled_at: now,
            next_realloc: now,
            unplanned: 0.0,
            extra: 0.0,
            planned: 0.0,
            spent: 0.0,
        };
        for m in members {
            p.add(m, now);
        }
        p.unplanned = p.states.len() as f64 * est.prior_rate;
        p
    }

    /// Adds a member (connected while running); returns its index. It is planned at the next
    /// reallocation, and due at once if new.
    pub fn add(&mut self, saved: Option<Saved>, now: Millis) -> usize {
        let m = self.states.len();
        match saved {
            Some(s) => {
                self.states.push(s.state);
                self.due.push(s.due);
                self.anchors.push(s.state.observed_at);
                self.polled.push(true);
            }
            None => {
                self.states.push(RateState::new(now));
                self.due.push(now);
                self.anchors.push(now);
                self.polled.push(false);
            }
        }
        self.follow_up.push(None);
        self.polls.push(0);
        self.heap.push(Reverse((self.due[m], m)));
        m
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The members to poll now, with the instant each was due (earliest first), one token each.
    pub fn take_due(&mut self, now: Millis) -> Vec<(usize, Millis)> {
        let dt = (now - self.refilled_at).max(0) as f64 / 1000.0;
        if dt > 0.0 {
            let b = self.settings.budget;
            // At least one token deep, or a budget under one request per BURST never polls.
            self.tokens = (self.tokens + b * dt).min((b * BURST).max(1.0));
            let decay = (-dt / UNPLANNED_TAU).exp();
            self.unplanned = self.unplanned * decay + (self.extra / dt) * (1.0 - decay);
            self.extra = 0.0;
            self.refilled_at = now;
        }
        if now >= self.next_realloc {
            self.reallocate(now);
        }
        let mut out = Vec::new();
        while self.tokens >= 1.0 {
            let Some(&Reverse((at, m))) = self.heap.peek() else {
                break;
            };
            if at > now {
                break;
            }
            self.heap.pop();
            if at != self.due[m] {
                continue; // superseded by a later plan
            }
            self.tokens -= 1.0;
            self.spent += 1.0;
            self.polls[m] += 1;
            out.push((m, at));
        }
        out
    }

    /// Charges `requests` beyond the one token [`Planner::take_due`] took per poll: the polls'
    /// detail calls, a retry, a token refresh. Unplanned: they reduce the next poll budget.
    /// A negative amount refunds tokens taken for polls that sent nothing (a revoked member).
    pub fn charge(&mut self, requests: f64) {
        self.tokens -= requests;
        self.spent += requests;
        self.extra += requests.max(0.0);
    }

    /// Member `m`, due at `due_at`, was polled at `now` and showed changes at `changes` (the
    /// provider's instants): its rate is updated at once, and its next poll set.
    pub fn observed(&mut self, m: usize, due_at: Millis, now: Millis, changes: &[Millis]) {
        if let Some(predicted) = self.follow_up[m].take() {
            self.extra += 1.0;
            self.follow_ups.record(changes.len(), predicted);
        }
        for c in changes {
            self.guard
                .record((now - c).max(0) as f64 / 1000.0, self.equal_x);
        }
        self.states[m].observe(&self.est, now, Changes::At(changes));
        self.polled[m] = true;
        let r = self.rate(m);
        let iv = interval(&self.level, r, self.settings.bounds);
        self.anchors[m] = anchor(due_at, now, TICK);
        if self.est.follow_up < iv && self.follow_ups.wanted(changes.len()) {
            self.follow_up[m] = Some(r * self.est.follow_up);
        }
        self.schedule(m, iv);
    }

    /// Member `m`'s poll failed (or was interrupted): nothing is learnt, it is due again one
    /// interval after this attempt.
    pub fn failed(&mut self, m: usize, due_at: Millis, now: Millis) {
        self.anchors[m] = anchor(due_at, now, TICK);
        self.follow_up[m] = None;
        let iv = interval(&self.level, self.rate(m), self.settings.bounds);
        self.schedule(m, iv);
    }

    fn schedule(&mut self, m: usize, iv: f64) {
        let f = self.follow_up[m].map(|_| self.est.follow_up);
        self.due[m] = next_poll_at(self.anchors[m], iv, f);
        self.heap.push(Reverse((self.due[m], m)));
    }

    fn rate(&self, m: usize) -> f64 {
        self.states[m].rate(&self.prior) + self.guard.floor
    }

    fn reallocate(&mut self, now: Millis) {
        self.prior = Prior::fit(&self.states, &self.est);
        let q = match self.objective {
            Objective::QuantileThenMean { q, .. } => q,
            _ => 0.99,
        };
        self.guard.adjust(q, self.prior.mean);
        let rates: Vec<f64> = (0..self.len()).map(|m| self.rate(m)).collect();
        let bounds = self.settings.bounds;
        self.planned = poll_budget(self.settings.budget, HEADROOM, self.unplanned);
        self.equal_x = equal_quantile(self.len(), self.planned, bounds, q);
        self.level = allocate(&rates, self.planned, bounds, self.objective);
        self.heap.clear();
        for (m, &r) in rates.iter().enumerate() {
            if self.polled[m] {
                let f = self.follow_up[m].map(|_| self.est.follow_up);
                self.due[m] = next_poll_at(self.anchors[m], interval(&self.level, r, bounds), f);
            }
            self.heap.push(Reverse((self.due[m], m)));
        }
        self.next_realloc = now + REALLOCATE;
    }

    /// What to store for member `m`.
    pub fn saved(&self, m: usize) -> Saved {
        Saved {
            state: self.states[m],
            due: self.due[m],
        }
    }

    /// Member `m` as `status` shows it.
    pub fn view(&self, m: usize) -> MemberView {
        let r = self.rate(m);
        MemberView {
            due: self.due[m],
            rate_per_hour: r * 3600.0,
            own_per_hour: self.states[m].own_rate().map(|r| r * 3600.0),
            interval: interval(&self.level, r, self.settings.bounds),
        }
    }

    /// Polls handed out to member `m` since the start.
    pub fn polls(&self, m: usize) -> u64 {
        self.polls[m]
    }

    /// The budget, requests a second.
    pub fn budget(&self) -> f64 {
        self.settings.budget
    }

    /// The polls a second the current plan spends (the budget less headroom and unplanned).
    pub fn planned(&self) -> f64 {
        self.planned
    }

    /// The measured unplanned requests a second (detail calls, follow-ups, retries).
    pub fn unplanned(&self) -> f64 {
        self.unplanned
    }

    /// Requests charged since the start (polls and what [`Planner::charge`] added).
    pub fn spent(&self) -> f64 {
        self.spent
    }

    /// The polls a second the freshness guarantee alone needs (every member at
    /// `max_interval`).
    pub fn floor(&self) -> f64 {
        self.settings.bounds.floor_rate(self.len())
    }

    /// The p99 the plan aims at, seconds.
    pub fn target(&self) -> f64 {
        self.level.x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Millis = 1000;

    fn settings(budget: f64) -> Settings {
        Settings {
            budget,
            bounds: Bounds {
                min_interval: 10.0,
                max_interval: 3600.0,
            },
        }
    }

    /// Drives a planner for `secs` over members whose changes come every `every[m]` seconds
    /// (0: never); each poll costs one request plus one per change. Returns (polls per member,
    /// requests charged, the planner).
    fn drive(budget: f64, every: &[i64], secs: i64) -> (Vec<u64>, f64, Planner) {
        let mut p = Planner::new(settings(budget), vec![None; every.len()], 0);
        let mut last = vec![0; every.len()];
        let mut polls = vec![0u64; every.len()];
        let mut now = 0;
        while now <= secs * S {
            for (m, due) in p.take_due(now) {
                polls[m] += 1;
                let changes: Vec<Millis> = if every[m] > 0 {
                    let period = every[m] * S;
                    (last[m] / period + 1..=now / period)
                        .map(|k| k * period)
                        .collect()
                } else {
                    vec![]
                };
                last[m] = now;
                p.charge(changes.len() as f64);
                p.observed(m, due, now, &changes);
            }
            now += TICK;
        }
        let spent = p.spent();
        (polls, spent, p)
    }

    #[test]
    fn the_requests_spent_never_exceed_the_budget() {
        // Busy members (a change every 20 s) make the detail calls a real share of the budget.
        let every: Vec<i64> = (0..200).map(|m| if m < 10 { 20 } else { 0 }).collect();
        // 0.05/s: a bucket of 10 s of budget would hold half a request (it never polled).
        for budget in [0.05, 0.5, 2.0, 10.0] {
            let mut p = Planner::new(settings(budget), vec![None; every.len()], 0);
            let mut last = vec![0; every.len()];
            let mut now = 0;
            let mut max_batch = 0.0f64;
            while now <= 6 * 3600 * S {
                let mut batch = 0.0;
                for (m, due) in p.take_due(now) {
                    let n = if every[m] > 0 {
                        (now / (every[m] * S) - last[m] / (every[m] * S)) as usize
                    } else {
                        0
                    };
                    let changes: Vec<Millis> = (0..n).map(|_| now).collect();
                    last[m] = now;
                    batch += n as f64;
                    p.charge(n as f64);
                    p.observed(m, due, now, &changes);
                }
                max_batch = max_batch.max(batch);
                // At every instant: what was charged is within the budget since the start,
                // plus what one tick's detail calls may take below zero (never deferred).
                let allowed = budget * now as f64 / 1000.0 + max_batch;
                assert!(
                    p.spent() <= allowed + 1e-9,
                    "budget {budget}/s: {} spent by {} s, allowed {allowed}",
                    p.spent(),
                    now / 1000
                );
                now += TICK;
            }
            // And the budget is used, not hoarded (the idle members alone need 190/3600 a s).
            let used = p.spent() / (6.0 * 3600.0);
            assert!(
                used > 0.9 * budget.min(10.0 * 0.05 + 1.0),
                "{used} of {budget}"
            );
        }
    }

    #[test]
    fn a_busy_member_is_polled_more_often_than_idle_ones() {
        let mut every = vec![0; 100];
        every[7] = 30;
        let (polls, spent, p) = drive(0.5, &every, 4 * 3600);
        let idle_max = polls
            .iter()
            .enumerate()
            .filter(|(m, _)| *m != 7)
            .map(|(_, n)| *n)
            .max()
            .unwrap();
        assert!(
            polls[7] > 5 * idle_max,
            "busy {} idle at most {idle_max}",
            polls[7]
        );
        assert!(spent <= 0.5 * 4.0 * 3600.0 + 1.0 + 2.0);
        // Every idle member was still polled within max_interval (+ a reallocation's slack).
        assert!(polls.iter().all(|n| *n >= 4), "{polls:?}");
        let (busy, idle) = (p.view(7), p.view(8));
        assert!(busy.own_per_hour.unwrap() > 100.0, "{busy:?}");
        assert!(
            busy.rate_per_hour > 10.0 * idle.rate_per_hour,
            "{busy:?} {idle:?}"
        );
        assert!(busy.interval < idle.interval / 2.0, "{busy:?} {idle:?}");
    }

    #[test]
    fn a_restored_member_keeps_its_rate_and_its_next_poll() {
        let mut every = vec![0; 20];
        every[3] = 60;
        let (_, _, p) = drive(0.2, &every, 3 * 3600);
        let saved: Vec<Option<Saved>> = (0..20).map(|m| Some(p.saved(m))).collect();
        let now = 3 * 3600 * S + 5 * S;
        let mut q = Planner::new(settings(0.2), saved, now);
        let _ = q.take_due(now);
        let (a, b) = (p.view(3), q.view(3));
        assert!((a.rate_per_hour - b.rate_per_hour).abs() < 0.1 * a.rate_per_hour);
        // The busy member stays on its short interval; an idle one is not due at once.
        assert!(b.interval < q.view(10).interval, "{b:?} {:?}", q.view(10));
        assert!(q.view(10).due > now, "{:?}", q.view(10));
        // A fresh planner would have every member due now.
        let fresh = Planner::new(settings(0.2), vec![None; 20], now);
        assert_eq!(fresh.view(10).due, now);
    }
}
