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
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from os import PathLike
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sona import _sona
from sona._validate import F32Array, as_matrix, as_real, as_size, as_vector
from sona.errors import ConfigError, InvalidInputError, SonaError, UnknownIdError
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


_I64_MAX = (1 << 63) - 1


def _int(x: Any, name: str, *, big: type[SonaError] = InvalidInputError) -> int:
    """An int argument (not bool, float or str) that fits the binding's 64-bit signed integers;
    a larger one raises ``big``. Negative values pass through: the bank reports them itself."""
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        raise InvalidInputError(f"{name} must be an int, got {type(x).__name__} {x!r}")
    value = int(x)
    if value > _I64_MAX:
        raise big(f"{name} {value} is out of range")
    if value < -_I64_MAX - 1:
        raise InvalidInputError(f"{name} {value} is out of range")
    return value


def _id(x: Any, name: str) -> int:
    """An id argument: one no bank can have issued (≥ 2**63) is an UnknownIdError."""
    return _int(x, name, big=UnknownIdError)


def _k(x: Any) -> int:
    """A result count ≥ 1 (checked by the bank); beyond the binding's range it means "all"."""
    if isinstance(x, int | np.integer) and not isinstance(x, bool) and x > _I64_MAX:
        return _I64_MAX
    return _int(x, "k")


class ReasoningBank:
    """Trajectories in, curated searchable patterns out. Thread-safe; long calls release the GIL.

    Args:
        dim: embedding dimension.
        n_tiers: number of model tiers (arms per pattern).
        seed: seeds k-means and the replay reservoir (runs are reproducible).
        buffer_capacity: new completed trajectories kept for the next extraction; beyond it the
            oldest are dropped and counted (``stats().dropped``).
        reservoir_capacity: size of the uniform replay sample (Algorithm R).
        pending_capacity / pending_ttl_ms: trajectories awaiting a reward; the oldest are evicted
            beyond the capacity and expire after the TTL.
        merge_threshold: τ_merge, cosine at which a new cluster merges into an existing pattern.
        merge_slack: a cluster also merges into its nearest pattern P when their cosine is at least
            ρ_P − merge_slack, ρ_P being the mean cosine of P's own members to its centroid (the
            cluster lies within P). This keeps replayed outliers and sub-groups from forming new
            patterns; ``None`` keeps the plain τ_merge rule.
        max_clusters: most clusters one extraction produces (k-means starts from √(n/2)).
        min_cohesion: clusters whose members' mean cosine to their centroid (corrected for
            cluster size) is below this, or that are clearly a union of two groups, are split in two
            (bisecting k-means), so patterns follow the data's groups rather than k; ``None``
            disables the refinement.
        default_tier: the arm verdicts test every other arm against; ``alpha`` their level.
        graph_*, eta_plus, eta_minus, w_init, w_min: memory-graph bounds and update rates.
        index: ``"flat"`` (exact scan, the default: fastest below a few thousand patterns),
            ``"ivf"`` or ``"approx"`` (inverted lists, for large pattern sets), or ``"hnsw"``
            (graph; see :class:`sona.index.VectorIndex` for when each wins).
        ef_search: the HNSW candidate-list size (``index="hnsw"`` only): recall vs latency.
        **kwargs: further options of the Rust core (``kmeans_max_iter``, ``minibatch_threshold``,
            ``max_exemplars``).
    """

    def __init__(
        self,
        dim: int,
        n_tiers: int = 4,
        *,
        seed: int = 0,
        buffer_capacity: int = 100_000,
        reservoir_capacity: int = 10_000,
        pending_capacity: int = 100_000,
        pending_ttl_ms: int = 3_600_000,
        merge_threshold: float = 0.9,
        merge_slack: float | None = 0.1,
        max_clusters: int = 1024,
        min_cohesion: float | None = 0.75,
        default_tier: int = 0,
        alpha: float = 0.05,
        graph_max_nodes: int = 100_000,
        graph_max_edges: int = 1_000_000,
        eta_plus: float = 0.2,
        eta_minus: float = 0.1,
        w_init: float = 0.1,
        graph_decay: float = 0.01,
        w_min: float = 1e-3,
        index: Literal["flat", "ivf", "hnsw", "approx"] = "flat",
        ef_search: int | None = None,
        **kwargs: int,
    ) -> None:
        def size(x: Any, name: str) -> int:
            return as_size(x, name, 0, _I64_MAX)

        def real(x: Any, name: str) -> float:
            return as_real(x, name, ConfigError)

        known = {"kmeans_max_iter", "minibatch_threshold", "max_exemplars"}
        unknown = set(kwargs) - known
        if unknown:
            raise ConfigError(f"unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        self._bank = _sona.ReasoningBank(
            size(dim, "dim"),
            size(n_tiers, "n_tiers"),
            seed=as_size(seed, "seed"),
            buffer_capacity=size(buffer_capacity, "buffer_capacity"),
            reservoir_capacity=size(reservoir_capacity, "reservoir_capacity"),
            pending_capacity=size(pending_capacity, "pending_capacity"),
            pending_ttl_ms=size(pending_ttl_ms, "pending_ttl_ms"),
            merge_threshold=real(merge_threshold, "merge_threshold"),
            merge_slack=None if merge_slack is None else real(merge_slack, "merge_slack"),
            max_clusters=size(max_clusters, "max_clusters"),
            min_cohesion=None if min_cohesion is None else real(min_cohesion, "min_cohesion"),
            default_tier=size(default_tier, "default_tier"),
            alpha=real(alpha, "alpha"),
            graph_max_nodes=size(graph_max_nodes, "graph_max_nodes"),
            graph_max_edges=size(graph_max_edges, "graph_max_edges"),
            eta_plus=real(eta_plus, "eta_plus"),
            eta_minus=real(eta_minus, "eta_minus"),
            w_init=real(w_init, "w_init"),
            graph_decay=real(graph_decay, "graph_decay"),
            w_min=real(w_min, "w_min"),
            index=index,
            ef_search=None if ef_search is None else size(ef_search, "ef_search"),
            **{name: size(value, name) for name, value in kwargs.items()},
        )

    @classmethod
    def _wrap(cls, inner: _sona.ReasoningBank) -> ReasoningBank:
        self = cls.__new__(cls)
        self._bank = inner
        return self

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._bank.dim

    @property
    def index_kind(self) -> str:
        """``"flat"``, ``"ivf"`` or ``"hnsw"``: the pattern index this bank searches."""
        return self._bank.index_kind

    @property
    def n_tiers(self) -> int:
        """Number of tiers (arms per pattern)."""
        return self._bank.n_tiers

    def config(self) -> dict[str, Any]:
        """The full configuration."""
        cfg: dict[str, Any] = json.loads(self._bank.config())
        return cfg

    def __len__(self) -> int:
        """Number of concrete (level-0) patterns."""
        return len(self._bank)

    def __repr__(self) -> str:
        return f"ReasoningBank(dim={self.dim}, n_tiers={self.n_tiers}, patterns={len(self)})"

    # --- trajectories --------------------------------------------------------------------------

    def add_trajectory(
        self,
        embedding: Any,
        reward: float | None = None,
        tier: int | None = None,
        *,
        source: RewardSource = "explicit",
        ts_ms: int | None = None,
    ) -> int:
        """Record one trajectory; returns its global id (monotonic, never reused).

        ``embedding`` is the (adapted) query vector. With a ``reward`` in [0, 1] the trajectory is
        complete and waits for the next extraction; without one it is pending until
        :meth:`set_reward`. ``tier`` is the tier that served it (its arm gets the reward).
        """
        return self._bank.add_trajectory(
            as_vector(embedding, "embedding", self.dim),
            None if reward is None else as_real(reward, "reward"),
            None if tier is None else _int(tier, "tier"),
            source,
            None if ts_ms is None else _int(ts_ms, "ts_ms"),
        )

    def set_reward(
        self,
        trajectory_id: int,
        reward: float,
        *,
        source: RewardSource = "explicit",
        tier: int | None = None,
    ) -> None:
        """Complete a pending trajectory with its reward (UnknownIdError if unknown, expired or
        already rewarded)."""
        self._bank.set_reward(
            _id(trajectory_id, "trajectory_id"),
            as_real(reward, "reward"),
            source,
            None if tier is None else _int(tier, "tier"),
        )

    def expire_pending(self, now_ms: int | None = None) -> int:
        """Drop pending trajectories older than the TTL; returns how many."""
        return self._bank.expire_pending(None if now_ms is None else _int(now_ms, "now_ms"))

    def reservoir(self) -> tuple[npt.NDArray[np.uint64], F32Array, F32Array, npt.NDArray[np.int64]]:
        """The replay sample ``(ids, embeddings, rewards, tiers)``; tier −1 when none was
        recorded."""
        return self._bank.reservoir()

    # --- patterns ------------------------------------------------------------------------------

    def extract_patterns(self) -> ExtractReport:
        """Cluster the trajectories completed since the last call into patterns (loop B).

        Releases the GIL and holds no lock while clustering: searches and new trajectories proceed
        from other threads meanwhile.
        """
        return ExtractReport(**json.loads(self._bank.extract_patterns()))

    def search(self, vector: Any, k: int, *, expand: int = 0) -> list[SearchHit]:
        """The ``k`` patterns most similar to ``vector``, best first (all of them when ``k`` exceeds
        ``len(self)``, as in every ANN library; ``k < 1`` raises), plus up to ``expand`` more
        reached through the memory graph (personalized PageRank, restart 0.15)."""
        hits_json, recs, cents = self._bank.search_patterns(
            as_vector(vector, "vector", self.dim), _k(k), _int(expand, "expand")
        )
        by_id = {p.id: p for p in _patterns(recs, cents)}
        return [
            SearchHit(by_id[h["id"]], float(h["similarity"]), float(h["ppr"]), bool(h["expanded"]))
            for h in json.loads(hits_json)
            if h["id"] in by_id
        ]

    def search_ids(self, vector: Any, k: int) -> tuple[npt.NDArray[np.uint64], F32Array]:
        """Fast path of :meth:`search`: ``(ids, similarities)`` arrays only."""
        return self._bank.search(as_vector(vector, "vector", self.dim), _k(k))

    def search_level(
        self, vector: Any, k: int, level: int
    ) -> tuple[npt.NDArray[np.uint64], F32Array]:
        """Search within one hierarchy level (after :meth:`build_hierarchy`)."""
        return self._bank.search_level(
            as_vector(vector, "vector", self.dim), _k(k), _int(level, "level")
        )

    def patterns(self, level: int = 0) -> list[Pattern]:
        """All patterns of ``level`` (0 = concrete), ordered by id."""
        return _patterns(*self._bank.patterns(_int(level, "level")))

    def pattern(self, pattern_id: int) -> Pattern:
        """One concrete pattern (UnknownIdError if absent)."""
        return _patterns(*self._bank.pattern(_id(pattern_id, "pattern_id")))[0]

    def level_children(self, level: int) -> list[list[int]]:
        """For each pattern of ``level`` ≥ 1 (in :meth:`patterns` order), its member ids one
        level down."""
        return self._bank.level_children(_int(level, "level"))

    def record_feedback(self, pattern_id: int, tier: int, reward: float) -> None:
        """Loop-A feedback: ``tier`` earned ``reward`` ∈ [0, 1] on a query matching the pattern."""
        self._bank.record_feedback(
            _id(pattern_id, "pattern_id"), _int(tier, "tier"), as_real(reward, "reward")
        )

    def record_usage(self, retrieved: Iterable[int], used: Iterable[int]) -> None:
        """Loop-A graph update: patterns retrieved for one query and those actually used."""
        self._bank.record_usage(
            [_id(i, "retrieved id") for i in retrieved], [_id(i, "used id") for i in used]
        )

    def decay_graph(self) -> None:
        """Loop-B global decay of the memory-graph weights."""
        self._bank.decay_graph()

    def graph_edges(self) -> list[tuple[int, int, float]]:
        """Every memory-graph edge ``(a, b, weight)`` with ``a < b``."""
        return self._bank.graph_edges()

    def verdicts(self) -> list[Verdict]:
        """For each pattern where some tier beats the default tier (one-sided Welch t-test, Holm
        correction across tiers, family-wise level ``alpha``): the best such tier."""
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
            for v in json.loads(self._bank.verdicts())
        ]

    # --- maintenance ---------------------------------------------------------------------------

    def consolidate(self, threshold: float = 0.95) -> int:
        """Merge near-duplicate patterns transitively (union-find over cosine ≥ ``threshold``);
        returns how many patterns disappeared."""
        return self._bank.consolidate(as_real(threshold, "threshold"))

    def prune(
        self,
        min_support: int,
        min_reward: float,
        max_idle_ms: int,
        *,
        now_ms: int | None = None,
    ) -> list[int]:
        """Remove patterns with support < ``min_support`` AND avg reward < ``min_reward`` AND
        idle for more than ``max_idle_ms``; returns the removed ids."""
        return self._bank.prune(
            _int(min_support, "min_support"),
            as_real(min_reward, "min_reward"),
            _int(max_idle_ms, "max_idle_ms"),
            None if now_ms is None else _int(now_ms, "now_ms"),
        )

    def build_hierarchy(self, branching: int = 8, max_levels: int = 1) -> list[int]:
        """Rebuild the abstraction levels from scratch (level ℓ+1 = k-means over level-ℓ centroids,
        ⌈n/branching⌉ clusters); returns each level's size."""
        return self._bank.build_hierarchy(
            _int(branching, "branching"), _int(max_levels, "max_levels")
        )

    # --- export / persistence ------------------------------------------------------------------

    def export(self) -> list[Pattern]:
        """The concrete patterns, for :meth:`import_` into another bank."""
        return _patterns(*self._bank.export())

    def import_(self, patterns: Sequence[Pattern]) -> int:
        """Add exported patterns. A repeated or existing id, a wrong dimension or bad statistics
        fail the whole import (InvalidInputError / DimensionError) and leave the bank unchanged."""
        pats = list(patterns)
        if pats:
            cents = as_matrix(
                np.stack([np.asarray(p.centroid) for p in pats]), "centroids", self.dim
            )
        else:
            cents = np.zeros((0, self.dim), dtype=np.float32)
        return self._bank.import_(json.dumps([p._record() for p in pats]), cents)

    def save(self, path: str | PathLike[str]) -> None:
        """Write the whole bank (patterns, hierarchy, graph, statistics, buffers, id counters) to
        one versioned, CRC-checked file, atomically."""
        self._bank.save(path)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> ReasoningBank:
        """Read a bank written by :meth:`save` (CheckpointError if corrupted or of another kind)."""
        return cls._wrap(_sona.ReasoningBank.load(path))

    def stats(self) -> BankStats:
        """Counters (buffered, dropped, pending, expired, ...) and memory use."""
        s = json.loads(self._bank.stats())
        s["level_sizes"] = tuple(s["level_sizes"])
        return BankStats(**s)
