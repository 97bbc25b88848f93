//! Verdicts: does some tier serve a pattern better than the default tier?
//!
//! Each arm with data is compared with the default arm by a one-sided Welch t-test
//! (H₀: μ_arm ≤ μ_default), with Welch–Satterthwaite degrees of freedom; the p-values of the `T − 1`
//! comparisons of one pattern are Holm-adjusted (family-wise error ≤ α). A verdict is issued for the
//! best-mean arm among those significant after adjustment. Discrete choices (the tier) are chosen, never
//! averaged (design §5).
//!
//! The Student-t tail comes from the regularized incomplete beta function:
//! `P(T > t) = ½ I_{ν/(ν+t²)}(ν/2, ½)` for `t ≥ 0`, evaluated with Lentz's continued fraction.

use sona_core::types::{ArmStats, Verdict};

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9; ~15 significant digits).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction of the incomplete beta (Numerical Recipes `betacf`, modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// Regularized incomplete beta `I_x(a, b)` for `a, b > 0`, `x ∈ [0, 1]`.
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Upper tail `P(T > t)` of Student's t with `nu > 0` degrees of freedom.
pub fn student_t_sf(t: f64, nu: f64) -> f64 {
    if t.is_nan() || nu.is_nan() || nu <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return if t > 0.0 { 0.0 } else { 1.0 };
    }
    let tail = 0.5 * inc_beta(nu / 2.0, 0.5, nu / (nu + t * t));
    if t >= 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

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
    fn t_tail_matches_tables() {
        // Reference values (scipy.stats.t.sf).
        let cases = [
            (2.0, 10.0, 0.036_694_017_385_370_16),
            (1.812_461_122_811_676, 10.0, 0.05),
            (0.0, 3.0, 0.5),
            (-1.0, 5.0, 0.818_391_266_175_438_6),
            (3.0, 1.0, 0.102_416_382_349_567_2),
            (2.5, 200.0, 0.006_611_586_320_850_391),
        ];
        for (t, nu, want) in cases {
            let got = student_t_sf(t, nu);
            assert!((got - want).abs() < 1e-9, "t={t} nu={nu}: {got} vs {want}");
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-10);
        assert!((inc_beta(2.0, 3.0, 0.4) - 0.5248).abs() < 1e-12);
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
