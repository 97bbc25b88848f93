//! Exact backward pass of the router (backpropagation through every step).
//!
//! Given `∂L/∂logits` (`T` values) and the cache of the forward pass, accumulates `∂L/∂θ` for every
//! parameter, the gradient of the head micro-LoRA's factors, and `∂L/∂x_0` (the step-0 input, i.e.
//! the adapted query) so the embedding adapter can learn from the router's loss.

use super::{readout_len, readout_scale, Cache, HeadMicro, Layout};
use crate::real::Real;

/// Gradients of the head micro-LoRA, `∇A` (`r × H`) and `∇Bᵀ` (`r × T`), and of the read-out,
/// `∇R` (`T × (d + 1)`; empty to skip).
pub struct MicroGrads<'a, T> {
    pub ga: &'a mut [T],
    pub gbt: &'a mut [T],
    pub gr: &'a mut [T],
}

/// Scratch buffers of the backward pass (reused across calls).
#[derive(Debug, Clone, Default)]
pub struct Scratch<T> {
    dh: Vec<T>,
    dhn: Vec<T>,
    dpre: Vec<T>,
    dp: Vec<T>,
    dq: Vec<T>,
    dx: Vec<T>,
}

/// Accumulates (adds) into `grad` (`n_params`, or empty to skip the parameter gradients: loop A
/// needs only `∂L/∂x_0`, and then `seq` may hold the first row alone) the gradient for the output error `dlogits`; writes
/// `∂L/∂x_0` (embedding part, `d` values) into `dx0` when given and the head micro gradients into
/// `mg` (overwritten) when given.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Real>(
    l: &Layout,
    theta: &[T],
    micro: Option<HeadMicro<'_, T>>,
    seq: &[T],
    cache: &Cache<T>,
    dlogits: &[T],
    grad: &mut [T],
    dx0: Option<&mut [T]>,
    mg: Option<MicroGrads<'_, T>>,
    s: &mut Scratch<T>,
) {
    let o = l.offsets();
    let (hd, d, rw, ru, nt) = (l.hidden, l.input, l.rank_w, l.rank_u, l.tiers);
    let steps = cache.steps;
    s.dh.resize(hd, T::ZERO);
    s.dhn.resize(hd, T::ZERO);
    s.dpre.resize(hd, T::ZERO);
    s.dp.resize(rw, T::ZERO);
    s.dq.resize(ru, T::ZERO);
    s.dx.resize(d, T::ZERO);

    // Head: logits = W_o h + b_o + s B (A h).
    let want = !grad.is_empty();
    let hl = cache.h_final(hd);
    if want {
        T::outer_add(&mut grad[o.wo..o.bo], dlogits, hl);
        for (g, &e) in grad[o.bo..o.total].iter_mut().zip(dlogits) {
            *g += e;
        }
    }
    T::matvec_t(&theta[o.wo..o.bo], nt, hd, dlogits, &mut s.dh);
    if let Some(m) = micro {
        // v = Bᵀ e; ∇A = s v hᵀ; ∇Bᵀ = s u eᵀ; ∂h += s Aᵀ v.
        for kk in 0..m.rank {
            let v = T::dot(&m.bt[kk * nt..(kk + 1) * nt], dlogits);
            T::axpy(m.scale * v, &m.a[kk * hd..(kk + 1) * hd], &mut s.dh);
        }
        if let Some(g) = mg {
            if !g.gr.is_empty() && m.readout.len() == readout_len(l.dim, nt) {
                // ∂logit_t/∂R_t = z = [√d x̂, 1].
                let (dd, sc) = (l.dim, readout_scale::<T>(l.dim));
                for (t, &e) in dlogits.iter().enumerate() {
                    let row = &mut g.gr[t * (dd + 1)..(t + 1) * (dd + 1)];
                    for (gi, &xi) in row.iter_mut().zip(&seq[..dd]) {
                        *gi = e * sc * xi;
                    }
                    row[dd] = e;
                }
            }
            for kk in 0..m.rank {
                let v = T::dot(&m.bt[kk * nt..(kk + 1) * nt], dlogits);
                let ga = &mut g.ga[kk * hd..(kk + 1) * hd];
                for (gi, &hi) in ga.iter_mut().zip(hl) {
                    *gi = m.scale * v * hi;
                }
                let uk = cache.u[kk];
                let gb = &mut g.gbt[kk * nt..(kk + 1) * nt];
                for (gi, &ei) in gb.iter_mut().zip(dlogits) {
                    *gi = m.scale * uk * ei;
                }
            }
        }
    }

    let zeta = theta[o.zeta].sigmoid();
    let nu = theta[o.nu].sigmoid();
    let (mut dzeta, mut dnu) = (T::ZERO, T::ZERO);
    let (w1, w2) = (&theta[o.w1..o.w2], &theta[o.w2..o.u1]);
    let (u1, u2) = (&theta[o.u1..o.u2], &theta[o.u2..o.bz]);
    let mut dx0 = dx0;
    for t in (0..steps).rev() {
        let hprev = &cache.h[t * hd..(t + 1) * hd];
        let z = &cache.z[t * hd..(t + 1) * hd];
        let c = &cache.c[t * hd..(t + 1) * hd];
        for i in 0..hd {
            let dh = s.dh[i];
            let a = zeta * (T::ONE - z[i]) + nu;
            dzeta += dh * (T::ONE - z[i]) * c[i];
            dnu += dh * c[i];
            let dz = dh * (hprev[i] - zeta * c[i]);
            let dc = dh * a;
            let dpz = dz * z[i] * (T::ONE - z[i]);
            let dph = dc * (T::ONE - c[i] * c[i]);
            if want {
                grad[o.bz + i] += dpz;
                grad[o.bh + i] += dph;
            }
            s.dpre[i] = dpz + dph;
            s.dhn[i] = dh * z[i];
        }
        // pre = W₁ p + U₁ q, p = W₂ x, q = U₂ h_prev.
        let p = &cache.p[t * rw..(t + 1) * rw];
        let q = &cache.q[t * ru..(t + 1) * ru];
        T::matvec_t(w1, hd, rw, &s.dpre, &mut s.dp);
        if want {
            T::outer_add(&mut grad[o.w1..o.w2], &s.dpre, p);
            T::outer_add(&mut grad[o.w2..o.u1], &s.dp, &seq[t * d..(t + 1) * d]);
        }
        if t == 0 {
            if let Some(dx) = dx0.as_deref_mut() {
                T::matvec_t(w2, rw, d, &s.dp, &mut s.dx);
                dx.copy_from_slice(&s.dx[..dx.len()]);
                // The read-out reads x̂ too: ∂logit_t/∂x̂ = √d w_t.
                if let Some(m) = micro {
                    if m.readout.len() == readout_len(l.dim, nt) {
                        let (dd, sc) = (l.dim, readout_scale::<T>(l.dim));
                        for (k, &e) in dlogits.iter().enumerate() {
                            let w = &m.readout[k * (dd + 1)..k * (dd + 1) + dd];
                            T::axpy(e * sc, &w[..dx.len()], dx);
                        }
                    }
                }
            }
        }
        T::matvec_t(u1, hd, ru, &s.dpre, &mut s.dq);
        if want {
            T::outer_add(&mut grad[o.u1..o.u2], &s.dpre, q);
            T::outer_add(&mut grad[o.u2..o.bz], &s.dq, hprev);
        }
        // dh_prev = U₂ᵀ dq + dh ⊙ z.
        T::matvec_t(u2, ru, hd, &s.dq, &mut s.dh);
        for i in 0..hd {
            s.dh[i] += s.dhn[i];
        }
    }
    if want {
        grad[o.zeta] += dzeta * zeta * (T::ONE - zeta);
        grad[o.nu] += dnu * nu * (T::ONE - nu);
    }
}
