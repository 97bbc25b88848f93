"""The narrow interface the gateway needs from the engine, and its adapter over ``SONAEngine``.

The gateway asks three things of a router: ``process(vector)`` returns a decision (trajectory id,
tier, per-tier predicted rewards), ``feedback(id, reward, source)`` learns, ``stats()`` reports.
:class:`EngineRouter` maps them onto :class:`sona.engine.SONAEngine` (one Rust call each), so the
app depends on nothing else of the engine's surface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from sona.embed import Embedder, HashingEmbedder, OnnxEmbedder, SentenceTransformerEmbedder
from sona.engine import SONAConfig, SONAEngine
from sona.errors import ConfigError

F32 = NDArray[np.float32]

__all__ = ["Embedder", "EngineRouter", "Route", "Router", "make_embedder", "make_router"]


@dataclass(frozen=True)
class Route:
    """What the gateway keeps from a routing decision."""

    trajectory_id: int
    tier: int
    propensity: float
    predicted: tuple[float, ...]


class Router(Protocol):
    """What the gateway calls per request."""

    def process(self, x: F32, tenant: str | None = None) -> Route: ...

    def feedback(self, trajectory_id: int, reward: float, source: str) -> None: ...

    def stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...


def make_embedder(spec: str, dim: int, seed: int) -> Embedder:
    """The embedder a config names.

    ``hashing`` (the built-in Rust n-gram embedder, ``dim`` wide), ``sentence-transformers:<model>``
    or ``onnx:<model.onnx>`` (with ``tokenizer.json`` beside it); the last two set their own size.
    """
    if spec == "hashing":
        return HashingEmbedder(dim, seed=seed)
    kind, _, arg = spec.partition(":")
    if kind == "sentence-transformers":
        return SentenceTransformerEmbedder(arg)
    model = Path(arg)
    return OnnxEmbedder(model, model.with_name("tokenizer.json"))


class EngineRouter:
    """Adapter over :class:`sona.engine.SONAEngine`."""

    def __init__(self, engine: SONAEngine, state: Path | None = None) -> None:
        self.engine = engine
        self.state = state

    def process(self, x: F32, tenant: str | None = None) -> Route:
        """One engine ``process`` call (with ``tenant``: through that tenant's micro-LoRA)."""
        d = self.engine.process(x, tenant)
        return Route(
            int(d.trajectory_id),
            int(d.tier),
            float(d.propensity),
            tuple(d.predicted.tolist()),
        )

    def feedback(self, trajectory_id: int, reward: float, source: str) -> None:
        """One engine ``feedback`` call."""
        self.engine.feedback(trajectory_id, reward, source=source)

    def stats(self) -> dict[str, float]:
        """The engine's numeric statistics (``loop_b_runs``, ``pending``, ``feedbacks``, ...)."""
        return {
            str(k): float(v)
            for k, v in self.engine.stats().items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }

    def close(self) -> None:
        """Save the engine (when it has a state directory), then stop its background thread."""
        try:
            if self.state is not None:
                self.engine.save(self.state)
        finally:
            self.engine.close()


def make_router(
    dim: int,
    tier_names: Sequence[str],
    costs: Sequence[float],
    cost_weight: float,
    seed: int,
    state: Path | None = None,
) -> EngineRouter:
    """A :class:`SONAEngine` for one profile's tiers, restored from ``state`` if saved there.

    ``costs`` are normalised so the dearest tier costs 1; ``cost_weight`` is then in reward units
    (0.3: the dearest tier must be 0.3 more likely to satisfy than a free one to be worth it).
    A saved engine whose tiers differ from the configuration's is refused (ConfigError).
    """
    if state is not None and (state / "sona.json").is_file():
        engine = SONAEngine.load(state)
        if engine.tier_names != list(tier_names) or engine.dim != dim:
            engine.close()
            raise ConfigError(
                f"the engine saved in {state} has tiers {engine.tier_names} and d={engine.dim}; "
                f"the configuration has {list(tier_names)} and d={dim} (move the directory away)"
            )
        return EngineRouter(engine, state)
    top = max(costs) if costs and max(costs) > 0 else 1.0
    config = SONAConfig(
        dim=dim,
        n_tiers=len(costs),
        tier_names=list(tier_names),
        tier_costs=[c / top for c in costs],
        cost_weight=cost_weight,
        seed=seed,
    )
    return EngineRouter(SONAEngine(config), state)
