"""EWC++: keep what already works while learning continues (docs/design.md §4).

- :class:`OnlineFisher` — the diagonal Fisher from **per-sample** gradients, ``F ← γF + (1−γ)g²``
  (bias-corrected for its zero start, floored).
- :class:`EwcPlusPlus` — the online Fisher of the current task plus every finished task folded into
  one quadratic in O(P): ``penalty(θ) = λ/2 Σ F̄ (θ − θ̄*)²`` and ``apply(θ, grad) = grad + λ F̄ ⊙
  (θ − θ̄*)``.
- :class:`TaskBoundaryDetector` — a calibrated two-window test on input vectors; on a boundary it
  hands back the parameters from *before* the change.
- :class:`AdaptiveLambda` — λ raised on measured probe-set forgetting, lowered when the new task
  stalls.
- :class:`GradientProjection` — optional GPM: the task gradient is projected off protected
  directions (``project``), or, in the layer form, every row of a weight gradient off a basis of
  the layer's inputs (``project_rows``).

The classes are the Rust extension's own (``crates/sona-py/src/ewc.rs``: signatures, defaults and
docstrings are written there once; ``sona/_sona.pyi`` types them). Every method takes array-likes
(converted once to C-contiguous float32) and returns numpy float32. Wrong lengths raise
:class:`~sona.errors.DimensionError`, NaN/Inf :class:`~sona.errors.NonFiniteError`, out-of-range
settings :class:`~sona.errors.ConfigError`, corrupted files :class:`~sona.errors.CheckpointError`,
and values whose result ``float32`` cannot hold :class:`~sona.errors.NumericalError`; a failing
call leaves the object unchanged. Sizes must be ``int`` (``1.5`` or ``"8"`` raise ConfigError) and
scalars real numbers (a string raises InvalidInputError). Every class may be shared between threads
(docs/reliability.md).
"""

from __future__ import annotations

from sona._sona import (
    AdaptiveLambda,
    EwcPlusPlus,
    GradientProjection,
    OnlineFisher,
    TaskBoundaryDetector,
)

__all__ = [
    "AdaptiveLambda",
    "EwcPlusPlus",
    "GradientProjection",
    "OnlineFisher",
    "TaskBoundaryDetector",
]
