//! What the running daemon knows about itself: counters for `/metrics`, the freshness rule of
//! `/healthz`, and the progress rule that decides whether the systemd watchdog is fed.
//!
//! The engine reports ticks and cycles, `http` reports every attempt (this module's
//! [`AccountMetrics`] is its `Observer`), the store reports the events it commits (through its
//! `CommitObserver`); this module only records and judges. It never does I/O and never
//! sleeps: the admin endpoint renders it, handing over what it read from the store
//! ([`Outbox`]), and the watchdog task (`notify`) asks it. The two rules are pure
//! functions ([`stall`], [`stale`]) of a snapshot and the clock, tested by tables.

use crate::config::{Config, Schedule};
use crate::time::{format_ms, now_ms, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Added to the longest silence a healthy cycle can have (one request timeout after the longest
/// wait between attempts): pacing, commits and a slow disk fit in it.
const QUIET_MARGIN: Duration = Duration::from_secs(60);
/// How late a scheduled tick may be before an idle account counts as stalled: the scheduler
/// checks its jobs twice a second; this covers a busy machine and small clock steps.
pub const TICK_GRACE: Duration = Duration::from_secs(60);

/// The kinds of absurd provider answers counted by [`AccountMetrics::anomaly`] and rendered as
/// `pollhook_provider_anomalies_total{kind}` (RELIABILITY.md, "Hostile provider and
/// operator").
pub const ANOMALIES: [&str; 4] = [
    "future_timestamp",
    "unusable_item",
    "duplicate_id",
    "oversized_answer",
];

/// The daemon's counters and clocks, one [`AccountMetrics`] per account (config order).
pub struct Metrics {
    started_ms: Millis,
    schedule: Schedule,
    healthz_periods: u32,
    accounts: Vec<Arc<AccountMetrics>>,
    /// Events committed to the outbox by this process, by type (the store reports them).
    committed: Mutex<BTreeMap<String, u64>>,
}

/// What `/metrics` shows of the store, read by the caller: the greatest committed seq and
/// each configured sink's ack.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    pub last_seq: u64,
    /// (sink, last acked seq), for the sinks whose ack could be read.
    pub acked: Vec<(String, u64)>,
}

/// One account's counters, shared with its HTTP client.
pub struct AccountMetrics {
    pub name: String,
    pub provider: &'static str,
    /// The longest a healthy cycle of this account goes without an HTTP attempt completing.
    pub quiet_limit: Duration,
    state: Mutex<AccountState>,
}

/// What one account has done since the daemon started.
#[derive(Debug, Clone, Default)]
pub struct AccountState {
    /// endpoint label -> status ("200", "429", "error" for no answer) -> attempts.
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    pub cycles_ok: u64,
    pub cycles_failed: u64,
    pub ticks_skipped: u64,
    /// The cycle in flight: its id and when it began.
    pub running: Option<(u64, Instant)>,
    /// When an HTTP attempt of this account last completed (any outcome).
    pub last_progress: Option<Instant>,
    /// When the scheduler last ticked this account (ran or skipped), wall clock.
    pub last_tick: Option<Millis>,
    /// When a cycle of this account last ended without failures, wall clock.
    pub last_success: Option<Millis>,
    /// Absurd things the provider answered, by kind (`future_timestamp`, `unusable_item`,
    /// `duplicate_id`, `oversized_answer`): each handled, counted here.
    pub anomalies: BTreeMap<&'static str, u64>,
    /// Answers in which a field pollhook reads was missing from every item (or carried only
    /// values outside its known set), by field: contract drift (`providers::contract`).
    pub drift: BTreeMap<String, u64>,
}

impl AccountMetrics {
    /// Counters for `name`, whose requests time out after `timeout` and wait at most
    /// `retry_after_cap` between attempts.
    pub fn new(
        name: &str,
        provider: &'static str,
        timeout: Duration,
        retry_after_cap: Duration,
    ) -> AccountMetrics {
        AccountMetrics {
            name: name.to_string(),
            provider,
            quiet_limit: timeout + retry_after_cap.max(crate::backoff::MAX_STEP) + QUIET_MARGIN,
            state: Mutex::default(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut AccountState) -> R) -> R {
        f(&mut crate::locks::lock(&self.state))
    }

    /// One HTTP attempt completed: `status` is `None` when no answer came (timeout, refused).
    /// (Also this account's [`http::Observer`](crate::http::Observer).)
    pub fn request(&self, endpoint: &str, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.with(|s| {
            let by_status = match s.requests.get_mut(endpoint) {
                Some(m) => m,
                None => s.requests.entry(endpoint.to_string()).or_default(),
            };
            *by_status.entry(status).or_default() += 1;
            s.last_progress = Some(Instant::now());
        });
    }

    /// The provider answered `n` absurd things of `kind` (handled: see RELIABILITY.md,
    /// "Hostile provider and operator").
    pub fn anomaly(&self, kind: &'static str, n: u64) {
        debug_assert!(ANOMALIES.contains(&kind), "{kind} is not in ANOMALIES");
        if n > 0 {
            self.with(|s| *s.anomalies.entry(kind).or_default() += n);
        }
    }

    /// An answer in which `field` drifted (missing from every item, or only unknown values).
    pub fn drift(&self, field: &str) {
        self.with(|s| *s.drift.entry(field.to_string()).or_default() += 1);
    }

    /// The scheduler ticked this account (the cycle may still be skipped).
    pub fn tick(&self) {
        self.with(|s| s.last_tick = Some(now_ms()));
    }

    pub fn skipped(&self) {
        self.with(|s| s.ticks_skipped += 1);
    }

    pub fn cycle_started(&self, id: u64) {
        self.with(|s| s.running = Some((id, Instant::now())));
    }

    pub fn cycle_finished(&self, ok: bool) {
        self.with(|s| {
            s.running = None;
            if ok {
                s.cycles_ok += 1;
                s.last_success = Some(now_ms());
            } else {
                s.cycles_failed += 1;
            }
        });
    }

    pub fn snapshot(&self) -> AccountState {
        self.with(|s| s.clone())
    }
}

impl crate::http::Observer for AccountMetrics {
    fn request(&self, endpoint: &str, status: Option<u16>) {
        AccountMetrics::request(self, endpoint, status);
    }
}

/// Why the watchdog is not fed: the account and what is stuck.
pub type Stall = String;

/// The progress rule. An account is stalled when
/// - it is in a cycle and nothing progressed (no HTTP attempt completed, and the cycle did not
///   begin) for longer than `quiet_limit` — a long cycle that keeps completing requests is
///   never stalled, however long it runs; or
/// - it is idle and the scheduler missed its tick: the next run after the last tick (or after
///   the daemon started) is more than [`TICK_GRACE`] overdue.
pub fn stall(
    name: &str,
    s: &AccountState,
    quiet_limit: Duration,
    schedule: &Schedule,
    started_ms: Millis,
    now_wall: Millis,
    now_mono: Instant,
) -> Option<Stall> {
    if let Some((id, began)) = s.running {
        let last = s.last_progress.map_or(began, |p| p.max(began));
        let quiet = now_mono.saturating_duration_since(last);
        return (quiet > quiet_limit).then(|| {
            format!(
                "account {name}: cycle {id} made no progress for {}s (no request completed; limit {}s)",
                quiet.as_secs(),
                quiet_limit.as_secs()
            )
        });
    }
    let since = s.last_tick.unwrap_or(started_ms);
    let due = schedule
        .next_after(crate::time::utc(since))?
        .timestamp_millis();
    (now_wall > due + TICK_GRACE.as_millis() as i64).then(|| {
        format!(
            "account {name}: the scheduler missed its tick due at {}",
            format_ms(due)
        )
    })
}

/// The freshness rule of `/healthz`: stale once the `periods`-th scheduled run after the last
/// successful cycle (or after the daemon started, before any success) is due.
/// Returns that deadline when it has passed.
pub fn stale(
    last_success: Option<Millis>,
    started_ms: Millis,
    schedule: &Schedule,
    periods: u32,
    now_wall: Millis,
) -> Option<Millis> {
    let mut t = crate::time::utc(last_success.unwrap_or(started_ms));
    for _ in 0..periods {
        t = schedule.next_after(t)?;
    }
    let deadline = t.timestamp_millis();
    (now_wall > deadline).then_some(deadline)
}

/// One account in the `/healthz` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Freshness {
    pub account: String,
    /// RFC 3339, or `null` before the first success.
    pub last_success: Option<String>,
    /// When it became stale (only for stale accounts).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stale_since: Option<String>,
}

/// The `/healthz` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// `"ok"` or `"stale"`.
    pub status: String,
    pub healthz_periods: u32,
    pub schedule: String,
    pub stale: Vec<Freshness>,
    pub accounts: Vec<Freshness>,
}

impl Metrics {
    pub fn new(config: &Config) -> Metrics {
        let accounts = config
            .accounts
            .iter()
            .map(|a| {
                Arc::new(AccountMetrics::new(
                    &a.name,
                    a.provider.kind(),
                    a.http.timeout,
                    a.http.retry_after_cap,
                ))
            })
            .collect();
        Metrics::with_accounts(
            config.daemon.schedule.clone(),
            config.daemon.healthz_periods,
            accounts,
        )
    }

    /// Metrics of `accounts` (in the engine's order) polled on `schedule`.
    pub fn with_accounts(
        schedule: Schedule,
        healthz_periods: u32,
        accounts: Vec<Arc<AccountMetrics>>,
    ) -> Metrics {
        Metrics {
            started_ms: now_ms(),
            schedule,
            healthz_periods,
            accounts,
            committed: Mutex::default(),
        }
    }

    /// The counters of account `idx` (config order).
    pub fn account(&self, idx: usize) -> &Arc<AccountMetrics> {
        &self.accounts[idx]
    }

    /// Every stalled account, per [`stall`]; empty when the watchdog may be fed.
    pub fn stalls(&self) -> Vec<Stall> {
        let (wall, mono) = (now_ms(), Instant::now());
        self.accounts
            .iter()
            .filter_map(|a| {
                stall(
                    &a.name,
                    &a.snapshot(),
                    a.quiet_limit,
                    &self.schedule,
                    self.started_ms,
                    wall,
                    mono,
                )
            })
            .collect()
    }

    /// The `/healthz` verdict, per [`stale`].
    pub fn health(&self) -> Health {
        let now = now_ms();
        let mut health = Health {
            status: "ok".into(),
            healthz_periods: self.healthz_periods,
            schedule: self.schedule.0.clone(),
            stale: Vec::new(),
            accounts: Vec::new(),
        };
        for a in &self.accounts {
            let last = a.snapshot().last_success;
            let since = stale(
                last,
                self.started_ms,
                &self.schedule,
                self.healthz_periods,
                now,
            );
            let f = Freshness {
                account: a.name.clone(),
                last_success: last.map(format_ms),
                stale_since: since.map(format_ms),
            };
            if since.is_some() {
                health.stale.push(f.clone());
            }
            health.accounts.push(f);
        }
        if !health.stale.is_empty() {
            health.status = "stale".into();
        }
        health
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter, plus what the store
    /// knows (`outbox`): the last seq and each sink's backlog.
    pub fn render(&self, outbox: &Outbox) -> String {
        let mut out = Exposition::default();
        let snaps: Vec<(&AccountMetrics, AccountState)> = self
            .accounts
            .iter()
            .map(|a| (a.as_ref(), a.snapshot()))
            .collect();

        out.family(
            "pollhook_start_time_seconds",
            "gauge",
            "When the daemon started, in Unix seconds.",
        );
        out.sample("pollhook_start_time_seconds", &[], secs(self.started_ms));

        out.family(
            "pollhook_cycles_total",
            "counter",
            "Cycles completed, by account and outcome (ok: no unit failed).",
        );
        for (a, s) in &snaps {
            for (outcome, n) in [("ok", s.cycles_ok), ("failed", s.cycles_failed)] {
                out.sample(
                    "pollhook_cycles_total",
                    &[("account", &a.name), ("outcome", outcome)],
                    n as f64,
                );
            }
        }
        out.family(
            "pollhook_ticks_skipped_total",
            "counter",
            "Scheduled ticks skipped because the account's previous cycle was still running.",
        );
        for (a, s) in &snaps {
            out.sample(
                "pollhook_ticks_skipped_total",
                &[("account", &a.name)],
                s.ticks_skipped as f64,
            );
        }
        out.family(
            "pollhook_cycle_running",
            "gauge",
            "1 while a cycle of the account is in flight.",
        );
        for (a, s) in &snaps {
            out.sample(
                "pollhook_cycle_running",
                &[("account", &a.name)],
                f64::from(u8::from(s.running.is_some())),
            );
        }
        out.family(
            "pollhook_requests_total",
            "counter",
            "HTTP attempts to the provider (retries included), by account, endpoint and status (\"error\": no answer).",
        );
        for (a, s) in &snaps {
            for (endpoint, by_status) in &s.requests {
                for (status, n) in by_status {
                    out.sample(
                        "pollhook_requests_total",
                        &[
                            ("account", &a.name),
                            ("provider", a.provider),
                            ("endpoint", endpoint),
                            ("status", status),
                        ],
                        *n as f64,
                    );
                }
            }
        }
        out.family(
            "pollhook_provider_anomalies_total",
            "counter",
            "Absurd provider answers handled, by account and kind: future_timestamp (quarantined: never trusted for the cursor), unusable_item (skipped), duplicate_id (diffed once), oversized_answer (over its cap: the list walk stood in, or the item was skipped).",
        );
        for (a, s) in &snaps {
            for kind in ANOMALIES {
                out.sample(
                    "pollhook_provider_anomalies_total",
                    &[("account", &a.name), ("kind", kind)],
                    s.anomalies.get(kind).copied().unwrap_or(0) as f64,
                );
            }
        }
        out.family(
            "pollhook_contract_drift_total",
            "counter",
            "Answers in which a field pollhook reads was missing from every item, or carried only values outside its known set, by account and field (the field as read, after [accounts.api]): run `pollhook probe`.",
        );
        for (a, s) in &snaps {
            for (field, n) in &s.drift {
                out.sample(
                    "pollhook_contract_drift_total",
                    &[("account", &a.name), ("field", field)],
                    *n as f64,
                );
            }
        }
        out.family(
            "pollhook_last_success_timestamp_seconds",
            "gauge",
            "When the account's last cycle without failures ended, in Unix seconds (absent before the first).",
        );
        for (a, s) in &snaps {
            if let Some(t) = s.last_success {
                out.sample(
                    "pollhook_last_success_timestamp_seconds",
                    &[("account", &a.name)],
                    secs(t),
                );
            }
        }
        out.family(
            "pollhook_events_total",
            "counter",
            "Events committed to the outbox by this process, by event type.",
        );
        let committed = crate::locks::lock(&self.committed).clone();
        for (t, n) in committed {
            out.sample("pollhook_events_total", &[("type", &t)], n as f64);
        }
        let last = outbox.last_seq;
        out.family(
            "pollhook_outbox_last_seq",
            "gauge",
            "The greatest committed outbox sequence number.",
        );
        out.sample("pollhook_outbox_last_seq", &[], last as f64);
        out.family(
            "pollhook_sink_backlog",
            "gauge",
            "Events committed but not yet delivered to the sink.",
        );
        for (name, acked) in &outbox.acked {
            out.sample(
                "pollhook_sink_backlog",
                &[("sink", name)],
                last.saturating_sub(*acked) as f64,
            );
        }
        out.text
    }
}

impl crate::store::CommitObserver for Metrics {
    fn committed(&self, types: &[&str]) {
        let mut by_type = crate::locks::lock(&self.committed);
        for t in types {
            match by_type.get_mut(*t) {
                Some(n) => *n += 1,
                None => {
                    by_type.insert(t.to_string(), 1);
                }
            }
        }
    }
}

fn secs(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

/// Writes the text exposition format.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value: backslash, double quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn every_minute() -> Schedule {
        Schedule::new("0 * * * * *").unwrap()
    }

    #[test]
    fn a_long_cycle_that_keeps_completing_requests_is_not_stalled() {
        let sched = every_minute();
        let limit = Duration::from_secs(210);
        let now = Instant::now();
        let began = now - Duration::from_secs(3600); // an hour-long resync...
        let busy = AccountState {
            running: Some((7, began)),
            last_progress: Some(now - Duration::from_secs(5)), // ...still completing requests
            ..AccountState::default()
        };
        assert_eq!(stall("a", &busy, limit, &sched, T0, T0, now), None);
        let stuck = AccountState {
            last_progress: Some(now - Duration::from_secs(211)),
            ..busy.clone()
        };
        let why = stall("a", &stuck, limit, &sched, T0, T0, now).unwrap();
        assert!(why.contains("cycle 7 made no progress for 211s"), "{why}");
        // A cycle that just began has had no request yet: it is not stuck.
        let fresh = AccountState {
            running: Some((8, now - Duration::from_secs(10))),
            last_progress: Some(now - Duration::from_secs(999)),
            ..AccountState::default()
        };
        assert_eq!(stall("a", &fresh, limit, &sched, T0, T0, now), None);
    }

    #[test]
    fn an_idle_account_is_stalled_only_when_its_tick_is_overdue() {
        let sched = every_minute();
        let limit = Duration::from_secs(210);
        let now = Instant::now();
        let idle = AccountState {
            last_tick: Some(T0),
            ..AccountState::default()
        };
        // The next tick is due at T0+60s; it may be up to TICK_GRACE late.
        for (at, stalled) in [
            (T0 + 59_000, false),
            (T0 + 119_000, false),
            (T0 + 121_000, true),
        ] {
            assert_eq!(
                stall("a", &idle, limit, &sched, T0, at, now).is_some(),
                stalled,
                "{at}"
            );
        }
        // Before any tick, the daemon's start is the reference.
        let never = AccountState::default();
        assert!(stall("a", &never, limit, &sched, T0, T0 + 30_000, now).is_none());
        assert!(stall("a", &never, limit, &sched, T0, T0 + 200_000, now).is_some());
    }

    #[test]
    fn healthz_goes_stale_at_the_nth_scheduled_run_after_the_last_success() {
        let sched = every_minute();
        let success = T0 + 10_000;
        // Runs after it: T0+60s, +120s, +180s. With 3 periods, stale after T0+180s.
        assert_eq!(stale(Some(success), T0, &sched, 3, T0 + 180_000), None);
        assert_eq!(
            stale(Some(success), T0, &sched, 3, T0 + 180_001),
            Some(T0 + 180_000)
        );
        assert_eq!(
            stale(Some(success), T0, &sched, 1, T0 + 60_001),
            Some(T0 + 60_000)
        );
        // Never succeeded: counted from the start.
        assert_eq!(stale(None, T0, &sched, 3, T0 + 100_000), None);
        assert!(stale(None, T0, &sched, 3, T0 + 200_000).is_some());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut e = Exposition::default();
        e.family("x_total", "counter", "X.");
        e.sample("x_total", &[("endpoint", "GET /api/v1/document/{id}")], 3.0);
        assert_eq!(
            e.text,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{endpoint=\"GET /api/v1/document/{id}\"} 3\n"
        );
    }
}
