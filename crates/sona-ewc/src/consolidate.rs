//! The consolidated multi-task EWC++ quadratic.
//!
//! Each finished task `t` contributes `½ w_t Σ_i F_t,i (θ_i − θ*_t,i)²`. A sum of diagonal quadratics is
//! one diagonal quadratic plus a constant, so the whole history is kept in O(P):
//!
//! ```text
//! F̄  = Σ_t c_t F_t                   (c_t = w_t · decay^(tasks after t))
//! θ̄* = (Σ_t c_t F_t ⊙ θ*_t) / F̄
//! penalty(θ) = λ/2 · Σ_i F̄_i (θ_i − θ̄*_i)²      gradient: λ · F̄ ⊙ (θ − θ̄*)
//! ```
//!
//! λ multiplies once, at use (design §4); per-task weights and decay live inside `F̄`. Folding a task
//! updates `F̄` and `θ̄*` in place, so memory never grows with the number of tasks. Where `F̄_i = 0` no
//! task constrains parameter `i` and `θ̄*_i` is simply the newest anchor (it has no effect).
//!
//! No non-finite value is ever stored: a fold whose `F̄` or `θ̄*` would overflow is refused with
//! `Numerical` before anything changes, and loaded files are validated field by field.

use std::path::Path;

use sona_core::validate::{check_finite, check_len, check_range, check_vec, try_zeros};
use sona_core::{Checkpoint, Result, SonaError};

use crate::diag;
use crate::fisher::{check_gamma, OnlineFisher};
use crate::gpm::GradientProjection;

const KIND: &str = "ewc";
const VERSION: u32 = 1;

/// Hyper-parameters of [`EwcPlusPlus`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EwcConfig {
    /// Penalty strength λ, applied once in [`EwcPlusPlus::penalty`] and [`EwcPlusPlus::apply`].
    pub lambda: f32,
    /// Bounds that every λ (initial, set, adapted, loaded) must respect.
    pub lambda_min: f32,
    pub lambda_max: f32,
    /// EMA decay of the online Fisher per sample.
    pub gamma: f32,
    /// Smallest Fisher value a task contributes (see [`OnlineFisher`]).
    pub floor: f32,
    /// Factor in `(0, 1]` applied to all previous tasks each time a new one is folded in.
    pub decay: f32,
}

impl Default for EwcConfig {
    fn default() -> Self {
        EwcConfig {
            lambda: 1.0,
            lambda_min: 0.0,
            lambda_max: 1e9,
            gamma: 0.999,
            floor: 0.0,
            decay: 1.0,
        }
    }
}

impl EwcConfig {
    fn validate(&self) -> Result<()> {
        check_range("lambda_min", self.lambda_min as f64, 0.0, f32::MAX as f64)?;
        check_range(
            "lambda_max",
            self.lambda_max as f64,
            self.lambda_min as f64,
            f32::MAX as f64,
        )?;
        check_lambda(self.lambda, self.lambda_min, self.lambda_max)?;
        check_gamma(self.gamma)?;
        check_range("floor", self.floor as f64, 0.0, f32::MAX as f64)?;
        if !(self.decay.is_finite() && self.decay > 0.0 && self.decay <= 1.0) {
            return Err(SonaError::Config(format!(
                "decay must be in (0, 1], got {}",
                self.decay
            )));
        }
        Ok(())
    }
}

fn check_lambda(lambda: f32, lo: f32, hi: f32) -> Result<()> {
    check_range("lambda", lambda as f64, lo as f64, hi as f64)
}

/// EWC++ over `P` parameters: an online Fisher for the current task and the consolidated quadratic
/// of every finished task.
#[derive(Debug, Clone, PartialEq)]
pub struct EwcPlusPlus {
    cfg: EwcConfig,
    fbar: Vec<f32>,
    theta_bar: Vec<f32>,
    tasks: u64,
    online: OnlineFisher,
}

impl EwcPlusPlus {
    pub fn new(param_count: usize, cfg: EwcConfig) -> Result<Self> {
        cfg.validate()?;
        // Bounds the size (a `Config` error) before the two buffers below are allocated.
        let online = OnlineFisher::new(param_count, cfg.gamma, cfg.floor)?;
        Ok(EwcPlusPlus {
            cfg,
            fbar: try_zeros("param_count", param_count)?,
            theta_bar: try_zeros("param_count", param_count)?,
            tasks: 0,
            online,
        })
    }

    pub fn param_count(&self) -> usize {
        self.fbar.len()
    }

    pub fn config(&self) -> EwcConfig {
        self.cfg
    }

    pub fn lambda(&self) -> f32 {
        self.cfg.lambda
    }

    /// Sets λ; values outside `[lambda_min, lambda_max]` are rejected with `Config`.
    pub fn set_lambda(&mut self, lambda: f32) -> Result<()> {
        check_lambda(lambda, self.cfg.lambda_min, self.cfg.lambda_max)?;
        self.cfg.lambda = lambda;
        Ok(())
    }

    /// Finished tasks folded into the quadratic.
    pub fn task_count(&self) -> u64 {
        self.tasks
    }

    /// The consolidated Fisher `F̄` (without λ).
    pub fn fisher(&self) -> &[f32] {
        &self.fbar
    }

    /// The consolidated anchor `θ̄*`.
    pub fn theta_star(&self) -> &[f32] {
        &self.theta_bar
    }

    /// The online Fisher of the current task.
    pub fn online(&self) -> &OnlineFisher {
        &self.online
    }

    /// Folds one per-sample gradient of the current task into the online Fisher.
    pub fn update_fisher(&mut self, grad: &[f32]) -> Result<()> {
        self.online.update(grad)
    }

    /// Folds `rows` per-sample gradients (`rows × P`, row-major) into the online Fisher.
    pub fn update_fisher_batch(&mut self, grads: &[f32], rows: usize) -> Result<()> {
        self.online.update_batch(grads, rows)
    }

    /// Ends a task: folds `½ weight · Σ F (θ − θ*)²` into the consolidated quadratic, decaying the
    /// previous tasks by `decay` first. `fisher` defaults to the online estimate. Either way the online
    /// estimate is then reset, so the next task starts its own. Everything is validated before
    /// anything changes.
    pub fn complete_task(
        &mut self,
        theta_star: &[f32],
        fisher: Option<&[f32]>,
        weight: f32,
    ) -> Result<()> {
        let p = self.fbar.len();
        check_vec("theta_star", theta_star, p)?;
        if !(weight.is_finite() && weight > 0.0) {
            return Err(SonaError::invalid(format!(
                "weight must be finite and > 0, got {weight}"
            )));
        }
        let owned;
        let f: &[f32] = match fisher {
            Some(f) => {
                check_vec("fisher", f, p)?;
                if let Some(i) = f.iter().position(|&x| x < 0.0) {
                    return Err(SonaError::invalid(format!(
                        "fisher must be non-negative (index {i} is {})",
                        f[i]
                    )));
                }
                f
            }
            None => {
                owned = self.online.estimate()?;
                &owned
            }
        };
        // Compute into temporaries so an overflow to Inf is refused with state unchanged.
        let decay = if self.tasks == 0 { 0.0 } else { self.cfg.decay };
        let mut new_f = try_zeros("fisher", p)?;
        let mut new_t = try_zeros("theta_star", p)?;
        for i in 0..p {
            let old = decay * self.fbar[i];
            let add = weight * f[i].max(self.cfg.floor);
            let total = old + add;
            new_f[i] = total;
            new_t[i] = if old > 0.0 {
                // (old·θ̄ + add·θ*) / total, written as a convex step so it never leaves [θ̄, θ*].
                self.theta_bar[i] + (add / total) * (theta_star[i] - self.theta_bar[i])
            } else {
                // No earlier task constrains i (or this is the first task): the new anchor.
                theta_star[i]
            };
        }
        check_finite("consolidated fisher", &new_f)
            .map_err(|_| SonaError::Numerical("consolidated Fisher overflowed".into()))?;
        // θ* − θ̄ overflows when the anchors sit near ±f32::MAX on opposite sides.
        check_finite("consolidated anchor", &new_t).map_err(|_| {
            SonaError::Numerical("consolidated anchor θ̄* overflowed (θ* − θ̄* is beyond f32)".into())
        })?;
        self.fbar = new_f;
        self.theta_bar = new_t;
        self.tasks = self.tasks.saturating_add(1);
        self.online.reset();
        Ok(())
    }

    fn check_theta(&self, theta: &[f32]) -> Result<()> {
        sona_core::validate::check_vec("theta", theta, self.fbar.len())
    }

    /// `λ/2 · Σ F̄ (θ − θ̄*)²` (0 before the first task).
    pub fn penalty(&self, theta: &[f32]) -> Result<f64> {
        check_len("theta", theta, self.fbar.len())?;
        if self.tasks == 0 {
            self.check_theta(theta)?;
            return Ok(0.0);
        }
        // One fused pass; a non-finite θ makes the sum non-finite, so it is only located on failure.
        let p = 0.5
            * self.cfg.lambda as f64
            * diag::weighted_sq_dist(&self.fbar, theta, &self.theta_bar);
        if !p.is_finite() {
            check_finite("theta", theta)?;
            return Err(SonaError::Numerical("penalty overflowed".into()));
        }
        Ok(p)
    }

    /// `grad ← grad + λ F̄ ⊙ (θ − θ̄*)`. Lengths and finiteness of both are checked first; if the
    /// result overflows, `Numerical` is returned and `grad` holds unspecified values.
    pub fn apply(&self, theta: &[f32], grad: &mut [f32]) -> Result<()> {
        self.check_theta(theta)?;
        sona_core::validate::check_vec("grad", grad, self.fbar.len())?;
        if self.tasks > 0 {
            diag::add_weighted_diff(self.cfg.lambda, &self.fbar, theta, &self.theta_bar, grad);
            if !sona_core::kernels::all_finite(grad) {
                return Err(SonaError::Numerical("EWC gradient overflowed".into()));
            }
        }
        Ok(())
    }

    /// `out ← grad + λ F̄ ⊙ (θ − θ̄*)` in a single fused pass (inputs untouched). Finiteness is checked
    /// on the output, which is non-finite exactly when `θ` or `grad` is (or on overflow); the error
    /// then names the offending input. On error `out` holds unspecified values.
    pub fn apply_into(&self, theta: &[f32], grad: &[f32], out: &mut [f32]) -> Result<()> {
        let p = self.fbar.len();
        check_len("theta", theta, p)?;
        check_len("grad", grad, p)?;
        check_len("out", out, p)?;
        let ok = if self.tasks > 0 {
            diag::add_weighted_diff_into(
                self.cfg.lambda,
                &self.fbar,
                theta,
                &self.theta_bar,
                grad,
                out,
            )
        } else {
            out.copy_from_slice(grad);
            sona_core::kernels::all_finite(theta) && sona_core::kernels::all_finite(grad)
        };
        if !ok {
            check_finite("theta", theta)?;
            check_finite("grad", grad)?;
            return Err(SonaError::Numerical("EWC gradient overflowed".into()));
        }
        Ok(())
    }

    /// GPM then EWC: `grad ← (grad − V Vᵀ grad) + λ F̄ ⊙ (θ − θ̄*)`. Only the task gradient is projected,
    /// so the EWC pull toward θ̄* is never cancelled by the projection.
    pub fn apply_projected(
        &self,
        theta: &[f32],
        grad: &mut [f32],
        projection: &GradientProjection,
    ) -> Result<()> {
        self.check_theta(theta)?;
        sona_core::validate::check_vec("grad", grad, self.fbar.len())?;
        if projection.param_count() != self.fbar.len() {
            return Err(SonaError::len_mismatch(
                "projection param_count",
                self.fbar.len(),
                projection.param_count(),
            ));
        }
        projection.project(grad)?;
        self.apply(theta, grad)
    }

    /// The whole state (configuration, quadratic, online Fisher) as a checkpoint.
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let p = self.fbar.len();
        let mut ck = Checkpoint::new(KIND, VERSION);
        ck.set_meta("param_count", &p)?;
        ck.set_meta("lambda", &self.cfg.lambda)?;
        ck.set_meta("lambda_min", &self.cfg.lambda_min)?;
        ck.set_meta("lambda_max", &self.cfg.lambda_max)?;
        ck.set_meta("gamma", &self.cfg.gamma)?;
        ck.set_meta("floor", &self.cfg.floor)?;
        ck.set_meta("decay", &self.cfg.decay)?;
        ck.put_f32("fisher", &[p], &self.fbar);
        ck.put_f32("theta_star", &[p], &self.theta_bar);
        ck.put_f32("online_raw", &[p], self.online.raw());
        ck.put_u64("counts", &[self.tasks, self.online.samples()]);
        Ok(ck)
    }

    /// Rebuilds from a checkpoint; any inconsistency is a `Checkpoint` error. Every field is
    /// validated: the configuration ranges (as in [`EwcPlusPlus::new`]), tensor shapes against
    /// `param_count`, finite and non-negative Fishers, finite anchors, an all-zero `F̄` when no task
    /// was folded, and the online Fisher's own invariants.
    pub fn from_checkpoint(ck: &Checkpoint) -> Result<Self> {
        let bad = |e: SonaError| match e {
            SonaError::Checkpoint(_) => e,
            other => SonaError::checkpoint(format!("invalid EWC state: {other}")),
        };
        let p: usize = ck.meta("param_count")?;
        let cfg = EwcConfig {
            lambda: ck.meta("lambda")?,
            lambda_min: ck.meta("lambda_min")?,
            lambda_max: ck.meta("lambda_max")?,
            gamma: ck.meta("gamma")?,
            floor: ck.meta("floor")?,
            decay: ck.meta("decay")?,
        };
        cfg.validate().map_err(bad)?;
        sona_core::validate::check_size("param_count", p, 1, sona_core::validate::MAX_ELEMENTS)
            .map_err(bad)?;
        // Tensors next: their sizes are bounded by the file, so a forged `param_count` is caught
        // before anything of that size is allocated.
        let fbar = ck.get_f32_shaped("fisher", &[p])?;
        let theta_bar = ck.get_f32_shaped("theta_star", &[p])?;
        let raw = ck.get_f32_shaped("online_raw", &[p])?;
        let counts = ck.get_u64("counts")?;
        if counts.len() != 2 {
            return Err(SonaError::checkpoint("counts must hold 2 values"));
        }
        let (tasks, samples) = (counts[0], counts[1]);
        check_finite("fisher", &fbar).map_err(bad)?;
        check_finite("theta_star", &theta_bar).map_err(bad)?;
        if fbar.iter().any(|&x| x < 0.0) {
            return Err(SonaError::checkpoint("fisher has negative entries"));
        }
        if tasks == 0 && fbar.iter().any(|&x| x != 0.0) {
            return Err(SonaError::checkpoint(
                "fisher has values but no task was completed",
            ));
        }
        let online = OnlineFisher::from_parts(cfg.gamma, cfg.floor, raw, samples).map_err(bad)?;
        Ok(EwcPlusPlus {
            cfg,
            fbar,
            theta_bar,
            tasks,
            online,
        })
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.to_checkpoint()?.save(path)
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::load(path, KIND, VERSION)?)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.to_checkpoint()?.to_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::from_bytes(bytes, KIND, VERSION)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    fn randv(rng: &mut SeededRng, n: usize, s: f32) -> Vec<f32> {
        let mut v = vec![0.0; n];
        rng.fill_normal(&mut v, s);
        v
    }

    fn per_task(fs: &[Vec<f32>], ts: &[Vec<f32>], ws: &[f32], decay: f32, theta: &[f32]) -> f64 {
        let n = fs.len();
        let mut total = 0.0;
        for t in 0..n {
            let c = ws[t] as f64 * (decay as f64).powi((n - 1 - t) as i32);
            for i in 0..theta.len() {
                let d = (theta[i] - ts[t][i]) as f64;
                total += 0.5 * c * fs[t][i] as f64 * d * d;
            }
        }
        total
    }

    #[test]
    fn consolidated_penalty_is_sum_of_task_penalties_plus_constant() {
        let p = 300;
        let mut rng = SeededRng::new(11);
        let cfg = EwcConfig {
            lambda: 1.0,
            decay: 0.8,
            ..EwcConfig::default()
        };
        let mut ewc = EwcPlusPlus::new(p, cfg).unwrap();
        let (mut fs, mut ts, ws) = (vec![], vec![], vec![1.0, 0.5, 2.0, 1.5]);
        for &w in &ws {
            let f: Vec<f32> = randv(&mut rng, p, 1.0).iter().map(|x| x * x).collect();
            let t = randv(&mut rng, p, 1.0);
            ewc.complete_task(&t, Some(&f), w).unwrap();
            fs.push(f);
            ts.push(t);
        }
        assert_eq!(ewc.task_count(), 4);
        // penalty(θ) − Σ_t penalty_t(θ) must be the same constant for every θ.
        let mut diffs = vec![];
        for _ in 0..5 {
            let theta = randv(&mut rng, p, 2.0);
            let sum = per_task(&fs, &ts, &ws, 0.8, &theta);
            diffs.push(ewc.penalty(&theta).unwrap() - sum);
        }
        for d in &diffs {
            assert!(
                (d - diffs[0]).abs() < 1e-3 * (1.0 + diffs[0].abs()),
                "{diffs:?}"
            );
        }
        // The gradient of the consolidated quadratic equals the sum of per-task gradients exactly.
        let theta = randv(&mut rng, p, 1.0);
        let mut g = vec![0.0; p];
        ewc.apply(&theta, &mut g).unwrap();
        for i in 0..p {
            let want: f64 = (0..4)
                .map(|t| {
                    ws[t] as f64
                        * 0.8f64.powi(3 - t as i32)
                        * fs[t][i] as f64
                        * (theta[i] - ts[t][i]) as f64
                })
                .sum();
            assert!((g[i] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
        }
    }

    #[test]
    fn lambda_is_applied_exactly_once() {
        let mut ewc = EwcPlusPlus::new(2, EwcConfig::default()).unwrap();
        ewc.complete_task(&[1.0, 0.0], Some(&[2.0, 4.0]), 1.0)
            .unwrap();
        let theta = [3.0, 1.0];
        // ½ (2·2² + 4·1²) = 6 at λ = 1.
        assert!((ewc.penalty(&theta).unwrap() - 6.0).abs() < 1e-9);
        ewc.set_lambda(10.0).unwrap();
        assert!((ewc.penalty(&theta).unwrap() - 60.0).abs() < 1e-6);
        let mut g = vec![1.0, 1.0];
        ewc.apply(&theta, &mut g).unwrap();
        assert_eq!(g, vec![1.0 + 10.0 * 2.0 * 2.0, 1.0 + 10.0 * 4.0]);
        // The stored Fisher does not contain λ.
        assert_eq!(ewc.fisher(), &[2.0, 4.0]);
    }

    #[test]
    fn default_fisher_is_the_online_estimate_then_reset() {
        let mut ewc = EwcPlusPlus::new(3, EwcConfig::default()).unwrap();
        assert!(matches!(
            ewc.complete_task(&[0.0; 3], None, 1.0),
            Err(SonaError::InvalidInput(_))
        ));
        ewc.update_fisher(&[1.0, 2.0, 0.0]).unwrap();
        ewc.update_fisher_batch(&[1.0, 2.0, 0.0, 1.0, 2.0, 0.0], 2)
            .unwrap();
        ewc.complete_task(&[0.5, 0.5, 0.5], None, 1.0).unwrap();
        for (a, b) in ewc.fisher().iter().zip([1.0, 4.0, 0.0]) {
            assert!((a - b).abs() < 1e-4);
        }
        assert_eq!(ewc.online().samples(), 0);
        assert_eq!(ewc.task_count(), 1);
    }

    #[test]
    fn protects_where_fisher_is_large() {
        // Gradient descent on a new loss ½‖θ − b‖² plus the penalty: the important coordinate stays
        // near its old value, the unimportant one moves to the new target.
        let mut ewc = EwcPlusPlus::new(
            2,
            EwcConfig {
                lambda: 100.0,
                ..Default::default()
            },
        )
        .unwrap();
        ewc.complete_task(&[1.0, 1.0], Some(&[1.0, 1e-4]), 1.0)
            .unwrap();
        let mut theta = vec![1.0f32, 1.0];
        for _ in 0..2000 {
            let mut g = vec![theta[0] + 1.0, theta[1] + 1.0];
            ewc.apply(&theta, &mut g).unwrap();
            for i in 0..2 {
                theta[i] -= 0.005 * g[i];
            }
        }
        assert!((theta[0] - 99.0 / 101.0).abs() < 1e-3, "{theta:?}");
        assert!(theta[1] < -0.95, "{theta:?}");
    }

    #[test]
    fn bad_input_is_rejected_and_state_unchanged() {
        let mut ewc = EwcPlusPlus::new(3, EwcConfig::default()).unwrap();
        ewc.complete_task(&[1.0; 3], Some(&[1.0; 3]), 1.0).unwrap();
        let before = ewc.clone();
        let mut g = vec![0.0; 3];
        assert!(matches!(
            ewc.penalty(&[1.0; 2]),
            Err(SonaError::Dimension { .. })
        ));
        assert!(matches!(
            ewc.apply(&[1.0; 4], &mut g),
            Err(SonaError::Dimension { .. })
        ));
        assert!(matches!(
            ewc.apply(&[1.0; 3], &mut [0.0; 2]),
            Err(SonaError::Dimension { .. })
        ));
        assert!(matches!(
            ewc.apply(&[1.0, f32::NAN, 1.0], &mut g),
            Err(SonaError::NonFinite { .. })
        ));
        let mut out = vec![0.0; 3];
        assert!(matches!(
            ewc.apply_into(&[1.0, f32::INFINITY, 1.0], &[0.0; 3], &mut out),
            Err(SonaError::NonFinite { .. })
        ));
        assert!(matches!(
            ewc.apply_into(&[1.0; 3], &[0.0, 0.0, f32::NAN], &mut out),
            Err(SonaError::NonFinite { .. })
        ));
        assert!(matches!(
            ewc.apply_into(&[1.0; 3], &[0.0; 2], &mut out),
            Err(SonaError::Dimension { .. })
        ));
        assert!(matches!(
            ewc.penalty(&[f32::NAN, 0.0, 0.0]),
            Err(SonaError::NonFinite { .. })
        ));
        ewc.apply_into(&[2.0; 3], &[1.0; 3], &mut out).unwrap();
        assert_eq!(out, vec![2.0; 3]);
        assert!(ewc.complete_task(&[1.0; 2], None, 1.0).is_err());
        assert!(ewc.complete_task(&[1.0; 3], Some(&[1.0; 2]), 1.0).is_err());
        assert!(ewc.complete_task(&[1.0; 3], Some(&[-1.0; 3]), 1.0).is_err());
        assert!(ewc.complete_task(&[1.0; 3], Some(&[1.0; 3]), 0.0).is_err());
        assert!(ewc
            .complete_task(&[1.0; 3], Some(&[1.0; 3]), f32::NAN)
            .is_err());
        assert!(ewc.update_fisher(&[f32::INFINITY, 0.0, 0.0]).is_err());
        let bounded = EwcConfig {
            lambda: 1.0,
            lambda_min: 0.5,
            lambda_max: 2.0,
            ..Default::default()
        };
        let mut b = EwcPlusPlus::new(3, bounded).unwrap();
        assert!(matches!(b.set_lambda(3.0), Err(SonaError::Config(_))));
        assert!(matches!(b.set_lambda(0.1), Err(SonaError::Config(_))));
        assert!(matches!(b.set_lambda(f32::NAN), Err(SonaError::Config(_))));
        assert_eq!(b.lambda(), 1.0);
        assert!(EwcPlusPlus::new(
            3,
            EwcConfig {
                lambda: 3.0,
                ..bounded
            }
        )
        .is_err());
        assert!(EwcPlusPlus::new(
            3,
            EwcConfig {
                lambda_min: 3.0,
                ..bounded
            }
        )
        .is_err());
        assert!(EwcPlusPlus::new(
            3,
            EwcConfig {
                decay: 0.0,
                ..bounded
            }
        )
        .is_err());
        assert!(EwcPlusPlus::new(
            3,
            EwcConfig {
                decay: 1.5,
                ..bounded
            }
        )
        .is_err());
        assert_eq!(ewc, before);
    }

    #[test]
    fn checkpoint_round_trip_and_corruption() {
        let mut rng = SeededRng::new(5);
        let mut ewc = EwcPlusPlus::new(
            50,
            EwcConfig {
                lambda: 3.0,
                decay: 0.9,
                ..Default::default()
            },
        )
        .unwrap();
        let f: Vec<f32> = randv(&mut rng, 50, 1.0).iter().map(|x| x * x).collect();
        ewc.complete_task(&randv(&mut rng, 50, 1.0), Some(&f), 1.0)
            .unwrap();
        ewc.update_fisher(&randv(&mut rng, 50, 1.0)).unwrap();
        let bytes = ewc.to_bytes().unwrap();
        let back = EwcPlusPlus::from_bytes(&bytes).unwrap();
        assert_eq!(back.fisher(), ewc.fisher());
        assert_eq!(back.theta_star(), ewc.theta_star());
        assert_eq!(back.task_count(), 1);
        assert_eq!(back.online().samples(), 1);
        assert_eq!(
            back.online().estimate().unwrap(),
            ewc.online().estimate().unwrap()
        );
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(matches!(
                EwcPlusPlus::from_bytes(&b),
                Err(SonaError::Checkpoint(_))
            ));
        }
        // A well-formed file whose content is invalid (λ out of its bounds) is a Checkpoint error too.
        let mut ck = ewc.to_checkpoint().unwrap();
        ck.set_meta("lambda", &1e12f32).unwrap();
        assert!(matches!(
            EwcPlusPlus::from_checkpoint(&ck),
            Err(SonaError::Checkpoint(_))
        ));
        let mut ck = ewc.to_checkpoint().unwrap();
        ck.put_f32("fisher", &[50], &[-1.0; 50]);
        assert!(matches!(
            EwcPlusPlus::from_checkpoint(&ck),
            Err(SonaError::Checkpoint(_))
        ));
        let mut ck = ewc.to_checkpoint().unwrap();
        ck.put_f32("fisher", &[49], &[1.0; 49]);
        assert!(matches!(
            EwcPlusPlus::from_checkpoint(&ck),
            Err(SonaError::Checkpoint(_))
        ));
    }
}
