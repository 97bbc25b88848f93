"""EWC++: keep what already works while learning continues (design §4).

- :class:`OnlineFisher` — the diagonal Fisher from **per-sample** gradients, ``F ← γF + (1−γ)g²``
  (bias-corrected for its zero start, floored).
- :class:`EwcPlusPlus` — the online Fisher of the current task plus every finished task folded into
  one quadratic in O(P): ``penalty(θ) = λ/2 Σ F̄ (θ − θ̄*)²`` and ``apply(θ, grad) = grad + λ F̄ ⊙
  (θ − θ̄*)``.
  λ is applied once; per-task weights and the decay of old tasks live in ``F̄``.
- :class:`TaskBoundaryDetector` — a calibrated two-window test on input vectors; on a boundary it
  hands back the parameters from *before* the change.
- :class:`AdaptiveLambda` — λ raised on measured probe-set forgetting, lowered when the new task
  stalls.
- :class:`GradientProjection` — optional GPM: the task gradient is projected off protected
  directions.

Every method takes array-likes (converted once to C-contiguous float32) and returns numpy float32.
Wrong lengths raise :class:`~sona.errors.DimensionError`, NaN/Inf
:class:`~sona.errors.NonFiniteError`,
out-of-range settings :class:`~sona.errors.ConfigError`, corrupted files
:class:`~sona.errors.CheckpointError`; a failing call leaves the object unchanged.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from sona import _sona
from sona._validate import F32Array, as_matrix, as_vector

__all__ = [
    "AdaptiveLambda",
    "EwcPlusPlus",
    "GradientProjection",
    "OnlineFisher",
    "TaskBoundaryDetector",
]


class OnlineFisher:
    """Running diagonal Fisher over ``param_count`` parameters.

    Args:
        param_count: number of parameters ``P``.
        gamma: EMA decay per sample in ``[0, 1)``; ``0.999`` averages over about the last 1000
        samples.
        floor: smallest value :meth:`estimate` returns (``≥ 0``).
    """

    def __init__(self, param_count: int, gamma: float = 0.999, floor: float = 0.0) -> None:
        self._f = _sona.OnlineFisher(int(param_count), gamma=float(gamma), floor=float(floor))

    def update(self, grad: Any) -> None:
        """Folds in one per-sample gradient (length ``P``)."""
        self._f.update(as_vector(grad, "grad", self.param_count))

    def update_batch(self, grads: Any) -> None:
        """Folds in an ``n × P`` matrix of per-sample gradients, row by row (never their mean)."""
        self._f.update_batch(as_matrix(grads, "grads", self.param_count))

    def estimate(self) -> F32Array:
        """``max(F / (1 − γⁿ), floor)``; raises InvalidInputError before the first sample."""
        return self._f.estimate()

    def reset(self) -> None:
        """Forgets every sample."""
        self._f.reset()

    @property
    def samples(self) -> int:
        """Per-sample gradients folded in since creation or the last reset."""
        return self._f.samples

    @property
    def param_count(self) -> int:
        return self._f.param_count

    @property
    def gamma(self) -> float:
        return self._f.gamma

    @property
    def floor(self) -> float:
        return self._f.floor


class EwcPlusPlus:
    """EWC++ over ``param_count`` parameters.

    Typical loop: during a task, feed per-sample gradients to :meth:`update_fisher_batch` and pass
    each
    training gradient through :meth:`apply`; at the end of the task call :meth:`complete_task` with
    the
    parameters to protect.

    Args:
        param_count: number of protected parameters ``P``.
        lambda_: penalty strength λ (applied once, in :meth:`penalty` and :meth:`apply`).
        lambda_min, lambda_max: bounds every λ must respect (set, adapted or loaded).
        gamma: EMA decay of the online Fisher per sample.
        floor: smallest Fisher value a task contributes.
        decay: factor in ``(0, 1]`` applied to the earlier tasks each time a task is completed.
    """

    def __init__(
        self,
        param_count: int,
        lambda_: float = 1.0,
        *,
        lambda_min: float = 0.0,
        lambda_max: float = 1e9,
        gamma: float = 0.999,
        floor: float = 0.0,
        decay: float = 1.0,
    ) -> None:
        self._e = _sona.EwcPlusPlus(
            int(param_count),
            lambda_=float(lambda_),
            lambda_min=float(lambda_min),
            lambda_max=float(lambda_max),
            gamma=float(gamma),
            floor=float(floor),
            decay=float(decay),
        )

    @classmethod
    def _wrap(cls, inner: _sona.EwcPlusPlus) -> EwcPlusPlus:
        obj = cls.__new__(cls)
        obj._e = inner
        return obj

    def update_fisher(self, grad: Any) -> None:
        """Folds one per-sample gradient of the current task into the online Fisher."""
        self._e.update_fisher(as_vector(grad, "grad", self.param_count))

    def update_fisher_batch(self, grads: Any) -> None:
        """Folds an ``n × P`` matrix of per-sample gradients into the online Fisher."""
        self._e.update_fisher_batch(as_matrix(grads, "grads", self.param_count))

    def complete_task(
        self, theta_star: Any, fisher: Any | None = None, weight: float = 1.0
    ) -> None:
        """Ends a task: adds ``½ weight Σ F (θ − θ*)²`` to the consolidated quadratic.

        ``fisher`` defaults to the online estimate, which raises InvalidInputError if it has no
        samples (a task is never "protected" by an empty Fisher). Either way the online estimate is
        reset afterwards, so the next task starts its own.
        """
        p = self.param_count
        f = None if fisher is None else as_vector(fisher, "fisher", p)
        self._e.complete_task(as_vector(theta_star, "theta_star", p), f, float(weight))

    def penalty(self, theta: Any) -> float:
        """``λ/2 · Σ F̄ (θ − θ̄*)²`` (0 before the first completed task)."""
        return self._e.penalty(as_vector(theta, "theta", self.param_count))

    def apply(
        self, theta: Any, grad: Any, projection: GradientProjection | None = None
    ) -> F32Array:
        """``grad + λ F̄ ⊙ (θ − θ̄*)`` as a new array.

        With ``projection``, the task gradient is projected off the protected directions first and
        the EWC term is added after, so the projection never cancels the pull toward ``θ̄*``.
        """
        p = self.param_count
        proj = None if projection is None else projection._g
        return self._e.apply(as_vector(theta, "theta", p), as_vector(grad, "grad", p), proj)

    @property
    def lambda_(self) -> float:
        """Penalty strength λ; setting a value outside ``[lambda_min, lambda_max]`` raises
        ConfigError."""
        return self._e.lambda_

    @lambda_.setter
    def lambda_(self, value: float) -> None:
        self._e.set_lambda(float(value))

    @property
    def fisher(self) -> F32Array:
        """The consolidated Fisher ``F̄`` (without λ), a copy."""
        return self._e.fisher()

    @property
    def theta_star(self) -> F32Array:
        """The consolidated anchor ``θ̄*``, a copy."""
        return self._e.theta_star()

    def online_fisher(self) -> F32Array:
        """The current task's online Fisher estimate (raises before its first sample)."""
        return self._e.online_fisher()

    @property
    def online_samples(self) -> int:
        return self._e.online_samples

    @property
    def task_count(self) -> int:
        """Tasks folded into the quadratic."""
        return self._e.task_count

    @property
    def param_count(self) -> int:
        return self._e.param_count

    @property
    def lambda_min(self) -> float:
        return self._e.lambda_min

    @property
    def lambda_max(self) -> float:
        return self._e.lambda_max

    @property
    def gamma(self) -> float:
        return self._e.gamma

    @property
    def floor(self) -> float:
        return self._e.floor

    @property
    def decay(self) -> float:
        return self._e.decay

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the whole state (atomic, checksummed SONA checkpoint)."""
        self._e.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EwcPlusPlus:
        """Reads a state written by :meth:`save`; corrupted or mismatched files raise
        CheckpointError."""
        return cls._wrap(_sona.EwcPlusPlus.load(os.fspath(path)))


class TaskBoundaryDetector:
    """Detects changes of the input distribution with non-overlapping windows.

    After each sample, once both windows are full, ``S = Σ_j (μ_r−μ_b)² / (σ²_b (1/n_r + 1/n_b))``
    is
    compared with the upper-``alpha`` quantile of its null distribution (a sum of squared Student
    t's,
    because σ²_b is estimated); ``consecutive`` hits declare a boundary, then the windows refill
    from the
    new data and checks pause for ``cooldown`` samples.

    Pass the current parameters to :meth:`observe` (``param_count > 0``) and, on a boundary,
    :meth:`stable_snapshot` returns the parameters from before the change.

    Args:
        dim: input dimension.
        window: recent window size ``n_r``.
        reference: reference window size ``n_b`` (≥ 10).
        alpha: nominal false-positive probability of one check.
        consecutive: ``K`` consecutive hits needed.
        cooldown: samples without checks after a boundary.
        snapshot_every: parameter snapshot period (samples).
        param_count: parameter length for snapshots (0 disables them).
        components: ``k > 0`` tests the top-``k`` principal components of the reference window
            (refitted after every boundary) instead of the raw coordinates. Use it for real
            embeddings or images: the raw-coordinate null assumes independent coordinates and
            fires constantly on correlated ones (measured on digits: 10 % of checks).
    """

    def __init__(
        self,
        dim: int,
        window: int = 100,
        reference: int = 200,
        *,
        alpha: float = 1e-4,
        consecutive: int = 3,
        cooldown: int = 0,
        snapshot_every: int = 25,
        param_count: int = 0,
        components: int = 0,
    ) -> None:
        self._d = _sona.TaskBoundaryDetector(
            int(dim),
            window=int(window),
            reference=int(reference),
            alpha=float(alpha),
            consecutive=int(consecutive),
            cooldown=int(cooldown),
            snapshot_every=int(snapshot_every),
            param_count=int(param_count),
            components=int(components),
        )

    def observe(self, x: Any, theta: Any | None = None) -> bool:
        """Feeds one input (and optionally the parameters before training on it); True at a
        boundary."""
        t = None if theta is None else as_vector(theta, "theta")
        return self._d.observe(as_vector(x, "x", self.dim), t)

    def observe_batch(self, xs: Any) -> list[int]:
        """Feeds the rows of an ``n × dim`` matrix; returns the sample indices of boundaries."""
        return self._d.observe_batch(as_matrix(xs, "xs", self.dim))

    def stable_snapshot(self) -> tuple[int, F32Array] | None:
        """``(sample_index, theta)`` from before the last boundary, or None."""
        return self._d.stable_snapshot()

    @property
    def dim(self) -> int:
        return self._d.dim

    @property
    def observed(self) -> int:
        """Samples observed."""
        return self._d.observed

    @property
    def checks(self) -> int:
        """Tests run (one per sample while both windows are full and not cooling down)."""
        return self._d.checks

    @property
    def exceedances(self) -> int:
        """Checks whose statistic exceeded the threshold (before the consecutive rule)."""
        return self._d.exceedances

    @property
    def detections(self) -> int:
        """Boundaries declared."""
        return self._d.detections

    @property
    def last_boundary(self) -> int | None:
        """Sample index of the last declared boundary."""
        return self._d.last_boundary

    @property
    def last_check(self) -> tuple[float, float]:
        """``(statistic, threshold)`` of the last check (threshold NaN before the first)."""
        return self._d.last_check


class AdaptiveLambda:
    """λ controller: raise on probe-set forgetting, lower when the new task stalls below target.

    Call :meth:`update` after each evaluation with the probe accuracy (old tasks) and the current
    task's quality, then copy :attr:`value` into :attr:`EwcPlusPlus.lambda_`.
    """

    def __init__(
        self,
        initial: float = 1.0,
        lambda_min: float = 1e-3,
        lambda_max: float = 1e6,
        *,
        delta: float = 0.02,
        raise_factor: float = 2.0,
        lower_factor: float = 0.5,
        stall: float = 0.005,
        target: float = 0.95,
    ) -> None:
        self._a = _sona.AdaptiveLambda(
            initial=float(initial),
            lambda_min=float(lambda_min),
            lambda_max=float(lambda_max),
            delta=float(delta),
            raise_factor=float(raise_factor),
            lower_factor=float(lower_factor),
            stall=float(stall),
            target=float(target),
        )

    def update(
        self, probe_accuracy: float, new_task_quality: float
    ) -> Literal["raised", "lowered", "kept"]:
        """Reports both values (each in [0, 1]) and returns what λ did."""
        step = self._a.update(float(probe_accuracy), float(new_task_quality))
        assert step in ("raised", "lowered", "kept")
        return step  # type: ignore[return-value]

    def reset_probe(self) -> None:
        """Starts a new running maximum (the probe set changed)."""
        self._a.reset_probe()

    @property
    def value(self) -> float:
        """The current λ."""
        return self._a.value

    @property
    def probe_max(self) -> float | None:
        return self._a.probe_max

    @property
    def lambda_min(self) -> float:
        return self._a.lambda_min

    @property
    def lambda_max(self) -> float:
        return self._a.lambda_max


class GradientProjection:
    """Gradient projection memory: an orthonormal basis of directions to keep gradients out of."""

    def __init__(self, param_count: int, max_basis: int) -> None:
        self._g = _sona.GradientProjection(int(param_count), int(max_basis))

    def add(self, m: Any, threshold: float = 0.97) -> int:
        """Adds directions of ``m`` (``n × P``, n ≤ 512) until ``threshold`` of its energy is
        spanned."""
        return self._g.add(as_matrix(m, "m", self.param_count), float(threshold))

    def project(self, grad: Any) -> F32Array:
        """``grad − V Vᵀ grad``."""
        return self._g.project(as_vector(grad, "grad", self.param_count))

    @property
    def basis(self) -> F32Array:
        """The ``k × P`` orthonormal basis, a copy."""
        return self._g.basis()

    @property
    def basis_size(self) -> int:
        return self._g.basis_size

    @property
    def param_count(self) -> int:
        return self._g.param_count
