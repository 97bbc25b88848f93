//! [`RouterClassifier`]: SONA's router as a classifier, for the continual-learning benchmark
//! (design §11.2) — the same FastGRNN cell, backward pass, Adam, EWC++ and dream cycle the engine
//! uses, on labelled vectors instead of bandit feedback.
//!
//! An input vector is a one-step sequence (no recalled patterns), the `T` head outputs are class
//! logits under softmax cross-entropy (logit gradient `softmax − onehot`). Protection against
//! forgetting, each optional:
//! - EWC++: per-sample gradients of the current task feed the online Fisher, `end_task` folds the
//!   task into the quadratic, whose gradient is added to every step;
//! - GPM (EWC++'s gradient projection, design §4): `end_task(Some(xs))` adds the task's inputs to
//!   each layer's protected subspace ([`LayerProjection`]); later task gradients are projected off
//!   it before the EWC++ gradient is added, and so is Adam's update. It keeps no example: only the
//!   bases;
//! - replay: a reservoir (Algorithm R) of past examples over one fixed capacity, sampled through
//!   [`PrioritizedReplay`] into every minibatch;
//! - dreams: [`sona_dreams::run_cycle`] over the stored examples plus pseudo-rehearsal inputs
//!   around the stored classes' centroids, distilled toward the frozen pre-cycle model; every fifth
//!   stored example is held out as the cycle's probe.

use std::cell::RefCell;

use sona_core::{validate, Result, SeededRng, SonaError};
use sona_dreams::rehearsal::{synthesize, Cluster};
use sona_dreams::{run_cycle, DreamModel, DreamReport, PrioritizedReplay};
use sona_ewc::{EwcConfig, EwcPlusPlus};

pub use sona_dreams::DreamConfig;

use crate::adam::Adam;
use crate::router::backward::{backward, Scratch};
use crate::router::projection::LayerProjection;
use crate::router::{forward, Cache, Layout};

/// Most examples one call may take.
pub const MAX_EXAMPLES: usize = 1 << 22;
/// Every `PROBE_EVERY`-th stored example is held out as the dream cycle's probe.
const PROBE_EVERY: usize = 5;

/// Sizes and hyper-parameters of a [`RouterClassifier`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierConfig {
    pub input: usize,
    pub classes: usize,
    pub hidden: usize,
    pub rank_w: usize,
    pub rank_u: usize,
    pub lr: f32,
    /// EWC++ strength; `0` disables EWC++.
    pub ewc_lambda: f32,
    /// Online-Fisher EMA decay per sample.
    pub ewc_gamma: f32,
    /// Per-sample gradients per minibatch fed to the online Fisher.
    pub fisher_batch: usize,
    /// Stored examples (reservoir); `0` disables the store (no replay, no dreams).
    pub replay_capacity: usize,
    /// Stored examples replayed per minibatch during `fit` (`0`: store only, for dreams).
    pub replay_batch: usize,
    /// Weigh the replay minibatch like the tasks it stands for (the number of `end_task` calls so
    /// far, as joint training would), instead of like one task.
    pub replay_balanced: bool,
    /// GPM energy threshold in `(0, 1]`; `0` disables the projection.
    pub gpm_threshold: f32,
    /// Rows of a task's inputs `end_task` builds the GPM bases from (at most
    /// [`sona_ewc::gpm::MAX_ROWS`], evenly spaced over the rows given).
    pub gpm_examples: usize,
    pub seed: u64,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            input: 64,
            classes: 10,
            hidden: 128,
            rank_w: 32,
            rank_u: 4,
            lr: 2e-3,
            ewc_lambda: 0.0,
            ewc_gamma: 0.995,
            fisher_batch: 8,
            replay_capacity: 0,
            replay_batch: 32,
            replay_balanced: false,
            gpm_threshold: 0.0,
            gpm_examples: 256,
            seed: 0,
        }
    }
}

impl ClassifierConfig {
    fn validate(&self) -> Result<()> {
        validate::check_size("input", self.input, 1, 1 << 16)?;
        validate::check_size("classes", self.classes, 2, 64)?;
        validate::check_size("hidden", self.hidden, 1, 1024)?;
        validate::check_range("lr", f64::from(self.lr), 1e-9, 1.0)?;
        validate::check_range("ewc_lambda", f64::from(self.ewc_lambda), 0.0, 1e9)?;
        validate::check_size("fisher_batch", self.fisher_batch, 0, 4096)?;
        validate::check_size("replay_capacity", self.replay_capacity, 0, 1 << 20)?;
        validate::check_size("replay_batch", self.replay_batch, 0, 4096)?;
        validate::check_range("gpm_threshold", f64::from(self.gpm_threshold), 0.0, 1.0)?;
        validate::check_size(
            "gpm_examples",
            self.gpm_examples,
            1,
            sona_ewc::gpm::MAX_ROWS,
        )?;
        Ok(())
    }
}

/// The learned part: parameters, optimizer, EWC++ (penalty and projection).
#[derive(Debug, Clone)]
struct Net {
    layout: Layout,
    theta: Vec<f32>,
    adam: Adam,
    ewc: Option<EwcPlusPlus>,
    gpm: Option<LayerProjection>,
    lr: f32,
}

/// Forward/backward buffers (reused).
#[derive(Debug, Clone, Default)]
struct Work {
    cache: Cache<f32>,
    scratch: Scratch<f32>,
    dl: Vec<f32>,
}

/// Softmax of `logits` into `out`.
fn softmax(logits: &[f32], out: &mut Vec<f32>) {
    out.clear();
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    out.extend(logits.iter().map(|&g| (g - m).exp()));
    let s: f32 = out.iter().sum();
    out.iter_mut().for_each(|p| *p /= s);
}

impl Net {
    fn probs(&self, x: &[f32], w: &mut Work, out: &mut Vec<f32>) {
        forward(&self.layout, &self.theta, None, x, &mut w.cache);
        softmax(&w.cache.logits, out);
    }

    /// Adds `weight ×` the gradient of the loss whose logit gradient is `probs − target` into
    /// `grad` (forward already run on `x`).
    fn add_grad(&self, x: &[f32], w: &mut Work, weight: f32, grad: &mut [f32]) {
        let Work { cache, scratch, dl } = w;
        dl.iter_mut().for_each(|v| *v *= weight);
        backward(
            &self.layout,
            &self.theta,
            None,
            x,
            cache,
            dl,
            grad,
            None,
            None,
            scratch,
        );
    }

    /// Softmax cross-entropy of `x` against label `y`: its weighted gradient into `grad`; returns
    /// `(loss, 1 − p_y)`.
    fn ce_grad(
        &self,
        x: &[f32],
        y: usize,
        w: &mut Work,
        weight: f32,
        grad: &mut [f32],
    ) -> (f64, f32) {
        let mut p = std::mem::take(&mut w.dl);
        self.probs(x, w, &mut p);
        let py = p[y];
        p[y] -= 1.0;
        w.dl = p;
        self.add_grad(x, w, weight, grad);
        (-(f64::from(py).max(1e-12)).ln(), 1.0 - py)
    }

    /// The inputs of the layers GPM protects — the query, `p = W₂x`, the final state `h` — for
    /// `rows` evenly spaced rows of `xs` (`n × input`, checked), each as a `rows × width` block.
    fn layer_inputs(&self, work: &mut Work, xs: &[f32], n: usize, rows: usize) -> [Vec<f32>; 3] {
        let (l, d) = (self.layout, self.layout.input);
        let (mut sx, mut sp, mut sh) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rows {
            let i = r * n / rows;
            let x = &xs[i * d..(i + 1) * d];
            forward(&l, &self.theta, None, x, &mut work.cache);
            sx.extend_from_slice(x);
            sp.extend_from_slice(&work.cache.p[..l.rank_w]);
            sh.extend_from_slice(work.cache.h_final(l.hidden));
        }
        [sx, sp, sh]
    }

    /// GPM projection of the task gradient, the EWC++ penalty gradient, then one Adam step whose
    /// update is projected again; refused (nothing changes) when non-finite. Adam divides each
    /// coordinate by its own scale, which turns a projected gradient back toward the protected
    /// directions (and its momentum carries the last task's gradient into the next): projecting
    /// the update is what keeps the step off them (validation: Permuted-Digits forgetting 0.28× →
    /// 0.19× of none, docs/benchmarks.md).
    fn step(&mut self, grad: &mut [f32]) -> bool {
        if let Some(g) = &self.gpm {
            if g.project(grad).is_err() {
                return false;
            }
        }
        if let Some(e) = &self.ewc {
            if e.apply(&self.theta, grad).is_err() {
                return false;
            }
        }
        let mut next = self.theta.clone();
        let mut adam = self.adam.clone();
        if !adam.step(&mut next, grad, self.lr) || !next.iter().all(|v| v.is_finite()) {
            return false;
        }
        if let Some(g) = &self.gpm {
            // `next` holds the update while it is projected.
            next.iter_mut().zip(&self.theta).for_each(|(n, t)| *n -= t);
            if g.project(&mut next).is_err() {
                return false;
            }
            next.iter_mut().zip(&self.theta).for_each(|(n, t)| *n += t);
        }
        self.theta = next;
        self.adam = adam;
        true
    }
}

/// Past examples kept for replay and dreams (a reservoir over one capacity).
#[derive(Debug, Clone)]
struct Store {
    xs: Vec<f32>,
    ys: Vec<usize>,
    seen: u64,
    replay: PrioritizedReplay,
}

/// SONA's router trained as a classifier (see the module docs).
#[derive(Debug, Clone)]
pub struct RouterClassifier {
    cfg: ClassifierConfig,
    net: Net,
    store: Option<Store>,
    rng: SeededRng,
    work: Work,
    /// `end_task` calls so far (the weight of a balanced replay minibatch).
    tasks_ended: usize,
}

impl RouterClassifier {
    pub fn new(cfg: ClassifierConfig) -> Result<Self> {
        cfg.validate()?;
        let layout = Layout::new(
            cfg.input,
            0,
            cfg.hidden,
            cfg.rank_w,
            cfg.rank_u,
            cfg.classes,
        )?;
        let theta = layout.init(cfg.seed);
        let gpm = if cfg.gpm_threshold > 0.0 {
            Some(LayerProjection::new(layout)?)
        } else {
            None
        };
        let ewc = if cfg.ewc_lambda > 0.0 {
            Some(EwcPlusPlus::new(
                theta.len(),
                EwcConfig {
                    lambda: cfg.ewc_lambda,
                    gamma: cfg.ewc_gamma,
                    ..EwcConfig::default()
                },
            )?)
        } else {
            None
        };
        let store = if cfg.replay_capacity > 0 {
            Some(Store {
                xs: Vec::new(),
                ys: Vec::new(),
                seen: 0,
                replay: PrioritizedReplay::new(cfg.replay_capacity, 0.6, 1e-3)?,
            })
        } else {
            None
        };
        Ok(RouterClassifier {
            net: Net {
                adam: Adam::new(theta.len()),
                layout,
                theta,
                ewc,
                gpm,
                lr: cfg.lr,
            },
            rng: SeededRng::new(cfg.seed ^ 0xC1A5_51F1),
            store,
            cfg,
            work: Work::default(),
            tasks_ended: 0,
        })
    }

    pub fn config(&self) -> &ClassifierConfig {
        &self.cfg
    }

    pub fn n_params(&self) -> usize {
        self.net.theta.len()
    }

    pub fn parameters(&self) -> &[f32] {
        &self.net.theta
    }

    /// Examples currently stored.
    pub fn stored(&self) -> usize {
        self.store.as_ref().map_or(0, |s| s.ys.len())
    }

    /// Checks `xs` (`n × input`, finite) and, when given, `ys` (`n` labels < classes); returns `n`.
    fn check(&self, xs: &[f32], ys: Option<&[i64]>) -> Result<usize> {
        let d = self.cfg.input;
        if xs.is_empty() || !xs.len().is_multiple_of(d) || xs.len() / d > MAX_EXAMPLES {
            return Err(SonaError::Dimension {
                what: "xs".into(),
                expected: format!("(n, {d}) with 1 ≤ n ≤ {MAX_EXAMPLES}"),
                got: format!("{} values", xs.len()),
            });
        }
        validate::check_finite("xs", xs)?;
        let n = xs.len() / d;
        if let Some(ys) = ys {
            if ys.len() != n {
                return Err(SonaError::len_mismatch("ys", n, ys.len()));
            }
            let k = self.cfg.classes as i64;
            if let Some(bad) = ys.iter().find(|&&y| !(0..k).contains(&y)) {
                return Err(SonaError::invalid(format!(
                    "labels must be in [0, {k}), got {bad}"
                )));
            }
        }
        Ok(n)
    }

    /// Trains `epochs` passes over `(xs, ys)` in shuffled minibatches of `batch` (plus
    /// `replay_batch` stored examples each, when the store is on); returns the mean training loss
    /// of the last epoch. Bad input changes nothing.
    pub fn fit(&mut self, xs: &[f32], ys: &[i64], epochs: usize, batch: usize) -> Result<f64> {
        let n = self.check(xs, Some(ys))?;
        validate::check_size("epochs", epochs, 1, 10_000)?;
        validate::check_size("batch", batch, 1, 1 << 16)?;
        let d = self.cfg.input;
        let p = self.net.theta.len();
        let mut grad = validate::try_zeros("gradient", p)?;
        let mut g1 = validate::try_zeros("per-sample gradient", p)?;
        let mut order: Vec<usize> = (0..n).collect();
        let mut last = 0.0;
        for _ in 0..epochs {
            self.rng.shuffle(&mut order);
            let mut loss_sum = 0.0;
            for chunk in order.chunks(batch) {
                grad.fill(0.0);
                let w = 1.0 / chunk.len() as f32;
                for (k, &i) in chunk.iter().enumerate() {
                    let x = &xs[i * d..(i + 1) * d];
                    let y = ys[i] as usize;
                    if k < self.cfg.fisher_batch && self.net.ewc.is_some() {
                        g1.fill(0.0);
                        let (l, _) = self.net.ce_grad(x, y, &mut self.work, 1.0, &mut g1);
                        loss_sum += l;
                        if let Some(e) = self.net.ewc.as_mut() {
                            e.update_fisher(&g1)?;
                        }
                        sona_core::kernels::axpy(w, &g1, &mut grad);
                    } else {
                        let (l, _) = self.net.ce_grad(x, y, &mut self.work, w, &mut grad);
                        loss_sum += l;
                    }
                }
                self.replay_into(&mut grad)?;
                // A refused (non-finite) step is skipped; the data was validated finite.
                self.net.step(&mut grad);
            }
            last = loss_sum / n as f64;
        }
        Ok(last)
    }

    /// Adds the gradient of a prioritized replay minibatch (weighted like the task minibatch).
    fn replay_into(&mut self, grad: &mut [f32]) -> Result<()> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        if self.cfg.replay_batch == 0 || store.ys.is_empty() {
            return Ok(());
        }
        let d = self.cfg.input;
        let picks = store
            .replay
            .sample(self.cfg.replay_batch, 0.5, &mut self.rng);
        let share = if self.cfg.replay_balanced {
            self.tasks_ended.max(1) as f32
        } else {
            1.0
        };
        let scale = share / picks.len().max(1) as f32;
        for (slot, w) in picks {
            let x = &store.xs[slot * d..(slot + 1) * d];
            let (_, e) = self
                .net
                .ce_grad(x, store.ys[slot], &mut self.work, w * scale, grad);
            store.replay.update(slot, f64::from(e))?;
        }
        Ok(())
    }

    /// Class logits, `n × classes` row-major.
    pub fn logits(&mut self, xs: &[f32]) -> Result<Vec<f32>> {
        let n = self.check(xs, None)?;
        let d = self.cfg.input;
        let mut out = Vec::new();
        out.try_reserve_exact(n * self.cfg.classes)
            .map_err(|_| SonaError::invalid("too many examples"))?;
        for x in xs.chunks_exact(d) {
            forward(
                &self.net.layout,
                &self.net.theta,
                None,
                x,
                &mut self.work.cache,
            );
            out.extend_from_slice(&self.work.cache.logits);
        }
        Ok(out)
    }

    /// The most likely class of every row.
    pub fn predict(&mut self, xs: &[f32]) -> Result<Vec<i64>> {
        let k = self.cfg.classes;
        let lg = self.logits(xs)?;
        Ok(lg
            .chunks_exact(k)
            .map(|r| {
                (0..k)
                    .max_by(|&a, &b| r[a].total_cmp(&r[b]).then(b.cmp(&a)))
                    .unwrap_or(0) as i64
            })
            .collect())
    }

    /// Fraction of rows predicted correctly.
    pub fn accuracy(&mut self, xs: &[f32], ys: &[i64]) -> Result<f64> {
        let n = self.check(xs, Some(ys))?;
        let pred = self.predict(xs)?;
        let ok = pred.iter().zip(ys).filter(|(a, b)| a == b).count();
        Ok(ok as f64 / n as f64)
    }

    /// Offers examples to the reservoir (a uniform sample of everything offered so far).
    /// A no-op without a store.
    pub fn remember(&mut self, xs: &[f32], ys: &[i64]) -> Result<()> {
        self.check(xs, Some(ys))?;
        let d = self.cfg.input;
        let cap = self.cfg.replay_capacity;
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        for (x, &y) in xs.chunks_exact(d).zip(ys) {
            store.seen += 1;
            let slot = if store.ys.len() < cap {
                store
                    .xs
                    .try_reserve(d)
                    .map_err(|_| SonaError::invalid("store full"))?;
                store.xs.extend_from_slice(x);
                store.ys.push(y as usize);
                store.ys.len() - 1
            } else {
                let s = self.rng.below(store.seen) as usize;
                if s >= cap {
                    continue;
                }
                store.xs[s * d..(s + 1) * d].copy_from_slice(x);
                store.ys[s] = y as usize;
                s
            };
            store.replay.push(Some(slot))?;
        }
        Ok(())
    }

    /// Ends the current task: folds it into EWC++ (when on) and, with GPM on, adds the layer
    /// inputs of `xs` (the task's examples, `n × input`; required then, ignored otherwise) to the
    /// protected subspaces. All or nothing.
    pub fn end_task(&mut self, xs: Option<&[f32]>) -> Result<()> {
        let gpm = match (&self.net.gpm, xs) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(SonaError::invalid(
                    "end_task needs the task's inputs when GPM is on (gpm_threshold > 0)",
                ))
            }
            (Some(g), Some(xs)) => {
                let n = self.check(xs, None)?;
                let rows = n.min(self.cfg.gpm_examples);
                let [sx, sp, sh] = self.net.layer_inputs(&mut self.work, xs, n, rows);
                Some(g.with_task(&sx, &sp, &sh, rows, self.cfg.gpm_threshold)?)
            }
        };
        // No sample since the last task ended (e.g. `end_task` twice): nothing new to protect.
        if let Some(e) = self.net.ewc.as_mut().filter(|e| e.online().samples() > 0) {
            e.complete_task(&self.net.theta, None, 1.0)?;
        }
        if gpm.is_some() {
            self.net.gpm = gpm;
        }
        self.tasks_ended = self.tasks_ended.saturating_add(1);
        Ok(())
    }

    /// Tasks protected by GPM and the sizes of its `x`, `p`, `h` bases (`None` when GPM is off).
    pub fn gpm_bases(&self) -> Option<(usize, [usize; 3])> {
        self.net.gpm.as_ref().map(|g| (g.tasks(), g.basis_sizes()))
    }

    /// One dream cycle over the store: prioritized replay of stored examples, distillation on
    /// `synthetic` pseudo-rehearsal inputs around the stored classes' centroids toward the frozen
    /// pre-cycle model, EWC++ penalty; kept only if the held-out stored examples do not regress.
    pub fn dream(&mut self, cfg: &DreamConfig, synthetic: usize) -> Result<DreamReport> {
        cfg.validate()?;
        validate::check_size("synthetic", synthetic, 0, 1 << 16)?;
        let d = self.cfg.input;
        let Some(store) = self.store.as_mut() else {
            return Err(SonaError::invalid(
                "dream needs a store (replay_capacity > 0)",
            ));
        };
        let syn = class_rehearsal(
            &store.xs,
            &store.ys,
            d,
            self.cfg.classes,
            synthetic,
            &mut self.rng,
        )?;
        let mut view = DreamView {
            net: &mut self.net,
            xs: &store.xs,
            ys: &store.ys,
            syn,
            d,
            work: RefCell::new(Work::default()),
        };
        run_cycle(&mut view, &mut store.replay, cfg, &mut self.rng)
    }
}

/// Pseudo-rehearsal inputs around each stored class's centroid (spread: its mean per-coordinate
/// standard deviation), clusters drawn in proportion to their support.
fn class_rehearsal(
    xs: &[f32],
    ys: &[usize],
    d: usize,
    classes: usize,
    n: usize,
    rng: &mut SeededRng,
) -> Result<Vec<f32>> {
    let mut sum = vec![0.0f64; classes * d];
    let mut sq = vec![0.0f64; classes * d];
    let mut cnt = vec![0u32; classes];
    for (x, &y) in xs.chunks_exact(d).zip(ys) {
        cnt[y] += 1;
        for j in 0..d {
            let v = f64::from(x[j]);
            sum[y * d + j] += v;
            sq[y * d + j] += v * v;
        }
    }
    let mut cents = vec![0.0f32; classes * d];
    let mut spreads = vec![0.0f32; classes];
    for c in 0..classes {
        if cnt[c] == 0 {
            continue;
        }
        let k = f64::from(cnt[c]);
        let mut var = 0.0;
        for j in 0..d {
            let m = sum[c * d + j] / k;
            cents[c * d + j] = m as f32;
            var += (sq[c * d + j] / k - m * m).max(0.0);
        }
        spreads[c] = (var / d as f64).sqrt() as f32;
    }
    let clusters: Vec<Cluster<'_>> = (0..classes)
        .filter(|&c| cnt[c] > 0)
        .map(|c| Cluster {
            centroid: &cents[c * d..(c + 1) * d],
            spread: spreads[c],
            support: cnt[c],
        })
        .collect();
    synthesize(&clusters, d, n, false, rng)
}

/// The classifier seen by [`run_cycle`]: its network, the store and this cycle's synthetic inputs.
struct DreamView<'a> {
    net: &'a mut Net,
    xs: &'a [f32],
    ys: &'a [usize],
    syn: Vec<f32>,
    d: usize,
    work: RefCell<Work>,
}

impl DreamView<'_> {
    fn is_probe(slot: usize) -> bool {
        slot % PROBE_EVERY == PROBE_EVERY - 1
    }
}

impl DreamModel for DreamView<'_> {
    type State = (Vec<f32>, Adam);

    fn n_params(&self) -> usize {
        self.net.theta.len()
    }
    fn n_outputs(&self) -> usize {
        self.net.layout.tiers
    }
    fn n_synthetic(&self) -> usize {
        self.syn.len() / self.d
    }
    fn state(&self) -> Self::State {
        (self.net.theta.clone(), self.net.adam.clone())
    }
    fn restore(&mut self, s: Self::State) {
        (self.net.theta, self.net.adam) = s;
    }
    fn replay_grad(&self, slot: usize, weight: f32, grad: &mut [f32]) -> Option<f32> {
        if Self::is_probe(slot) || slot >= self.ys.len() {
            return None;
        }
        let x = &self.xs[slot * self.d..(slot + 1) * self.d];
        let (_, e) = self
            .net
            .ce_grad(x, self.ys[slot], &mut self.work.borrow_mut(), weight, grad);
        Some(e)
    }
    fn synthetic_outputs(&self, i: usize, out: &mut [f32]) {
        let mut p = Vec::new();
        let x = &self.syn[i * self.d..(i + 1) * self.d];
        self.net.probs(x, &mut self.work.borrow_mut(), &mut p);
        out.copy_from_slice(&p);
    }
    /// Cross-entropy toward the teacher's soft labels (logit gradient `p − t`); returns
    /// `½‖p − t‖²`.
    fn distill_grad(&self, i: usize, teacher: &[f32], weight: f32, grad: &mut [f32]) -> f32 {
        let x = &self.syn[i * self.d..(i + 1) * self.d];
        let mut w = self.work.borrow_mut();
        let mut p = std::mem::take(&mut w.dl);
        self.net.probs(x, &mut w, &mut p);
        let mut loss = 0.0;
        for (pk, &tk) in p.iter_mut().zip(teacher) {
            *pk -= tk;
            loss += 0.5 * *pk * *pk;
        }
        w.dl = p;
        self.net.add_grad(x, &mut w, weight, grad);
        loss
    }
    fn penalty_grad(&self, _grad: &mut [f32]) -> Result<()> {
        // `Net::step` adds the EWC++ gradient itself (as in `fit`).
        Ok(())
    }
    fn step(&mut self, grad: &[f32]) -> bool {
        let mut g = grad.to_vec();
        self.net.step(&mut g)
    }
    fn probe(&self) -> f64 {
        let mut w = self.work.borrow_mut();
        let mut p = Vec::new();
        let (mut ok, mut n) = (0usize, 0usize);
        for (slot, x) in self.xs.chunks_exact(self.d).enumerate() {
            if !Self::is_probe(slot) {
                continue;
            }
            self.net.probs(x, &mut w, &mut p);
            let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b]));
            ok += usize::from(best == Some(self.ys[slot]));
            n += 1;
        }
        if n == 0 {
            1.0
        } else {
            ok as f64 / n as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tasks of two Gaussian classes each in 8-d, classes around separate directions.
    fn task(rng: &mut SeededRng, classes: [i64; 2], n: usize) -> (Vec<f32>, Vec<i64>) {
        let mut xs = vec![0.0f32; n * 8];
        let mut ys = vec![0i64; n];
        for i in 0..n {
            let c = classes[i % 2];
            let row = &mut xs[i * 8..(i + 1) * 8];
            rng.fill_normal(row, 0.3);
            // Classes 2 and 3 share a coordinate with 0 and 1: learning them alone overwrites those.
            row[c as usize] += 1.5;
            if c >= 2 {
                row[c as usize - 2] += 1.0;
            }
            ys[i] = c;
        }
        (xs, ys)
    }

    fn cfg() -> ClassifierConfig {
        ClassifierConfig {
            input: 8,
            classes: 4,
            hidden: 16,
            rank_w: 8,
            rank_u: 2,
            lr: 5e-3,
            ..ClassifierConfig::default()
        }
    }

    #[test]
    fn learns_and_rejects_bad_input_unchanged() {
        let mut rng = SeededRng::new(1);
        let (xs, ys) = task(&mut rng, [0, 1], 200);
        let mut m = RouterClassifier::new(cfg()).unwrap();
        let before = m.accuracy(&xs, &ys).unwrap();
        m.fit(&xs, &ys, 10, 16).unwrap();
        let after = m.accuracy(&xs, &ys).unwrap();
        assert!(after > 0.95 && after > before, "{before} → {after}");
        let snap = m.parameters().to_vec();
        assert!(m.fit(&xs[..7], &ys[..1], 1, 4).is_err());
        assert!(m.fit(&xs, &ys[..10], 1, 4).is_err());
        let mut bad = ys.clone();
        bad[3] = 4;
        assert!(m.fit(&xs, &bad, 1, 4).is_err());
        bad[3] = -1;
        assert!(m.fit(&xs, &bad, 1, 4).is_err());
        let mut nan = xs.clone();
        nan[5] = f32::NAN;
        assert!(m.fit(&nan, &ys, 1, 4).is_err());
        assert!(m.fit(&xs, &ys, 0, 4).is_err());
        assert!(m.fit(&xs, &ys, 1, 0).is_err());
        assert!(m.predict(&[]).is_err());
        assert!(m.remember(&nan, &ys).is_err());
        assert!(m.dream(&DreamConfig::default(), 10).is_err(), "no store");
        assert_eq!(m.parameters(), &snap[..]);
        assert!(RouterClassifier::new(ClassifierConfig {
            classes: 1,
            ..cfg()
        })
        .is_err());
        assert!(RouterClassifier::new(ClassifierConfig {
            lr: f32::NAN,
            ..cfg()
        })
        .is_err());
    }

    #[test]
    fn balanced_replay_weighs_the_store_by_tasks_ended() {
        let mut rng = SeededRng::new(3);
        let (xa, ya) = task(&mut rng, [0, 1], 64);
        let (xb, yb) = task(&mut rng, [2, 3], 64);
        let run = |balanced: bool, tasks: usize| {
            let mut m = RouterClassifier::new(ClassifierConfig {
                replay_capacity: 64,
                replay_batch: 8,
                replay_balanced: balanced,
                ..cfg()
            })
            .unwrap();
            m.remember(&xa, &ya).unwrap();
            for _ in 0..tasks {
                m.end_task(None).unwrap();
            }
            m.fit(&xb, &yb, 1, 16).unwrap();
            m.parameters().to_vec()
        };
        // One task behind: the store stands for one task either way, so the same steps.
        assert_eq!(run(true, 1), run(false, 1));
        // Three tasks behind: the balanced replay gradient is 3× heavier.
        assert_ne!(run(true, 3), run(false, 3));
    }

    /// Accuracy on task A after training A then B, for a configuration.
    fn forgetting(c: ClassifierConfig, dream: bool) -> f64 {
        let mut rng = SeededRng::new(7);
        let (xa, ya) = task(&mut rng, [0, 1], 200);
        let (xb, yb) = task(&mut rng, [2, 3], 200);
        let (ta, tya) = task(&mut rng, [0, 1], 200);
        let mut m = RouterClassifier::new(c).unwrap();
        m.fit(&xa, &ya, 10, 16).unwrap();
        m.end_task(Some(&xa)).unwrap();
        m.remember(&xa, &ya).unwrap();
        for _ in 0..20 {
            m.fit(&xb, &yb, 1, 16).unwrap();
            if dream {
                m.dream(
                    &DreamConfig {
                        steps: 20,
                        batch: 16,
                        tolerance: 0.05,
                        ..DreamConfig::default()
                    },
                    64,
                )
                .unwrap();
            }
        }
        m.accuracy(&ta, &tya).unwrap()
    }

    #[test]
    fn protection_keeps_the_old_task() {
        let none = forgetting(cfg(), false);
        let replay = forgetting(
            ClassifierConfig {
                replay_capacity: 50,
                replay_batch: 16,
                ..cfg()
            },
            false,
        );
        let dream = forgetting(
            ClassifierConfig {
                replay_capacity: 50,
                replay_batch: 0,
                ..cfg()
            },
            true,
        );
        let ewc = forgetting(
            ClassifierConfig {
                ewc_lambda: 1e3,
                ..cfg()
            },
            false,
        );
        assert!(none < 0.8, "unprotected should forget: {none}");
        assert!(replay > none + 0.1, "replay {replay} vs none {none}");
        assert!(dream > none + 0.1, "dream {dream} vs none {none}");
        assert!(ewc > none + 0.1, "ewc {ewc} vs none {none}");
        let gpm = forgetting(
            ClassifierConfig {
                gpm_threshold: 0.97,
                ..cfg()
            },
            false,
        );
        assert!(gpm > none + 0.1, "gpm {gpm} vs none {none}");
    }

    /// Task A's inputs span a 4-d subspace of the 8-d input at a slant (not along the axes, where
    /// Adam's per-coordinate scaling could not show); task B's fill the space.
    fn slanted_tasks(rng: &mut SeededRng, n: usize) -> [(Vec<f32>, Vec<i64>); 2] {
        let mut mix = vec![0.0f32; 8 * 4];
        rng.fill_normal(&mut mix, 1.0);
        let (mut xa, mut xb) = (vec![0.0f32; n * 8], vec![0.0f32; n * 8]);
        let (mut ya, mut yb) = (vec![0i64; n], vec![0i64; n]);
        let mut z = [0.0f32; 4];
        for i in 0..n {
            rng.fill_normal(&mut z, 1.0);
            for (r, v) in xa[i * 8..(i + 1) * 8].iter_mut().enumerate() {
                *v = (0..4).map(|k| mix[r * 4 + k] * z[k]).sum();
            }
            ya[i] = i64::from(z[0] > 0.0);
            rng.fill_normal(&mut xb[i * 8..(i + 1) * 8], 1.0);
            yb[i] = 2 + i64::from(xb[i * 8 + 7] > 0.0);
        }
        [(xa, ya), (xb, yb)]
    }

    #[test]
    fn gpm_keeps_the_old_logits_through_adam() {
        let mut rng = SeededRng::new(11);
        let [(xa, ya), (xb, yb)] = slanted_tasks(&mut rng, 200);
        let mut m = RouterClassifier::new(ClassifierConfig {
            gpm_threshold: 0.9999,
            ..cfg()
        })
        .unwrap();
        m.fit(&xa, &ya, 5, 16).unwrap();
        m.end_task(Some(&xa)).unwrap();
        let (la, lb) = (m.logits(&xa).unwrap(), m.logits(&xb).unwrap());
        m.fit(&xb, &yb, 5, 16).unwrap();
        let moved = |before: &[f32], after: Vec<f32>| {
            before
                .iter()
                .zip(&after)
                .map(|(b, a)| (a - b).abs())
                .fold(0.0f32, f32::max)
        };
        let (da, db) = (
            moved(&la, m.logits(&xa).unwrap()),
            moved(&lb, m.logits(&xb).unwrap()),
        );
        // Task B moved its own logits, and A's by orders of magnitude less.
        assert!(db > 0.5, "task B's logits moved {db}");
        assert!(da < 1e-3 * db, "task A's logits moved {da} (B's {db})");
    }

    #[test]
    fn gpm_needs_the_task_inputs_and_keeps_state_on_error() {
        let mut rng = SeededRng::new(5);
        let (xa, ya) = task(&mut rng, [0, 1], 64);
        let mut m = RouterClassifier::new(ClassifierConfig {
            gpm_threshold: 0.9,
            gpm_examples: 16,
            ..cfg()
        })
        .unwrap();
        m.fit(&xa, &ya, 2, 16).unwrap();
        assert!(m.end_task(None).is_err());
        let mut nan = xa.clone();
        nan[3] = f32::NAN;
        assert!(m.end_task(Some(&nan)).is_err());
        assert!(m.end_task(Some(&xa[..7])).is_err());
        assert_eq!(m.gpm_bases(), Some((0, [0, 0, 0])));
        m.end_task(Some(&xa)).unwrap();
        let (tasks, sizes) = m.gpm_bases().unwrap();
        assert_eq!(tasks, 1);
        assert!(sizes.iter().all(|&k| k > 0), "{sizes:?}");
        for bad in [-0.1, 1.5, f32::NAN] {
            assert!(RouterClassifier::new(ClassifierConfig {
                gpm_threshold: bad,
                ..cfg()
            })
            .is_err());
        }
        assert!(RouterClassifier::new(ClassifierConfig {
            gpm_threshold: 0.9,
            gpm_examples: 0,
            ..cfg()
        })
        .is_err());
    }
}
