//! Pattern extraction, the part that runs without any lock: cluster a batch of new trajectories and
//! summarise each cluster into what a pattern needs (centroid, mean resultant length, support, arm
//! statistics, exemplars). The bank then merges the summaries into its patterns under a short lock.

use sona_core::types::ArmStats;
use sona_core::{kernels, SeededRng};

use crate::trajectory::TrajectorySlab;
use sona_index::kmeans::{bisect_incoherent, spherical_kmeans, KMeansParams};

/// One cluster of new trajectories, ready to merge into (or become) a pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSummary {
    /// Unit centroid (normalised sum of the members).
    pub centroid: Vec<f32>,
    /// Mean resultant length `‖Σx‖ / n` of the unit members: with it, the sum is recoverable from
    /// the centroid, so merging two clusters' centroids is exact (see `bank::merge_into`).
    pub resultant: f32,
    pub support: u32,
    /// Reward statistics per tier, from members that recorded a tier.
    pub arms: Vec<ArmStats>,
    /// Reward statistics of all members.
    pub rewards: ArmStats,
    /// Member ids closest to the centroid, best first.
    pub exemplars: Vec<u64>,
    pub last_ts_ms: u64,
}

/// How many clusters k-means starts from: `√(n/2)` (a common rule of thumb), at most `max_k`.
/// Too few is corrected by bisecting incoherent clusters; too many is harmless because clusters
/// closer than τ_merge to a pattern merge into it afterwards.
pub fn choose_k(n: usize, max_k: usize) -> usize {
    (((n as f64) / 2.0).sqrt().round() as usize).clamp(1, max_k.max(1))
}

/// Clusters `batch` (unit rows) and summarises every non-empty cluster; largest first. With
/// `min_cohesion`, clusters whose members' mean cosine to their centroid is lower are bisected
/// (up to `max_k` clusters): see [`bisect_incoherent`].
pub fn summarize(
    batch: &TrajectorySlab,
    n_tiers: usize,
    max_k: usize,
    max_exemplars: usize,
    min_cohesion: Option<f32>,
    params: &KMeansParams,
    rng: &mut SeededRng,
) -> (Vec<ClusterSummary>, usize) {
    let (n, d) = (batch.len(), batch.dim);
    if n == 0 {
        return (Vec::new(), 0);
    }
    let p = KMeansParams {
        k: choose_k(n, max_k),
        ..*params
    };
    let mut cl = spherical_kmeans(&batch.data, n, d, &p, rng);
    if let Some(rho) = min_cohesion {
        bisect_incoherent(&batch.data, d, &mut cl, rho, max_k, rng);
    }
    let k = cl.k;
    let mut sums = vec![0.0f32; k * d];
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &a) in cl.assign.iter().enumerate() {
        let a = a as usize;
        kernels::axpy(1.0, batch.row(i), &mut sums[a * d..(a + 1) * d]);
        members[a].push(i);
    }
    let mut out = Vec::with_capacity(k);
    for (j, m) in members.iter().enumerate() {
        if m.is_empty() {
            continue;
        }
        let mut centroid = sums[j * d..(j + 1) * d].to_vec();
        let norm = kernels::normalize(&mut centroid);
        if norm <= 0.0 {
            // Members cancel out exactly (antipodal points): fall back to the first member.
            centroid.copy_from_slice(batch.row(m[0]));
        }
        let mut arms = vec![ArmStats::default(); n_tiers];
        let mut rewards = ArmStats::default();
        let mut last_ts_ms = 0;
        let mut sims = Vec::with_capacity(m.len());
        for &i in m {
            let meta = &batch.meta[i];
            if let Some(r) = meta.reward() {
                rewards.push(r as f64);
                if let Some(t) = meta.tier() {
                    if (t as usize) < n_tiers {
                        arms[t as usize].push(r as f64);
                    }
                }
            }
            last_ts_ms = last_ts_ms.max(meta.ts_ms);
            sims.push(kernels::dot(batch.row(i), &centroid));
        }
        let best = kernels::top_k(&sims, max_exemplars);
        out.push(ClusterSummary {
            centroid,
            resultant: (norm / m.len() as f32).clamp(0.0, 1.0),
            support: m.len() as u32,
            arms,
            rewards,
            exemplars: best.iter().map(|&(t, _)| batch.meta[m[t]].id).collect(),
            last_ts_ms,
        });
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.support));
    (out, cl.iterations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trajectory::TrajectoryMeta;
    use sona_core::types::RewardSource;
    use sona_index::synthetic::blobs;

    #[test]
    fn summaries_hold_exact_statistics() {
        let (d, n) = (16, 200);
        let (pts, label) = blobs(n, 2, d, 0.2, 5);
        let mut slab = TrajectorySlab::new(d);
        for i in 0..n {
            let meta = TrajectoryMeta {
                id: 100 + i as u64,
                ts_ms: i as u64,
                reward: if label[i] == 0 { 1.0 } else { 0.0 },
                tier: (i % 3) as u8,
                source: RewardSource::Explicit,
            };
            slab.push(meta, &pts[i * d..(i + 1) * d], usize::MAX);
        }
        let (sums, _) = summarize(
            &slab,
            4,
            2,
            3,
            None,
            &KMeansParams::default(),
            &mut SeededRng::new(0),
        );
        assert_eq!(sums.len(), 2);
        assert_eq!(sums.iter().map(|s| s.support).sum::<u32>(), n as u32);
        for s in &sums {
            assert_eq!(s.exemplars.len(), 3);
            assert!(
                s.rewards.mean == 0.0 || s.rewards.mean == 1.0,
                "pure clusters"
            );
            assert_eq!(
                s.arms.iter().map(|a| a.count).sum::<u64>(),
                s.support as u64
            );
            assert_eq!(s.arms[3].count, 0);
            assert!(s.resultant > 0.9 && s.resultant <= 1.0);
        }
        assert_eq!(choose_k(10_000, 128), 71);
        assert_eq!(choose_k(1, 128), 1);
    }
}
