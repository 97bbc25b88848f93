"""Hardening of ``sona.reasoning.ReasoningBank`` (issue 9): ids near 2**64 on import, coercion of
sizes, ids and numbers, ``k`` above the pattern count, two threads on one bank above every size
threshold, and numpy inputs written by another thread during a call."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from conftest import scribbling, write_while_reading
from sona.errors import ConfigError, InvalidInputError, SonaError, UnknownIdError
from sona.reasoning import ReasoningBank

D = 16


def _blobs(rng: np.random.Generator, n: int, groups: int, dim: int = D) -> np.ndarray:
    centres = rng.standard_normal((groups, dim))
    x = centres[np.arange(n) % groups] + 0.2 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def bank(rng: np.random.Generator) -> ReasoningBank:
    b = ReasoningBank(D, seed=3)
    for i, v in enumerate(_blobs(rng, 300, 5)):
        b.add_trajectory(v, 0.25 * (i % 5), i % 4)
    b.extract_patterns()
    return b


def test_import_refuses_ids_that_leave_the_counter_no_room(
    bank: ReasoningBank, tmp_path: Path
) -> None:
    exported = bank.export()
    for bad_id in (2**64 - 1, 2**64 - 2, 2**63):
        other = ReasoningBank(D)
        with pytest.raises(InvalidInputError, match="no room"):
            other.import_([dataclasses.replace(exported[0], id=bad_id)])
        assert len(other) == 0
    with pytest.raises(InvalidInputError):
        ReasoningBank(D).import_([dataclasses.replace(exported[0], id=2**64 + 5)])
    # Just below the largest accepted id there is room: new patterns get ids, the save loads.
    other = ReasoningBank(D)
    other.import_([dataclasses.replace(exported[0], id=2**63 - 2)])
    other.add_trajectory(-exported[0].centroid, 0.5, 0)
    other.extract_patterns()
    assert len(other) == 2
    other.save(tmp_path / "b.sona")
    back = ReasoningBank.load(tmp_path / "b.sona")
    assert [p.id for p in back.patterns()] == [p.id for p in other.patterns()]
    # At the largest accepted id the counter is at its limit (2**63): an extraction that needs a
    # new id fails cleanly, nothing changes, and the bank still saves a file that loads.
    full = ReasoningBank(D)
    full.import_([dataclasses.replace(exported[0], id=2**63 - 1)])
    full.add_trajectory(-exported[0].centroid, 0.5, 0)
    before = [(p.id, p.support) for p in full.patterns()]
    with pytest.raises(InvalidInputError, match="exhausted"):
        full.extract_patterns()
    assert [(p.id, p.support) for p in full.patterns()] == before
    full.save(tmp_path / "c.sona")
    assert len(ReasoningBank.load(tmp_path / "c.sona")) == 1


@pytest.mark.parametrize(
    "args",
    [
        {"dim": 1.5},
        {"dim": "8"},
        {"dim": 2**40},
        {"dim": 2**70},
        {"dim": D, "buffer_capacity": 2**62},
        {"dim": D, "reservoir_capacity": 2**70},
        {"dim": D, "pending_capacity": 8.0},
        {"dim": D, "max_clusters": 2**40},
        {"dim": D, "seed": -1},
        {"dim": D, "merge_threshold": "0.9"},
        {"dim": D, "alpha": True},
        {"dim": D, "ef_search": 2**70, "index": "hnsw"},
        {"dim": D, "kmeans_max_iter": "8"},
        {"dim": D, "not_an_option": 3},
    ],
)
def test_constructor_arguments_of_the_wrong_kind_or_range_raise_config_errors(
    args: dict[str, object],
) -> None:
    with pytest.raises(ConfigError):
        ReasoningBank(**args)  # type: ignore[arg-type]


def test_ids_numbers_and_counts_refuse_strings_floats_and_huge_ints(bank: ReasoningBank) -> None:
    v = bank.patterns()[0].centroid
    before = bank.stats()
    with pytest.raises(InvalidInputError):
        bank.add_trajectory(v, "0.5")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        bank.add_trajectory(v, 0.5, tier=2**70)
    with pytest.raises(InvalidInputError):
        bank.add_trajectory(v, 0.5, tier=1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        bank.add_trajectory(v, 0.5, ts_ms=2**64)
    with pytest.raises(UnknownIdError):
        bank.set_reward(2**70, 0.5)
    with pytest.raises(UnknownIdError):
        bank.record_feedback(2**64, 0, 0.5)
    with pytest.raises(UnknownIdError):
        bank.pattern(2**64 + 1)
    with pytest.raises(InvalidInputError):
        bank.record_feedback(bank.patterns()[0].id, 0, "1")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        bank.consolidate("0.9")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        bank.search(v, 2.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        bank.search(v, "3")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        bank.build_hierarchy(2**70)
    assert bank.stats() == before


def test_k_above_the_pattern_count_returns_every_pattern(bank: ReasoningBank) -> None:
    n = len(bank)
    v = bank.patterns()[0].centroid
    for k in (n, n + 1, 10**9, 2**63, 2**80):
        assert len(bank.search(v, k)) == n
        ids, sims = bank.search_ids(v, k)
        assert len(ids) == n and np.isfinite(sims).all()
    bank.build_hierarchy(2)
    assert len(bank.search_level(v, 10**6, 1)[0]) == len(bank.patterns(1))
    assert ReasoningBank(D).search(v, 5) == []
    with pytest.raises(InvalidInputError):
        bank.search(v, 0)


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_two_threads_on_one_bank_above_every_size_threshold(
    index: str, rng: np.random.Generator, tmp_path: Path
) -> None:
    # dim 256 (HNSW's sign-bit gate), mini-batch k-means above 200 trajectories, a buffer that
    # wraps (capacity 500 < 1,200 recorded), pending trajectories evicted beyond 64.
    dim = 256
    b = ReasoningBank(
        dim,
        seed=1,
        index=index,  # type: ignore[arg-type]
        buffer_capacity=500,
        pending_capacity=64,
        minibatch_threshold=200,
    )
    x = _blobs(rng, 1200, 12, dim)

    def write() -> None:
        for i, v in enumerate(x):
            if i % 7 == 0:
                b.set_reward(b.add_trajectory(v, tier=1), 0.75)
            else:
                b.add_trajectory(v, float(i % 2), i % 4)
            if i % 300 == 299:
                b.extract_patterns()
        b.consolidate(0.99)
        b.build_hierarchy(3)
        b.save(tmp_path / "bank.sona")

    def read() -> None:
        hits = b.search(x[3], 5, expand=2)
        if hits:
            b.record_feedback(hits[0].pattern.id, 2, 1.0)
            b.record_usage([h.pattern.id for h in hits], [hits[0].pattern.id])
        b.stats()
        b.verdicts()
        b.export()

    write_while_reading(write, read)
    assert 10 <= len(b) <= 40
    back = ReasoningBank.load(tmp_path / "bank.sona")
    assert back.index_kind == b.index_kind and len(back) >= 1


def test_an_embedding_written_by_another_thread_during_a_call_is_never_stored_bad(
    rng: np.random.Generator,
) -> None:
    # The binding copies each numpy input and validates the copy: a writer flipping the array
    # between a valid vector and NaN can make a call fail, never store a bad trajectory.
    dim = 4096
    b = ReasoningBank(dim, seed=2)
    shared = np.ascontiguousarray(_blobs(rng, 1, 1, dim)[0])
    failures = 0
    with scribbling(shared):
        for _ in range(400):
            try:
                b.add_trajectory(shared, 0.5, 0)
            except SonaError:
                failures += 1
    ids, vectors, _, _ = b.reservoir()
    assert len(ids) == 400 - failures
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    b.extract_patterns()
    assert all(np.isfinite(p.centroid).all() for p in b.patterns())


def test_the_class_is_the_extensions_own_with_the_core_defaults(rng: np.random.Generator) -> None:
    """One API surface (issue 13): ``sona.reasoning`` re-exports the Rust class, whose defaults
    are the core config's, whose results are this module's dataclasses, and whose arguments
    accept lists, float64 and numpy scalars."""
    from sona import _sona, reasoning

    cls = reasoning.ReasoningBank
    assert cls is _sona.ReasoningBank and cls.__module__ == "sona.reasoning"
    assert cls.__doc__ and "merge_threshold" in cls.__doc__
    assert cls.search.__doc__ and "best first" in cls.search.__doc__
    cfg = ReasoningBank(D).config()
    assert (cfg["buffer_capacity"], cfg["max_clusters"], cfg["max_exemplars"]) == (100_000, 1024, 4)
    assert cfg["merge_slack"] == pytest.approx(0.1) and cfg["min_cohesion"] == pytest.approx(0.75)
    assert cfg["graph"]["eta_plus"] == pytest.approx(0.2) and cfg["alpha"] == 0.05
    assert ReasoningBank(D).n_tiers == 4
    assert ReasoningBank(D, merge_slack=None, max_exemplars=2).config()["merge_slack"] is None
    b = ReasoningBank(D, seed=np.uint64(3))
    x = _blobs(rng, 40, 2)
    for i, v in enumerate(x):
        b.add_trajectory(v.tolist(), np.float64(0.5), np.int64(i % 2))
    assert isinstance(b.extract_patterns(), reasoning.ExtractReport)
    hits = b.search(x[0].astype(np.float64), np.int32(1))
    assert isinstance(hits[0], reasoning.SearchHit) and isinstance(
        hits[0].pattern, reasoning.Pattern
    )
    assert isinstance(b.stats(), reasoning.BankStats) and b.stats().patterns == len(b)
    b.record_usage((p.id for p in b.patterns()), {b.patterns()[0].id})  # any iterables
    with pytest.raises(TypeError):
        ReasoningBank(D, 4, 0)  # type: ignore[misc]  # the options are keyword-only
    with pytest.raises(ConfigError, match="not_an_option"):
        ReasoningBank(D, not_an_option=1)  # type: ignore[call-arg]
    before = b.stats()
    for bad in ([1], [b.patterns()[0], "p"], 5):
        with pytest.raises(InvalidInputError):
            b.import_(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        b.record_usage([b.patterns()[0].id, "1"], [])  # type: ignore[list-item]
    assert b.stats() == before


def test_huge_finite_embeddings_are_stored_finite(rng: np.random.Generator) -> None:
    """1e38 entries overflow a squared norm, not the direction: the trajectory and a search with
    it work, and nothing stored or returned is Inf."""
    b = ReasoningBank(D, seed=1)
    for v in _blobs(rng, 60, 3):
        b.add_trajectory(v, 0.5, 1)
    b.add_trajectory(np.full(D, 1e38, np.float32), 0.5, 1)
    b.extract_patterns()
    assert all(np.isfinite(p.centroid).all() for p in b.patterns())
    ids, sims = b.search_ids(np.full(D, 3.4e38, np.float32), 3)
    assert len(ids) == 3 and np.isfinite(sims).all()


def test_malformed_patterns_on_import_raise_invalid_input(bank: ReasoningBank) -> None:
    """Pattern fields of the wrong type (hand-built or `dataclasses.replace`d patterns) raise
    InvalidInputError, not a TypeError from json/asdict, and import nothing; numpy scalars in
    integer fields are plain numbers."""
    pats = bank.export()
    other = ReasoningBank(D)
    bad = [
        {"arms": None},
        {"arms": 5},
        {"rewards": "x"},
        {"exemplars": 7},
        {"payload": 3.5},
        {"avg_reward": np.ones(D)},
        {"support": object()},
        {"centroid": [[1.0], [2.0, 3.0]]},
    ]
    for change in bad:
        with pytest.raises(InvalidInputError):
            other.import_([pats[0], dataclasses.replace(pats[1], **change)])
        assert len(other) == 0
    p = dataclasses.replace(pats[0], support=np.int64(pats[0].support))
    assert other.import_([p]) == 1 and other.pattern(p.id).support == pats[0].support


def test_wrong_kinds_of_argument_raise_documented_errors(
    bank: ReasoningBank, tmp_path: Path
) -> None:
    """A non-str index kind is a ConfigError; a non-str reward source, a non-iterable id list
    and a non-path path are InvalidInputErrors (not bare TypeErrors); the bank is unchanged."""
    with pytest.raises(ConfigError, match="expected a str"):
        ReasoningBank(D, index=None)  # type: ignore[arg-type]
    before = bank.stats()
    v = np.ones(D, np.float32)
    for src in (None, 1, b"explicit"):
        with pytest.raises(InvalidInputError, match="expected a str"):
            bank.add_trajectory(v, 0.5, 1, source=src)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="expected a str"):
            bank.set_reward(0, 0.5, source=src)  # type: ignore[arg-type]
    pid = bank.patterns()[0].id
    for bad in (None, 5):
        with pytest.raises(InvalidInputError, match="iterable of pattern ids"):
            bank.record_usage(bad, [pid])  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="iterable of pattern ids"):
            bank.record_usage([pid], bad)  # type: ignore[arg-type]
    for bad in (None, 3):
        with pytest.raises(InvalidInputError, match="expected a path"):
            bank.save(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="expected a path"):
            ReasoningBank.load(bad)  # type: ignore[arg-type]
    assert bank.stats() == before
    bank.save(str(tmp_path / "b.rb").encode())  # type: ignore[arg-type]
    assert len(ReasoningBank.load(tmp_path / "b.rb")) == len(bank)
