//! The one backoff policy: how long to wait before trying again after a failure.
//!
//! [`Backoff`] is exponential — the step doubles per failed attempt, from `first` up to `max` —
//! with *equal jitter*: each wait is drawn between half the step and the whole step. Half a
//! step at least, so that a retry never comes back at once to a server that just failed (full
//! jitter, a draw between zero and the step, would); random above that, so that members and
//! sinks that failed together do not retry together. [`Retry`] carries one loop's attempt
//! count for the loops that retry until they succeed (a sink that is not ready, a batch
//! delivery); the sinks' configured `retry_schedule` is a table read by [`on_schedule`].
//!
//! Users: `http` (between attempts of one request, from the account's `retry_base`),
//! `sinks` (a failed batch delivery; an endpoint's `prepare`), the queue (`retry_schedule`).
//! This module only computes waits: it never sleeps.

use std::time::Duration;

/// The longest single step of an HTTP request's retries, whatever the retry count (the
/// watchdog's stall rule allows for it: `metrics`).
pub const MAX_STEP: Duration = Duration::from_secs(30);

/// Exponential steps from `first` to `max`, each wait with equal jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The step after failed attempt `attempt` (1-based): `first * 2^(attempt-1)`, capped.
    pub fn step(&self, attempt: u32) -> Duration {
        self.first
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max)
    }

    /// The wait after failed attempt `attempt` (1-based): between half its step and the step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ms = self.step(attempt).as_millis() as u64;
        Duration::from_millis(fastrand::u64(ms / 2..=ms.max(1)))
    }
}

/// One retry loop's position in its [`Backoff`].
#[derive(Debug, Clone)]
pub struct Retry {
    policy: Backoff,
    failed: u32,
}

impl Retry {
    pub fn new(policy: Backoff) -> Retry {
        Retry { policy, failed: 0 }
    }

    /// Counts a failure and returns how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        self.failed = self.failed.saturating_add(1);
        self.policy.delay(self.failed)
    }

    /// A success: the next failure waits the first step again.
    pub fn reset(&mut self) {
        self.failed = 0;
    }
}

/// The wait after failed attempt `attempt` (1-based) on a configured schedule: entry
/// `attempt - 1`, and past the end the last entry again (an empty schedule: an hour). No
/// jitter: the schedule is the operator's, and a sink has one consumer.
pub fn on_schedule(schedule: &[Duration], attempt: u32) -> Duration {
    let i = (attempt.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    schedule
        .get(i)
        .copied()
        .unwrap_or(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap_and_waits_stay_between_half_a_step_and_a_step() {
        let b = Backoff::new(Duration::from_millis(100), MAX_STEP);
        assert_eq!(b.step(1), Duration::from_millis(100));
        assert_eq!(b.step(3), Duration::from_millis(400));
        assert_eq!(b.step(30), MAX_STEP);
        assert_eq!(b.step(u32::MAX), MAX_STEP);
        for _ in 0..200 {
            for attempt in [1, 3, 30] {
                let (wait, step) = (b.delay(attempt), b.step(attempt));
                assert!(wait >= step / 2 && wait <= step, "{attempt}: {wait:?}");
            }
        }
    }

    #[test]
    fn a_retry_loop_grows_its_waits_and_starts_over_after_a_success() {
        let mut r = Retry::new(Backoff::new(Duration::from_secs(1), Duration::from_secs(4)));
        let waits: Vec<Duration> = (0..4).map(|_| r.failed()).collect();
        let secs = |lo: f64, hi: f64, d: Duration| d.as_secs_f64() >= lo && d.as_secs_f64() <= hi;
        assert!(
            secs(0.5, 1.0, waits[0]) && secs(1.0, 2.0, waits[1]),
            "{waits:?}"
        );
        assert!(
            secs(2.0, 4.0, waits[2]) && secs(2.0, 4.0, waits[3]),
            "{waits:?}"
        );
        r.reset();
        assert!(secs(0.5, 1.0, r.failed()));
    }

    #[test]
    fn a_schedule_is_read_by_attempt_and_its_last_entry_repeats() {
        let s = [5, 30, 3600].map(Duration::from_secs);
        assert_eq!(on_schedule(&s, 0), Duration::from_secs(5));
        assert_eq!(on_schedule(&s, 1), Duration::from_secs(5));
        assert_eq!(on_schedule(&s, 2), Duration::from_secs(30));
        assert_eq!(on_schedule(&s, 9), Duration::from_secs(3600));
        assert_eq!(on_schedule(&[], 1), Duration::from_secs(3600));
    }
}
