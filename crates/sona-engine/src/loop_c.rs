//! Loop C, "dreams" (design §1, §7): consolidation that is kept only when it does not hurt.
//!
//! One deep cycle, serialised with loop B (it holds the learner's mutex) and off the request path:
//! 1. Copy `θ = [router | base]` and the loop-B Adam state out of the current snapshot.
//! 2. Split the replay reservoir deterministically: every fifth stored decision is a held-out probe,
//!    the rest is replayed by priority (|prediction error| of the chosen tier; new items first).
//! 3. Pseudo-rehearsal: sample queries around the level-0 pattern centroids (`x̃ = μ_c + σ z`,
//!    clusters ∝ support), recall for each as `process` would, and label them with the frozen
//!    pre-cycle router (the teacher); the cycle adds `½‖r̂(x̃) − teacher(x̃)‖²` on them.
//! 4. Train with the loop-B optimizer and the EWC++ penalty within `deep_budget_ms`
//!    (`sona_dreams::run_cycle`). The probe score is minus the mean bandit loss on the held-out
//!    decisions; the cycle is published only if it does not drop by more than `deep_tolerance`.
//!    A rejected cycle publishes nothing, so the served weights stay bit-identical.
//! 5. Memory maintenance: transitive merge of near-duplicate patterns, pruning of low-support,
//!    low-reward, stale ones, the hierarchy rebuilt, graph decay, and Φ of the memory graph.
//!    ("Creative" edges proposed by random walks are not added: no held-out retrieval check exists
//!    for them yet.)

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sona_core::{Result, SeededRng, SonaError};
use sona_dreams::rehearsal::{synthesize, Cluster};
use sona_dreams::{run_cycle, DreamConfig, DreamModel, PrioritizedReplay};
use sona_lora::LoraWeights;
use sona_reasoning::PruneRule;

use crate::adam::Adam;
use crate::engine::{with_scratch, Inner, Scratch};
use crate::loop_b::{base_of, flatten};
use crate::model::Model;
use crate::pending::MISSING;
use crate::replay::ReplayItem;
use crate::router::{bce_from_logit, features};

/// What one deep cycle did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeepLearningResult {
    pub cycle: u64,
    pub elapsed_ms: f64,
    /// Replayed decisions (over all steps) and synthetic queries distilled.
    pub replayed: usize,
    pub synthesized: usize,
    pub steps: usize,
    /// Whether the trained weights were published (`false`: rolled back, nothing changed).
    pub accepted: bool,
    /// Probe score (minus the mean bandit loss on held-out decisions) before and after training.
    pub probe_before: f64,
    pub probe_after: f64,
    pub probe_size: usize,
    pub out_of_budget: bool,
    pub patterns_merged: usize,
    pub patterns_pruned: usize,
    pub hierarchy_levels: Vec<usize>,
    pub edges_before: usize,
    pub edges_after: usize,
    /// The integration proxy Φ of the memory graph after maintenance.
    pub phi: f64,
    pub generation: u64,
}

impl DeepLearningResult {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a DeepLearningResult serialises")
    }
}

/// The engine's router + base adapter as a [`DreamModel`], trained on a private copy.
struct EngineDream<'a> {
    inner: &'a Inner,
    model: &'a Model,
    theta: Vec<f32>,
    adam: Adam,
    lr: f32,
    ewc: &'a sona_ewc::EwcPlusPlus,
    train: Vec<Arc<ReplayItem>>,
    probe: Vec<Arc<ReplayItem>>,
    synthetic: Vec<Arc<ReplayItem>>,
    cents: HashMap<u64, Arc<[f32]>>,
}

impl EngineDream<'_> {
    fn base(&self) -> LoraWeights {
        base_of(&self.theta, self.inner.layout.n_params(), &self.model.base)
    }

    /// Forward pass of `rec` with the current `θ` (see [`Inner::replay_forward`]).
    fn forward(&self, base: &LoraWeights, rec: &ReplayItem, sc: &mut Scratch) -> Option<f32> {
        let nr = self.inner.layout.n_params();
        self.inner
            .replay_forward(&self.theta[..nr], base, self.model, rec, &self.cents, sc)
    }

    /// Adds `scale ×` the gradient for the logit gradient in `sc.dl` into `grad` (router and base).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        base: &LoraWeights,
        rec: &ReplayItem,
        norm: f32,
        scale: f32,
        grad: &mut [f32],
        sc: &mut Scratch,
    ) {
        let nr = self.inner.layout.n_params();
        // Per call: the dream's batches are small and this keeps the request path's scratch lean.
        let mut g = vec![0.0f32; grad.len()];
        self.inner
            .replay_backward(&self.theta[..nr], base, self.model, rec, norm, sc, &mut g);
        sona_core::kernels::axpy(scale, &g, grad);
    }

    /// Bandit loss of a logged decision (BCE of the chosen tier's predicted reward).
    fn loss(&self, base: &LoraWeights, rec: &ReplayItem, sc: &mut Scratch) -> Option<f64> {
        self.forward(base, rec, sc)?;
        let t = rec.tier as usize;
        Some(bce_from_logit(
            f64::from(sc.cache.logits[t]),
            f64::from(rec.reward),
        ))
    }
}

impl DreamModel for EngineDream<'_> {
    type State = (Vec<f32>, Adam);

    fn n_params(&self) -> usize {
        self.theta.len()
    }

    fn n_outputs(&self) -> usize {
        self.inner.cfg.n_tiers
    }

    fn n_synthetic(&self) -> usize {
        self.synthetic.len()
    }

    fn state(&self) -> Self::State {
        (self.theta.clone(), self.adam.clone())
    }

    fn restore(&mut self, state: Self::State) {
        (self.theta, self.adam) = state;
    }

    fn replay_grad(&self, slot: usize, weight: f32, grad: &mut [f32]) -> Option<f32> {
        let rec = self.train.get(slot)?;
        let base = self.base();
        with_scratch(|sc| {
            let norm = self.forward(&base, rec, sc)?;
            let t = rec.tier as usize;
            let err = sc.cache.out[t] - rec.reward;
            sc.dl.clear();
            sc.dl.resize(self.inner.cfg.n_tiers, 0.0);
            sc.dl[t] = err;
            self.backward(&base, rec, norm, weight, grad, sc);
            Some(err.abs())
        })
    }

    fn synthetic_outputs(&self, i: usize, out: &mut [f32]) {
        let base = self.base();
        with_scratch(|sc| match self.forward(&base, &self.synthetic[i], sc) {
            Some(_) => out.copy_from_slice(&sc.cache.out),
            None => out.fill(f32::NAN),
        });
    }

    fn distill_grad(&self, i: usize, teacher: &[f32], weight: f32, grad: &mut [f32]) -> f32 {
        let rec = &self.synthetic[i];
        let base = self.base();
        with_scratch(|sc| {
            let Some(norm) = self.forward(&base, rec, sc) else {
                return 0.0;
            };
            // ½‖σ(z) − t‖²: ∂/∂z_k = (σ_k − t_k) σ_k (1 − σ_k).
            sc.dl.clear();
            let mut loss = 0.0;
            for (o, t) in sc.cache.out.iter().zip(teacher) {
                sc.dl.push((o - t) * o * (1.0 - o));
                loss += 0.5 * (o - t) * (o - t);
            }
            self.backward(&base, rec, norm, weight, grad, sc);
            loss
        })
    }

    fn penalty_grad(&self, grad: &mut [f32]) -> Result<()> {
        self.ewc.apply(&self.theta, grad)
    }

    fn step(&mut self, grad: &[f32]) -> bool {
        self.adam.step(&mut self.theta, grad, self.lr)
    }

    fn probe(&self) -> f64 {
        let base = self.base();
        with_scratch(|sc| {
            let (mut s, mut n) = (0.0, 0usize);
            for it in &self.probe {
                if let Some(l) = self.loss(&base, it, sc) {
                    s += l;
                    n += 1;
                }
            }
            if n == 0 {
                0.0
            } else {
                -s / n as f64
            }
        })
    }
}

impl Inner {
    /// What `process` would record for query `x` under `model` (adapt, recall, statistics),
    /// without recording it: a synthetic decision for pseudo-rehearsal.
    fn recall_item(&self, model: &Model, x: &[f32]) -> Option<ReplayItem> {
        let (d, s, kr) = (self.cfg.dim, self.s_width, self.cfg.k_recall);
        let mut adapted = vec![0.0; d];
        model.adapt(x, &mut adapted);
        let norm = sona_core::kernels::norm_sq(&adapted).sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return None;
        }
        adapted.iter_mut().for_each(|v| *v /= norm);
        let k = kr.min(self.bank.len());
        let hits = if k > 0 {
            self.bank.search(&adapted, k).ok()?
        } else {
            Vec::new()
        };
        let hit_ids: Vec<u64> = hits.iter().map(|h| h.0).collect();
        let (recs, _) = self.bank.records(&hit_ids);
        let mut ids = vec![MISSING; kr];
        let mut data = vec![0.0f32; d + kr * s];
        data[..d].copy_from_slice(x);
        // Slots as in `process`: missing first, then the hits from least to most similar.
        let present: Vec<&sona_reasoning::PatternRecord> = hits
            .iter()
            .filter_map(|(id, _)| recs.iter().find(|r| r.id == *id))
            .collect();
        for slot in 0..kr - present.len() {
            features::missing(&mut data[d + slot * s..d + (slot + 1) * s]);
        }
        for (slot, r) in (kr - present.len()..kr).zip(present.iter().rev()) {
            let cos = hits.iter().find(|h| h.0 == r.id).map_or(0.0, |h| h.1);
            ids[slot] = r.id;
            features::pattern(&r.arms, cos, &mut data[d + slot * s..d + (slot + 1) * s]);
        }
        Some(ReplayItem {
            data: data.into(),
            ids: ids.into(),
            tier: 0,
            reward: 0.0,
            propensity: 1.0,
        })
    }

    /// One deep cycle (see the module docs).
    pub(crate) fn deep_learn(&self) -> Result<DeepLearningResult> {
        let mut learner = self.learner.lock();
        let start = Instant::now();
        let cfg = &self.cfg;
        let d = cfg.dim;
        let nr = self.layout.n_params();
        let model = self.model.load_full();
        let mut rng = SeededRng::new(cfg.seed ^ 0x4452_4541_4d53 ^ learner.deep_cycles);

        let stored: Vec<Arc<ReplayItem>> = self.replay.lock().items.clone();
        let (mut train, mut probe) = (Vec::new(), Vec::new());
        for (i, rec) in stored.into_iter().enumerate() {
            if i % 5 == 4 {
                probe.push(rec);
            } else {
                train.push(rec);
            }
        }

        // Pseudo-rehearsal queries around level-0 patterns.
        let patterns: Vec<sona_core::types::Pattern> = self
            .bank
            .patterns()
            .into_iter()
            .filter(|p| p.level == 0)
            .collect();
        let spread = (cfg.deep_spread / (d as f64).sqrt()) as f32;
        let clusters: Vec<Cluster<'_>> = patterns
            .iter()
            .map(|p| Cluster {
                centroid: &p.centroid,
                spread,
                support: p.support,
            })
            .collect();
        let n_syn = if train.is_empty() {
            0
        } else {
            cfg.deep_synthetic
        };
        let xs = synthesize(&clusters, d, n_syn, false, &mut rng)?;
        let synthetic: Vec<Arc<ReplayItem>> = xs
            .chunks_exact(d)
            .filter_map(|x| self.recall_item(&model, x))
            .map(Arc::new)
            .collect();

        let mut ids: Vec<u64> = train
            .iter()
            .chain(&probe)
            .chain(&synthetic)
            .flat_map(|it| it.ids.iter().copied())
            .filter(|&i| i != MISSING)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let cents: HashMap<u64, Arc<[f32]>> = self.centroids(&ids).into_iter().collect();

        let dcfg = DreamConfig {
            steps: cfg.deep_steps,
            batch: cfg.loop_b_batch,
            synthetic_batch: cfg.deep_synthetic_batch,
            distill_weight: cfg.deep_distill_weight as f32,
            beta: 0.4,
            tolerance: cfg.deep_tolerance,
            budget_ms: cfg.deep_budget_ms,
        };
        let mut dream = EngineDream {
            inner: self,
            model: &model,
            theta: flatten(&model.router, &model.base),
            adam: learner.adam.clone(),
            lr: cfg.loop_b_lr as f32,
            ewc: &learner.ewc,
            train,
            probe,
            synthetic,
            cents,
        };
        let (report, accepted_state) = if dream.train.is_empty() || dream.probe.is_empty() {
            (None, None)
        } else {
            let mut pr = PrioritizedReplay::new(dream.train.len(), 0.6, 1e-3)?;
            for _ in 0..dream.train.len() {
                pr.push(None)?;
            }
            let rep = run_cycle(&mut dream, &mut pr, &dcfg, &mut rng)?;
            let state = (rep.accepted && rep.steps > 0).then(|| dream.state());
            (Some(rep), state)
        };
        let probe_size = dream.probe.len();
        drop(dream);

        let mut generation = model.generation;
        if let Some((theta, adam)) = accepted_state {
            let _wr = self.writer.lock();
            let cur = self.model.load_full();
            let next = Model {
                generation: cur.generation + 1,
                router: Arc::new(theta[..nr].to_vec()),
                base: Arc::new(base_of(&theta, nr, &model.base)),
                micro: cur.micro.clone(),
                head: cur.head.clone(),
                readout: cur.readout.clone(),
            };
            if !next.is_finite() {
                return Err(SonaError::Numerical(
                    "the deep cycle produced non-finite weights; cycle discarded".into(),
                ));
            }
            generation = next.generation;
            self.model.store(Arc::new(next));
            learner.adam = adam;
        }

        // Memory maintenance.
        let edges_before = self.bank.graph_edges().len();
        let patterns_merged = self
            .bank
            .consolidate(cfg.deep_consolidate_threshold as f32)?;
        let patterns_pruned = self
            .bank
            .prune(
                PruneRule {
                    min_support: 2,
                    min_reward: 0.05,
                    max_idle_ms: (cfg.deep_prune_idle_s * 1000.0) as u64,
                },
                None,
            )?
            .len();
        let level0 = self.bank.len();
        let hierarchy_levels = if level0 >= 16 {
            self.bank.build_hierarchy(8, 2)?
        } else {
            Vec::new()
        };
        self.bank.decay_graph();
        let edges = self.bank.graph_edges();
        let nodes: Vec<u64> = self
            .bank
            .patterns()
            .iter()
            .filter(|p| p.level == 0)
            .map(|p| p.id)
            .collect();
        let phi = self.phi_of(&nodes, &edges);
        *self.last_phi.lock() = Some(phi);

        learner.deep_cycles += 1;
        self.deep_runs.fetch_add(1, Relaxed);
        let rep = report.unwrap_or_else(no_cycle);
        Ok(DeepLearningResult {
            cycle: learner.deep_cycles,
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            replayed: rep.replayed,
            synthesized: rep.synthesized,
            steps: rep.steps,
            accepted: rep.accepted && rep.steps > 0,
            probe_before: rep.probe_before,
            probe_after: rep.probe_after,
            probe_size,
            out_of_budget: rep.out_of_budget,
            patterns_merged,
            patterns_pruned,
            hierarchy_levels,
            edges_before,
            edges_after: edges.len(),
            phi,
            generation,
        })
    }

    /// Φ of the memory graph over `nodes` (edges to other nodes, e.g. abstractions, are dropped).
    pub(crate) fn phi_of(&self, nodes: &[u64], edges: &[(u64, u64, f32)]) -> f64 {
        let set: std::collections::HashSet<u64> = nodes.iter().copied().collect();
        let inside: Vec<(u64, u64, f32)> = edges
            .iter()
            .copied()
            .filter(|(a, b, _)| set.contains(a) && set.contains(b))
            .collect();
        sona_metrics::phi::phi(nodes, &inside).unwrap_or(f64::NAN)
    }
}

/// The report of a cycle that had nothing to replay (no stored decisions or no probe yet).
fn no_cycle() -> sona_dreams::DreamReport {
    sona_dreams::DreamReport {
        steps: 0,
        replayed: 0,
        synthesized: 0,
        distill_loss: 0.0,
        probe_before: f64::NAN,
        probe_after: f64::NAN,
        accepted: false,
        out_of_budget: false,
        elapsed_ms: 0.0,
    }
}
