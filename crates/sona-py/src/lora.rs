//! Binding of `sona-lora`: `LoraAdapter` (one micro or base adapter) and `TwoTierAdapter` (base + micro
//! with periodic merges), plus PEFT / quantised-file helpers. The typed wrappers `sona.lora.MicroLoRA`,
//! `BaseLoRA` and `TwoTierLoRA` sit on top. Forwards hold the GIL (they take well under a microsecond
//! of Rust time, less than releasing it would cost); merges, batch forwards and file I/O release it.
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

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sona_core::{validate, SonaError};
use sona_lora::{
    peft, ExploreConfig, Frozen, Lora, LoraConfig, LoraWeights, MergeReport, OptimConfig,
    QuantKind, QuantizedLora, ScaledDefaults, TwoTierLoRA,
};

use crate::convert::{mat2, out2, slice, vec1};
use crate::errors::{guard, BindResult};

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

enum Inner {
    Own(Arc<Lora>),
    Base(Arc<TwoTierLoRA>),
    Micro(Arc<TwoTierLoRA>),
}

/// One LoRA adapter `y = W x + s·B(A x)` (a micro or a base tier).
#[pyclass(frozen, module = "sona._sona")]
pub(crate) struct LoraAdapter {
    inner: Inner,
    tier: &'static str,
}

impl LoraAdapter {
    fn lora(&self) -> &Lora {
        match &self.inner {
            Inner::Own(l) => l,
            Inner::Base(t) => &t.base,
            Inner::Micro(t) => &t.micro,
        }
    }
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

fn frozen_from(
    kind: &str,
    w: Option<&Bound<'_, PyAny>>,
    d_in: usize,
    d_out: usize,
) -> BindResult<Frozen> {
    Ok(match (kind, w) {
        ("identity", None) => Frozen::Identity,
        ("zero", None) => Frozen::Zero,
        ("dense", Some(w)) => {
            let m = mat2("W", w)?;
            if m.shape() != [d_out, d_in] {
                return Err(SonaError::Dimension {
                    what: "W".into(),
                    expected: format!("shape ({d_out}, {d_in})"),
                    got: format!("shape {:?}", m.shape()),
                }
                .into());
            }
            Frozen::Dense(slice(&m).to_vec())
        }
        _ => {
            return Err(SonaError::Config(format!(
                "base map must be 'identity', 'zero' or a dense W matrix, got {kind:?}"
            ))
            .into())
        }
    })
}

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

fn check_token(token: i64) -> BindResult<u64> {
    u64::try_from(token).map_err(|_| {
        SonaError::UnknownId {
            kind: "exploration token",
            id: 0,
        }
        .into()
    })
}

#[pymethods]
impl LoraAdapter {
    #[new]
    #[pyo3(signature = (d_in, d_out, rank, alpha, *, lr, momentum, clip, max_norm, decay, sigma,
        baseline_rate, capacity, seed, base_map="identity", weight=None, module="embedding", tier="micro"))]
    fn new(
        py: Python<'_>,
        d_in: usize,
        d_out: usize,
        rank: usize,
        alpha: f32,
        lr: f32,
        momentum: f32,
        clip: f32,
        max_norm: f32,
        decay: f32,
        sigma: f32,
        baseline_rate: f32,
        capacity: usize,
        seed: u64,
        base_map: &str,
        weight: Option<&Bound<'_, PyAny>>,
        module: &str,
        tier: &str,
    ) -> PyResult<Self> {
        guard(py, || {
            let tier = match tier {
                "micro" => "micro",
                "base" => "base",
                other => {
                    return Err(SonaError::Config(format!(
                        "tier must be 'micro' or 'base', got {other:?}"
                    ))
                    .into())
                }
            };
            let config = LoraConfig {
                d_in,
                d_out,
                rank,
                alpha,
                frozen: frozen_from(base_map, weight, d_in, d_out)?,
                optim: OptimConfig {
                    lr,
                    momentum,
                    clip,
                    max_norm,
                    decay,
                },
                explore: ExploreConfig {
                    sigma,
                    baseline_rate,
                    capacity,
                },
                seed,
                module: module.to_string(),
            };
            Ok(LoraAdapter {
                inner: Inner::Own(Arc::new(Lora::new(config)?)),
                tier,
            })
        })
    }

    #[getter]
    fn d_in(&self) -> usize {
        self.lora().config().d_in
    }
    #[getter]
    fn d_out(&self) -> usize {
        self.lora().config().d_out
    }
    #[getter]
    fn rank(&self) -> usize {
        self.lora().config().rank
    }
    #[getter]
    fn alpha(&self) -> f32 {
        self.lora().config().alpha
    }
    #[getter]
    fn scale(&self) -> f32 {
        self.lora().config().scale()
    }
    #[getter]
    fn tier(&self) -> &'static str {
        self.tier
    }
    #[getter]
    fn module(&self) -> String {
        self.lora().config().module.clone()
    }
    #[getter]
    fn base_map(&self) -> &'static str {
        self.lora().config().frozen.name()
    }
    #[getter]
    fn frozen(&self) -> bool {
        self.lora().is_frozen()
    }

    /// The settings as a dict.
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

    /// `y = W x + s·B(A x)`.
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Arr1<'py>> {
        guard(py, || {
            let xr = vec1("x", x)?;
            let xs = slice(&xr);
            let l = self.lora();
            validate::check_len("x", xs, l.config().d_in)?;
            let (out, ()) = new_vec(py, l.config().d_out, |y| Ok(l.forward_unchecked(xs, y)?))?;
            Ok(out)
        })
    }

    /// Explored forward: `(y + noise, token)`.
    fn forward_explore<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<(Arr1<'py>, u64)> {
        guard(py, || {
            let xr = vec1("x", x)?;
            let xs = slice(&xr);
            let l = self.lora();
            validate::check_len("x", xs, l.config().d_in)?;
            new_vec(py, l.config().d_out, |y| {
                l.forward_unchecked(xs, y)?;
                Ok(l.explore_output(xs, y)?)
            })
        })
    }

    /// Forward of every row of `X` (`n × d_in`).
    fn forward_batch<'py>(&self, py: Python<'py>, xs: &Bound<'py, PyAny>) -> PyResult<Arr2<'py>> {
        guard(py, || {
            let m = mat2("X", xs)?;
            let l = self.lora();
            let (n, cols) = (m.shape()[0], m.shape()[1]);
            if cols != l.config().d_in {
                return Err(SonaError::len_mismatch("X columns", l.config().d_in, cols).into());
            }
            let src = owned("X", slice(&m))?;
            let mut ys = zeros2("forward_batch output", n, l.config().d_out)?;
            py.detach(|| l.forward_batch(&src, n, &mut ys))?;
            out2(py, ys, n, l.config().d_out)
        })
    }

    /// Learns from a reward in [0, 1] for an exploration token.
    fn reward(&self, py: Python<'_>, token: i64, reward: f32) -> PyResult<()> {
        guard(py, || {
            let t = check_token(token)?;
            self.lora().reward(t, reward)?;
            Ok(())
        })
    }

    /// One exact optimizer step for output error `e = dL/dy` at input `x`.
    fn update(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        error: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            let (xr, er) = (vec1("x", x)?, vec1("error", error)?);
            self.lora().update(slice(&xr), slice(&er))?;
            Ok(())
        })
    }

    /// One step on the mean gradient of a batch (`X`: `n × d_in`, `E`: `n × d_out`).
    fn update_batch(
        &self,
        py: Python<'_>,
        xs: &Bound<'_, PyAny>,
        errors: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            let (xm, em) = (mat2("X", xs)?, mat2("E", errors)?);
            let l = self.lora();
            let n = xm.shape()[0];
            if em.shape()[0] != n {
                return Err(SonaError::Dimension {
                    what: "E".into(),
                    expected: format!("{n} rows (one per row of X)"),
                    got: format!("{} rows", em.shape()[0]),
                }
                .into());
            }
            let (xs, es) = (owned("X", slice(&xm))?, owned("E", slice(&em))?);
            py.detach(|| l.update_batch(&xs, &es, n))?;
            Ok(())
        })
    }

    /// `(grad_A [r, d_in], grad_B [d_out, r], grad_x [d_in])` for output error `e` at `x`.
    #[allow(clippy::type_complexity)]
    fn gradients<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        error: &Bound<'py, PyAny>,
    ) -> PyResult<(Arr2<'py>, Arr2<'py>, Arr1<'py>)> {
        guard(py, || {
            let (xr, er) = (vec1("x", x)?, vec1("error", error)?);
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

    /// `lora_A` `[r, d_in]` (a copy).
    #[getter]
    fn lora_a<'py>(&self, py: Python<'py>) -> PyResult<Arr2<'py>> {
        guard(py, || Ok(weights_pair(py, &self.lora().snapshot())?.0))
    }

    /// `lora_B` `[d_out, r]` (a copy, PEFT layout).
    #[getter]
    fn lora_b<'py>(&self, py: Python<'py>) -> PyResult<Arr2<'py>> {
        guard(py, || Ok(weights_pair(py, &self.lora().snapshot())?.1))
    }

    /// Dense `ΔW = s B A` `[d_out, d_in]`.
    fn delta_w<'py>(&self, py: Python<'py>) -> PyResult<Arr2<'py>> {
        guard(py, || {
            let w = self.lora().snapshot();
            out2(py, w.try_delta_w()?, w.d_out, w.d_in)
        })
    }

    /// `‖ΔW‖_F`.
    fn delta_norm(&self) -> f32 {
        self.lora().snapshot().delta_frob_sq().sqrt()
    }

    /// Replaces the weights (`a` `[r, d_in]`, `b` `[d_out, r]`) and forgets the momentum.
    fn set_weights(
        &self,
        py: Python<'_>,
        a: &Bound<'_, PyAny>,
        b: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            let (ar, br) = (mat2("lora_A", a)?, mat2("lora_B", b)?);
            let c = self.lora().config();
            if ar.shape() != [c.rank, c.d_in] || br.shape() != [c.d_out, c.rank] {
                return Err(SonaError::Dimension {
                    what: "lora_A, lora_B".into(),
                    expected: format!("({}, {}) and ({}, {})", c.rank, c.d_in, c.d_out, c.rank),
                    got: format!("{:?} and {:?}", ar.shape(), br.shape()),
                }
                .into());
            }
            let w =
                LoraWeights::from_peft(c.d_in, c.d_out, c.rank, c.scale(), slice(&ar), slice(&br))?;
            self.lora().set_weights(w).map_err(|e| match e {
                SonaError::Checkpoint(m) => SonaError::invalid(m),
                other => other,
            })?;
            Ok(())
        })
    }

    /// Absorbs `micro` into this adapter (rank-truncated); zeroes the micro adapter.
    fn merge_from<'py>(
        &self,
        py: Python<'py>,
        micro: &Bound<'py, LoraAdapter>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let rep = guard(py, || {
            let (b, m) = (self.lora(), micro.get().lora());
            Ok(py.detach(|| b.merge_from(m))?)
        })?;
        report_dict(py, &rep)
    }

    /// Writes a PEFT adapter directory.
    #[pyo3(signature = (path, *, module=None, layer=None, task_type=None, base_model=None))]
    fn save_peft(
        &self,
        py: Python<'_>,
        path: PathBuf,
        module: Option<String>,
        layer: Option<&str>,
        task_type: Option<String>,
        base_model: Option<String>,
    ) -> PyResult<()> {
        guard(py, || {
            let l = self.lora();
            let export = peft::PeftExport {
                module: module.unwrap_or_else(|| l.config().module.clone()),
                layer: layer.map(peft::LayerKind::parse).transpose()?,
                task_type,
                base_model,
            };
            let w = l.snapshot();
            let alpha = l.config().alpha;
            Ok(py.detach(|| peft::save_peft(&path, alpha, &w, &export))?)
        })
    }

    /// Replaces the weights with those of a PEFT directory (shape, rank and the effective alpha
    /// must match). `module=None` picks the adapter's own module if the file has it, else the
    /// file's only module.
    #[pyo3(signature = (path, module=None))]
    fn load_peft(&self, py: Python<'_>, path: PathBuf, module: Option<String>) -> PyResult<()> {
        guard(py, || {
            let l = self.lora();
            let c = l.config();
            let ad = py.detach(|| match &module {
                Some(m) => peft::load_peft(&path, Some(m)),
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

    /// Saves an FP16 or Q4 copy (adapter must be frozen); returns its error and size.
    #[pyo3(signature = (path, kind="q4", group_size=32))]
    fn save_quantized<'py>(
        &self,
        py: Python<'py>,
        path: PathBuf,
        kind: &str,
        group_size: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let q = guard(py, || {
            let l = self.lora();
            if !l.is_frozen() {
                return Err(SonaError::invalid(
                    "quantised copies are only made of frozen adapters; call freeze() first",
                )
                .into());
            }
            let kind = match kind {
                "fp16" => QuantKind::F16,
                "q4" => QuantKind::Q4 { group: group_size },
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

    /// Saves the full training state (checkpoint container, kind "lora").
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        guard(py, || {
            let l = self.lora();
            Ok(py.detach(|| l.save(&path))?)
        })
    }

    /// Makes the adapter read-only.
    fn freeze(&self) {
        self.lora().freeze()
    }

    /// Counters: updates, rejected, rewards, explored, merges.
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

    /// The last applied step: grad_norm, clipped, bounded, delta_norm (None before any step).
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

    fn __repr__(&self) -> String {
        let c = self.lora().config();
        format!(
            "LoraAdapter(tier={:?}, d_in={}, d_out={}, rank={}, alpha={}, base_map={:?})",
            self.tier,
            c.d_in,
            c.d_out,
            c.rank,
            c.alpha,
            c.frozen.name()
        )
    }
}

/// Reads a PEFT directory: `(module, lora_alpha, lora_A, lora_B)`.
#[pyfunction]
#[pyo3(signature = (path, module=None))]
#[allow(clippy::type_complexity)]
fn lora_read_peft<'py>(
    py: Python<'py>,
    path: PathBuf,
    module: Option<String>,
) -> PyResult<(String, f32, Arr2<'py>, Arr2<'py>)> {
    guard(py, || {
        let ad = py.detach(|| peft::load_peft(&path, module.as_deref()))?;
        let (a, b) = weights_pair(py, &ad.weights)?;
        Ok((ad.module, ad.alpha, a, b))
    })
}

/// The learning defaults for output dimension `d` (`sona_lora::ScaledDefaults`): the one source the
/// Python wrappers and `sona eval adapt` read. `d` outside `1..=65536` is a `ConfigError`.
#[pyfunction]
fn lora_scaled_defaults<'py>(py: Python<'py>, d: i64) -> PyResult<Bound<'py, PyDict>> {
    guard(py, || {
        let d = usize::try_from(d)
            .map_err(|_| SonaError::Config(format!("d must be in [1, 65536], got {d}")))?;
        let s = ScaledDefaults::checked(d)?;
        let out = PyDict::new(py);
        out.set_item("sigma", s.sigma)?;
        out.set_item("micro_lr", s.micro_lr)?;
        out.set_item("stacked_lr", s.stacked_lr)?;
        out.set_item("micro_max_norm", s.micro_max_norm)?;
        out.set_item("stacked_max_norm", s.stacked_max_norm)?;
        out.set_item("feedbacks_per_direction", s.feedbacks_per_direction)?;
        Ok(out)
    })
}

/// Loads an adapter saved with `LoraAdapter.save` as a standalone adapter of the given tier.
#[pyfunction]
#[pyo3(signature = (path, tier="micro"))]
fn lora_load(py: Python<'_>, path: PathBuf, tier: &str) -> PyResult<LoraAdapter> {
    guard(py, || {
        let tier = match tier {
            "micro" => "micro",
            "base" => "base",
            other => {
                return Err(SonaError::Config(format!(
                    "tier must be 'micro' or 'base', got {other:?}"
                ))
                .into())
            }
        };
        let l = py.detach(|| Lora::load(&path))?;
        Ok(LoraAdapter {
            inner: Inner::Own(Arc::new(l)),
            tier,
        })
    })
}

/// Reads a quantised copy: `(kind, scale, rel_error, lora_A, lora_B)` (dequantised).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn lora_read_quantized<'py>(
    py: Python<'py>,
    path: PathBuf,
) -> PyResult<(String, f32, f32, Arr2<'py>, Arr2<'py>)> {
    guard(py, || {
        let q = py.detach(|| QuantizedLora::load(&path))?;
        let w = q.dequantize();
        let (a, b) = weights_pair(py, &w)?;
        Ok((q.kind.name().to_string(), q.scale, q.rel_error, a, b))
    })
}

/// Base + micro adapters with periodic merges.
#[pyclass(frozen, module = "sona._sona")]
pub(crate) struct TwoTierAdapter {
    inner: Arc<TwoTierLoRA>,
}

#[pymethods]
impl TwoTierAdapter {
    #[new]
    #[pyo3(signature = (d_in, d_out, *, base_rank, micro_rank, base_alpha, micro_alpha, lr, momentum,
        clip, max_norm, decay, sigma, baseline_rate, capacity, seed, merge_every, base_map="identity",
        weight=None, module="embedding"))]
    fn new(
        py: Python<'_>,
        d_in: usize,
        d_out: usize,
        base_rank: usize,
        micro_rank: usize,
        base_alpha: f32,
        micro_alpha: f32,
        lr: f32,
        momentum: f32,
        clip: f32,
        max_norm: f32,
        decay: f32,
        sigma: f32,
        baseline_rate: f32,
        capacity: usize,
        seed: u64,
        merge_every: u64,
        base_map: &str,
        weight: Option<&Bound<'_, PyAny>>,
        module: &str,
    ) -> PyResult<Self> {
        guard(py, || {
            let frozen = frozen_from(base_map, weight, d_in, d_out)?;
            let explore = ExploreConfig {
                sigma,
                baseline_rate,
                capacity,
            };
            let micro = LoraConfig {
                d_in,
                d_out,
                rank: micro_rank,
                alpha: micro_alpha,
                frozen: Frozen::Zero,
                optim: OptimConfig {
                    lr,
                    momentum,
                    clip,
                    max_norm,
                    decay,
                },
                explore,
                seed: seed.wrapping_add(1),
                module: module.to_string(),
            };
            let base = LoraConfig {
                rank: base_rank,
                alpha: base_alpha,
                frozen,
                optim: OptimConfig {
                    max_norm: f32::INFINITY,
                    decay: 0.0,
                    ..micro.optim
                },
                seed,
                ..micro.clone()
            };
            Ok(TwoTierAdapter {
                inner: Arc::new(TwoTierLoRA::new(base, micro, merge_every)?),
            })
        })
    }

    #[getter]
    fn d_in(&self) -> usize {
        self.inner.d_in()
    }
    #[getter]
    fn d_out(&self) -> usize {
        self.inner.d_out()
    }
    #[getter]
    fn merge_every(&self) -> u64 {
        self.inner.merge_every()
    }

    /// The base tier (shares state with this object).
    #[getter]
    fn base(&self) -> LoraAdapter {
        LoraAdapter {
            inner: Inner::Base(Arc::clone(&self.inner)),
            tier: "base",
        }
    }

    /// The micro tier (shares state with this object).
    #[getter]
    fn micro(&self) -> LoraAdapter {
        LoraAdapter {
            inner: Inner::Micro(Arc::clone(&self.inner)),
            tier: "micro",
        }
    }

    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Arr1<'py>> {
        guard(py, || {
            let xr = vec1("x", x)?;
            let (out, ()) = new_vec(py, self.inner.d_out(), |y| {
                Ok(self.inner.forward(slice(&xr), y)?)
            })?;
            Ok(out)
        })
    }

    fn forward_explore<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<(Arr1<'py>, u64)> {
        guard(py, || {
            let xr = vec1("x", x)?;
            new_vec(py, self.inner.d_out(), |y| {
                Ok(self.inner.forward_explore(slice(&xr), y)?)
            })
        })
    }

    fn forward_batch<'py>(&self, py: Python<'py>, xs: &Bound<'py, PyAny>) -> PyResult<Arr2<'py>> {
        guard(py, || {
            let m = mat2("X", xs)?;
            let (n, cols) = (m.shape()[0], m.shape()[1]);
            if cols != self.inner.d_in() {
                return Err(SonaError::len_mismatch("X columns", self.inner.d_in(), cols).into());
            }
            let src = owned("X", slice(&m))?;
            let mut ys = zeros2("forward_batch output", n, self.inner.d_out())?;
            py.detach(|| self.inner.forward_batch(&src, n, &mut ys))?;
            out2(py, ys, n, self.inner.d_out())
        })
    }

    fn reward(&self, py: Python<'_>, token: i64, reward: f32) -> PyResult<()> {
        guard(py, || {
            let t = check_token(token)?;
            self.inner.reward(t, reward)?;
            Ok(())
        })
    }

    fn update(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        error: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        guard(py, || {
            let (xr, er) = (vec1("x", x)?, vec1("error", error)?);
            self.inner.update(slice(&xr), slice(&er))?;
            Ok(())
        })
    }

    fn merge<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let rep = guard(py, || Ok(py.detach(|| self.inner.merge())?))?;
        report_dict(py, &rep)
    }

    fn last_merge<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner
            .last_merge()
            .map(|r| report_dict(py, &r))
            .transpose()
    }

    /// `(failed automatic merges, last failure message)`.
    fn merge_failures(&self) -> (u64, Option<String>) {
        self.inner.merge_failures()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LoraAdapter>()?;
    m.add_class::<TwoTierAdapter>()?;
    m.add_function(wrap_pyfunction!(lora_read_peft, m)?)?;
    m.add_function(wrap_pyfunction!(lora_read_quantized, m)?)?;
    m.add_function(wrap_pyfunction!(lora_load, m)?)?;
    m.add_function(wrap_pyfunction!(lora_scaled_defaults, m)?)?;
    Ok(())
}
