//! The distribution functions SONA's statistical tests need, from `statrs`: the Student-t tail
//! (Welch verdicts), and the normal and χ² quantiles (task-boundary threshold). Thin wrappers so
//! callers pass plain numbers and never see a panic or a constructor error: an argument outside
//! the domain gives `NaN`, which every caller's comparison (`p <= alpha`, `stat > threshold`)
//! treats as "not significant".

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

/// Upper tail `P(T > t)` of Student's t with `df > 0` degrees of freedom (`df = ∞` is the normal).
/// `NaN` for a `NaN` argument or `df ≤ 0`.
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() {
        return f64::NAN;
    }
    match StudentsT::new(0.0, 1.0, df) {
        Ok(d) => d.sf(t),
        Err(_) => f64::NAN,
    }
}

/// `x` with `P(χ²_k ≤ x) = p`, for real `k > 0` degrees of freedom and `p ∈ [0, 1]`; `NaN` outside.
pub fn chi2_quantile(p: f64, k: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    match ChiSquared::new(k) {
        Ok(d) => d.inverse_cdf(p),
        Err(_) => f64::NAN,
    }
}

/// `z` with `P(N(0, 1) ≤ z) = p` for `p ∈ [0, 1]` (`±∞` at the ends); `NaN` outside.
pub fn normal_quantile(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    Normal::standard().inverse_cdf(p)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        use statrs::function::{beta::beta_reg, gamma::ln_gamma};
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-10);
        assert!((beta_reg(2.0, 3.0, 0.4) - 0.5248).abs() < 1e-12);
    }

    #[test]
    fn quantiles_match_tables() {
        // scipy.stats.norm.isf / chi2.isf.
        assert!((-normal_quantile(0.025) - 1.959_964).abs() < 1e-5);
        assert!((-normal_quantile(1e-4) - 3.719_016).abs() < 1e-5);
        assert!((chi2_quantile(0.99, 100.0) - 135.807).abs() < 0.2);
        assert!((chi2_quantile(0.99, 100.0) - 135.806_723).abs() < 1e-5);
        assert!((chi2_quantile(0.9999, 7.5) - 30.860_512).abs() < 1e-5);
    }

    #[test]
    fn out_of_domain_is_nan_not_a_panic() {
        assert_eq!(student_t_sf(f64::INFINITY, 3.0), 0.0);
        assert_eq!(student_t_sf(f64::NEG_INFINITY, 3.0), 1.0);
        for v in [
            student_t_sf(f64::NAN, 3.0),
            student_t_sf(1.0, 0.0),
            student_t_sf(1.0, -2.0),
            student_t_sf(1.0, f64::NAN),
            chi2_quantile(1.5, 3.0),
            chi2_quantile(f64::NAN, 3.0),
            chi2_quantile(0.5, 0.0),
            chi2_quantile(0.5, f64::NAN),
            normal_quantile(-0.1),
            normal_quantile(f64::NAN),
        ] {
            assert!(v.is_nan());
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(chi2_quantile(0.0, 4.0), 0.0);
    }
}
