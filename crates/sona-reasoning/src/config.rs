//! The bank's configuration: every tunable, with its defaults and its checks.

use serde::{Deserialize, Serialize};
use sona_core::{validate, Result, SonaError};
use sona_index::IndexKind;

use crate::graph::GraphConfig;

/// Every tunable of a bank; checked by [`BankConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankConfig {
    pub dim: usize,
    pub n_tiers: usize,
    pub seed: u64,
    /// New completed trajectories kept for the next extraction (the oldest are dropped beyond it).
    pub buffer_capacity: usize,
    /// Size of the uniform replay reservoir.
    pub reservoir_capacity: usize,
    /// Trajectories awaiting feedback (the oldest are evicted beyond it).
    pub pending_capacity: usize,
    /// Age after which a pending trajectory expires.
    pub pending_ttl_ms: u64,
    /// τ_merge: a new cluster merges into the nearest pattern when cosine ≥ this.
    pub merge_threshold: f32,
    /// Spread-aware merging: a cluster also merges into its nearest pattern P when its cosine to P
    /// is ≥ `ρ_P − merge_slack`, where `ρ_P` (P's mean resultant length) is the mean cosine of P's
    /// own members to its centroid: the cluster lies within P. `None` keeps the plain τ_merge rule.
    #[serde(default)]
    pub merge_slack: Option<f32>,
    /// Most clusters one extraction produces (k-means starts from `√(n/2)` of them).
    pub max_clusters: usize,
    /// Clusters whose members' mean cosine to their centroid is below this are bisected (so the
    /// result does not depend on k-means lumping distinct groups). `None` disables it.
    #[serde(default)]
    pub min_cohesion: Option<f32>,
    pub kmeans_max_iter: usize,
    /// Past this many new trajectories, extraction uses mini-batch k-means.
    pub minibatch_threshold: usize,
    pub max_exemplars: usize,
    /// The arm every other arm is tested against in verdicts.
    pub default_tier: usize,
    /// Family-wise significance level of verdicts.
    pub alpha: f64,
    pub graph: GraphConfig,
    /// The pattern index: exact (`Flat`, the default), or inverted lists (`Ivf`) or an HNSW graph
    /// (`Hnsw`) for large pattern sets.
    #[serde(default)]
    pub index: IndexKind,
}

impl BankConfig {
    /// Defaults for `dim`-dimensional embeddings and `n_tiers` tiers.
    pub fn new(dim: usize, n_tiers: usize) -> Self {
        BankConfig {
            dim,
            n_tiers,
            seed: 0,
            buffer_capacity: 100_000,
            reservoir_capacity: 10_000,
            pending_capacity: 100_000,
            pending_ttl_ms: 3_600_000,
            merge_threshold: 0.9,
            merge_slack: Some(0.1),
            max_clusters: 1024,
            min_cohesion: Some(0.75),
            kmeans_max_iter: 8,
            minibatch_threshold: 50_000,
            max_exemplars: 4,
            default_tier: 0,
            alpha: 0.05,
            graph: GraphConfig::default(),
            index: IndexKind::Flat,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("dim", self.dim),
            ("buffer_capacity", self.buffer_capacity),
            ("max_clusters", self.max_clusters),
            ("kmeans_max_iter", self.kmeans_max_iter),
            ("minibatch_threshold", self.minibatch_threshold),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(SonaError::Config(format!("{name} must be > 0")));
            }
        }
        // Upper bounds, so a constructor argument or a crafted checkpoint cannot ask for more
        // memory than a machine has (each store holds up to `capacity × dim` floats).
        validate::check_size("dim", self.dim, 1, validate::MAX_DIM)?;
        for (name, cap) in [
            ("buffer_capacity", self.buffer_capacity),
            ("reservoir_capacity", self.reservoir_capacity),
            ("pending_capacity", self.pending_capacity),
        ] {
            validate::element_count(name, &[cap, self.dim])?;
        }
        for (name, v, hi) in [
            ("max_clusters", self.max_clusters, 1 << 20),
            ("kmeans_max_iter", self.kmeans_max_iter, 10_000),
            (
                "minibatch_threshold",
                self.minibatch_threshold,
                validate::MAX_ELEMENTS,
            ),
            ("max_exemplars", self.max_exemplars, 1 << 16),
        ] {
            validate::check_size(name, v, 0, hi)?;
        }
        if !(1..=64).contains(&self.n_tiers) {
            return Err(SonaError::Config(format!(
                "n_tiers must be in [1, 64], got {}",
                self.n_tiers
            )));
        }
        if self.default_tier >= self.n_tiers {
            return Err(SonaError::Config(format!(
                "default_tier {} must be < n_tiers {}",
                self.default_tier, self.n_tiers
            )));
        }
        validate::check_range("merge_threshold", self.merge_threshold as f64, -1.0, 1.0)?;
        if let Some(c) = self.min_cohesion {
            validate::check_range("min_cohesion", c as f64, 0.0, 1.0)?;
        }
        if let Some(s) = self.merge_slack {
            validate::check_range("merge_slack", s as f64, 0.0, 1.0)?;
        }
        validate::check_range("alpha", self.alpha, 0.0, 1.0)?;
        self.graph.validate()
    }
}
