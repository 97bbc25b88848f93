//! Best-first search of one graph layer (Malkov & Yashunin 2018, Algorithm 2), with the result set
//! restricted to accepted nodes so that tombstones and filtered-out ids still route the search but are
//! never returned (the approach of hnswlib's `searchBaseLayerST`).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::{HnswIndex, MAX_DEGREE};
use crate::prefetch::prefetch_lines;
use crate::quant::hamming;

/// A node and its similarity to the query; ordered by similarity, then slot (deterministic ties).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Scored {
    pub sim: f32,
    pub slot: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim
            .total_cmp(&other.sim)
            .then(other.slot.cmp(&self.slot))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A query as the graph walk sees it: its 8-bit codes and scale, and (searches at large dimensions)
/// its sign bits for the gate of [`HnswIndex::search_layer`].
pub(super) struct Probe {
    pub codes: Vec<i8>,
    pub scale: f32,
    pub bits: Option<Vec<u64>>,
}

/// Width of the sign-code gate in standard deviations of the Hamming estimate.
const GATE_SIGMAS: f32 = 3.0;

/// Which slots were seen during one search: one bit per slot, so the set of a 100k-slot graph
/// (12.5 KB) stays in L1/L2 while the search jumps around it; clearing it is a short memset.
#[derive(Debug, Default)]
pub(super) struct Visited {
    bits: Vec<u64>,
}

impl Visited {
    /// Starts a new search over `n` slots.
    pub fn reset(&mut self, n: usize) {
        let words = n.div_ceil(64);
        self.bits.clear();
        self.bits.resize(words, 0);
    }

    /// Marks `slot`; `true` if it was not marked yet in this search.
    #[inline]
    pub fn insert(&mut self, slot: u32) -> bool {
        let (w, b) = (slot as usize / 64, 1u64 << (slot % 64));
        let word = &mut self.bits[w];
        let fresh = *word & b == 0;
        *word |= b;
        fresh
    }
}

/// Prefetches the first cache line of an adjacency list (16 neighbour slots).
#[inline(always)]
fn prefetch_u32(v: &[u32]) {
    prefetch_lines(&v[..v.len().min(16)]);
}

impl HnswIndex {
    /// Greedy walk on `level` from `cur` to a local maximum of similarity (upper layers, `ef = 1`).
    pub(super) fn greedy(&self, q: &Probe, mut cur: Scored, level: usize) -> Scored {
        loop {
            let mut changed = false;
            for &n in self.neighbors(cur.slot, level) {
                let sim = self.sim(q, n);
                if sim > cur.sim {
                    cur = Scored { sim, slot: n };
                    changed = true;
                }
            }
            if !changed {
                return cur;
            }
        }
    }

    /// [`HnswIndex::greedy`] on sign codes: walks to a local minimum of the Hamming distance to the
    /// query's signs (the upper layers only route coarsely, so the 1-bit metric is enough there and
    /// each hop loads `d / 8` bytes per neighbour instead of `d`).
    pub(super) fn greedy_bits(&self, qb: &[u64], mut cur: (u32, u32), level: usize) -> (u32, u32) {
        loop {
            let mut changed = false;
            let list = self.neighbors(cur.0, level);
            for &n in list {
                prefetch_lines(self.bit_code(n));
            }
            for &n in list {
                let h = hamming(qb, self.bit_code(n));
                if h < cur.1 {
                    cur = (n, h);
                    changed = true;
                }
            }
            if !changed {
                return cur;
            }
        }
    }

    /// The (up to) `ef` accepted nodes most similar to `q` reachable on `level` from `entry`, best first.
    ///
    /// Every visited node may route the search; only nodes with `accept(slot)` enter the result set.
    /// While fewer than `ef` accepted nodes were found, the search keeps expanding (so a selective
    /// filter degrades to a wider search instead of returning too few hits).
    pub(super) fn search_layer(
        &self,
        q: &Probe,
        entry: &[Scored],
        ef: usize,
        level: usize,
        visited: &mut Visited,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        visited.reset(self.ids.len());
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef * 4);
        let mut top: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        for &e in entry {
            if visited.insert(e.slot) {
                candidates.push(e);
                if accept(e.slot) {
                    top.push(Reverse(e));
                    if top.len() > ef {
                        top.pop();
                    }
                }
            }
        }
        let mut bound = if top.len() >= ef {
            top.peek().map_or(f32::NEG_INFINITY, |r| r.0.sim)
        } else {
            f32::NEG_INFINITY
        };
        while let Some(c) = candidates.pop() {
            if c.sim < bound {
                break;
            }
            // The next node to expand is probably the current best candidate: start loading its
            // adjacency list now, while this node's neighbours are scored.
            if let Some(next) = candidates.peek() {
                prefetch_u32(self.adjacency(next.slot, level));
            }
            // Gather the unseen neighbours and prefetch all their codes before scoring any: the loads
            // then overlap instead of each scoring waiting for its own cache misses.
            let mut fresh = [0u32; MAX_DEGREE];
            let mut nf = 0;
            match (&q.bits, top.len() >= ef) {
                (Some(qb), true) => {
                    // Sign-code gate: with `h` of the `d` signs differing, the angle to the query is
                    // ≈ π h / d (SimHash), with a standard deviation ≤ π / (2 √d). A neighbour whose
                    // angle exceeds that of the current bound by `GATE_SIGMAS` deviations cannot
                    // enter the result set, so its 8-bit code (12 cache lines at d = 768 instead of
                    // 1.5) is never loaded. The bound only rises, so the node can be marked as seen.
                    // (Before `ef` results are found there is no bound, and every node is scored.)
                    let d = self.dim as f32;
                    let h_max = (d * bound.clamp(-1.0, 1.0).acos() / std::f32::consts::PI
                        + GATE_SIGMAS * 0.5 * d.sqrt()) as u32;
                    let mut seen = [0u32; MAX_DEGREE];
                    let mut ns = 0;
                    for &n in self.neighbors(c.slot, level) {
                        if visited.insert(n) {
                            prefetch_lines(self.bit_code(n));
                            seen[ns] = n;
                            ns += 1;
                        }
                    }
                    for &n in &seen[..ns] {
                        if hamming(qb, self.bit_code(n)) <= h_max {
                            prefetch_lines(self.code(n));
                            fresh[nf] = n;
                            nf += 1;
                        }
                    }
                }
                _ => {
                    for &n in self.neighbors(c.slot, level) {
                        if visited.insert(n) {
                            prefetch_lines(self.code(n));
                            fresh[nf] = n;
                            nf += 1;
                        }
                    }
                }
            }
            for &n in &fresh[..nf] {
                let sim = self.sim(q, n);
                if top.len() < ef || sim > bound {
                    candidates.push(Scored { sim, slot: n });
                    if accept(n) {
                        top.push(Reverse(Scored { sim, slot: n }));
                        if top.len() > ef {
                            top.pop();
                        }
                        if top.len() >= ef {
                            bound = top.peek().map_or(f32::NEG_INFINITY, |r| r.0.sim);
                        }
                    }
                }
            }
        }
        top.into_sorted_vec().into_iter().map(|r| r.0).collect()
    }

    /// Takes a visited set from the pool (or makes one): searches run concurrently under `&self`.
    pub(super) fn take_visited(&self) -> Visited {
        self.visited_pool.lock().pop().unwrap_or_default()
    }

    pub(super) fn give_visited(&self, v: Visited) {
        let mut pool = self.visited_pool.lock();
        if pool.len() < 64 {
            pool.push(v);
        }
    }
}
