//! Detection latency: for every event committed, `detected_at − occurred_at` — how far behind
//! the provider's webhook (sent at the change) pollhook ran. Per account, a Prometheus
//! histogram (all events since the start) and the last [`RECENT`] latencies, from which
//! `status` and the demo summary take exact p50/p99.

use std::collections::VecDeque;

/// The histogram's upper bounds, seconds (`+Inf` is implied).
pub const BUCKETS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 86400.0,
];
/// How many recent latencies are kept for the quantiles.
pub const RECENT: usize = 10_000;

/// One account's detection latencies.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Events per bucket (not cumulative; the last is over the largest bound).
    buckets: [u64; BUCKETS.len() + 1],
    count: u64,
    sum: f64,
    recent: VecDeque<f64>,
}

/// What `status` shows of an account's detection latency.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Events since the start.
    pub events: u64,
    /// Over the last [`RECENT`] events, seconds.
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// One event, detected `secs` after it happened (a negative value — the provider's clock
    /// ahead of this host's — counts as 0).
    pub fn record(&mut self, secs: f64) {
        let secs = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
        let b = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[b] += 1;
        self.count += 1;
        self.sum += secs;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(secs);
    }

    /// p50, p99 and max of the recent events (nearest rank); `None` before any event.
    pub fn summary(&self) -> Option<Summary> {
        if self.recent.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.recent.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        Some(Summary {
            events: self.count,
            p50: quantile(&v, 0.5),
            p99: quantile(&v, 0.99),
            max: v[v.len() - 1],
        })
    }

    /// Cumulative counts per bound (then `+Inf`), the count and the sum, for the exposition.
    pub fn histogram(&self) -> (Vec<(String, u64)>, u64, f64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(BUCKETS.len() + 1);
        for (i, n) in self.buckets.iter().enumerate() {
            acc += n;
            let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            out.push((le, acc));
        }
        (out, self.count, self.sum)
    }
}

/// The nearest-rank `q`-quantile of sorted values (0 when empty).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[idx - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_cumulative_buckets() {
        let mut l = Latency::default();
        assert_eq!(l.summary(), None);
        for s in 1..=100 {
            l.record(f64::from(s));
        }
        l.record(-3.0); // the provider's clock ahead: 0
        l.record(f64::NAN);
        let s = l.summary().unwrap();
        assert_eq!((s.events, s.p50, s.p99, s.max), (102, 49.0, 99.0, 100.0));
        let (buckets, count, sum) = l.histogram();
        assert_eq!(count, 102);
        assert_eq!(sum, 5050.0);
        assert_eq!(buckets[0], ("1".to_string(), 3));
        assert_eq!(buckets[6], ("60".to_string(), 62));
        assert_eq!(buckets.last().unwrap(), &("+Inf".to_string(), 102));
    }

    #[test]
    fn only_the_recent_events_make_the_quantiles() {
        let mut l = Latency::default();
        for _ in 0..RECENT {
            l.record(1000.0);
        }
        for _ in 0..RECENT {
            l.record(1.0);
        }
        let s = l.summary().unwrap();
        assert_eq!((s.events, s.p99, s.max), (2 * RECENT as u64, 1.0, 1.0));
    }
}
