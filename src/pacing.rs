//! Request pacing: a GCRA (generic cell rate algorithm) limiter that keeps a client under a
//! provider's rate limit — e.g. OnlinePajak's 100 calls a minute per token.
//!
//! GCRA keeps one number, the theoretical arrival time (TAT) of the next request. A request may
//! go when `now >= TAT - (burst - 1) * interval`; it moves TAT on by one interval. So at most
//! `burst` requests go at once, then one per interval, and in any window of length W at most
//! `burst + W / interval` go. The TAT can be saved and restored ([`Gcra::tat_ms`],
//! [`Gcra::restore`]) so that a restart — or `pollhook once` run in a loop — does not get a
//! fresh burst. Every attempt, retries included, passes through here (see `http::Http`).

use crate::time::{now_ms, Millis};
use std::sync::Mutex;
use std::time::Duration;

/// One limiter, shared by everything that spends the same budget.
#[derive(Debug)]
pub struct Gcra {
    interval_ms: i64,
    burst: i64,
    /// Theoretical arrival time of the next request, in epoch milliseconds.
    tat: Mutex<Millis>,
}

impl Gcra {
    /// `per_minute` requests a minute, at most `burst` at once.
    pub fn per_minute(per_minute: u32, burst: u32) -> Gcra {
        Gcra {
            interval_ms: 60_000 / i64::from(per_minute.max(1)),
            burst: i64::from(burst.max(1)),
            tat: Mutex::new(0),
        }
    }

    /// Reserves the next slot and returns how long to wait for it (zero when it is free now).
    pub fn reserve(&self, now: Millis) -> Duration {
        let mut tat = crate::locks::lock(&self.tat);
        let start = (*tat).max(now);
        let allowed_at = start - (self.burst - 1) * self.interval_ms;
        *tat = start + self.interval_ms;
        Duration::from_millis((allowed_at - now).max(0) as u64)
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        let wait = self.reserve(now_ms());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The state to save.
    pub fn tat_ms(&self) -> Millis {
        *crate::locks::lock(&self.tat)
    }

    /// Restores a saved state (never moves it backwards).
    pub fn restore(&self, tat: Millis) {
        let mut t = crate::locks::lock(&self.tat);
        *t = (*t).max(tat);
    }

    /// The most requests this limiter lets through in any window of `window`.
    pub fn max_in(&self, window: Duration) -> i64 {
        self.burst + window.as_millis() as i64 / self.interval_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a client that sends as soon as the limiter allows, for `horizon_ms`.
    fn send_times(g: &Gcra, start: Millis, horizon_ms: i64) -> Vec<Millis> {
        let mut now = start;
        let mut sent = Vec::new();
        while now < start + horizon_ms {
            now += g.reserve(now).as_millis() as i64;
            sent.push(now);
        }
        sent
    }

    #[test]
    fn no_sixty_second_window_exceeds_burst_plus_rate() {
        let g = Gcra::per_minute(90, 5);
        let sent = send_times(&g, 1_000_000, 300_000);
        let mut worst = 0;
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|u| **u < t + 60_000).count();
            worst = worst.max(in_window);
        }
        assert_eq!(worst as i64, g.max_in(Duration::from_secs(60)));
        assert!(worst <= 95, "{worst} requests in one minute");
        assert!(worst >= 90, "the limiter should use its budget: {worst}");
    }

    #[test]
    fn the_burst_goes_at_once_then_one_per_interval() {
        let g = Gcra::per_minute(60, 3);
        let waits: Vec<u128> = (0..5).map(|_| g.reserve(0).as_millis()).collect();
        assert_eq!(waits, vec![0, 0, 0, 1000, 2000]);
    }

    #[test]
    fn a_restored_state_carries_over_a_restart() {
        let g = Gcra::per_minute(60, 1);
        for _ in 0..10 {
            g.reserve(0);
        }
        let fresh = Gcra::per_minute(60, 1);
        fresh.restore(g.tat_ms());
        assert_eq!(fresh.reserve(0), Duration::from_secs(10));
    }
}
