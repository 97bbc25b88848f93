//! Maintenance (loop C): transitive near-duplicate merge, pruning, and the abstraction hierarchy.

use std::collections::HashMap;

use sona_core::types::{ArmStats, Pattern};
use sona_core::{Result, SeededRng, SonaError};

use crate::bank::{check_arg, now_ms, ReasoningBank};
use crate::node::{Level, PatternNode};
use sona_index::kmeans::{spherical_kmeans, KMeansParams};
use sona_index::{FlatIndex, VectorIndex};

/// Union-find with path halving and union by size.
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
            size: vec![1; n],
        }
    }

    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    pub fn union(&mut self, a: usize, b: usize) {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        if self.size[ra] < self.size[rb] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb] = ra;
        self.size[ra] += self.size[rb];
    }
}

/// Which patterns `prune` removes: those with support below `min_support` AND average reward below
/// `min_reward` AND no update or access for more than `max_idle_ms` — all three, so a rarely seen
/// pattern that works, or a poor one still in use, is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneRule {
    pub min_support: u32,
    pub min_reward: f32,
    pub max_idle_ms: u64,
}

/// Half-life of a pattern's value while it is neither updated nor recalled (see
/// [`ReasoningBank::evict_patterns`]): one day.
pub const EVICT_HALF_LIFE_MS: u64 = 86_400_000;

/// Value of a pattern for eviction: its support, halved for every [`EVICT_HALF_LIFE_MS`] since
/// its last update or recall. A pattern many trajectories formed that is still in use is worth
/// most; a singleton nobody recalled for days is worth least.
pub fn pattern_value(support: u32, idle_ms: u64) -> f64 {
    support.max(1) as f64 * 0.5f64.powf(idle_ms as f64 / EVICT_HALF_LIFE_MS as f64)
}

impl ReasoningBank {
    /// Bounds the bytes of the level-0 patterns (as [`ReasoningBank::stats`] counts them): when
    /// they exceed `max_bytes`, the least valuable patterns ([`pattern_value`] at `now`, default
    /// the clock; ties: the least recently active, then the oldest id) leave the table, the index
    /// and the graph until at most 90 % of `max_bytes` is used, so the sort is amortised over many
    /// extractions. Returns the evicted ids.
    pub fn evict_patterns(&self, max_bytes: usize, now: Option<u64>) -> Result<Vec<u64>> {
        let now = now.unwrap_or_else(now_ms);
        let mut st = self.state.write();
        let mut total: usize = st.nodes.values().map(|n| self.node_bytes(n)).sum();
        if total <= max_bytes {
            return Ok(Vec::new());
        }
        self.centroids_changing();
        let target = max_bytes / 10 * 9;
        let mut ranked: Vec<(f64, u64, u64, usize)> = st
            .nodes
            .values()
            .map(|n| {
                let last = n.last_activity();
                let value = pattern_value(n.pattern.support, now.saturating_sub(last));
                (value, last, n.pattern.id, self.node_bytes(n))
            })
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut gone = Vec::new();
        for (_, _, id, bytes) in ranked {
            if total <= target {
                break;
            }
            st.index.remove(id)?;
            st.nodes.remove(&id);
            st.graph.remove_node(id);
            total -= bytes;
            gone.push(id);
        }
        Ok(gone)
    }

    /// Merges every group of level-0 patterns connected by cosine ≥ `threshold` (transitively, with
    /// union-find) into its member of largest support, which keeps its id. Centroids, arms and rewards
    /// combine exactly; graph edges move to the survivor; the index is updated. Returns how many
    /// patterns disappeared.
    pub fn consolidate(&self, threshold: f32) -> Result<usize> {
        check_arg("threshold", threshold as f64, -1.0, 1.0)?;
        let mut st = self.state.write();
        self.centroids_changing();
        let mut ids: Vec<u64> = st.nodes.keys().copied().collect();
        ids.sort_unstable();
        let pos: HashMap<u64, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut uf = UnionFind::new(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let c = st.nodes[id].pattern.centroid.clone();
            // Widen the search until its last hit falls below the threshold, so no neighbour is missed.
            let mut k = 8usize.min(ids.len());
            loop {
                let hits = st.index.search(&c, k, None)?;
                for &(other, s) in &hits {
                    if s >= threshold {
                        if let Some(&j) = pos.get(&other) {
                            uf.union(i, j);
                        }
                    }
                }
                let exhausted = hits.last().is_none_or(|h| h.1 < threshold);
                if exhausted || k >= ids.len() {
                    break;
                }
                k = (k * 4).min(ids.len());
            }
        }
        let mut groups: HashMap<usize, Vec<u64>> = HashMap::new();
        for (i, &id) in ids.iter().enumerate() {
            groups.entry(uf.find(i)).or_default().push(id);
        }
        let now = now_ms();
        let mut removed = 0;
        let mut roots: Vec<_> = groups.into_values().filter(|g| g.len() > 1).collect();
        roots.sort();
        for group in roots {
            let keep = *group
                .iter()
                .max_by(|a, b| {
                    let (pa, pb) = (&st.nodes[*a].pattern, &st.nodes[*b].pattern);
                    pa.support.cmp(&pb.support).then(b.cmp(a))
                })
                .expect("group is non-empty");
            for &gone in group.iter().filter(|&&g| g != keep) {
                let g = st.nodes.remove(&gone).expect("ids come from the map");
                st.index.remove(gone)?;
                let k = st.nodes.get_mut(&keep).expect("survivor present");
                let gp = g.snapshot();
                k.absorb(
                    &gp.centroid,
                    g.resultant,
                    gp.support,
                    &gp.arms,
                    &g.rewards,
                    &gp.exemplars,
                    self.cfg.max_exemplars,
                    now,
                );
                k.pattern.created_ms = k.pattern.created_ms.min(gp.created_ms);
                k.accesses
                    .fetch_add(gp.access_count, std::sync::atomic::Ordering::Relaxed);
                k.last_access
                    .fetch_max(gp.last_access_ms, std::sync::atomic::Ordering::Relaxed);
                st.graph.merge_nodes(keep, gone);
                removed += 1;
            }
            st.reindex(keep)?;
        }
        Ok(removed)
    }

    /// Removes level-0 patterns matching `rule` at time `now` (default: the clock) from the table, the
    /// index and the graph. Returns the removed ids.
    pub fn prune(&self, rule: PruneRule, now: Option<u64>) -> Result<Vec<u64>> {
        check_arg("min_reward", rule.min_reward as f64, 0.0, 1.0)?;
        let now = now.unwrap_or_else(now_ms);
        let mut st = self.state.write();
        let mut doomed: Vec<u64> = st
            .nodes
            .values()
            .filter(|n| {
                n.pattern.support < rule.min_support
                    && n.pattern.avg_reward < rule.min_reward
                    && now.saturating_sub(n.last_activity()) > rule.max_idle_ms
            })
            .map(|n| n.pattern.id)
            .collect();
        doomed.sort_unstable();
        if !doomed.is_empty() {
            self.centroids_changing();
        }
        for &id in &doomed {
            st.index.remove(id)?;
            st.nodes.remove(&id);
            st.graph.remove_node(id);
        }
        Ok(doomed)
    }

    /// Rebuilds the hierarchy from scratch: level ℓ+1 is spherical k-means over the centroids of level
    /// ℓ with ⌈n_ℓ / branching⌉ clusters, for at most `max_levels` levels (stopping when a level would
    /// have a single pattern). Each abstraction's centroid is the exact spherical mean of its members'
    /// trajectories, its arms and rewards the exact pooled statistics; ids are fresh. Returns the size
    /// of every level built.
    pub fn build_hierarchy(&self, branching: usize, max_levels: usize) -> Result<Vec<usize>> {
        if branching < 2 {
            return Err(SonaError::invalid(format!(
                "branching must be >= 2, got {branching}"
            )));
        }
        let mut st = self.state.write();
        let d = self.cfg.dim;
        let mut prev: Vec<(Pattern, f32, ArmStats)> = {
            let mut v: Vec<_> = st
                .nodes
                .values()
                .map(|n| (n.snapshot(), n.resultant, n.rewards))
                .collect();
            v.sort_by_key(|x| x.0.id);
            v
        };
        let mut levels = Vec::new();
        let now = now_ms();
        let mut rng = SeededRng::new(self.cfg.seed ^ 0x41E2_A4C1);
        for level in 1..=max_levels {
            let k = prev.len().div_ceil(branching);
            if prev.len() < 2 || k < 1 || k >= prev.len() {
                break;
            }
            let data: Vec<f32> = prev
                .iter()
                .flat_map(|p| p.0.centroid.iter().copied())
                .collect();
            let params = KMeansParams {
                k,
                max_iter: 20,
                ..Default::default()
            };
            let cl = spherical_kmeans(&data, prev.len(), d, &params, &mut rng);
            let mut members: Vec<Vec<usize>> = vec![Vec::new(); cl.k];
            for (i, &a) in cl.assign.iter().enumerate() {
                members[a as usize].push(i);
            }
            let mut next = Vec::new();
            let mut children = Vec::new();
            let mut index = FlatIndex::new(d)?;
            for m in members.iter().filter(|m| !m.is_empty()) {
                let (first, rest) = m.split_first().expect("non-empty");
                let (p0, r0, w0) = &prev[*first];
                let mut node = PatternNode::new(p0.clone(), *r0, *w0);
                node.pattern.exemplars.clear();
                for &i in rest {
                    let (p, r, w) = &prev[i];
                    node.absorb(&p.centroid, *r, p.support, &p.arms, w, &[], 0, now);
                }
                let id = st.fresh_id()?;
                let mut p = node.pattern;
                p.id = id;
                p.level = level as u8;
                p.created_ms = now;
                p.updated_ms = now;
                p.last_access_ms = 0;
                p.access_count = 0;
                p.payload = None;
                // Exemplars of an abstraction: its most-supported members' own exemplars.
                let mut by_support: Vec<&usize> = m.iter().collect();
                by_support.sort_by_key(|&&i| std::cmp::Reverse(prev[i].0.support));
                p.exemplars = by_support
                    .iter()
                    .flat_map(|&&i| prev[i].0.exemplars.iter().copied())
                    .take(self.cfg.max_exemplars)
                    .collect();
                index.add(id, &p.centroid)?;
                children.push(m.iter().map(|&i| prev[i].0.id).collect());
                next.push((p, node.resultant, node.rewards));
            }
            levels.push(Level {
                level: level as u8,
                patterns: next.iter().map(|x| x.0.clone()).collect(),
                children,
                index,
            });
            prev = next;
        }
        let sizes = levels.iter().map(|l| l.patterns.len()).collect();
        st.levels = levels;
        Ok(sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::tests::{feed, small_bank};
    use sona_core::types::RewardSource;
    use sona_index::synthetic::blobs;

    #[test]
    fn union_find_groups_transitively() {
        let mut uf = UnionFind::new(5);
        uf.union(0, 1);
        uf.union(3, 4);
        uf.union(1, 4);
        assert_eq!(uf.find(0), uf.find(3));
        assert_ne!(uf.find(2), uf.find(0));
    }

    #[test]
    fn consolidate_merges_chains_and_keeps_totals() {
        let mut cfg = crate::config::BankConfig::new(3, 4);
        cfg.merge_threshold = 0.99;
        cfg.merge_slack = None;
        let bank = ReasoningBank::new(cfg).unwrap();
        // Three points on a chain: a~b (cos .96), b~c (cos .96), a vs c below .95 → one group.
        let ang = |t: f32| [t.cos(), t.sin(), 0.0];
        let (t1, t2) = (0.0f32, 0.28f32);
        for (t, r) in [(0.0, 0.2), (t2, 0.6), (2.0 * t2, 1.0), (t1 + 1.5, 0.4)] {
            bank.add_trajectory(&ang(t), Some(r), Some(1), RewardSource::Explicit, None)
                .unwrap();
            bank.extract_patterns().unwrap();
        }
        assert_eq!(bank.len(), 4);
        bank.record_usage(&[1, 4], &[1, 4]).unwrap();
        let removed = bank.consolidate(0.95).unwrap();
        assert_eq!(removed, 2);
        let ps = bank.patterns();
        assert_eq!(ps.len(), 2);
        let big = ps.iter().find(|p| p.support == 3).unwrap();
        assert!((big.avg_reward - 0.6).abs() < 1e-6);
        assert_eq!(big.arms[1].count, 3);
        // The survivor inherited the edge to pattern 4; the index only holds live ids.
        assert_eq!(bank.graph_edges().len(), 1);
        assert_eq!(bank.search(&ang(0.3), 2).unwrap().len(), 2);
        // k above the pattern count returns every pattern, as ANN libraries do.
        assert_eq!(bank.search(&ang(0.3), 3).unwrap().len(), 2);
        let st = bank.state.read();
        assert!(st.nodes.keys().all(|&id| st.index.contains(id)) && st.index.len() == 2);
    }

    /// Unit vector `i` of R⁴.
    fn axis(i: usize) -> [f32; 4] {
        let mut v = [0.0f32; 4];
        v[i] = 1.0;
        v
    }

    #[test]
    fn prune_needs_all_three_conditions() {
        let d = 4;
        let bank = small_bank(d);
        let e = axis;
        // Pattern 1: poor and small; 2: good and small; 3: poor but large.
        bank.add_trajectory(&e(0), Some(0.1), None, RewardSource::Explicit, None)
            .unwrap();
        bank.extract_patterns().unwrap();
        bank.add_trajectory(&e(1), Some(0.9), None, RewardSource::Explicit, None)
            .unwrap();
        bank.extract_patterns().unwrap();
        for _ in 0..5 {
            bank.add_trajectory(&e(2), Some(0.1), None, RewardSource::Explicit, None)
                .unwrap();
        }
        bank.extract_patterns().unwrap();
        let rule = PruneRule {
            min_support: 3,
            min_reward: 0.5,
            max_idle_ms: 1000,
        };
        assert!(
            bank.prune(rule, None).unwrap().is_empty(),
            "nothing is stale yet"
        );
        let later = now_ms() + 10_000;
        assert_eq!(bank.prune(rule, Some(later)).unwrap(), vec![1]);
        assert_eq!(bank.len(), 2);
        assert!(bank.pattern(1).is_err());
        assert!(!bank.state.read().index.contains(1) && bank.state.read().index.len() == 2);
    }

    #[test]
    fn eviction_drops_the_least_valuable_patterns_first() {
        let d = 4;
        let bank = small_bank(d);
        let e = axis;
        // Pattern 1: support 1; 2: support 6; 3: support 3; 4: support 1, recalled just now.
        for (i, n) in [(0, 1), (1, 6), (2, 3), (3, 1)] {
            for _ in 0..n {
                bank.add_trajectory(&e(i), Some(0.5), None, RewardSource::Explicit, None)
                    .unwrap();
            }
            bank.extract_patterns().unwrap();
        }
        assert_eq!(bank.len(), 4);
        let now = now_ms();
        let one = bank.stats().pattern_bytes / 4;
        // Under the bound: nothing happens.
        assert!(bank.evict_patterns(4 * one, Some(now)).unwrap().is_empty());
        // A day later pattern 4 is recalled: it is worth 1 again, the others lost half their value.
        let later = now + EVICT_HALF_LIFE_MS;
        bank.state.read().nodes[&4].touch(later);
        assert!((pattern_value(6, EVICT_HALF_LIFE_MS) - 3.0).abs() < 1e-9);
        // Room for 3 patterns → down to 90 % of it: two go, the least valuable ones (1, then 4:
        // value 0.5 vs 1; 3 is worth 1.5).
        let gone = bank.evict_patterns(3 * one, Some(later)).unwrap();
        assert_eq!(gone, vec![1, 4]);
        assert!(bank.stats().pattern_bytes <= 3 * one / 10 * 9 + one);
        let st = bank.state.read();
        assert!(!st.index.contains(1) && !st.index.contains(4) && st.index.len() == 2);
        drop(st);
        assert!(bank.pattern(1).is_err());
        assert_eq!(bank.search(&e(1), 1).unwrap()[0].0, 2);
    }

    #[test]
    fn hierarchy_levels_partition_children() {
        let d = 16;
        let (pts, label) = blobs(3000, 40, d, 0.3, 21);
        let bank = small_bank(d);
        feed(&bank, &pts, &label);
        bank.extract_patterns().unwrap();
        let n0 = bank.len();
        let sizes = bank.build_hierarchy(4, 3).unwrap();
        assert!(!sizes.is_empty() && sizes[0] < n0 && sizes[0] >= n0.div_ceil(4) / 2);
        let l1 = bank.level_patterns(1).unwrap();
        let kids = bank.level_children(1).unwrap();
        let mut all: Vec<u64> = kids.iter().flatten().copied().collect();
        all.sort_unstable();
        let mut base: Vec<u64> = bank.patterns().iter().map(|p| p.id).collect();
        base.sort_unstable();
        assert_eq!(all, base, "level-1 children partition level 0");
        let total: u32 = l1.iter().map(|p| p.support).sum();
        assert_eq!(total, 3000);
        assert!(l1
            .iter()
            .all(|p| p.level == 1 && p.id > base[base.len() - 1]));
        // Rebuilt from scratch: same sizes, fresh ids.
        let again = bank.build_hierarchy(4, 3).unwrap();
        assert_eq!(again, sizes);
        assert!(bank.level_patterns(1).unwrap()[0].id > l1.iter().map(|p| p.id).max().unwrap());
        assert_eq!(bank.search_level(&pts[..d], 1, 1).unwrap().len(), 1);
    }
}
