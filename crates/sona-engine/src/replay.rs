//! The replay reservoir of loop B: a uniform sample (Algorithm R) of every completed decision.
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
    pub capacity: usize,
    pub seen: u64,
    pub rng: SeededRng,
}

impl Replay {
    pub fn new(capacity: usize, seed: u64) -> Self {
        Replay {
            items: Vec::new(),
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
        } else {
            let j = self.rng.below(self.seen) as usize;
            if j < self.capacity {
                self.items[j] = item;
            }
        }
    }

    /// `n` items drawn uniformly with replacement (empty when the reservoir is).
    pub fn sample(&mut self, n: usize) -> Vec<Arc<ReplayItem>> {
        if self.items.is_empty() {
            return Vec::new();
        }
        (0..n)
            .map(|_| self.items[self.rng.below(self.items.len() as u64) as usize].clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservoir_is_uniform_over_history() {
        let mut hits = [0u32; 10];
        for seed in 0..400 {
            let mut r = Replay::new(5, seed);
            for i in 0..10 {
                r.offer(Arc::new(ReplayItem {
                    data: vec![i as f32].into(),
                    ids: Box::new([]),
                    tier: 0,
                    reward: 0.0,
                    propensity: 1.0,
                }));
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
