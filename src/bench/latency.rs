//! `pollhook bench latency`: detection latency of the cron schedule against adaptive mode over
//! the same seeded traffic ([`pollhook_sim::shapes`]: skewed, uniform, bursty), at the same
//! number of requests and at a quarter of them, for N members.
//!
//! A discrete-event run on a simulated clock, no HTTP: a poll of member i at instant p sees
//! the changes in (its previous poll, p], costs one request, and each change seen costs one
//! detail request (CamInvoice's Get Document Detail). A change's detection latency is `p −
//! changed_at`, exactly: the traffic's instants are the ground truth. The adaptive side is the
//! daemon's own [`Planner`] — the code `mode = "adaptive"` runs — driven tick by tick; the
//! fixed side polls every member at once every `period` (the cron schedule; its cycle's own
//! duration left out, in its favour). Adaptive runs from `warmup` before the window (a daemon
//! that has been running: the store keeps its estimates across restarts) and past its end
//! until every change of the window is seen; requests are counted inside the window.
//! "Equal" gives adaptive a budget of the fixed schedule's requests a second over the window.

use crate::adaptive::planner::{Planner, Settings, TICK};
use crate::adaptive::Bounds;
use crate::metrics::latency::quantile;
use pollhook_sim::shapes::{Shape, Traffic};
use std::fmt::Write as _;

const S: i64 = 1000;

/// The benchmark's knobs (`pollhook bench latency --help`).
#[derive(Debug, Clone)]
pub struct Opts {
    pub members: usize,
    pub seed: u64,
    /// Hours measured.
    pub hours: i64,
    /// Hours adaptive runs before the window.
    pub warmup_hours: i64,
    /// The fixed schedule's period, seconds.
    pub period: i64,
    pub min_interval: f64,
    pub max_interval: f64,
    /// Only the shapes whose name starts with this.
    pub only: Option<String>,
    /// The skewed shape's Zipf exponent.
    pub zipf: f64,
}

/// What one run measured over the window.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Detection latency of every change in the window, seconds, sorted.
    pub latencies: Vec<f64>,
    pub polls: u64,
    pub details: u64,
    /// The longest any member went unpolled at any instant of the window, seconds.
    pub max_gap: f64,
}

impl Outcome {
    pub fn requests(&self) -> u64 {
        self.polls + self.details
    }
    pub fn q(&self, q: f64) -> f64 {
        quantile(&self.latencies, q)
    }
    pub fn max(&self) -> f64 {
        self.latencies.last().copied().unwrap_or(0.0)
    }
}

/// Which changes each member has left; latencies, requests, gaps.
struct Ledger<'a> {
    traffic: &'a Traffic,
    next: Vec<usize>,
    last_poll: Vec<Option<i64>>,
    len: i64,
    warmup: i64,
    out: Outcome,
}

impl<'a> Ledger<'a> {
    fn new(traffic: &'a Traffic, len: i64, warmup: i64) -> Ledger<'a> {
        let n = traffic.changes.len();
        Ledger {
            traffic,
            next: vec![0; n],
            last_poll: vec![None; n],
            len,
            warmup,
            out: Outcome {
                latencies: Vec::new(),
                polls: 0,
                details: 0,
                max_gap: 0.0,
            },
        }
    }

    fn in_window(&self, t: i64) -> bool {
        (0..self.len).contains(&t)
    }

    /// Polls member m at `at`: the change instants it sees.
    fn poll(&mut self, m: usize, at: i64) -> &'a [i64] {
        let all = &self.traffic.changes[m];
        let from = self.next[m];
        let to = from + all[from..].partition_point(|t| *t <= at);
        self.next[m] = to;
        let seen = &all[from..to];
        for &c in seen {
            if self.in_window(c) {
                self.out.latencies.push((at - c) as f64 / 1000.0);
            }
        }
        if self.in_window(at) {
            self.out.polls += 1;
            self.out.details += seen.len() as u64;
        }
        if let Some(prev) = self.last_poll[m] {
            if prev < self.len && at >= 0 {
                self.gap(prev, at);
            }
        }
        self.last_poll[m] = Some(at);
        seen
    }

    fn gap(&mut self, from: i64, to: i64) {
        self.out.max_gap = self.out.max_gap.max((to - from) as f64 / 1000.0);
    }

    /// Every change in the window was seen.
    fn done(&self, now: i64) -> bool {
        now >= self.len
            && self
                .next
                .iter()
                .zip(&self.traffic.changes)
                .all(|(&i, c)| c.get(i).map_or(true, |t| *t >= self.len))
    }

    fn finish(mut self) -> Outcome {
        for m in 0..self.last_poll.len() {
            let from = self.last_poll[m].unwrap_or(-self.warmup);
            if from < self.len {
                self.gap(from, self.len);
            }
        }
        self.out.latencies.sort_by(f64::total_cmp);
        self.out
    }
}

/// The cron schedule: every member at once every `period`.
pub fn fixed(traffic: &Traffic, len: i64, period: i64) -> Outcome {
    let mut l = Ledger::new(traffic, len, period);
    for m in 0..traffic.changes.len() {
        l.last_poll[m] = Some(-period);
        l.next[m] = traffic.changes[m].partition_point(|t| *t <= -period);
    }
    let mut at = 0;
    while !l.done(at - period) {
        for m in 0..traffic.changes.len() {
            l.poll(m, at);
        }
        at += period;
    }
    l.finish()
}

/// Adaptive mode: the daemon's [`Planner`] at `budget` requests a second, from `-warmup`.
pub fn adaptive(traffic: &Traffic, len: i64, warmup: i64, budget: f64, bounds: Bounds) -> Outcome {
    let n = traffic.changes.len();
    let start = -warmup;
    let mut l = Ledger::new(traffic, len, warmup);
    for m in 0..n {
        l.next[m] = traffic.changes[m].partition_point(|t| *t <= start);
    }
    let mut p = Planner::new(Settings { budget, bounds }, vec![None; n], start);
    let mut now = start;
    while !l.done(now) {
        for (m, due) in p.take_due(now) {
            let seen = l.poll(m, now);
            p.charge(seen.len() as f64);
            p.observed(m, due, now, seen);
        }
        now += TICK;
    }
    l.finish()
}

/// Runs every shape and returns the Markdown table, then the targets, each MET or NOT MET.
pub fn run(o: &Opts) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} members, {} h measured after {} h warm-up, seed {}, fixed schedule every {} s, adaptive min_interval {} s, max_interval {} s\n",
        o.members, o.hours, o.warmup_hours, o.seed, o.period, o.min_interval, o.max_interval
    );
    let _ = writeln!(
        out,
        "| traffic (changes in window) | schedule | requests | p50 s | p99 s | max s | longest wait s |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    let bounds = Bounds {
        min_interval: o.min_interval,
        max_interval: o.max_interval,
    };
    let (len, warmup, period) = (o.hours * 3600 * S, o.warmup_hours * 3600 * S, o.period * S);
    let mut verdicts = Vec::new();
    for shape in Shape::defaults() {
        let shape = match shape {
            Shape::Skewed { per_day, .. } => Shape::Skewed { s: o.zipf, per_day },
            other => other,
        };
        if o.only
            .as_deref()
            .is_some_and(|w| !shape.name().starts_with(w))
        {
            continue;
        }
        let traffic = Traffic::generate(
            shape,
            o.members,
            -warmup - period,
            len + 4 * 3600 * S,
            o.seed,
        );
        let f = fixed(&traffic, len, period);
        let rate = f.requests() as f64 / (len as f64 / 1000.0);
        let eq = adaptive(&traffic, len, warmup, rate, bounds);
        let quarter = adaptive(&traffic, len, warmup, rate / 4.0, bounds);
        let name = format!("{} ({})", shape.name(), traffic.total(0, len));
        for (i, (label, r)) in [
            (format!("cron, every {} s", o.period), &f),
            ("adaptive, equal requests".to_string(), &eq),
            ("adaptive, 1/4 of the requests".to_string(), &quarter),
        ]
        .iter()
        .enumerate()
        {
            let _ = writeln!(
                out,
                "| {} | {label} | {} | {:.1} | {:.1} | {:.0} | {:.0} |",
                if i == 0 { name.as_str() } else { "" },
                r.requests(),
                r.q(0.5),
                r.q(0.99),
                r.max(),
                r.max_gap
            );
        }
        let (f99, e99, q99) = (f.q(0.99), eq.q(0.99), quarter.q(0.99));
        match shape {
            Shape::Skewed { .. } => {
                verdicts.push(verdict(
                    &format!("skewed, equal requests: adaptive p99 {e99:.1} s at least 3x lower than cron {f99:.1} s (ratio {:.2})", f99 / e99.max(1e-9)),
                    e99 * 3.0 <= f99,
                ));
                verdicts.push(verdict(
                    &format!("skewed, 1/4 of the requests: adaptive p99 {q99:.1} s no worse than cron {f99:.1} s"),
                    q99 <= f99,
                ));
            }
            Shape::Uniform { .. } => verdicts.push(verdict(
                &format!(
                    "uniform, equal requests: adaptive p99 {e99:.1} s within 10% of cron {f99:.1} s ({:+.1}%)",
                    (e99 / f99 - 1.0) * 100.0
                ),
                (e99 / f99 - 1.0).abs() <= 0.10,
            )),
            Shape::Bursty { .. } => {}
        }
        let limit = o.max_interval + o.period as f64;
        for (what, r, share) in [("equal", &eq, 1.0), ("1/4", &quarter, 0.25)] {
            let allowed = f.requests() as f64 * share;
            if f.details as f64 > allowed {
                verdicts.push(format!(
                    "n/a     {}, {what}: infeasible: the {} detail calls alone exceed the {allowed:.0} requests allowed (a budget check-config refuses when it knows the rate)",
                    shape.name(),
                    f.details
                ));
                continue;
            }
            verdicts.push(verdict(
                &format!(
                    "{}, {what}: longest wait {:.0} s <= max_interval + one cron period ({limit:.0} s); requests {} <= {:.0}",
                    shape.name(),
                    r.max_gap,
                    r.requests(),
                    allowed
                ),
                r.max_gap <= limit && r.requests() as f64 <= allowed * 1.001 + 10.0,
            ));
        }
    }
    let _ = writeln!(out);
    for v in verdicts {
        let _ = writeln!(out, "{v}");
    }
    out
}

fn verdict(what: &str, ok: bool) -> String {
    format!("{} {what}", if ok { "MET    " } else { "NOT MET" })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both modes see every change once; adaptive at equal requests spends no more than cron,
    /// and on skewed traffic detects faster at p50 (a small, quick instance of the benchmark:
    /// too small and too short a warm-up for the p99 gain, which the full run measures).
    #[test]
    fn both_modes_see_every_change_and_adaptive_stays_within_the_budget() {
        let shape = Shape::Skewed {
            s: 2.0,
            per_day: 4000.0,
        };
        let (len, warmup, period) = (4 * 3600 * S, 4 * 3600 * S, 300 * S);
        let traffic = Traffic::generate(shape, 100, -warmup - period, len + 3600 * S, 3);
        let f = fixed(&traffic, len, period);
        let rate = f.requests() as f64 / (len as f64 / 1000.0);
        let bounds = Bounds {
            min_interval: 10.0,
            max_interval: 3600.0,
        };
        let a = adaptive(&traffic, len, warmup, rate, bounds);
        let total = traffic.total(0, len);
        assert_eq!(f.latencies.len(), total);
        assert_eq!(a.latencies.len(), total);
        assert!(
            a.requests() as f64 <= f.requests() as f64 * 1.01 + 10.0,
            "{} > {}",
            a.requests(),
            f.requests()
        );
        assert!(a.q(0.5) < f.q(0.5) / 2.0, "{} vs {}", a.q(0.5), f.q(0.5));
        assert!(a.max_gap <= 3600.0 + 300.0, "{}", a.max_gap);
    }
}
