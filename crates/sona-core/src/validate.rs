//! Input checks shared by every public entry point.
//!
//! Validation happens before any state is touched, so a rejected call leaves state unchanged.

use crate::error::{Result, SonaError};

/// Fails with [`SonaError::Dimension`] unless `v.len() == expected`.
#[inline]
pub fn check_len(what: &str, v: &[f32], expected: usize) -> Result<()> {
    if v.len() == expected {
        Ok(())
    } else {
        Err(SonaError::len_mismatch(what, expected, v.len()))
    }
}

/// Fails with [`SonaError::NonFinite`] if any element is NaN or ±Inf.
#[inline]
pub fn check_finite(what: &str, v: &[f32]) -> Result<()> {
    if crate::kernels::all_finite(v) {
        return Ok(());
    }
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(index) => Err(SonaError::NonFinite {
            what: what.to_string(),
            index,
        }),
    }
}

/// Length and finiteness together: the usual check for a vector argument.
#[inline]
pub fn check_vec(what: &str, v: &[f32], expected: usize) -> Result<()> {
    check_len(what, v, expected)?;
    check_finite(what, v)
}

/// A row-major matrix of `rows × cols` stored in `m`.
#[inline]
pub fn check_matrix(what: &str, m: &[f32], rows: usize, cols: usize) -> Result<()> {
    if m.len() != rows * cols {
        return Err(SonaError::Dimension {
            what: what.to_string(),
            expected: format!("{rows}x{cols} ({} values)", rows * cols),
            got: format!("{} values", m.len()),
        });
    }
    check_finite(what, m)
}

/// A reward must be a finite number in `[0, 1]` (SPEC §2).
#[inline]
pub fn check_reward(r: f32) -> Result<()> {
    if r.is_finite() && (0.0..=1.0).contains(&r) {
        Ok(())
    } else {
        Err(SonaError::invalid(format!(
            "reward must be in [0, 1], got {r}"
        )))
    }
}

/// A scalar that must be finite and within `[lo, hi]`.
#[inline]
pub fn check_range(what: &str, x: f64, lo: f64, hi: f64) -> Result<()> {
    if x.is_finite() && x >= lo && x <= hi {
        Ok(())
    } else {
        Err(SonaError::Config(format!(
            "{what} must be in [{lo}, {hi}], got {x}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_vectors() {
        assert!(check_vec("x", &[1.0, 2.0], 2).is_ok());
        assert!(matches!(
            check_vec("x", &[1.0], 2),
            Err(SonaError::Dimension { .. })
        ));
        assert!(matches!(
            check_vec("x", &[1.0, f32::NAN], 2),
            Err(SonaError::NonFinite { index: 1, .. })
        ));
        assert!(check_matrix("m", &[0.0; 6], 2, 3).is_ok());
        assert!(check_matrix("m", &[0.0; 5], 2, 3).is_err());
    }

    #[test]
    fn rewards_must_be_in_unit_interval() {
        assert!(check_reward(0.0).is_ok());
        assert!(check_reward(1.0).is_ok());
        assert!(check_reward(1.01).is_err());
        assert!(check_reward(-0.1).is_err());
        assert!(check_reward(f32::NAN).is_err());
    }
}
