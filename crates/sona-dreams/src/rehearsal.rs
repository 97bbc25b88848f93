//! Generative pseudo-rehearsal (design §7): inputs sampled around what memory holds.
//!
//! Each pattern cluster `c` (a centroid `μ_c` with spread `σ_c` and a support count) yields
//! `x̃ = μ_c + σ_c · z`, `z ~ N(0, I)`, clusters drawn ∝ support. Labelled by a frozen pre-cycle
//! teacher, these inputs let a cycle keep old behaviour where no real trajectory was stored.

use sona_core::{Result, SeededRng, SonaError};

/// One cluster to rehearse around.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    pub centroid: &'a [f32],
    /// Per-coordinate standard deviation around the centroid.
    pub spread: f32,
    pub support: u32,
}

/// `n` inputs of dimension `d` (row-major), clusters drawn ∝ support; unit-normalised when
/// `unit` (for models that read unit vectors).
pub fn synthesize(
    clusters: &[Cluster<'_>],
    d: usize,
    n: usize,
    unit: bool,
    rng: &mut SeededRng,
) -> Result<Vec<f32>> {
    if clusters.is_empty() || n == 0 {
        return Ok(Vec::new());
    }
    for (i, c) in clusters.iter().enumerate() {
        sona_core::validate::check_vec("cluster centroid", c.centroid, d)?;
        if !(c.spread.is_finite() && c.spread >= 0.0) {
            return Err(SonaError::invalid(format!(
                "cluster {i}: spread must be ≥ 0"
            )));
        }
    }
    let weights: Vec<f64> = clusters
        .iter()
        .map(|c| f64::from(c.support.max(1)))
        .collect();
    let len = sona_core::validate::element_count("synthetic inputs", &[n, d])?;
    let mut out = sona_core::validate::try_zeros("synthetic inputs", len)?;
    for row in out.chunks_exact_mut(d) {
        let c = &clusters[rng.weighted_index(&weights)];
        rng.fill_normal(row, c.spread);
        sona_core::kernels::axpy(1.0, c.centroid, row);
        if unit {
            sona_core::kernels::normalize(row);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_sit_around_their_clusters_in_proportion() {
        let a = [1.0f32, 0.0, 0.0];
        let b = [0.0f32, 1.0, 0.0];
        let cl = [
            Cluster {
                centroid: &a,
                spread: 0.05,
                support: 3,
            },
            Cluster {
                centroid: &b,
                spread: 0.05,
                support: 1,
            },
        ];
        let x = synthesize(&cl, 3, 4000, true, &mut SeededRng::new(2)).unwrap();
        let near_a = x.chunks_exact(3).filter(|r| r[0] > 0.9).count();
        let near_b = x.chunks_exact(3).filter(|r| r[1] > 0.9).count();
        assert_eq!(near_a + near_b, 4000);
        assert!((near_a as f64 / 4000.0 - 0.75).abs() < 0.03, "{near_a}");
        for r in x.chunks_exact(3) {
            assert!((sona_core::kernels::norm_sq(r) - 1.0).abs() < 1e-4);
        }
        assert!(synthesize(&[], 3, 10, true, &mut SeededRng::new(0))
            .unwrap()
            .is_empty());
        let bad = [Cluster {
            centroid: &a[..2],
            spread: 0.1,
            support: 1,
        }];
        assert!(synthesize(&bad, 3, 1, true, &mut SeededRng::new(0)).is_err());
        let nan = [Cluster {
            centroid: &a,
            spread: f32::NAN,
            support: 1,
        }];
        assert!(synthesize(&nan, 3, 1, true, &mut SeededRng::new(0)).is_err());
    }
}
