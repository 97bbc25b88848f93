"""Metrics users can check (design §8), computed in Rust (``sona-metrics``).

- :func:`continual_metrics`: ACC, BWT and forgetting of an accuracy matrix ``R[i][j]`` (accuracy on
  task ``j`` after training task ``i``).
- :func:`routing_summary`: mean reward and cost of a routing policy, and its regret against the best
  fixed tier and the per-query oracle, on a stream where every tier's reward is known.
- :func:`pareto_front`, :func:`top_share_for_quality`: the cost–quality front, and the share of
  top-tier calls a policy needs to reach a given quality.
- :func:`window_means`, :func:`improvement_rates`: regret per window of traffic and its relative
  reduction between consecutive windows (never a compounding percentage).
- :func:`off_policy_value`: what another policy would have earned, estimated from logged decisions
  (IPS, self-normalized IPS, doubly robust) with a confidence interval.
- :func:`phi`: the integration proxy Φ — algebraic connectivity of the memory graph's normalized
  Laplacian; a diagnostic of how linked the pattern memory is, not a measure of consciousness.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sona import _sona
from sona._validate import as_real, as_size
from sona.errors import DimensionError, InvalidInputError

__all__ = [
    "ContinualMetrics",
    "Estimate",
    "RoutingSummary",
    "continual_metrics",
    "improvement_rates",
    "off_policy_value",
    "pareto_front",
    "phi",
    "routing_summary",
    "top_share_for_quality",
    "window_means",
]


@dataclass(frozen=True)
class ContinualMetrics:
    """ACC (mean final accuracy), BWT (mean change of earlier tasks since they were learned;
    negative = forgetting) and forgetting (best earlier accuracy minus final, per earlier task)."""

    acc: float
    bwt: float
    forgetting: float
    forgetting_per_task: list[float]


@dataclass(frozen=True)
class RoutingSummary:
    """What a routing policy earned on ``n`` queries. Utility is ``reward − cost_weight · cost``;
    ``regret_vs_best_fixed`` compares with always using the best single tier, ``regret_vs_oracle``
    with the per-query best tier (the cheaper one on ties)."""

    n: int
    mean_reward: float
    mean_cost: float
    mean_utility: float
    best_fixed_tier: int
    best_fixed_utility: float
    oracle_reward: float
    oracle_cost: float
    oracle_utility: float
    regret_vs_best_fixed: float
    regret_vs_oracle: float
    tier_shares: list[float]


@dataclass(frozen=True)
class Estimate:
    """An off-policy value estimate with its normal-approximation interval ``[low, high]`` at
    ``level``, the number of logged decisions used and the weights' effective sample size."""

    value: float
    std_err: float
    low: float
    high: float
    n: int
    ess: float
    level: float


def _matrix(x: Any, name: str, cols: int | None = None) -> np.ndarray[Any, np.dtype[np.float64]]:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: cannot convert to a float array ({exc})") from exc
    if arr.ndim != 2 or (cols is not None and arr.shape[1] != cols):
        want = f"(n, {cols})" if cols is not None else "2-D"
        raise DimensionError(f"{name}: expected a {want} array, got shape {arr.shape}")
    return arr


def _ints(x: Any, name: str) -> list[int]:
    arr = np.asarray(x)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InvalidInputError(f"{name}: expected a 1-D array of integers, got {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise InvalidInputError(f"{name}: must be ≥ 0")
    return [int(v) for v in arr]


def _floats(x: Any, name: str) -> list[float]:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: cannot convert to a float array ({exc})") from exc
    if arr.ndim != 1:
        raise DimensionError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return [float(v) for v in arr]


def continual_metrics(r: Any) -> ContinualMetrics:
    """ACC, BWT and forgetting of a square accuracy matrix (NaN where not measured; the diagonal
    and the last row must be measured)."""
    arr = _matrix(r, "R")
    return ContinualMetrics(**_sona.continual_metrics(arr.tolist()))


def routing_summary(
    rewards: Any, costs: Sequence[float], chosen: Any, cost_weight: float = 0.0
) -> RoutingSummary:
    """Summarize the tiers ``chosen`` (one per query) against the ``(n, T)`` table ``rewards`` of
    every tier's reward on every query, with per-tier ``costs``."""
    costs_l = _floats(costs, "costs")
    table = _matrix(rewards, "rewards", len(costs_l))
    picked = _ints(chosen, "chosen")
    if len(picked) != table.shape[0]:
        raise DimensionError(f"chosen: expected {table.shape[0]} tiers, got {len(picked)}")
    out = _sona.routing_summary(
        table.ravel().tolist(), costs_l, picked, as_real(cost_weight, "cost_weight")
    )
    return RoutingSummary(**out)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(cost, quality)`` points on the cost–quality front, sorted by cost."""
    return _sona.pareto_front([(float(c), float(q)) for c, q in points])


def top_share_for_quality(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """Smallest top-tier call share reaching ``target`` quality, interpolated between the
    policy's measured ``(top_share, quality)`` points; ``None`` if none reaches it."""
    return _sona.top_share_for_quality(
        [(float(s), float(q)) for s, q in points], as_real(target, "target")
    )


def window_means(values: Any, window: int) -> list[float]:
    """Means of consecutive windows of ``window`` values (a last window shorter than half a
    window is dropped)."""
    return _sona.window_means(_floats(values, "values"), as_size(window, "window", 1))


def improvement_rates(window_regrets: Any) -> list[float]:
    """Relative regret reduction ``(r_prev − r_cur) / r_prev`` between consecutive windows."""
    return _sona.improvement_rates(_floats(window_regrets, "window_regrets"))


def off_policy_value(
    actions: Any,
    propensities: Any,
    rewards: Any,
    target: Any,
    *,
    method: Literal["ips", "snips", "dr"] = "dr",
    reward_model: Any = None,
    clip: float | None = None,
    level: float = 0.95,
) -> Estimate:
    """Estimate the value of a target policy from logged decisions.

    ``actions[i]`` was chosen with probability ``propensities[i]`` by the logging policy and earned
    ``rewards[i]``; ``target`` is the ``(n, K)`` matrix of the target policy's action probabilities
    for each logged context (one-hot for a deterministic policy). ``"dr"`` (doubly robust) also
    needs ``reward_model``, an ``(n, K)`` matrix of predicted rewards. Weights may be clipped at
    ``clip``. The interval is a normal approximation at ``level``.

    The target must not have been fit on these decisions: a router trained on a log picks, on that
    log, the actions it saw rewarded, which inflates every estimator (``sona eval ope`` measured
    mean weights of 1.05 instead of 1). Evaluate a checkpoint on traffic logged after it was saved.
    """
    lvl = as_real(level, "level")
    if not 0.0 < lvl < 1.0:
        raise InvalidInputError(f"level must be in (0, 1), got {lvl}")
    z = statistics.NormalDist().inv_cdf(0.5 + lvl / 2.0)
    t = _matrix(target, "target")
    q = None if reward_model is None else _matrix(reward_model, "reward_model", t.shape[1])
    out = _sona.off_policy_estimate(
        method,
        t.shape[1],
        _ints(actions, "actions"),
        _floats(propensities, "propensities"),
        _floats(rewards, "rewards"),
        t.ravel().tolist(),
        None if q is None else q.ravel().tolist(),
        None if clip is None else as_real(clip, "clip"),
        z,
    )
    return Estimate(level=lvl, **out)


def phi(nodes: Sequence[int], edges: Sequence[tuple[int, int, float]]) -> float:
    """Φ of a graph: λ₂ of its normalized Laplacian (0 when disconnected, rising as its parts are
    linked; at most n/(n−1)). ``edges`` are ``(a, b, weight ≥ 0)`` between ids in ``nodes``."""
    return _sona.phi(
        [as_size(n, "node id") for n in nodes],
        [(as_size(a, "edge end"), as_size(b, "edge end"), float(w)) for a, b, w in edges],
    )
