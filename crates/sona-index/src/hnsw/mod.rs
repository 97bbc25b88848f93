//! Approximate search on a hierarchical navigable small-world graph (HNSW, Malkov & Yashunin 2018).
//!
//! Layout: every inserted vector owns a *slot*. Vectors live in one contiguous `slots × dim` buffer
//! (plus its 8-bit quantised copy, which the graph walk reads: see [`super::quant`]), layer-0
//! adjacency in one fixed-stride `u32` buffer (`[count, n_1 … n_{2M}]` per slot), and the rare
//! upper-layer lists in a small per-slot buffer, so a search touches few allocations. The final
//! candidates are re-scored with the exact vectors, so returned similarities are exact cosines.
//!
//! Insert is incremental (Algorithm 1 with the neighbour-selection heuristic, Algorithm 4) and is
//! visible to the next search. Delete marks the slot as a tombstone: it keeps routing searches (the
//! graph stays connected) but is never returned; when tombstones outnumber live vectors the graph is
//! rebuilt from the live ones ([`HnswIndex::compact`]), so memory stays within 2× of the live set.
//! Filters are applied during the search like tombstones; if the graph search finds fewer than `k`
//! acceptable nodes (a very selective filter), an exact scan of the accepted nodes answers instead.

mod persist;
mod search;

use std::collections::HashMap;

use parking_lot::Mutex;
use sona_core::{kernels, Result, SeededRng, SonaError};

use self::search::{Probe, Scored, Visited};
use super::prefetch::prefetch_lines;
use super::quant::{dot_i8, hamming, quantize, sign_bits};
use super::{check_batch, new_entry, unit_vector, IdFilter, VectorIndex};

/// Highest layer a node may be drawn at (the expected top layer of 10⁹ nodes with M = 4 is ~15).
const MAX_LEVEL: usize = 24;
/// Largest neighbour list (layer 0 keeps `2 m`, and `m ≤ 128`).
const MAX_DEGREE: usize = 256;
/// From this dimension on, searches gate the 8-bit scoring of layer 0 with 1-bit sign codes.
const SIGN_GATE_MIN_DIM: usize = 256;

/// Construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HnswParams {
    /// Neighbours per node on the upper layers; layer 0 keeps `2 m`.
    pub m: usize,
    /// Candidate-list size while inserting (larger: better graph, slower insert).
    pub ef_construction: usize,
    /// Candidate-list size while searching (raised to `k` when smaller): the recall/latency knob.
    pub ef_search: usize,
    /// Seed of the level draws, so a build is reproducible.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 100,
            ef_search: 32,
            seed: 0x534f_4e41,
        }
    }
}

impl HnswParams {
    pub fn validate(&self) -> Result<()> {
        if !(2..=128).contains(&self.m) {
            return Err(SonaError::Config(format!(
                "m must be in [2, 128], got {}",
                self.m
            )));
        }
        for (name, v) in [
            ("ef_construction", self.ef_construction),
            ("ef_search", self.ef_search),
        ] {
            if !(1..=100_000).contains(&v) {
                return Err(SonaError::Config(format!(
                    "{name} must be in [1, 100000], got {v}"
                )));
            }
        }
        Ok(())
    }
}

/// Approximate nearest-neighbour index over unit vectors (inner product).
pub struct HnswIndex {
    dim: usize,
    params: HnswParams,
    /// Unit vectors, `slots × dim`, row = slot.
    vectors: Vec<f32>,
    /// 8-bit codes of `vectors` (same layout) and their per-slot scales: what the graph walk reads.
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// Sign bits of `vectors`, `⌈dim / 64⌉` words per slot: the search walk at large dimensions.
    bits: Vec<u64>,
    /// Id of each slot (also for tombstones, whose id may since have been reused by a live slot).
    ids: Vec<u64>,
    deleted: Vec<bool>,
    n_deleted: usize,
    /// Live ids only.
    slot_of: HashMap<u64, u32>,
    levels: Vec<u8>,
    /// Layer-0 adjacency, stride `2m + 1`.
    layer0: Vec<u32>,
    /// Layers `1..=levels[slot]` of each slot, stride `m + 1` per layer.
    upper: Vec<Vec<u32>>,
    entry: Option<u32>,
    max_level: usize,
    rng: SeededRng,
    visited_pool: Mutex<Vec<Visited>>,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("live", &self.slot_of.len())
            .field("tombstones", &self.n_deleted)
            .field("max_level", &self.max_level)
            .finish()
    }
}

impl Clone for HnswIndex {
    fn clone(&self) -> Self {
        HnswIndex {
            dim: self.dim,
            params: self.params,
            vectors: self.vectors.clone(),
            codes: self.codes.clone(),
            scales: self.scales.clone(),
            bits: self.bits.clone(),
            ids: self.ids.clone(),
            deleted: self.deleted.clone(),
            n_deleted: self.n_deleted,
            slot_of: self.slot_of.clone(),
            levels: self.levels.clone(),
            layer0: self.layer0.clone(),
            upper: self.upper.clone(),
            entry: self.entry,
            max_level: self.max_level,
            rng: self.rng.clone(),
            visited_pool: Mutex::new(Vec::new()),
        }
    }
}

impl HnswIndex {
    pub fn new(dim: usize, params: HnswParams) -> Result<Self> {
        crate::check_dim(dim)?;
        params.validate()?;
        Ok(HnswIndex {
            dim,
            params,
            vectors: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            bits: Vec::new(),
            ids: Vec::new(),
            deleted: Vec::new(),
            n_deleted: 0,
            slot_of: HashMap::new(),
            levels: Vec::new(),
            layer0: Vec::new(),
            upper: Vec::new(),
            entry: None,
            max_level: 0,
            rng: SeededRng::new(params.seed),
            visited_pool: Mutex::new(Vec::new()),
        })
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Changes the search-time candidate-list size (the recall/latency knob); no rebuild needed.
    pub fn set_ef_search(&mut self, ef: usize) -> Result<()> {
        HnswParams {
            ef_search: ef,
            ..self.params
        }
        .validate()?;
        self.params.ef_search = ef;
        Ok(())
    }

    /// Number of tombstones (deleted slots still in the graph).
    pub fn tombstones(&self) -> usize {
        self.n_deleted
    }

    /// The stored unit vector of a live `id`.
    pub fn get(&self, id: u64) -> Option<&[f32]> {
        self.slot_of.get(&id).map(|&s| self.vector(s))
    }

    /// The live ids, in slot order.
    pub fn live_ids(&self) -> Vec<u64> {
        (0..self.ids.len())
            .filter(|&s| !self.deleted[s])
            .map(|s| self.ids[s])
            .collect()
    }

    /// Heap bytes held by the index (vectors, graph, id map; allocator overhead excluded).
    pub fn memory_bytes(&self) -> usize {
        let upper: usize = self
            .upper
            .iter()
            .map(|u| u.capacity() * 4 + std::mem::size_of::<Vec<u32>>())
            .sum();
        self.vectors.capacity() * 4
            + self.codes.capacity()
            + self.scales.capacity() * 4
            + self.bits.capacity() * 8
            + self.ids.capacity() * 8
            + self.deleted.capacity()
            + self.levels.capacity()
            + self.layer0.capacity() * 4
            + upper
            // hashbrown: (key, value) + 1 control byte per bucket, buckets ≥ 8/7 × len.
            + self.slot_of.capacity() * (8 + 4 + 1)
    }

    /// Rebuilds the graph from the live vectors only, dropping every tombstone.
    pub fn compact(&mut self) {
        let mut fresh = HnswIndex {
            rng: self.rng.clone(),
            ..HnswIndex::new(self.dim, self.params).expect("parameters were validated")
        };
        let live = self.slot_of.len();
        fresh.reserve(live);
        let mut visited = Visited::default();
        for s in 0..self.ids.len() {
            if !self.deleted[s] {
                fresh.insert_unit(self.ids[s], self.vector(s as u32), &mut visited);
            }
        }
        *self = fresh;
    }

    fn reserve(&mut self, n: usize) {
        self.vectors.reserve(n * self.dim);
        self.codes.reserve(n * self.dim);
        self.scales.reserve(n);
        self.bits.reserve(n * self.words());
        self.ids.reserve(n);
        self.deleted.reserve(n);
        self.levels.reserve(n);
        self.layer0.reserve(n * (self.m0() + 1));
        self.upper.reserve(n);
        self.slot_of.reserve(n);
    }

    /// `u64` words of one sign code.
    #[inline]
    pub(super) fn words(&self) -> usize {
        self.dim.div_ceil(64)
    }

    #[inline]
    pub(super) fn bit_code(&self, slot: u32) -> &[u64] {
        let w = self.words();
        let s = slot as usize * w;
        &self.bits[s..s + w]
    }

    #[inline]
    fn m0(&self) -> usize {
        2 * self.params.m
    }

    #[inline]
    pub(super) fn vector(&self, slot: u32) -> &[f32] {
        let s = slot as usize * self.dim;
        &self.vectors[s..s + self.dim]
    }

    #[inline]
    pub(super) fn code(&self, slot: u32) -> &[i8] {
        let s = slot as usize * self.dim;
        &self.codes[s..s + self.dim]
    }

    /// Quantised similarity of a probe to a slot (the graph walk's metric).
    #[inline]
    fn sim(&self, q: &Probe, slot: u32) -> f32 {
        dot_i8(&q.codes, self.code(slot)) as f32 * q.scale * self.scales[slot as usize]
    }

    /// Quantised similarity between two slots (the neighbour-selection metric).
    #[inline]
    fn sim_slots(&self, a: u32, b: u32) -> f32 {
        dot_i8(self.code(a), self.code(b)) as f32
            * self.scales[a as usize]
            * self.scales[b as usize]
    }

    /// Exact similarity of a unit query to a slot.
    #[inline]
    fn exact_sim(&self, q: &[f32], slot: u32) -> f32 {
        kernels::dot(q, self.vector(slot))
    }

    fn probe(&self, unit: &[f32]) -> Probe {
        let mut codes = vec![0i8; self.dim];
        let scale = quantize(unit, &mut codes);
        Probe {
            codes,
            scale,
            bits: None,
        }
    }

    #[inline]
    fn neighbors(&self, slot: u32, level: usize) -> &[u32] {
        let (list, base) = self.list_at(slot, level);
        let n = list[base] as usize;
        &list[base + 1..base + 1 + n]
    }

    /// The raw list (count first) of `slot` on `level`, for prefetching.
    #[inline]
    pub(super) fn adjacency(&self, slot: u32, level: usize) -> &[u32] {
        let (list, base) = self.list_at(slot, level);
        &list[base..]
    }

    #[inline]
    fn list_at(&self, slot: u32, level: usize) -> (&[u32], usize) {
        if level == 0 {
            (&self.layer0, slot as usize * (self.m0() + 1))
        } else {
            (
                &self.upper[slot as usize],
                (level - 1) * (self.params.m + 1),
            )
        }
    }

    fn set_neighbors(&mut self, slot: u32, level: usize, list: &[u32]) {
        let (buf, base) = if level == 0 {
            let stride = self.m0() + 1;
            (&mut self.layer0, slot as usize * stride)
        } else {
            let stride = self.params.m + 1;
            (&mut self.upper[slot as usize], (level - 1) * stride)
        };
        buf[base] = list.len() as u32;
        buf[base + 1..base + 1 + list.len()].copy_from_slice(list);
    }

    /// Level of a new node: `⌊−ln(U) / ln M⌋`, the geometric law of the paper.
    fn random_level(&mut self) -> usize {
        let u = 1.0 - self.rng.next_f64(); // (0, 1]
        let ml = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * ml) as usize).min(MAX_LEVEL)
    }

    /// Neighbour-selection heuristic (Algorithm 4 without extension): walk the candidates best first
    /// and keep one only if it is more similar to the base than to every neighbour kept so far, so the
    /// links spread over directions instead of crowding into one cluster.
    fn select(&self, candidates: &[Scored], m: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        for c in candidates {
            if kept.len() >= m {
                break;
            }
            if kept.iter().all(|&k| self.sim_slots(c.slot, k) < c.sim) {
                kept.push(c.slot);
            }
        }
        kept
    }

    /// Adds the link `from → to` on `level`, re-selecting `from`'s list when it is full.
    fn link(&mut self, from: u32, to: u32, level: usize) {
        let cap = if level == 0 { self.m0() } else { self.params.m };
        let current = self.neighbors(from, level);
        if current.len() < cap {
            let mut list = current.to_vec();
            list.push(to);
            self.set_neighbors(from, level, &list);
            return;
        }
        let mut cands: Vec<Scored> = current
            .iter()
            .chain(std::iter::once(&to))
            .map(|&s| Scored {
                sim: self.sim_slots(from, s),
                slot: s,
            })
            .collect();
        cands.sort_unstable_by(|a, b| b.cmp(a));
        let list = self.select(&cands, cap);
        self.set_neighbors(from, level, &list);
    }

    /// Inserts an already-normalised, validated vector under a new id (Algorithm 1).
    fn insert_unit(&mut self, id: u64, unit: &[f32], visited: &mut Visited) {
        let slot = u32::try_from(self.ids.len()).expect("fewer than 2^32 slots");
        let level = self.random_level();
        let q = self.probe(unit);
        self.vectors.extend_from_slice(unit);
        self.codes.extend_from_slice(&q.codes);
        self.scales.push(q.scale);
        let w = self.words();
        self.bits.extend(std::iter::repeat_n(0, w));
        let at = self.bits.len() - w;
        sign_bits(unit, &mut self.bits[at..]);
        self.ids.push(id);
        self.deleted.push(false);
        self.levels.push(level as u8);
        self.layer0.extend(std::iter::repeat_n(0, self.m0() + 1));
        self.upper.push(vec![0; level * (self.params.m + 1)]);
        self.slot_of.insert(id, slot);

        let Some(entry) = self.entry else {
            self.entry = Some(slot);
            self.max_level = level;
            return;
        };
        let q = &q;
        let mut cur = Scored {
            sim: self.sim(q, entry),
            slot: entry,
        };
        for l in (level + 1..=self.max_level).rev() {
            cur = self.greedy(q, cur, l);
        }
        let mut eps = vec![cur];
        let everyone = |_: u32| true;
        for l in (0..=level.min(self.max_level)).rev() {
            let found =
                self.search_layer(q, &eps, self.params.ef_construction, l, visited, &everyone);
            let chosen = self.select(&found, self.params.m);
            self.set_neighbors(slot, l, &chosen);
            for &n in &chosen {
                self.link(n, slot, l);
            }
            eps = found;
        }
        if level > self.max_level {
            self.entry = Some(slot);
            self.max_level = level;
        }
    }

    /// Greedy descent through the upper layers, then the best-first search of layer 0 (`ef`).
    fn walk(
        &self,
        q: &Probe,
        entry: u32,
        ef: usize,
        visited: &mut Visited,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let cur = match &q.bits {
            Some(qb) => {
                let mut cur = (entry, hamming(qb, self.bit_code(entry)));
                for l in (1..=self.max_level).rev() {
                    cur = self.greedy_bits(qb, cur, l);
                }
                Scored {
                    sim: self.sim(q, cur.0),
                    slot: cur.0,
                }
            }
            None => {
                let mut cur = Scored {
                    sim: self.sim(q, entry),
                    slot: entry,
                };
                for l in (1..=self.max_level).rev() {
                    cur = self.greedy(q, cur, l);
                }
                cur
            }
        };
        self.search_layer(q, &[cur], ef, 0, visited, accept)
    }

    /// Exact top-k over the accepted live slots (the answer when the graph search finds too few).
    fn exact(&self, q: &[f32], k: usize, accept: &dyn Fn(u32) -> bool) -> Vec<(u64, f32)> {
        let (mut slots, mut scores) = (Vec::new(), Vec::new());
        for s in 0..self.ids.len() as u32 {
            if accept(s) {
                slots.push(s);
                scores.push(self.exact_sim(q, s));
            }
        }
        kernels::top_k(&scores, k)
            .into_iter()
            .map(|(j, s)| (self.ids[slots[j] as usize], s))
            .collect()
    }
}

impl VectorIndex for HnswIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.slot_of.len()
    }

    fn contains(&self, id: u64) -> bool {
        self.slot_of.contains_key(&id)
    }

    fn get(&self, id: u64) -> Option<&[f32]> {
        HnswIndex::get(self, id)
    }

    fn add(&mut self, id: u64, vector: &[f32]) -> Result<()> {
        let u = new_entry(self, id, vector)?;
        let mut visited = self.take_visited();
        self.insert_unit(id, &u, &mut visited);
        self.give_visited(visited);
        Ok(())
    }

    fn add_batch(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        check_batch(self, ids, vectors)?;
        self.reserve(ids.len());
        let mut visited = self.take_visited();
        let mut u = vec![0.0; self.dim];
        for (&id, row) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
            u.copy_from_slice(row);
            kernels::normalize(&mut u);
            self.insert_unit(id, &u, &mut visited);
        }
        self.give_visited(visited);
        Ok(())
    }

    fn remove(&mut self, id: u64) -> Result<()> {
        let s = self.slot_of.remove(&id).ok_or(SonaError::UnknownId {
            kind: "vector",
            id: id.into(),
        })?;
        self.deleted[s as usize] = true;
        self.n_deleted += 1;
        if self.slot_of.is_empty() {
            // Nothing live is left: start over instead of searching a graph of tombstones.
            let rng = self.rng.clone();
            *self = HnswIndex {
                rng,
                ..HnswIndex::new(self.dim, self.params).expect("parameters were validated")
            };
        } else if self.n_deleted > self.slot_of.len().max(64) {
            self.compact();
        }
        Ok(())
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<IdFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>> {
        let q = unit_vector("query", query, self.dim)?;
        let Some(entry) = self.entry else {
            return Ok(Vec::new());
        };
        // Never more than the live count: a huge `k` must not size any buffer.
        let k = k.min(self.slot_of.len());
        if k == 0 || self.slot_of.is_empty() {
            return Ok(Vec::new());
        }
        let accept = |s: u32| {
            !self.deleted[s as usize] && filter.is_none_or(|keep| keep(self.ids[s as usize]))
        };
        let ef = self.params.ef_search.max(k);
        let mut visited = self.take_visited();
        let mut probe = self.probe(&q);
        if self.dim >= SIGN_GATE_MIN_DIM {
            let mut bits = vec![0u64; self.words()];
            sign_bits(&q, &mut bits);
            probe.bits = Some(bits);
        }
        let mut found = self.walk(&probe, entry, ef, &mut visited, &accept);
        self.give_visited(visited);
        // Re-score the best candidates exactly: the order and the similarities returned are exact.
        // The 8-bit order is already close to exact (error ≤ 5e-3 at unit norm), so only a margin
        // of 2 beyond `k` is re-scored: the `f32` rows are 4× the codes and mostly out of cache.
        if found.len() >= k.min(self.slot_of.len()) {
            found.truncate(k + 2);
        }
        for c in &found {
            prefetch_lines(self.vector(c.slot));
        }
        for c in &mut found {
            c.sim = self.exact_sim(&q, c.slot);
        }
        found.sort_unstable_by(|a, b| b.cmp(a));
        if found.len() < k.min(self.slot_of.len()) {
            // Too few acceptable nodes were reachable (selective filter, or a region cut off by
            // tombstones): answer exactly, so a result never silently misses existing matches.
            return Ok(self.exact(&q, k, &accept));
        }
        Ok(found
            .into_iter()
            .take(k)
            .map(|c| (self.ids[c.slot as usize], c.sim))
            .collect())
    }

    fn write_into(&self, ck: &mut sona_core::Checkpoint, prefix: &str) -> Result<()> {
        self.write(ck, prefix)
    }
}

#[cfg(test)]
mod tests;
