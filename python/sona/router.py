"""The FastGRNN router of design §6, usable on its own.

>>> import numpy as np
>>> from sona.router import Router
>>> router = Router(input_dim=8, n_tiers=3, seed=0)
>>> seq = np.full((4, 8), 0.1, dtype=np.float32)   # (steps, input_dim)
>>> router.forward(seq).shape
(3,)
>>> loss = router.train_step(seq, tier=1, reward=1.0)

The cell reads a sequence of rows (in the engine: the adapted query, then the recalled pattern
centroids with their arm statistics) with ``z = σ(W x + U h + b_z)``, ``h̃ = tanh(W x + U h + b_h)``,
``h' = (ζ(1 − z) + ν) ⊙ h̃ + z ⊙ h``, low-rank ``W = W₁W₂`` and ``U = U₁U₂``, and learned ζ, ν. Per
tier, a sigmoid head predicts the reward. Rows are expected at unit scale (norm about 1), as the
engine feeds them. ``train_step`` is one Adam step on the binary cross-entropy of one tier's
prediction against an observed reward in [0, 1]; ``loss_and_grad`` exposes the exact gradient
(checked against finite differences in the Rust tests). Every method validates its input and
leaves the router unchanged when it raises.
"""

from __future__ import annotations

from typing import Any

from sona import _sona
from sona._validate import F32Array, as_matrix, as_real, as_size, as_vector

__all__ = ["Router"]


class Router:
    """A FastGRNN router with per-tier predicted-reward heads.

    Args:
        input_dim: Width of each row of a sequence.
        n_tiers: Number of tiers (heads), 1..16.
        hidden: Hidden size ``H`` (1..512).
        rank_w: Rank of ``W`` (≤ min(H, input_dim)).
        rank_u: Rank of ``U`` (≤ H).
        seed: Seed of the initial weights.
    """

    def __init__(
        self,
        input_dim: int,
        n_tiers: int,
        *,
        hidden: int = 16,
        rank_w: int = 8,
        rank_u: int = 4,
        seed: int = 0,
    ) -> None:
        self._inner = _sona.Router(
            as_size(input_dim, "input_dim"),
            as_size(n_tiers, "n_tiers"),
            as_size(hidden, "hidden"),
            as_size(rank_w, "rank_w"),
            as_size(rank_u, "rank_u"),
            as_size(seed, "seed"),
        )

    @property
    def input_dim(self) -> int:
        """Width of each row."""
        return self._inner.input_dim

    @property
    def n_tiers(self) -> int:
        """Number of tiers."""
        return self._inner.n_tiers

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return self._inner.n_params

    @property
    def size_bytes(self) -> int:
        """Bytes of the parameters (float32)."""
        return self._inner.size_bytes

    def forward(self, seq: Any) -> F32Array:
        """Predicted reward of every tier for a ``(steps, input_dim)`` sequence."""
        return self._inner.forward(as_matrix(seq, "seq", self.input_dim))

    def loss_and_grad(self, seq: Any, tier: int, reward: float) -> tuple[float, F32Array]:
        """Binary cross-entropy of ``tier``'s prediction against ``reward`` and its gradient."""
        return self._inner.loss_and_grad(
            as_matrix(seq, "seq", self.input_dim), as_size(tier, "tier"), as_real(reward, "reward")
        )

    def train_step(self, seq: Any, tier: int, reward: float, lr: float = 0.01) -> float:
        """One Adam step on that loss; returns the loss before the step."""
        return self._inner.train_step(
            as_matrix(seq, "seq", self.input_dim),
            as_size(tier, "tier"),
            as_real(reward, "reward"),
            as_real(lr, "lr"),
        )

    def parameters(self) -> F32Array:
        """A copy of the flat parameter vector."""
        return self._inner.parameters()

    def set_parameters(self, theta: Any) -> None:
        """Replaces every parameter (same count, finite); forgets the optimiser state."""
        self._inner.set_parameters(as_vector(theta, "theta", self.n_params))

    def __repr__(self) -> str:
        return (
            f"Router(input_dim={self.input_dim}, n_tiers={self.n_tiers}, n_params={self.n_params})"
        )
