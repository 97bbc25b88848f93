//! The live adapter: published weights + optimizer + explorer, and its two tiers.
//!
//! [`Lora`] is thread-safe behind `&self`: a forward loads the current snapshot and never takes a lock
//! that an update holds (design §3); updates are serialised by the writer lock; explorations share a
//! small table lock that an update holds only while copying one pending entry. Every public method
//! validates its input before touching state, so a failing call leaves the adapter unchanged.
//! [`MicroLoRA`] and [`BaseLoRA`] are the two tiers (same machinery, different defaults); a base
//! absorbs a micro adapter with [`Lora::merge_from`].

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use sona_core::kernels::all_finite;
use sona_core::{validate, Result, SeededRng, SonaError};

use crate::adapter::{check_shape, max_abs, Frozen, LoraWeights};
use crate::defaults::ScaledDefaults;
use crate::explore::{ExploreConfig, Explorer};
use crate::merge::{merge, MergeReport};
use crate::optim::{OptimConfig, Optimizer, StepReport};
use crate::snapshot::{Generation, Snapshot, TIERS};

/// Largest counter value accepted from a file: far beyond anything a process can count to, and far
/// enough below `u64::MAX` that counting on can never overflow.
pub const MAX_COUNTER: u64 = 1 << 62;

/// Everything that defines an adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub d_in: usize,
    pub d_out: usize,
    pub rank: usize,
    /// `α`; the forward scale is `s = α / r`.
    pub alpha: f32,
    /// The frozen map `W` the adapter corrects.
    pub frozen: Frozen,
    pub optim: OptimConfig,
    pub explore: ExploreConfig,
    pub seed: u64,
    /// Module name used in PEFT files (`base_model.model.<module>.lora_A.weight`).
    pub module: String,
}

impl LoraConfig {
    /// Micro-tier defaults for an embedding adapter used alone (`W = I`): rank 2, one momentum step
    /// per feedback, `‖ΔW‖_F ≤ 16`, slow decay. Step size, scale and exploration were chosen on the
    /// adaptation benchmark (design §11.1; see docs/decisions.md); above d = 256 the noise and the
    /// bound scale with `d` ([`ScaledDefaults`]; docs/benchmarks.md, "Defaults across sizes").
    pub fn micro(d: usize) -> Self {
        let s = ScaledDefaults::for_dim(d);
        LoraConfig {
            d_in: d,
            d_out: d,
            rank: 2,
            alpha: 20.0,
            frozen: Frozen::Identity,
            optim: OptimConfig {
                lr: s.micro_lr as f32,
                momentum: 0.9,
                clip: 10.0,
                max_norm: s.micro_max_norm as f32,
                decay: 1e-5,
            },
            explore: ExploreConfig {
                sigma: s.sigma as f32,
                ..ExploreConfig::default()
            },
            seed: 0,
            module: "embedding".into(),
        }
    }

    /// The micro tier of a two-tier stack: as [`LoraConfig::micro`] with the stack's step size and
    /// bound ([`ScaledDefaults::stacked_lr`], [`ScaledDefaults::stacked_max_norm`]).
    pub fn stacked_micro(d: usize) -> Self {
        let s = ScaledDefaults::for_dim(d);
        let mut c = LoraConfig::micro(d);
        c.optim.lr = s.stacked_lr as f32;
        c.optim.max_norm = s.stacked_max_norm as f32;
        c
    }

    /// Base-tier defaults: rank 8, no Frobenius bound, no decay (it changes only by merges and
    /// loop-B training).
    pub fn base(d: usize) -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            optim: OptimConfig {
                lr: 1e-3,
                momentum: 0.9,
                clip: 10.0,
                max_norm: f32::INFINITY,
                decay: 0.0,
            },
            ..LoraConfig::micro(d)
        }
    }

    /// Checks every field.
    pub fn check(&self) -> Result<()> {
        check_shape(self.d_in, self.d_out, self.rank)?;
        validate::check_range("alpha", self.alpha as f64, 1e-6, 1e6)?;
        self.frozen.check(self.d_in, self.d_out)?;
        self.optim.check()?;
        self.explore.check()?;
        if self.module.is_empty()
            || self.module.len() > 1024
            || self
                .module
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SonaError::Config(format!(
                "module must be a non-empty name of at most 1024 bytes without spaces, got {:?}",
                self.module.chars().take(80).collect::<String>()
            )));
        }
        Ok(())
    }

    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
}

/// Counters of what an adapter has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Applied optimizer steps (gradient and reward).
    pub updates: u64,
    /// Steps refused because they would have made weights non-finite.
    pub rejected: u64,
    /// Rewards consumed.
    pub rewards: u64,
    /// Explorations handed out.
    pub explored: u64,
    /// Merges this adapter took part in.
    pub merges: u64,
}

#[derive(Debug)]
struct Writer {
    optim: Optimizer,
    spare: Option<Arc<LoraWeights>>,
    x: Vec<f32>,
    e: Vec<f32>,
    counters: Counters,
    last_step: Option<StepReport>,
    rng: SeededRng,
}

/// A LoRA adapter `y = W x + s·B(A x)` that can be read concurrently while it learns.
///
/// Its weights are tier `tier` of a published [`Snapshot`]; the two tiers of a
/// [`crate::TwoTierLoRA`] share one, so a merge publishes both tiers in one swap.
#[derive(Debug)]
pub struct Lora {
    config: LoraConfig,
    weights: Arc<Snapshot<LoraWeights>>,
    tier: usize,
    writer: Mutex<Writer>,
    explorer: Mutex<Explorer>,
    read_only: AtomicBool,
}

/// An adapter's state before its weights are published.
struct Parts {
    config: LoraConfig,
    weights: LoraWeights,
    writer: Writer,
    explorer: Explorer,
}

/// `y = W x + Σ_t ΔW_t x` over `tiers`, never a non-finite output for a finite input: when an
/// intermediate overflows (`A x` of a 1e38 vector), the map — linear in `x` — is evaluated at
/// `x / 2^k` (exact in binary floating point) and scaled back; an output that itself exceeds the
/// `f32` range is a [`SonaError::Numerical`]. The common case costs one finiteness pass over `y`.
pub fn forward_tiers(
    frozen: &Frozen,
    tiers: &[&LoraWeights],
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    frozen.apply(x, y);
    for w in tiers {
        w.add_delta(x, y);
    }
    if all_finite(y) {
        return Ok(());
    }
    let m = max_abs(x);
    let k = (m.log2().ceil() as i32).clamp(0, 127);
    let p = 2f32.powi(k);
    let mut xs = validate::try_zeros("scaled input", x.len())?;
    for (s, &v) in xs.iter_mut().zip(x) {
        *s = v / p;
    }
    frozen.apply(&xs, y);
    for w in tiers {
        w.add_delta(&xs, y);
    }
    for v in y.iter_mut() {
        *v *= p;
    }
    if all_finite(y) {
        Ok(())
    } else {
        Err(SonaError::Numerical(format!(
            "the output overflows f32 for this input (max |x| = {m:e}); refused"
        )))
    }
}

impl Lora {
    /// A fresh adapter: `A ~ N(0, 1/d_in)`, `B = 0` (design §3).
    pub fn new(config: LoraConfig) -> Result<Self> {
        let parts = Self::fresh(config)?;
        let snap = Arc::new(Snapshot::new(vec![parts.weights.clone()]));
        Ok(Self::assemble(parts, snap, 0))
    }

    /// Two fresh adapters whose weights are published together (the tiers of a two-tier stack):
    /// a reader loading both sees one generation, and a merge between them is one swap.
    pub fn pair(first: LoraConfig, second: LoraConfig) -> Result<(Self, Self)> {
        let (a, b) = (Self::fresh(first)?, Self::fresh(second)?);
        let snap = Arc::new(Snapshot::new(vec![a.weights.clone(), b.weights.clone()]));
        Ok((
            Self::assemble(a, Arc::clone(&snap), 0),
            Self::assemble(b, snap, 1),
        ))
    }

    fn fresh(config: LoraConfig) -> Result<Parts> {
        config.check()?;
        let mut rng = SeededRng::new(config.seed);
        let w = LoraWeights::init(
            config.d_in,
            config.d_out,
            config.rank,
            config.alpha,
            &mut rng,
        )?;
        Self::parts(config, w, rng)
    }

    /// An adapter starting from given weights (shape must match `config`).
    pub fn from_weights(config: LoraConfig, weights: LoraWeights) -> Result<Self> {
        config.check()?;
        Self::check_same_shape(&config, &weights)?;
        let rng = SeededRng::new(config.seed);
        let parts = Self::parts(config, weights, rng)?;
        let snap = Arc::new(Snapshot::new(vec![parts.weights.clone()]));
        Ok(Self::assemble(parts, snap, 0))
    }

    fn check_same_shape(config: &LoraConfig, w: &LoraWeights) -> Result<()> {
        if (w.d_in, w.d_out, w.rank) != (config.d_in, config.d_out, config.rank) {
            return Err(SonaError::Checkpoint(format!(
                "adapter shape mismatch: expected rank {} {}→{}, got rank {} {}→{}",
                config.rank, config.d_in, config.d_out, w.rank, w.d_in, w.d_out
            )));
        }
        let mut w = w.clone();
        w.scale = config.scale();
        w.check()
    }

    /// Everything but the published weights, allocated fallibly.
    fn parts(config: LoraConfig, mut w: LoraWeights, mut rng: SeededRng) -> Result<Parts> {
        w.scale = config.scale();
        let explorer = Explorer::new(config.explore, config.d_in, config.d_out, rng.next_u64())?;
        let writer = Writer {
            optim: Optimizer::new(config.optim, config.d_in, config.d_out, config.rank)?,
            spare: Some(Arc::new(w.clone())),
            x: validate::try_zeros("x buffer", config.d_in)?,
            e: validate::try_zeros("error buffer", config.d_out)?,
            counters: Counters::default(),
            last_step: None,
            rng,
        };
        Ok(Parts {
            config,
            weights: w,
            writer,
            explorer,
        })
    }

    fn assemble(p: Parts, weights: Arc<Snapshot<LoraWeights>>, tier: usize) -> Self {
        Lora {
            weights,
            tier,
            writer: Mutex::new(p.writer),
            explorer: Mutex::new(p.explorer),
            read_only: AtomicBool::new(false),
            config: p.config,
        }
    }

    /// Whether `other` publishes its weights in the same snapshot (the other tier of one stack).
    pub fn shares_snapshot_with(&self, other: &Lora) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights)
    }

    /// The current generation of this adapter's snapshot (every tier of its stack).
    pub fn generation(&self) -> arc_swap::Guard<Arc<Generation<LoraWeights>>> {
        self.weights.load()
    }

    /// This adapter's tier index in its snapshot.
    pub fn tier(&self) -> usize {
        self.tier
    }

    /// Publishes `next` as this adapter's weights; the replaced ones become the writer's spare.
    fn publish(&self, wr: &mut Writer, next: Arc<LoraWeights>) {
        let mut n: [Option<Arc<LoraWeights>>; TIERS] = Default::default();
        n[self.tier] = Some(next);
        wr.spare = self.weights.publish(n)[self.tier].take();
    }

    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The current weights (an immutable snapshot; later updates do not change it).
    pub fn snapshot(&self) -> Arc<LoraWeights> {
        self.weights.load_tier(self.tier)
    }

    /// `y = W x + s·B(A x)`. Never blocks on an update and never allocates (see [`forward_tiers`]
    /// for inputs so large that an intermediate overflows).
    pub fn forward(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        validate::check_vec("x", x, self.config.d_in)?;
        validate::check_len("y", y, self.config.d_out)?;
        self.forward_unchecked(x, y)
    }

    /// [`Lora::forward`] for inputs whose length and finiteness the caller already checked.
    #[inline]
    pub fn forward_unchecked(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let g = self.weights.load();
        forward_tiers(&self.config.frozen, &[g.tier(self.tier)], x, y)
    }

    /// Adds only the correction `s·B(A x)` to `y` (no `W x`, no overflow handling: a raw kernel
    /// for benchmarks and callers that check their output).
    #[inline]
    pub fn add_delta_unchecked(&self, x: &[f32], y: &mut [f32]) {
        self.weights.load().tier(self.tier).add_delta(x, y);
    }

    /// Forward for `n` row-major inputs (`xs`: `n × d_in`, `ys`: `n × d_out`), all on one snapshot.
    pub fn forward_batch(&self, xs: &[f32], n: usize, ys: &mut [f32]) -> Result<()> {
        let (di, dout) = (self.config.d_in, self.config.d_out);
        validate::check_vec("X", xs, validate::element_count("X", &[n, di])?)?;
        validate::check_len("Y", ys, validate::element_count("Y", &[n, dout])?)?;
        let g = self.weights.load();
        let w = [g.tier(self.tier)];
        for (x, y) in xs.chunks_exact(di).zip(ys.chunks_exact_mut(dout)) {
            forward_tiers(&self.config.frozen, &w, x, y)?;
        }
        Ok(())
    }

    /// Forward with Gaussian exploration: writes the explored output into `y` and returns the token
    /// to pass to [`Lora::reward`]. Does not allocate.
    pub fn forward_explore(&self, x: &[f32], y: &mut [f32]) -> Result<u64> {
        self.forward(x, y)?;
        self.explore_output(x, y)
    }

    /// Perturbs an already computed output `y` of input `x` and remembers it under a new token
    /// ([`SonaError::Numerical`], nothing changed, if the perturbed output could overflow).
    pub fn explore_output(&self, x: &[f32], y: &mut [f32]) -> Result<u64> {
        self.explorer.lock().explore(x, y)
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only.load(Ordering::Acquire) {
            return Err(SonaError::invalid(
                "this adapter is frozen (read-only); it cannot be updated",
            ));
        }
        Ok(())
    }

    /// Learns from a scalar reward in `[0, 1]` for an exploration token (REINFORCE, see
    /// [`crate::explore`]), then takes the exact LoRA step. Unknown or reused tokens are
    /// [`SonaError::UnknownId`]. Atomic: the token, the baseline and the `rewards` counter change
    /// only together with an applied step; a refused step (non-finite, above the weight bound)
    /// leaves all of them as they were and only counts in `rejected`. Does not allocate.
    pub fn reward(&self, token: u64, reward: f32) -> Result<StepReport> {
        self.check_writable()?;
        let mut guard = self.writer.lock();
        let wr = &mut *guard;
        let (pending, norms) = self
            .explorer
            .lock()
            .prepare(token, reward, &mut wr.x, &mut wr.e)?;
        let (x, e) = (std::mem::take(&mut wr.x), std::mem::take(&mut wr.e));
        let out = self.step_locked(wr, &x, &e, Some(norms));
        if out.is_ok() {
            // Rewards are serialised by the writer lock, so nothing redeemed the token meanwhile.
            self.explorer.lock().commit(&pending, &x);
            wr.counters.rewards += 1;
        }
        wr.x = x;
        wr.e = e;
        out
    }

    /// One exact optimizer step for the output error `e = ∂L/∂y` at input `x`.
    pub fn update(&self, x: &[f32], e: &[f32]) -> Result<StepReport> {
        validate::check_vec("x", x, self.config.d_in)?;
        validate::check_vec("error", e, self.config.d_out)?;
        self.check_writable()?;
        let mut guard = self.writer.lock();
        self.step_locked(&mut guard, x, e, None)
    }

    /// One optimizer step on the mean gradient of a batch (`xs`: `n × d_in`, `es`: `n × d_out`,
    /// row-major): the loop-B update of a base adapter trained on replayed data.
    pub fn update_batch(&self, xs: &[f32], es: &[f32], n: usize) -> Result<StepReport> {
        let c = &self.config;
        if n == 0 {
            return Err(SonaError::invalid("update_batch: empty batch"));
        }
        validate::check_vec("X", xs, validate::element_count("X", &[n, c.d_in])?)?;
        validate::check_vec("E", es, validate::element_count("E", &[n, c.d_out])?)?;
        self.check_writable()?;
        let mut guard = self.writer.lock();
        let wr = &mut *guard;
        let cur = self.snapshot();
        let mut ga = validate::try_zeros("gradient", c.rank * c.d_in)?;
        let mut gbt = validate::try_zeros("gradient", c.rank * c.d_out)?;
        let (mut ga_i, mut gbt_i) = (ga.clone(), gbt.clone());
        for (x, e) in xs.chunks_exact(c.d_in).zip(es.chunks_exact(c.d_out)) {
            cur.grads(x, e, &mut ga_i, &mut gbt_i);
            sona_core::kernels::axpy(1.0 / n as f32, &ga_i, &mut ga);
            sona_core::kernels::axpy(1.0 / n as f32, &gbt_i, &mut gbt);
        }
        let mut next = self.weights.take_spare(&mut wr.spare, &cur);
        let buf = Arc::get_mut(&mut next).expect("take_spare returns a unique buffer");
        match wr.optim.step_dense(&cur, buf, &ga, &gbt) {
            Ok(rep) => {
                drop(cur);
                self.publish(wr, next);
                wr.counters.updates += 1;
                wr.last_step = Some(rep);
                Ok(rep)
            }
            Err(err) => {
                wr.spare = Some(next);
                wr.counters.rejected += 1;
                Err(err)
            }
        }
    }

    fn step_locked(
        &self,
        wr: &mut Writer,
        x: &[f32],
        e: &[f32],
        norms: Option<(f64, f64)>,
    ) -> Result<StepReport> {
        let cur = self.snapshot();
        let mut next = self.weights.take_spare(&mut wr.spare, &cur);
        let buf = Arc::get_mut(&mut next).expect("take_spare returns a unique buffer");
        let stepped = match norms {
            Some(n) => wr.optim.step_with_norms(&cur, buf, x, e, n),
            None => wr.optim.step(&cur, buf, x, e),
        };
        match stepped {
            Ok(rep) => {
                drop(cur);
                self.publish(wr, next);
                wr.counters.updates += 1;
                wr.last_step = Some(rep);
                Ok(rep)
            }
            Err(err) => {
                wr.spare = Some(next);
                wr.counters.rejected += 1;
                Err(err)
            }
        }
    }

    /// Exact gradients at `(x, e)` on the current weights: `(∇A [r×d_in], ∇B [d_out×r] (PEFT
    /// layout), ∂L/∂x [d_in])`.
    pub fn gradients(&self, x: &[f32], e: &[f32]) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        validate::check_vec("x", x, self.config.d_in)?;
        validate::check_vec("error", e, self.config.d_out)?;
        let w = self.snapshot();
        let mut ga = vec![0.0; w.a.len()];
        let mut gbt = vec![0.0; w.bt.len()];
        w.grads(x, e, &mut ga, &mut gbt);
        let gb = LoraWeights {
            bt: gbt,
            a: Vec::new(),
            ..(*w).clone()
        }
        .b_peft();
        let mut gx = vec![0.0; self.config.d_in];
        self.config.frozen.apply_t(e, &mut gx);
        w.add_input_grad(e, &mut gx);
        // Finite inputs near 1e38 overflow these products: say so, as `update` does, rather than
        // hand back Inf.
        for (what, g) in [("dL/dA", &ga), ("dL/dB", &gb), ("dL/dx", &gx)] {
            if let Some(i) = g.iter().position(|v| !v.is_finite()) {
                return Err(SonaError::Numerical(format!(
                    "{what}[{i}] overflows f32 for this input and error; rescale them"
                )));
            }
        }
        Ok((ga, gb, gx))
    }

    /// Replaces the weights (same shape, finite, entries within [`crate::MAX_WEIGHT`]; e.g. after
    /// loading a file) and forgets the momentum.
    pub fn set_weights(&self, mut w: LoraWeights) -> Result<()> {
        Self::check_same_shape(&self.config, &w)?;
        self.check_writable()?;
        w.scale = self.config.scale();
        let mut guard = self.writer.lock();
        let wr = &mut *guard;
        wr.optim.reset();
        let cur = self.snapshot();
        let mut next = self.weights.take_spare(&mut wr.spare, &cur);
        drop(cur);
        Arc::get_mut(&mut next).expect("unique spare").copy_from(&w);
        self.publish(wr, next);
        Ok(())
    }

    /// The restarted weights (not yet published): `ΔW = 0` (`B ← 0`) and `A` re-drawn
    /// `~ N(0, 1/d_in)` as at creation, so the restarted adapter has no preference for the inputs it
    /// was trained on: what it learned now lives in the base, and a fresh `A` keeps new corrections
    /// from landing on those inputs (see docs/decisions.md, "merges", for the measurements behind
    /// this choice).
    fn restarted(&self, wr: &mut Writer, cur: &LoraWeights) -> Arc<LoraWeights> {
        let mut next = self.weights.take_spare(&mut wr.spare, cur);
        let buf = Arc::get_mut(&mut next).expect("unique spare");
        buf.copy_from(cur);
        buf.bt.fill(0.0);
        let std = (1.0 / buf.d_in as f32).sqrt();
        wr.rng.fill_normal(&mut buf.a, std);
        next
    }

    /// What this adapter has done so far.
    pub fn counters(&self) -> Counters {
        let mut c = self.writer.lock().counters;
        c.explored = self.explorer.lock().explored();
        c
    }

    /// The last applied step's report.
    pub fn last_step(&self) -> Option<StepReport> {
        self.writer.lock().last_step
    }

    /// Current `(w, c)` of the linear reward baseline.
    pub fn baseline(&self) -> (Vec<f32>, f32) {
        let ex = self.explorer.lock();
        (ex.baseline.w.clone(), ex.baseline.c)
    }

    /// Marks the adapter read-only: later updates, rewards and merges into it fail. Quantized copies
    /// are only made of frozen adapters (design §3).
    pub fn freeze(&self) {
        self.read_only.store(true, Ordering::Release);
    }

    pub fn is_frozen(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// The exploration RNG state (for checkpoints).
    pub fn explore_rng(&self) -> SeededRng {
        self.explorer.lock().rng().clone()
    }

    /// Restores optimizer, baseline, counters and exploration RNG (checkpoint loading); every value
    /// is checked first, so an error leaves the adapter as it was.
    pub(crate) fn restore_state(
        &self,
        mom_a: &[f32],
        mom_bt: &[f32],
        baseline_w: &[f32],
        baseline_c: f32,
        counters: &[u64],
        rng: SeededRng,
    ) -> Result<()> {
        validate::check_vec("baseline_w", baseline_w, self.config.d_in)?;
        if !baseline_c.is_finite() {
            return Err(SonaError::invalid("baseline_c is not finite"));
        }
        let [updates, rejected, rewards, explored, merges] = counters else {
            return Err(SonaError::invalid("counters: expected 5 values"));
        };
        if counters.iter().any(|&c| c > MAX_COUNTER) {
            return Err(SonaError::invalid(format!(
                "counters {counters:?}: above {MAX_COUNTER}"
            )));
        }
        let mut wr = self.writer.lock();
        wr.optim.set_momentum(mom_a, mom_bt)?;
        wr.counters = Counters {
            updates: *updates,
            rejected: *rejected,
            rewards: *rewards,
            explored: *explored,
            merges: *merges,
        };
        let mut ex = self.explorer.lock();
        ex.baseline.w.copy_from_slice(baseline_w);
        ex.baseline.c = baseline_c;
        ex.restore(rng, *explored);
        Ok(())
    }

    /// Momentum buffers `(A-shaped, Bᵀ-shaped)`, for checkpoints.
    pub fn momentum(&self) -> (Vec<f32>, Vec<f32>) {
        let wr = self.writer.lock();
        let (a, b) = wr.optim.momentum();
        (a.to_vec(), b.to_vec())
    }

    /// Absorbs `micro` (design §3): `ΔW_b ← best rank-r_b approximation of ΔW_b + ΔW_µ`, then zeroes the
    /// micro adapter (`B_µ = 0`; see [`Lora::restarted`] for how `A_µ` restarts). Both adapters are
    /// locked for the duration (in address order), readers are not. When the two are tiers of one
    /// stack, the new base and the restarted micro are published in one swap, so a reader sees
    /// either both old or both new weights. Atomic: on error neither adapter changes. Returns the
    /// discarded spectral mass.
    pub fn merge_from(&self, micro: &Lora) -> Result<MergeReport> {
        if std::ptr::eq(self, micro) {
            return Err(SonaError::invalid("cannot merge an adapter into itself"));
        }
        self.check_writable()?;
        micro.check_writable()?;
        if (micro.config.d_in, micro.config.d_out) != (self.config.d_in, self.config.d_out) {
            return Err(SonaError::Dimension {
                what: "merge".into(),
                expected: format!(
                    "an adapter of shape {}→{}",
                    self.config.d_in, self.config.d_out
                ),
                got: format!("{}→{}", micro.config.d_in, micro.config.d_out),
            });
        }
        // Lock both writers in address order, so concurrent merges in opposite directions cannot
        // deadlock.
        let (mut bw, mut mw) = if (self as *const Lora) < (micro as *const Lora) {
            let b = self.writer.lock();
            (b, micro.writer.lock())
        } else {
            let m = micro.writer.lock();
            (self.writer.lock(), m)
        };
        let cur = self.snapshot();
        let m_cur = micro.snapshot();
        let mut next = self.weights.take_spare(&mut bw.spare, &cur);
        let buf = Arc::get_mut(&mut next).expect("unique spare");
        let merged = merge(&cur, &m_cur, buf).and_then(|rep| {
            buf.check().map_err(|e| {
                SonaError::Numerical(format!("the merged weights are refused: {e}"))
            })?;
            Ok(rep)
        });
        let report = match merged {
            Ok(rep) => rep,
            Err(e) => {
                bw.spare = Some(next);
                return Err(e);
            }
        };
        let m_next = micro.restarted(&mut mw, &m_cur);
        drop((cur, m_cur));
        if self.shares_snapshot_with(micro) {
            let mut n: [Option<Arc<LoraWeights>>; TIERS] = Default::default();
            n[self.tier] = Some(next);
            n[micro.tier] = Some(m_next);
            let mut old = self.weights.publish(n);
            bw.spare = old[self.tier].take();
            mw.spare = old[micro.tier].take();
        } else {
            self.publish(&mut bw, next);
            micro.publish(&mut mw, m_next);
        }
        bw.optim.reset();
        bw.counters.merges += 1;
        mw.optim.reset();
        mw.counters.merges += 1;
        Ok(report)
    }
}

/// The fast tier: rank 1-2, one step per feedback, bounded and slowly decaying.
#[derive(Debug)]
pub struct MicroLoRA(pub Lora);

/// The slow tier: rank 4-16, trained in loop B and by absorbing micro adapters.
#[derive(Debug)]
pub struct BaseLoRA(pub Lora);

impl Deref for MicroLoRA {
    type Target = Lora;
    fn deref(&self) -> &Lora {
        &self.0
    }
}

impl Deref for BaseLoRA {
    type Target = Lora;
    fn deref(&self) -> &Lora {
        &self.0
    }
}

impl MicroLoRA {
    pub fn new(config: LoraConfig) -> Result<Self> {
        Lora::new(config).map(MicroLoRA)
    }
}

impl BaseLoRA {
    pub fn new(config: LoraConfig) -> Result<Self> {
        Lora::new(config).map(BaseLoRA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micro(d: usize) -> Lora {
        let mut c = LoraConfig::micro(d);
        c.optim.lr = 0.05;
        Lora::new(c).unwrap()
    }

    /// Finite inputs whose gradient products overflow are a `Numerical` error, never Inf in the
    /// returned gradients; ordinary inputs give finite ones.
    #[test]
    fn gradients_that_overflow_are_refused() {
        let m = micro(8);
        m.update(&[0.5; 8], &[0.1; 8]).unwrap();
        let (ga, gb, gx) = m.gradients(&[1.0; 8], &[0.5; 8]).unwrap();
        assert!(ga.iter().chain(&gb).chain(&gx).all(|v| v.is_finite()));
        assert!(matches!(
            m.gradients(&[1e38; 8], &[1e38; 8]),
            Err(SonaError::Numerical(_))
        ));
    }

    #[test]
    fn starts_as_identity_and_learns_a_target_by_gradient() {
        let d = 16;
        let m = micro(d);
        let mut rng = SeededRng::new(2);
        let mut x = vec![0.0; d];
        rng.fill_normal(&mut x, 0.25);
        let mut y = vec![0.0; d];
        m.forward(&x, &mut y).unwrap();
        assert_eq!(x, y);
        let target: Vec<f32> = x.iter().rev().cloned().collect();
        let err = |m: &Lora| {
            let mut y = vec![0.0; d];
            m.forward(&x, &mut y).unwrap();
            y.iter()
                .zip(&target)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
        };
        let before = err(&m);
        for _ in 0..200 {
            let mut y = vec![0.0; d];
            m.forward(&x, &mut y).unwrap();
            let e: Vec<f32> = y.iter().zip(&target).map(|(a, b)| a - b).collect();
            m.update(&x, &e).unwrap();
        }
        assert!(err(&m) < 0.05 * before, "{} vs {before}", err(&m));
        assert_eq!(m.counters().updates, 200);
    }

    #[test]
    fn batch_step_uses_the_mean_gradient() {
        let d = 10;
        let mut c = LoraConfig::base(d);
        c.rank = 3;
        c.optim.momentum = 0.0;
        c.optim.clip = f32::INFINITY;
        let a = Lora::new(c.clone()).unwrap();
        let mut w = (*a.snapshot()).clone();
        SeededRng::new(3).fill_normal(&mut w.bt, 0.3);
        a.set_weights(w.clone()).unwrap();
        let mut rng = SeededRng::new(4);
        let (mut xs, mut es) = (vec![0.0; 4 * d], vec![0.0; 4 * d]);
        rng.fill_normal(&mut xs, 1.0);
        rng.fill_normal(&mut es, 1.0);
        a.update_batch(&xs, &es, 4).unwrap();
        // Reference: mean of the four per-sample gradients, one plain step.
        let mut ga = vec![0.0; w.a.len()];
        let mut gbt = vec![0.0; w.bt.len()];
        for i in 0..4 {
            let (mut gi, mut bi) = (vec![0.0; w.a.len()], vec![0.0; w.bt.len()]);
            w.grads(
                &xs[i * d..(i + 1) * d],
                &es[i * d..(i + 1) * d],
                &mut gi,
                &mut bi,
            );
            for (g, v) in ga.iter_mut().zip(&gi) {
                *g += v / 4.0;
            }
            for (g, v) in gbt.iter_mut().zip(&bi) {
                *g += v / 4.0;
            }
        }
        let got = a.snapshot();
        for i in 0..w.a.len() {
            assert!((got.a[i] - (w.a[i] - c.optim.lr * ga[i])).abs() < 1e-5);
        }
        for i in 0..w.bt.len() {
            assert!((got.bt[i] - (w.bt[i] - c.optim.lr * gbt[i])).abs() < 1e-5);
        }
        assert!(a.update_batch(&xs, &es[..3 * d], 4).is_err());
        assert!(a.update_batch(&[], &[], 0).is_err());
    }

    #[test]
    fn bad_input_changes_nothing() {
        let m = micro(8);
        let before = m.snapshot();
        let x = vec![0.5; 8];
        assert!(matches!(
            m.update(&x, &[0.0; 7]),
            Err(SonaError::Dimension { .. })
        ));
        assert!(matches!(
            m.update(&x, &[f32::NAN; 8]),
            Err(SonaError::NonFinite { .. })
        ));
        let mut y = vec![0.0; 8];
        let t = m.forward_explore(&x, &mut y).unwrap();
        assert!(m.reward(t, 1.5).is_err());
        assert!(matches!(
            m.reward(t + 1, 0.5),
            Err(SonaError::UnknownId { .. })
        ));
        assert_eq!(*m.snapshot(), *before);
        m.reward(t, 0.9).unwrap();
        assert!(matches!(m.reward(t, 0.9), Err(SonaError::UnknownId { .. })));
        let huge = vec![1e30f32; 8];
        let now = m.snapshot();
        assert!(matches!(
            m.update(&huge, &huge),
            Err(SonaError::Numerical(_))
        ));
        assert_eq!(*m.snapshot(), *now);
        assert_eq!(m.counters().rejected, 1);
    }

    #[test]
    fn merge_zeroes_micro_and_preserves_the_map() {
        let d = 12;
        let mut bc = LoraConfig::base(d);
        bc.rank = 4;
        let base = BaseLoRA::new(bc).unwrap();
        let m = MicroLoRA::new(LoraConfig::micro(d)).unwrap();
        let mut rng = SeededRng::new(5);
        let mut w = (*m.snapshot()).clone();
        rng.fill_normal(&mut w.bt, 0.3);
        m.set_weights(w).unwrap();
        let x: Vec<f32> = (0..d).map(|i| (i as f32).cos()).collect();
        let (mut y1, mut y2) = (vec![0.0; d], vec![0.0; d]);
        base.forward(&x, &mut y1).unwrap();
        m.add_delta_unchecked(&x, &mut y1);
        let rep = base.merge_from(&m).unwrap();
        assert!(rep.discarded < 1e-5);
        base.forward(&x, &mut y2).unwrap();
        m.add_delta_unchecked(&x, &mut y2);
        for (a, b) in y1.iter().zip(&y2) {
            assert!((a - b).abs() < 1e-4);
        }
        assert!(m.snapshot().bt.iter().all(|&b| b == 0.0));
        assert!(m.snapshot().a.iter().any(|&a| a != 0.0));
        assert_eq!(base.counters().merges, 1);
    }

    /// Everything a failed call must leave as it was (the `rejected` counter aside).
    #[allow(clippy::type_complexity)]
    fn state(
        m: &Lora,
    ) -> (
        LoraWeights,
        (Vec<f32>, Vec<f32>),
        (Vec<f32>, f32),
        Counters,
        String,
    ) {
        let mut c = m.counters();
        c.rejected = 0;
        (
            (*m.snapshot()).clone(),
            m.momentum(),
            m.baseline(),
            c,
            format!("{:?}", m.explore_rng()),
        )
    }

    #[test]
    fn a_refused_reward_changes_nothing_and_keeps_its_token() {
        let d = 8;
        let m = micro(d);
        let x = vec![1e25f32; d];
        let mut y = vec![0.0; d];
        let t = m.forward_explore(&x, &mut y).unwrap();
        assert!(y.iter().all(|v| v.is_finite()));
        let before = state(&m);
        // ‖x‖² overflows f32: the step is refused, so nothing of the reward may stick.
        assert!(matches!(m.reward(t, 0.9), Err(SonaError::Numerical(_))));
        assert!(state(&m) == before, "a refused reward changed the adapter");
        assert_eq!(m.counters().rewards, 0);
        assert_eq!(m.counters().rejected, 1);
        // The token was not consumed: it is refused for the same reason again, not as unknown.
        assert!(matches!(m.reward(t, 0.9), Err(SonaError::Numerical(_))));
        // A normal reward still works afterwards.
        let x = vec![0.3f32; d];
        let t = m.forward_explore(&x, &mut y).unwrap();
        m.reward(t, 0.9).unwrap();
        assert_eq!(m.counters().rewards, 1);
    }

    #[test]
    fn batch_sizes_that_overflow_are_errors() {
        let m = micro(4);
        let mut y = vec![0.0; 4];
        assert!(m.forward_batch(&[0.0; 4], usize::MAX / 2, &mut y).is_err());
        assert!(m
            .update_batch(&[0.0; 4], &[0.0; 4], usize::MAX / 2)
            .is_err());
    }

    #[test]
    fn micro_noise_and_bound_scale_above_256() {
        assert_eq!(LoraConfig::micro(128).explore.sigma, 0.1);
        assert_eq!(LoraConfig::micro(256).explore.sigma, 0.1);
        assert!((LoraConfig::micro(1024).explore.sigma - 0.05).abs() < 1e-7);
        assert_eq!(LoraConfig::micro(1024).optim.max_norm, 64.0);
        let st = LoraConfig::stacked_micro(1024);
        assert_eq!((st.optim.max_norm, st.explore.sigma), (16.0, 0.05));
        assert!((st.optim.lr - 6e-4).abs() < 1e-9);
        assert_eq!(LoraConfig::stacked_micro(256), LoraConfig::micro(256));
    }

    #[test]
    fn huge_sizes_are_config_errors_not_aborts() {
        for d in [1usize << 40, 1 << 63, usize::MAX, validate::MAX_DIM + 1] {
            assert!(matches!(
                Lora::new(LoraConfig::micro(d)),
                Err(SonaError::Config(_))
            ));
        }
        let mut c = LoraConfig::micro(validate::MAX_DIM);
        c.explore.capacity = 1 << 20;
        assert!(matches!(Lora::new(c), Err(SonaError::Config(_))));
        let mut c = LoraConfig::micro(8);
        c.explore.capacity = usize::MAX;
        assert!(matches!(Lora::new(c), Err(SonaError::Config(_))));
        let mut c = LoraConfig::micro(8);
        c.rank = 1 << 40;
        assert!(matches!(Lora::new(c), Err(SonaError::Config(_))));
    }

    #[test]
    fn finite_inputs_give_finite_outputs_or_a_numerical_error() {
        let d = 16;
        let m = micro(d);
        let x = vec![1e38f32; d];
        let mut y = vec![0.0; d];
        // B = 0: the output is x itself, although A x overflows.
        m.forward(&x, &mut y).unwrap();
        assert_eq!(y, x);
        let mut w = (*m.snapshot()).clone();
        SeededRng::new(1).fill_normal(&mut w.bt, 1.0);
        m.set_weights(w).unwrap();
        match m.forward(&x, &mut y) {
            Ok(()) => assert!(y.iter().all(|v| v.is_finite())),
            Err(e) => assert!(matches!(e, SonaError::Numerical(_)), "{e}"),
        }
        // Large but representable outputs are computed exactly by scaling.
        let x = vec![1e34f32; d];
        let mut want = vec![0.0; d];
        let xs: Vec<f32> = x.iter().map(|v| v / 1e30).collect();
        m.forward(&xs, &mut want).unwrap();
        m.forward(&x, &mut y).unwrap();
        for (a, b) in y.iter().zip(&want) {
            assert!(
                (a / 1e30 - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{a} vs {b}"
            );
        }
        let mut yb = vec![0.0; 2 * d];
        let xb: Vec<f32> = x.iter().chain(&x).cloned().collect();
        m.forward_batch(&xb, 2, &mut yb).unwrap();
        assert!(yb.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn set_weights_refuses_absurd_factors_and_keeps_the_old_ones() {
        let m = micro(8);
        let before = state(&m);
        for bad in [1e38f32, 2.0 * crate::MAX_WEIGHT, f32::NAN, f32::INFINITY] {
            let mut w = (*m.snapshot()).clone();
            w.bt[3] = bad;
            assert!(m.set_weights(w).is_err(), "{bad} accepted");
            let mut w = (*m.snapshot()).clone();
            w.a[0] = -bad;
            assert!(m.set_weights(w).is_err(), "{bad} accepted");
        }
        assert!(state(&m) == before);
        let mut w = (*m.snapshot()).clone();
        w.bt[3] = crate::MAX_WEIGHT;
        m.set_weights(w).unwrap();
    }

    #[test]
    fn steps_never_store_weights_above_the_bound() {
        let d = 8;
        let mut c = LoraConfig::base(d);
        c.rank = 1;
        c.optim.lr = 1e3;
        c.optim.momentum = 0.0;
        let m = Lora::new(c).unwrap();
        let mut w = (*m.snapshot()).clone();
        w.a.fill(0.9 * crate::MAX_WEIGHT);
        w.bt.fill(0.9 * crate::MAX_WEIGHT);
        m.set_weights(w).unwrap();
        let x = vec![1.0f32; d];
        let e = vec![-1.0f32; d];
        let before = m.snapshot();
        // The step pushes B beyond the bound: refused, weights as they were.
        assert!(matches!(m.update(&x, &e), Err(SonaError::Numerical(_))));
        assert_eq!(*m.snapshot(), *before);
        assert!(crate::adapter::max_abs(&m.snapshot().bt) <= crate::MAX_WEIGHT);
    }

    #[test]
    fn readers_are_not_blocked_by_a_held_writer_lock() {
        let m = Arc::new(micro(8));
        let guard = m.writer.lock();
        let m2 = Arc::clone(&m);
        let h = std::thread::spawn(move || {
            let mut y = vec![0.0; 8];
            m2.forward(&[1.0; 8], &mut y).unwrap();
            y
        });
        let y = h.join().unwrap();
        drop(guard);
        assert_eq!(y, vec![1.0; 8]);
    }
}
