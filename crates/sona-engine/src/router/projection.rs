//! Gradient projection (design §4, GPM) over the router's layers, for one-step inputs.
//!
//! One [`GradientProjection`] per layer input: the query `x` (rows of `W₂`), its projection
//! `p = W₂x` (rows of `W₁`) and the final state `h` (rows of `W_o`). After a task, the directions
//! holding `threshold` of the energy of its inputs to each layer join that layer's basis; later
//! gradients of each weight matrix are projected row by row off the basis (`G ← G − G VᵀV`), so
//! (up to the energy left out) the layer's output on earlier inputs does not move. The gate
//! biases, `ζ̂`, `ν̂` and `b_o` act on every input, so they are frozen once a task is protected.
//! The flat view of this is the design's `g − V_k V_kᵀ g` with a block-diagonal `V_k`.
//!
//! With one-step inputs `h₋₁ = 0`, so `U` never gets a gradient and needs no basis.

use sona_core::Result;
use sona_ewc::GradientProjection;

use super::Layout;

/// The per-layer bases (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerProjection {
    layout: Layout,
    x: GradientProjection,
    p: GradientProjection,
    h: GradientProjection,
    tasks: usize,
}

impl LayerProjection {
    /// Empty bases for `layout`'s layers.
    pub fn new(layout: Layout) -> Result<Self> {
        Ok(LayerProjection {
            layout,
            x: GradientProjection::new(layout.input, layout.input)?,
            p: GradientProjection::new(layout.rank_w, layout.rank_w)?,
            h: GradientProjection::new(layout.hidden, layout.hidden)?,
            tasks: 0,
        })
    }

    /// Tasks protected so far.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// Basis sizes of the `x`, `p` and `h` layers.
    pub fn basis_sizes(&self) -> [usize; 3] {
        [
            self.x.basis_size(),
            self.p.basis_size(),
            self.h.basis_size(),
        ]
    }

    /// Protects a task given `rows` of its layer inputs (`xs`: `rows × D`, `ps`: `rows × r_w`,
    /// `hs`: `rows × H`, `1 ≤ rows ≤` [`sona_ewc::gpm::MAX_ROWS`]). All or nothing.
    pub fn add_task(
        &mut self,
        xs: &[f32],
        ps: &[f32],
        hs: &[f32],
        rows: usize,
        threshold: f32,
    ) -> Result<()> {
        *self = self.with_task(xs, ps, hs, rows, threshold)?;
        Ok(())
    }

    /// These bases with a task added (as [`add_task`](Self::add_task)), leaving `self` as it is:
    /// for a caller that must commit other state with it, all or nothing.
    pub fn with_task(
        &self,
        xs: &[f32],
        ps: &[f32],
        hs: &[f32],
        rows: usize,
        threshold: f32,
    ) -> Result<Self> {
        let mut next = self.clone();
        next.x.add(xs, rows, threshold)?;
        next.p.add(ps, rows, threshold)?;
        next.h.add(hs, rows, threshold)?;
        next.tasks += 1;
        Ok(next)
    }

    /// Projects the gradient `grad` (the router's flat layout) in place; a no-op before the first
    /// task. `Numerical` if a projected block overflows.
    pub fn project(&self, grad: &mut [f32]) -> Result<()> {
        if self.tasks == 0 {
            return Ok(());
        }
        let o = self.layout.offsets();
        self.x.project_rows(&mut grad[o.w2..o.u1])?;
        self.p.project_rows(&mut grad[o.w1..o.w2])?;
        self.h.project_rows(&mut grad[o.wo..o.bo])?;
        grad[o.bz..o.wo].fill(0.0);
        grad[o.bo..o.total].fill(0.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{forward, Cache};
    use sona_core::SeededRng;

    /// A step along a projected gradient leaves the logits on the protected inputs unchanged to
    /// first order, and does move them on other inputs.
    #[test]
    fn projected_steps_keep_protected_outputs() {
        let l = Layout::new(6, 0, 8, 3, 2, 2).unwrap();
        let theta = l.init(1);
        let mut rng = SeededRng::new(2);
        // Protected inputs span the first two coordinates.
        let rows = 4;
        let mut xs = vec![0.0f32; rows * 6];
        for r in 0..rows {
            xs[r * 6] = rng.normal();
            xs[r * 6 + 1] = rng.normal();
        }
        let mut cache = Cache::default();
        let (mut ps, mut hs) = (Vec::new(), Vec::new());
        for x in xs.chunks_exact(6) {
            forward(&l, &theta, None, x, &mut cache);
            ps.extend_from_slice(&cache.p[..3]);
            hs.extend_from_slice(cache.h_final(8));
        }
        let mut gp = LayerProjection::new(l).unwrap();
        let mut g = vec![0.0f32; theta.len()];
        rng.fill_normal(&mut g, 1.0);
        let raw = g.clone();
        gp.project(&mut g).unwrap();
        assert_eq!(g, raw, "no task yet: no projection");
        gp.add_task(&xs, &ps, &hs, rows, 1.0).unwrap();
        assert_eq!(gp.tasks(), 1);
        gp.project(&mut g).unwrap();
        let logits = |th: &[f32], x: &[f32], c: &mut Cache<f32>| {
            forward(&l, th, None, x, c);
            c.logits.clone()
        };
        let eps = 1e-3f32;
        let stepped: Vec<f32> = theta.iter().zip(&g).map(|(t, d)| t - eps * d).collect();
        let free: Vec<f32> = theta.iter().zip(&raw).map(|(t, d)| t - eps * d).collect();
        for x in xs.chunks_exact(6) {
            let a = logits(&theta, x, &mut cache);
            let b = logits(&stepped, x, &mut cache);
            let c = logits(&free, x, &mut cache);
            let moved = |u: &[f32]| {
                u.iter()
                    .zip(&a)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0, f32::max)
            };
            assert!(
                moved(&b) < 1e-2 * moved(&c),
                "{} vs {}",
                moved(&b),
                moved(&c)
            );
        }
        let mut other = vec![0.0f32; 6];
        other[4] = 1.0;
        let a = logits(&theta, &other, &mut cache);
        let b = logits(&stepped, &other, &mut cache);
        assert!(a.iter().zip(&b).any(|(p, q)| (p - q).abs() > 1e-6));
        // All or nothing: a bad block changes no basis.
        let before = gp.clone();
        assert!(gp.add_task(&xs, &ps, &hs[..5], rows, 0.9).is_err());
        assert_eq!(gp, before);
    }
}
