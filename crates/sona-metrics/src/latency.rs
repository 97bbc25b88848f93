//! A lock-free latency histogram (design §8: p50/p99 per operation).
//!
//! Log-linear buckets: 8 per power of two of nanoseconds (relative bucket width ≤ 12.5 %), counts in
//! relaxed atomics, so recording from many threads on the request path costs one atomic add and
//! never waits. Quantiles return the bucket's upper bound's midpoint estimate.

use std::sync::atomic::{AtomicU64, Ordering};

const SUB: usize = 8;
const OCTAVES: usize = 48;
const BUCKETS: usize = OCTAVES * SUB;

/// Counts of durations in nanoseconds.
pub struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("p50_ns", &self.quantile(0.5))
            .field("p99_ns", &self.quantile(0.99))
            .finish()
    }
}

fn bucket(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let octave = 63 - ns.leading_zeros() as usize; // ≥ 3
    let sub = ((ns >> (octave - 3)) & (SUB as u64 - 1)) as usize;
    ((octave - 2) * SUB + sub).min(BUCKETS - 1)
}

/// Lower bound of bucket `b` in nanoseconds (inverse of [`bucket`]).
fn lower(b: usize) -> f64 {
    if b < SUB {
        return b as f64;
    }
    let octave = b / SUB + 2;
    let sub = b % SUB;
    ((SUB + sub) as f64) * 2f64.powi(octave as i32 - 3)
}

impl LatencyHistogram {
    pub fn new() -> Self {
        LatencyHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records one duration.
    #[inline]
    pub fn record_ns(&self, ns: u64) {
        self.counts[bucket(ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time since `start`.
    #[inline]
    pub fn record_since(&self, start: std::time::Instant) {
        self.record_ns(start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The `q`-quantile in nanoseconds (middle of its bucket); `None` when empty or `q ∉ [0, 1]`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) {
            return None;
        }
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(if b + 1 < BUCKETS {
                    (lower(b) + lower(b + 1)) / 2.0
                } else {
                    lower(b)
                });
            }
        }
        None
    }

    /// Adds another histogram's counts into this one.
    pub fn merge(&self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter().zip(other.counts.iter()) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    pub fn reset(&self) {
        self.counts
            .iter()
            .for_each(|c| c.store(0, Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_and_tight() {
        let mut last = 0;
        for ns in (0..100_000u64).chain([1 << 20, 1 << 40, u64::MAX]) {
            let b = bucket(ns);
            assert!(b >= last || ns > 100_000);
            last = b;
            if (SUB as u64..1 << 40).contains(&ns) {
                let lo = lower(b);
                assert!(
                    lo <= ns as f64 && (ns as f64) < lo * 1.126,
                    "{ns} in [{lo}, ..)"
                );
            }
        }
    }

    #[test]
    fn quantiles_within_bucket_precision() {
        let h = LatencyHistogram::new();
        assert_eq!(h.quantile(0.5), None);
        for ns in 1..=10_000u64 {
            h.record_ns(ns * 100);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.07, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.07, "{p99}");
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.quantile(1.5), None);
        let g = LatencyHistogram::new();
        g.merge(&h);
        assert_eq!(g.count(), 10_000);
        g.reset();
        assert_eq!(g.count(), 0);
    }

    #[test]
    fn two_threads_lose_no_counts() {
        let h = LatencyHistogram::new();
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let h = &h;
                s.spawn(move || (0..50_000u64).for_each(|i| h.record_ns(i * 3 + t)));
            }
        });
        assert_eq!(h.count(), 100_000);
    }
}
