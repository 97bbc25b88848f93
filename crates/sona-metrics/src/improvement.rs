//! Improvement over time (design §8): regret per window of traffic and its relative reduction.
//!
//! A rate is `(r_prev − r_cur) / r_prev`: the fraction of the previous window's regret that is
//! gone. It is never compounded into a growing percentage of a bounded score.

use sona_core::{Result, SonaError};

/// Means of consecutive windows of `window` values; a last, shorter window is kept when it holds at
/// least half a window (so a tail of one value cannot swing the curve).
pub fn window_means(values: &[f64], window: usize) -> Result<Vec<f64>> {
    if window == 0 {
        return Err(SonaError::invalid("window must be ≥ 1"));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(SonaError::NonFinite {
            what: "values".into(),
            index: i,
        });
    }
    Ok(values
        .chunks(window)
        .filter(|c| 2 * c.len() >= window)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect())
}

/// Relative reduction of regret from `before` to `after`: `(before − after) / before`; 0 when
/// `before` is 0 (nothing left to reduce). Positive = better.
pub fn relative_reduction(before: f64, after: f64) -> f64 {
    if before.abs() < 1e-12 {
        0.0
    } else {
        (before - after) / before.abs()
    }
}

/// Relative reduction between each pair of consecutive windows (`len − 1` values).
pub fn improvement_rates(window_regrets: &[f64]) -> Vec<f64> {
    window_regrets
        .windows(2)
        .map(|w| relative_reduction(w[0], w[1]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_rates() {
        let v = [4.0, 4.0, 2.0, 2.0, 1.0, 1.0, 9.0];
        assert_eq!(window_means(&v, 2).unwrap(), vec![4.0, 2.0, 1.0, 9.0]);
        assert_eq!(window_means(&v, 4).unwrap(), vec![3.0, 11.0 / 3.0]);
        assert_eq!(window_means(&v[..5], 4).unwrap(), vec![3.0]);
        assert_eq!(
            improvement_rates(&[4.0, 2.0, 1.0, 2.0]),
            vec![0.5, 0.5, -1.0]
        );
        assert_eq!(relative_reduction(0.0, 1.0), 0.0);
        assert!(window_means(&v, 0).is_err());
        assert!(window_means(&[1.0, f64::NAN], 1).is_err());
    }
}
