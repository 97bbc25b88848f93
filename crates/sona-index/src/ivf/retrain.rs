//! Re-partitioning in three steps, so that a caller holding the index behind a lock only holds it
//! for the cheap ones: [`VectorIndex::retrain_job`] copies the live vectors (shared borrow),
//! [`RetrainJob::run`] clusters them and builds the new lists (no borrow at all: the expensive part),
//! and [`VectorIndex::apply_retrain`] installs the result (exclusive borrow), replaying whatever
//! changed in the index since the copy. [`IvfIndex::retrain`] is the three in a row.

use std::sync::atomic::{AtomicU64, Ordering};

use sona_core::SeededRng;

use super::{IvfIndex, IvfParams, List, TRAIN_POINTS_PER_LIST};
use crate::kmeans::{spherical_kmeans, subsample, KMeansParams};

/// Source of [`IvfIndex::generation`] values: process-wide, so two different states of any indexes
/// never share one.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

pub(super) fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// A copy of an index's live vectors, to be re-partitioned without holding the index.
#[derive(Debug)]
pub struct RetrainJob {
    dim: usize,
    params: IvfParams,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    rng: SeededRng,
    generation: u64,
}

/// New lists computed by [`RetrainJob::run`], ready for [`crate::VectorIndex::apply_retrain`].
#[derive(Debug)]
pub struct RetrainPlan {
    fresh: IvfIndex,
    /// Generation of the index the job copied.
    generation: u64,
}

impl RetrainPlan {
    /// Dimension of the index the plan was computed for.
    pub fn dim(&self) -> usize {
        self.fresh.dim
    }
}

impl RetrainJob {
    /// k-means on a sample of the copied vectors, then every vector joins its nearest centroid's
    /// list: the expensive step (seconds at 65k × 768), run while the index keeps serving.
    pub fn run(mut self) -> RetrainPlan {
        let (n, d) = (self.ids.len(), self.dim);
        let nlist = ((self.params.list_factor as f64 * (n as f64).sqrt()).round() as usize)
            .clamp(1, n.max(1));
        let m = n.min(TRAIN_POINTS_PER_LIST * nlist);
        let drawn;
        let sample: &[f32] = if m < n {
            drawn = subsample(&self.vectors, d, m, &mut self.rng);
            &drawn
        } else {
            &self.vectors
        };
        let params = KMeansParams {
            k: nlist,
            max_iter: 10,
            tol: 0.005,
            init_sample: 4096.max(nlist),
            minibatch_threshold: usize::MAX,
            ..KMeansParams::default()
        };
        let cl = spherical_kmeans(sample, m, d, &params, &mut self.rng);
        let mut fresh = IvfIndex::new(d, self.params).expect("parameters were validated");
        fresh.set_centroids(cl.centroids);
        fresh.lists = vec![List::default(); cl.k];
        fresh.at.reserve(n);
        let mut code = vec![0i8; d];
        let mut scratch = Vec::new();
        for (&id, row) in self.ids.iter().zip(self.vectors.chunks_exact(d)) {
            fresh.insert_unit(id, row, &mut code, &mut scratch);
        }
        for l in &mut fresh.lists {
            l.shrink_to_fit();
        }
        fresh.trained_at = n;
        fresh.rng = self.rng;
        RetrainPlan {
            fresh,
            generation: self.generation,
        }
    }
}

impl IvfIndex {
    /// A copy of the live vectors (and of the RNG, so the result is reproducible).
    pub(super) fn snapshot(&self) -> RetrainJob {
        let (ids, vectors) = self.gather();
        RetrainJob {
            dim: self.dim,
            params: self.params,
            ids,
            vectors,
            rng: self.rng.clone(),
            generation: self.generation,
        }
    }

    /// A job when a retrain would be due after `upcoming` more inserts (and there are enough
    /// vectors to train on), else `None`.
    pub(super) fn job_if_due(&self, upcoming: usize) -> Option<RetrainJob> {
        let n = self.at.len();
        (n >= self.params.min_train && n.saturating_add(upcoming) >= 2 * self.trained_at)
            .then(|| self.snapshot())
    }

    /// Installs `plan`. If the index changed since the job's copy, the changes are replayed on the
    /// new lists first: vectors removed (or replaced) since are dropped, vectors added (or
    /// replaced) since join their nearest new list. Search parameters set meanwhile are kept.
    pub(super) fn apply_plan(&mut self, plan: RetrainPlan) {
        let RetrainPlan {
            mut fresh,
            generation,
        } = plan;
        fresh.params = self.params;
        if generation != self.generation {
            let d = self.dim;
            let mut stale: Vec<u64> = Vec::new();
            let mut missing: Vec<(u32, u32)> = Vec::new();
            for (&id, &(l, p)) in &self.at {
                match fresh.at.get(&id) {
                    Some(&(fl, fp)) if fresh.row(fl, fp) == self.row(l, p) => {}
                    Some(_) => {
                        stale.push(id);
                        missing.push((l, p));
                    }
                    None => missing.push((l, p)),
                }
            }
            let gone: Vec<u64> = fresh
                .at
                .keys()
                .filter(|id| !self.at.contains_key(id))
                .copied()
                .collect();
            for id in stale.into_iter().chain(gone) {
                fresh.remove_entry(id);
            }
            let mut code = vec![0i8; d];
            let mut scratch = Vec::new();
            for (l, p) in missing {
                let id = self.lists[l as usize].ids[p as usize];
                fresh.insert_unit(id, self.row(l, p), &mut code, &mut scratch);
            }
        }
        fresh.generation = next_generation();
        *self = fresh;
    }
}
