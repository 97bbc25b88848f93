//! Binding of `sona-lora`: `LoRA` (the methods of one adapter) with its tiers `MicroLoRA` and
//! `BaseLoRA`, `TwoTierLoRA` (base + micro with periodic merges), the d-scaled defaults and the
//! PEFT / quantised-file readers, registered in `sona._sona` and re-exported unchanged by
//! `sona.lora` (their `__module__`). This file is the Python API: the docstrings are the doc
//! comments below, the defaults are the core's (`LoraConfig::micro` / `base` / `stacked_micro`,
//! `ScaledDefaults`), and arguments take any array-like ([`crate::convert::vector`]) and checked
//! sizes, reals and names ([`crate::args`]): a wrong kind of size or setting raises `ConfigError`,
//! of reward or token `InvalidInputError`.
//!
//! Forwards hold the GIL (they take well under a microsecond of Rust time, less than releasing it
//! would cost); merges, batch forwards and file I/O release it.
//!
//! Threads: the GIL is always released *before* any of the adapter's locks is taken (inside
//! `py.detach`), never while one is held, so a thread holding a lock never waits for the GIL.
//! Calls that keep the GIL only take locks that no GIL-waiting thread can hold. numpy inputs of
//! calls that release the GIL (`forward_batch`, `update_batch`) are copied first and the *copy* is
//! validated: another Python thread may write the array meanwhile (numpy itself releases the GIL
//! for large copies, so even a GIL-holding reader can see a write in progress), and the computation
//! must not read memory that is being written or values that were never validated. A batch written
//! concurrently may mix old and new values, as with any numpy consumer; it is never read twice and
//! never non-finite. The copy costs less than the call's own pass over the data.

use std::sync::{Arc, OnceLock};

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use pyo3::PyClassInitializer;
use sona_core::{validate, SonaError};
use sona_lora::defaults::REFERENCE_DIM;
use sona_lora::{
    peft, ExploreConfig, Frozen, Lora as CoreLora, LoraConfig, LoraWeights, MergeReport,
    OptimConfig, QuantKind, QuantizedLora, ScaledDefaults, TwoTierLoRA as CoreTwoTier,
};

use crate::args::{FsPath, Int, Real, Setting, Size, Text};
use crate::convert::{matrix, out2, slice, vector};
use crate::errors::{guard, to_pyerr, BindResult};

/// Applied micro steps between automatic merges of a `TwoTierLoRA` (the core takes it as an
/// argument and has no default of its own).
const DEFAULT_MERGE_EVERY: usize = 1000;

/// Q4 group sizes accepted by `save_quantized` (the core's range, checked for every kind).
const GROUP_SIZES: (usize, usize) = (2, 4096);

/// The d-independent micro-tier defaults (the signatures' default values).
fn micro() -> LoraConfig {
    LoraConfig::micro(REFERENCE_DIM)
}

/// The base-tier defaults (the signatures' default values).
fn base() -> LoraConfig {
    LoraConfig::base(REFERENCE_DIM)
}

/// A private, validated copy of a numpy input for a call that releases the GIL (see the module
/// docs); allocated fallibly.
fn owned(what: &str, s: &[f32]) -> BindResult<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(s.len()).map_err(|_| {
        SonaError::Config(format!(
            "{what}: cannot allocate a copy of {} values",
            s.len()
        ))
    })?;
    v.extend_from_slice(s);
    validate::check_finite(what, &v)?;
    Ok(v)
}

/// A zeroed output of `rows × cols` values, size-checked and allocated fallibly.
fn zeros2(what: &str, rows: usize, cols: usize) -> BindResult<Vec<f32>> {
    let n = validate::element_count(what, &[rows, cols])?;
    Ok(validate::try_zeros(what, n)?)
}

type Arr1<'py> = Bound<'py, PyArray1<f32>>;
type Arr2<'py> = Bound<'py, PyArray2<f32>>;

/// A fresh `float32` vector of length `n` filled in place by `f` (no intermediate `Vec`).
fn new_vec<'py, R>(
    py: Python<'py>,
    n: usize,
    f: impl FnOnce(&mut [f32]) -> BindResult<R>,
) -> BindResult<(Arr1<'py>, R)> {
    let arr = PyArray1::<f32>::zeros(py, n, false);
    // SAFETY: `arr` was created just above, is contiguous and not yet visible to Python code.
    let out = unsafe { arr.as_slice_mut() }.map_err(|e| SonaError::Internal(format!("{e}")))?;
    let r = f(out)?;
    Ok((arr, r))
}

/// A flag read as Python's `if` reads it (`explore=1` explores).
fn truthy(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    obj.is_truthy()
}

/// The frozen map `W`: None or "identity", "zero", or a dense `d_out × d_in` matrix.
fn frozen_from(w: Option<&Bound<'_, PyAny>>, d_in: usize, d_out: usize) -> BindResult<Frozen> {
    let Some(w) = w else {
        return Ok(Frozen::Identity);
    };
    if let Ok(s) = w.cast::<pyo3::types::PyString>() {
        return match s.to_str()? {
            "identity" => Ok(Frozen::Identity),
            "zero" => Ok(Frozen::Zero),
            other => Err(SonaError::Config(format!(
                "W must be None, 'identity', 'zero' or a matrix, got {other:?}"
            ))
            .into()),
        };
    }
    let m = matrix("W", w)?;
    if m.shape() != [d_out, d_in] {
        return Err(SonaError::Dimension {
            what: "W".into(),
            expected: format!("shape ({d_out}, {d_in})"),
            got: format!("shape {:?}", m.shape()),
        }
        .into());
    }
    Ok(Frozen::Dense(slice(&m).to_vec()))
}

/// The step and exploration settings every adapter takes.
struct Learning {
    lr: Setting,
    momentum: Setting,
    clip: Setting,
    max_norm: Setting,
    decay: Setting,
    sigma: Setting,
    baseline_rate: Setting,
    capacity: Size,
}

impl Learning {
    fn configs(&self) -> (OptimConfig, ExploreConfig) {
        (
            OptimConfig {
                lr: self.lr.f32(),
                momentum: self.momentum.f32(),
                clip: self.clip.f32(),
                max_norm: self.max_norm.f32(),
                decay: self.decay.f32(),
            },
            ExploreConfig {
                sigma: self.sigma.f32(),
                baseline_rate: self.baseline_rate.f32(),
                capacity: self.capacity.0,
            },
        )
    }
}

/// `(d_in, d_out)`, `d_out` defaulting to `d_in`.
fn dims(d_in: Size, d_out: Option<Size>) -> (usize, usize) {
    (d_in.0, d_out.unwrap_or(d_in).0)
}

/// The config of a standalone adapter.
fn adapter_config(
    (d_in, d_out): (usize, usize),
    rank: Size,
    alpha: Setting,
    learning: &Learning,
    (w, seed, module): (Option<&Bound<'_, PyAny>>, Size, Text),
) -> BindResult<LoraConfig> {
    let (optim, explore) = learning.configs();
    Ok(LoraConfig {
        d_in,
        d_out,
        rank: rank.0,
        alpha: alpha.f32(),
        frozen: frozen_from(w, d_in, d_out)?,
        optim,
        explore,
        seed: seed.0 as u64,
        module: module.0,
    })
}

/// The merge report as a dict (keys of `sona.lora.MergeReport`).
fn report_dict<'py>(py: Python<'py>, r: &MergeReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("discarded", r.discarded)?;
    d.set_item("discarded_fraction", r.discarded_fraction)?;
    d.set_item("total_norm", r.total_norm)?;
    d.set_item(
        "singular_values",
        PyArray1::from_vec(py, r.singular_values.clone()),
    )?;
    Ok(d)
}

fn weights_pair<'py>(py: Python<'py>, w: &LoraWeights) -> BindResult<(Arr2<'py>, Arr2<'py>)> {
    Ok((
        out2(py, w.a.clone(), w.rank, w.d_in)?,
        out2(py, w.b_peft(), w.d_out, w.rank)?,
    ))
}

/// An exploration token (`args::Int`: not an int is `InvalidInputError`): one no exploration can
/// have (outside `[1, 2⁶³)`, tokens count up from 1) is unknown.
fn token_id(token: Int) -> Result<u64, SonaError> {
    match u64::try_from(token.0) {
        Ok(t) if (1..=i64::MAX as u64).contains(&t) => Ok(t),
        _ => Err(SonaError::UnknownId {
            kind: "exploration token",
            id: token.0,
        }),
    }
}

/// The calls `LoRA` and `TwoTierLoRA` share, so their Python methods have one body each
/// ([`forward_py`], [`forward_batch_py`], [`update_py`], [`reward_py`]).
trait Adapter: Sync {
    fn dims(&self) -> (usize, usize);
    /// `y ← forward(x)`, `(explore)` adding noise and returning its token; lengths checked.
    fn forward_into(
        &self,
        x: &[f32],
        y: &mut [f32],
        explore: bool,
    ) -> Result<Option<u64>, SonaError>;
    fn forward_rows(&self, xs: &[f32], n: usize, ys: &mut [f32]) -> Result<(), SonaError>;
    fn step(&self, x: &[f32], e: &[f32]) -> Result<(), SonaError>;
    fn rewarded(&self, token: u64, reward: f32) -> Result<(), SonaError>;
}

impl Adapter for CoreLora {
    fn dims(&self) -> (usize, usize) {
        (self.config().d_in, self.config().d_out)
    }
    fn forward_into(
        &self,
        x: &[f32],
        y: &mut [f32],
        explore: bool,
    ) -> Result<Option<u64>, SonaError> {
        self.forward_unchecked(x, y)?;
        explore.then(|| self.explore_output(x, y)).transpose()
    }
    fn forward_rows(&self, xs: &[f32], n: usize, ys: &mut [f32]) -> Result<(), SonaError> {
        self.forward_batch(xs, n, ys)
    }
    fn step(&self, x: &[f32], e: &[f32]) -> Result<(), SonaError> {
        self.update(x, e).map(drop)
    }
    fn rewarded(&self, token: u64, reward: f32) -> Result<(), SonaError> {
        self.reward(token, reward).map(drop)
    }
}

impl Adapter for CoreTwoTier {
    fn dims(&self) -> (usize, usize) {
        (self.d_in(), self.d_out())
    }
    fn forward_into(
        &self,
        x: &[f32],
        y: &mut [f32],
        explore: bool,
    ) -> Result<Option<u64>, SonaError> {
        if explore {
            self.forward_explore(x, y).map(Some)
        } else {
            self.forward(x, y).map(|()| None)
        }
    }
    fn forward_rows(&self, xs: &[f32], n: usize, ys: &mut [f32]) -> Result<(), SonaError> {
        self.forward_batch(xs, n, ys)
    }
    fn step(&self, x: &[f32], e: &[f32]) -> Result<(), SonaError> {
        self.update(x, e).map(drop)
    }
    fn rewarded(&self, token: u64, reward: f32) -> Result<(), SonaError> {
        self.reward(token, reward).map(drop)
    }
}

/// `forward(x, explore)`: `y`, or `(y, token)` when exploring.
fn forward_py(
    a: &impl Adapter,
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    explore: bool,
) -> PyResult<Py<PyAny>> {
    guard(py, || {
        let xr = vector("x", x)?;
        let xs = slice(&xr);
        let (d_in, d_out) = a.dims();
        validate::check_len("x", xs, d_in)?;
        let (y, token) = new_vec(py, d_out, |y| Ok(a.forward_into(xs, y, explore)?))?;
        Ok(match token {
            None => y.into_any().unbind(),
            Some(t) => (y, t).into_pyobject(py)?.into_any().unbind(),
        })
    })
}

/// `forward_batch(X)`, with the GIL released on a validated copy of `X` (module docs).
fn forward_batch_py<'py>(
    a: &impl Adapter,
    py: Python<'py>,
    xs: &Bound<'py, PyAny>,
) -> PyResult<Arr2<'py>> {
    guard(py, || {
        let m = matrix("X", xs)?;
        let ((n, cols), (d_in, d_out)) = ((m.shape()[0], m.shape()[1]), a.dims());
        if cols != d_in {
            return Err(SonaError::len_mismatch("X columns", d_in, cols).into());
        }
        let src = owned("X", slice(&m))?;
        let mut ys = zeros2("forward_batch output", n, d_out)?;
        py.detach(|| a.forward_rows(&src, n, &mut ys))?;
        out2(py, ys, n, d_out)
    })
}

/// `update(x, error)`.
fn update_py(
    a: &impl Adapter,
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    error: &Bound<'_, PyAny>,
) -> PyResult<()> {
    guard(py, || {
        let (xr, er) = (vector("x", x)?, vector("error", error)?);
        Ok(a.step(slice(&xr), slice(&er))?)
    })
}

/// `reward(token, reward)`.
fn reward_py(a: &impl Adapter, py: Python<'_>, token: Int, reward: Real) -> PyResult<()> {
    guard(py, || Ok(a.rewarded(token_id(token)?, reward.f32())?))
}

enum Inner {
    Own(Arc<CoreLora>),
    Base(Arc<CoreTwoTier>),
    Micro(Arc<CoreTwoTier>),
}

/// Methods shared by :class:`MicroLoRA` and :class:`BaseLoRA` (construct one of those).
#[pyclass(subclass, frozen, module = "sona.lora", name = "LoRA")]
pub(crate) struct LoRA {
    inner: Inner,
    /// `(kind, rel_error)` of the file an adapter from `load_quantized` was read from.
    quant: OnceLock<(String, f32)>,
}

impl LoRA {
    fn own(l: CoreLora) -> Self {
        Self::of(Inner::Own(Arc::new(l)))
    }

    fn of(inner: Inner) -> Self {
        LoRA {
            inner,
            quant: OnceLock::new(),
        }
    }

    fn lora(&self) -> &CoreLora {
        match &self.inner {
            Inner::Own(l) => l,
            Inner::Base(t) => &t.base,
            Inner::Micro(t) => &t.micro,
        }
    }

    /// Replaces the weights with PEFT-layout factors (`a` `[r, d_in]`, `b` `[d_out, r]`, shapes
    /// checked by the caller).
    fn put_weights(&self, a: &[f32], b: &[f32]) -> Result<(), SonaError> {
        let c = self.lora().config();
        let w = LoraWeights::from_peft(c.d_in, c.d_out, c.rank, c.scale(), a, b)?;
        self.lora().set_weights(w).map_err(|e| match e {
            SonaError::Checkpoint(m) => SonaError::invalid(m),
            other => other,
        })
    }
}

/// Wraps `l` as a `MicroLoRA` or `BaseLoRA` Python object.
fn tier_object(py: Python<'_>, l: LoRA, is_base: bool) -> PyResult<Bound<'_, PyAny>> {
    let init = PyClassInitializer::from(l);
    Ok(if is_base {
        Bound::new(py, init.add_subclass(BaseLoRA))?.into_any()
    } else {
        Bound::new(py, init.add_subclass(MicroLoRA))?.into_any()
    })
}

#[pymethods]
impl LoRA {
    /// Input dimension.
    #[getter]
    fn d_in(&self) -> usize {
        self.lora().config().d_in
    }

    /// Output dimension.
    #[getter]
    fn d_out(&self) -> usize {
        self.lora().config().d_out
    }

    /// LoRA rank ``r``.
    #[getter]
    fn rank(&self) -> usize {
        self.lora().config().rank
    }

    /// ``alpha``; the forward scale is ``alpha / rank``.
    #[getter]
    fn alpha(&self) -> f32 {
        self.lora().config().alpha
    }

    /// Forward scale ``s = alpha / rank``.
    #[getter]
    fn scale(&self) -> f32 {
        self.lora().config().scale()
    }

    /// Target-module name used in PEFT files.
    #[getter]
    fn module(&self) -> String {
        self.lora().config().module.clone()
    }

    /// Whether the adapter is read-only (see :meth:`freeze`).
    #[getter]
    fn frozen(&self) -> bool {
        self.lora().is_frozen()
    }

    /// Set on adapters returned by :func:`load_quantized`: the format (else None).
    #[getter]
    fn quant_kind(&self) -> Option<String> {
        self.quant.get().map(|q| q.0.clone())
    }

    /// Set on adapters returned by :func:`load_quantized`: its recorded error (else None).
    #[getter]
    fn quant_error(&self) -> Option<f32> {
        self.quant.get().map(|q| q.1)
    }

    /// Every setting, as a dict.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.lora().config();
        let d = PyDict::new(py);
        d.set_item("d_in", c.d_in)?;
        d.set_item("d_out", c.d_out)?;
        d.set_item("rank", c.rank)?;
        d.set_item("alpha", c.alpha)?;
        d.set_item("lr", c.optim.lr)?;
        d.set_item("momentum", c.optim.momentum)?;
        d.set_item("clip", c.optim.clip)?;
        d.set_item("max_norm", c.optim.max_norm)?;
        d.set_item("decay", c.optim.decay)?;
        d.set_item("sigma", c.explore.sigma)?;
        d.set_item("baseline_rate", c.explore.baseline_rate)?;
        d.set_item("capacity", c.explore.capacity)?;
        d.set_item("seed", c.seed)?;
        d.set_item("module", &c.module)?;
        d.set_item("base_map", c.frozen.name())?;
        Ok(d)
    }

    /// ``y = W x + s·B(A x)`` for one vector.
    ///
    /// With ``explore=True`` returns ``(y + noise, token)``: pass the token and a reward in [0, 1]
    /// for the returned output to :meth:`reward`.
    #[pyo3(signature = (x, explore = false))]
    fn forward(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = truthy)] explore: bool,
    ) -> PyResult<Py<PyAny>> {
        forward_py(self.lora(), py, x, explore)
    }

    /// ``y = W x + s·B(A x)`` for one vector (:meth:`forward`).
    #[pyo3(signature = (x, explore = false))]
    fn __call__(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = truthy)] explore: bool,
    ) -> PyResult<Py<PyAny>> {
        forward_py(self.lora(), py, x, explore)
    }

    /// Forward for each row of ``X`` (``n × d_in``), all on the same weights.
    #[allow(non_snake_case)] // the Python argument name
    fn forward_batch<'py>(&self, py: Python<'py>, X: &Bound<'py, PyAny>) -> PyResult<Arr2<'py>> {
        forward_batch_py(self.lora(), py, X)
    }

    /// Learn from ``reward ∈ [0, 1]`` given to the explored output of ``token`` (used once).
    ///
    /// Raises UnknownIdError for an unknown, evicted or already rewarded token,
    /// InvalidInputError for a reward outside [0, 1] or not a number, and NumericalError when the
    /// step it feeds is refused (non-finite, or a factor above the bound); nothing changes then
    /// (the token stays redeemable, the baseline and ``counters()["rewards"]`` do not move; only
    /// ``counters()["rejected"]`` counts the refusal).
    fn reward(&self, py: Python<'_>, token: Int, reward: Real) -> PyResult<()> {
        reward_py(self.lora(), py, token, reward)
    }

    /// One exact optimizer step for ``error = dL/dy`` at input ``x``.
    ///
    /// A step that would make weights non-finite raises NumericalError, is counted in
    /// ``counters()["rejected"]`` and is not applied.
    fn update(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        error: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        update_py(self.lora(), py, x, error)
    }

    /// One step on the mean gradient of a batch (rows of ``X`` with their ``errors``): the
    /// background (loop B) update of a base adapter trained on replayed data.
    #[allow(non_snake_case)] // the Python argument name
    fn update_batch(
        &self,
        py: Python<'_>,
        X: &Bound<'_, PyAny>,
        errors: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            let (xm, em) = (matrix("X", X)?, matrix("errors", errors)?);
            let l = self.lora();
            let n = xm.shape()[0];
            if em.shape()[0] != n {
                return Err(SonaError::Dimension {
                    what: "errors".into(),
                    expected: format!("{n} rows (one per row of X)"),
                    got: format!("{} rows", em.shape()[0]),
                }
                .into());
            }
            let (xs, es) = (owned("X", slice(&xm))?, owned("errors", slice(&em))?);
            py.detach(|| l.update_batch(&xs, &es, n))?;
            Ok(())
        })
    }

    /// Exact ``(dL/dA [r, d_in], dL/dB [d_out, r], dL/dx [d_in])`` for ``error = dL/dy``.
    #[allow(clippy::type_complexity)]
    fn gradients<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        error: &Bound<'py, PyAny>,
    ) -> PyResult<(Arr2<'py>, Arr2<'py>, Arr1<'py>)> {
        guard(py, || {
            let (xr, er) = (vector("x", x)?, vector("error", error)?);
            let l = self.lora();
            let (ga, gb, gx) = l.gradients(slice(&xr), slice(&er))?;
            let c = l.config();
            Ok((
                out2(py, ga, c.rank, c.d_in)?,
                out2(py, gb, c.d_out, c.rank)?,
                PyArray1::from_vec(py, gx),
            ))
        })
    }

    /// A copy of ``A`` (``[r, d_in]``).
    #[getter(lora_A)]
    fn lora_a<'py>(&self, py: Python<'py>) -> PyResult<Arr2<'py>> {
        guard(py, || Ok(weights_pair(py, &self.lora().snapshot())?.0))
    }

    /// A copy of ``B`` (``[d_out, r]``).
    #[getter(lora_B)]
    fn lora_b<'py>(&self, py: Python<'py>) -> PyResult<Arr2<'py>> {
        guard(py, || Ok(weights_pair(py, &self.lora().snapshot())?.1))
    }

    /// The dense correction ``ΔW = s·B A`` (``[d_out, d_in]``).
    fn delta_w<'py>(&self, py: Python<'py>) -> PyResult<Arr2<'py>> {
        guard(py, || {
            let w = self.lora().snapshot();
            out2(py, w.try_delta_w()?, w.d_out, w.d_in)
        })
    }

    /// ``‖ΔW‖_F`` (computed without forming ``ΔW``).
    fn delta_norm(&self) -> f32 {
        self.lora().snapshot().delta_frob_sq().sqrt()
    }

    /// Replace ``A`` and ``B`` (same shapes) and forget the optimizer momentum.
    ///
    /// Every entry must be finite and at most ``MAX_WEIGHT`` (1e4) in magnitude: larger factors are
    /// refused with NumericalError (trained LoRA factors are of order 1; see docs/reliability.md).
    #[allow(non_snake_case)] // the Python argument names
    fn set_weights(
        &self,
        py: Python<'_>,
        lora_A: &Bound<'_, PyAny>,
        lora_B: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            let (ar, br) = (matrix("lora_A", lora_A)?, matrix("lora_B", lora_B)?);
            let c = self.lora().config();
            if ar.shape() != [c.rank, c.d_in] || br.shape() != [c.d_out, c.rank] {
                return Err(SonaError::Dimension {
                    what: "lora_A, lora_B".into(),
                    expected: format!("({}, {}) and ({}, {})", c.rank, c.d_in, c.d_out, c.rank),
                    got: format!("{:?} and {:?}", ar.shape(), br.shape()),
                }
                .into());
            }
            Ok(self.put_weights(slice(&ar), slice(&br))?)
        })
    }

    /// Counts: ``updates``, ``rejected`` (non-finite steps refused), ``rewards``, ``explored``,
    /// ``merges``.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.lora().counters();
        let d = PyDict::new(py);
        d.set_item("updates", c.updates)?;
        d.set_item("rejected", c.rejected)?;
        d.set_item("rewards", c.rewards)?;
        d.set_item("explored", c.explored)?;
        d.set_item("merges", c.merges)?;
        Ok(d)
    }

    /// The last applied step: ``grad_norm``, ``clipped``, ``bounded``, ``delta_norm``.
    fn last_step<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(s) = self.lora().last_step() else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("grad_norm", s.grad_norm)?;
        d.set_item("clipped", s.clipped)?;
        d.set_item("bounded", s.bounded)?;
        d.set_item("delta_norm", s.delta_norm)?;
        Ok(Some(d))
    }

    /// Write a PEFT directory (``adapter_model.safetensors`` + ``adapter_config.json``).
    ///
    /// ``module`` (default: the adapter's ``module``) must be the *full dotted path* of the target
    /// layer in the base model, e.g. ``"model.layers.0.self_attn.q_proj"``: PEFT loads weights by
    /// exact key, so a short name like ``"q_proj"`` would load as an adapter that does nothing and
    /// is refused (ConfigError). ``layer`` is the kind of that layer (``"embedding"`` writes
    /// ``lora_embedding_A/B``; ``"conv1d"``, GPT-2's layers, sets ``fan_in_fan_out``); by default
    /// it is inferred from the name (``embed_tokens``, ``wte``, ... are embeddings; ``c_attn``,
    /// ``c_fc``, ``c_proj`` are Conv1D; anything else is linear). ``task_type`` (e.g.
    /// ``"CAUSAL_LM"``) and ``base_model_name_or_path`` are written for ``AutoPeftModel*``.
    #[pyo3(signature = (path, *, module = None, layer = None, task_type = None,
                        base_model_name_or_path = None))]
    fn save_peft(
        &self,
        py: Python<'_>,
        path: FsPath,
        module: Option<Text>,
        layer: Option<Text>,
        task_type: Option<Text>,
        base_model_name_or_path: Option<Text>,
    ) -> PyResult<()> {
        guard(py, || {
            let l = self.lora();
            let export = peft::PeftExport {
                module: module.map_or_else(|| l.config().module.clone(), |m| m.0),
                layer: layer.map(|k| peft::LayerKind::parse(&k.0)).transpose()?,
                task_type: task_type.map(|t| t.0),
                base_model: base_model_name_or_path.map(|b| b.0),
            };
            let w = l.snapshot();
            let alpha = l.config().alpha;
            Ok(py.detach(|| peft::save_peft(&path, alpha, &w, &export))?)
        })
    }

    /// Load weights from a PEFT directory; shape, rank and alpha must match (CheckpointError
    /// otherwise, weights unchanged). ``module=None`` takes the adapter's own module if the file
    /// has it, else the file's only module. rsLoRA files (``use_rslora``) have scale
    /// ``lora_alpha/√r``, i.e. a SONA ``alpha`` of ``lora_alpha·√r``; DoRA, ``lora_bias`` and other
    /// features SONA cannot represent are refused.
    #[pyo3(signature = (path, module = None))]
    fn load_peft(&self, py: Python<'_>, path: FsPath, module: Option<Text>) -> PyResult<()> {
        guard(py, || {
            let l = self.lora();
            let c = l.config();
            let ad = py.detach(|| match &module {
                Some(m) => peft::load_peft(&path, Some(&m.0)),
                None => peft::load_peft(&path, Some(&c.module))
                    .or_else(|_| peft::load_peft(&path, None)),
            })?;
            if (ad.alpha - c.alpha).abs() > 1e-6 * c.alpha.abs() {
                return Err(SonaError::checkpoint(format!(
                    "lora_alpha mismatch: the file's scale corresponds to alpha {}, the adapter has {}",
                    ad.alpha, c.alpha
                ))
                .into());
            }
            l.set_weights(ad.weights).map_err(|e| match e {
                SonaError::Checkpoint(_) => e,
                other => SonaError::checkpoint(other.to_string()),
            })?;
            Ok(())
        })
    }

    /// Save the full training state (weights, momentum, reward baseline, exploration RNG,
    /// counters) so that :meth:`load` resumes exactly; pending exploration tokens are not kept.
    fn save(&self, py: Python<'_>, path: FsPath) -> PyResult<()> {
        guard(py, || {
            let l = self.lora();
            Ok(py.detach(|| l.save(&path))?)
        })
    }

    /// An adapter saved with :meth:`save` (CheckpointError if the file is corrupted).
    #[classmethod]
    fn load<'py>(cls: &Bound<'py, PyType>, path: FsPath) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let l = guard(py, || Ok(py.detach(|| CoreLora::load(&path))?))?;
        tier_object(py, LoRA::own(l), cls.is_subclass_of::<BaseLoRA>()?)
    }

    /// Make the adapter read-only (updates, rewards and merges into it then fail).
    fn freeze(&self) {
        self.lora().freeze()
    }

    /// Save an FP16 or group-wise Q4 copy of a frozen adapter.
    ///
    /// Returns ``kind``, ``rel_error`` (``‖ΔW − ΔŴ‖_F / ‖ΔW‖_F``) and ``payload_bytes``.
    #[pyo3(signature = (path, kind = Text("q4".into()), group_size = Size(32)))]
    fn save_quantized<'py>(
        &self,
        py: Python<'py>,
        path: FsPath,
        kind: Text,
        group_size: Size,
    ) -> PyResult<Bound<'py, PyDict>> {
        let q = guard(py, || {
            let group =
                validate::check_size("group_size", group_size.0, GROUP_SIZES.0, GROUP_SIZES.1)?;
            let l = self.lora();
            if !l.is_frozen() {
                return Err(SonaError::invalid(
                    "quantised copies are only made of frozen adapters; call freeze() first",
                )
                .into());
            }
            let kind = match kind.0.as_str() {
                "fp16" => QuantKind::F16,
                "q4" => QuantKind::Q4 { group },
                other => {
                    return Err(SonaError::Config(format!(
                        "kind must be 'fp16' or 'q4', got {other:?}"
                    ))
                    .into())
                }
            };
            let w = l.snapshot();
            let q = QuantizedLora::quantize(&w, kind)?;
            py.detach(|| q.save(&path))?;
            Ok(q)
        })?;
        let d = PyDict::new(py);
        d.set_item("kind", q.kind.name())?;
        d.set_item("rel_error", q.rel_error)?;
        d.set_item("payload_bytes", q.payload_bytes())?;
        Ok(d)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let c = slf.get().lora().config();
        Ok(format!(
            "{}(d_in={}, d_out={}, rank={}, alpha={})",
            slf.get_type().name()?,
            c.d_in,
            c.d_out,
            c.rank,
            c.alpha
        ))
    }
}

/// The fast tier: rank 1-2, one step per feedback.
///
/// Defaults were chosen on the adaptation benchmark (``sona eval adapt``; docs/decisions.md):
/// ``alpha=20`` (so ``s·‖A x‖`` is about 1 for unit ``x`` at rank 2), ``lr=3e-4``, momentum 0.9,
/// gradient clip 10, ``‖ΔW‖_F ≤ max_norm = 16`` up to d = 256 and ``16·d/256`` above
/// (:func:`default_max_norm`), decay ``1e-5`` per step, relative exploration ``sigma=0.1`` up to
/// d = 256 and ``0.1·√(256/d)`` above (:func:`default_sigma`), and a linear baseline fitted at
/// rate 0.05. Learning one output direction at dimension d takes about :func:`feedback_budget`
/// rewards.
#[pyclass(extends = LoRA, frozen, module = "sona.lora", name = "MicroLoRA")]
pub(crate) struct MicroLoRA;

#[pymethods]
impl MicroLoRA {
    #[new]
    #[pyo3(signature = (d_in, d_out = None, *, rank = Size(micro().rank),
                        alpha = Setting(micro().alpha.into()), lr = None,
                        momentum = Setting(micro().optim.momentum.into()),
                        clip = Setting(micro().optim.clip.into()), max_norm = None,
                        decay = Setting(micro().optim.decay.into()), sigma = None,
                        baseline_rate = Setting(micro().explore.baseline_rate.into()),
                        capacity = Size(micro().explore.capacity),
                        seed = Size(micro().seed as usize), W = None,
                        module = Text(micro().module)))]
    #[allow(clippy::too_many_arguments, non_snake_case)] // the Python constructor's keywords
    fn new(
        py: Python<'_>,
        d_in: Size,
        d_out: Option<Size>,
        rank: Size,
        alpha: Setting,
        lr: Option<Setting>,
        momentum: Setting,
        clip: Setting,
        max_norm: Option<Setting>,
        decay: Setting,
        sigma: Option<Setting>,
        baseline_rate: Setting,
        capacity: Size,
        seed: Size,
        W: Option<&Bound<'_, PyAny>>,
        module: Text,
    ) -> PyResult<PyClassInitializer<Self>> {
        guard(py, || {
            let d = dims(d_in, d_out);
            // The d-scaled defaults of the output dimension (`ScaledDefaults`).
            let scaled = LoraConfig::micro(d.1);
            let learning = Learning {
                lr: lr.unwrap_or(Setting(scaled.optim.lr.into())),
                momentum,
                clip,
                max_norm: max_norm.unwrap_or(Setting(scaled.optim.max_norm.into())),
                decay,
                sigma: sigma.unwrap_or(Setting(scaled.explore.sigma.into())),
                baseline_rate,
                capacity,
            };
            let config = adapter_config(d, rank, alpha, &learning, (W, seed, module))?;
            Ok(PyClassInitializer::from(LoRA::own(CoreLora::new(config)?)).add_subclass(MicroLoRA))
        })
    }

    /// Merge this adapter into ``base`` (see :meth:`BaseLoRA.merge_from`).
    fn merge_into<'py>(
        slf: &Bound<'py, Self>,
        base: &Bound<'py, BaseLoRA>,
    ) -> PyResult<Bound<'py, PyDict>> {
        merge(base.as_super().get(), slf.as_super().get(), slf.py())
    }
}

/// Absorbs `micro` into `base` with the GIL released; the report as a dict.
fn merge<'py>(base: &LoRA, micro: &LoRA, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let rep = guard(py, || {
        let (b, m) = (base.lora(), micro.lora());
        Ok(py.detach(|| b.merge_from(m))?)
    })?;
    report_dict(py, &rep)
}

/// The slow tier: rank 4-16, trained in the background and by absorbing micro adapters.
///
/// No Frobenius bound and no decay by default.
#[pyclass(extends = LoRA, frozen, module = "sona.lora", name = "BaseLoRA")]
pub(crate) struct BaseLoRA;

#[pymethods]
impl BaseLoRA {
    #[new]
    #[pyo3(signature = (d_in, d_out = None, *, rank = Size(base().rank),
                        alpha = Setting(base().alpha.into()),
                        lr = Setting(base().optim.lr.into()),
                        momentum = Setting(base().optim.momentum.into()),
                        clip = Setting(base().optim.clip.into()),
                        max_norm = Setting(base().optim.max_norm.into()),
                        decay = Setting(base().optim.decay.into()),
                        sigma = Setting(ExploreConfig::default().sigma.into()),
                        baseline_rate = Setting(base().explore.baseline_rate.into()),
                        capacity = Size(base().explore.capacity),
                        seed = Size(base().seed as usize), W = None,
                        module = Text(base().module)))]
    #[allow(clippy::too_many_arguments, non_snake_case)] // the Python constructor's keywords
    fn new(
        py: Python<'_>,
        d_in: Size,
        d_out: Option<Size>,
        rank: Size,
        alpha: Setting,
        lr: Setting,
        momentum: Setting,
        clip: Setting,
        max_norm: Setting,
        decay: Setting,
        sigma: Setting,
        baseline_rate: Setting,
        capacity: Size,
        seed: Size,
        W: Option<&Bound<'_, PyAny>>,
        module: Text,
    ) -> PyResult<PyClassInitializer<Self>> {
        guard(py, || {
            let learning = Learning {
                lr,
                momentum,
                clip,
                max_norm,
                decay,
                sigma,
                baseline_rate,
                capacity,
            };
            let config =
                adapter_config(dims(d_in, d_out), rank, alpha, &learning, (W, seed, module))?;
            Ok(PyClassInitializer::from(LoRA::own(CoreLora::new(config)?)).add_subclass(BaseLoRA))
        })
    }

    /// Absorb ``micro``: ``ΔW_b ←`` best rank-``r_b`` approximation of ``ΔW_b + ΔW_µ``.
    ///
    /// Exact up to that truncation (concatenate factors, QR, SVD of the small core); the micro
    /// adapter is zeroed (``B_µ = 0``, fresh ``A_µ``). Returns the discarded spectral mass.
    fn merge_from<'py>(
        slf: &Bound<'py, Self>,
        micro: &Bound<'py, LoRA>,
    ) -> PyResult<Bound<'py, PyDict>> {
        merge(slf.as_super().get(), micro.get(), slf.py())
    }

    /// A new adapter holding the weights of a PEFT directory (identity ``W``; ``d_in`` must
    /// equal ``d_out`` unless ``W`` is given in ``settings``).
    #[classmethod]
    #[pyo3(signature = (path, module = None, **settings))]
    fn from_peft<'py>(
        cls: &Bound<'py, PyType>,
        path: FsPath,
        module: Option<Text>,
        settings: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let ad = guard(py, || {
            Ok(py.detach(|| peft::load_peft(&path, module.as_ref().map(|m| m.0.as_str())))?)
        })?;
        let w = &ad.weights;
        let fixed = [
            ("rank", w.rank.into_pyobject(py)?.into_any()),
            ("alpha", ad.alpha.into_pyobject(py)?.into_any()),
            ("module", ad.module.as_str().into_pyobject(py)?.into_any()),
        ];
        let obj = construct(cls, (w.d_in, w.d_out), &fixed, settings)?;
        guard(py, || {
            let l = obj.cast::<LoRA>().map_err(PyErr::from)?.get();
            Ok(l.put_weights(&w.a, &w.b_peft())?)
        })?;
        Ok(obj)
    }
}

/// `cls(d_in, d_out, **fixed, **settings)`; a setting that repeats a value read from the file
/// raises `ConfigError`.
fn construct<'py>(
    cls: &Bound<'py, PyType>,
    dims: (usize, usize),
    fixed: &[(&str, Bound<'py, PyAny>)],
    settings: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let kwargs = PyDict::new(py);
    for (k, v) in fixed {
        kwargs.set_item(k, v)?;
    }
    if let Some(s) = settings {
        for (k, v) in s.iter() {
            if kwargs.contains(&k)? {
                return Err(to_pyerr(
                    py,
                    SonaError::Config(format!("{k} is read from the file, it cannot be set")),
                ));
            }
            kwargs.set_item(k, v)?;
        }
    }
    cls.call(dims, Some(&kwargs))
}

/// ``(module, alpha, lora_A, lora_B)`` from a PEFT directory (CheckpointError if bad).
///
/// ``alpha`` is the SONA alpha giving the file's scale: ``lora_alpha``, or ``lora_alpha·√r`` for
/// an rsLoRA file.
#[pyfunction]
#[pyo3(signature = (path, module = None))]
#[allow(clippy::type_complexity)]
fn read_peft<'py>(
    py: Python<'py>,
    path: FsPath,
    module: Option<Text>,
) -> PyResult<(String, f32, Arr2<'py>, Arr2<'py>)> {
    guard(py, || {
        let ad = py.detach(|| peft::load_peft(&path, module.as_ref().map(|m| m.0.as_str())))?;
        let (a, b) = weights_pair(py, &ad.weights)?;
        Ok((ad.module, ad.alpha, a, b))
    })
}

/// A frozen :class:`BaseLoRA` holding the dequantised weights of :meth:`LoRA.save_quantized`.
///
/// The reconstruction error recorded at save time is in ``adapter.quant_error``.
#[pyfunction]
#[pyo3(signature = (path, **settings))]
fn load_quantized<'py>(
    py: Python<'py>,
    path: FsPath,
    settings: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let q = guard(py, || Ok(py.detach(|| QuantizedLora::load(&path))?))?;
    let w = q.dequantize();
    let alpha = f64::from(q.scale) * w.rank as f64;
    let fixed = [
        ("rank", w.rank.into_pyobject(py)?.into_any()),
        ("alpha", alpha.into_pyobject(py)?.into_any()),
    ];
    let obj = construct(
        &py.get_type::<BaseLoRA>(),
        (w.d_in, w.d_out),
        &fixed,
        settings,
    )?;
    guard(py, || {
        let l = obj.cast::<LoRA>().map_err(PyErr::from)?.get();
        l.put_weights(&w.a, &w.b_peft())?;
        l.lora().freeze();
        // A fresh object: nothing else can have set it.
        let _ = l.quant.set((q.kind.name().to_string(), q.rel_error));
        Ok(())
    })?;
    Ok(obj)
}

/// The learning defaults for output dimension ``d`` (``1 <= d <= 65536``; ConfigError else).
///
/// Read from Rust (``sona_lora::ScaledDefaults``, the one source; design §11.1): ``sigma``
/// (relative exploration noise), ``micro_lr`` / ``micro_max_norm`` (a :class:`MicroLoRA` alone),
/// ``stacked_lr`` / ``stacked_max_norm`` (the micro tier of a :class:`TwoTierLoRA`) and
/// ``feedbacks_per_direction`` (:func:`feedback_budget` for one direction). Up to d = 256 they are
/// the values tuned there; above, ``sigma ∝ √(256/d)``, ``stacked_lr ∝ √(d/256)``,
/// ``micro_max_norm ∝ d/256``. Chosen on validation seeds of ``sona eval adapt --dims … --clusters
/// …`` (docs/benchmarks.md, "Defaults across sizes").
#[pyfunction]
fn scaled_defaults(py: Python<'_>, d: Size) -> PyResult<Bound<'_, PyDict>> {
    let s = checked_defaults(py, d)?;
    let out = PyDict::new(py);
    out.set_item("sigma", s.sigma)?;
    out.set_item("micro_lr", s.micro_lr)?;
    out.set_item("stacked_lr", s.stacked_lr)?;
    out.set_item("micro_max_norm", s.micro_max_norm)?;
    out.set_item("stacked_max_norm", s.stacked_max_norm)?;
    out.set_item("feedbacks_per_direction", s.feedbacks_per_direction)?;
    Ok(out)
}

fn checked_defaults(py: Python<'_>, d: Size) -> PyResult<ScaledDefaults> {
    guard(py, || Ok(ScaledDefaults::checked(d.0)?))
}

/// Default relative exploration noise for output dimension ``d``: 0.1 up to d = 256, then
/// ``0.1·√(256/d)``, which keeps the noise norm ``σ√d‖y‖`` at its d = 256 size
/// (:func:`scaled_defaults`).
#[pyfunction]
fn default_sigma(py: Python<'_>, d: Size) -> PyResult<f64> {
    Ok(checked_defaults(py, d)?.sigma)
}

/// Default step size for dimension ``d``: 3e-4 for a micro adapter at every d; for a two-tier
/// stack 3e-4 up to d = 256, then ``3e-4·√(d/256)`` (:func:`scaled_defaults`).
#[pyfunction]
#[pyo3(signature = (d, two_tier = false))]
fn default_lr(
    py: Python<'_>,
    d: Size,
    #[pyo3(from_py_with = truthy)] two_tier: bool,
) -> PyResult<f64> {
    let s = checked_defaults(py, d)?;
    Ok(if two_tier { s.stacked_lr } else { s.micro_lr })
}

/// Default Frobenius bound on a micro adapter's ``ΔW``: 16 in a two-tier stack (its merges
/// empty it); for a micro adapter alone 16 up to d = 256, then ``16·d/256`` (the exploration noise
/// a longer, d-proportional training leaves in ``ΔW`` would otherwise crowd out the signal).
#[pyfunction]
#[pyo3(signature = (d, two_tier = false))]
fn default_max_norm(
    py: Python<'_>,
    d: Size,
    #[pyo3(from_py_with = truthy)] two_tier: bool,
) -> PyResult<f64> {
    let s = checked_defaults(py, d)?;
    Ok(if two_tier {
        s.stacked_max_norm
    } else {
        s.micro_max_norm
    })
}

/// Rewards an adapter needs to learn ``directions`` output directions at dimension ``d``:
/// ``6·d·directions``.
///
/// A scalar reward measures the hidden target direction along one random exploration direction
/// only, so the rewards needed grow in proportion to ``d`` whatever the step, noise or baseline;
/// 6 per unit of ``d`` is what reached ≥ 0.6 own-phase score on validation seeds (design §11.1).
#[pyfunction]
#[pyo3(signature = (d, directions = Size(1)))]
fn feedback_budget(py: Python<'_>, d: Size, directions: Size) -> PyResult<u128> {
    let per = checked_defaults(py, d)?.feedbacks_per_direction;
    // Exact (no saturation) for every `directions` a `Size` can hold.
    Ok(u128::from(per) * directions.0 as u128)
}

/// Base (rank ``base_rank``) + micro (rank ``micro_rank``) adapters on one frozen map.
///
/// ``y = W x + ΔW_b x + ΔW_µ x``. Every feedback trains the micro tier; every ``merge_every``
/// applied micro steps it is merged into the base (0 disables automatic merges; call
/// :meth:`merge`). The tiers are exposed as :attr:`base` and :attr:`micro` (shared state).
/// ``lr``, ``sigma`` and ``max_norm`` default to :func:`default_lr`, :func:`default_sigma` and
/// :func:`default_max_norm` (two-tier) of ``d_out``: the d = 256 values, with the step scaled by
/// ``√(d/256)`` and the noise by ``√(256/d)`` above 256 (:func:`scaled_defaults`).
#[pyclass(frozen, module = "sona.lora", name = "TwoTierLoRA")]
pub(crate) struct TwoTierLoRA {
    inner: Arc<CoreTwoTier>,
    base: Py<BaseLoRA>,
    micro: Py<MicroLoRA>,
}

#[pymethods]
impl TwoTierLoRA {
    #[new]
    #[pyo3(signature = (d_in, d_out = None, *, base_rank = Size(base().rank),
                        micro_rank = Size(micro().rank),
                        base_alpha = Setting(base().alpha.into()),
                        micro_alpha = Setting(micro().alpha.into()), lr = None,
                        momentum = Setting(micro().optim.momentum.into()),
                        clip = Setting(micro().optim.clip.into()), max_norm = None,
                        decay = Setting(micro().optim.decay.into()), sigma = None,
                        baseline_rate = Setting(micro().explore.baseline_rate.into()),
                        capacity = Size(micro().explore.capacity),
                        seed = Size(micro().seed as usize),
                        merge_every = Size(DEFAULT_MERGE_EVERY), W = None,
                        module = Text(micro().module)))]
    #[allow(clippy::too_many_arguments, non_snake_case)] // the Python constructor's keywords
    fn new(
        py: Python<'_>,
        d_in: Size,
        d_out: Option<Size>,
        base_rank: Size,
        micro_rank: Size,
        base_alpha: Setting,
        micro_alpha: Setting,
        lr: Option<Setting>,
        momentum: Setting,
        clip: Setting,
        max_norm: Option<Setting>,
        decay: Setting,
        sigma: Option<Setting>,
        baseline_rate: Setting,
        capacity: Size,
        seed: Size,
        merge_every: Size,
        W: Option<&Bound<'_, PyAny>>,
        module: Text,
    ) -> PyResult<Self> {
        let inner = guard(py, || {
            let (d_in, d_out) = dims(d_in, d_out);
            // The d-scaled defaults of the stack's micro tier (`ScaledDefaults`).
            let scaled = LoraConfig::stacked_micro(d_out);
            let learning = Learning {
                lr: lr.unwrap_or(Setting(scaled.optim.lr.into())),
                momentum,
                clip,
                max_norm: max_norm.unwrap_or(Setting(scaled.optim.max_norm.into())),
                decay,
                sigma: sigma.unwrap_or(Setting(scaled.explore.sigma.into())),
                baseline_rate,
                capacity,
            };
            let (optim, explore) = learning.configs();
            let frozen = frozen_from(W, d_in, d_out)?;
            let micro_cfg = LoraConfig {
                d_in,
                d_out,
                rank: micro_rank.0,
                alpha: micro_alpha.f32(),
                frozen: Frozen::Zero,
                optim,
                explore,
                seed: (seed.0 as u64).wrapping_add(1),
                module: module.0,
            };
            let base_cfg = LoraConfig {
                rank: base_rank.0,
                alpha: base_alpha.f32(),
                frozen,
                optim: OptimConfig {
                    max_norm: f32::INFINITY,
                    decay: 0.0,
                    ..micro_cfg.optim
                },
                seed: seed.0 as u64,
                ..micro_cfg.clone()
            };
            let merge_every = u64::try_from(merge_every.0)
                .map_err(|_| SonaError::Config("merge_every is too large".into()))?;
            Ok(Arc::new(CoreTwoTier::new(
                base_cfg,
                micro_cfg,
                merge_every,
            )?))
        })?;
        let tier = |inner: Inner| PyClassInitializer::from(LoRA::of(inner));
        Ok(TwoTierLoRA {
            base: Py::new(
                py,
                tier(Inner::Base(Arc::clone(&inner))).add_subclass(BaseLoRA),
            )?,
            micro: Py::new(
                py,
                tier(Inner::Micro(Arc::clone(&inner))).add_subclass(MicroLoRA),
            )?,
            inner,
        })
    }

    /// Input dimension.
    #[getter]
    fn d_in(&self) -> usize {
        self.inner.d_in()
    }

    /// Output dimension.
    #[getter]
    fn d_out(&self) -> usize {
        self.inner.d_out()
    }

    /// Micro steps between automatic merges (0: never).
    #[getter]
    fn merge_every(&self) -> u64 {
        self.inner.merge_every()
    }

    /// The base tier (shares state with this object).
    #[getter]
    fn base(&self, py: Python<'_>) -> Py<BaseLoRA> {
        self.base.clone_ref(py)
    }

    /// The micro tier (shares state with this object).
    #[getter]
    fn micro(&self, py: Python<'_>) -> Py<MicroLoRA> {
        self.micro.clone_ref(py)
    }

    /// ``y = W x + ΔW_b x + ΔW_µ x``; with ``explore=True`` returns ``(y + noise, token)``.
    #[pyo3(signature = (x, explore = false))]
    fn forward(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = truthy)] explore: bool,
    ) -> PyResult<Py<PyAny>> {
        forward_py(&*self.inner, py, x, explore)
    }

    /// ``y = W x + ΔW_b x + ΔW_µ x`` (:meth:`forward`).
    #[pyo3(signature = (x, explore = false))]
    fn __call__(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = truthy)] explore: bool,
    ) -> PyResult<Py<PyAny>> {
        forward_py(&*self.inner, py, x, explore)
    }

    /// Forward for each row of ``X``.
    #[allow(non_snake_case)] // the Python argument name
    fn forward_batch<'py>(&self, py: Python<'py>, X: &Bound<'py, PyAny>) -> PyResult<Arr2<'py>> {
        forward_batch_py(&*self.inner, py, X)
    }

    /// Reward for an explored output: one micro step, then a merge if one is due.
    ///
    /// Atomic like :meth:`LoRA.reward`. A due merge that fails (e.g. into a frozen base) does not
    /// fail the applied step: it stays due and is counted in :meth:`merge_failures`.
    fn reward(&self, py: Python<'_>, token: Int, reward: Real) -> PyResult<()> {
        reward_py(&*self.inner, py, token, reward)
    }

    /// Gradient step on the micro tier, then a merge if one is due.
    fn update(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        error: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        update_py(&*self.inner, py, x, error)
    }

    /// Merge the micro tier into the base now (on error neither tier changes).
    ///
    /// Readers never see half a merge: both tiers are published in one atomic swap, so every
    /// forward uses base and micro weights of one generation.
    fn merge<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let rep = guard(py, || Ok(py.detach(|| self.inner.merge())?))?;
        report_dict(py, &rep)
    }

    /// The report of the last merge, if any.
    fn last_merge<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner
            .last_merge()
            .map(|r| report_dict(py, &r))
            .transpose()
    }

    /// ``(count, last message)`` of automatic merges that failed (they stay due).
    fn merge_failures(&self) -> (u64, Option<String>) {
        self.inner.merge_failures()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LoRA>()?;
    m.add_class::<MicroLoRA>()?;
    m.add_class::<BaseLoRA>()?;
    m.add_class::<TwoTierLoRA>()?;
    for f in [
        wrap_pyfunction!(scaled_defaults, m)?,
        wrap_pyfunction!(default_sigma, m)?,
        wrap_pyfunction!(default_lr, m)?,
        wrap_pyfunction!(default_max_norm, m)?,
        wrap_pyfunction!(feedback_budget, m)?,
        wrap_pyfunction!(read_peft, m)?,
        wrap_pyfunction!(load_quantized, m)?,
    ] {
        // Documented and re-exported as `sona.lora`'s, like the classes.
        f.setattr("__module__", "sona.lora")?;
        m.add_function(f)?;
    }
    Ok(())
}
