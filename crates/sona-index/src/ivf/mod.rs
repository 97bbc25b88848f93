//! Approximate search by an inverted file (IVF): the vectors are partitioned by spherical k-means
//! into lists, a query scores the list centroids and scans only the `nprobe` most similar lists.
//!
//! Why this instead of a graph at d = 768: a graph walk loads each scored vector from a random
//! address, one dependent cache miss after another, and within a cluster of near-equidistant points
//! it has to score most of the cluster anyway. A list stores its members' 8-bit codes contiguously,
//! so the same scoring streams through memory at the hardware prefetcher's pace (measured in
//! `docs/benchmarks.md`). The final candidates are re-scored with the exact `f32` vectors, so the
//! returned similarities are exact cosines.
//!
//! Lifecycle: below [`IvfParams::min_train`] live vectors there is one list (an 8-bit exact scan).
//! The lists are (re)trained when the live count reaches `min_train`, doubles, or falls to a
//! quarter of the count at the last training (below `min_train`, back to one list); in between, an
//! insert joins the list of its nearest centroid and a delete swap-removes from its list, so both
//! are cheap and visible to the next search. Retraining costs one k-means on a sample plus one
//! assignment pass (amortised O(1) per insert); a caller that holds the index behind a lock can run
//! it outside the lock ([`retrain`]: copy, run, install).
//! A filtered search that finds fewer than `k` accepted vectors in the probed lists keeps probing
//! further lists in centroid order, so a selective filter never silently drops existing matches.

use std::collections::HashMap;

use sona_core::{kernels, validate, Checkpoint, Result, SeededRng, SonaError};

mod retrain;

pub use self::retrain::{RetrainJob, RetrainPlan};
use super::prefetch::prefetch_lines;
use super::quant::{dot_i8_block, dot_i8_rows, quantize};
use super::{
    check_batch, first_non_unit_row, new_entry, unit_rows, unit_vector, IdFilter, VectorIndex,
};
use crate::kmeans::nearest;

/// Candidates re-scored exactly beyond `k`: the 8-bit order is already close to exact (error
/// ≤ 5e-3 at unit norm), and each `f32` row is 4× its code and mostly out of cache.
const RERANK_MARGIN: usize = 2;
/// Extra standard deviations of margin in the list-skipping rule of [`IvfIndex::may_hold`].
const PROBE_SIGMAS: f32 = 1.0;
/// k-means trains on at most this many points per list (FAISS's rule of thumb is 39–256).
const TRAIN_POINTS_PER_LIST: usize = 64;
/// A batched search works on at most this many queries at a time: enough to share every list
/// among several queries per round, few enough that the round's candidate buffers stay in cache.
const BATCH_CHUNK: usize = 1024;
/// ... and on at most this many query × centroid scores (16 MB of `i32`) per chunk.
const CHUNK_SCORES: usize = 1 << 22;

/// Construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IvfParams {
    /// Lists scanned per search: the recall/latency knob.
    pub nprobe: usize,
    /// Lists per trained vector count: `nlist = round(list_factor · √n)`.
    pub list_factor: f32,
    /// Below this many live vectors the index is one list (no training).
    pub min_train: usize,
    /// Seed of the k-means runs, so a build is reproducible.
    pub seed: u64,
}

impl Default for IvfParams {
    fn default() -> Self {
        IvfParams {
            nprobe: 16,
            list_factor: 1.0,
            min_train: 1024,
            seed: 0x534f_4e41,
        }
    }
}

impl IvfParams {
    pub fn validate(&self) -> Result<()> {
        if !(1..=65_536).contains(&self.nprobe) {
            return Err(SonaError::Config(format!(
                "nprobe must be in [1, 65536], got {}",
                self.nprobe
            )));
        }
        if !(self.list_factor.is_finite() && (0.05..=64.0).contains(&self.list_factor)) {
            return Err(SonaError::Config(format!(
                "list_factor must be in [0.05, 64], got {}",
                self.list_factor
            )));
        }
        if !(16..=1 << 24).contains(&self.min_train) {
            return Err(SonaError::Config(format!(
                "min_train must be in [16, 2^24], got {}",
                self.min_train
            )));
        }
        Ok(())
    }
}

/// One inverted list: its members' ids, exact vectors and 8-bit codes, each contiguous.
#[derive(Debug, Clone)]
struct List {
    ids: Vec<u64>,
    vectors: Vec<f32>,
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// Range of the members' cosines to the centroid (widened on insert, kept on delete, so it
    /// always contains the live members' values): the input of [`IvfIndex::may_hold`].
    rho_min: f32,
    rho_max: f32,
}

impl Default for List {
    fn default() -> Self {
        List {
            ids: Vec::new(),
            vectors: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            rho_min: 1.0,
            rho_max: -1.0,
        }
    }
}

impl List {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn push(&mut self, id: u64, unit: &[f32], code: &[i8], scale: f32, rho: f32) {
        self.rho_min = self.rho_min.min(rho);
        self.rho_max = self.rho_max.max(rho);
        if self.ids.len() == self.ids.capacity() {
            // Grow by a quarter, not the default doubling: the lists hold most of the index's
            // memory, and doubling would leave up to half of it unused.
            let extra = (self.ids.len() / 4).max(8);
            let dim = unit.len();
            self.ids.reserve_exact(extra);
            self.scales.reserve_exact(extra);
            self.vectors.reserve_exact(extra * dim);
            self.codes.reserve_exact(extra * dim);
        }
        self.ids.push(id);
        self.vectors.extend_from_slice(unit);
        self.codes.extend_from_slice(code);
        self.scales.push(scale);
    }

    fn shrink_to_fit(&mut self) {
        self.ids.shrink_to_fit();
        self.vectors.shrink_to_fit();
        self.codes.shrink_to_fit();
        self.scales.shrink_to_fit();
    }

    /// Removes member `p` by moving the last member into its place; returns the moved id, if any.
    fn swap_remove(&mut self, p: usize, dim: usize) -> Option<u64> {
        let last = self.len() - 1;
        if p != last {
            self.vectors
                .copy_within(last * dim..(last + 1) * dim, p * dim);
            self.codes
                .copy_within(last * dim..(last + 1) * dim, p * dim);
        }
        self.vectors.truncate(last * dim);
        self.codes.truncate(last * dim);
        self.ids.swap_remove(p);
        self.scales.swap_remove(p);
        (p != last).then(|| self.ids[p])
    }
}

/// A candidate of the scan: quantised score, list and position.
#[derive(Debug, Clone, Copy)]
struct Cand {
    sim: f32,
    list: u32,
    pos: u32,
}

/// The best `cap` candidates seen so far, kept unsorted with the position of the worst, so the
/// common case (a candidate below the bar) costs one comparison.
struct TopBuf {
    cap: usize,
    items: Vec<Cand>,
    worst: usize,
}

impl TopBuf {
    fn new(cap: usize) -> Self {
        TopBuf {
            cap,
            items: Vec::with_capacity(cap),
            worst: 0,
        }
    }

    /// The score a candidate must beat to enter (−∞ while not full).
    #[inline]
    fn bar(&self) -> f32 {
        if self.items.len() < self.cap {
            f32::NEG_INFINITY
        } else {
            self.items[self.worst].sim
        }
    }

    #[inline]
    fn push(&mut self, c: Cand) {
        if self.items.len() < self.cap {
            self.items.push(c);
            if self.items.len() == self.cap {
                self.find_worst();
            }
        } else {
            self.items[self.worst] = c;
            self.find_worst();
        }
    }

    fn find_worst(&mut self) {
        let mut w = 0;
        for (i, c) in self.items.iter().enumerate() {
            if c.sim < self.items[w].sim {
                w = i;
            }
        }
        self.worst = w;
    }
}

/// Order of `(similarity, list)` pairs: most similar first, ties by list number.
fn best_first(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Approximate nearest-neighbour index over unit vectors (inner product) by inverted lists.
#[derive(Debug, Clone)]
pub struct IvfIndex {
    dim: usize,
    params: IvfParams,
    /// Unit centroids, `nlist × dim` (empty while untrained: then there is exactly one list).
    centroids: Vec<f32>,
    /// 8-bit codes of the centroids and their scales: what a search scores.
    centroid_codes: Vec<i8>,
    centroid_scales: Vec<f32>,
    lists: Vec<List>,
    /// Live id → (list, position in the list).
    at: HashMap<u64, (u32, u32)>,
    /// Live count at the last training (0: never trained).
    trained_at: usize,
    rng: SeededRng,
    /// Changes on every insert and delete (unique across indexes): tells a [`RetrainPlan`] whether
    /// the index changed since its job copied the vectors.
    generation: u64,
}

impl IvfIndex {
    pub fn new(dim: usize, params: IvfParams) -> Result<Self> {
        crate::check_dim(dim)?;
        params.validate()?;
        Ok(IvfIndex {
            dim,
            params,
            centroids: Vec::new(),
            centroid_codes: Vec::new(),
            centroid_scales: Vec::new(),
            lists: vec![List::default()],
            at: HashMap::new(),
            trained_at: 0,
            rng: SeededRng::new(params.seed),
            generation: retrain::next_generation(),
        })
    }

    pub fn params(&self) -> IvfParams {
        self.params
    }

    /// Changes the number of lists scanned per search (the recall/latency knob); no rebuild needed.
    pub fn set_nprobe(&mut self, nprobe: usize) -> Result<()> {
        IvfParams {
            nprobe,
            ..self.params
        }
        .validate()?;
        self.params.nprobe = nprobe;
        Ok(())
    }

    /// Number of inverted lists (1 while untrained).
    pub fn nlist(&self) -> usize {
        self.lists.len()
    }

    /// The stored unit vector of a live `id`.
    pub fn get(&self, id: u64) -> Option<&[f32]> {
        self.at.get(&id).map(|&(l, p)| self.row(l, p))
    }

    /// Copies of the live ids and their rows (row-major), list by list.
    fn gather(&self) -> (Vec<u64>, Vec<f32>) {
        let n = self.at.len();
        let mut ids = Vec::with_capacity(n);
        let mut vectors = Vec::with_capacity(n * self.dim);
        for l in &self.lists {
            ids.extend_from_slice(&l.ids);
            vectors.extend_from_slice(&l.vectors);
        }
        (ids, vectors)
    }

    /// The live ids, list by list.
    pub fn live_ids(&self) -> Vec<u64> {
        self.lists
            .iter()
            .flat_map(|l| l.ids.iter().copied())
            .collect()
    }

    /// Heap bytes held by the index (vectors, codes, centroids, id map; allocator overhead excluded).
    pub fn memory_bytes(&self) -> usize {
        let lists: usize = self
            .lists
            .iter()
            .map(|l| {
                l.ids.capacity() * 8
                    + l.vectors.capacity() * 4
                    + l.codes.capacity()
                    + l.scales.capacity() * 4
                    + std::mem::size_of::<List>()
            })
            .sum();
        lists
            + self.centroids.capacity() * 4
            + self.centroid_codes.capacity()
            + self.centroid_scales.capacity() * 4
            // hashbrown: (key, value) + 1 control byte per bucket.
            + self.at.capacity() * (8 + 8 + 1)
    }

    #[inline]
    fn row(&self, list: u32, pos: u32) -> &[f32] {
        let (l, p) = (&self.lists[list as usize], pos as usize * self.dim);
        &l.vectors[p..p + self.dim]
    }

    /// The list whose centroid is nearest to `unit` and the cosine to that centroid (exact `f32`
    /// scores: inserts are rare). Untrained: list 0 and cosine 1.
    fn nearest_list(&self, unit: &[f32], scratch: &mut Vec<f32>) -> (usize, f32) {
        let n = self.lists.len();
        if self.centroids.is_empty() {
            return (0, 1.0);
        }
        scratch.resize(n, 0.0);
        nearest(&self.centroids, n, self.dim, unit, scratch)
    }

    fn insert_unit(&mut self, id: u64, unit: &[f32], code: &mut [i8], scratch: &mut Vec<f32>) {
        self.generation = retrain::next_generation();
        let scale = quantize(unit, code);
        let (l, rho) = self.nearest_list(unit, scratch);
        let list = &mut self.lists[l];
        self.at.insert(id, (l as u32, list.len() as u32));
        list.push(id, unit, code, scale, rho);
    }

    /// Removes `id` from its list (no retraining); `false` if it is not live.
    fn remove_entry(&mut self, id: u64) -> bool {
        let Some((l, p)) = self.at.remove(&id) else {
            return false;
        };
        self.generation = retrain::next_generation();
        if let Some(moved) = self.lists[l as usize].swap_remove(p as usize, self.dim) {
            self.at.insert(moved, (l, p));
        }
        true
    }

    fn wants_training(&self) -> bool {
        let n = self.at.len();
        (n >= self.params.min_train && n >= 2 * self.trained_at)
            || (self.trained_at > 0 && 4 * n <= self.trained_at)
    }

    /// Installs unit `centroids` (`nlist × dim`) and their int8 codes.
    fn set_centroids(&mut self, centroids: Vec<f32>) {
        self.centroid_codes = vec![0; centroids.len()];
        self.centroid_scales = centroids
            .chunks_exact(self.dim)
            .zip(self.centroid_codes.chunks_exact_mut(self.dim))
            .map(|(c, code)| quantize(c, code))
            .collect();
        self.centroids = centroids;
    }

    /// Re-partitions the live vectors: k-means on a sample, then every vector joins its nearest
    /// centroid's list. Below `min_train` live vectors, goes back to one untrained list. Costs one
    /// k-means plus one assignment pass (2.6 s at 65k × 768); a caller holding the index behind a
    /// lock can do the same work outside it with [`VectorIndex::retrain_job`].
    pub fn retrain(&mut self) {
        if self.at.len() >= self.params.min_train {
            let plan = self.snapshot().run();
            self.apply_plan(plan);
            return;
        }
        let d = self.dim;
        let mut one = List::default();
        for list in &self.lists {
            for (p, &id) in list.ids.iter().enumerate() {
                let row = &list.vectors[p * d..(p + 1) * d];
                let code = &list.codes[p * d..(p + 1) * d];
                self.at.insert(id, (0, one.len() as u32));
                one.push(id, row, code, list.scales[p], 1.0);
            }
        }
        self.centroids.clear();
        self.centroid_codes.clear();
        self.centroid_scales.clear();
        self.lists = vec![one];
        self.trained_at = 0;
        self.generation = retrain::next_generation();
    }

    /// Lists in the order a search visits them, with the quantised cosine of the query to their
    /// centroid: best first. Only the first `want` are ordered (the rest follow in arbitrary order).
    fn probe_order(&self, qc: &[i8], qs: f32, want: usize) -> Vec<(f32, u32)> {
        let n = self.lists.len();
        if self.centroids.is_empty() {
            return vec![(1.0, 0)];
        }
        let mut dots = vec![0i32; n];
        dot_i8_rows(qc, &self.centroid_codes, &mut dots);
        let mut scored: Vec<(f32, u32)> = dots
            .iter()
            .zip(&self.centroid_scales)
            .enumerate()
            .map(|(j, (&d, &s))| (d as f32 * qs * s, j as u32))
            .collect();
        let want = want.min(n);
        if want < n {
            scored.select_nth_unstable_by(want, best_first);
        }
        scored[..want].sort_unstable_by(best_first);
        scored
    }

    /// Whether list `l`, whose centroid has cosine `s` to the query, may hold a member scoring
    /// above `bar`. A member `x` with cosine `ρ` to the centroid scores `s·ρ + ⟨q⊥, x⊥⟩`, where the
    /// parts orthogonal to the centroid have norms `√(1−s²)` and `√(1−ρ²)`; in `d` dimensions their
    /// product behaves like `N(0, (1−s²)(1−ρ²)/d)`, and the largest of `n` such terms stays below
    /// `√(2 ln n)` deviations. [`PROBE_SIGMAS`] more deviations are added for margin. This is a
    /// statistical bound (exact bounds by the triangle inequality are vacuous in high dimension):
    /// its effect on recall is measured, not guaranteed.
    fn may_hold(&self, l: u32, s: f32, bar: f32) -> bool {
        let list = &self.lists[l as usize];
        if list.ids.is_empty() {
            return false;
        }
        let radial = if s >= 0.0 {
            s * list.rho_max
        } else {
            s * list.rho_min
        };
        let rho = list.rho_min.clamp(-1.0, 1.0);
        let perp = ((1.0 - rho * rho) * (1.0 - s * s).max(0.0) / self.dim as f32).sqrt();
        let z = (2.0 * (list.len() as f32).ln()).max(0.0).sqrt() + PROBE_SIGMAS;
        radial + z * perp >= bar
    }

    /// Scans list `l` into `top` (members the filter accepts only); `dots` is scratch space.
    fn scan(
        &self,
        l: u32,
        (qc, qs): (&[i8], f32),
        top: &mut TopBuf,
        filter: Option<IdFilter<'_>>,
        dots: &mut Vec<i32>,
    ) {
        let list = &self.lists[l as usize];
        dots.resize(list.len(), 0);
        dot_i8_rows(qc, &list.codes, dots);
        self.take_best(l, qs, dots, top, filter);
    }

    /// Pushes the members of list `l` whose 8-bit scores `dots · qs · scale` beat the bar into `top`
    /// (the part of a scan after the dot products, shared with the batched search).
    fn take_best(
        &self,
        l: u32,
        qs: f32,
        dots: &[i32],
        top: &mut TopBuf,
        filter: Option<IdFilter<'_>>,
    ) {
        let list = &self.lists[l as usize];
        let mut bar = top.bar();
        for (p, (&dot, &scale)) in dots.iter().zip(&list.scales).enumerate() {
            let sim = dot as f32 * qs * scale;
            if sim > bar && filter.is_none_or(|keep| keep(list.ids[p])) {
                top.push(Cand {
                    sim,
                    list: l,
                    pos: p as u32,
                });
                bar = top.bar();
            }
        }
    }

    /// The batched search of the unit rows `units` (the raw rows are `raw`), appended to `out`. Each
    /// query visits the same lists in the same order, skips the same ones and pushes the same
    /// candidates as [`VectorIndex::search`], so the results are identical; what changes is the
    /// loop order. Round `i` takes every query's `i`-th probed list, groups the queries by list
    /// and scores each list's codes once against its whole group ([`dot_i8_block`]). Grouping
    /// within a round, not across rounds, keeps each query's list order (the skipping rule
    /// depends on the candidates found in the lists before).
    fn search_chunk(
        &self,
        raw: &[f32],
        units: &[f32],
        k: usize,
        filter: Option<IdFilter<'_>>,
        out: &mut Vec<Vec<(u64, f32)>>,
    ) -> Result<()> {
        let (d, nl) = (self.dim, self.lists.len());
        let n = units.len() / d;
        let nprobe = self.params.nprobe.min(nl);
        let mut codes = vec![0i8; n * d];
        let scales: Vec<f32> = units
            .chunks_exact(d)
            .zip(codes.chunks_exact_mut(d))
            .map(|(u, c)| quantize(u, c))
            .collect();
        // Every query's probed lists, best first, as `probe_order` ranks them.
        let mut probes: Vec<(f32, u32)> = Vec::with_capacity(n * nprobe);
        if self.centroids.is_empty() {
            probes.resize(n, (1.0, 0));
        } else {
            let mut cdots = vec![0i32; n * nl];
            dot_i8_block(&codes, &self.centroid_codes, d, &mut cdots);
            let mut scored = Vec::with_capacity(nl);
            for (row, &qs) in cdots.chunks_exact(nl).zip(&scales) {
                scored.clear();
                scored.extend(
                    row.iter()
                        .zip(&self.centroid_scales)
                        .enumerate()
                        .map(|(j, (&dot, &s))| (dot as f32 * qs * s, j as u32)),
                );
                if nprobe < nl {
                    scored.select_nth_unstable_by(nprobe, best_first);
                }
                scored[..nprobe].sort_unstable_by(best_first);
                probes.extend_from_slice(&scored[..nprobe]);
            }
        }
        let mut tops: Vec<TopBuf> = (0..n).map(|_| TopBuf::new(k + RERANK_MARGIN)).collect();
        let mut start = vec![0usize; nl + 1];
        let mut pick = vec![u32::MAX; n];
        let mut members = vec![0usize; n];
        let (mut group_codes, mut dots) = (Vec::new(), Vec::new());
        for round in 0..nprobe {
            start.fill(0);
            for (q, p) in pick.iter_mut().enumerate() {
                let (s, l) = probes[q * nprobe + round];
                let top = &tops[q];
                // The single search's skipping rule, on the candidates this query has so far.
                let skip =
                    round > 0 && top.items.len() >= top.cap && !self.may_hold(l, s, top.bar());
                *p = if skip { u32::MAX } else { l };
                if !skip {
                    start[l as usize + 1] += 1;
                }
            }
            for l in 0..nl {
                start[l + 1] += start[l];
            }
            let mut fill = start.clone();
            for (q, &l) in pick.iter().enumerate() {
                if l != u32::MAX {
                    members[fill[l as usize]] = q;
                    fill[l as usize] += 1;
                }
            }
            for l in 0..nl {
                let (group, list) = (&members[start[l]..start[l + 1]], &self.lists[l]);
                if group.is_empty() || list.ids.is_empty() {
                    continue;
                }
                group_codes.clear();
                for &q in group {
                    group_codes.extend_from_slice(&codes[q * d..(q + 1) * d]);
                }
                let m = list.len();
                dots.resize(group.len() * m, 0);
                dot_i8_block(&group_codes, &list.codes, d, &mut dots);
                for (&q, qdots) in group.iter().zip(dots.chunks_exact(m)) {
                    self.take_best(l as u32, scales[q], qdots, &mut tops[q], filter);
                }
            }
        }
        for (q, top) in tops.iter().enumerate() {
            if top.items.len() < k && nprobe < nl {
                // Too few matches in the probed lists: the single search's widening, as it is.
                out.push(self.search(&raw[q * d..(q + 1) * d], k, filter)?);
            } else {
                out.push(self.rerank(&units[q * d..(q + 1) * d], top, k));
            }
        }
        Ok(())
    }

    /// The `k` best candidates of `top` re-scored exactly against the unit query `q`: the order and
    /// the similarities returned are exact.
    fn rerank(&self, q: &[f32], top: &TopBuf, k: usize) -> Vec<(u64, f32)> {
        // The rows are scattered over a list that is mostly out of cache: start every load first.
        for c in &top.items {
            prefetch_lines(self.row(c.list, c.pos));
        }
        let mut found: Vec<(f32, u64)> = top
            .items
            .iter()
            .map(|c| {
                (
                    kernels::dot(q, self.row(c.list, c.pos)),
                    self.lists[c.list as usize].ids[c.pos as usize],
                )
            })
            .collect();
        found.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        found.into_iter().take(k).map(|(s, id)| (id, s)).collect()
    }

    /// Reads an index written by [`VectorIndex::write_into`] under `prefix`.
    pub(crate) fn read_from(ck: &Checkpoint, prefix: &str, dim: usize) -> Result<Self> {
        let bad = |e: SonaError| SonaError::checkpoint(format!("bad IVF index: {e}"));
        let params: IvfParams = ck.meta(&format!("{prefix}ivf_params"))?;
        let mut idx = IvfIndex::new(dim, params).map_err(bad)?;
        idx.trained_at = ck.meta(&format!("{prefix}trained_at"))?;
        idx.rng = ck.meta(&format!("{prefix}rng"))?;
        let sizes = ck.get_u64(&format!("{prefix}list_sizes"))?;
        let ids = ck.get_u64(&format!("{prefix}ids"))?;
        let vectors = ck.get_f32_shaped(&format!("{prefix}vectors"), &[ids.len(), dim])?;
        let (cshape, centroids) = ck.get_f32(&format!("{prefix}centroids"))?;
        let nlist = sizes.len();
        let trained = !centroids.is_empty();
        // Checked: crafted sizes can overflow their sum back to the row count.
        let total = sizes.iter().try_fold(0u64, |a, &s| a.checked_add(s));
        if nlist == 0
            || (trained && cshape != [nlist, dim])
            || (!trained && nlist != 1)
            || total != Some(ids.len() as u64)
        {
            return Err(SonaError::checkpoint(
                "invalid IVF index: list sizes, ids and centroids disagree",
            ));
        }
        // `trained_at` is the live count at the last training (0 while untrained); it feeds
        // `2 · trained_at` in the retrain rule, so an absurd value must not load.
        if trained != (idx.trained_at > 0) || idx.trained_at > validate::MAX_ELEMENTS {
            return Err(SonaError::checkpoint(format!(
                "invalid IVF index: trained_at {} inconsistent with {} lists",
                idx.trained_at, nlist
            )));
        }
        for (what, rows) in [("centroid", &centroids), ("row", &vectors)] {
            if let Some(i) = first_non_unit_row(rows, dim) {
                return Err(SonaError::checkpoint(format!(
                    "invalid IVF index: {what} {i} is not unit-norm"
                )));
            }
        }
        idx.set_centroids(centroids);
        idx.lists = vec![List::default(); nlist];
        let mut code = vec![0i8; dim];
        let mut next = 0usize;
        for (l, &size) in sizes.iter().enumerate() {
            for _ in 0..size {
                let (id, row) = (ids[next], &vectors[next * dim..(next + 1) * dim]);
                let scale = quantize(row, &mut code);
                let list = &mut idx.lists[l];
                if idx.at.insert(id, (l as u32, list.len() as u32)).is_some() {
                    return Err(SonaError::checkpoint(format!(
                        "invalid IVF index: id {id} appears twice"
                    )));
                }
                let rho = if trained {
                    kernels::dot(row, &idx.centroids[l * dim..(l + 1) * dim])
                } else {
                    1.0
                };
                list.push(id, row, &code, scale, rho);
                next += 1;
            }
        }
        Ok(idx)
    }
}

impl VectorIndex for IvfIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.at.len()
    }

    fn contains(&self, id: u64) -> bool {
        self.at.contains_key(&id)
    }

    fn get(&self, id: u64) -> Option<&[f32]> {
        IvfIndex::get(self, id)
    }

    fn add(&mut self, id: u64, vector: &[f32]) -> Result<()> {
        let u = new_entry(self, id, vector)?;
        let mut code = vec![0i8; self.dim];
        self.insert_unit(id, &u, &mut code, &mut Vec::new());
        if self.wants_training() {
            self.retrain();
        }
        Ok(())
    }

    fn add_batch(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        check_batch(self, ids, vectors)?;
        let mut u = vec![0.0; self.dim];
        let mut code = vec![0i8; self.dim];
        let mut scratch = Vec::new();
        for (&id, row) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
            u.copy_from_slice(row);
            kernels::normalize(&mut u);
            self.insert_unit(id, &u, &mut code, &mut scratch);
            if self.wants_training() {
                self.retrain();
            }
        }
        Ok(())
    }

    fn remove(&mut self, id: u64) -> Result<()> {
        if !self.remove_entry(id) {
            return Err(SonaError::UnknownId {
                kind: "vector",
                id: id.into(),
            });
        }
        if self.wants_training() {
            self.retrain();
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
        // Never more than the stored count: a huge `k` must not size any buffer.
        let k = k.min(self.len());
        if k == 0 || self.at.is_empty() {
            return Ok(Vec::new());
        }
        let mut qc = vec![0i8; self.dim];
        let qs = quantize(&q, &mut qc);
        let want = k.min(self.at.len());
        let mut top = TopBuf::new(k + RERANK_MARGIN);
        let nprobe = self.params.nprobe.min(self.lists.len());
        let mut dots = Vec::new();
        let mut order = self.probe_order(&qc, qs, nprobe);
        for (i, &(s, l)) in order[..nprobe].iter().enumerate() {
            // After the nearest list, skip lists that cannot beat the current k-th best.
            if i > 0 && top.items.len() >= top.cap && !self.may_hold(l, s, top.bar()) {
                continue;
            }
            self.scan(l, (&qc, qs), &mut top, filter, &mut dots);
        }
        if top.items.len() < want && nprobe < order.len() {
            // Too few matches in the probed lists (a selective filter, or small lists): keep
            // probing, nearest lists first, until enough are found (at worst every list: an exact
            // 8-bit scan). No list was skipped above: skipping needs a full candidate set.
            order[nprobe..].sort_unstable_by(best_first);
            for &(_, l) in &order[nprobe..] {
                self.scan(l, (&qc, qs), &mut top, filter, &mut dots);
                if top.items.len() >= want {
                    break;
                }
            }
        }
        Ok(self.rerank(&q, &top, k))
    }

    fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        filter: Option<IdFilter<'_>>,
    ) -> Result<Vec<Vec<(u64, f32)>>> {
        let units = unit_rows(queries, self.dim)?;
        let n = units.len() / self.dim;
        let k = k.min(self.len());
        if k == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let mut out = Vec::with_capacity(n);
        // Bounded scratch: `rows × nlist` centroid scores per chunk.
        let rows = (CHUNK_SCORES / self.lists.len()).clamp(1, BATCH_CHUNK);
        for (c, chunk) in units.chunks(rows * self.dim).enumerate() {
            let raw = &queries[c * rows * self.dim..][..chunk.len()];
            self.search_chunk(raw, chunk, k, filter, &mut out)?;
        }
        Ok(out)
    }

    fn retrain_job(&self, upcoming: usize) -> Option<RetrainJob> {
        self.job_if_due(upcoming)
    }

    fn apply_retrain(&mut self, plan: RetrainPlan) -> Result<()> {
        if plan.dim() != self.dim {
            return Err(SonaError::invalid(format!(
                "the retrain plan is for dimension {}, the index has {}",
                plan.dim(),
                self.dim
            )));
        }
        self.apply_plan(plan);
        Ok(())
    }

    fn write_into(&self, ck: &mut Checkpoint, prefix: &str) -> Result<()> {
        ck.set_meta(&format!("{prefix}index_kind"), &"ivf")?;
        ck.set_meta(&format!("{prefix}dim"), &self.dim)?;
        ck.set_meta(&format!("{prefix}ivf_params"), &self.params)?;
        ck.set_meta(&format!("{prefix}trained_at"), &self.trained_at)?;
        ck.set_meta(&format!("{prefix}rng"), &self.rng)?;
        let sizes: Vec<u64> = self.lists.iter().map(|l| l.len() as u64).collect();
        let (ids, vectors) = self.gather();
        let n = ids.len();
        ck.put_u64(&format!("{prefix}list_sizes"), &sizes);
        ck.put_u64(&format!("{prefix}ids"), &ids);
        ck.put_f32(&format!("{prefix}vectors"), &[n, self.dim], &vectors);
        ck.put_f32(
            &format!("{prefix}centroids"),
            &[self.centroids.len() / self.dim, self.dim],
            &self.centroids,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
