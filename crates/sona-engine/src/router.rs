//! The FastGRNN router of design §6 and its exact backward pass.
//!
//! ```text
//! z_t  = σ(W x_t + U h_{t-1} + b_z)          W = W₁W₂ (H×r_w · r_w×D),  U = U₁U₂ (H×r_u · r_u×H)
//! h̃_t  = tanh(W x_t + U h_{t-1} + b_h)
//! h_t  = (ζ(1−z_t) + ν) ⊙ h̃_t + z_t ⊙ h_{t-1}    ζ = σ(ζ̂), ν = σ(ν̂),  h_{-1} = 0
//! r̂    = σ(W_o h_L + b_o + s·B_µ(A_µ h_L) + R z)   per-tier predicted reward
//! z    = [√d · x̂, 1]                               x̂ = the unit query (step 0's embedding part)
//! ```
//!
//! `s·B_µA_µ` is the micro-LoRA on the head; `R` (`T × (d + 1)`) is the per-tier linear read-out
//! of the query beside the recurrent state: a per-tier logistic model of the query inside the
//! router, which loop A steps on every feedback (design §6). `√d` puts z's coordinates at unit
//! scale, like a standardized query's.
//!
//! Input sequence (width `D = d + S`, see [`features`]): step 0 is the unit-normalized adapted query
//! with a zero statistics block; steps 1..=k are the recalled pattern centroids, least similar first
//! so the closest pattern is read last, each followed by its statistics block; missing patterns (fewer
//! than k in the bank, or removed since) are zero rows with the `missing` flag set.
//!
//! All parameters live in one flat vector (the view EWC++ and Adam use); [`Layout`] gives the
//! offsets. The math is generic over [`Real`] so the gradient check runs in `f64`.

pub mod backward;
pub mod projection;
pub mod standalone;

pub use standalone::Router;

use sona_core::{Result, SeededRng, SonaError};

use crate::real::Real;

/// Shapes and offsets of the flat parameter vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Input width `D = d + S`.
    pub input: usize,
    /// Embedding part `d` of the input (the rest is statistics).
    pub dim: usize,
    pub hidden: usize,
    pub rank_w: usize,
    pub rank_u: usize,
    pub tiers: usize,
}

/// Offsets of each block in the flat vector.
#[derive(Debug, Clone, Copy)]
pub struct Offsets {
    pub w1: usize,
    pub w2: usize,
    pub u1: usize,
    pub u2: usize,
    pub bz: usize,
    pub bh: usize,
    pub zeta: usize,
    pub nu: usize,
    pub wo: usize,
    pub bo: usize,
    pub total: usize,
}

/// Initial `ζ̂`: `ζ = σ(4.6) ≈ 0.99`, the closest to design §6's ζ = 1 a sigmoid gate reaches usefully.
pub const ZETA_INIT: f64 = 4.6;
/// Initial `ν̂`: `ν = σ(0) = 0.5`.
pub const NU_INIT: f64 = 0.0;

impl Layout {
    pub fn new(
        dim: usize,
        stat_width: usize,
        hidden: usize,
        rank_w: usize,
        rank_u: usize,
        tiers: usize,
    ) -> Result<Self> {
        let input = dim + stat_width;
        if dim == 0 || hidden == 0 || tiers == 0 {
            return Err(SonaError::Config(format!(
                "router sizes must be positive (dim {dim}, hidden {hidden}, tiers {tiers})"
            )));
        }
        if rank_w == 0 || rank_w > hidden.min(input) || rank_u == 0 || rank_u > hidden {
            return Err(SonaError::Config(format!(
                "router ranks must be in [1, min(H, D)] (rank_w {rank_w}, rank_u {rank_u}, H {hidden}, D {input})"
            )));
        }
        if hidden > 4096 || input > 1 << 20 || tiers > 64 {
            return Err(SonaError::Config("router sizes too large".into()));
        }
        Ok(Layout {
            input,
            dim,
            hidden,
            rank_w,
            rank_u,
            tiers,
        })
    }

    pub fn offsets(&self) -> Offsets {
        let (h, d, rw, ru, t) = (
            self.hidden,
            self.input,
            self.rank_w,
            self.rank_u,
            self.tiers,
        );
        let w1 = 0;
        let w2 = w1 + h * rw;
        let u1 = w2 + rw * d;
        let u2 = u1 + h * ru;
        let bz = u2 + ru * h;
        let bh = bz + h;
        let zeta = bh + h;
        let nu = zeta + 1;
        let wo = nu + 1;
        let bo = wo + t * h;
        Offsets {
            w1,
            w2,
            u1,
            u2,
            bz,
            bh,
            zeta,
            nu,
            wo,
            bo,
            total: bo + t,
        }
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.offsets().total
    }

    /// Seeded initial parameters: `W₂` rows `N(0, 1)` over the (unit) embedding part and
    /// `N(0, 1/S)` over statistics, `W₁ ~ N(0, 1/r_w)`, `U₁U₂` small (`N(0, 1/r_u)`, `N(0, 0.25/H)`),
    /// `b_z = 1` (a gate that starts by keeping half its state), `W_o ~ N(0, 0.1/H)`, `b_o = 0`.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let o = self.offsets();
        let mut rng = SeededRng::new(seed ^ 0x524f_5554_4552);
        let mut th = vec![0.0f32; o.total];
        let (h, d, rw, ru, t) = (
            self.hidden,
            self.input,
            self.rank_w,
            self.rank_u,
            self.tiers,
        );
        rng.fill_normal(&mut th[o.w1..o.w2], (1.0 / rw as f32).sqrt());
        let stat = (self.input - self.dim).max(1) as f32;
        for r in 0..rw {
            let row = &mut th[o.w2 + r * d..o.w2 + (r + 1) * d];
            rng.fill_normal(&mut row[..self.dim], 1.0);
            rng.fill_normal(&mut row[self.dim..], (1.0 / stat).sqrt());
        }
        rng.fill_normal(&mut th[o.u1..o.u2], (1.0 / ru as f32).sqrt());
        rng.fill_normal(&mut th[o.u2..o.bz], (0.25 / h as f32).sqrt());
        th[o.bz..o.bh].fill(1.0);
        th[o.zeta] = ZETA_INIT as f32;
        th[o.nu] = NU_INIT as f32;
        rng.fill_normal(&mut th[o.wo..o.bo], (0.1 / h as f32).sqrt());
        let _ = t;
        th
    }
}

/// What the engine adds to the tier head besides `θ`: the micro-LoRA `ΔW_o = s · B A` (`A: r × H`,
/// `Bᵀ: r × T`) and the per-tier read-out `R` of the query (`T × (d + 1)`, row `[w_t | b_t]`;
/// empty for none).
#[derive(Debug, Clone, Copy)]
pub struct HeadMicro<'a, T> {
    pub a: &'a [T],
    pub bt: &'a [T],
    pub rank: usize,
    pub scale: T,
    pub readout: &'a [T],
}

/// Length of the read-out `R` for `dim`-wide queries and `tiers` tiers.
pub fn readout_len(dim: usize, tiers: usize) -> usize {
    tiers * (dim + 1)
}

/// `√d`, the read-out's feature scale.
pub fn readout_scale<T: Real>(dim: usize) -> T {
    T::of((dim as f64).sqrt())
}

/// Activations of one forward pass, kept for the backward pass (reused across calls).
#[derive(Debug, Clone, Default)]
pub struct Cache<T> {
    pub steps: usize,
    /// `h_{-1} .. h_{L-1}`: `(L + 1) × H`.
    pub h: Vec<T>,
    /// `W₂ x_t`: `L × r_w`.
    pub p: Vec<T>,
    /// `U₂ h_{t-1}`: `L × r_u`.
    pub q: Vec<T>,
    /// Gates `z_t`: `L × H`.
    pub z: Vec<T>,
    /// Candidates `h̃_t`: `L × H`.
    pub c: Vec<T>,
    /// `A_µ h_L` (rank values).
    pub u: Vec<T>,
    /// Head logits and outputs `σ(logit)`: `T` each.
    pub logits: Vec<T>,
    pub out: Vec<T>,
    pre: Vec<T>,
}

impl<T: Real> Cache<T> {
    fn size(&mut self, l: &Layout, steps: usize) {
        let h = l.hidden;
        self.steps = steps;
        self.h.resize((steps + 1) * h, T::ZERO);
        self.p.resize(steps * l.rank_w, T::ZERO);
        self.q.resize(steps * l.rank_u, T::ZERO);
        self.z.resize(steps * h, T::ZERO);
        self.c.resize(steps * h, T::ZERO);
        self.logits.resize(l.tiers, T::ZERO);
        self.out.resize(l.tiers, T::ZERO);
        self.pre.resize(2 * h, T::ZERO);
    }

    /// The final hidden state `h_L`.
    pub fn h_final(&self, hidden: usize) -> &[T] {
        &self.h[self.steps * hidden..(self.steps + 1) * hidden]
    }
}

/// One normalized SGD step of the read-out's row `tier` for the logit error `dlogit` (`∂L/∂logit`)
/// at the query `x`: `R_t −= lr · dlogit · z / ‖z‖²` with `z = [√d x, 1]` (the gradient
/// [`backward`] gives, divided by `‖z‖²`), so tier `tier`'s logit on this very query moves by
/// `−lr · dlogit` whatever `d` is. Returns the new read-out, or `None` when the step is zero or
/// would not be finite.
pub fn readout_step(
    readout: &[f32],
    x: &[f32],
    tier: usize,
    dlogit: f32,
    lr: f32,
) -> Option<Vec<f32>> {
    readout_step_into(readout, x, tier, dlogit, lr, Vec::new())
}

/// [`readout_step`] writing the new read-out into `buf` (any contents; its allocation is reused).
pub fn readout_step_into(
    readout: &[f32],
    x: &[f32],
    tier: usize,
    dlogit: f32,
    lr: f32,
    buf: Vec<f32>,
) -> Option<Vec<f32>> {
    let d = x.len();
    let row = tier * (d + 1)..(tier + 1) * (d + 1);
    let zz = d as f32 * sona_core::kernels::norm_sq(x) + 1.0;
    let step = lr * dlogit / zz;
    if step == 0.0 || !step.is_finite() || readout.len() < row.end {
        return None;
    }
    let mut next = buf;
    next.clear();
    next.extend_from_slice(readout);
    let r = &mut next[row];
    sona_core::kernels::axpy(-step * readout_scale::<f32>(d), x, &mut r[..d]);
    r[d] -= step;
    r.iter().all(|v| v.is_finite()).then_some(next)
}

/// Forward pass over `seq` (`steps × D`, row-major). Returns the predicted rewards (in `cache.out`).
pub fn forward<T: Real>(
    l: &Layout,
    theta: &[T],
    micro: Option<HeadMicro<'_, T>>,
    seq: &[T],
    cache: &mut Cache<T>,
) {
    debug_assert_eq!(seq.len() % l.input, 0);
    forward_from(l, theta, micro, seq, &[], cache)
}

/// [`forward`] over `[x₀, x₁ … x_k]` given only the first row `x0` (`D` values) and the input
/// projections `W₂ x_t` of the others (`k × r_w`, as a forward with the same `W₂` left in
/// [`Cache::p`]`[r_w..]`): the same arithmetic, without reading `x₁ … x_k` again. Loop A's feedback
/// uses it, since its backward needs no row but `x₀` (it skips the parameter gradients).
pub fn forward_projected<T: Real>(
    l: &Layout,
    theta: &[T],
    micro: Option<HeadMicro<'_, T>>,
    x0: &[T],
    projected: &[T],
    cache: &mut Cache<T>,
) {
    debug_assert_eq!(x0.len(), l.input);
    debug_assert_eq!(projected.len() % l.rank_w, 0);
    forward_from(l, theta, micro, x0, projected, cache)
}

/// The forward pass over `seq`'s rows, then one step per `r_w`-wide row of `projected` (rows
/// whose `W₂ x_t` is given).
fn forward_from<T: Real>(
    l: &Layout,
    theta: &[T],
    micro: Option<HeadMicro<'_, T>>,
    seq: &[T],
    projected: &[T],
    cache: &mut Cache<T>,
) {
    let o = l.offsets();
    let (hd, d, rw, ru) = (l.hidden, l.input, l.rank_w, l.rank_u);
    debug_assert_eq!(theta.len(), o.total);
    let given = seq.len() / d;
    let steps = given + projected.len() / rw;
    cache.size(l, steps);
    cache.h[..hd].fill(T::ZERO);
    let zeta = theta[o.zeta].sigmoid();
    let nu = theta[o.nu].sigmoid();
    let (w1, w2) = (&theta[o.w1..o.w2], &theta[o.w2..o.u1]);
    let (u1, u2) = (&theta[o.u1..o.u2], &theta[o.u2..o.bz]);
    let (bz, bh) = (&theta[o.bz..o.bh], &theta[o.bh..o.zeta]);
    let mut pre = std::mem::take(&mut cache.pre);
    for t in 0..steps {
        let (hs, rest) = cache.h.split_at_mut((t + 1) * hd);
        let hprev = &hs[t * hd..];
        let hnext = &mut rest[..hd];
        let p = &mut cache.p[t * rw..(t + 1) * rw];
        if t < given {
            T::matvec(w2, rw, d, &seq[t * d..(t + 1) * d], p);
        } else {
            p.copy_from_slice(&projected[(t - given) * rw..(t - given + 1) * rw]);
        }
        let q = &mut cache.q[t * ru..(t + 1) * ru];
        T::matvec(u2, ru, hd, hprev, q);
        let (a, b) = pre.split_at_mut(hd);
        T::matvec(w1, hd, rw, p, a);
        T::matvec(u1, hd, ru, q, &mut b[..hd]);
        let z = &mut cache.z[t * hd..(t + 1) * hd];
        let c = &mut cache.c[t * hd..(t + 1) * hd];
        for i in 0..hd {
            let s = a[i] + b[i];
            z[i] = s + bz[i];
            c[i] = s + bh[i];
        }
        T::sigmoid_all(z);
        T::tanh_all(c);
        for i in 0..hd {
            hnext[i] = (zeta * (T::ONE - z[i]) + nu) * c[i] + z[i] * hprev[i];
        }
    }
    cache.pre = pre;
    head(l, theta, micro, &seq[..l.dim.min(seq.len())], cache);
}

fn head<T: Real>(
    l: &Layout,
    theta: &[T],
    micro: Option<HeadMicro<'_, T>>,
    x0: &[T],
    cache: &mut Cache<T>,
) {
    let o = l.offsets();
    let (hd, nt) = (l.hidden, l.tiers);
    let hl = &cache.h[cache.steps * hd..(cache.steps + 1) * hd];
    T::matvec(&theta[o.wo..o.bo], nt, hd, hl, &mut cache.logits);
    for (g, &b) in cache.logits.iter_mut().zip(&theta[o.bo..o.total]) {
        *g += b;
    }
    cache.u.clear();
    if let Some(m) = micro {
        cache.u.resize(m.rank, T::ZERO);
        T::matvec(m.a, m.rank, hd, hl, &mut cache.u);
        for kk in 0..m.rank {
            let uk = cache.u[kk] * m.scale;
            T::axpy(uk, &m.bt[kk * nt..(kk + 1) * nt], &mut cache.logits);
        }
        if m.readout.len() == readout_len(l.dim, nt) && x0.len() == l.dim {
            let d = l.dim;
            let sc = readout_scale::<T>(d);
            for (t, g) in cache.logits.iter_mut().enumerate() {
                let row = &m.readout[t * (d + 1)..(t + 1) * (d + 1)];
                *g += sc * T::dot(&row[..d], x0) + row[d];
            }
        }
    }
    for (y, &g) in cache.out.iter_mut().zip(&cache.logits) {
        *y = g.sigmoid();
    }
}

/// Binary cross-entropy of prediction `p = σ(g)` against target `r ∈ [0, 1]`, from the logit (stable).
pub fn bce_from_logit(g: f64, r: f64) -> f64 {
    // −[r log σ(g) + (1−r) log(1−σ(g))] = softplus(g) − r g
    let sp = if g > 0.0 {
        g + (-g).exp().ln_1p()
    } else {
        g.exp().ln_1p()
    };
    sp - r * g
}

/// Statistics block of one recalled pattern (width `3T + 3`): per tier `[mean − 0.5 (0 if unseen),
/// ln(1 + count)/8, std]`, then `[cosine, present = 1, missing = 0]`. A missing pattern is all zeros
/// but `missing = 1`; the query step is all zeros.
pub mod features {
    use sona_core::types::ArmStats;

    /// Writes the block of a present pattern.
    pub fn pattern(arms: &[ArmStats], cosine: f32, out: &mut [f32]) {
        let t = out.len().saturating_sub(3) / 3;
        out.fill(0.0);
        for k in 0..t.min(arms.len()) {
            let a = &arms[k];
            if a.count > 0 && a.mean.is_finite() {
                out[3 * k] = (a.mean - 0.5) as f32;
                out[3 * k + 1] = ((a.count as f64).ln_1p() / 8.0) as f32;
                out[3 * k + 2] = a.variance().max(0.0).sqrt().min(1.0) as f32;
            }
        }
        out[3 * t] = if cosine.is_finite() {
            cosine.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        out[3 * t + 1] = 1.0;
    }

    /// Writes the block of a missing pattern.
    pub fn missing(out: &mut [f32]) {
        out.fill(0.0);
        let n = out.len();
        out[n - 1] = 1.0;
    }
}

#[cfg(test)]
mod tests;
