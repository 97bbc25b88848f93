//! The two-tier adapter of design §3: `y = W x + ΔW_b x + ΔW_µ x`.
//!
//! The micro tier learns from every feedback (gradient or reward); every `merge_every` applied micro
//! steps it is merged into the base (exact up to truncation to the base rank) and restarts at `ΔW_µ = 0`.
//! The base therefore accumulates what the micro tier learned, while the micro tier stays small and
//! fast; truncation to the base rank keeps the strongest directions, so consistent corrections build
//! up and incoherent exploration noise is dropped.
//!
//! Both tiers publish their weights in one snapshot ([`crate::snapshot`]): a forward loads one
//! generation and computes `x + ΔW_b x + ΔW_µ x` from it, so a merge (new base and restarted micro,
//! one swap) is never seen half-done. A step followed by a due merge that fails is still a completed
//! step: the merge stays due, is retried after the next step and the failure is counted
//! ([`TwoTierLoRA::merge_failures`]) — the step is not reported as failed when it was applied.

use parking_lot::Mutex;
use sona_core::{validate, Result, SonaError};

use crate::adapter::Frozen;
use crate::lora::{forward_tiers, BaseLoRA, Counters, Lora, LoraConfig, MicroLoRA};
use crate::merge::MergeReport;
use crate::optim::StepReport;

/// Base + micro adapters on one frozen map, with periodic merges.
#[derive(Debug)]
pub struct TwoTierLoRA {
    pub base: BaseLoRA,
    pub micro: MicroLoRA,
    merge_every: u64,
    since_merge: Mutex<u64>,
    last_merge: Mutex<Option<MergeReport>>,
    merge_failures: Mutex<(u64, Option<String>)>,
}

impl TwoTierLoRA {
    /// `base` carries the frozen map `W`; the micro tier must have the same shape and is given
    /// `W = 0` (it only adds its correction). `merge_every = 0` disables automatic merges.
    pub fn new(base: LoraConfig, mut micro: LoraConfig, merge_every: u64) -> Result<Self> {
        if (base.d_in, base.d_out) != (micro.d_in, micro.d_out) {
            return Err(SonaError::Config(format!(
                "base {}→{} and micro {}→{} must have the same shape",
                base.d_in, base.d_out, micro.d_in, micro.d_out
            )));
        }
        micro.frozen = Frozen::Zero;
        micro.module = base.module.clone();
        let (base, micro) = Lora::pair(base, micro)?;
        Ok(TwoTierLoRA {
            base: BaseLoRA(base),
            micro: MicroLoRA(micro),
            merge_every,
            since_merge: Mutex::new(0),
            last_merge: Mutex::new(None),
            merge_failures: Mutex::new((0, None)),
        })
    }

    pub fn d_in(&self) -> usize {
        self.base.config().d_in
    }

    pub fn d_out(&self) -> usize {
        self.base.config().d_out
    }

    /// `y = W x + ΔW_b x + ΔW_µ x` with both tiers from one generation; never blocks on an update,
    /// never allocates, never returns a non-finite value (see [`crate::lora::forward_tiers`]).
    pub fn forward(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.forward_generation(x, y).map(|_| ())
    }

    /// [`TwoTierLoRA::forward`], returning the number of the generation it read.
    pub fn forward_generation(&self, x: &[f32], y: &mut [f32]) -> Result<u64> {
        validate::check_vec("x", x, self.d_in())?;
        validate::check_len("y", y, self.d_out())?;
        let g = self.base.generation();
        let tiers = [g.tier(self.base.tier()), g.tier(self.micro.tier())];
        forward_tiers(&self.base.config().frozen, &tiers, x, y)?;
        Ok(g.number)
    }

    /// Row-major batch forward, all rows on one generation.
    pub fn forward_batch(&self, xs: &[f32], n: usize, ys: &mut [f32]) -> Result<()> {
        let (di, dout) = (self.d_in(), self.d_out());
        validate::check_vec("X", xs, validate::element_count("X", &[n, di])?)?;
        validate::check_len("Y", ys, validate::element_count("Y", &[n, dout])?)?;
        let g = self.base.generation();
        let tiers = [g.tier(self.base.tier()), g.tier(self.micro.tier())];
        for (x, y) in xs.chunks_exact(di).zip(ys.chunks_exact_mut(dout)) {
            forward_tiers(&self.base.config().frozen, &tiers, x, y)?;
        }
        Ok(())
    }

    /// Explored forward; the token is redeemed with [`TwoTierLoRA::reward`].
    pub fn forward_explore(&self, x: &[f32], y: &mut [f32]) -> Result<u64> {
        self.forward(x, y)?;
        self.micro.explore_output(x, y)
    }

    /// Reward for an exploration token: one micro step, then a merge if one is due.
    pub fn reward(&self, token: u64, reward: f32) -> Result<StepReport> {
        let rep = self.micro.reward(token, reward)?;
        self.after_step();
        Ok(rep)
    }

    /// Gradient step on the micro tier for output error `e` at `x`, then a merge if one is due.
    pub fn update(&self, x: &[f32], e: &[f32]) -> Result<StepReport> {
        validate::check_vec("x", x, self.d_in())?;
        let rep = self.micro.update(x, e)?;
        self.after_step();
        Ok(rep)
    }

    /// Counts an applied step and runs a due merge. A failing merge does not undo or fail the step
    /// (it was applied): it stays due and is retried after the next step.
    fn after_step(&self) {
        if self.merge_every == 0 {
            return;
        }
        let due = {
            let mut n = self.since_merge.lock();
            *n = n.saturating_add(1);
            *n >= self.merge_every
        };
        if due {
            if let Err(e) = self.merge() {
                let mut f = self.merge_failures.lock();
                f.0 += 1;
                f.1 = Some(e.to_string());
            }
        }
    }

    /// Merges the micro tier into the base now (atomic: on error neither tier changes).
    pub fn merge(&self) -> Result<MergeReport> {
        let rep = self.base.merge_from(&self.micro)?;
        *self.since_merge.lock() = 0;
        *self.last_merge.lock() = Some(rep.clone());
        Ok(rep)
    }

    /// Automatic merges that failed so far, and the last failure's message.
    pub fn merge_failures(&self) -> (u64, Option<String>) {
        self.merge_failures.lock().clone()
    }

    pub fn last_merge(&self) -> Option<MergeReport> {
        self.last_merge.lock().clone()
    }

    pub fn merge_every(&self) -> u64 {
        self.merge_every
    }

    /// `(base, micro)` counters.
    pub fn counters(&self) -> (Counters, Counters) {
        (self.base.counters(), self.micro.counters())
    }

    /// The micro tier as a plain adapter.
    pub fn micro_lora(&self) -> &Lora {
        &self.micro
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sona_core::SeededRng;

    #[test]
    fn merges_keep_the_output_and_happen_on_schedule() {
        let d = 16;
        let mut bc = LoraConfig::base(d);
        bc.rank = 4;
        let mut mc = LoraConfig::micro(d);
        mc.optim.lr = 0.02;
        let tt = TwoTierLoRA::new(bc, mc, 5).unwrap();
        let mut rng = SeededRng::new(1);
        let mut x = vec![0.0; d];
        rng.fill_normal(&mut x, 0.3);
        let target: Vec<f32> = x.iter().map(|v| -v).collect();
        for i in 0..40 {
            let mut y = vec![0.0; d];
            tt.forward(&x, &mut y).unwrap();
            let e: Vec<f32> = y.iter().zip(&target).map(|(a, b)| a - b).collect();
            let mut before = vec![0.0; d];
            tt.forward(&x, &mut before).unwrap();
            tt.update(&x, &e).unwrap();
            if (i + 1) % 5 == 0 {
                assert!(tt.micro.snapshot().bt.iter().all(|&b| b == 0.0));
                let rep = tt.last_merge().unwrap();
                assert!(rep.discarded < 1e-4, "rank fits: nothing dropped");
            }
        }
        assert_eq!(tt.counters().0.merges, 8);
        let mut y = vec![0.0; d];
        tt.forward(&x, &mut y).unwrap();
        let err: f32 = y.iter().zip(&target).map(|(a, b)| (a - b).powi(2)).sum();
        let err0: f32 = x.iter().zip(&target).map(|(a, b)| (a - b).powi(2)).sum();
        assert!(err < 0.5 * err0, "{err} vs {err0}");
    }

    #[test]
    fn a_failing_merge_does_not_fail_the_applied_step() {
        let d = 8;
        let tt = TwoTierLoRA::new(LoraConfig::base(d), LoraConfig::micro(d), 1).unwrap();
        tt.base.freeze();
        let before = tt.micro.snapshot();
        let x = vec![0.5f32; d];
        let e = vec![0.1f32; d];
        // The step is applied, so the call succeeds; the due merge (into a frozen base) fails, is
        // counted and stays due.
        tt.update(&x, &e).unwrap();
        assert_ne!(*tt.micro.snapshot(), *before);
        assert_eq!(tt.counters().1.updates, 1);
        assert_eq!(tt.merge_failures().0, 1);
        assert!(tt.merge_failures().1.unwrap().contains("read-only"));
        assert_eq!(tt.counters().0.merges, 0);
        // An explicit merge fails and changes neither tier.
        let (b, m) = (tt.base.snapshot(), tt.micro.snapshot());
        assert!(tt.merge().is_err());
        assert_eq!(*tt.base.snapshot(), *b);
        assert_eq!(*tt.micro.snapshot(), *m);
    }

    #[test]
    fn a_merge_is_one_generation() {
        let d = 12;
        let mut mc = LoraConfig::micro(d);
        mc.optim.lr = 0.05;
        let tt = TwoTierLoRA::new(LoraConfig::base(d), mc, 0).unwrap();
        let x = vec![0.25f32; d];
        let e = vec![0.5f32; d];
        tt.update(&x, &e).unwrap();
        let mut y = vec![0.0; d];
        let g0 = tt.forward_generation(&x, &mut y).unwrap();
        tt.merge().unwrap();
        let g1 = tt.forward_generation(&x, &mut y).unwrap();
        assert_eq!(
            g1,
            g0 + 1,
            "new base and restarted micro are published together"
        );
    }
}
