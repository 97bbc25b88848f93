//! The published weights: router, base and micro embedding adapters and the head micro-LoRA, swapped
//! together as one immutable snapshot so a reader never mixes generations.

use std::sync::Arc;

use sona_lora::LoraWeights;

use crate::router::HeadMicro;

/// One generation of every learned weight the request path reads.
#[derive(Debug, Clone)]
pub struct Model {
    /// Incremented by every publish (loop-A step, loop-B cycle, load).
    pub generation: u64,
    /// The router's flat parameters ([`crate::router::Layout`]).
    pub router: Arc<Vec<f32>>,
    /// Base LoRA of the embedding adapter (`W = I`), trained in loop B and by merges.
    pub base: Arc<LoraWeights>,
    /// Micro LoRA of the embedding adapter, one step per feedback.
    pub micro: Arc<LoraWeights>,
    /// Micro LoRA on the tier head (`H → T`), one step per feedback.
    pub head: Arc<LoraWeights>,
    /// Per-tier linear read-out of the query (`T × (d + 1)`, [`crate::router::HeadMicro`]), one
    /// SGD step per feedback on the chosen tier's row.
    pub readout: Arc<Vec<f32>>,
}

impl Model {
    /// `out = x + s_b B_b A_b x + s_µ B_µ A_µ x` (the embedding adapter, identity base map).
    pub fn adapt(&self, x: &[f32], out: &mut [f32]) {
        out.copy_from_slice(x);
        self.base.add_delta(x, out);
        self.micro.add_delta(x, out);
    }

    /// The head micro-LoRA as the router reads it.
    pub fn head_view(&self) -> HeadMicro<'_, f32> {
        HeadMicro {
            a: &self.head.a,
            bt: &self.head.bt,
            rank: self.head.rank,
            scale: self.head.scale,
            readout: &self.readout,
        }
    }

    /// Bytes of every weight.
    pub fn bytes(&self) -> usize {
        let lw = |w: &LoraWeights| (w.a.len() + w.bt.len()) * 4;
        (self.router.len() + self.readout.len()) * 4
            + lw(&self.base)
            + lw(&self.micro)
            + lw(&self.head)
    }

    /// Whether every weight is finite.
    pub fn is_finite(&self) -> bool {
        self.router.iter().all(|x| x.is_finite())
            && self.base.is_finite()
            && self.micro.is_finite()
            && self.head.is_finite()
            && self.readout.iter().all(|x| x.is_finite())
    }
}
