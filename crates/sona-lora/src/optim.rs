//! The LoRA optimizer step: heavy-ball momentum on the exact gradient, clipped, then a slow decay of
//! `B` toward 0 and a Frobenius bound on `ΔW` (design §3).
//!
//! The step reads the current snapshot and writes the next one into a separate buffer, so readers keep
//! using the old weights until the new ones are published, and a step that would produce non-finite
//! values is simply dropped (state unchanged). The gradient is never formed as a matrix: with
//! `u = A x`, `v = Bᵀ e`, row `k` of `∇A` is `s v_k x` and row `k` of `∇Bᵀ` is `s u_k e`, so the momentum
//! and weight updates are fused `O(r (d_in + d_out))` passes.

use sona_core::{validate, Result, SonaError};

use crate::adapter::{LoraWeights, MAX_RANK, MAX_WEIGHT};
use crate::fused::momentum_row;

/// Step settings. The step size (`lr`) is separate from the forward scale `s = α/r` (design §3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimConfig {
    /// Step size.
    pub lr: f32,
    /// Heavy-ball momentum coefficient in `[0, 1)`.
    pub momentum: f32,
    /// Largest Frobenius norm of the joint gradient `(∇A, ∇B)`; larger gradients are scaled down.
    /// `f32::INFINITY` disables clipping.
    pub clip: f32,
    /// Frobenius bound `τ` on `ΔW = s B A`; `f32::INFINITY` disables it.
    pub max_norm: f32,
    /// Fraction of `B` removed per step (`B ← (1 − decay) B`), a slow pull of `ΔW` toward 0.
    pub decay: f32,
}

impl OptimConfig {
    /// Checks the ranges of every field.
    pub fn check(&self) -> Result<()> {
        validate::check_range("lr", self.lr as f64, 0.0, 1e3)?;
        validate::check_range("momentum", self.momentum as f64, 0.0, 0.999_999)?;
        validate::check_range("decay", self.decay as f64, 0.0, 0.5)?;
        for (what, v) in [("clip", self.clip), ("max_norm", self.max_norm)] {
            if v.is_nan() || v <= 0.0 {
                return Err(SonaError::Config(format!(
                    "{what} must be > 0 (inf disables it), got {v}"
                )));
            }
        }
        Ok(())
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Frobenius norm of the gradient before clipping.
    pub grad_norm: f32,
    /// Whether clipping scaled the gradient down.
    pub clipped: bool,
    /// Whether the Frobenius bound scaled `B` down.
    pub bounded: bool,
    /// `‖ΔW‖_F` after the step (NaN when no bound is set: it is then not computed).
    pub delta_norm: f32,
}

/// Momentum buffers, double-buffered so a rejected step leaves them unchanged.
#[derive(Debug, Clone)]
pub struct Optimizer {
    pub config: OptimConfig,
    mom_a: Vec<f32>,
    mom_bt: Vec<f32>,
    next_a: Vec<f32>,
    next_bt: Vec<f32>,
}

impl Optimizer {
    /// Zero momentum for an adapter of this (already checked) shape, allocated fallibly.
    pub fn new(config: OptimConfig, d_in: usize, d_out: usize, rank: usize) -> Result<Self> {
        let z = |n: usize| validate::try_zeros("optimizer momentum", n);
        Ok(Optimizer {
            config,
            mom_a: z(rank * d_in)?,
            mom_bt: z(rank * d_out)?,
            next_a: z(rank * d_in)?,
            next_bt: z(rank * d_out)?,
        })
    }

    /// Forgets the momentum (after a merge or a reload changes the basis of the factors).
    pub fn reset(&mut self) {
        self.mom_a.fill(0.0);
        self.mom_bt.fill(0.0);
    }

    /// The momentum buffers (`A`-shaped, `Bᵀ`-shaped), for checkpoints.
    pub fn momentum(&self) -> (&[f32], &[f32]) {
        (&self.mom_a, &self.mom_bt)
    }

    /// Restores momentum buffers of the right sizes.
    pub fn set_momentum(&mut self, a: &[f32], bt: &[f32]) -> Result<()> {
        validate::check_vec("momentum A", a, self.mom_a.len())?;
        validate::check_vec("momentum B", bt, self.mom_bt.len())?;
        self.mom_a.copy_from_slice(a);
        self.mom_bt.copy_from_slice(bt);
        Ok(())
    }

    /// One step on the loss whose output error at `x` is `e`, reading `cur` and writing `next`
    /// (same shape; its previous contents are ignored). Fails with [`SonaError::Numerical`] — and
    /// leaves the momentum unchanged — if the step would produce a non-finite value. Never allocates.
    pub fn step(
        &mut self,
        cur: &LoraWeights,
        next: &mut LoraWeights,
        x: &[f32],
        e: &[f32],
    ) -> Result<StepReport> {
        let norms = (norm_sq_f64(x), norm_sq_f64(e));
        self.step_with_norms(cur, next, x, e, norms)
    }

    /// [`Optimizer::step`] when the caller already knows `(‖x‖², ‖e‖²)` (the reward path does: the
    /// baseline needs `‖x‖²` and the noise norm is known when it is drawn), saving two passes.
    pub fn step_with_norms(
        &mut self,
        cur: &LoraWeights,
        next: &mut LoraWeights,
        x: &[f32],
        e: &[f32],
        (x_sq, e_sq): (f64, f64),
    ) -> Result<StepReport> {
        let (r, s) = (cur.rank, cur.scale);
        let mut u = [0.0f32; MAX_RANK];
        let mut v = [0.0f32; MAX_RANK];
        let (u, v) = (&mut u[..r], &mut v[..r]);
        cur.project(x, u);
        cur.back_project(e, v);
        let sq = |z: &[f32]| z.iter().map(|t| (*t as f64) * (*t as f64)).sum::<f64>(); // r values
        let grad_norm = ((s as f64).powi(2) * (sq(v) * x_sq + sq(u) * e_sq)).sqrt() as f32;
        if !grad_norm.is_finite() {
            return Err(SonaError::Numerical(format!(
                "gradient norm is {grad_norm}; update rejected"
            )));
        }
        let (sv, su) = (&*v, &*u);
        self.apply_rows(cur, next, grad_norm, |kk| (x, s * sv[kk], e, s * su[kk]))
    }

    /// One step with dense gradients (`ga`: `r × d_in`, `gbt`: `r × d_out`, the transpose of `∇B`),
    /// e.g. the mean gradient of a batch. Same clipping, decay, bound and rejection as
    /// [`Optimizer::step`].
    pub fn step_dense(
        &mut self,
        cur: &LoraWeights,
        next: &mut LoraWeights,
        ga: &[f32],
        gbt: &[f32],
    ) -> Result<StepReport> {
        let (di, dout) = (cur.d_in, cur.d_out);
        assert_eq!(ga.len(), cur.rank * di, "step_dense: ga size");
        assert_eq!(gbt.len(), cur.rank * dout, "step_dense: gbt size");
        let grad_norm = (norm_sq_f64(ga) + norm_sq_f64(gbt)).sqrt() as f32;
        if !grad_norm.is_finite() {
            return Err(SonaError::Numerical(format!(
                "gradient norm is {grad_norm}; update rejected"
            )));
        }
        self.apply_rows(cur, next, grad_norm, |kk| {
            (
                &ga[kk * di..(kk + 1) * di],
                1.0,
                &gbt[kk * dout..(kk + 1) * dout],
                1.0,
            )
        })
    }

    /// The shared tail of a step: row `k` of `∇A` is `ca · src_a` and row `k` of `∇Bᵀ` is
    /// `cb · src_b`, where `row(k) = (src_a, ca, src_b, cb)`.
    fn apply_rows<'a>(
        &mut self,
        cur: &LoraWeights,
        next: &mut LoraWeights,
        grad_norm: f32,
        row: impl Fn(usize) -> (&'a [f32], f32, &'a [f32], f32),
    ) -> Result<StepReport> {
        let cfg = self.config;
        let (r, s) = (cur.rank, cur.scale);
        let clipped = grad_norm > cfg.clip;
        let c = if clipped { cfg.clip / grad_norm } else { 1.0 };
        next.d_in = cur.d_in;
        next.d_out = cur.d_out;
        next.rank = r;
        next.scale = s;
        let (di, dout) = (cur.d_in, cur.d_out);
        // The decay of B is folded into its momentum pass; the bound (rare) costs one more pass.
        let keep = 1.0 - cfg.decay;
        // Largest |w'| over both factors, NaN if anything written is not finite.
        let mut big = 0.0f32;
        for kk in 0..r {
            let (src_a, ca, src_b, cb) = row(kk);
            let ra = kk * di..(kk + 1) * di;
            let ba = momentum_row(
                &cur.a[ra.clone()],
                &self.mom_a[ra.clone()],
                src_a,
                c * ca,
                cfg.momentum,
                cfg.lr,
                1.0,
                &mut next.a[ra.clone()],
                &mut self.next_a[ra],
            );
            let rb = kk * dout..(kk + 1) * dout;
            let bb = momentum_row(
                &cur.bt[rb.clone()],
                &self.mom_bt[rb.clone()],
                src_b,
                c * cb,
                cfg.momentum,
                cfg.lr,
                keep,
                &mut next.bt[rb.clone()],
                &mut self.next_bt[rb],
            );
            big = if ba.is_nan() || bb.is_nan() {
                f32::NAN
            } else {
                big.max(ba).max(bb)
            };
        }
        if big.is_nan() {
            return Err(SonaError::Numerical(
                "the step would make weights non-finite; update rejected".into(),
            ));
        }
        if big > MAX_WEIGHT {
            return Err(SonaError::Numerical(format!(
                "the step would make a factor entry {big}, above the bound {MAX_WEIGHT}; update \
                 rejected"
            )));
        }
        let mut delta_norm = if cfg.max_norm.is_finite() {
            next.delta_frob_sq().sqrt()
        } else {
            f32::NAN
        };
        let bounded = delta_norm > cfg.max_norm;
        if bounded {
            sona_core::kernels::scale(cfg.max_norm / delta_norm, &mut next.bt);
            delta_norm = cfg.max_norm;
        }
        std::mem::swap(&mut self.mom_a, &mut self.next_a);
        std::mem::swap(&mut self.mom_bt, &mut self.next_bt);
        Ok(StepReport {
            grad_norm,
            clipped,
            bounded,
            delta_norm,
        })
    }
}

/// `‖z‖²` in f64 (so a huge input overflows to a detectable infinity only if it truly is huge).
#[inline]
fn norm_sq_f64(z: &[f32]) -> f64 {
    sona_core::kernels::norm_sq(z) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    fn cfg() -> OptimConfig {
        OptimConfig {
            lr: 0.1,
            momentum: 0.0,
            clip: f32::INFINITY,
            max_norm: f32::INFINITY,
            decay: 0.0,
        }
    }

    fn setup(seed: u64) -> (LoraWeights, Vec<f32>, Vec<f32>) {
        let mut rng = SeededRng::new(seed);
        let mut w = LoraWeights::init(8, 6, 2, 2.0, &mut rng).unwrap();
        rng.fill_normal(&mut w.bt, 0.5);
        let mut x = vec![0.0; 8];
        let mut e = vec![0.0; 6];
        rng.fill_normal(&mut x, 1.0);
        rng.fill_normal(&mut e, 1.0);
        (w, x, e)
    }

    #[test]
    fn plain_step_is_lr_times_gradient() {
        let (w, x, e) = setup(1);
        let mut ga = vec![0.0; w.a.len()];
        let mut gbt = vec![0.0; w.bt.len()];
        w.grads(&x, &e, &mut ga, &mut gbt);
        let mut opt = Optimizer::new(cfg(), 8, 6, 2).unwrap();
        let mut next = w.clone();
        opt.step(&w, &mut next, &x, &e).unwrap();
        for i in 0..w.a.len() {
            assert!((next.a[i] - (w.a[i] - 0.1 * ga[i])).abs() < 1e-5);
        }
        for i in 0..w.bt.len() {
            assert!((next.bt[i] - (w.bt[i] - 0.1 * gbt[i])).abs() < 1e-5);
        }
    }

    #[test]
    fn momentum_accumulates() {
        let (w, x, e) = setup(2);
        let mut c = cfg();
        c.momentum = 0.5;
        let mut opt = Optimizer::new(c, 8, 6, 2).unwrap();
        let mut n1 = w.clone();
        opt.step(&w, &mut n1, &x, &e).unwrap();
        let (ma, _) = opt.momentum();
        let first: Vec<f32> = ma.to_vec();
        let mut n2 = w.clone();
        // Same gradient again (from w): momentum becomes 1.5 g.
        opt.step(&w, &mut n2, &x, &e).unwrap();
        let (ma, _) = opt.momentum();
        for (m, f) in ma.iter().zip(&first) {
            assert!((m - 1.5 * f).abs() < 1e-5);
        }
    }

    #[test]
    fn clip_bound_and_decay() {
        let (w, x, e) = setup(3);
        let mut c = cfg();
        c.clip = 1e-3;
        let mut opt = Optimizer::new(c, 8, 6, 2).unwrap();
        let mut next = w.clone();
        let rep = opt.step(&w, &mut next, &x, &e).unwrap();
        assert!(rep.clipped && rep.grad_norm > 1e-3);
        let (ma, mb) = opt.momentum();
        let g = (ma.iter().chain(mb).map(|t| t * t).sum::<f32>()).sqrt();
        assert!((g - 1e-3).abs() < 1e-6);

        let mut c = cfg();
        c.max_norm = 0.05;
        c.decay = 0.01;
        let mut opt = Optimizer::new(c, 8, 6, 2).unwrap();
        let rep = opt.step(&w, &mut next, &x, &e).unwrap();
        assert!(rep.bounded);
        assert!((next.delta_frob_sq().sqrt() - 0.05).abs() < 1e-4);
    }

    #[test]
    fn non_finite_step_is_rejected_and_momentum_kept() {
        let (w, x, _) = setup(4);
        let mut c = cfg();
        c.momentum = 0.9;
        let mut opt = Optimizer::new(c, 8, 6, 2).unwrap();
        let huge = vec![1e30f32; 6];
        let mut next = w.clone();
        let before = opt.momentum().0.to_vec();
        assert!(matches!(
            opt.step(&w, &mut next, &x, &huge),
            Err(SonaError::Numerical(_))
        ));
        assert_eq!(opt.momentum().0, &before[..]);
    }
}
