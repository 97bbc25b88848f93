//! Loop B: replay, Adam on router + base LoRA with the EWC++ penalty, online Fisher, task
//! boundaries, micro → base merge and pattern extraction (design §1).
//!
//! A cycle copies the router and base weights out of the current snapshot and trains the copy with
//! no engine lock held (only the learner's own mutex, which serialises cycles). It then publishes
//! under the writer lock: the micro adapters are read *at publish time* (so loop-A steps taken during
//! the cycle are kept), merged into the new base / head (so they count exactly once: a merged micro
//! restarts at zero), and router, base and micros are swapped as one snapshot.
//!
//! The EWC++ parameter vector is `θ = [router | base A | base Bᵀ]`. The online Fisher is fed the
//! per-sample gradients of every replayed sample; on a task boundary detected on the inputs, the task
//! is completed with θ from the detector's last stable point.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sona_core::Result;
use sona_ewc::{BoundaryConfig, EwcConfig, EwcPlusPlus, TaskBoundaryDetector};
use sona_lora::merge::merge;
use sona_lora::LoraWeights;

use crate::adam::Adam;
use crate::config::EngineConfig;
use crate::engine::{fresh_lora, with_scratch, Inner, Scratch};
use crate::model::Model;
use crate::replay::ReplayItem;
use crate::router::backward::backward;
use crate::router::{bce_from_logit, forward, Layout};

/// What one loop-B cycle did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningResult {
    pub cycle: u64,
    pub elapsed_ms: f64,
    /// Replayed samples (steps × batch).
    pub replayed: usize,
    pub steps: usize,
    /// Mean bandit loss (BCE of the chosen tier) on a fixed replay sample before and after training.
    pub loss_before: f64,
    pub loss_after: f64,
    /// Whether the micro adapters were merged into the base ones.
    pub merged: bool,
    /// Frobenius norm dropped by the rank truncation of the embedding merge.
    pub merge_discarded: f64,
    pub patterns_added: usize,
    pub patterns_merged: usize,
    pub patterns_total: usize,
    pub boundary_detected: bool,
    pub ewc_tasks: u64,
    pub ewc_penalty: f64,
    /// Generation of the published snapshot.
    pub generation: u64,
}

impl LearningResult {
    /// Every field as a JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a LearningResult serialises")
    }
}

/// State only loop B touches.
pub(crate) struct Learner {
    pub adam: Adam,
    pub ewc: EwcPlusPlus,
    pub detector: Option<TaskBoundaryDetector>,
    pub cycles: u64,
    pub boundaries: u64,
    /// Deep (loop-C) cycles run.
    pub deep_cycles: u64,
}

/// Number of parameters EWC++ and Adam see: router + base A + base Bᵀ.
pub(crate) fn flat_len(cfg: &EngineConfig, layout: &Layout) -> usize {
    layout.n_params() + 2 * cfg.base_rank * cfg.dim
}

impl Learner {
    pub(crate) fn new(cfg: &EngineConfig, layout: &Layout) -> Result<Self> {
        let p = flat_len(cfg, layout);
        let ewc = EwcPlusPlus::new(
            p,
            EwcConfig {
                lambda: cfg.ewc_lambda as f32,
                gamma: cfg.ewc_gamma as f32,
                ..EwcConfig::default()
            },
        )?;
        let detector = if cfg.detect_boundaries {
            Some(TaskBoundaryDetector::new(
                cfg.dim,
                p,
                BoundaryConfig {
                    cooldown: 200,
                    ..BoundaryConfig::default()
                },
            )?)
        } else {
            None
        };
        Ok(Learner {
            adam: Adam::new(p),
            ewc,
            detector,
            cycles: 0,
            boundaries: 0,
            deep_cycles: 0,
        })
    }

    pub(crate) fn bytes(&self) -> usize {
        let p = self.adam.m.len();
        // Adam moments, EWC (F̄, θ̄*, online F) and the detector's windows and snapshots (estimate).
        p * 4 * 2
            + p * 4 * 3
            + self
                .detector
                .as_ref()
                .map_or(0, |d| d.dim() * 4 * 300 + p * 4 * 6)
    }
}

/// Flattens router and base into `θ`.
pub(crate) fn flatten(router: &[f32], base: &LoraWeights) -> Vec<f32> {
    let mut th = Vec::with_capacity(router.len() + base.a.len() + base.bt.len());
    th.extend_from_slice(router);
    th.extend_from_slice(&base.a);
    th.extend_from_slice(&base.bt);
    th
}

/// The base adapter held in `θ` (same shape and scale as `like`).
pub(crate) fn base_of(theta: &[f32], n_router: usize, like: &LoraWeights) -> LoraWeights {
    let mut b = like.clone();
    let na = b.a.len();
    b.a.copy_from_slice(&theta[n_router..n_router + na]);
    b.bt.copy_from_slice(&theta[n_router + na..]);
    b
}

impl Inner {
    /// Forward pass of a stored decision under `router` and `base`, with the micro adapters of
    /// `micro_model`: adapt, normalise (the unit query is left in `sc.unit`), rebuild the input
    /// sequence, run the router (activations in `sc.cache`). Returns the adapted query's norm, or
    /// `None` when it is zero or not finite.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn replay_forward(
        &self,
        router: &[f32],
        base: &LoraWeights,
        micro_model: &Model,
        item: &ReplayItem,
        cents: &HashMap<u64, Arc<[f32]>>,
        sc: &mut Scratch,
    ) -> Option<f32> {
        let d = self.cfg.dim;
        let x = &item.data[..d];
        sc.adapted.clear();
        sc.adapted.extend_from_slice(x);
        base.add_delta(x, &mut sc.adapted);
        micro_model.micro.add_delta(x, &mut sc.adapted);
        let norm = Self::normalize(&sc.adapted, &mut sc.unit).ok()?;
        let lookup = |id: u64| -> Option<&[f32]> { cents.get(&id).map(|c| &c[..]) };
        self.build_seq(&sc.unit, &item.ids, &item.data[d..], &lookup, &mut sc.seq);
        let head = micro_model.head_view();
        forward(&self.layout, router, Some(head), &sc.seq, &mut sc.cache);
        Some(norm)
    }

    /// Gradient w.r.t. `θ = [router | base]` (written into `g`) of the logit gradient in `sc.dl`,
    /// after [`Inner::replay_forward`] of the same item returned `norm`; the gradient w.r.t. the
    /// adapted query is left in `sc.e`. With `g = None` only `sc.e` is computed (a loop-A step on
    /// micro adapters needs no parameter gradient).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn replay_backward(
        &self,
        router: &[f32],
        base: &LoraWeights,
        micro_model: &Model,
        item: &ReplayItem,
        norm: f32,
        sc: &mut Scratch,
        g: Option<&mut [f32]>,
    ) {
        let (d, nr) = (self.cfg.dim, self.layout.n_params());
        sc.dx0.resize(d, 0.0);
        let with_params = g.is_some();
        let (gr, gb): (&mut [f32], &mut [f32]) = match g {
            Some(g) => {
                g.fill(0.0);
                g.split_at_mut(nr)
            }
            None => (&mut [], &mut []),
        };
        backward(
            &self.layout,
            router,
            Some(micro_model.head_view()),
            &sc.seq,
            &sc.cache,
            &sc.dl,
            gr,
            Some(&mut sc.dx0),
            None,
            &mut sc.bw,
        );
        crate::engine::through_normalize(&sc.unit, &sc.dx0, norm, &mut sc.e);
        if with_params {
            let (ga, gbt) = gb.split_at_mut(base.a.len());
            base.grads(&item.data[..d], &sc.e, ga, gbt);
        }
    }

    /// Loss and (when `grad` is given) per-sample gradient w.r.t. `θ = [router | base]` of one
    /// replayed decision, with the micro adapters of `micro_model` in the forward pass.
    #[allow(clippy::too_many_arguments)]
    fn replay_sample(
        &self,
        router: &[f32],
        base: &LoraWeights,
        micro_model: &Model,
        item: &ReplayItem,
        cents: &HashMap<u64, Arc<[f32]>>,
        sc: &mut Scratch,
        grad: Option<&mut [f32]>,
    ) -> Option<f64> {
        let norm = self.replay_forward(router, base, micro_model, item, cents, sc)?;
        let t = item.tier as usize;
        let w = self.weight(item.propensity);
        let loss = w as f64 * bce_from_logit(sc.cache.logits[t] as f64, item.reward as f64);
        if let Some(g) = grad {
            sc.dl.clear();
            sc.dl.resize(self.cfg.n_tiers, 0.0);
            sc.dl[t] = w * (sc.cache.out[t] - item.reward);
            self.replay_backward(router, base, micro_model, item, norm, sc, Some(g));
        }
        Some(loss)
    }

    fn mean_loss(
        &self,
        router: &[f32],
        base: &LoraWeights,
        m: &Model,
        items: &[Arc<ReplayItem>],
        cents: &HashMap<u64, Arc<[f32]>>,
    ) -> f64 {
        if items.is_empty() {
            return f64::NAN;
        }
        with_scratch(|sc| {
            let (mut s, mut n) = (0.0, 0usize);
            for it in items {
                if let Some(l) = self.replay_sample(router, base, m, it, cents, sc, None) {
                    s += l;
                    n += 1;
                }
            }
            s / n.max(1) as f64
        })
    }

    /// One loop-B cycle (see the module docs).
    pub(crate) fn background_learn(&self) -> Result<LearningResult> {
        let mut learner = self.learner.lock();
        let start = Instant::now();
        let consumed = self.since_b.swap(0, Relaxed);
        *self.last_b.lock() = Instant::now();
        let cfg = &self.cfg;
        let nr = self.layout.n_params();
        let model = self.model.load_full();
        let mut theta = flatten(&model.router, &model.base);

        // Task boundaries on the inputs that arrived since the last cycle.
        let recent: Vec<Arc<ReplayItem>> = self.recent.lock().drain(..).collect();
        let mut boundary = false;
        if let Some(det) = learner.detector.as_mut() {
            for it in &recent {
                if det.observe(&it.data[..cfg.dim], Some(&theta))? {
                    boundary = true;
                }
            }
        }
        if boundary {
            learner.boundaries += 1;
            let stable = learner
                .detector
                .as_ref()
                .and_then(|d| d.stable_snapshot())
                .map(|(_, t)| t.to_vec())
                .unwrap_or_else(|| theta.clone());
            if learner.ewc.online().samples() > 0 {
                learner.ewc.complete_task(&stable, None, 1.0)?;
            }
        }

        // Replay.
        let (eval, batches) = {
            let mut r = self.replay.lock();
            let n_eval = 256.min(r.items.len());
            let eval = r.sample(n_eval, cfg.replay_half_life);
            let batches = r.sample(cfg.loop_b_steps * cfg.loop_b_batch, cfg.replay_half_life);
            (eval, batches)
        };
        let mut ids: Vec<u64> = eval
            .iter()
            .chain(&batches)
            .flat_map(|it| it.ids.iter().copied())
            .filter(|&i| i != crate::pending::MISSING)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let cents: HashMap<u64, Arc<[f32]>> = self.centroids(&ids).into_iter().collect();
        let loss_before = self.mean_loss(&model.router, &model.base, &model, &eval, &cents);
        let mut steps = 0;
        if !batches.is_empty() && cfg.loop_b_steps > 0 {
            let p = theta.len();
            let mut gsum = vec![0.0f32; p];
            let mut gi = vec![0.0f32; p];
            with_scratch(|sc| -> Result<()> {
                for batch in batches.chunks(cfg.loop_b_batch) {
                    let base = base_of(&theta, nr, &model.base);
                    gsum.fill(0.0);
                    let mut n = 0usize;
                    for it in batch {
                        let router = &theta[..nr];
                        if self
                            .replay_sample(router, &base, &model, it, &cents, sc, Some(&mut gi))
                            .is_some()
                        {
                            learner.ewc.update_fisher(&gi)?;
                            sona_core::kernels::axpy(1.0, &gi, &mut gsum);
                            n += 1;
                        }
                    }
                    if n == 0 {
                        continue;
                    }
                    sona_core::kernels::scale(1.0 / n as f32, &mut gsum);
                    learner.ewc.apply(&theta, &mut gsum)?;
                    let lr = cfg.loop_b_lr as f32;
                    if learner.adam.step(&mut theta, &gsum, lr) {
                        steps += 1;
                    }
                    // Loop B is background work: let request threads run between minibatches.
                    std::thread::yield_now();
                }
                Ok(())
            })?;
        }
        let new_base = base_of(&theta, nr, &model.base);
        let loss_after = self.mean_loss(&theta[..nr], &new_base, &model, &eval, &cents);
        let ewc_penalty = learner.ewc.penalty(&theta).unwrap_or(f64::NAN);

        // Publish: router + base from this cycle, micros as they are now (merged or kept).
        let (generation, merged, discarded) = {
            let mut wr = self.writer.lock();
            let cur = self.model.load_full();
            let mut router = theta[..nr].to_vec();
            let (base, micro, head, merged, discarded) = if cfg.merge_in_loop_b {
                let mut out = new_base.clone();
                let rep = merge(&new_base, &cur.micro, &mut out)?;
                // Head: W_o += s B A (dense, exact).
                let o = self.layout.offsets();
                let h = &cur.head;
                let (hd, nt) = (self.layout.hidden, self.layout.tiers);
                for kk in 0..h.rank {
                    for t in 0..nt {
                        let b = h.scale * h.bt[kk * nt + t];
                        if b != 0.0 {
                            let row = &mut router[o.wo + t * hd..o.wo + (t + 1) * hd];
                            sona_core::kernels::axpy(b, &h.a[kk * hd..(kk + 1) * hd], row);
                        }
                    }
                }
                let d = cfg.dim;
                let micro = fresh_lora(
                    d,
                    d,
                    cur.micro.rank,
                    cur.micro.scale * cur.micro.rank as f32,
                    &mut wr.rng,
                )?;
                let head = fresh_lora(hd, nt, h.rank, h.scale * h.rank as f32, &mut wr.rng)?;
                wr.micro_opt.reset();
                wr.head_opt.reset();
                (out, micro, head, true, rep.discarded as f64)
            } else {
                (
                    (new_base).clone(),
                    (*cur.micro).clone(),
                    (*cur.head).clone(),
                    false,
                    0.0,
                )
            };
            let next = Model {
                generation: cur.generation + 1,
                router: Arc::new(router),
                base: Arc::new(base),
                micro: Arc::new(micro),
                head: Arc::new(head),
                // Loop A's read-out as it is now (loop B trains the rest around it).
                readout: cur.readout.clone(),
            };
            if !next.is_finite() {
                return Err(sona_core::SonaError::Numerical(
                    "loop B produced non-finite weights; cycle discarded".into(),
                ));
            }
            let g = next.generation;
            self.model.store(Arc::new(next));
            (g, merged, discarded)
        };
        if merged {
            // The base changed basis: its Adam moments no longer apply.
            learner.adam.reset(nr..theta.len());
        }

        // Memory: extraction, graph decay, expiry.
        let rep = self.bank.extract_patterns()?;
        self.enforce_budget()?;
        self.bank.decay_graph();
        self.pending.expire(crate::engine::now_ms());
        learner.cycles += 1;
        self.loop_b_runs.fetch_add(1, Relaxed);
        let _ = consumed;
        let result = LearningResult {
            cycle: learner.cycles,
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            replayed: batches.len(),
            steps,
            loss_before,
            loss_after,
            merged,
            merge_discarded: discarded,
            patterns_added: rep.created,
            patterns_merged: rep.merged,
            patterns_total: rep.patterns,
            boundary_detected: boundary,
            ewc_tasks: learner.ewc.task_count(),
            ewc_penalty,
            generation,
        };
        *self.last_result.lock() = Some(result.clone());
        Ok(result)
    }
}
