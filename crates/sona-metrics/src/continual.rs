//! Continual-learning metrics over the accuracy matrix (design §8).
//!
//! `R[i][j]` is the accuracy on task `j` measured after training task `i` (both 0-based, `T` tasks).
//! With `L = T − 1` the last row:
//! `ACC = mean_j R[L][j]`, `BWT = mean_{j<L} (R[L][j] − R[j][j])`,
//! forgetting `f_j = max_{l<L} R[l][j] − R[L][j]` averaged over `j < L` (entries not measured, NaN,
//! are skipped in the max). Forgetting is negative when a task ends better than it ever was
//! (positive backward transfer); it is reported as is, not clamped.

use sona_core::{Result, SonaError};

/// A `T × T` accuracy matrix; entries not measured are NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyMatrix {
    t: usize,
    r: Vec<f64>,
}

impl AccuracyMatrix {
    /// An empty (all not-measured) matrix for `t ≥ 1` tasks.
    pub fn new(t: usize) -> Result<Self> {
        sona_core::validate::check_size("number of tasks", t, 1, 4096)?;
        Ok(AccuracyMatrix {
            t,
            r: vec![f64::NAN; t * t],
        })
    }

    /// From rows; each row has `T` entries, NaN where not measured. The diagonal and the last row
    /// must be measured and every measured entry finite.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Self> {
        let mut m = Self::new(rows.len())?;
        for (i, row) in rows.iter().enumerate() {
            if row.len() != m.t {
                return Err(SonaError::Dimension {
                    what: format!("accuracy matrix row {i}"),
                    expected: format!("{} entries", m.t),
                    got: format!("{} entries", row.len()),
                });
            }
            for (j, &v) in row.iter().enumerate() {
                if !v.is_nan() {
                    m.set(i, j, v)?;
                }
            }
        }
        m.check_complete()?;
        Ok(m)
    }

    /// Number of tasks.
    pub fn tasks(&self) -> usize {
        self.t
    }

    /// Records `R[i][j]` (finite).
    pub fn set(&mut self, i: usize, j: usize, value: f64) -> Result<()> {
        self.index(i, j)?;
        if !value.is_finite() {
            return Err(SonaError::invalid(format!(
                "R[{i}][{j}] must be finite, got {value}"
            )));
        }
        self.r[i * self.t + j] = value;
        Ok(())
    }

    /// `R[i][j]`, NaN when not measured.
    pub fn get(&self, i: usize, j: usize) -> Result<f64> {
        self.index(i, j)?;
        Ok(self.r[i * self.t + j])
    }

    fn index(&self, i: usize, j: usize) -> Result<()> {
        if i < self.t && j < self.t {
            Ok(())
        } else {
            Err(SonaError::invalid(format!(
                "R[{i}][{j}] is outside a {t}×{t} matrix",
                t = self.t
            )))
        }
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        self.r[i * self.t + j]
    }

    /// Fails unless the diagonal and the last row are measured (what ACC, BWT and forgetting read).
    pub fn check_complete(&self) -> Result<()> {
        let last = self.t - 1;
        for j in 0..self.t {
            for (i, what) in [(j, "diagonal"), (last, "last row")] {
                if self.at(i, j).is_nan() {
                    return Err(SonaError::invalid(format!(
                        "R[{i}][{j}] ({what}) is not measured"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Mean final accuracy over all tasks.
    pub fn acc(&self) -> Result<f64> {
        self.check_complete()?;
        let last = self.t - 1;
        Ok((0..self.t).map(|j| self.at(last, j)).sum::<f64>() / self.t as f64)
    }

    /// Backward transfer: mean change of each earlier task from just after it was learned to the
    /// end (negative = forgetting). 0 for a single task.
    pub fn bwt(&self) -> Result<f64> {
        self.check_complete()?;
        let last = self.t - 1;
        if last == 0 {
            return Ok(0.0);
        }
        let s: f64 = (0..last).map(|j| self.at(last, j) - self.at(j, j)).sum();
        Ok(s / last as f64)
    }

    /// Forgetting of each earlier task: best earlier accuracy minus final accuracy.
    pub fn forgetting_per_task(&self) -> Result<Vec<f64>> {
        self.check_complete()?;
        let last = self.t - 1;
        Ok((0..last)
            .map(|j| {
                let best = (0..last)
                    .map(|l| self.at(l, j))
                    .filter(|v| !v.is_nan())
                    .fold(f64::NEG_INFINITY, f64::max);
                best - self.at(last, j)
            })
            .collect())
    }

    /// Mean forgetting over the earlier tasks; 0 for a single task.
    pub fn forgetting(&self) -> Result<f64> {
        let f = self.forgetting_per_task()?;
        Ok(if f.is_empty() {
            0.0
        } else {
            f.iter().sum::<f64>() / f.len() as f64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: f64 = f64::NAN;

    #[test]
    fn hand_computed_matrix() {
        // After task 0: 0.9 on task 0. After task 1: 0.6 on 0, 0.8 on 1. After task 2: 0.5, 0.7, 0.95.
        let m =
            AccuracyMatrix::from_rows(&[vec![0.9, N, N], vec![0.6, 0.8, N], vec![0.5, 0.7, 0.95]])
                .unwrap();
        assert!((m.acc().unwrap() - (0.5 + 0.7 + 0.95) / 3.0).abs() < 1e-12);
        assert!((m.bwt().unwrap() - ((0.5 - 0.9) + (0.7 - 0.8)) / 2.0).abs() < 1e-12);
        let f = m.forgetting_per_task().unwrap();
        assert!((f[0] - 0.4).abs() < 1e-12 && (f[1] - 0.1).abs() < 1e-12);
        assert!((m.forgetting().unwrap() - 0.25).abs() < 1e-12);
    }

    #[test]
    fn positive_backward_transfer_gives_negative_forgetting() {
        let m = AccuracyMatrix::from_rows(&[vec![0.5, 0.1], vec![0.7, 0.9]]).unwrap();
        assert!((m.bwt().unwrap() - 0.2).abs() < 1e-12);
        assert!((m.forgetting().unwrap() + 0.2).abs() < 1e-12);
        // A measured zero-shot entry above the diagonal does not count as "learned".
        assert_eq!(m.get(0, 1).unwrap(), 0.1);
    }

    #[test]
    fn the_max_is_over_every_earlier_row() {
        let m =
            AccuracyMatrix::from_rows(&[vec![0.6, N, N], vec![0.9, 0.8, N], vec![0.7, 0.8, 0.9]])
                .unwrap();
        assert!((m.forgetting_per_task().unwrap()[0] - 0.2).abs() < 1e-12);
        assert!((m.bwt().unwrap() - (0.1 + 0.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(AccuracyMatrix::new(0).is_err());
        assert!(AccuracyMatrix::from_rows(&[vec![0.5, 0.1], vec![0.7]]).is_err());
        assert!(AccuracyMatrix::from_rows(&[vec![N, N], vec![0.7, 0.9]]).is_err());
        assert!(AccuracyMatrix::from_rows(&[vec![0.5, N], vec![0.7, N]]).is_err());
        let mut m = AccuracyMatrix::new(2).unwrap();
        assert!(m.set(0, 0, f64::INFINITY).is_err());
        assert!(m.set(2, 0, 0.5).is_err());
        assert!(m.acc().is_err());
        let one = AccuracyMatrix::from_rows(&[vec![0.8]]).unwrap();
        assert_eq!((one.bwt().unwrap(), one.forgetting().unwrap()), (0.0, 0.0));
    }
}
