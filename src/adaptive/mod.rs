//! Adaptive polling under a request budget (`mode = "adaptive"`, issue 14): the pure part.
//! No I/O, no clock, no randomness; instants are epoch milliseconds ([`Millis`]), durations
//! and rates are `f64` seconds and changes per second. ARCHITECTURE.md ("Adaptive polling")
//! derives every piece; [`planner::Planner`] is the one loop that drives them, used by the
//! daemon (`scheduler`, on the wall clock) and by `pollhook bench latency` (on a simulated
//! clock).
//!
//! Per member (kept in the store with the member's record):
//! - [`RateState`] — the member's change history, four numbers and a flag:
//!   [`RateState::observe`] folds in what a poll saw (the changes' own `updated_at` instants,
//!   or a count), forgetting e-fold a day; [`RateState::rate`] is the member's rate as the
//!   allocation should believe it: its own count shrunk towards the fleet's by how uncertain it
//!   is ([`Prior`], empirical Bayes), so a new member starts at the fleet's mean, equal members
//!   stay equal despite Poisson noise, and a burst of 50 counts as one observation.
//!
//! Per account (in memory, recomputed every reallocation, e.g. every 30 s):
//! - [`Prior::fit`] — the fleet's mean rate, spread and clustering, from all members.
//! - [`poll_budget`] — the polls a second the plan may spend: the budget less headroom, less
//!   what the plan does not choose (detail calls, follow-up polls), as measured.
//! - [`TailGuard`] — the measured share of changes seen within the fixed schedule's p99; while
//!   it is short of 99%, a floor rate added to every member pulls the plan towards equal
//!   intervals (never worse than the fixed schedule at p99, whatever the estimates' noise).
//! - [`allocate`] — the water level ([`Level`]) that spreads the poll budget over the members'
//!   rates: [`Objective::QuantileThenMean`], the default — the best p99 the budget can reach
//!   (+25% slack, capped at equal intervals' p99), then the lowest mean latency within it.
//! - [`FollowUps`] — whether polling again soon after a change finds more (clustered changes),
//!   measured across the fleet.
//!
//! Per poll:
//! - [`interval`] — the member's interval from its rate and the level, within
//!   `[min_interval, max_interval]`; cheap, so a member's new rate applies at once.
//! - [`anchor`] and [`next_poll_at`] — when it is next due: the interval after its due instant
//!   (or after the poll, if that came late), or the follow-up delay after a poll that saw
//!   changes, whichever is sooner.
//!
//! The budget is honoured on average by the plan (`Σ 1/T_i` = the poll budget) and exactly by
//! the caller's limiter: the scheduler polls due members earliest-deadline-first while a token
//! bucket of the whole budget has a token; detail calls are paid from the same bucket.
//! [`Objective::Mean`], [`Objective::Proportional`] (Miniflux), [`Objective::Tail`] (CVaR) and
//! [`Objective::Quantile`] exist for ARCHITECTURE.md's comparison; the port needs the default only.

pub use crate::time::Millis;

pub mod planner;

/// The fastest and the slowest a member is polled, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// No member is polled more often than this.
    pub min_interval: f64,
    /// Every member is polled at least this often: the freshness guarantee for idle members.
    pub max_interval: f64,
}

impl Bounds {
    /// The poll rate (polls a second) that `members` members cost when all sit at
    /// `max_interval`: a poll budget below it cannot keep the freshness guarantee.
    pub fn floor_rate(&self, members: usize) -> f64 {
        members as f64 / self.max_interval
    }

    fn clamp(&self, t: f64) -> f64 {
        if t.is_nan() {
            self.max_interval
        } else {
            t.clamp(self.min_interval, self.max_interval)
        }
    }
}

/// How the rate estimator forgets, what it believes of a fleet it has not seen yet, and how
/// soon a poll that saw changes is followed by another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimator {
    /// Memory of a member's rate, seconds (default one day). It forgets e-fold per
    /// `slow_tau`: a member that goes quiet drifts back towards `max_interval` (a day of a
    /// change a minute is forgotten in about a week).
    pub slow_tau: f64,
    /// The fleet's rate before any member has history, changes a second (default one an
    /// hour). Once members have history the prior is the fleet's own ([`Prior::fit`]).
    pub prior_rate: f64,
    /// After a poll that saw changes, the next one comes at most this long after it
    /// (seconds, default 30) — while follow-ups pay ([`FollowUps`]): a change seen brings the
    /// next poll at once, and a burst still going on is followed poll by poll until a poll
    /// sees nothing new.
    pub follow_up: f64,
}

impl Default for Estimator {
    fn default() -> Estimator {
        Estimator {
            slow_tau: 86_400.0,
            prior_rate: 1.0 / 3600.0,
            follow_up: 30.0,
        }
    }
}

/// A member's change-rate estimate: what the store keeps per member (three numbers, the last
/// poll's instant and whether it saw changes).
///
/// `count / exposure` is the member's own rate: changes and observed seconds, both weighted by
/// `exp(-age/slow_tau)` (a Poisson rate's estimate with exponential forgetting). `spread` is
/// the sum of each poll's weighted count squared, with squared weights: the variance of
/// `count`, measured rather than assumed Poisson — 50 changes in one poll are one burst, and
/// say much less about the rate than 50 changes over 50 polls. [`RateState::rate`] shrinks the
/// member's own rate towards the fleet's by how uncertain it is (empirical Bayes, [`Prior`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateState {
    /// The last poll folded in (the start of the next window).
    pub observed_at: Millis,
    /// Changes seen, each weighted by `exp(-age/slow_tau)`.
    pub count: f64,
    /// Seconds observed, weighted the same way (tends to `slow_tau`).
    pub exposure: f64,
    /// Σ over polls of (the poll's weighted count)², weighted by `exp(-2 age/slow_tau)`.
    pub spread: f64,
    /// The last poll saw changes (for `status`; whether the next poll is a follow-up is
    /// [`FollowUps::wanted`]'s call, made with the poll).
    pub changed: bool,
}

/// What one poll saw of a member.
#[derive(Debug, Clone, Copy)]
pub enum Changes<'a> {
    /// The provider's change instants (`updated_at` of each changed item). Instants outside the
    /// poll's window (clock skew, quarantined stamps, an overlap re-read) are taken as its start
    /// or end: an absurd stamp can never weigh more than a change seen now.
    At(&'a [Millis]),
    /// Only a count: the changes are taken as spread evenly over the window.
    Count(u32),
}

impl RateState {
    /// A member never polled, its window opening `now`: no history, so its rate is the
    /// fleet's ([`Prior::mean`]) until it has some.
    pub fn new(now: Millis) -> RateState {
        RateState {
            observed_at: now,
            count: 0.0,
            exposure: 0.0,
            spread: 0.0,
            changed: false,
        }
    }

    /// Folds in one poll taken at `at` that saw `changes` since [`RateState::observed_at`].
    /// A poll older than the last one (the clock went back) only adds its changes, as of now.
    pub fn observe(&mut self, est: &Estimator, at: Millis, changes: Changes<'_>) {
        let from = self.observed_at.min(at);
        let dt = (at - from) as f64 / 1000.0;
        let decay = (-dt / est.slow_tau).exp();
        let (add, any) = match changes {
            Changes::At(times) => (
                times
                    .iter()
                    .map(|&t| (-((at - t.clamp(from, at)) as f64 / 1000.0) / est.slow_tau).exp())
                    .sum(),
                !times.is_empty(),
            ),
            // The mean of exp(-age/tau) for an instant uniform over the window.
            Changes::Count(k) => {
                let mean = if dt > 0.0 {
                    est.slow_tau * (1.0 - decay) / dt
                } else {
                    1.0
                };
                (f64::from(k) * mean, k > 0)
            }
        };
        self.count = self.count * decay + add;
        self.exposure = self.exposure * decay + est.slow_tau * (1.0 - decay);
        self.spread = self.spread * decay * decay + add * add;
        self.changed = any;
        self.observed_at = self.observed_at.max(at);
    }

    /// The member's own rate (no shrinkage), changes a second; `None` before any history.
    pub fn own_rate(&self) -> Option<f64> {
        (self.exposure > 0.0).then(|| self.count / self.exposure)
    }

    /// The variance of [`RateState::own_rate`]: the member's measured spread, and never less
    /// than the fleet's rate and clustering would give (a member that saw nothing is not
    /// certain it never changes; in a fleet that changes in bursts, a member between bursts
    /// is even less so).
    fn noise(&self, prior: &Prior) -> f64 {
        if self.exposure <= 0.0 {
            return f64::INFINITY;
        }
        let e2 = self.exposure * self.exposure;
        // For a Poisson stream Σw² is half the weighted exposure times the rate; clustering
        // multiplies it by the mean cluster size.
        (self.spread / e2).max(prior.mean * prior.dispersion.max(1.0) * self.exposure / 2.0 / e2)
    }

    /// The rate the allocation uses, changes a second: the member's own, shrunk towards the
    /// fleet's mean by `var / (var + noise)` (the posterior mean of a normal model of rates
    /// across the fleet). A new member gets the fleet's mean; a member whose own count is
    /// sure gets its own; where the fleet's members all change alike (`var` 0), every member
    /// gets the mean — so estimation noise cannot make equal members unequal.
    pub fn rate(&self, prior: &Prior) -> f64 {
        let Some(own) = self.own_rate() else {
            return prior.mean;
        };
        let noise = self.noise(prior);
        if prior.var.is_nan() || prior.var <= 0.0 {
            return prior.mean;
        }
        let keep = prior.var / (prior.var + noise);
        (prior.mean + keep * (own - prior.mean)).max(0.0)
    }
}

/// The fleet's distribution of rates (mean and variance across members, the members'
/// measurement noise taken out): the prior every member's own rate is shrunk towards.
/// Refitted before every [`allocate`]; three numbers, kept in memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prior {
    /// Changes a second, of a member taken at random.
    pub mean: f64,
    /// How much members truly differ: the variance of their rates less their noise.
    pub var: f64,
    /// How clustered changes are: 1 for Poisson traffic, about the burst size for bursts
    /// (`2 Σ spread / Σ count` over the fleet; for a Poisson stream Σw² is half of Σw).
    pub dispersion: f64,
}

impl Prior {
    /// Method of moments over the members with history: the pooled mean, and the variance of
    /// their own rates less the mean of their noise. Before any history: `prior_rate`.
    pub fn fit(states: &[RateState], est: &Estimator) -> Prior {
        let (count, exposure, spread) = states.iter().fold((0.0, 0.0, 0.0), |(c, e, v), s| {
            (c + s.count, e + s.exposure, v + s.spread)
        });
        if exposure.is_nan() || exposure <= 0.0 {
            return Prior {
                mean: est.prior_rate,
                var: 0.0,
                dispersion: 1.0,
            };
        }
        let mean = count / exposure;
        let dispersion = if count > 0.0 {
            (2.0 * spread / count).max(1.0)
        } else {
            1.0
        };
        let pooled = Prior {
            mean,
            var: 0.0,
            dispersion,
        };
        let (mut sum, mut k) = (0.0, 0usize);
        for s in states {
            if let Some(own) = s.own_rate() {
                sum += (own - mean).powi(2) - s.noise(&pooled);
                k += 1;
            }
        }
        Prior {
            mean,
            var: if k > 0 {
                (sum / k as f64).max(0.0)
            } else {
                0.0
            },
            dispersion,
        }
    }
}

/// The allocation checked against the latency it actually achieves: never worse than the
/// fixed schedule at the quantile. The plan holds "a share q of changes seen within x" on
/// *estimated* rates; where many members change rarely (mild skew), their estimates are mostly
/// noise, and the plan's tail is more optimistic than the truth. The daemon measures every
/// change's detection latency anyway (`detected_at - updated_at`); the guard keeps the share
/// of changes seen within [`equal_quantile`] — the q-quantile polling every member alike
/// would give — over the last ~2,000 changes, and while it falls short of q adds a rate
/// `floor` to every member before allocating: phantom changes that pull the plan towards equal
/// intervals until the measured share is q again. With a margin to spare, the floor decays.
/// Three numbers for the account, kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TailGuard {
    /// Changes a second added to every member's rate.
    pub floor: f64,
    /// Changes seen within the fixed schedule's quantile, and all changes, decayed per change.
    pub within: f64,
    pub seen: f64,
}

impl TailGuard {
    const MEMORY: f64 = 2000.0;

    /// One change detected `latency` seconds after it happened; `x` is [`equal_quantile`].
    pub fn record(&mut self, latency: f64, x: f64) {
        let keep = 1.0 - 1.0 / Self::MEMORY;
        self.within = self.within * keep + f64::from(u8::from(latency <= x));
        self.seen = self.seen * keep + 1.0;
    }

    /// The measured share of changes seen within x (1 before any).
    pub fn share(&self) -> f64 {
        if self.seen > 0.0 {
            self.within / self.seen
        } else {
            1.0
        }
    }

    /// Before an allocation: raise the floor while the share is short of `q` by more than a
    /// quarter of the tail, lower it once the share is back at `q`. (Equal intervals give a
    /// share of exactly q, so a plan pushed all the way there always relaxes again.) `mean` is
    /// the fleet's mean rate, the floor's scale.
    pub fn adjust(&mut self, q: f64, mean: f64) {
        if self.seen < Self::MEMORY / 4.0 {
            return; // too few changes yet to judge
        }
        let share = self.share();
        if share < q - (1.0 - q) / 4.0 {
            self.floor = (self.floor * 1.1).max(mean * 1e-3).min(mean * 100.0);
        } else if share >= q {
            self.floor /= 1.1;
            if self.floor < mean * 1e-4 {
                self.floor = 0.0;
            }
        }
    }
}

/// What the allocation minimises, over all changes of all members (each change's detection
/// latency is uniform on `[0, T_i]` for a member polled every `T_i`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// THE policy (the default): the q-quantile first, then the mean. `x` is set to `1 + slack`
    /// times the best q-quantile the budget can reach ([`best_quantile`]), capped at the
    /// q-quantile of polling every member alike; within "q of the changes seen within x", the
    /// mean latency is minimised. Its optimum (ARCHITECTURE.md, "Adaptive polling"):
    /// busy members on the square-root rule `T_i = sqrt(c/λ_i)`, a plateau of members held at
    /// exactly `x` (the ones the quantile needs), and the idle tail again on (nearly) the
    /// square-root rule, up to `max_interval`.
    QuantileThenMean { q: f64, slack: f64 },
    /// Mean latency alone: `T_i = c / sqrt(λ_i)` (the square-root rule).
    Mean,
    /// For comparison — Miniflux's `entry_frequency` rule (one expected change per poll,
    /// `T_i ∝ 1/λ_i`), scaled to the budget.
    Proportional,
    /// For comparison — the mean of the worst `1 - q` (CVaR): `T_i = sqrt(t² + c/λ_i)`.
    Tail { q: f64 },
    /// For comparison — the q-quantile alone: the busiest members, enough to carry a share q
    /// of the changes, all every `x`; everyone else at `max_interval`.
    Quantile { q: f64 },
}

impl Default for Objective {
    fn default() -> Objective {
        Objective::QuantileThenMean {
            q: 0.99,
            slack: 0.25,
        }
    }
}

/// The water level: with a member's rate, it gives the member's interval ([`interval`]).
/// Computed by [`allocate`] for the whole account; kept in memory (it is recomputed at start).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub objective: Objective,
    /// The latency the quantile is held to, seconds (`QuantileThenMean`, `Tail`, `Quantile`).
    pub x: f64,
    /// The budget's multiplier: larger is slower polling (0: every member at `min_interval`;
    /// infinite: every member at `max_interval`). For `Quantile`, the cutoff rate.
    pub mu: f64,
    /// The quantile constraint's multiplier (`QuantileThenMean`); 0 when the mean rule alone
    /// already meets it.
    pub nu: f64,
}

impl Level {
    fn everyone_at(objective: Objective, slowest: bool) -> Level {
        Level {
            objective,
            x: 0.0,
            mu: if slowest { f64::INFINITY } else { 0.0 },
            nu: 0.0,
        }
    }
}

/// A member's poll interval in seconds: its rate (changes per second) under the level, within
/// the bounds. A member with no rate (zero, negative or NaN) gets `max_interval`.
pub fn interval(level: &Level, rate: f64, bounds: Bounds) -> f64 {
    if rate.is_nan() || rate <= 0.0 || level.mu.is_infinite() {
        return bounds.max_interval;
    }
    let raw = match level.objective {
        Objective::QuantileThenMean { .. } => 1.0 / frequency(level, rate),
        Objective::Mean => level.mu / rate.sqrt(),
        Objective::Proportional => level.mu / rate,
        Objective::Tail { .. } => (level.x * level.x + level.mu / rate).sqrt(),
        Objective::Quantile { .. } => {
            if rate >= level.mu {
                level.x
            } else {
                bounds.max_interval
            }
        }
    };
    bounds.clamp(raw)
}

/// `QuantileThenMean`: the poll frequency minimising `λ/(2f) - ν λ min(x f, 1) + μ f` — the
/// member's share of the Lagrangian (mean latency, the quantile constraint, the budget).
/// Convex in f with a kink at `1/x`: below it `f = sqrt(λ / 2(μ - ν x λ))`, above it the
/// square-root rule `f = sqrt(λ / 2μ)`, and at it the plateau `f = 1/x`.
fn frequency(level: &Level, rate: f64) -> f64 {
    let (mu, nu, x) = (level.mu, level.nu, level.x);
    if mu <= 0.0 {
        return f64::INFINITY;
    }
    let sqrt_rule = (rate / (2.0 * mu)).sqrt();
    let kink = 1.0 / x;
    let reduced = mu - nu * x * rate;
    if reduced > 0.0 {
        let below = (rate / (2.0 * reduced)).sqrt();
        if below < kink {
            return below;
        }
    }
    sqrt_rule.max(kink)
}

/// When a member is next due: `anchor` (see [`anchor`]) plus its interval — or, when its
/// last poll saw changes and a follow-up is due ([`FollowUps::wanted`]), the follow-up delay
/// if that is sooner.
pub fn next_poll_at(anchor: Millis, interval: f64, follow_up: Option<f64>) -> Millis {
    let wait = follow_up.map_or(interval, |f| interval.min(f));
    anchor + (wait * 1000.0).round() as Millis
}

/// Whether follow-up polls pay, measured across the fleet: the changes follow-ups found
/// against the changes the members' own rates predicted for them (`rate × delay`). Where
/// changes cluster (a burst, an accountant's session) a follow-up finds many times what the
/// rate predicts; where they do not (Poisson traffic) it finds what any poll would, and the
/// budget is better spent by the plan. A poll that saw two or more changes is always followed
/// up (a burst in progress), and one in `EXPLORE` of the others is, so that the measure never
/// starves. Three numbers for the whole account, kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FollowUps {
    /// Changes found by follow-ups, decayed per follow-up.
    pub found: f64,
    /// Changes their members' rates predicted for them, decayed alike.
    pub expected: f64,
    /// Single-change polls seen (for the exploration sample).
    pub singles: u64,
}

impl FollowUps {
    /// One in this many single-change polls is followed up even when follow-ups do not pay.
    pub const EXPLORE: u64 = 8;
    /// Follow-ups pay when they find at least this many times what the rates predict.
    pub const LIFT: f64 = 2.0;
    /// Memory, in follow-ups.
    const MEMORY: f64 = 500.0;

    /// Notes what a follow-up found against what the member's rate predicted.
    pub fn record(&mut self, found: usize, predicted: f64) {
        let keep = 1.0 - 1.0 / Self::MEMORY;
        self.found = self.found * keep + found as f64;
        self.expected = self.expected * keep + predicted;
    }

    /// Do follow-ups find more than the rates predict? Yes until measured otherwise.
    pub fn pay(&self) -> bool {
        self.expected < 1.0 || self.found >= Self::LIFT * self.expected
    }

    /// After a poll that saw `changes`, is the next poll a follow-up?
    pub fn wanted(&mut self, changes: usize) -> bool {
        match changes {
            0 => false,
            1 => {
                self.singles += 1;
                self.pay() || self.singles % Self::EXPLORE == 0
            }
            _ => true,
        }
    }
}

/// The instant a member's next interval counts from, after a poll due at `due_at` and taken at
/// `polled_at`: the due instant when the poll was at most `tick` late — the scheduler's tick
/// must not stretch every interval (a member due every 10 s, polled on a 1 s tick, would be
/// polled every 10.5 s on average: 5% of the budget unspent) — and the poll itself when it was
/// later than that (the budget was short): a late poll is never followed by a catch-up poll,
/// which would keep an overloaded scheduler overloaded.
pub fn anchor(due_at: Millis, polled_at: Millis, tick: Millis) -> Millis {
    if polled_at - due_at <= tick && due_at <= polled_at {
        due_at
    } else {
        polled_at
    }
}

/// The requests a second left for planned polls: `budget` (requests a second, all kinds) less
/// the `headroom` fraction (retries, resync walks, the limiter's slack) less `unplanned`: the
/// requests a second measured for what the plan does not choose — detail calls (changes cost
/// them whatever the schedule) and follow-up polls. Never negative.
pub fn poll_budget(budget: f64, headroom: f64, unplanned: f64) -> f64 {
    (budget * (1.0 - headroom) - unplanned).max(0.0)
}

/// The q-quantile of detection latency when every one of `members` is polled alike with
/// `poll_budget` polls a second (whatever their rates: each change waits uniformly within the
/// common interval): what the fixed schedule gets for the same polls.
pub fn equal_quantile(members: usize, poll_budget: f64, bounds: Bounds, q: f64) -> f64 {
    q * bounds.clamp(members as f64 / poll_budget)
}

/// The polls a second that `rates` cost under `level`: `Σ 1/T_i`.
pub fn spend(rates: &[f64], level: &Level, bounds: Bounds) -> f64 {
    rates
        .iter()
        .map(|&r| 1.0 / interval(level, r, bounds))
        .sum()
}

/// The share of changes seen within `x` seconds under `level`: `Σ λ_i min(x/T_i, 1) / Σ λ_i`.
pub fn coverage(rates: &[f64], level: &Level, bounds: Bounds, x: f64) -> f64 {
    let total: f64 = rates.iter().filter(|r| **r > 0.0).sum();
    if total.is_nan() || total <= 0.0 {
        return 1.0;
    }
    rates
        .iter()
        .filter(|r| **r > 0.0)
        .map(|&r| r / total * (x / interval(level, r, bounds)).min(1.0))
        .sum()
}

/// The level that spends `poll_budget` (polls a second) over members with these `rates`
/// (changes per second) and minimises `objective`:
/// - budget at or above `members / min_interval`: everyone at `min_interval`;
/// - budget at or below `members / max_interval`: everyone at `max_interval` — the freshness
///   guarantee cannot be kept; [`Bounds::floor_rate`] lets configuration refuse it;
/// - otherwise `Σ 1/T_i = poll_budget` (to a relative 1e-6), or less where the bounds or (for
///   `Tail`, `Quantile`) the objective leave budget unused.
pub fn allocate(rates: &[f64], poll_budget: f64, bounds: Bounds, objective: Objective) -> Level {
    let n = rates.len() as f64;
    if rates.is_empty() || poll_budget >= n / bounds.min_interval {
        return Level::everyone_at(objective, false);
    }
    if poll_budget <= n / bounds.max_interval {
        return Level::everyone_at(objective, true);
    }
    let level = |x, mu, nu| Level {
        objective,
        x,
        mu,
        nu,
    };
    match objective {
        Objective::QuantileThenMean { q, slack } => {
            // The quantile it holds: `slack` above the best reachable, but never above what
            // polling every member alike would give (`q` of the equal interval, whatever the
            // rates): where the skew is mild, the quantile stays the fixed schedule's and only
            // the mean gains.
            let best = best_quantile(rates, poll_budget, bounds, q);
            let equal = equal_quantile(rates.len(), poll_budget, bounds, q);
            let x = (best * (1.0 + slack)).min(equal.max(best));
            // For a given ν, the μ that spends the budget (warm-started from the last one),
            // and the share of changes that level sees within x.
            let mut hint = 1.0;
            let mut at = |nu: f64| {
                let mu = solve_decreasing(
                    |mu| spend(rates, &level(x, mu, nu), bounds),
                    poll_budget,
                    hint,
                );
                if mu > 0.0 && mu.is_finite() {
                    hint = mu;
                }
                let l = level(x, mu, nu);
                (coverage(rates, &l, bounds, x), l)
            };
            let (covered, plain) = at(0.0);
            if covered >= q {
                return plain; // the square-root rule already meets the quantile
            }
            // Coverage grows with ν. ν·x·λ competes with μ, so ν's scale is μ/(x λ): start
            // well below it, bracket by factors of 8, then bisect geometrically.
            let total: f64 = rates.iter().filter(|r| **r > 0.0).sum();
            let scale = plain.mu / (x * total);
            let (mut lo, mut hi) = (0.0f64, scale * 1e-3);
            let mut found = None;
            for _ in 0..100 {
                let (c, l) = at(hi);
                if c >= q {
                    found = Some(l);
                    break;
                }
                lo = hi;
                hi *= 8.0;
            }
            let Some(mut best) = found else {
                // Out of reach (rounding at x = the best quantile): the quantile alone.
                return allocate(rates, poll_budget, bounds, Objective::Quantile { q });
            };
            while lo > 0.0 && hi / lo > 1.0 + 1e-3 {
                let mid = (lo * hi).sqrt();
                let (c, l) = at(mid);
                if c >= q {
                    hi = mid;
                    best = l;
                } else {
                    lo = mid;
                }
            }
            best
        }
        Objective::Mean | Objective::Proportional => level(
            0.0,
            solve_decreasing(
                |mu| spend(rates, &level(0.0, mu, 0.0), bounds),
                poll_budget,
                1.0,
            ),
            0.0,
        ),
        Objective::Tail { q } => tail_level(rates, poll_budget, bounds, q),
        Objective::Quantile { q } => quantile_level(rates, poll_budget, bounds, q),
    }
}

/// The smallest q-quantile of detection latency (seconds) that `poll_budget` polls a second
/// can reach over members changing at `rates`, every member polled within the bounds.
///
/// The share of changes seen within x is `Σ w_i min(x f_i, 1)` (`f_i = 1/T_i`,
/// `w_i = λ_i/Λ`): for a fixed x, linear in each `f_i` up to `1/x`, so buying it is a
/// fractional knapsack, best spent on the largest `w_i` first, each up to
/// `min(1/x, 1/min_interval)`, everyone keeping `1/max_interval`. The answer is the smallest
/// x whose best share reaches q (bisection). With the true rates it is a bound no schedule
/// beats (periodic polling is best for a given frequency); with estimated rates it is where
/// [`Objective::QuantileThenMean`] sets its quantile.
pub fn best_quantile(rates: &[f64], poll_budget: f64, bounds: Bounds, q: f64) -> f64 {
    let mut w: Vec<f64> = rates
        .iter()
        .map(|r| if *r > 0.0 { *r } else { 0.0 })
        .collect();
    let total: f64 = w.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return 0.0;
    }
    w.iter_mut().for_each(|x| *x /= total);
    w.sort_by(|a, b| b.total_cmp(a));
    let floor = 1.0 / bounds.max_interval;
    let covered = |x: f64| {
        let mut money = poll_budget - floor * w.len() as f64;
        let mut cov: f64 = (x * floor).min(1.0);
        let top = (1.0 / x).min(1.0 / bounds.min_interval);
        for wi in &w {
            if money <= 0.0 || top <= floor {
                break;
            }
            let buy = (top - floor).min(money);
            cov += wi * x * buy;
            money -= buy;
        }
        cov
    };
    let (mut lo, mut hi) = (0.0, bounds.max_interval);
    for _ in 0..60 {
        let x = (lo + hi) / 2.0;
        if covered(x) >= q {
            hi = x;
        } else {
            lo = x;
        }
    }
    hi
}

/// The smallest `v ≥ 0` with `f(v) <= target`, for `f` falling as `v` grows (a spend against
/// a multiplier): bracketed from `hint` by factors of 2, then geometric bisection to a
/// relative 1e-5. Infinite if even a huge `v` spends too much.
fn solve_decreasing(f: impl Fn(f64) -> f64, target: f64, hint: f64) -> f64 {
    if f(0.0) <= target {
        return 0.0;
    }
    let start = if hint > 0.0 && hint.is_finite() {
        hint
    } else {
        1.0
    };
    let (mut lo, mut hi) = (start, start);
    while f(hi) > target {
        lo = hi;
        hi *= 2.0;
        if hi > 1e300 {
            return f64::INFINITY;
        }
    }
    if lo == hi {
        while f(lo) <= target {
            hi = lo;
            lo /= 2.0;
            if lo < 1e-300 {
                return 0.0;
            }
        }
    }
    // f(lo) > target >= f(hi)
    while hi / lo > 1.0 + 1e-5 {
        let mid = (lo * hi).sqrt();
        if f(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

// ---- Comparison objectives (ARCHITECTURE.md's tables); the port needs none of this. ----

/// [`Objective::Tail`]: golden section over t (the CVaR is convex in it), the budget's
/// multiplier solved for each t.
fn tail_level(rates: &[f64], budget: f64, bounds: Bounds, q: f64) -> Level {
    let objective = Objective::Tail { q };
    let total: f64 = rates.iter().filter(|r| **r > 0.0).sum();
    let tail = 1.0 - q.clamp(0.0, 0.999_999);
    let cvar = |t: f64| {
        let mu = solve_decreasing(
            |mu| {
                spend(
                    rates,
                    &Level {
                        objective,
                        x: t,
                        mu,
                        nu: 0.0,
                    },
                    bounds,
                )
            },
            budget,
            1.0,
        );
        let l = Level {
            objective,
            x: t,
            mu,
            nu: 0.0,
        };
        let excess: f64 = rates
            .iter()
            .filter(|r| **r > 0.0)
            .map(|&r| {
                let big_t = interval(&l, r, bounds);
                let over = (big_t - t).max(0.0);
                (r / total) * over * over / (2.0 * big_t)
            })
            .sum();
        (t + excess / tail, l)
    };
    let (mut a, mut b) = (0.0, bounds.max_interval);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut x1, mut x2) = (b - g * (b - a), a + g * (b - a));
    let (mut f1, mut f2) = (cvar(x1).0, cvar(x2).0);
    while b - a > 1e-2 {
        if f1 <= f2 {
            (b, x2, f2) = (x2, x1, f1);
            x1 = b - g * (b - a);
            f1 = cvar(x1).0;
        } else {
            (a, x1, f1) = (x1, x2, f2);
            x2 = a + g * (b - a);
            f2 = cvar(x2).0;
        }
    }
    cvar((a + b) / 2.0).1
}

/// [`Objective::Quantile`]: the top k members by rate at interval x, the rest at
/// `max_interval`, `k/x + (n-k)/max = budget`, k the smallest whose share of changes seen
/// within x reaches q; what x = `min_interval` leaves goes to more members at x.
fn quantile_level(rates: &[f64], budget: f64, bounds: Bounds, q: f64) -> Level {
    let objective = Objective::Quantile { q };
    let mut sorted: Vec<f64> = rates
        .iter()
        .map(|r| if r.is_nan() { 0.0 } else { *r })
        .collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let n = sorted.len() as f64;
    let total: f64 = sorted.iter().filter(|r| **r > 0.0).sum();
    let floor = 1.0 / bounds.max_interval;
    let mut covered = 0.0;
    for (k, r) in sorted.iter().enumerate() {
        let k1 = (k + 1) as f64;
        covered += r.max(0.0) / total.max(f64::MIN_POSITIVE);
        let x = (k1 / (budget - (n - k1) * floor)).max(bounds.min_interval);
        if x.is_nan() || x <= 0.0 || x >= bounds.max_interval {
            break;
        }
        if covered + (1.0 - covered) * x / bounds.max_interval >= q || k + 1 == sorted.len() {
            let mut k_end = k;
            while k_end + 1 < sorted.len() {
                let k2 = (k_end + 2) as f64;
                if k2 / x + (n - k2) * floor > budget * (1.0 + 1e-12) {
                    break;
                }
                k_end += 1;
            }
            // Members tied with the cutoff are polled alike: x then pays for all of them.
            let cutoff = sorted[k_end].max(f64::MIN_POSITIVE);
            let k_all = sorted.iter().filter(|r| **r >= cutoff).count() as f64;
            let x = (k_all / (budget - (n - k_all) * floor)).max(bounds.min_interval);
            return Level {
                objective,
                x,
                mu: cutoff,
                nu: 0.0,
            };
        }
    }
    Level::everyone_at(objective, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        min_interval: 10.0,
        max_interval: 3600.0,
    };
    const DEFAULT: Objective = Objective::QuantileThenMean {
        q: 0.99,
        slack: 0.25,
    };
    const OBJECTIVES: [Objective; 5] = [
        DEFAULT,
        Objective::Mean,
        Objective::Proportional,
        Objective::Tail { q: 0.99 },
        Objective::Quantile { q: 0.99 },
    ];

    /// The objectives that spend the whole budget whenever it binds.
    fn spends_all(o: Objective) -> bool {
        matches!(
            o,
            Objective::QuantileThenMean { .. } | Objective::Mean | Objective::Proportional
        )
    }

    fn intervals(rates: &[f64], budget: f64, bounds: Bounds, o: Objective) -> Vec<f64> {
        let l = allocate(rates, budget, bounds, o);
        rates.iter().map(|&r| interval(&l, r, bounds)).collect()
    }

    fn zipf(n: usize, s: f64, total_per_s: f64) -> Vec<f64> {
        let h: f64 = (1..=n).map(|i| (i as f64).powf(-s)).sum();
        (1..=n)
            .map(|i| total_per_s * (i as f64).powf(-s) / h)
            .collect()
    }

    /// (name, rates, poll budget) — the traffic every property below is checked against.
    fn cases() -> Vec<(&'static str, Vec<f64>, f64)> {
        vec![
            (
                "uniform 1000, 3.3/s",
                vec![20.0 / 86_400.0; 1000],
                1000.0 / 300.0,
            ),
            ("zipf 1.0, 3.3/s", zipf(1000, 1.0, 0.23), 1000.0 / 300.0),
            ("zipf 2.0, 3.3/s", zipf(1000, 2.0, 0.23), 1000.0 / 300.0),
            ("zipf 2.0, 0.6/s", zipf(1000, 2.0, 0.23), 0.6),
            ("zipf 1.5, 50/s (slack)", zipf(1000, 1.5, 0.23), 50.0),
            (
                "one hot, rest idle",
                {
                    let mut r = vec![1e-9; 500];
                    r[7] = 1.0;
                    r
                },
                2.0,
            ),
            (
                "with zero rates",
                {
                    let mut r = zipf(200, 1.2, 0.1);
                    r.extend([0.0; 50]);
                    r
                },
                1.0,
            ),
            ("three members", vec![0.1, 0.01, 0.001], 0.05),
        ]
    }

    #[test]
    fn the_budget_is_respected() {
        for (name, rates, budget) in cases() {
            for o in OBJECTIVES {
                let t = intervals(&rates, budget, B, o);
                let spend: f64 = t.iter().map(|t| 1.0 / t).sum();
                let floor = B.floor_rate(rates.len());
                assert!(
                    spend <= budget * (1.0 + 1e-5) || spend <= floor * (1.0 + 1e-9),
                    "{name} {o:?}: spends {spend} > {budget}"
                );
                // ... and uses it: either all of it, or every member is at min_interval
                // (nothing left to buy).
                let all_min = t.iter().all(|t| (*t - B.min_interval).abs() < 1e-9);
                if !all_min && spends_all(o) && spend > floor * (1.0 + 1e-9) {
                    assert!(
                        spend >= budget * (1.0 - 1e-5),
                        "{name} {o:?}: spends only {spend} of {budget}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_bounds_are_respected() {
        for (name, rates, budget) in cases() {
            for o in OBJECTIVES {
                for t in intervals(&rates, budget, B, o) {
                    assert!(
                        (B.min_interval..=B.max_interval).contains(&t),
                        "{name} {o:?}: {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn uniform_rates_get_equal_intervals() {
        // (members, rate each, poll budget, expected interval)
        let table = [
            (1000, 20.0 / 86_400.0, 1000.0 / 300.0, 300.0),
            (1000, 1.0, 1000.0 / 60.0, 60.0),
            (10, 1e-6, 1.0, 10.0),     // budget above members/min: all at min
            (100, 0.01, 0.01, 3600.0), // budget below members/max: all at max
            (7, 0.5, 7.0 / 42.0, 42.0),
        ];
        for (n, rate, budget, want) in table {
            // Not `Quantile`: it leaves the last 1% of equal members at max_interval.
            for o in &OBJECTIVES[..4] {
                let o = *o;
                let t = intervals(&vec![rate; n], budget, B, o);
                for got in t {
                    assert!(
                        (got - want).abs() < want * 1e-4,
                        "{n} x {rate}, {budget}/s, {o:?}: {got} != {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_busier_member_is_never_polled_less_often() {
        for (name, rates, budget) in cases() {
            for o in OBJECTIVES {
                let t = intervals(&rates, budget, B, o);
                let mut pairs: Vec<(f64, f64)> = rates.iter().copied().zip(t).collect();
                pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
                for w in pairs.windows(2) {
                    assert!(
                        w[1].1 <= w[0].1 + 1e-9,
                        "{name} {o:?}: rate {} gets {} but rate {} gets {}",
                        w[1].0,
                        w[1].1,
                        w[0].0,
                        w[0].1
                    );
                }
            }
        }
    }

    #[test]
    fn more_budget_never_slows_a_member() {
        let rates = zipf(1000, 1.5, 0.2);
        for o in OBJECTIVES {
            let mut prev: Option<Vec<f64>> = None;
            for budget in [0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4] {
                let t = intervals(&rates, budget, B, o);
                if let Some(p) = &prev {
                    for (i, (a, b)) in p.iter().zip(&t).enumerate() {
                        assert!(
                            *b <= a * (1.0 + 1e-3),
                            "{o:?} budget {budget}: member {i} {a} -> {b}"
                        );
                    }
                }
                prev = Some(t);
            }
        }
    }

    #[test]
    fn an_idle_member_is_polled_within_max_interval() {
        let idle = [0.0, -1.0, f64::NAN, 1e-12];
        for r in idle {
            for o in OBJECTIVES {
                let mut rates = zipf(999, 2.0, 0.2);
                rates.push(r);
                let t = intervals(&rates, 1.0, B, o);
                assert!(t[999] <= B.max_interval, "{r} {o:?}: {}", t[999]);
                if r.is_nan() || r <= 1e-9 {
                    assert_eq!(t[999], B.max_interval, "{r} {o:?}");
                }
            }
        }
    }

    #[test]
    fn mean_rule_is_the_square_root_rule() {
        // Unclamped, T_i * sqrt(λ_i) is the same for every member.
        let rates = [0.1, 0.02, 0.005, 0.001];
        let t = intervals(&rates, 0.05, B, Objective::Mean);
        let k: Vec<f64> = rates.iter().zip(&t).map(|(r, t)| t * r.sqrt()).collect();
        for x in &k {
            assert!((x / k[0] - 1.0).abs() < 1e-6, "{k:?} {t:?}");
        }
    }

    #[test]
    fn the_default_keeps_p99_near_the_best_and_the_mean_near_the_square_root_rule() {
        // (traffic, poll budget)
        let table = [
            (zipf(1000, 1.0, 0.23), 1000.0 / 300.0),
            (zipf(1000, 1.5, 0.23), 1000.0 / 300.0),
            (zipf(1000, 2.0, 0.23), 1000.0 / 300.0),
            (zipf(1000, 2.0, 0.23), 0.6),
            (zipf(300, 1.2, 0.1), 0.5),
        ];
        for (rates, budget) in table {
            let p99 = |t: &[f64]| mixture_quantile(&rates, t, 0.99);
            let mean = |t: &[f64]| mixture_mean(&rates, t);
            let default = intervals(&rates, budget, B, DEFAULT);
            let sqrt = intervals(&rates, budget, B, Objective::Mean);
            let best = best_quantile(&rates, budget, B, 0.99);
            // The quantile is held within the slack of the best any schedule reaches ...
            assert!(
                p99(&default) <= best * 1.25 * 1.001,
                "p99 {} best {best}",
                p99(&default)
            );
            // ... never worse than the square-root rule's or equal intervals' p99 ...
            let equal = vec![rates.len() as f64 / budget; rates.len()];
            assert!(p99(&default) <= p99(&sqrt) * 1.001);
            assert!(p99(&default) <= p99(&equal).max(B.min_interval) * 1.25 * 1.001);
            // ... and the mean is the best that quantile allows: no worse than the quantile
            // policy's, and the square-root rule's whenever that one meets the quantile.
            let quantile = intervals(&rates, budget, B, Objective::Quantile { q: 0.99 });
            assert!(mean(&default) <= mean(&quantile) * 1.001);
            if p99(&sqrt) <= best * 1.25 {
                assert!((mean(&default) / mean(&sqrt) - 1.0).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn the_best_quantile_is_a_bound() {
        // No allocation of the same budget within the bounds does better than best_quantile.
        let rates = zipf(500, 1.3, 0.1);
        let budget = 500.0 / 300.0;
        let best = best_quantile(&rates, budget, B, 0.99);
        for o in OBJECTIVES {
            let t = intervals(&rates, budget, B, o);
            assert!(mixture_quantile(&rates, &t, 0.99) >= best * 0.999, "{o:?}");
        }
        // and the quantile policy reaches it.
        let t = intervals(&rates, budget, B, Objective::Quantile { q: 0.99 });
        assert!(mixture_quantile(&rates, &t, 0.99) <= best * 1.01);
    }

    fn mixture_mean(rates: &[f64], t: &[f64]) -> f64 {
        let total: f64 = rates.iter().sum();
        rates.iter().zip(t).map(|(r, t)| r / total * t / 2.0).sum()
    }

    /// The q-quantile of detection latency over events when member i changes at rate r_i and is
    /// polled every T_i (latency uniform on [0, T_i]).
    fn mixture_quantile(rates: &[f64], t: &[f64], q: f64) -> f64 {
        let total: f64 = rates.iter().sum();
        let (mut lo, mut hi) = (0.0, t.iter().cloned().fold(0.0, f64::max));
        for _ in 0..100 {
            let x = (lo + hi) / 2.0;
            let cdf: f64 = rates
                .iter()
                .zip(t)
                .map(|(r, t)| r / total * (x / t).min(1.0))
                .sum();
            if cdf < q {
                lo = x
            } else {
                hi = x
            }
        }
        hi
    }

    const E: Estimator = Estimator {
        slow_tau: 86_400.0,
        prior_rate: 1.0 / 3600.0,
        follow_up: 30.0,
    };
    const MIN: Millis = 60_000;

    /// A fleet whose members all have a day of history at these rates (changes a second),
    /// polled every `every` seconds, Poisson counts drawn from a fixed sequence.
    fn fleet(rates: &[f64], every: i64) -> Vec<RateState> {
        let mut seed = 12345u64;
        let mut uniform = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        rates
            .iter()
            .map(|&r| {
                let mut s = RateState::new(0);
                let mut at = 0;
                while at < 3 * 86_400_000 {
                    at += every * 1000;
                    // Poisson(r * every) by inversion.
                    let (mut k, mut p, u) = (0u32, (-r * every as f64).exp(), uniform());
                    let mut cdf = p;
                    while u > cdf && k < 1000 {
                        k += 1;
                        p *= r * every as f64 / f64::from(k);
                        cdf += p;
                    }
                    s.observe(&E, at, Changes::Count(k));
                }
                s
            })
            .collect()
    }

    #[test]
    fn a_new_member_gets_the_fleets_rate() {
        let mut states = fleet(&zipf(200, 1.5, 0.05), 60);
        let prior = Prior::fit(&states, &E);
        assert!(
            (prior.mean - 0.05 / 200.0).abs() < 0.05 / 200.0 * 0.15,
            "{prior:?}"
        );
        states.push(RateState::new(0));
        assert_eq!(states[200].rate(&prior), prior.mean);
        // Before any member has history: the configured prior.
        let fresh = [RateState::new(0); 3];
        assert_eq!(Prior::fit(&fresh, &E).mean, E.prior_rate);
    }

    #[test]
    fn a_steady_rate_is_learnt() {
        // (changes per poll, poll every, expected rate per second)
        let table = [
            (1u32, 60i64, 1.0 / 60.0),
            (3, 300, 0.01),
            (0, 300, 0.0),
            (12, 3600, 12.0 / 3600.0),
        ];
        for (k, every_s, want) in table {
            let mut s = RateState::new(0);
            let mut at = 0;
            for _ in 0..(5 * 86_400 / every_s) {
                at += every_s * 1000;
                s.observe(&E, at, Changes::Count(k));
            }
            let own = s.own_rate().unwrap();
            assert!(
                (own - want).abs() <= want * 0.01 + 1e-9,
                "{k}/{every_s}s: {own} vs {want}"
            );
        }
    }

    #[test]
    fn equal_members_get_equal_rates_despite_noise() {
        // 500 members at 20 changes a day each: their own counts differ by Poisson noise
        // alone, so the fitted prior is tight and every member gets about the fleet's rate.
        let states = fleet(&vec![20.0 / 86_400.0; 500], 300);
        let prior = Prior::fit(&states, &E);
        assert!(prior.var < (prior.mean * 0.05).powi(2), "{prior:?}");
        let own: Vec<f64> = states.iter().map(|s| s.own_rate().unwrap()).collect();
        let shrunk: Vec<f64> = states.iter().map(|s| s.rate(&prior)).collect();
        let spread = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt() / m
        };
        assert!(
            spread(&own) > 0.15,
            "own rates vary by noise: {}",
            spread(&own)
        );
        assert!(
            spread(&shrunk) < spread(&own) / 3.0,
            "shrunk {} own {}",
            spread(&shrunk),
            spread(&own)
        );
    }

    #[test]
    fn different_members_keep_their_own_rates() {
        let rates = zipf(300, 2.0, 0.1);
        let states = fleet(&rates, 30);
        let prior = Prior::fit(&states, &E);
        assert!(prior.var > prior.mean.powi(2), "{prior:?}");
        for i in 0..10 {
            let got = states[i].rate(&prior);
            assert!(
                (got / rates[i] - 1.0).abs() < 0.2,
                "member {i}: {got} vs {}",
                rates[i]
            );
        }
    }

    #[test]
    fn a_burst_counts_as_one_observation() {
        // A fleet where every member changes in bursts of 50 about twice a day: the fitted
        // dispersion is about the burst size, and a member that just burst is barely set
        // apart from one that has not burst for a day.
        let mut states = Vec::new();
        for m in 0..200 {
            let mut s = RateState::new(0);
            let mut at = 0;
            for i in 0..(3 * 288) {
                at += 300_000;
                let burst = (i + m * 7) % 144 == 0;
                s.observe(&E, at, Changes::Count(if burst { 50 } else { 0 }));
            }
            states.push(s);
        }
        let prior = Prior::fit(&states, &E);
        assert!(prior.dispersion > 20.0, "{prior:?}");
        let rates: Vec<f64> = states.iter().map(|s| s.rate(&prior)).collect();
        let own: Vec<f64> = states.iter().map(|s| s.own_rate().unwrap()).collect();
        let ratio = |v: &[f64]| {
            v.iter().cloned().fold(0.0, f64::max) / v.iter().cloned().fold(f64::MAX, f64::min)
        };
        assert!(ratio(&own) > 1.5, "{}", ratio(&own));
        assert!(
            ratio(&rates) < 1.0 + (ratio(&own) - 1.0) / 3.0,
            "{} vs {}",
            ratio(&rates),
            ratio(&own)
        );
    }

    #[test]
    fn change_instants_weigh_by_their_age_and_absurd_stamps_are_clamped() {
        let at = 3600 * 1000;
        let (mut fresh, mut stale) = (RateState::new(0), RateState::new(0));
        fresh.observe(&E, at, Changes::At(&[at - 5_000]));
        stale.observe(&E, at, Changes::At(&[at - 55 * MIN]));
        assert!(fresh.count > stale.count);
        assert!(fresh.changed && stale.changed);
        // Stamps far in the future or before the window count as now / as the window's start.
        let (mut a, mut b) = (RateState::new(0), RateState::new(0));
        a.observe(&E, at, Changes::At(&[i64::MAX, i64::MIN]));
        b.observe(&E, at, Changes::At(&[at, 0]));
        assert_eq!(a, b);
    }

    #[test]
    fn a_change_brings_a_follow_up_poll_while_follow_ups_pay() {
        let mut f = FollowUps::default();
        // Unmeasured: follow-ups are assumed to pay.
        assert!(f.wanted(1));
        assert!(!f.wanted(0));
        let anchor = 1_000_000;
        assert_eq!(next_poll_at(anchor, 3600.0, Some(30.0)), anchor + 30_000);
        assert_eq!(next_poll_at(anchor, 20.0, Some(30.0)), anchor + 20_000);
        assert_eq!(next_poll_at(anchor, 3600.0, None), anchor + 3_600_000);
        // Follow-ups that find what the rate predicts (Poisson traffic) stop paying: then only
        // polls that saw two or more changes, and one in EXPLORE of the rest, are followed up.
        for _ in 0..2000 {
            f.record(1, 1.0);
        }
        assert!(!f.pay());
        let singles = (0..80).filter(|_| f.wanted(1)).count();
        assert_eq!(singles as u64, 80 / FollowUps::EXPLORE);
        assert!(f.wanted(2));
        // Follow-ups that find three times the prediction (a burst) pay again.
        for _ in 0..2000 {
            f.record(3, 1.0);
        }
        assert!(f.pay() && f.wanted(1));
    }

    #[test]
    fn a_quiet_member_drifts_back_to_max_interval() {
        let mut rates = zipf(1000, 2.0, 0.2);
        let others = fleet(&rates[..999], 60);
        let mut s = RateState::new(0);
        // Busy for a day: a change a minute, as busy as the 10th busiest member.
        let mut at = 0;
        for _ in 0..1440 {
            at += MIN;
            s.observe(&E, at, Changes::Count(1));
        }
        let mut seen = Vec::new();
        // Then quiet, polled at whatever interval it gets, one day after another.
        for _day in 0..10 {
            let mut all = others.clone();
            all.push(s);
            let prior = Prior::fit(&all, &E);
            for (r, st) in rates.iter_mut().zip(&all) {
                *r = st.rate(&prior);
            }
            let l = allocate(&rates, 1.0, B, DEFAULT);
            let iv = interval(&l, rates[999], B);
            seen.push(iv.round());
            let end = at + 1440 * MIN;
            while at < end {
                at += (iv * 1000.0) as Millis;
                s.observe(&E, at, Changes::Count(0));
            }
        }
        // Each quiet day polls it less often, and within ten days it is back at max_interval
        // (the estimate forgets e-fold a day: ln(1440) ≈ 7 days for 1440 a day to 1 a day).
        assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
        assert!(seen[0] < 300.0, "{seen:?}");
        assert_eq!(seen[9], B.max_interval, "{seen:?}");
    }

    #[test]
    fn a_clock_going_back_does_not_corrupt_the_state() {
        let mut s = RateState::new(10 * MIN);
        s.observe(&E, 5 * MIN, Changes::Count(2));
        assert!(s.count.is_finite() && s.count > 0.0 && s.exposure == 0.0);
        assert_eq!(s.observed_at, 10 * MIN);
        let prior = Prior {
            mean: 1e-3,
            var: 1e-6,
            dispersion: 1.0,
        };
        assert_eq!(
            s.rate(&prior),
            prior.mean,
            "no exposure yet: the fleet's rate"
        );
    }

    #[test]
    fn a_poll_on_time_keeps_its_phase_and_a_late_one_resets_it() {
        // (due, polled, tick, anchor)
        let table = [
            (10_000, 10_400, 1_000, 10_000),
            (10_000, 15_000, 1_000, 15_000),
            (10_000, 9_000, 1_000, 9_000),
        ];
        for (due, polled, tick, want) in table {
            assert_eq!(anchor(due, polled, tick), want);
        }
    }

    #[test]
    fn the_guard_pulls_towards_equal_intervals_while_the_quantile_is_missed() {
        let mut g = TailGuard::default();
        let mean = 1e-3;
        // Not enough changes yet: nothing moves.
        g.record(1000.0, 300.0);
        g.adjust(0.99, mean);
        assert_eq!(g.floor, 0.0);
        // 5% of changes later than the equal schedule's p99: the floor rises, step by step.
        for i in 0..2000 {
            g.record(if i % 20 == 0 { 1000.0 } else { 10.0 }, 300.0);
        }
        let mut floors = Vec::new();
        for _ in 0..5 {
            g.adjust(0.99, mean);
            floors.push(g.floor);
        }
        assert!(
            floors.windows(2).all(|w| w[1] > w[0]) && floors[0] > 0.0,
            "{floors:?}"
        );
        // Back at q: it decays to nothing.
        for _ in 0..20_000 {
            g.record(10.0, 300.0);
        }
        for _ in 0..200 {
            g.adjust(0.99, mean);
        }
        assert_eq!(g.floor, 0.0);
        // Exactly q (equal intervals): it does not rise.
        let mut h = TailGuard {
            floor: 1e-3,
            ..TailGuard::default()
        };
        for i in 0..10_000 {
            h.record(if i % 100 == 0 { 1000.0 } else { 10.0 }, 300.0);
        }
        h.adjust(0.99, mean);
        assert!(h.floor <= 1e-3);
    }

    #[test]
    fn poll_budget_subtracts_details_and_headroom() {
        let table = [
            (10.0, 0.1, 2.0, 7.0),
            (10.0, 0.0, 0.0, 10.0),
            (1.0, 0.1, 5.0, 0.0),
        ];
        for (budget, headroom, details, want) in table {
            assert!((poll_budget(budget, headroom, details) - want).abs() < 1e-12);
        }
    }
}
