"""ReasoningBank from Python: extraction, search, statistics, maintenance, persistence, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import sona.reasoning as reasoning
from sona.errors import (
    CheckpointError,
    ConfigError,
    DimensionError,
    InvalidInputError,
    NonFiniteError,
    SonaError,
    UnknownIdError,
)
from sona.reasoning import Pattern, ReasoningBank

D = 32


def blobs(
    rng: np.random.Generator, n: int, c: int, d: int = D, noise: float = 0.4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` unit vectors around ``c`` random unit centres (cosine ≈ 0.93 to their centre)."""
    centres = rng.standard_normal((c, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.arange(n) % c
    x = centres[labels] + rng.standard_normal((n, d)).astype(np.float32) * noise / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels, centres


def feed(bank: ReasoningBank, x: np.ndarray, labels: np.ndarray, best_tier: np.ndarray) -> None:
    """Tier ``i % 4`` serves row ``i``; the cluster's best tier earns ~0.9, the others ~0.3."""
    for i, (v, lab) in enumerate(zip(x, labels, strict=True)):
        tier = ((i * 2654435761) >> 7) % 4  # a hash: independent of the round-robin labels
        reward = 0.9 if tier == best_tier[lab] else 0.3
        reward += 0.05 * ((i % 5) - 2) / 2
        bank.add_trajectory(v, reward, tier)


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return blobs(rng, 1200, 8)


@pytest.fixture
def bank(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> ReasoningBank:
    x, labels, _ = data
    b = ReasoningBank(D, seed=3)
    feed(b, x, labels, np.arange(8) % 4)
    b.extract_patterns()
    return b


def snapshot(bank: ReasoningBank) -> tuple[object, ...]:
    """Everything a failed call must leave unchanged."""
    s = bank.stats()
    pats = [(p.id, p.support, p.arms, p.avg_reward, p.centroid.tobytes()) for p in bank.patterns()]
    return (
        s.patterns,
        s.buffered,
        s.pending,
        s.next_trajectory_id,
        s.next_pattern_id,
        tuple(pats),
        tuple(bank.graph_edges()),
    )


def test_extraction_recovers_clusters_and_search_finds_them(
    bank: ReasoningBank, data: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    x, _labels, centres = data
    assert 8 <= len(bank) <= 10
    pats = bank.patterns()
    assert sum(p.support for p in pats) == 1200
    assert all(isinstance(p, Pattern) and p.centroid.shape == (D,) for p in pats)
    assert all(abs(float(np.linalg.norm(p.centroid)) - 1) < 1e-5 for p in pats)
    for c in centres:
        hits = bank.search(c, 3)
        assert len(hits) == 3
        sims = [h.similarity for h in hits]
        assert sims == sorted(sims, reverse=True)
        assert sims[0] > 0.98
        ids, s = bank.search_ids(c, 3)
        assert ids.dtype == np.uint64 and list(ids) == [h.pattern.id for h in hits]
        np.testing.assert_allclose(s, sims, rtol=1e-6)
    # search counts as an access
    assert sum(p.access_count for p in bank.patterns()) == 8 * 3 * 2
    assert np.isclose(bank.search(x[0].astype(np.float64), 1)[0].similarity, 1, atol=0.1)


def test_replaying_the_same_traffic_does_not_grow_patterns(
    bank: ReasoningBank, data: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    x, labels, _ = data
    n = len(bank)
    for _ in range(3):
        feed(bank, x, labels, np.arange(8) % 4)
        report = bank.extract_patterns()
        assert report.trajectories == 1200
        assert report.created == 0
        assert len(bank) == n
    assert sum(p.support for p in bank.patterns()) == 4 * 1200


def test_without_merging_replay_would_grow(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """The baseline: with merging disabled (τ = 1) every extraction adds patterns."""
    x, labels, _ = data
    b = ReasoningBank(D, seed=3, merge_threshold=1.0, merge_slack=None)
    feed(b, x, labels, np.arange(8) % 4)
    b.extract_patterns()
    n = len(b)
    feed(b, x, labels, np.arange(8) % 4)
    b.extract_patterns()
    assert len(b) > n


def test_pending_trajectories_complete_or_expire(rng: np.random.Generator) -> None:
    b = ReasoningBank(D, pending_capacity=3, pending_ttl_ms=1000)
    v = rng.standard_normal(D).astype(np.float32)
    ids = [b.add_trajectory(v, tier=1, ts_ms=t) for t in (0, 10, 20, 30)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    s = b.stats()
    assert (s.pending, s.expired, s.buffered) == (3, 1, 0)
    with pytest.raises(UnknownIdError):
        b.set_reward(ids[0], 0.5)  # evicted (capacity 3)
    b.set_reward(ids[1], 0.7, source="judge")
    with pytest.raises(UnknownIdError):
        b.set_reward(ids[1], 0.7)  # already rewarded
    assert b.stats().buffered == 1
    assert b.expire_pending(now_ms=1021) == 1  # ts 20 (ts 30 is 991 ms old)
    assert b.expire_pending(now_ms=1031) == 1
    assert b.stats().pending == 0
    with pytest.raises(UnknownIdError):
        b.set_reward(ids[3], 0.5)
    with pytest.raises(UnknownIdError):
        b.set_reward(10**6, 0.5)


def test_buffer_drops_oldest_and_counts(rng: np.random.Generator) -> None:
    b = ReasoningBank(D, buffer_capacity=10, reservoir_capacity=4, seed=1)
    x = rng.standard_normal((15, D)).astype(np.float32)
    ids = [b.add_trajectory(v, 0.5) for v in x]
    s = b.stats()
    assert (s.buffered, s.dropped, s.completed, s.reservoir, s.reservoir_seen) == (10, 5, 15, 4, 15)
    rids, rx, rr, rt = b.reservoir()
    assert rx.shape == (4, D) and set(rids.tolist()) <= set(ids)
    assert np.all(rr == 0.5) and np.all(rt == -1)
    assert b.extract_patterns().trajectories == 10  # the 10 newest
    assert b.extract_patterns().trajectories == 0


def test_verdicts_route_better_than_the_default_tier(rng: np.random.Generator) -> None:
    x, labels, _ = blobs(rng, 2300, 6)
    best = np.array([1, 2, 3, 1, 2, 3])  # never the default tier 0
    b = ReasoningBank(D, seed=5)
    feed(b, x[:2000], labels[:2000], best)
    b.extract_patterns()
    verdicts = {v.pattern_id: v for v in b.verdicts()}
    assert len(verdicts) >= 6
    assert all(v.p_value <= 0.05 and v.improvement > 0.4 for v in verdicts.values())
    # Route the 300 held-out queries by the verdict of their nearest pattern, against the baseline
    # that always uses the default tier.
    routed = default = 0.0
    for v, lab in zip(x[2000:], labels[2000:], strict=True):
        pid = int(b.search_ids(v, 1)[0][0])
        tier = verdicts[pid].recommended_tier if pid in verdicts else 0
        routed += 0.9 if tier == best[lab] else 0.3
        default += 0.9 if best[lab] == 0 else 0.3
    assert routed / 300 > 0.85 > 0.35 > default / 300


def test_no_verdict_without_a_real_difference(rng: np.random.Generator) -> None:
    x, _, _ = blobs(rng, 800, 4)
    b = ReasoningBank(D, seed=5)
    for i, v in enumerate(x):
        b.add_trajectory(v, float(rng.uniform()), i % 4)
    b.extract_patterns()
    assert len(b.verdicts()) == 0


def test_record_feedback_updates_arms(bank: ReasoningBank) -> None:
    p = bank.patterns()[0]
    before = p.arms[3]
    bank.record_feedback(p.id, 3, 1.0)
    after = bank.pattern(p.id).arms[3]
    assert after.count == before.count + 1
    assert np.isclose(after.mean, (before.mean * before.count + 1.0) / after.count)
    snap = snapshot(bank)
    with pytest.raises(InvalidInputError):
        bank.record_feedback(p.id, 4, 0.5)
    with pytest.raises(InvalidInputError):
        bank.record_feedback(p.id, -1, 0.5)
    with pytest.raises(InvalidInputError):
        bank.record_feedback(p.id, 0, 1.5)
    with pytest.raises(InvalidInputError):
        bank.record_feedback(p.id, 0, float("nan"))
    with pytest.raises(UnknownIdError):
        bank.record_feedback(10**9, 0, 0.5)
    with pytest.raises(UnknownIdError):
        bank.pattern(10**9)
    assert snapshot(bank) == snap


def test_memory_graph_updates_and_expands_search(bank: ReasoningBank) -> None:
    ids = [p.id for p in bank.patterns()]
    a, b_, c = ids[:3]
    for _ in range(3):
        bank.record_usage([a, b_, c], [a, b_])
    edges = {(e[0], e[1]): e[2] for e in bank.graph_edges()}
    assert (min(a, b_), max(a, b_)) in edges
    assert all(0 < w <= 1 for w in edges.values())
    w_ab = edges[(min(a, b_), max(a, b_))]
    assert np.isclose(w_ab, 0.1 * 1.2 * 1.2, rtol=1e-5)
    bank.decay_graph()
    w2 = {(e[0], e[1]): e[2] for e in bank.graph_edges()}[(min(a, b_), max(a, b_))]
    assert np.isclose(w2, w_ab * 0.99, rtol=1e-5)
    # Search from a's centroid with k=1 can reach b through the graph.
    hits = bank.search(bank.pattern(a).centroid, 1, expand=2)
    assert hits[0].pattern.id == a and not hits[0].expanded
    assert b_ in [h.pattern.id for h in hits if h.expanded]
    snap = snapshot(bank)
    with pytest.raises(UnknownIdError):
        bank.record_usage([a, 10**9], [a])
    assert snapshot(bank) == snap


def test_graph_is_bounded(rng: np.random.Generator) -> None:
    x, labels, _ = blobs(rng, 600, 30, noise=0.2)
    b = ReasoningBank(D, seed=2, graph_max_edges=20, graph_max_nodes=10)
    feed(b, x, labels, np.zeros(30, dtype=int))
    b.extract_patterns()
    ids = [p.id for p in b.patterns()]
    for i in range(0, len(ids) - 3, 2):
        b.record_usage(ids[i : i + 4], ids[i : i + 2])
    assert len(b.graph_edges()) <= 20
    assert len({n for e in b.graph_edges() for n in e[:2]}) <= 10
    assert b.stats().graph_edges == len(b.graph_edges())


def test_consolidate_prune_and_hierarchy(
    bank: ReasoningBank, data: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    n = len(bank)
    total = sum(p.support for p in bank.patterns())
    assert bank.consolidate(-1.0) == n - 1  # everything is "near" at threshold -1
    (only,) = bank.patterns()
    assert only.support == total
    x, labels, _ = data
    b = ReasoningBank(D, seed=3)
    feed(b, x, labels, np.arange(8) % 4)
    b.extract_patterns()
    sizes = b.build_hierarchy(branching=3, max_levels=2)
    assert sizes[0] == len(b.patterns(1)) and 2 <= sizes[0] <= 4
    kids = b.level_children(1)
    assert sorted(i for k in kids for i in k) == [p.id for p in b.patterns()]
    assert sum(p.support for p in b.patterns(1)) == 1200
    assert b.search_level(x[0], 1, 1)[0].shape == (1,)
    with pytest.raises(InvalidInputError):
        b.patterns(7)
    # prune: nothing is stale now; far in the future, small and poor patterns go.
    assert b.prune(10**6, 1.0, 10**9) == []
    gone = b.prune(10**6, 1.0, 1000, now_ms=2**62)
    assert len(gone) == sizes[0] * 0 + len(gone) and len(b) == 0
    # An empty bank has no hits: k above the pattern count returns them all (none).
    assert b.search(x[0], 1) == []


def test_export_import_and_duplicate_ids(bank: ReasoningBank) -> None:
    exported = bank.export()
    other = ReasoningBank(D)
    assert other.import_(exported) == len(exported)
    for p, q in zip(bank.patterns(), other.patterns(), strict=True):
        assert (p.id, p.support, p.exemplars) == (q.id, q.support, q.exemplars)
        # Statistics travel as JSON: equal up to the last bit of a float64.
        np.testing.assert_allclose(
            [(a.count, a.mean, a.m2) for a in p.arms], [(a.count, a.mean, a.m2) for a in q.arms]
        )
        np.testing.assert_array_equal(p.centroid, q.centroid)
    snap = snapshot(other)
    with pytest.raises(InvalidInputError, match="duplicate"):
        other.import_(exported[:1])
    third = ReasoningBank(D)
    with pytest.raises(InvalidInputError, match="duplicate"):
        third.import_([exported[0], exported[1], exported[0]])
    assert len(third) == 0
    with pytest.raises(DimensionError):
        ReasoningBank(D + 1).import_(exported)
    assert snapshot(other) == snap


def test_save_load_roundtrip_and_ids_continue(
    bank: ReasoningBank, tmp_path: Path, rng: np.random.Generator
) -> None:
    v = rng.standard_normal(D).astype(np.float32)
    pending = bank.add_trajectory(v, tier=2)
    bank.add_trajectory(v, 0.5, 1)
    ids = [p.id for p in bank.patterns()]
    bank.record_usage(ids[:2], ids[:2])
    bank.build_hierarchy(3)
    path = tmp_path / "bank.sona"
    bank.save(path)
    back = ReasoningBank.load(str(path))
    assert snapshot(back) == snapshot(bank)
    assert back.stats().level_sizes == bank.stats().level_sizes
    np.testing.assert_array_equal(back.reservoir()[1], bank.reservoir()[1])
    assert back.config() == bank.config()
    back.set_reward(pending, 0.8)
    new_id = back.add_trajectory(v, 0.5)
    assert new_id > pending
    assert back.extract_patterns().trajectories == 2 + 1 - 0  # the buffered one, pending, new


def test_corrupted_or_foreign_files_raise(bank: ReasoningBank, tmp_path: Path) -> None:
    path = tmp_path / "bank.sona"
    bank.save(path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "flipped.sona"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        ReasoningBank.load(bad)
    short = tmp_path / "short.sona"
    short.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        ReasoningBank.load(short)
    with pytest.raises(CheckpointError):
        ReasoningBank.load(tmp_path / "missing.sona")


def test_bad_input_raises_and_leaves_bank_unchanged(bank: ReasoningBank) -> None:
    snap = snapshot(bank)
    good = np.ones(D, dtype=np.float32)
    nan = good.copy()
    nan[3] = np.nan
    inf = good.copy()
    inf[0] = np.inf
    with pytest.raises(DimensionError):
        bank.add_trajectory(np.ones(D - 1), 0.5)
    with pytest.raises(DimensionError):
        bank.add_trajectory(np.ones((2, D)), 0.5)
    with pytest.raises(NonFiniteError):
        bank.add_trajectory(nan, 0.5)
    with pytest.raises(NonFiniteError):
        bank.add_trajectory(inf, 0.5)
    with pytest.raises(InvalidInputError):
        bank.add_trajectory(np.zeros(D), 0.5)
    for r in (-0.1, 1.01, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError):
            bank.add_trajectory(good, r)
    with pytest.raises(InvalidInputError):
        bank.add_trajectory(good, 0.5, tier=4)
    with pytest.raises(InvalidInputError):
        bank.add_trajectory(good, 0.5, source="self-confidence")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        bank.add_trajectory(good, "high")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        bank.search(good, 0)
    assert len(bank.search(good, len(bank) + 1)) == len(bank)  # fewer hits, not an error
    with pytest.raises(InvalidInputError):
        bank.search(good, -1)
    with pytest.raises(InvalidInputError):
        bank.search(good, 1.5)  # type: ignore[arg-type]
    with pytest.raises(DimensionError):
        bank.search(np.ones(D + 1), 1)
    with pytest.raises(NonFiniteError):
        bank.search(nan, 1)
    with pytest.raises(InvalidInputError):
        bank.set_reward(1, 2.0)
    with pytest.raises(InvalidInputError):
        bank.consolidate(1.5)
    with pytest.raises(InvalidInputError):
        bank.build_hierarchy(1)
    with pytest.raises(InvalidInputError):
        bank.prune(1, 2.0, 0)
    assert snapshot(bank) == snap
    # every one of those is a SonaError, and DimensionError is also a ValueError
    assert issubclass(DimensionError, SonaError) and issubclass(DimensionError, ValueError)


def test_bad_configuration_raises() -> None:
    for kwargs in (
        {"dim": 0},
        {"dim": D, "n_tiers": 0},
        {"dim": D, "default_tier": 4},
        {"dim": D, "merge_threshold": 2.0},
        {"dim": D, "alpha": -0.1},
        {"dim": D, "buffer_capacity": 0},
        {"dim": D, "eta_minus": 1.5},
        {"dim": D, "graph_max_edges": 0},
        {"dim": D, "merge_slack": float("nan")},
        {"dim": D, "min_cohesion": 1.5},
        {"dim": D, "eta_plus": float("inf")},
    ):
        with pytest.raises(ConfigError):
            ReasoningBank(**kwargs)  # type: ignore[arg-type]


def test_searches_proceed_while_extraction_runs(rng: np.random.Generator) -> None:
    x, _, _ = blobs(rng, 20_000, 20, d=64)
    b = ReasoningBank(64, seed=1)
    for v in x[:500]:
        b.add_trajectory(v, 0.5, 0)
    b.extract_patterns()
    for v in x:
        b.add_trajectory(v, 0.5, 1)
    done = threading.Event()
    result: list[reasoning.ExtractReport] = []

    def work() -> None:
        result.append(b.extract_patterns())
        done.set()

    t = threading.Thread(target=work)
    t.start()
    searched = 0
    while not done.is_set() and searched < 100_000:
        assert len(b.search_ids(x[searched % 100], 3)[0]) == 3
        searched += 1
    t.join()
    assert result[0].trajectories == 20_000
    assert len(b) >= 20


def test_vector_index_is_reexported() -> None:
    assert hasattr(reasoning, "VectorIndex")


def test_bank_over_the_approximate_index_finds_the_same_patterns() -> None:
    """index="ivf" ("approx") and "hnsw" swap in an approximate index; on well-separated groups each
    returns what the exact bank does, and the choice survives save/load."""
    import tempfile

    rng = np.random.default_rng(5)
    dim, groups = 32, 12
    centres = rng.standard_normal((groups, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    kinds = ("flat", "approx", "hnsw")
    banks = {kind: ReasoningBank(dim, seed=1, index=kind) for kind in kinds}  # type: ignore[arg-type]
    for i in range(600):
        x = centres[i % groups] + 0.05 * rng.standard_normal(dim).astype(np.float32)
        for bank in banks.values():
            bank.add_trajectory(x, reward=0.5, tier=0)
    for bank in banks.values():
        bank.extract_patterns()
    assert [banks[k].index_kind for k in kinds] == ["flat", "ivf", "hnsw"]
    for kind in kinds[1:]:
        assert len(banks[kind].patterns()) == len(banks["flat"].patterns())
        for c in centres:
            top_flat = banks["flat"].search(c, k=1)[0]
            top_approx = banks[kind].search(c, k=1)[0]
            np.testing.assert_allclose(top_flat.similarity, top_approx.similarity, atol=1e-5)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bank.sona"
            banks[kind].save(path)
            assert ReasoningBank.load(path).index_kind == banks[kind].index_kind
    with pytest.raises(ConfigError):
        ReasoningBank(dim, index="bogus")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ReasoningBank(dim, index="ivf", ef_search=10)
    with pytest.raises(ConfigError):
        ReasoningBank(dim, index="flat", ef_search=10)
