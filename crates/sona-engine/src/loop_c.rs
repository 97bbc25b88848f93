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
//! 6. "Creative" edges: pattern pairs recalled together by at least two of the dream's synthetic
//!    queries and not yet linked are candidates (at most [`MAX_CREATIVE`], most frequent first).
//!    One is added only where held-out retrieval does not regress: on the probe decisions that
//!    recalled exactly one endpoint, the reward estimate of the recalled set for the chosen tier
//!    (mean of the patterns' arm means) must be at least as close to the observed reward with the
//!    other endpoint joined — as graph expansion would join it — as without, on at least one
//!    such decision. A pair with no held-out evidence is not added.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sona_core::types::ArmStats;
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
use crate::router::bce_from_logit;

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
    /// Creative-edge candidates (pairs co-recalled in the dream, not yet linked) and how many of
    /// them passed the held-out retrieval check and were added.
    #[serde(default)]
    pub creative_proposed: usize,
    #[serde(default)]
    pub edges_added: usize,
    /// Edges present before maintenance and gone after it (decayed below `w_min`, or their
    /// patterns merged or pruned).
    #[serde(default)]
    pub edges_removed: usize,
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
        self.inner.replay_backward(
            &self.theta[..nr],
            base,
            self.model,
            rec,
            norm,
            sc,
            Some(&mut g),
        );
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
        let mut adapted = vec![0.0; self.cfg.dim];
        model.adapt(x, &mut adapted);
        let mut unit = Vec::new();
        Self::normalize(&adapted, &mut unit).ok()?;
        let (mut found, mut cents, mut feats) = (Vec::new(), Vec::new(), Vec::new());
        let (ids, data) = self
            .recall_slots(x, &unit, &mut found, &mut cents, &mut feats)
            .ok()?;
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
        let fallback = mean_reward(&dream.train);
        let probe = std::mem::take(&mut dream.probe);
        let synthetic = std::mem::take(&mut dream.synthetic);
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
        let edge_set = |e: &[(u64, u64, f32)]| -> HashSet<(u64, u64)> {
            e.iter().map(|&(a, b, _)| (a, b)).collect()
        };
        let before = edge_set(&self.bank.graph_edges());
        let edges_before = before.len();
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
        // The levels just built count against the patterns' share.
        self.enforce_budget()?;
        self.bank.decay_graph();
        let (creative_proposed, edges_added) = self.creative_edges(&synthetic, &probe, fallback)?;
        let edges = self.bank.graph_edges();
        let after = edge_set(&edges);
        let edges_removed = before.difference(&after).count();
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
            creative_proposed,
            edges_added,
            edges_removed,
            phi,
            generation,
        })
    }

    /// Step 6 of the cycle: proposes creative edges from the dream's co-recalls, adds those the
    /// held-out probe supports; returns (proposed, added).
    fn creative_edges(
        &self,
        synthetic: &[Arc<ReplayItem>],
        probe: &[Arc<ReplayItem>],
        fallback: f64,
    ) -> Result<(usize, usize)> {
        let linked: HashSet<(u64, u64)> = self
            .bank
            .graph_edges()
            .into_iter()
            .map(|(a, b, _)| (a, b))
            .collect();
        let cands = dream_pairs(synthetic, &linked, MAX_CREATIVE);
        if cands.is_empty() {
            return Ok((0, 0));
        }
        let mut ids: Vec<u64> = cands.iter().flat_map(|&(a, b)| [a, b]).collect();
        ids.extend(
            probe
                .iter()
                .flat_map(|it| it.ids.iter().copied())
                .filter(|&i| i != MISSING),
        );
        ids.sort_unstable();
        ids.dedup();
        // Patterns merged or pruned by maintenance are absent here and drop out of the check.
        let arms: HashMap<u64, Vec<ArmStats>> = self
            .bank
            .records(&ids)
            .0
            .into_iter()
            .map(|r| (r.id, r.arms))
            .collect();
        let held_out: Vec<HeldOut> = probe
            .iter()
            .map(|it| HeldOut {
                ids: it
                    .ids
                    .iter()
                    .copied()
                    .filter(|i| arms.contains_key(i))
                    .collect(),
                tier: it.tier as usize,
                reward: f64::from(it.reward),
            })
            .collect();
        let alive: Vec<(u64, u64)> = cands
            .into_iter()
            .filter(|(a, b)| arms.contains_key(a) && arms.contains_key(b))
            .collect();
        let kept = vet_edges(&alive, &held_out, &arms, fallback);
        let added = if kept.is_empty() {
            0
        } else {
            self.bank.link(&kept)?
        };
        Ok((alive.len(), added))
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

/// Most creative-edge candidates one cycle examines.
pub const MAX_CREATIVE: usize = 64;

/// Mean reward of stored decisions (0.5, the middle of the reward range, when there are none).
fn mean_reward(items: &[Arc<ReplayItem>]) -> f64 {
    if items.is_empty() {
        return 0.5;
    }
    items.iter().map(|it| f64::from(it.reward)).sum::<f64>() / items.len() as f64
}

/// Pattern pairs `(a < b)` recalled together for at least two synthetic queries and not in
/// `linked`, most frequent first (ties by id), at most `max`.
fn dream_pairs(
    synthetic: &[Arc<ReplayItem>],
    linked: &HashSet<(u64, u64)>,
    max: usize,
) -> Vec<(u64, u64)> {
    let mut counts: HashMap<(u64, u64), usize> = HashMap::new();
    for it in synthetic {
        let mut ids: Vec<u64> = it.ids.iter().copied().filter(|&i| i != MISSING).collect();
        ids.sort_unstable();
        ids.dedup();
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                if !linked.contains(&(a, b)) {
                    *counts.entry((a, b)).or_default() += 1;
                }
            }
        }
    }
    let mut pairs: Vec<((u64, u64), usize)> = counts.into_iter().filter(|&(_, c)| c >= 2).collect();
    pairs.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    pairs.truncate(max);
    pairs.into_iter().map(|(p, _)| p).collect()
}

/// A held-out decision as the creative-edge check sees it: the patterns it recalled (still
/// alive), the tier chosen and the reward observed.
struct HeldOut {
    ids: Vec<u64>,
    tier: usize,
    reward: f64,
}

/// The recalled set's reward estimate for tier `t`: the mean of its patterns' arm means on `t`
/// (patterns that never tried `t` abstain), `fallback` when all abstain.
fn set_estimate(
    ids: impl Iterator<Item = u64>,
    t: usize,
    arms: &HashMap<u64, Vec<ArmStats>>,
    fallback: f64,
) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for id in ids {
        if let Some(a) = arms.get(&id).and_then(|a| a.get(t)).filter(|a| a.count > 0) {
            s += a.mean;
            n += 1;
        }
    }
    if n == 0 {
        fallback
    } else {
        s / n as f64
    }
}

/// The candidates whose other endpoint, joined to the recalled set of every held-out decision
/// that recalled exactly one endpoint, does not raise the squared error of the set's reward
/// estimate summed over those decisions (and that have at least one such decision).
fn vet_edges(
    cands: &[(u64, u64)],
    held_out: &[HeldOut],
    arms: &HashMap<u64, Vec<ArmStats>>,
    fallback: f64,
) -> Vec<(u64, u64)> {
    let mut by_pattern: HashMap<u64, Vec<usize>> = HashMap::new();
    for (k, h) in held_out.iter().enumerate() {
        for &id in &h.ids {
            by_pattern.entry(id).or_default().push(k);
        }
    }
    let none = Vec::new();
    cands
        .iter()
        .copied()
        .filter(|&(a, b)| {
            let (mut without, mut with, mut n) = (0.0, 0.0, 0usize);
            for (p, other) in [(a, b), (b, a)] {
                for &k in by_pattern.get(&p).unwrap_or(&none) {
                    let h = &held_out[k];
                    if h.ids.contains(&other) {
                        continue;
                    }
                    let e0 = set_estimate(h.ids.iter().copied(), h.tier, arms, fallback);
                    let joined = h.ids.iter().copied().chain(std::iter::once(other));
                    let e1 = set_estimate(joined, h.tier, arms, fallback);
                    without += (e0 - h.reward).powi(2);
                    with += (e1 - h.reward).powi(2);
                    n += 1;
                }
            }
            n > 0 && with <= without
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(ids: &[u64], tier: u8, reward: f32) -> Arc<ReplayItem> {
        Arc::new(ReplayItem {
            data: vec![0.0; 4].into(),
            ids: ids.into(),
            tier,
            reward,
            propensity: 1.0,
        })
    }

    fn arm(mean: f64) -> ArmStats {
        ArmStats {
            count: 5,
            mean,
            m2: 0.0,
        }
    }

    #[test]
    fn dream_pairs_counts_co_recalls_and_skips_linked_and_single_ones() {
        let syn = [
            item(&[1, 2, MISSING, 3], 0, 0.0),
            item(&[2, 1], 0, 0.0),
            item(&[3, 1, 2], 0, 0.0),
            item(&[4, 5], 0, 0.0),
        ];
        let linked: HashSet<(u64, u64)> = [(1, 3)].into();
        // (1,2) ×3, (2,3) ×2, (1,3) linked, (4,5) once: not a candidate.
        assert_eq!(dream_pairs(&syn, &linked, 10), vec![(1, 2), (2, 3)]);
        assert_eq!(dream_pairs(&syn, &linked, 1), vec![(1, 2)]);
        assert!(dream_pairs(&[], &linked, 10).is_empty());
    }

    #[test]
    fn an_edge_is_kept_only_where_held_out_retrieval_does_not_regress() {
        // Pattern 1 predicts tier 0 badly (0.2) for decisions that earned 0.9; pattern 2 knows
        // (0.9): joining 2 to what recalled 1 helps. Pattern 3 is wrong (0.0): joining it hurts.
        // Pattern 4 never appears in the held-out set: no evidence, not added.
        let arms: HashMap<u64, Vec<ArmStats>> = [
            (1, vec![arm(0.2), arm(0.5)]),
            (2, vec![arm(0.9), arm(0.5)]),
            (3, vec![arm(0.0), arm(0.5)]),
            (4, vec![arm(0.9), arm(0.5)]),
            (5, vec![arm(0.9), arm(0.5)]),
        ]
        .into();
        let held = vec![
            HeldOut {
                ids: vec![1],
                tier: 0,
                reward: 0.9,
            },
            HeldOut {
                ids: vec![1, 5],
                tier: 0,
                reward: 0.8,
            },
        ];
        let kept = vet_edges(&[(1, 2), (1, 3), (4, 5), (3, 4)], &held, &arms, 0.5);
        // (4,5): decision 2 recalled 5 but not 4, whose arm (0.9) joins 5's (0.9): error unchanged.
        assert_eq!(kept, vec![(1, 2), (4, 5)]);
        // A set whose patterns never tried the tier falls back to the prior.
        assert_eq!(set_estimate([1, 2].into_iter(), 7, &arms, 0.5), 0.5);
        assert!((set_estimate([1, 2].into_iter(), 0, &arms, 0.5) - 0.55).abs() < 1e-12);
    }
}
