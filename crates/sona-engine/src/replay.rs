//! The replay reservoir of loop B: a uniform sample (Algorithm R) of every completed decision, drawn
//! from uniformly or with recency weights (each item weighted `2^(−age / half_life)`, age counted
//! in feedbacks since it arrived), so that after a drift loop B trains mostly on the new regime.
//!
//! An item keeps what the decision saw (query, recalled ids and their statistics blocks), what it did
//! (tier, propensity) and what came back (reward), so loop B can replay the bandit loss off-policy.
//! Items are `Arc`s: a loop-B cycle samples its minibatches by cloning pointers, not vectors.

use std::sync::Arc;

use sona_core::SeededRng;

/// One completed decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayItem {
    /// `[query (d) | stats (k × S)]`, as in the pending entry.
    pub data: Box<[f32]>,
    pub ids: Box<[u64]>,
    pub tier: u8,
    pub reward: f32,
    pub propensity: f32,
}

/// Algorithm R over [`ReplayItem`]s.
#[derive(Debug, Clone)]
pub struct Replay {
    pub items: Vec<Arc<ReplayItem>>,
    /// Arrival number (`seen` when offered, from 1) of each item.
    pub arrivals: Vec<u64>,
    pub capacity: usize,
    pub seen: u64,
    pub rng: SeededRng,
}

impl Replay {
    pub fn new(capacity: usize, seed: u64) -> Self {
        Replay {
            items: Vec::new(),
            arrivals: Vec::new(),
            capacity,
            seen: 0,
            rng: SeededRng::new(seed ^ 0x5245_504c_4159),
        }
    }

    /// Offers one item: kept with probability `capacity / seen`.
    pub fn offer(&mut self, item: Arc<ReplayItem>) {
        self.seen += 1;
        if self.items.len() < self.capacity {
            self.items.push(item);
            self.arrivals.push(self.seen);
        } else {
            let j = self.rng.below(self.seen) as usize;
            if j < self.capacity {
                self.items[j] = item;
                self.arrivals[j] = self.seen;
            }
        }
    }

    /// `n` items drawn with replacement (empty when the reservoir is): uniformly when
    /// `half_life` is 0, else with weights `2^(−(seen − arrival) / half_life)`.
    pub fn sample(&mut self, n: usize, half_life: u64) -> Vec<Arc<ReplayItem>> {
        if self.items.is_empty() {
            return Vec::new();
        }
        if half_life == 0 {
            return (0..n)
                .map(|_| self.items[self.rng.below(self.items.len() as u64) as usize].clone())
                .collect();
        }
        let cdf = recency_cdf(&self.arrivals, self.seen, half_life);
        let total = cdf[cdf.len() - 1];
        (0..n)
            .map(|_| {
                let u = self.rng.next_f64() * total;
                let i = cdf.partition_point(|&c| c <= u).min(cdf.len() - 1);
                self.items[i].clone()
            })
            .collect()
    }

    pub fn heap_bytes(&self) -> usize {
        self.items
            .iter()
            .map(|i| i.data.len() * 4 + i.ids.len() * 8 + 64)
            .sum::<usize>()
            + self.items.capacity() * 8
    }
}

/// Cumulative recency weights `Σ_{j≤i} 2^(−(now − arrival_j) / half_life)` (the newest item has
/// weight 1, so the total is ≥ 1 whenever an item arrived at `now`, and > 0 always).
fn recency_cdf(arrivals: &[u64], now: u64, half_life: u64) -> Vec<f64> {
    let k = -std::f64::consts::LN_2 / half_life as f64;
    let mut acc = 0.0;
    arrivals
        .iter()
        .map(|&a| {
            acc += (k * now.saturating_sub(a) as f64)
                .exp()
                .max(f64::MIN_POSITIVE);
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(v: f32) -> Arc<ReplayItem> {
        Arc::new(ReplayItem {
            data: vec![v].into(),
            ids: Box::new([]),
            tier: 0,
            reward: 0.0,
            propensity: 1.0,
        })
    }

    #[test]
    fn recency_weights_halve_per_half_life() {
        let mut r = Replay::new(100, 3);
        for i in 0..40 {
            r.offer(item(i as f32));
        }
        // Half-life 10: items 30..40 carry about half the weight of everything.
        let draws = r.sample(20_000, 10);
        let recent = draws.iter().filter(|it| it.data[0] >= 30.0).count() as f64 / 20_000.0;
        let want = (1.0 - 0.5f64.powf(1.0)) / (1.0 - 0.5f64.powf(4.0));
        assert!((recent - want).abs() < 0.02, "{recent} vs {want}");
        // Uniform: a quarter.
        let draws = r.sample(20_000, 0);
        let recent = draws.iter().filter(|it| it.data[0] >= 30.0).count() as f64 / 20_000.0;
        assert!((recent - 0.25).abs() < 0.02, "{recent}");
        assert!(Replay::new(4, 0).sample(5, 10).is_empty());
        // A huge age underflows to the smallest weight, never to a zero total.
        let cdf = recency_cdf(&[1], u64::MAX, 1);
        assert!(cdf[0] > 0.0);
    }

    #[test]
    fn reservoir_is_uniform_over_history() {
        let mut hits = [0u32; 10];
        for seed in 0..400 {
            let mut r = Replay::new(5, seed);
            for i in 0..10 {
                r.offer(item(i as f32));
            }
            assert_eq!(r.items.len(), 5);
            for it in &r.items {
                hits[it.data[0] as usize] += 1;
            }
        }
        // Each of the 10 items is kept with probability 1/2: 200 of 400 runs.
        for h in hits {
            assert!((150..250).contains(&h), "{hits:?}");
        }
    }
}
