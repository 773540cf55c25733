//! Seeded traffic shapes for the detection-latency benchmark (`pollhook bench latency`) and
//! the adaptive tests: when each of N members changes, as exact instants (the ground truth's
//! change times), so a schedule's detection latency is measured exactly.
//!
//! - [`Shape::Skewed`]: Poisson per member, rates Zipf(s) over the members in a shuffled
//!   order — a few busy members and a long, nearly idle tail;
//! - [`Shape::Uniform`]: Poisson per member, every member the same rate;
//! - [`Shape::Bursty`]: each member idle for an exponential time (mean `gap`), then `size`
//!   changes spread uniformly over `span` (50 invoices in a minute), then idle again.
//!
//! Same shape, size, span and seed: the same instants, whatever else runs.

/// Epoch-free milliseconds (any origin; the benchmark measures from its window's start).
pub type Millis = i64;

/// How the members change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// Poisson per member, rates Zipf(`s`) over the members; `per_day` changes a day in all.
    Skewed { s: f64, per_day: f64 },
    /// Poisson per member, the same rate each; `per_day` changes a day in all.
    Uniform { per_day: f64 },
    /// Idle for an exponential time of mean `gap`, then `size` changes over `span`.
    Bursty {
        gap: Millis,
        size: u32,
        span: Millis,
    },
}

impl Shape {
    /// The three shapes, at the benchmark's default sizes: Zipf 2 and 20,000 changes
    /// a day; 20,000 a day uniform; bursts of 50 in a minute after ~12 h idle.
    pub fn defaults() -> [Shape; 3] {
        [
            Shape::Skewed {
                s: 2.0,
                per_day: 20_000.0,
            },
            Shape::Uniform { per_day: 20_000.0 },
            Shape::Bursty {
                gap: 12 * 3_600_000,
                size: 50,
                span: 60_000,
            },
        ]
    }

    /// A short name: `skewed (Zipf 2)`, `uniform`, `bursty (50/60s, ~12h idle)`.
    pub fn name(&self) -> String {
        match *self {
            Shape::Skewed { s, .. } => format!("skewed (Zipf {s})"),
            Shape::Uniform { .. } => "uniform".into(),
            Shape::Bursty { gap, size, span } => {
                format!(
                    "bursty ({size}/{}s, ~{}h idle)",
                    span / 1000,
                    gap / 3_600_000
                )
            }
        }
    }

    /// Each member's long-run rate, changes a second, for members in `order` (busiest first).
    fn mean_rates(&self, n: usize, order: &[usize]) -> Vec<f64> {
        match *self {
            Shape::Skewed { s, per_day } => {
                let h: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
                let mut r = vec![0.0; n];
                for (rank, &m) in order.iter().enumerate() {
                    r[m] = per_day / 86_400.0 * ((rank + 1) as f64).powf(-s) / h;
                }
                r
            }
            Shape::Uniform { per_day } => vec![per_day / 86_400.0 / n as f64; n],
            Shape::Bursty { gap, size, span } => {
                vec![f64::from(size) / ((gap + span) as f64 / 1000.0); n]
            }
        }
    }
}

/// Every change instant of every member over `[from, to)`, sorted per member.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    pub changes: Vec<Vec<Millis>>,
    /// The members' long-run rates, changes a second.
    pub rates: Vec<f64>,
}

impl Traffic {
    /// `n` members' changes over `[from, to)` for `shape`, from `seed`.
    pub fn generate(shape: Shape, n: usize, from: Millis, to: Millis, seed: u64) -> Traffic {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let rates = shape.mean_rates(n, &order);
        let exp = |rng: &mut fastrand::Rng, mean_ms: f64| -> Millis {
            (-(1.0 - rng.f64()).ln() * mean_ms).round() as Millis
        };
        let changes = (0..n)
            .map(|m| {
                let mut out = Vec::new();
                match shape {
                    Shape::Skewed { .. } | Shape::Uniform { .. } => {
                        if rates[m] <= 0.0 {
                            return out;
                        }
                        let mean = 1000.0 / rates[m];
                        let mut t = from + exp(&mut rng, mean);
                        while t < to {
                            out.push(t);
                            t += exp(&mut rng, mean).max(1);
                        }
                    }
                    Shape::Bursty { gap, size, span } => {
                        // Each member starts at a random point of its idle time.
                        let mut t = from + exp(&mut rng, gap as f64);
                        while t < to {
                            let mut burst: Vec<Millis> =
                                (0..size).map(|_| t + rng.i64(0..span.max(1))).collect();
                            burst.sort_unstable();
                            out.extend(burst.into_iter().filter(|c| *c < to));
                            t += span + exp(&mut rng, gap as f64);
                        }
                    }
                }
                out
            })
            .collect();
        Traffic { changes, rates }
    }

    /// Changes in `[from, to)`, all members.
    pub fn total(&self, from: Millis, to: Millis) -> usize {
        self.changes
            .iter()
            .map(|c| c.iter().filter(|t| (from..to).contains(*t)).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 86_400_000;

    #[test]
    fn same_seed_same_traffic_and_the_shapes_have_their_shape() {
        for shape in Shape::defaults() {
            let a = Traffic::generate(shape, 200, 0, DAY, 7);
            assert_eq!(
                a,
                Traffic::generate(shape, 200, 0, DAY, 7),
                "{}",
                shape.name()
            );
            assert_ne!(
                a,
                Traffic::generate(shape, 200, 0, DAY, 8),
                "{}",
                shape.name()
            );
            assert!(a.changes.iter().all(|c| c.windows(2).all(|w| w[0] <= w[1])));
        }
        let [skewed, uniform, bursty] = Shape::defaults();
        // Skewed: the top 10 of 200 members carry most of the changes.
        let t = Traffic::generate(skewed, 200, 0, DAY, 1);
        let mut per: Vec<usize> = t.changes.iter().map(Vec::len).collect();
        per.sort_unstable_by(|a, b| b.cmp(a));
        let top: usize = per[..10].iter().sum();
        assert!(
            top * 10 > t.total(0, DAY) * 8,
            "top 10: {top} of {}",
            t.total(0, DAY)
        );
        // Uniform: about 20,000 a day, no member more than twice the mean.
        let t = Traffic::generate(uniform, 200, 0, DAY, 1);
        let total = t.total(0, DAY);
        assert!((19_000..21_000).contains(&total), "{total}");
        assert!(t.changes.iter().all(|c| c.len() < 2 * total / 200));
        // Bursty: changes come 50 in a minute.
        let t = Traffic::generate(bursty, 50, 0, 2 * DAY, 1);
        let c = t.changes.iter().find(|c| !c.is_empty()).unwrap();
        assert!(
            c.len() >= 50 && c[49] - c[0] < 60_000,
            "{:?}",
            &c[..50.min(c.len())]
        );
    }
}
