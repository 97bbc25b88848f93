"""ReasoningBank: a curated, searchable memory of what worked for which kind of query (design §5).

Trajectories (one embedding per query, with the tier that served it and the reward it earned)
go in; :meth:`ReasoningBank.extract_patterns` clusters the new ones with seeded spherical k-means
and merges each cluster into its nearest pattern when their cosine is at least
``merge_threshold`` (exact combination of centroid and reward statistics), so repeated traffic
does not grow memory.
Patterns are searchable by cosine similarity, carry per-tier reward statistics, and yield
statistically tested :class:`Verdict` s. A memory graph links patterns retrieved and used together
and can expand search hits by personalized PageRank. The whole bank saves to one checksummed file.

Example::

    bank = ReasoningBank(dim=256, seed=0)
    tid = bank.add_trajectory(embedding, tier=1)        # reward arrives later
    bank.set_reward(tid, 0.9, source="explicit")
    bank.extract_patterns()                             # loop B, may run on a background thread
    hits = bank.search(query, k=5)

Every method validates its input first and raises a :class:`~sona.errors.SonaError` subclass
(dimension, NaN/Inf, range, unknown id, corrupted file), leaving the bank unchanged.

:class:`ReasoningBank` is the Rust extension's own class (``crates/sona-py/src/reasoning.rs``:
signature, defaults and docstrings are written there once; ``sona/_sona.pyi`` types it). Its
results are the frozen dataclasses below, built by this module's converters from the JSON records
the binding hands over. Embeddings are any array-like (converted once to C-contiguous float32);
constructor sizes must be ``int`` and settings real numbers (anything else raises
:class:`~sona.errors.ConfigError`, as does an unknown keyword); method ints (ids, tiers, counts,
timestamps) must be ``int`` and rewards real numbers (else :class:`~sona.errors.InvalidInputError`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sona._sona import ReasoningBank
from sona._validate import F32Array
from sona.errors import InvalidInputError
from sona.index import VectorIndex

__all__ = [
    "ArmStats",
    "BankStats",
    "ExtractReport",
    "Pattern",
    "ReasoningBank",
    "SearchHit",
    "VectorIndex",
    "Verdict",
]

RewardSource = Literal["explicit", "implicit", "judge"]


@dataclass(frozen=True)
class ArmStats:
    """Reward statistics of one tier on one pattern (Welford: count, mean, sum of squared
    deviations)."""

    count: int
    mean: float
    m2: float

    @property
    def variance(self) -> float:
        """Unbiased sample variance (0 with fewer than two observations)."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0


@dataclass(frozen=True)
class Pattern:
    """A cluster of similar trajectories and what worked for them (design §2).

    ``resultant`` is the mean resultant length ‖Σx‖/support of the member embeddings; together with
    ``support`` it makes merging two patterns' centroids exact.
    """

    id: int
    level: int
    centroid: F32Array
    support: int
    arms: tuple[ArmStats, ...]
    avg_reward: float
    created_ms: int = 0
    updated_ms: int = 0
    last_access_ms: int = 0
    access_count: int = 0
    exemplars: tuple[int, ...] = ()
    payload: bytes | None = None
    resultant: float = 1.0
    rewards: ArmStats | None = field(default=None, repr=False)

    def _record(self) -> dict[str, Any]:
        rec = {k: v for k, v in asdict(self).items() if k != "centroid"}
        rec["arms"] = [asdict(a) for a in self.arms]
        rec["exemplars"] = list(self.exemplars)
        rec["payload"] = None if self.payload is None else list(self.payload)
        rec["rewards"] = None if self.rewards is None else asdict(self.rewards)
        return rec


@dataclass(frozen=True)
class SearchHit:
    """One search result: the pattern, its cosine to the query, and its graph score."""

    pattern: Pattern
    similarity: float
    ppr: float = 0.0
    expanded: bool = False


@dataclass(frozen=True)
class Verdict:
    """A tier that serves a pattern significantly better than the default tier (Welch + Holm)."""

    pattern_id: int
    recommended_tier: int
    confidence: float
    p_value: float
    support: int
    improvement: float
    params: tuple[float, ...] = ()


@dataclass(frozen=True)
class ExtractReport:
    """What one extraction did: ``cluster_ms`` ran without locks, ``apply_ms`` under the write
    lock."""

    trajectories: int
    clusters: int
    merged: int
    created: int
    iterations: int
    patterns: int
    cluster_ms: float
    apply_ms: float


@dataclass(frozen=True)
class BankStats:
    """Counters and memory use of a bank."""

    patterns: int
    level_sizes: tuple[int, ...]
    buffered: int
    buffer_capacity: int
    dropped: int
    reservoir: int
    reservoir_seen: int
    pending: int
    expired: int
    completed: int
    next_trajectory_id: int
    next_pattern_id: int
    extractions: int
    graph_nodes: int
    graph_edges: int
    trajectory_bytes: int
    stored_trajectories: int
    pattern_bytes: int
    level_bytes: int
    graph_bytes: int


# The converters below build the results of the binding's `ReasoningBank` (it calls them by name:
# `results` in crates/sona-py/src/reasoning.rs) from the JSON records serde writes there.


def _arm(d: dict[str, Any]) -> ArmStats:
    return ArmStats(int(d["count"]), float(d["mean"]), float(d["m2"]))


def _patterns(records_json: str, centroids: F32Array) -> list[Pattern]:
    recs = json.loads(records_json)
    out = []
    for rec, c in zip(recs, centroids, strict=True):
        payload = rec.get("payload")
        rewards = rec.get("rewards")
        out.append(
            Pattern(
                id=int(rec["id"]),
                level=int(rec["level"]),
                centroid=c,
                support=int(rec["support"]),
                arms=tuple(_arm(a) for a in rec["arms"]),
                avg_reward=float(rec["avg_reward"]),
                created_ms=int(rec["created_ms"]),
                updated_ms=int(rec["updated_ms"]),
                last_access_ms=int(rec["last_access_ms"]),
                access_count=int(rec["access_count"]),
                exemplars=tuple(int(e) for e in rec["exemplars"]),
                payload=None if payload is None else bytes(payload),
                resultant=float(rec["resultant"]),
                rewards=None if rewards is None else _arm(rewards),
            )
        )
    return out


def _hits(hits_json: str, records_json: str, centroids: F32Array) -> list[SearchHit]:
    by_id = {p.id: p for p in _patterns(records_json, centroids)}
    return [
        SearchHit(by_id[h["id"]], float(h["similarity"]), float(h["ppr"]), bool(h["expanded"]))
        for h in json.loads(hits_json)
        if h["id"] in by_id
    ]


def _verdicts(verdicts_json: str) -> list[Verdict]:
    return [
        Verdict(
            pattern_id=v["pattern_id"],
            recommended_tier=v["recommended_tier"],
            confidence=v["confidence"],
            p_value=v["p_value"],
            support=v["support"],
            improvement=v["improvement"],
            params=tuple(v["params"]),
        )
        for v in json.loads(verdicts_json)
    ]


def _report(report_json: str) -> ExtractReport:
    return ExtractReport(**json.loads(report_json))


def _stats(stats_json: str) -> BankStats:
    s = json.loads(stats_json)
    s["level_sizes"] = tuple(s["level_sizes"])
    return BankStats(**s)


def _records(patterns: Iterable[Pattern], dim: int) -> tuple[str, npt.NDArray[Any]]:
    """``(records JSON, centroids)`` of patterns to import (``dim`` shapes an empty list)."""
    if not isinstance(patterns, Iterable):
        raise InvalidInputError(f"expected an iterable of Pattern, got {type(patterns).__name__}")
    pats = list(patterns)
    for p in pats:
        if not isinstance(p, Pattern):
            raise InvalidInputError(f"expected Pattern objects, got {type(p).__name__} {p!r:.80}")
    if not pats:
        return "[]", np.zeros((0, dim), dtype=np.float32)
    # A field of the wrong type (a hand-built or `dataclasses.replace`d Pattern) fails here, in
    # `json`/`asdict`/`np.stack`: it is the caller's input, not a bug, so it raises the documented
    # class (the bank checks the values themselves, all or nothing).
    try:
        cents = np.stack([np.asarray(p.centroid) for p in pats])
        return json.dumps([p._record() for p in pats], default=_plain, allow_nan=False), cents
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"malformed Pattern: {exc}") from exc


def _plain(value: object) -> object:
    """A numpy scalar as the Python number ``json`` writes; anything else is refused."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r:.60} is not a valid Pattern field value")
