//! The LoRA map `y = W x + s · B (A x)` and its exact gradients (design §3).
//!
//! [`LoraWeights`] holds one immutable-by-convention copy of the trainable factors. `A` is stored as in
//! PEFT (`r × d_in`, row-major). `B` is stored **transposed** (`bt`, `r × d_out`): column `k` of `B` is
//! row `k` of `bt`, so `B u = Σ_k u_k · bt[k]` is `r` contiguous axpys instead of `d_out` dot products
//! of length `r` (that is what makes a rank-2 forward sub-microsecond). PEFT layout (`[out, r]`) is
//! produced only at the file / accessor boundary ([`LoraWeights::b_peft`]).

use sona_core::kernels as k;

use crate::fused::add_combination;
use sona_core::kernels::{all_finite, copy};
use sona_core::{validate, Result, SeededRng, SonaError};

/// Largest supported rank. The hot path keeps `u = A x` in a stack array of this size, so it never
/// allocates; LoRA ranks in practice are 1-64.
pub const MAX_RANK: usize = 256;

/// Largest magnitude of any stored factor entry (`A`, `B`). Trained LoRA factors are of order
/// `1/√d` to 1 (PEFT initialises `A` with Kaiming-uniform entries and `B = 0`); 10⁴ leaves four
/// orders of magnitude of room while keeping `s·B(A x)` far from `f32` overflow for any input of
/// ordinary scale (`|Δy_i| ≤ s · r · d_in · 10⁸ · max|x|`). Weights beyond it — a bit flip in an
/// exponent, a file from a diverged run, a step that would exceed it — are refused, never stored.
pub const MAX_WEIGHT: f32 = 1e4;

/// The frozen map `W` the adapter corrects.
#[derive(Debug, Clone, PartialEq)]
pub enum Frozen {
    /// `W = I` (requires `d_in == d_out`): the embedding adapter of design §3.
    Identity,
    /// `W = 0`: the adapter outputs only its correction `s·BAx` (used for the micro tier of a stack).
    Zero,
    /// A dense row-major `d_out × d_in` matrix.
    Dense(Vec<f32>),
}

impl Frozen {
    /// Checks that `W` fits `d_in → d_out` and is finite.
    pub fn check(&self, d_in: usize, d_out: usize) -> Result<()> {
        match self {
            Frozen::Identity if d_in != d_out => Err(SonaError::Config(format!(
                "an identity base map needs d_in == d_out, got {d_in} and {d_out}"
            ))),
            Frozen::Dense(w) => validate::check_matrix("W", w, d_out, d_in),
            _ => Ok(()),
        }
    }

    /// `y = W x`.
    #[inline]
    pub fn apply(&self, x: &[f32], y: &mut [f32]) {
        match self {
            Frozen::Identity => copy(x, y),
            Frozen::Zero => y.fill(0.0),
            Frozen::Dense(w) => k::matvec(w, y.len(), x.len(), x, y),
        }
    }

    /// `gx = Wᵀ e`.
    #[inline]
    pub fn apply_t(&self, e: &[f32], gx: &mut [f32]) {
        match self {
            Frozen::Identity => copy(e, gx),
            Frozen::Zero => gx.fill(0.0),
            Frozen::Dense(w) => k::matvec_t(w, e.len(), gx.len(), e, gx),
        }
    }

    /// Short name used in files and `repr`.
    pub fn name(&self) -> &'static str {
        match self {
            Frozen::Identity => "identity",
            Frozen::Zero => "zero",
            Frozen::Dense(_) => "dense",
        }
    }
}

/// The trainable factors of one adapter: `ΔW = s · B A`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraWeights {
    pub d_in: usize,
    pub d_out: usize,
    pub rank: usize,
    /// Forward scale `s = α / r`.
    pub scale: f32,
    /// `A`, `r × d_in` row-major (PEFT `lora_A`).
    pub a: Vec<f32>,
    /// `Bᵀ`, `r × d_out` row-major (the transpose of PEFT `lora_B`).
    pub bt: Vec<f32>,
}

/// Checks the shape of an adapter (used by every constructor and loader).
pub fn check_shape(d_in: usize, d_out: usize, rank: usize) -> Result<()> {
    validate::check_size("d_in", d_in, 1, validate::MAX_DIM)?;
    validate::check_size("d_out", d_out, 1, validate::MAX_DIM)?;
    if rank == 0 || rank > d_in.min(d_out) || rank > MAX_RANK {
        return Err(SonaError::Config(format!(
            "rank must be in [1, min(d_in, d_out, {MAX_RANK})] = [1, {}], got {rank}",
            d_in.min(d_out).min(MAX_RANK)
        )));
    }
    Ok(())
}

impl LoraWeights {
    /// All-zero factors (ΔW = 0 and, unlike [`LoraWeights::init`], zero gradients too) of a shape
    /// known to be small (tests); user-sized shapes go through [`LoraWeights::try_zeros`].
    pub fn zeros(d_in: usize, d_out: usize, rank: usize, scale: f32) -> Self {
        LoraWeights {
            d_in,
            d_out,
            rank,
            scale,
            a: vec![0.0; rank * d_in],
            bt: vec![0.0; rank * d_out],
        }
    }

    /// [`LoraWeights::zeros`] after checking the shape, allocated fallibly.
    pub fn try_zeros(d_in: usize, d_out: usize, rank: usize, scale: f32) -> Result<Self> {
        check_shape(d_in, d_out, rank)?;
        Ok(LoraWeights {
            d_in,
            d_out,
            rank,
            scale,
            a: validate::try_zeros("lora_A", rank * d_in)?,
            bt: validate::try_zeros("lora_B", rank * d_out)?,
        })
    }

    /// design §3 initialisation: `A ~ N(0, 1/d_in)`, `B = 0`, `s = α / r`.
    pub fn init(
        d_in: usize,
        d_out: usize,
        rank: usize,
        alpha: f32,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        check_shape(d_in, d_out, rank)?;
        validate::check_range("alpha", alpha as f64, f32::MIN_POSITIVE as f64, 1e6)?;
        let mut w = LoraWeights::try_zeros(d_in, d_out, rank, alpha / rank as f32)?;
        rng.fill_normal(&mut w.a, (1.0 / d_in as f32).sqrt());
        Ok(w)
    }

    /// Builds factors from PEFT-layout arrays (`a`: `[r, d_in]`, `b`: `[d_out, r]`).
    pub fn from_peft(
        d_in: usize,
        d_out: usize,
        rank: usize,
        scale: f32,
        a: &[f32],
        b: &[f32],
    ) -> Result<Self> {
        check_shape(d_in, d_out, rank)?;
        validate::check_matrix("lora_A", a, rank, d_in)?;
        validate::check_matrix("lora_B", b, d_out, rank)?;
        check_bounded("lora_A", a)?;
        check_bounded("lora_B", b)?;
        let mut w = LoraWeights::try_zeros(d_in, d_out, rank, scale)?;
        w.a.copy_from_slice(a);
        for i in 0..d_out {
            for kk in 0..rank {
                w.bt[kk * d_out + i] = b[i * rank + kk];
            }
        }
        Ok(w)
    }

    /// `B` in PEFT layout, `[d_out, r]` row-major.
    pub fn b_peft(&self) -> Vec<f32> {
        let mut b = vec![0.0; self.d_out * self.rank];
        for kk in 0..self.rank {
            for (i, &v) in self.bt[kk * self.d_out..(kk + 1) * self.d_out]
                .iter()
                .enumerate()
            {
                b[i * self.rank + kk] = v;
            }
        }
        b
    }

    /// Row `k` of `A`.
    #[inline]
    pub fn a_row(&self, kk: usize) -> &[f32] {
        &self.a[kk * self.d_in..(kk + 1) * self.d_in]
    }

    /// Column `k` of `B` (row `k` of the stored transpose).
    #[inline]
    pub fn b_col(&self, kk: usize) -> &[f32] {
        &self.bt[kk * self.d_out..(kk + 1) * self.d_out]
    }

    /// `u = A x` (`u` has `rank` values).
    #[inline]
    pub fn project(&self, x: &[f32], u: &mut [f32]) {
        k::matvec(&self.a, self.rank, self.d_in, x, u);
    }

    /// `v = Bᵀ e` (`v` has `rank` values).
    #[inline]
    pub fn back_project(&self, e: &[f32], v: &mut [f32]) {
        k::matvec(&self.bt, self.rank, self.d_out, e, v);
    }

    /// `y += s · B (A x)` without allocating. Lengths must have been validated.
    #[inline]
    pub fn add_delta(&self, x: &[f32], y: &mut [f32]) {
        let mut u = [0.0f32; MAX_RANK];
        let u = &mut u[..self.rank];
        self.project(x, u);
        for t in u.iter_mut() {
            *t *= self.scale;
        }
        add_combination(&self.bt, self.d_out, u, y);
    }

    /// Exact parameter gradients for an output error `e = ∂L/∂y` at input `x`:
    /// `∇A = s (Bᵀe) xᵀ` (`ga`: `r × d_in`) and `∇Bᵀ = s (A x) eᵀ` (`gbt`: `r × d_out`, the transpose of
    /// `∇B = s e (Ax)ᵀ`).
    pub fn grads(&self, x: &[f32], e: &[f32], ga: &mut [f32], gbt: &mut [f32]) {
        let mut u = [0.0f32; MAX_RANK];
        let mut v = [0.0f32; MAX_RANK];
        let (u, v) = (&mut u[..self.rank], &mut v[..self.rank]);
        self.project(x, u);
        self.back_project(e, v);
        for kk in 0..self.rank {
            let row = &mut ga[kk * self.d_in..(kk + 1) * self.d_in];
            row.copy_from_slice(x);
            k::scale(self.scale * v[kk], row);
            let row = &mut gbt[kk * self.d_out..(kk + 1) * self.d_out];
            row.copy_from_slice(e);
            k::scale(self.scale * u[kk], row);
        }
    }

    /// Adds the adapter's share of `∂L/∂x`, `s · Aᵀ (Bᵀ e)`, to `gx`.
    pub fn add_input_grad(&self, e: &[f32], gx: &mut [f32]) {
        let mut v = [0.0f32; MAX_RANK];
        let v = &mut v[..self.rank];
        self.back_project(e, v);
        for (kk, &vk) in v.iter().enumerate() {
            if vk != 0.0 {
                k::axpy(self.scale * vk, self.a_row(kk), gx);
            }
        }
    }

    /// The dense `ΔW = s B A` (`d_out × d_in`) of a small adapter (tests, merges); user-sized
    /// adapters go through [`LoraWeights::try_delta_w`].
    pub fn delta_w(&self) -> Vec<f32> {
        let mut m = vec![0.0; self.d_out * self.d_in];
        k::rank_update(
            &mut m, self.d_out, self.d_in, self.scale, &self.bt, &self.a, self.rank,
        );
        m
    }

    /// [`LoraWeights::delta_w`] allocated fallibly (at the largest dimensions it is 16 GiB).
    pub fn try_delta_w(&self) -> Result<Vec<f32>> {
        let n = validate::element_count("delta_w", &[self.d_out, self.d_in])?;
        let mut m = validate::try_zeros("delta_w", n)?;
        k::rank_update(
            &mut m, self.d_out, self.d_in, self.scale, &self.bt, &self.a, self.rank,
        );
        Ok(m)
    }

    /// `‖ΔW‖_F² = s² · tr((BᵀB)(AAᵀ))`, in `O(r² (d_in + d_out))` without forming `ΔW`.
    pub fn delta_frob_sq(&self) -> f32 {
        let mut acc = 0.0f64;
        for i in 0..self.rank {
            for j in 0..=i {
                let g = k::dot(self.b_col(i), self.b_col(j)) as f64
                    * k::dot(self.a_row(i), self.a_row(j)) as f64;
                acc += if i == j { g } else { 2.0 * g };
            }
        }
        (acc.max(0.0) * (self.scale as f64).powi(2)) as f32
    }

    /// Overwrites `self` with `other` (same shape) without reallocating.
    pub fn copy_from(&mut self, other: &LoraWeights) {
        self.d_in = other.d_in;
        self.d_out = other.d_out;
        self.rank = other.rank;
        self.scale = other.scale;
        self.a.clear();
        self.a.extend_from_slice(&other.a);
        self.bt.clear();
        self.bt.extend_from_slice(&other.bt);
    }

    /// Whether every weight is finite.
    pub fn is_finite(&self) -> bool {
        all_finite(&self.a) && all_finite(&self.bt)
    }

    /// Checks that the factors have this shape's sizes, are finite and within [`MAX_WEIGHT`]: what
    /// every way in (constructor, `set_weights`, files, merges) requires before storing weights.
    pub fn check(&self) -> Result<()> {
        check_shape(self.d_in, self.d_out, self.rank)?;
        validate::check_matrix("lora_A", &self.a, self.rank, self.d_in)?;
        validate::check_matrix("lora_B", &self.bt, self.rank, self.d_out)?;
        check_bounded("lora_A", &self.a)?;
        check_bounded("lora_B", &self.bt)?;
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(SonaError::invalid(format!(
                "the scale alpha/r must be finite and > 0, got {}",
                self.scale
            )));
        }
        Ok(())
    }
}

/// Largest `|v|` of a slice (NaN if it holds a NaN).
pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, &x| {
        let a = x.abs();
        if a > m || a.is_nan() {
            a
        } else {
            m
        }
    })
}

/// Fails with [`SonaError::Numerical`] if an entry of `v` exceeds [`MAX_WEIGHT`] in magnitude.
pub fn check_bounded(what: &str, v: &[f32]) -> Result<()> {
    let m = max_abs(v);
    if m <= MAX_WEIGHT {
        Ok(())
    } else {
        Err(SonaError::Numerical(format!(
            "{what} has an entry of magnitude {m}, above the bound {MAX_WEIGHT} on LoRA factors"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(d_in: usize, d_out: usize, r: usize, seed: u64) -> LoraWeights {
        let mut rng = SeededRng::new(seed);
        let mut w = LoraWeights::init(d_in, d_out, r, 3.0, &mut rng).unwrap();
        rng.fill_normal(&mut w.bt, 0.3);
        w
    }

    fn loss(w: &LoraWeights, x: &[f32], target: &[f32]) -> f64 {
        // L = ½‖ΔW x − target‖², so ∂L/∂y = y − target.
        let mut y = vec![0.0; w.d_out];
        w.add_delta(x, &mut y);
        y.iter()
            .zip(target)
            .map(|(a, b)| 0.5 * ((a - b) as f64).powi(2))
            .sum()
    }

    #[test]
    fn init_matches_spec() {
        let mut rng = SeededRng::new(1);
        let w = LoraWeights::init(512, 300, 4, 8.0, &mut rng).unwrap();
        assert_eq!(w.scale, 2.0);
        assert!(w.bt.iter().all(|&b| b == 0.0));
        let var = w.a.iter().map(|a| (a * a) as f64).sum::<f64>() / w.a.len() as f64;
        assert!(
            (var * 512.0 - 1.0).abs() < 0.1,
            "var·d_in = {}",
            var * 512.0
        );
    }

    #[test]
    fn rejects_bad_shapes() {
        let mut rng = SeededRng::new(1);
        assert!(LoraWeights::init(8, 8, 0, 1.0, &mut rng).is_err());
        assert!(LoraWeights::init(8, 4, 5, 1.0, &mut rng).is_err());
        assert!(LoraWeights::init(0, 4, 1, 1.0, &mut rng).is_err());
        assert!(LoraWeights::init(8, 8, 2, f32::NAN, &mut rng).is_err());
        assert!(Frozen::Identity.check(3, 4).is_err());
    }

    #[test]
    fn forward_matches_dense_delta() {
        let w = random(7, 5, 3, 2);
        let x: Vec<f32> = (0..7).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = vec![0.0; 5];
        w.add_delta(&x, &mut y);
        let dw = w.delta_w();
        for i in 0..5 {
            let want: f32 = (0..7).map(|j| dw[i * 7 + j] * x[j]).sum();
            assert!((y[i] - want).abs() < 1e-5);
        }
        let frob: f32 = dw.iter().map(|v| v * v).sum();
        assert!((w.delta_frob_sq() - frob).abs() < 1e-4 * frob.max(1.0));
    }

    #[test]
    fn peft_layout_round_trip() {
        let w = random(6, 4, 2, 3);
        let b = w.b_peft();
        let w2 = LoraWeights::from_peft(6, 4, 2, w.scale, &w.a, &b).unwrap();
        assert_eq!(w, w2);
        // B[i, k] is bt[k, i].
        assert_eq!(b[3 * 2 + 1], w.bt[4 + 3]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (d_in, d_out, r) = (9, 6, 3);
        let mut w = random(d_in, d_out, r, 4);
        let mut rng = SeededRng::new(5);
        let mut x = vec![0.0; d_in];
        let mut target = vec![0.0; d_out];
        rng.fill_normal(&mut x, 1.0);
        rng.fill_normal(&mut target, 1.0);
        let mut y = vec![0.0; d_out];
        w.add_delta(&x, &mut y);
        let e: Vec<f32> = y.iter().zip(&target).map(|(a, b)| a - b).collect();
        let mut ga = vec![0.0; r * d_in];
        let mut gbt = vec![0.0; r * d_out];
        w.grads(&x, &e, &mut ga, &mut gbt);
        let h = 1e-2f32;
        let check = |analytic: f32, plus: f64, minus: f64| {
            let fd = (plus - minus) / (2.0 * h as f64);
            assert!(
                (analytic as f64 - fd).abs() < 2e-3 * (1.0 + fd.abs()),
                "analytic {analytic} vs fd {fd}"
            );
        };
        for i in 0..r * d_in {
            let orig = w.a[i];
            w.a[i] = orig + h;
            let p = loss(&w, &x, &target);
            w.a[i] = orig - h;
            let m = loss(&w, &x, &target);
            w.a[i] = orig;
            check(ga[i], p, m);
        }
        for i in 0..r * d_out {
            let orig = w.bt[i];
            w.bt[i] = orig + h;
            let p = loss(&w, &x, &target);
            w.bt[i] = orig - h;
            let m = loss(&w, &x, &target);
            w.bt[i] = orig;
            check(gbt[i], p, m);
        }
        // ∂L/∂x through the adapter (W = 0 here).
        let mut gx = vec![0.0; d_in];
        w.add_input_grad(&e, &mut gx);
        for j in 0..d_in {
            let mut xp = x.clone();
            xp[j] += h;
            let p = loss(&w, &xp, &target);
            xp[j] -= 2.0 * h;
            let m = loss(&w, &xp, &target);
            check(gx[j], p, m);
        }
    }
}
