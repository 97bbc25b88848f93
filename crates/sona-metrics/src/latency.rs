//! A lock-free latency histogram (design §8: p50/p99 per operation).
//!
//! Log-linear buckets: 8 per power of two of nanoseconds (relative bucket width ≤ 12.5 %), counts in
//! relaxed atomics, so recording from many threads on the request path costs one atomic add and
//! never waits. Quantiles return the bucket's upper bound's midpoint estimate.

use std::sync::atomic::{AtomicU64, Ordering};

use sona_core::{Result, SonaError};

const SUB: usize = 8;
const OCTAVES: usize = 48;
const BUCKETS: usize = OCTAVES * SUB;
/// Largest total count a saved histogram may hold (counts stay exact in `f64`).
const MAX_COUNT: u64 = 1 << 53;

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

    /// The non-empty buckets as `(bucket, count)`, in bucket order: what a checkpoint stores.
    pub fn buckets(&self) -> Vec<(u32, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter_map(|(b, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then_some((b as u32, n))
            })
            .collect()
    }

    /// A histogram from [`buckets`](Self::buckets) read back from a file: a bucket index out of
    /// range, a repeated bucket or counts summing past 2^53 are `InvalidInput`.
    pub fn from_buckets(saved: &[(u32, u64)]) -> Result<Self> {
        let h = LatencyHistogram::new();
        let mut total = 0u64;
        for &(b, n) in saved {
            let slot = h.counts.get(b as usize).ok_or_else(|| {
                SonaError::invalid(format!("latency bucket {b} is out of range (< {BUCKETS})"))
            })?;
            if slot.load(Ordering::Relaxed) != 0 {
                return Err(SonaError::invalid(format!(
                    "latency bucket {b} appears twice"
                )));
            }
            total = total
                .checked_add(n)
                .filter(|&t| t <= MAX_COUNT)
                .ok_or_else(|| SonaError::invalid("latency counts sum past 2^53"))?;
            slot.store(n, Ordering::Relaxed);
        }
        Ok(h)
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
    fn saved_buckets_round_trip_and_bad_ones_are_refused() {
        let h = LatencyHistogram::new();
        for ns in [5u64, 900, 900, 12_000, 3_000_000] {
            h.record_ns(ns);
        }
        let saved = h.buckets();
        assert_eq!(saved.len(), 4);
        let g = LatencyHistogram::from_buckets(&saved).unwrap();
        assert_eq!(g.buckets(), saved);
        assert_eq!(g.quantile(0.5), h.quantile(0.5));
        assert!(LatencyHistogram::from_buckets(&[(BUCKETS as u32, 1)]).is_err());
        assert!(LatencyHistogram::from_buckets(&[(3, 1), (3, 2)]).is_err());
        assert!(LatencyHistogram::from_buckets(&[(3, u64::MAX), (4, 2)]).is_err());
        assert!(LatencyHistogram::from_buckets(&[(3, 1 << 53), (4, 1)]).is_err());
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
