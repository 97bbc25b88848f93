"""Two-tier LoRA adapters that learn from gradients or from a scalar reward (design §3).

An adapter corrects a frozen map ``W`` (the identity for an embedding adapter)::

    y = W x + s · B (A x),   A: r × d_in,  B: d_out × r,  s = alpha / r

with ``A ~ N(0, 1/d_in)`` and ``B = 0`` at creation, in PEFT's layout (``lora_A`` is ``[r, in]``,
``lora_B`` is ``[out, r]``). Two ways to learn:

* :meth:`LoRA.update` ``(x, error)`` when the caller has ``error = dL/dy``: one exact momentum step
  (clipped, with a Frobenius bound on ``ΔW`` and a slow decay for the micro tier);
* :meth:`LoRA.forward` ``(x, explore=True)`` → ``(y, token)``, then :meth:`LoRA.reward`
  ``(token, r)`` when the caller only has a score ``r ∈ [0, 1]`` for what it was given: Gaussian
  exploration and REINFORCE with a learned baseline turn the score into an error vector for the
  same step.

:class:`MicroLoRA` (rank 1-2, one step per feedback) and :class:`BaseLoRA` (rank 4-16) share the
machinery; :meth:`BaseLoRA.merge_from` absorbs a micro adapter exactly up to rank truncation and
reports the discarded spectral mass. :class:`TwoTierLoRA` runs both with periodic merges.
Forwards never wait for an update running on another thread (weights are atomically swapped
snapshots). Files: :meth:`LoRA.save_peft` / :meth:`LoRA.load_peft` (Hugging Face PEFT directories),
:meth:`LoRA.save_quantized` / :func:`load_quantized` (FP16 / Q4 copies of frozen adapters).

Every method validates its input first; on error (:class:`~sona.errors.SonaError` subclasses) the
adapter is unchanged.
"""

from __future__ import annotations

import os
from typing import Any, Literal, TypedDict

import numpy as np

from sona import _sona
from sona._validate import F32Array, as_matrix, as_real, as_size, as_vector
from sona.errors import ConfigError, InvalidInputError, UnknownIdError

__all__ = [
    "BaseLoRA",
    "LoRA",
    "MergeReport",
    "MicroLoRA",
    "TwoTierLoRA",
    "default_lr",
    "default_max_norm",
    "default_sigma",
    "feedback_budget",
    "load_quantized",
    "read_peft",
    "scaled_defaults",
]

PathLike = str | os.PathLike[str]


class MergeReport(TypedDict):
    """What a micro → base merge did."""

    #: ``‖(ΔW_b + ΔW_µ) − ΔW_merged‖_F``: the Frobenius norm truncation dropped.
    discarded: float
    #: Dropped share of the spectral energy ``Σ_{i>r_b} σ_i² / Σ σ_i²``.
    discarded_fraction: float
    #: ``‖ΔW_b + ΔW_µ‖_F`` before truncation.
    total_norm: float
    #: Singular values of ``ΔW_b + ΔW_µ``, descending.
    singular_values: F32Array


def _report(d: dict[str, Any]) -> MergeReport:
    return MergeReport(
        discarded=float(d["discarded"]),
        discarded_fraction=float(d["discarded_fraction"]),
        total_norm=float(d["total_norm"]),
        singular_values=d["singular_values"],
    )


_U64_MAX = (1 << 64) - 1
_I64_MAX = (1 << 63) - 1
_TOKEN_MAX = (1 << 63) - 1


def _cfg(x: Any, name: str) -> float:
    """A real-valued setting (ConfigError for strings, bools and other non-numbers)."""
    return as_real(x, name, ConfigError)


def scaled_defaults(d: int) -> dict[str, float]:
    """The learning defaults for output dimension ``d`` (``1 <= d <= 65536``; ConfigError else).

    Read from Rust (``sona_lora::ScaledDefaults``, the one source; design §11.1): ``sigma``
    (relative exploration noise), ``micro_lr`` / ``micro_max_norm`` (a :class:`MicroLoRA` alone),
    ``stacked_lr`` / ``stacked_max_norm`` (the micro tier of a :class:`TwoTierLoRA`) and
    ``feedbacks_per_direction`` (:func:`feedback_budget` for one direction). Up to d = 256 they are
    the values tuned there; above, ``sigma ∝ √(256/d)``, ``stacked_lr ∝ √(d/256)``,
    ``micro_max_norm ∝ d/256``. Chosen on validation seeds of ``sona eval adapt --dims … --clusters
    …`` (docs/benchmarks.md, "Defaults across sizes").
    """
    return _sona.lora_scaled_defaults(as_size(d, "d", 1, _I64_MAX))


def default_sigma(d: int) -> float:
    """Default relative exploration noise for output dimension ``d``: 0.1 up to d = 256, then
    ``0.1·√(256/d)``, which keeps the noise norm ``σ√d‖y‖`` at its d = 256 size
    (:func:`scaled_defaults`)."""
    return float(scaled_defaults(d)["sigma"])


def default_lr(d: int, two_tier: bool = False) -> float:
    """Default step size for dimension ``d``: 3e-4 for a micro adapter at every d; for a two-tier
    stack 3e-4 up to d = 256, then ``3e-4·√(d/256)`` (:func:`scaled_defaults`)."""
    return float(scaled_defaults(d)["stacked_lr" if two_tier else "micro_lr"])


def default_max_norm(d: int, two_tier: bool = False) -> float:
    """Default Frobenius bound on a micro adapter's ``ΔW``: 16 in a two-tier stack (its merges
    empty it); for a micro adapter alone 16 up to d = 256, then ``16·d/256`` (the exploration noise
    a longer, d-proportional training leaves in ``ΔW`` would otherwise crowd out the signal)."""
    return float(scaled_defaults(d)["stacked_max_norm" if two_tier else "micro_max_norm"])


def feedback_budget(d: int, directions: int = 1) -> int:
    """Rewards an adapter needs to learn ``directions`` output directions at dimension ``d``:
    ``6·d·directions``.

    A scalar reward measures the hidden target direction along one random exploration direction
    only, so the rewards needed grow in proportion to ``d`` whatever the step, noise or baseline;
    6 per unit of ``d`` is what reached ≥ 0.6 own-phase score on validation seeds (design §11.1).
    """
    directions = as_size(directions, "directions", 0, _I64_MAX)
    per = int(scaled_defaults(d)["feedbacks_per_direction"])
    return per * directions


def _learning(**values: Any) -> dict[str, float]:
    """The step and exploration settings shared by every adapter, as floats (ConfigError for
    anything that is not a real number)."""
    return {name: _cfg(value, name) for name, value in values.items()}


def _module(module: Any) -> str:
    if not isinstance(module, str):
        raise ConfigError(f"module must be a str, got {type(module).__name__}")
    return module


def _token(token: Any) -> int:
    """An exploration token: an int (InvalidInputError otherwise); out of range is unknown."""
    if isinstance(token, bool) or not isinstance(token, int | np.integer):
        raise InvalidInputError(f"token must be an int, got {type(token).__name__} {token!r}")
    value = int(token)
    if not 1 <= value <= _TOKEN_MAX:
        raise UnknownIdError(f"unknown exploration token {value}")
    return value


def _base_map(W: Any, d_in: int, d_out: int) -> tuple[str, F32Array | None]:
    if W is None:
        return "identity", None
    if isinstance(W, str):
        if W not in ("identity", "zero"):
            raise ConfigError(f"W must be None, 'identity', 'zero' or a matrix, got {W!r}")
        return W, None
    return "dense", as_matrix(W, "W", d_in)


class LoRA:
    """Methods shared by :class:`MicroLoRA` and :class:`BaseLoRA` (construct one of those)."""

    _inner: _sona.LoraAdapter
    _tier: str = "micro"
    #: Set on adapters returned by :func:`load_quantized`: the format and its recorded error.
    quant_kind: str | None = None
    quant_error: float | None = None

    def __init__(
        self,
        d_in: int,
        d_out: int | None = None,
        *,
        rank: int,
        alpha: float,
        lr: float,
        momentum: float,
        clip: float,
        max_norm: float,
        decay: float,
        sigma: float,
        baseline_rate: float,
        capacity: int,
        seed: int,
        W: Any = None,
        module: str = "embedding",
    ) -> None:
        d_in = as_size(d_in, "d_in", 1, _U64_MAX)
        d_out = d_in if d_out is None else as_size(d_out, "d_out", 1, _U64_MAX)
        rank = as_size(rank, "rank", 1, _U64_MAX)
        capacity = as_size(capacity, "capacity", 1, _U64_MAX)
        seed = as_size(seed, "seed", 0, _U64_MAX)
        kind, weight = _base_map(W, d_in, d_out)
        self._inner = _sona.LoraAdapter(
            d_in,
            d_out,
            rank,
            _cfg(alpha, "alpha"),
            **_learning(
                lr=lr,
                momentum=momentum,
                clip=clip,
                max_norm=max_norm,
                decay=decay,
                sigma=sigma,
                baseline_rate=baseline_rate,
            ),
            capacity=capacity,
            seed=seed,
            base_map=kind,
            weight=weight,
            module=_module(module),
            tier=self._tier,
        )
        self._d_in = d_in

    @classmethod
    def _wrap(cls, inner: _sona.LoraAdapter) -> LoRA:
        obj = cls.__new__(cls)
        obj._inner = inner
        obj._d_in = inner.d_in
        return obj

    # --- shape and settings -------------------------------------------------------------------

    @property
    def d_in(self) -> int:
        """Input dimension."""
        return self._inner.d_in

    @property
    def d_out(self) -> int:
        """Output dimension."""
        return self._inner.d_out

    @property
    def rank(self) -> int:
        """LoRA rank ``r``."""
        return self._inner.rank

    @property
    def alpha(self) -> float:
        """``alpha``; the forward scale is ``alpha / rank``."""
        return self._inner.alpha

    @property
    def scale(self) -> float:
        """Forward scale ``s = alpha / rank``."""
        return self._inner.scale

    @property
    def module(self) -> str:
        """Target-module name used in PEFT files."""
        return self._inner.module

    @property
    def frozen(self) -> bool:
        """Whether the adapter is read-only (see :meth:`freeze`)."""
        return self._inner.frozen

    @property
    def config(self) -> dict[str, Any]:
        """Every setting, as a dict."""
        return dict(self._inner.config())

    # --- forward ----------------------------------------------------------------------------

    def forward(self, x: Any, explore: bool = False) -> Any:
        """``y = W x + s·B(A x)`` for one vector.

        With ``explore=True`` returns ``(y + noise, token)``: pass the token and a reward in [0, 1]
        for the returned output to :meth:`reward`.
        """
        x = as_vector(x, "x", self._d_in)
        if explore:
            return self._inner.forward_explore(x)
        return self._inner.forward(x)

    __call__ = forward

    def forward_batch(self, X: Any) -> F32Array:
        """Forward for each row of ``X`` (``n × d_in``), all on the same weights."""
        return self._inner.forward_batch(as_matrix(X, "X", self._d_in))

    # --- learning ---------------------------------------------------------------------------

    def reward(self, token: int, reward: float) -> None:
        """Learn from ``reward ∈ [0, 1]`` given to the explored output of ``token`` (used once).

        Raises UnknownIdError for an unknown, evicted or already rewarded token,
        InvalidInputError for a reward outside [0, 1] or not a number, and NumericalError when the
        step it feeds is refused (non-finite, or a factor above the bound); nothing changes then
        (the token stays redeemable, the baseline and ``counters()["rewards"]`` do not move; only
        ``counters()["rejected"]`` counts the refusal).
        """
        self._inner.reward(_token(token), as_real(reward, "reward"))

    def update(self, x: Any, error: Any) -> None:
        """One exact optimizer step for ``error = dL/dy`` at input ``x``.

        A step that would make weights non-finite raises NumericalError, is counted in
        ``counters()["rejected"]`` and is not applied.
        """
        self._inner.update(
            as_vector(x, "x", self._d_in), as_vector(error, "error", self._inner.d_out)
        )

    def update_batch(self, X: Any, errors: Any) -> None:
        """One step on the mean gradient of a batch (rows of ``X`` with their ``errors``): the
        background (loop B) update of a base adapter trained on replayed data."""
        self._inner.update_batch(
            as_matrix(X, "X", self._d_in), as_matrix(errors, "errors", self._inner.d_out)
        )

    def gradients(self, x: Any, error: Any) -> tuple[F32Array, F32Array, F32Array]:
        """Exact ``(dL/dA [r, d_in], dL/dB [d_out, r], dL/dx [d_in])`` for ``error = dL/dy``."""
        return self._inner.gradients(
            as_vector(x, "x", self._d_in), as_vector(error, "error", self.d_out)
        )

    # --- weights ----------------------------------------------------------------------------

    @property
    def lora_A(self) -> F32Array:
        """A copy of ``A`` (``[r, d_in]``)."""
        return self._inner.lora_a

    @property
    def lora_B(self) -> F32Array:
        """A copy of ``B`` (``[d_out, r]``)."""
        return self._inner.lora_b

    def delta_w(self) -> F32Array:
        """The dense correction ``ΔW = s·B A`` (``[d_out, d_in]``)."""
        return self._inner.delta_w()

    def delta_norm(self) -> float:
        """``‖ΔW‖_F`` (computed without forming ``ΔW``)."""
        return self._inner.delta_norm()

    def set_weights(self, lora_A: Any, lora_B: Any) -> None:
        """Replace ``A`` and ``B`` (same shapes) and forget the optimizer momentum.

        Every entry must be finite and at most ``MAX_WEIGHT`` (1e4) in magnitude: larger factors are
        refused with NumericalError (trained LoRA factors are of order 1; see docs/reliability.md).
        """
        self._inner.set_weights(
            as_matrix(lora_A, "lora_A", self._d_in), as_matrix(lora_B, "lora_B", self.rank)
        )

    def counters(self) -> dict[str, int]:
        """Counts: ``updates``, ``rejected`` (non-finite steps refused), ``rewards``, ``explored``,
        ``merges``."""
        return dict(self._inner.counters())

    def last_step(self) -> dict[str, Any] | None:
        """The last applied step: ``grad_norm``, ``clipped``, ``bounded``, ``delta_norm``."""
        step = self._inner.last_step()
        return None if step is None else dict(step)

    # --- files ------------------------------------------------------------------------------

    def save_peft(
        self,
        path: PathLike,
        *,
        module: str | None = None,
        layer: Literal["linear", "embedding", "conv1d"] | None = None,
        task_type: str | None = None,
        base_model_name_or_path: str | None = None,
    ) -> None:
        """Write a PEFT directory (``adapter_model.safetensors`` + ``adapter_config.json``).

        ``module`` (default: the adapter's ``module``) must be the *full dotted path* of the target
        layer in the base model, e.g. ``"model.layers.0.self_attn.q_proj"``: PEFT loads weights by
        exact key, so a short name like ``"q_proj"`` would load as an adapter that does nothing and
        is refused (ConfigError). ``layer`` is the kind of that layer (``"embedding"`` writes
        ``lora_embedding_A/B``; ``"conv1d"``, GPT-2's layers, sets ``fan_in_fan_out``); by default
        it is inferred from the name (``embed_tokens``, ``wte``, ... are embeddings; ``c_attn``,
        ``c_fc``, ``c_proj`` are Conv1D; anything else is linear). ``task_type`` (e.g.
        ``"CAUSAL_LM"``) and ``base_model_name_or_path`` are written for ``AutoPeftModel*``.
        """
        for name, value in (
            ("module", module),
            ("layer", layer),
            ("task_type", task_type),
            ("base_model_name_or_path", base_model_name_or_path),
        ):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a str or None, got {type(value).__name__}")
        self._inner.save_peft(
            os.fspath(path),
            module=module,
            layer=layer,
            task_type=task_type,
            base_model=base_model_name_or_path,
        )

    def load_peft(self, path: PathLike, module: str | None = None) -> None:
        """Load weights from a PEFT directory; shape, rank and alpha must match (CheckpointError
        otherwise, weights unchanged). ``module=None`` takes the adapter's own module if the file
        has it, else the file's only module. rsLoRA files (``use_rslora``) have scale
        ``lora_alpha/√r``, i.e. a SONA ``alpha`` of ``lora_alpha·√r``; DoRA, ``lora_bias`` and other
        features SONA cannot represent are refused."""
        self._inner.load_peft(os.fspath(path), module)

    def save(self, path: PathLike) -> None:
        """Save the full training state (weights, momentum, reward baseline, exploration RNG,
        counters) so that :meth:`load` resumes exactly; pending exploration tokens are not kept."""
        self._inner.save(os.fspath(path))

    @classmethod
    def load(cls, path: PathLike) -> LoRA:
        """An adapter saved with :meth:`save` (CheckpointError if the file is corrupted)."""
        return cls._wrap(_sona.lora_load(os.fspath(path), cls._tier))

    def freeze(self) -> None:
        """Make the adapter read-only (updates, rewards and merges into it then fail)."""
        self._inner.freeze()

    def save_quantized(
        self, path: PathLike, kind: Literal["fp16", "q4"] = "q4", group_size: int = 32
    ) -> dict[str, Any]:
        """Save an FP16 or group-wise Q4 copy of a frozen adapter.

        Returns ``kind``, ``rel_error`` (``‖ΔW − ΔŴ‖_F / ‖ΔW‖_F``) and ``payload_bytes``.
        """
        group_size = as_size(group_size, "group_size", 2, 4096)
        return dict(self._inner.save_quantized(os.fspath(path), kind, group_size))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(d_in={self.d_in}, d_out={self.d_out}, rank={self.rank}, "
            f"alpha={self.alpha:g})"
        )


class MicroLoRA(LoRA):
    """The fast tier: rank 1-2, one step per feedback.

    Defaults were chosen on the adaptation benchmark (``sona eval adapt``; docs/decisions.md):
    ``alpha=20`` (so ``s·‖A x‖`` is about 1 for unit ``x`` at rank 2), ``lr=3e-4``, momentum 0.9,
    gradient clip 10, ``‖ΔW‖_F ≤ max_norm = 16`` up to d = 256 and ``16·d/256`` above
    (:func:`default_max_norm`), decay ``1e-5`` per step, relative exploration ``sigma=0.1`` up to
    d = 256 and ``0.1·√(256/d)`` above (:func:`default_sigma`), and a linear baseline fitted at
    rate 0.05. Learning one output direction at dimension d takes about :func:`feedback_budget`
    rewards.
    """

    _tier = "micro"

    def __init__(
        self,
        d_in: int,
        d_out: int | None = None,
        *,
        rank: int = 2,
        alpha: float = 20.0,
        lr: float | None = None,
        momentum: float = 0.9,
        clip: float = 10.0,
        max_norm: float | None = None,
        decay: float = 1e-5,
        sigma: float | None = None,
        baseline_rate: float = 0.05,
        capacity: int = 256,
        seed: int = 0,
        W: Any = None,
        module: str = "embedding",
    ) -> None:
        dim = as_size(d_in if d_out is None else d_out, "d_out", 1, _U64_MAX)
        super().__init__(
            d_in,
            d_out,
            rank=rank,
            alpha=alpha,
            lr=default_lr(dim) if lr is None else lr,
            momentum=momentum,
            clip=clip,
            max_norm=default_max_norm(dim) if max_norm is None else max_norm,
            decay=decay,
            sigma=default_sigma(dim) if sigma is None else sigma,
            baseline_rate=baseline_rate,
            capacity=capacity,
            seed=seed,
            W=W,
            module=module,
        )

    def merge_into(self, base: BaseLoRA) -> MergeReport:
        """Merge this adapter into ``base`` (see :meth:`BaseLoRA.merge_from`)."""
        return base.merge_from(self)


class BaseLoRA(LoRA):
    """The slow tier: rank 4-16, trained in the background and by absorbing micro adapters.

    No Frobenius bound and no decay by default.
    """

    _tier = "base"

    def __init__(
        self,
        d_in: int,
        d_out: int | None = None,
        *,
        rank: int = 8,
        alpha: float = 16.0,
        lr: float = 1e-3,
        momentum: float = 0.9,
        clip: float = 10.0,
        max_norm: float = float("inf"),
        decay: float = 0.0,
        sigma: float = 0.1,
        baseline_rate: float = 0.05,
        capacity: int = 256,
        seed: int = 0,
        W: Any = None,
        module: str = "embedding",
    ) -> None:
        super().__init__(
            d_in,
            d_out,
            rank=rank,
            alpha=alpha,
            lr=lr,
            momentum=momentum,
            clip=clip,
            max_norm=max_norm,
            decay=decay,
            sigma=sigma,
            baseline_rate=baseline_rate,
            capacity=capacity,
            seed=seed,
            W=W,
            module=module,
        )

    def merge_from(self, micro: LoRA) -> MergeReport:
        """Absorb ``micro``: ``ΔW_b ←`` best rank-``r_b`` approximation of ``ΔW_b + ΔW_µ``.

        Exact up to that truncation (concatenate factors, QR, SVD of the small core); the micro
        adapter is zeroed (``B_µ = 0``, fresh ``A_µ``). Returns the discarded spectral mass.
        """
        return _report(self._inner.merge_from(micro._inner))

    @classmethod
    def from_peft(cls, path: PathLike, module: str | None = None, **settings: Any) -> BaseLoRA:
        """A new adapter holding the weights of a PEFT directory (identity ``W``; ``d_in`` must
        equal ``d_out`` unless ``W`` is given in ``settings``)."""
        return _from_peft(cls, path, module, settings)  # type: ignore[return-value]


def _from_peft(
    cls: type[LoRA], path: PathLike, module: str | None, settings: dict[str, Any]
) -> LoRA:
    name, alpha, a, b = _sona.lora_read_peft(os.fspath(path), module)
    rank, d_in = a.shape
    d_out = b.shape[0]
    obj = cls(d_in, d_out, rank=rank, alpha=alpha, module=name, **settings)
    obj.set_weights(a, b)
    return obj


def read_peft(path: PathLike, module: str | None = None) -> tuple[str, float, F32Array, F32Array]:
    """``(module, alpha, lora_A, lora_B)`` from a PEFT directory (CheckpointError if bad).

    ``alpha`` is the SONA alpha giving the file's scale: ``lora_alpha``, or ``lora_alpha·√r`` for
    an rsLoRA file."""
    return _sona.lora_read_peft(os.fspath(path), module)


def load_quantized(path: PathLike, **settings: Any) -> BaseLoRA:
    """A frozen :class:`BaseLoRA` holding the dequantised weights of :meth:`LoRA.save_quantized`.

    The reconstruction error recorded at save time is in ``adapter.quant_error``.
    """
    kind, scale, rel_error, a, b = _sona.lora_read_quantized(os.fspath(path))
    rank, d_in = a.shape
    obj = BaseLoRA(d_in, b.shape[0], rank=rank, alpha=scale * rank, **settings)
    obj.set_weights(a, b)
    obj.freeze()
    obj.quant_kind = kind
    obj.quant_error = rel_error
    return obj


class TwoTierLoRA:
    """Base (rank ``base_rank``) + micro (rank ``micro_rank``) adapters on one frozen map.

    ``y = W x + ΔW_b x + ΔW_µ x``. Every feedback trains the micro tier; every ``merge_every``
    applied micro steps it is merged into the base (0 disables automatic merges; call
    :meth:`merge`). The tiers are exposed as :attr:`base` and :attr:`micro` (shared state).
    ``lr``, ``sigma`` and ``max_norm`` default to :func:`default_lr`, :func:`default_sigma` and
    :func:`default_max_norm` (two-tier) of ``d_out``: the d = 256 values, with the step scaled by
    ``√(d/256)`` and the noise by ``√(256/d)`` above 256 (:func:`scaled_defaults`).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int | None = None,
        *,
        base_rank: int = 8,
        micro_rank: int = 2,
        base_alpha: float = 16.0,
        micro_alpha: float = 20.0,
        lr: float | None = None,
        momentum: float = 0.9,
        clip: float = 10.0,
        max_norm: float | None = None,
        decay: float = 1e-5,
        sigma: float | None = None,
        baseline_rate: float = 0.05,
        capacity: int = 256,
        seed: int = 0,
        merge_every: int = 1000,
        W: Any = None,
        module: str = "embedding",
    ) -> None:
        d_in = as_size(d_in, "d_in", 1, _U64_MAX)
        d_out = d_in if d_out is None else as_size(d_out, "d_out", 1, _U64_MAX)
        lr = default_lr(d_out, two_tier=True) if lr is None else lr
        sigma = default_sigma(d_out) if sigma is None else sigma
        max_norm = default_max_norm(d_out, two_tier=True) if max_norm is None else max_norm
        base_rank = as_size(base_rank, "base_rank", 1, _U64_MAX)
        micro_rank = as_size(micro_rank, "micro_rank", 1, _U64_MAX)
        capacity = as_size(capacity, "capacity", 1, _U64_MAX)
        seed = as_size(seed, "seed", 0, _U64_MAX)
        merge_every = as_size(merge_every, "merge_every", 0, _U64_MAX)
        kind, weight = _base_map(W, d_in, d_out)
        self._inner = _sona.TwoTierAdapter(
            d_in,
            d_out,
            base_rank=base_rank,
            micro_rank=micro_rank,
            base_alpha=_cfg(base_alpha, "base_alpha"),
            micro_alpha=_cfg(micro_alpha, "micro_alpha"),
            **_learning(
                lr=lr,
                momentum=momentum,
                clip=clip,
                max_norm=max_norm,
                decay=decay,
                sigma=sigma,
                baseline_rate=baseline_rate,
            ),
            capacity=capacity,
            seed=seed,
            merge_every=merge_every,
            base_map=kind,
            weight=weight,
            module=_module(module),
        )
        self._d_in = d_in
        self.base: BaseLoRA = BaseLoRA._wrap(self._inner.base)  # type: ignore[assignment]
        self.micro: MicroLoRA = MicroLoRA._wrap(self._inner.micro)  # type: ignore[assignment]

    @property
    def d_in(self) -> int:
        """Input dimension."""
        return self._inner.d_in

    @property
    def d_out(self) -> int:
        """Output dimension."""
        return self._inner.d_out

    @property
    def merge_every(self) -> int:
        """Micro steps between automatic merges (0: never)."""
        return self._inner.merge_every

    def forward(self, x: Any, explore: bool = False) -> Any:
        """``y = W x + ΔW_b x + ΔW_µ x``; with ``explore=True`` returns ``(y + noise, token)``."""
        x = as_vector(x, "x", self._d_in)
        if explore:
            return self._inner.forward_explore(x)
        return self._inner.forward(x)

    __call__ = forward

    def forward_batch(self, X: Any) -> F32Array:
        """Forward for each row of ``X``."""
        return self._inner.forward_batch(as_matrix(X, "X", self._d_in))

    def reward(self, token: int, reward: float) -> None:
        """Reward for an explored output: one micro step, then a merge if one is due.

        Atomic like :meth:`LoRA.reward`. A due merge that fails (e.g. into a frozen base) does not
        fail the applied step: it stays due and is counted in :meth:`merge_failures`.
        """
        self._inner.reward(_token(token), as_real(reward, "reward"))

    def update(self, x: Any, error: Any) -> None:
        """Gradient step on the micro tier, then a merge if one is due."""
        self._inner.update(
            as_vector(x, "x", self._d_in), as_vector(error, "error", self._inner.d_out)
        )

    def merge(self) -> MergeReport:
        """Merge the micro tier into the base now (on error neither tier changes).

        Readers never see half a merge: both tiers are published in one atomic swap, so every
        forward uses base and micro weights of one generation.
        """
        return _report(self._inner.merge())

    def merge_failures(self) -> tuple[int, str | None]:
        """``(count, last message)`` of automatic merges that failed (they stay due)."""
        count, message = self._inner.merge_failures()
        return int(count), message

    def last_merge(self) -> MergeReport | None:
        """The report of the last merge, if any."""
        rep = self._inner.last_merge()
        return None if rep is None else _report(rep)
