//! The memory graph (design §5): nodes are patterns, undirected edges come from co-retrieval and co-use,
//! weights stay in `[0, 1]`.
//!
//! - use (both patterns used for one query): `w ← min(1, w(1 + η⁺))`, the edge created at `w_init`;
//! - retrieved together, one used and one not: `w ← w(1 − η⁻)`;
//! - retrieved together, neither used: the edge is created at `w_init` if absent (co-retrieval);
//! - global decay (loop B): `w ← w(1 − decay)`, edges below `w_min` disappear;
//! - bounds: past `max_edges` (or `max_nodes`) the weakest edges (or nodes of least total weight) are
//!   evicted in one batch down to 90 % of the bound, so the O(E) scan is amortised over many inserts.
//!
//! Retrieval expansion uses personalized PageRank with restart 0.15 computed by the local forward-push
//! algorithm (Andersen, Chung & Lang 2006), which touches only the neighbourhood of the seeds.

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};
use sona_core::{validate, Result, SonaError};

/// Graph tuning; every value validated by [`GraphConfig::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GraphConfig {
    pub max_nodes: usize,
    pub max_edges: usize,
    pub eta_plus: f32,
    pub eta_minus: f32,
    pub w_init: f32,
    pub decay: f32,
    pub w_min: f32,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            max_nodes: 100_000,
            max_edges: 1_000_000,
            eta_plus: 0.2,
            eta_minus: 0.1,
            w_init: 0.1,
            decay: 0.01,
            w_min: 1e-3,
        }
    }
}

impl GraphConfig {
    pub fn validate(&self) -> Result<()> {
        validate::check_size("graph max_nodes", self.max_nodes, 2, validate::MAX_ELEMENTS)?;
        validate::check_size("graph max_edges", self.max_edges, 1, validate::MAX_ELEMENTS)?;
        validate::check_range("eta_plus", self.eta_plus as f64, 0.0, 10.0)?;
        validate::check_range("eta_minus", self.eta_minus as f64, 0.0, 1.0)?;
        validate::check_range("w_init", self.w_init as f64, 1e-6, 1.0)?;
        validate::check_range("decay", self.decay as f64, 0.0, 1.0)?;
        validate::check_range("w_min", self.w_min as f64, 0.0, 1.0)
    }
}

/// Undirected weighted graph over pattern ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryGraph {
    pub cfg: GraphConfig,
    /// Keyed by internal pattern ids (no hash-flooding risk), so a fast hasher: the graph is
    /// updated under the bank's write lock on every feedback.
    adj: FxHashMap<u64, FxHashMap<u64, f32>>,
    n_edges: usize,
}

/// Most ids from one `observe` call that take part in pair updates (keeps it O(32²)).
const MAX_OBSERVED: usize = 32;

/// Removes repeats from sorted `ids` in place; returns the distinct prefix.
fn dedup_sorted(ids: &mut [u64]) -> &[u64] {
    let mut k = 0;
    for i in 0..ids.len() {
        if k == 0 || ids[i] != ids[k - 1] {
            ids[k] = ids[i];
            k += 1;
        }
    }
    &ids[..k]
}

impl MemoryGraph {
    pub fn new(cfg: GraphConfig) -> Self {
        MemoryGraph {
            cfg,
            adj: FxHashMap::default(),
            n_edges: 0,
        }
    }

    pub fn node_count(&self) -> usize {
        self.adj.len()
    }

    pub fn edge_count(&self) -> usize {
        self.n_edges
    }

    pub fn weight(&self, a: u64, b: u64) -> Option<f32> {
        self.adj.get(&a).and_then(|m| m.get(&b)).copied()
    }

    /// Neighbours of `a` with weights.
    pub fn neighbors(&self, a: u64) -> impl Iterator<Item = (u64, f32)> + '_ {
        self.adj
            .get(&a)
            .into_iter()
            .flat_map(|m| m.iter().map(|(&b, &w)| (b, w)))
    }

    /// Reads the edges among `ids` (a cache warm-up for an `observe` of them that follows; the
    /// result is discarded). Like `observe`, only the first `MAX_OBSERVED` (32) ids take part.
    pub fn touch_rows(&self, ids: &[u64]) {
        let ids = &ids[..ids.len().min(MAX_OBSERVED)];
        let mut sum = 0.0f32;
        for &a in ids {
            if let Some(m) = self.adj.get(&a) {
                for b in ids {
                    sum += m.get(b).copied().unwrap_or(0.0);
                }
            }
        }
        std::hint::black_box(sum);
    }

    /// Every edge once, `a < b`, sorted.
    pub fn edges(&self) -> Vec<(u64, u64, f32)> {
        let mut out: Vec<(u64, u64, f32)> = self
            .adj
            .iter()
            .flat_map(|(&a, m)| {
                m.iter()
                    .filter(move |(&b, _)| a < b)
                    .map(move |(&b, &w)| (a, b, w))
            })
            .collect();
        out.sort_by_key(|e| (e.0, e.1));
        out
    }

    /// Sets `w(a, b)` (both directions); a weight ≤ `w_min` removes the edge.
    pub fn set(&mut self, a: u64, b: u64, w: f32) {
        if a == b {
            return;
        }
        if w <= self.cfg.w_min || !w.is_finite() {
            self.remove_edge(a, b);
            return;
        }
        let w = w.min(1.0);
        let fresh = self.adj.entry(a).or_default().insert(b, w).is_none();
        self.adj.entry(b).or_default().insert(a, w);
        if fresh {
            self.n_edges += 1;
        }
    }

    pub fn remove_edge(&mut self, a: u64, b: u64) {
        let mut gone = false;
        if let Some(m) = self.adj.get_mut(&a) {
            gone = m.remove(&b).is_some();
            if m.is_empty() {
                self.adj.remove(&a);
            }
        }
        if let Some(m) = self.adj.get_mut(&b) {
            m.remove(&a);
            if m.is_empty() {
                self.adj.remove(&b);
            }
        }
        if gone {
            self.n_edges -= 1;
        }
    }

    /// Removes a node and its edges (the pattern was pruned or merged away).
    pub fn remove_node(&mut self, a: u64) {
        if let Some(m) = self.adj.remove(&a) {
            for b in m.keys() {
                if let Some(mb) = self.adj.get_mut(b) {
                    mb.remove(&a);
                    if mb.is_empty() {
                        self.adj.remove(b);
                    }
                }
            }
            self.n_edges -= m.len();
        }
    }

    /// Moves `gone`'s edges to `keep` (keeping the larger weight of parallel edges); drops self-loops.
    pub fn merge_nodes(&mut self, keep: u64, gone: u64) {
        let Some(m) = self.adj.get(&gone).cloned() else {
            return;
        };
        self.remove_node(gone);
        for (b, w) in m {
            if b != keep {
                let cur = self.weight(keep, b).unwrap_or(0.0);
                self.set(keep, b, cur.max(w));
            }
        }
    }

    /// Adds the absent edges among `pairs` at `w_init` (existing ones keep their weight); returns
    /// how many were added. Loop C's "creative" edges come in this way once they pass its check.
    pub fn add_absent(&mut self, pairs: &[(u64, u64)]) -> usize {
        let mut added = 0;
        for &(a, b) in pairs {
            if a != b && self.weight(a, b).is_none() {
                self.set(a, b, self.cfg.w_init);
                added += 1;
            }
        }
        self.enforce_bounds();
        added
    }

    /// Loop-A update from one query: which patterns were retrieved and which of them were used.
    pub fn observe(&mut self, retrieved: &[u64], used: &[u64]) {
        // Every feedback calls this under the bank's write lock: the ids go in a stack buffer
        // (when they fit), and an existing edge is read and updated through one probe of `a`'s
        // map plus the mirror write, not a lookup followed by two inserts.
        let total = used.len() + retrieved.len();
        let mut buf = [0u64; 2 * MAX_OBSERVED];
        let mut heap = Vec::new();
        let ids: &mut [u64] = if total <= buf.len() {
            for (slot, &id) in buf.iter_mut().zip(used.iter().chain(retrieved)) {
                *slot = id;
            }
            &mut buf[..total]
        } else {
            heap.extend(used.iter().chain(retrieved));
            &mut heap
        };
        ids.sort_unstable();
        let ids = dedup_sorted(ids);
        let ids = &ids[..ids.len().min(MAX_OBSERVED)];
        let is_used = |x: u64| used.contains(&x);
        let (eta_plus, eta_minus, w_min) = (self.cfg.eta_plus, self.cfg.eta_minus, self.cfg.w_min);
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                let (ua, ub) = (is_used(a), is_used(b));
                let next = match self.adj.get_mut(&a).and_then(|m| m.get_mut(&b)) {
                    Some(slot) => {
                        let w = match (ua, ub) {
                            (true, true) => (*slot * (1.0 + eta_plus)).min(1.0),
                            (true, false) | (false, true) => *slot * (1.0 - eta_minus),
                            (false, false) => continue,
                        };
                        if w > w_min && w.is_finite() {
                            *slot = w.min(1.0);
                            Some(*slot)
                        } else {
                            None
                        }
                    }
                    None => {
                        if ua == ub {
                            self.set(a, b, self.cfg.w_init);
                        }
                        continue;
                    }
                };
                match next {
                    Some(w) => {
                        if let Some(slot) = self.adj.get_mut(&b).and_then(|m| m.get_mut(&a)) {
                            *slot = w;
                        }
                    }
                    None => self.remove_edge(a, b),
                }
            }
        }
        self.enforce_bounds();
    }

    /// Loop-B global decay.
    pub fn decay(&mut self) {
        let f = 1.0 - self.cfg.decay;
        let w_min = self.cfg.w_min;
        let mut removed = 0;
        for m in self.adj.values_mut() {
            let before = m.len();
            m.retain(|_, w| {
                *w *= f;
                *w > w_min
            });
            removed += before - m.len();
        }
        self.adj.retain(|_, m| !m.is_empty());
        // Both directions of an edge decay identically, so each removed edge was counted twice.
        self.n_edges -= removed / 2;
    }

    /// Heap bytes held, from the hash maps' allocated capacities: every node's neighbour map
    /// (`(u64, f32)` slots and control bytes, about 8/7 buckets per usable slot) and its slot in
    /// the outer map.
    pub fn heap_bytes(&self) -> usize {
        let buckets = |cap: usize| cap + cap / 7 + 1;
        let outer =
            buckets(self.adj.capacity()) * (std::mem::size_of::<(u64, FxHashMap<u64, f32>)>() + 1);
        outer
            + self
                .adj
                .values()
                .map(|m| buckets(m.capacity()) * (16 + 1))
                .sum::<usize>()
    }

    /// Evicts the weakest edges / nodes once a bound is exceeded (down to 90 % of it).
    pub fn enforce_bounds(&mut self) {
        if self.n_edges > self.cfg.max_edges {
            let target = (self.cfg.max_edges * 9 / 10).max(1);
            let mut all = self.edges();
            all.sort_by(|x, y| x.2.total_cmp(&y.2));
            for &(a, b, _) in all.iter().take(self.n_edges - target) {
                self.remove_edge(a, b);
            }
        }
        if self.adj.len() > self.cfg.max_nodes {
            let target = (self.cfg.max_nodes * 9 / 10).max(2);
            let mut strength: Vec<(u64, f32)> = self
                .adj
                .iter()
                .map(|(&a, m)| (a, m.values().sum::<f32>()))
                .collect();
            strength.sort_by(|x, y| x.1.total_cmp(&y.1).then(x.0.cmp(&y.0)));
            let excess = self.adj.len() - target;
            for &(a, _) in strength.iter().take(excess) {
                self.remove_node(a);
            }
        }
    }

    /// Personalized PageRank `π = α s + (1 − α) π P` (P the weight-normalised transition matrix, `s`
    /// the seeds' normalised weights) by forward push to residual tolerance `eps` per unit degree.
    /// A node without edges keeps its mass. Returns `(id, score)` sorted by score, best first.
    pub fn personalized_pagerank(
        &self,
        seeds: &[(u64, f64)],
        alpha: f64,
        eps: f64,
    ) -> Vec<(u64, f64)> {
        let total: f64 = seeds.iter().map(|s| s.1.max(0.0)).sum();
        if total <= 0.0 {
            return Vec::new();
        }
        let degree = |u: u64| -> f64 { self.neighbors(u).map(|(_, w)| w as f64).sum() };
        let mut p: FxHashMap<u64, f64> = FxHashMap::default();
        let mut r: FxHashMap<u64, f64> = FxHashMap::default();
        for &(id, w) in seeds {
            *r.entry(id).or_default() += w.max(0.0) / total;
        }
        let mut queue: Vec<u64> = r.keys().copied().collect();
        let mut pushes = 0usize;
        while let Some(u) = queue.pop() {
            let ru = r.get(&u).copied().unwrap_or(0.0);
            let du = degree(u);
            if ru <= 0.0 || (du > 0.0 && ru < eps * du) {
                continue;
            }
            pushes += 1;
            if pushes > 100_000 {
                break;
            }
            r.insert(u, 0.0);
            if du == 0.0 {
                *p.entry(u).or_default() += ru;
                continue;
            }
            *p.entry(u).or_default() += alpha * ru;
            let spread = (1.0 - alpha) * ru / du;
            for (v, w) in self.neighbors(u) {
                let rv = r.entry(v).or_default();
                let before = *rv;
                *rv += spread * w as f64;
                if before < eps * degree(v) && *rv >= eps * degree(v) {
                    queue.push(v);
                }
            }
        }
        let mut out: Vec<(u64, f64)> = p.into_iter().filter(|x| x.1 > 0.0).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// Rebuilds from a checkpoint's edge list.
    pub fn from_edges(cfg: GraphConfig, edges: &[(u64, u64, f32)]) -> Result<Self> {
        let mut g = MemoryGraph::new(cfg);
        for &(a, b, w) in edges {
            if a == b || !(w.is_finite() && (0.0..=1.0).contains(&w)) {
                return Err(SonaError::checkpoint(format!(
                    "bad graph edge ({a}, {b}, {w})"
                )));
            }
            g.set(a, b, w);
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GraphConfig {
        GraphConfig {
            w_init: 0.5,
            ..Default::default()
        }
    }

    #[test]
    fn multiplicative_updates_stay_in_unit_interval() {
        let mut g = MemoryGraph::new(cfg());
        g.observe(&[1, 2, 3], &[1, 2]);
        assert_eq!(g.weight(1, 2), Some(0.5));
        assert_eq!(g.weight(1, 3), None, "used vs unused never creates an edge");
        for _ in 0..10 {
            g.observe(&[1, 2], &[1, 2]);
        }
        assert_eq!(g.weight(2, 1), Some(1.0), "capped at 1");
        g.observe(&[1, 2, 3], &[]);
        assert_eq!(g.weight(1, 3), Some(0.5), "co-retrieval creates");
        g.observe(&[1, 3], &[1]);
        assert!((g.weight(1, 3).unwrap() - 0.45).abs() < 1e-6);
        let before = g.weight(1, 2).unwrap();
        g.decay();
        assert!((g.weight(1, 2).unwrap() - before * 0.99).abs() < 1e-6);
        assert_eq!(g.edge_count(), g.edges().len());
    }

    #[test]
    fn bounds_evict_weakest() {
        let mut g = MemoryGraph::new(GraphConfig {
            max_edges: 10,
            max_nodes: 8,
            ..cfg()
        });
        for i in 0..20u64 {
            g.set(i, i + 100, 0.01 * (i + 1) as f32);
        }
        g.enforce_bounds();
        assert!(g.edge_count() <= 10 && g.node_count() <= 8);
        assert!(g.weight(19, 119).is_some(), "strongest kept");
        assert!(g.weight(0, 100).is_none(), "weakest evicted");
        assert_eq!(g.edge_count(), g.edges().len());
    }

    #[test]
    fn ppr_matches_power_iteration_and_merge_moves_edges() {
        let mut g = MemoryGraph::new(cfg());
        let e = [
            (1, 2, 0.9),
            (2, 3, 0.5),
            (3, 4, 0.7),
            (4, 1, 0.2),
            (2, 4, 0.3),
        ];
        for &(a, b, w) in &e {
            g.set(a, b, w);
        }
        let alpha = 0.15;
        let push = g.personalized_pagerank(&[(1, 1.0)], alpha, 1e-10);
        // Dense power iteration on the 4 nodes.
        let ids = [1u64, 2, 3, 4];
        let mut pi = [0.0f64; 4];
        for _ in 0..500 {
            let mut next = [0.0f64; 4];
            next[0] += alpha;
            for (i, &u) in ids.iter().enumerate() {
                let du: f64 = g.neighbors(u).map(|x| x.1 as f64).sum();
                for (v, w) in g.neighbors(u) {
                    let j = ids.iter().position(|&x| x == v).unwrap();
                    next[j] += (1.0 - alpha) * pi[i] * w as f64 / du;
                }
            }
            pi = next;
        }
        for (id, s) in &push {
            let j = ids.iter().position(|x| x == id).unwrap();
            assert!((s - pi[j]).abs() < 1e-6, "{id}: {s} vs {}", pi[j]);
        }
        g.merge_nodes(1, 4);
        assert_eq!(g.weight(1, 3), Some(0.7));
        assert_eq!(g.weight(1, 2), Some(0.9));
        assert!(g.weight(1, 1).is_none() && g.weight(4, 3).is_none());
        assert_eq!(g.edge_count(), g.edges().len());
    }
}

#[cfg(test)]
mod observe_equivalence {
    use super::*;
    use proptest::prelude::*;

    /// `observe` as first written: a lookup, then `set` per pair.
    fn reference(g: &mut MemoryGraph, retrieved: &[u64], used: &[u64]) {
        let mut ids: Vec<u64> = used.iter().chain(retrieved).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(MAX_OBSERVED);
        let is_used = |x: u64| used.contains(&x);
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                let cur = g.weight(a, b);
                match (is_used(a), is_used(b), cur) {
                    (true, true, Some(w)) => g.set(a, b, (w * (1.0 + g.cfg.eta_plus)).min(1.0)),
                    (true, true, None) | (false, false, None) => g.set(a, b, g.cfg.w_init),
                    (true, false, Some(w)) | (false, true, Some(w)) => {
                        g.set(a, b, w * (1.0 - g.cfg.eta_minus))
                    }
                    _ => {}
                }
            }
        }
        g.enforce_bounds();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The in-place `observe` gives the same graph as the reference, step by step, including
        /// edges that decay below the floor, bounds enforcement, repeats and > 64 ids.
        #[test]
        fn same_graph_as_the_reference(
            calls in proptest::collection::vec(
                (proptest::collection::vec(0u64..40, 0..45), proptest::collection::vec(0u64..40, 0..25)),
                1..30,
            ),
            eta_minus in 0.0f32..1.0,
        ) {
            let cfg = GraphConfig { eta_minus, max_edges: 150, w_min: 0.02, ..GraphConfig::default() };
            let (mut fast, mut slow) = (MemoryGraph::new(cfg), MemoryGraph::new(cfg));
            for (retrieved, used) in &calls {
                fast.observe(retrieved, used);
                reference(&mut slow, retrieved, used);
                prop_assert_eq!(fast.edges(), slow.edges());
                prop_assert_eq!(fast.edge_count(), slow.edge_count());
            }
        }
    }
}
