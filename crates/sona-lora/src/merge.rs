//! Micro → base merge, exact up to truncation (design §3).
//!
//! ```text
//! A' = [A_b; A_µ]               ((r_b + r_µ) × d_in)
//! B' = [B_b, (s_µ/s_b) B_µ]     (d_out × (r_b + r_µ))      so  s_b B' A' = ΔW_b + ΔW_µ
//! B' = Q_B R_B,  A'ᵀ = Q_A R_A  (thin QR of the tall factors)
//! R_B R_Aᵀ = U Σ Vᵀ             (SVD of the small core)
//! B_new = Q_B U_r Σ_r^½,  A_new = Σ_r^½ V_rᵀ Q_Aᵀ   (top r_b triplets, split evenly between factors)
//! ```
//!
//! `s_b B_new A_new` is the best rank-`r_b` approximation of `ΔW_b + ΔW_µ` (Eckart–Young), and the
//! error is exactly `s_b √(Σ_{i>r_b} σ_i²)`, the discarded spectral mass reported here. Splitting `Σ`
//! evenly keeps both factors at the same scale, which keeps later gradient steps on the base balanced.
//! Cost `O((d_in + d_out)(r_b + r_µ)²)`; `ΔW` is never formed.

use sona_core::{Result, SonaError};

use crate::adapter::LoraWeights;
use crate::decomp::{jacobi_svd, HouseholderQr};

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    /// `‖(ΔW_b + ΔW_µ) − ΔW_merged‖_F`, the Frobenius norm of what truncation dropped.
    pub discarded: f32,
    /// Discarded share of the spectral energy, `Σ_{i>r_b} σ_i² / Σ σ_i²` (0 when everything is 0).
    pub discarded_fraction: f32,
    /// `‖ΔW_b + ΔW_µ‖_F` before truncation.
    pub total_norm: f32,
    /// Singular values of `ΔW_b + ΔW_µ` (already multiplied by `s_b`), descending.
    pub singular_values: Vec<f32>,
}

/// Writes into `out` (shape of `base`) the rank-`r_b` merge of `base` and `micro`.
pub fn merge(
    base: &LoraWeights,
    micro: &LoraWeights,
    out: &mut LoraWeights,
) -> Result<MergeReport> {
    if base.d_in != micro.d_in || base.d_out != micro.d_out {
        return Err(SonaError::Dimension {
            what: "merge".into(),
            expected: format!("a micro adapter of shape {}→{}", base.d_in, base.d_out),
            got: format!("{}→{}", micro.d_in, micro.d_out),
        });
    }
    if base.scale.is_nan() || base.scale <= 0.0 {
        return Err(SonaError::invalid("merge: the base scale must be > 0"));
    }
    let (di, dout, rb, rm) = (base.d_in, base.d_out, base.rank, micro.rank);
    let kk = rb + rm;
    let ratio = micro.scale as f64 / base.scale as f64;
    // Column-major tall factors: column j of B' is column j of B (row j of bt); of A'ᵀ, row j of A'.
    let mut bcat = Vec::with_capacity(dout * kk);
    bcat.extend(base.bt.iter().map(|&t| t as f64));
    bcat.extend(micro.bt.iter().map(|&t| t as f64 * ratio));
    let mut acat = Vec::with_capacity(di * kk);
    acat.extend(base.a.iter().map(|&t| t as f64));
    acat.extend(micro.a.iter().map(|&t| t as f64));
    let qr_b = HouseholderQr::new(bcat, dout, kk);
    let qr_a = HouseholderQr::new(acat, di, kk);
    let (r_b, pb, r_a, pa) = (&qr_b.r, qr_b.p, &qr_a.r, qr_a.p);
    // Core C = R_B R_Aᵀ  (pb × pa), column-major for the SVD.
    let mut core = vec![0.0; pb * pa];
    for j in 0..pa {
        for i in 0..pb {
            core[j * pb + i] = (0..kk).map(|t| r_b[i * kk + t] * r_a[j * kk + t]).sum();
        }
    }
    let (u, sigma, v) = jacobi_svd(&core, pb, pa);
    let sb = base.scale as f64;
    let energy: f64 = sigma.iter().map(|s| s * s).sum();
    let kept = rb.min(sigma.len());
    let dropped: f64 = sigma[kept..].iter().map(|s| s * s).sum();

    out.d_in = di;
    out.d_out = dout;
    out.rank = rb;
    out.scale = base.scale;
    // Small factors: column t of C_B is Σ_t^½ U_t, of C_A is Σ_t^½ V_t. A zero singular value keeps a
    // unit-norm A row (from Q_A V_t) and a zero B column, so the merged adapter still has non-zero
    // gradients in that direction while ΔW is unchanged.
    let mut c_b = vec![0.0; pb * rb];
    let mut c_a = vec![0.0; pa * rb];
    for t in 0..kept {
        let live = sigma[t] > 1e-12 * sigma[0].max(1e-300);
        let (a_scale, b_scale) = if live {
            (sigma[t].sqrt(), sigma[t].sqrt())
        } else {
            (1.0, 0.0)
        };
        for c in 0..pb {
            c_b[t * pb + c] = b_scale * u[t * pb + c];
        }
        for c in 0..pa {
            c_a[t * pa + c] = a_scale * v[t * pa + c];
        }
    }
    // Column t of Q_B C_B is column t of B_new (row t of Bᵀ); of Q_A C_A, row t of A_new.
    let b_new = qr_b.q_mul(&c_b, rb);
    let a_new = qr_a.q_mul(&c_a, rb);
    out.a.clear();
    out.a.extend(a_new.iter().map(|&t| t as f32));
    out.bt.clear();
    out.bt.extend(b_new.iter().map(|&t| t as f32));
    if !out.is_finite() {
        return Err(SonaError::Numerical(
            "merge produced non-finite weights".into(),
        ));
    }
    Ok(MergeReport {
        discarded: (sb * dropped.sqrt()) as f32,
        discarded_fraction: if energy > 0.0 {
            (dropped / energy) as f32
        } else {
            0.0
        },
        total_norm: (sb * energy.sqrt()) as f32,
        singular_values: sigma.iter().map(|s| (s * sb) as f32).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    fn random(d_in: usize, d_out: usize, r: usize, alpha: f32, seed: u64) -> LoraWeights {
        let mut rng = SeededRng::new(seed);
        let mut w = LoraWeights::init(d_in, d_out, r, alpha, &mut rng).unwrap();
        rng.fill_normal(&mut w.bt, 0.4);
        w
    }

    fn frob_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt() as f32
    }

    #[test]
    fn merged_delta_equals_sum_within_discarded_mass() {
        for &(di, dout, rb, rm) in &[(40, 30, 4, 2), (64, 64, 8, 2), (16, 24, 2, 1)] {
            let base = random(di, dout, rb, 8.0, 1);
            let micro = random(di, dout, rm, 1.0, 2);
            let mut sum = base.delta_w();
            for (s, m) in sum.iter_mut().zip(micro.delta_w()) {
                *s += m;
            }
            let mut out = base.clone();
            let rep = merge(&base, &micro, &mut out).unwrap();
            let err = frob_diff(&out.delta_w(), &sum);
            assert!(rep.discarded > 0.0);
            assert!(
                (err - rep.discarded).abs() <= 1e-3 * (1.0 + rep.total_norm),
                "error {err} vs reported discarded {}",
                rep.discarded
            );
            let total = sum.iter().map(|t| t * t).sum::<f32>().sqrt();
            assert!((rep.total_norm - total).abs() < 1e-3 * total);
        }
    }

    #[test]
    fn merge_is_exact_when_rank_fits() {
        // A micro adapter living inside the base's row and column spaces fits in r_b: nothing dropped.
        let mut base = random(32, 20, 4, 4.0, 3);
        for t in 2..4 {
            base.a[t * 32..(t + 1) * 32].fill(0.0);
            base.bt[t * 20..(t + 1) * 20].fill(0.0);
        }
        let micro = random(32, 20, 2, 2.0, 4);
        let mut sum = base.delta_w();
        for (s, m) in sum.iter_mut().zip(micro.delta_w()) {
            *s += m;
        }
        let mut out = base.clone();
        let rep = merge(&base, &micro, &mut out).unwrap();
        assert!(rep.discarded < 1e-4, "discarded {}", rep.discarded);
        assert!(frob_diff(&out.delta_w(), &sum) < 1e-4);
        // Zero merges stay finite and give unit A rows, zero B.
        let zb = LoraWeights::zeros(32, 20, 4, 1.0);
        let zm = LoraWeights::zeros(32, 20, 2, 1.0);
        let mut out = zb.clone();
        let rep = merge(&zb, &zm, &mut out).unwrap();
        assert_eq!(rep.discarded, 0.0);
        assert!(out.bt.iter().all(|&b| b == 0.0));
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let base = random(8, 8, 2, 1.0, 1);
        let micro = random(8, 6, 1, 1.0, 1);
        let mut out = base.clone();
        assert!(matches!(
            merge(&base, &micro, &mut out),
            Err(SonaError::Dimension { .. })
        ));
    }
}
