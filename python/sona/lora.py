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

The classes and functions are the Rust extension's own (``crates/sona-py/src/lora.rs``: signatures,
defaults and docstrings are written there once, the defaults read from the core configs and
``sona_lora::ScaledDefaults``; ``sona/_sona.pyi`` types them). Every method takes array-likes
(converted once to C-contiguous float32) and returns numpy float32. Sizes must be ``int`` (``1.5``
or ``"8"`` raise ConfigError), settings real numbers (anything else raises ConfigError), rewards
real numbers and tokens ``int`` (anything else raises InvalidInputError). Every class may be shared
between threads (docs/reliability.md).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import numpy.typing as npt

from sona._sona import (
    BaseLoRA,
    LoRA,
    MicroLoRA,
    TwoTierLoRA,
    default_lr,
    default_max_norm,
    default_sigma,
    feedback_budget,
    load_quantized,
    read_peft,
    scaled_defaults,
)

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


class MergeReport(TypedDict):
    """What a micro → base merge did (the dict :meth:`BaseLoRA.merge_from` and
    :meth:`TwoTierLoRA.merge` return)."""

    #: ``‖(ΔW_b + ΔW_µ) − ΔW_merged‖_F``: the Frobenius norm truncation dropped.
    discarded: float
    #: Dropped share of the spectral energy ``Σ_{i>r_b} σ_i² / Σ σ_i²``.
    discarded_fraction: float
    #: ``‖ΔW_b + ΔW_µ‖_F`` before truncation.
    total_norm: float
    #: Singular values of ``ΔW_b + ΔW_µ``, descending.
    singular_values: npt.NDArray[np.float32]
