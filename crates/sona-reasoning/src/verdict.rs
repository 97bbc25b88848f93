//! Verdicts: does some tier serve a pattern better than the default tier?
//!
//! Each arm with data is compared with the default arm by a one-sided Welch t-test
//! (H₀: μ_arm ≤ μ_default), with Welch–Satterthwaite degrees of freedom; the p-values of the `T − 1`
//! comparisons of one pattern are Holm-adjusted (family-wise error ≤ α). A verdict is issued for the
//! best-mean arm among those significant after adjustment. Discrete choices (the tier) are chosen, never
//! averaged (design §5).
//!
//! The Student-t tail is [`sona_core::stats::student_t_sf`] (`statrs`).

use sona_core::stats::student_t_sf;
use sona_core::types::{ArmStats, Verdict};

/// One-sided Welch test of H₀: μ_a ≤ μ_b. Returns the p-value; `None` when either arm has fewer than
/// two observations (no variance estimate).
pub fn welch_greater(a: &ArmStats, b: &ArmStats) -> Option<f64> {
    if a.count < 2 || b.count < 2 {
        return None;
    }
    let (va, vb) = (a.variance() / a.count as f64, b.variance() / b.count as f64);
    let diff = a.mean - b.mean;
    let se2 = va + vb;
    if se2 <= 0.0 {
        // Both arms constant: the difference is certain.
        return Some(if diff > 0.0 { 0.0 } else { 1.0 });
    }
    let t = diff / se2.sqrt();
    let nu = se2 * se2
        / (va * va / (a.count - 1) as f64 + vb * vb / (b.count - 1) as f64).max(f64::MIN_POSITIVE);
    Some(student_t_sf(t, nu))
}

/// Holm's step-down adjustment: `p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))`, in input order.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut out = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// The verdict for one pattern's arms, if some arm significantly beats `default_tier` at level `alpha`.
pub fn verdict_for(
    pattern_id: u64,
    support: u32,
    arms: &[ArmStats],
    default_tier: usize,
    alpha: f64,
) -> Option<Verdict> {
    let base = arms.get(default_tier)?;
    let mut cands = Vec::new();
    let mut pvals = Vec::new();
    for (t, arm) in arms.iter().enumerate() {
        if t == default_tier {
            continue;
        }
        // An arm without data still counts in the family (it was a hypothesis we could have tested),
        // with p = 1, which keeps Holm conservative.
        let p = welch_greater(arm, base).unwrap_or(1.0);
        cands.push(t);
        pvals.push(p);
    }
    let adj = holm(&pvals);
    let best = cands
        .iter()
        .zip(&adj)
        .filter(|(_, &p)| p <= alpha)
        .max_by(|a, b| arms[*a.0].mean.total_cmp(&arms[*b.0].mean))?;
    let (t, &p) = best;
    Some(Verdict {
        pattern_id,
        recommended_tier: *t as u8,
        params: Vec::new(),
        confidence: (1.0 - p) as f32,
        p_value: p,
        support,
        improvement: (arms[*t].mean - base.mean) as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(xs: &[f64]) -> ArmStats {
        let mut a = ArmStats::default();
        for &x in xs {
            a.push(x);
        }
        a
    }

    #[test]
    fn welch_matches_reference() {
        // scipy.stats.ttest_ind(a, b, equal_var=False, alternative="greater")
        let a = arm(&[0.9, 0.8, 1.0, 0.7, 0.95, 0.85]);
        let b = arm(&[0.6, 0.7, 0.5, 0.65, 0.8]);
        let p = welch_greater(&a, &b).unwrap();
        assert!((p - 0.005_376_117_244_806_962).abs() < 1e-9, "{p}");
        assert!(welch_greater(&arm(&[1.0]), &b).is_none());
        assert_eq!(
            welch_greater(&arm(&[1.0, 1.0]), &arm(&[0.0, 0.0])),
            Some(0.0)
        );
    }

    #[test]
    fn holm_adjusts_step_down() {
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        let want = [0.03, 0.06, 0.06, 0.02];
        for (g, w) in adj.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{adj:?}");
        }
    }

    #[test]
    fn verdict_only_when_significant() {
        let good = arm(&[1.0, 0.9, 1.0, 0.95, 1.0, 0.9, 1.0, 0.95]);
        let bad = arm(&[0.1, 0.2, 0.0, 0.15, 0.1, 0.2, 0.05, 0.1]);
        let same = arm(&[0.1, 0.2, 0.0, 0.15, 0.1, 0.2, 0.05, 0.12]);
        let v = verdict_for(7, 16, &[bad, same, good, ArmStats::default()], 0, 0.05).unwrap();
        assert_eq!((v.pattern_id, v.recommended_tier, v.support), (7, 2, 16));
        assert!(v.p_value < 1e-6 && v.improvement > 0.8);
        assert!(verdict_for(7, 16, &[bad, same], 0, 0.05).is_none());
        assert!(
            verdict_for(7, 16, &[good, bad], 0, 0.05).is_none(),
            "worse than default"
        );
    }
}
