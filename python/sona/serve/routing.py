"""The narrow interface the gateway needs from the engine, and its adapters.

The gateway asks three things of a router: ``process(vector)`` returns a decision (trajectory id,
tier, per-tier predictions), ``feedback(id, reward, source)`` learns, ``stats()`` reports. The
production router is :class:`sona.engine.SONAEngine` (one Rust call per request); this module
wraps it so that the app never depends on the engine's full surface. :class:`LinearBandit` is the
stand-in used only when this build has no engine (it keeps the gateway usable and testable, and is
replaced, not extended, by the engine).
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


@dataclass(frozen=True)
class Route:
    """What the gateway keeps from a routing decision."""

    trajectory_id: int
    tier: int
    propensity: float
    predicted: tuple[float, ...]


class Router(Protocol):
    """What the gateway calls per request (implemented by the engine adapter)."""

    def process(self, x: F32) -> Route: ...

    def feedback(self, trajectory_id: int, reward: float, source: str) -> None: ...

    def stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...


class Embedder(Protocol):
    """Text to a unit float32 vector of a fixed size (``sona.embed`` implements it)."""

    @property
    def dim(self) -> int: ...

    def embed(self, text: str) -> F32: ...


_TOKEN = re.compile(r"\w+", re.UNICODE)


class PyHashingEmbedder:
    """Word uni/bi-gram feature hashing (signed buckets, L2-normalised).

    The stand-in for the engine's Rust ``HashingEmbedder`` when this build has none.
    """

    def __init__(self, dim: int = 256, seed: int = 0) -> None:
        self._dim = dim
        self._salt = seed.to_bytes(8, "little")

    @property
    def dim(self) -> int:
        """Output size."""
        return self._dim

    def embed(self, text: str) -> F32:
        """Embed one text."""
        out = np.zeros(self._dim, dtype=np.float32)
        words = _TOKEN.findall(text.lower())
        grams = words + [a + " " + b for a, b in itertools.pairwise(words)]
        for gram in grams:
            h = int.from_bytes(
                hashlib.blake2b(gram.encode(), digest_size=8, key=self._salt).digest(), "little"
            )
            out[h % self._dim] += 1.0 if (h >> 63) & 1 else -1.0
        norm = float(np.linalg.norm(out))
        if norm > 0:
            out /= norm
        return out


def make_embedder(spec: str, dim: int, seed: int) -> Embedder:
    """The embedder a config names: ``hashing``, ``sentence-transformers:<m>``, ``onnx:<path>``."""
    sona_embed: Any
    try:  # the engine's embedders, when this build has them
        sona_embed = importlib.import_module("sona.embed")
    except ImportError:
        sona_embed = None
    if spec == "hashing":
        if sona_embed is not None:
            return sona_embed.HashingEmbedder(dim, seed=seed)  # type: ignore[no-any-return]
        return PyHashingEmbedder(dim, seed)
    if sona_embed is None:
        from sona.errors import ConfigError

        raise ConfigError(f"engine.embedder {spec!r} needs sona.embed, missing from this build")
    kind, _, arg = spec.partition(":")
    if kind == "sentence-transformers":
        return sona_embed.SentenceTransformerEmbedder(arg)  # type: ignore[no-any-return]
    return sona_embed.OnnxEmbedder(arg)  # type: ignore[no-any-return]


class LinearBandit:
    """Per-tier logistic reward heads with ε-greedy exploration; cost-aware like the engine.

    utility_k = sigmoid(w_k·x + b_k) − cost_weight · cost_k. Thread-safe; trajectories are kept
    until their feedback arrives.
    """

    def __init__(
        self,
        dim: int,
        costs: Sequence[float],
        cost_weight: float,
        *,
        seed: int = 0,
        epsilon: float = 0.05,
        lr: float = 0.5,
    ) -> None:
        self._w = np.zeros((len(costs), dim), dtype=np.float32)
        self._b = np.zeros(len(costs), dtype=np.float32)
        self._costs = np.asarray(costs, dtype=np.float32)
        self._cw = float(cost_weight)
        self._eps = float(epsilon)
        self._lr = float(lr)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[F32, int]] = {}
        self._next = 1
        self._n_feedback = 0

    def process(self, x: F32) -> Route:
        """Route one query vector and record its trajectory."""
        with self._lock:
            pred = 1.0 / (1.0 + np.exp(-(self._w @ x + self._b)))
            util = pred - self._cw * self._costs
            best = int(np.argmax(util))
            n = len(self._costs)
            if self._rng.random() < self._eps:
                tier = int(self._rng.integers(n))
            else:
                tier = best
            propensity = self._eps / n + (1.0 - self._eps if tier == best else 0.0)
            tid = self._next
            self._next += 1
            self._pending[tid] = (x.copy(), tier)
            return Route(tid, tier, propensity, tuple(float(p) for p in pred))

    def feedback(self, trajectory_id: int, reward: float, source: str) -> None:
        """One SGD step of the chosen tier's head toward ``reward``."""
        from sona.errors import InvalidInputError, UnknownIdError

        if not (isinstance(reward, float | int) and math.isfinite(reward) and 0 <= reward <= 1):
            raise InvalidInputError(f"reward must be in [0, 1], got {reward!r}")
        with self._lock:
            item = self._pending.pop(trajectory_id, None)
            if item is None:
                raise UnknownIdError(f"unknown or already rewarded trajectory {trajectory_id}")
            x, tier = item
            pred = 1.0 / (1.0 + math.exp(-float(self._w[tier] @ x + self._b[tier])))
            grad = pred - float(reward)
            self._w[tier] -= self._lr * grad * x
            self._b[tier] -= self._lr * grad
            self._n_feedback += 1

    def stats(self) -> dict[str, float]:
        """Open trajectories and feedback count."""
        with self._lock:
            return {"pending": float(len(self._pending)), "feedback": float(self._n_feedback)}

    def close(self) -> None:
        """Nothing to stop."""


class EngineRouter:
    """Adapter over :class:`sona.engine.SONAEngine` (the production router)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def process(self, x: F32) -> Route:
        """One engine ``process`` call."""
        d = self._engine.process(x)
        predicted = getattr(d, "predicted", None)
        if predicted is None:
            predicted = getattr(d, "utilities", None) or ()
        return Route(
            int(d.trajectory_id),
            int(d.tier),
            float(d.propensity),
            tuple(float(p) for p in predicted),
        )

    def feedback(self, trajectory_id: int, reward: float, source: str) -> None:
        """One engine ``feedback`` call."""
        self._engine.feedback(trajectory_id, reward, source=source)

    def stats(self) -> dict[str, float]:
        """Numeric engine statistics, flattened (``loop_b_runs`` and the like)."""
        out: dict[str, float] = {}
        getter = getattr(self._engine, "stats", None)
        raw = getter() if getter is not None else {}
        items = raw.items() if isinstance(raw, dict) else vars(raw).items()
        for key, value in items:
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[str(key)] = float(value)
        return out

    def close(self) -> None:
        """Stop the engine's background thread."""
        self._engine.close()


def make_router(
    dim: int, tier_names: Sequence[str], costs: Sequence[float], cost_weight: float, seed: int
) -> Router:
    """The engine when this build has it, else :class:`LinearBandit`.

    ``costs`` are normalised so the most expensive tier costs 1 (cost_weight is then in reward
    units: 0.3 means the top tier must be 0.3 more likely to be right to be worth it).
    """
    top = max(costs) if costs and max(costs) > 0 else 1.0
    norm = [c / top for c in costs]
    try:
        from sona.engine import SONAConfig, SONAEngine
    except ImportError:
        return LinearBandit(dim, norm, cost_weight, seed=seed)
    config = SONAConfig(
        dim=dim,
        n_tiers=len(norm),
        tier_names=list(tier_names),
        tier_costs=norm,
        cost_weight=cost_weight,
        seed=seed,
    )
    return EngineRouter(SONAEngine(config))
