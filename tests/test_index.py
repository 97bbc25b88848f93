"""sona.index.VectorIndex: exact and approximate search, updates, filters, persistence, errors."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from sona.errors import (
    CheckpointError,
    ConfigError,
    DimensionError,
    InvalidInputError,
    NonFiniteError,
    SonaError,
    UnknownIdError,
)
from sona.evals.search import clustered, draw, recall_at_k
from sona.index import VectorIndex

KINDS = ["flat", "ivf", "hnsw"]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x, centres = clustered(2000, 32, 20, rng)
    return x, centres


def filled(kind: str, x: np.ndarray, **kw: int) -> VectorIndex:
    index = VectorIndex(x.shape[1], kind, **kw)
    index.add(np.arange(len(x)) * 3 + 1, x)
    return index


@pytest.mark.parametrize("kind", KINDS)
def test_search_returns_exact_cosines_best_first(kind: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((300, 16)).astype(np.float32) * 5  # not unit: normalised on insert
    index = filled(kind, x)
    q = rng.standard_normal(16)  # float64 is converted
    ids, sims = index.search(q, 10)
    assert ids.dtype == np.uint64 and sims.dtype == np.float32
    cos = unit(x) @ unit(q)
    best = np.argsort(-cos)[:10]
    np.testing.assert_array_equal(ids, best * 3 + 1)
    np.testing.assert_allclose(sims, cos[best], atol=1e-5)
    assert len(index) == 300 and 4 in index and 5 not in index and -1 not in index
    np.testing.assert_allclose(index.get(4), unit(x[1]), atol=1e-6)
    assert sorted(index.ids().tolist()) == (np.arange(300) * 3 + 1).tolist()


def test_hnsw_recall_against_flat_on_clustered_data(
    data: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> None:
    x, centres = data
    flat, approx = filled("flat", x), filled("hnsw", x)
    qs = draw(centres, 200, rng)
    truth, _ = flat.search_batch(qs, 10)
    got, sims = approx.search_batch(qs, 10)
    good = recall_at_k(got, truth)
    assert good >= 0.95
    assert np.all(np.diff(sims, axis=1) <= 1e-6), "rows are sorted best first"
    assert approx.nprobe is None
    approx.ef_search = 1
    assert approx.ef_search == 1
    worse = recall_at_k(approx.search_batch(qs, 10)[0], truth)
    assert worse < good, "a smaller candidate list must lose recall on this data"


def test_ivf_recall_against_flat_and_nprobe_on_weakly_clustered_data(
    data: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> None:
    x, centres = data
    flat, ivf = filled("flat", x), filled("approx", x)
    assert ivf.kind == "ivf" and ivf.nprobe == 16 and ivf.ef_search is None
    qs = draw(centres, 200, rng)
    truth, _ = flat.search_batch(qs, 10)
    got, sims = ivf.search_batch(qs, 10)
    assert recall_at_k(got, truth) >= 0.95
    assert np.all(np.diff(sims, axis=1) <= 1e-6), "rows are sorted best first"
    # Weak clusters: the neighbours spread over many lists, so one list is not enough.
    wx, wc = clustered(3000, 32, 30, rng, spread=2.5)
    wflat, wivf = filled("flat", wx), filled("ivf", wx)
    wq = draw(wc, 200, rng, spread=2.5)
    wtruth, _ = wflat.search_batch(wq, 10)
    wivf.nprobe = 1
    one = recall_at_k(wivf.search_batch(wq, 10)[0], wtruth)
    wivf.nprobe = 64
    many = recall_at_k(wivf.search_batch(wq, 10)[0], wtruth)
    assert one < 0.9 and many > one + 0.05, (one, many)


@pytest.mark.parametrize("kind", KINDS)
def test_insert_is_visible_and_removed_ids_never_return(
    kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = data
    index = filled(kind, x)
    q = -x[7]
    index.add([10**12], q[None, :])
    ids, sims = index.search(q, 1)
    assert ids[0] == 10**12 and sims[0] == pytest.approx(1.0, abs=1e-5)
    near, _ = index.search(x[0], 50)
    index.remove(near)
    ids, _ = index.search(x[0], 10)
    assert len(ids) == 10 and not set(ids.tolist()) & set(near.tolist())
    assert len(index) == 2000 + 1 - 50
    index.add(near[:1], x[:1])  # an id can be reused after removal
    assert index.search(x[0], 1)[0][0] == near[0]


@pytest.mark.parametrize("kind", KINDS)
def test_filter_by_ids_or_callable(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    index = filled(kind, x)
    flat = filled("flat", x)
    allowed = np.arange(1, 6000, 6, dtype=np.uint64)  # every other stored id
    ids, _ = index.search(x[3], 10, filter=allowed)
    assert len(ids) == 10 and set(ids.tolist()) <= set(allowed.tolist())
    exact, _ = flat.search(x[3], 10, filter=allowed)
    assert len(set(ids.tolist()) & set(exact.tolist())) >= 9
    ids2, _ = index.search(x[3], 10, filter=lambda i: i % 6 == 1)
    np.testing.assert_array_equal(ids, ids2)
    few = {1, 3001, 5998}
    ids, _ = index.search(x[3], 10, filter=few)
    assert sorted(ids.tolist()) == [1, 3001, 5998]
    # Batch rows with fewer than k hits are padded with id 2**64-1 and similarity NaN.
    bids, bsims = index.search_batch(x[:2], 5, filter=[1])
    assert bids.shape == (2, 5) and bids[0, 0] == 1
    assert np.all(bids[:, 1:] == np.iinfo(np.uint64).max) and np.all(np.isnan(bsims[:, 1:]))

    def boom(i: int) -> bool:
        raise RuntimeError("filter failed")

    with pytest.raises(RuntimeError, match="filter failed"):
        index.search(x[3], 10, filter=boom)


@pytest.mark.parametrize("kind", KINDS)
def test_search_batch_matches_single_searches(
    kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = data
    index = filled(kind, x)
    ids, sims = index.search_batch(x[:20], 7)
    for r in range(20):
        one_ids, one_sims = index.search(x[r], 7)
        np.testing.assert_array_equal(ids[r], one_ids)
        np.testing.assert_array_equal(sims[r], one_sims)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_raises_and_leaves_index_unchanged(
    kind: str, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = data
    index = filled(kind, x[:100])
    before = index.search(x[0], 10)

    def same() -> None:
        assert len(index) == 100
        after = index.search(x[0], 10)
        np.testing.assert_array_equal(after[0], before[0])
        np.testing.assert_array_equal(after[1], before[1])

    bad_rows = x[100:103].copy()
    cases: list[tuple[type[SonaError], object]] = [
        (DimensionError, lambda: index.add([1000], x[:1, :31])),
        (DimensionError, lambda: index.add([1000, 1001], x[:1])),
        (DimensionError, lambda: index.search(x[0][:8], 3)),
        (DimensionError, lambda: index.search_batch(x[0], 3)),
        (InvalidInputError, lambda: index.add([1], x[:1])),  # id 1 already present
        (InvalidInputError, lambda: index.add([1000, 1000], x[:2])),  # repeated in batch
        (InvalidInputError, lambda: index.add([-5], x[:1])),
        (InvalidInputError, lambda: index.add([1.5], x[:1])),
        (InvalidInputError, lambda: index.add([1000], np.zeros((1, 32)))),
        (InvalidInputError, lambda: index.search(x[0], 0)),
        (InvalidInputError, lambda: index.search_batch(x[:2], 0)),
        (InvalidInputError, lambda: index.search(np.zeros(32), 3)),
        (UnknownIdError, lambda: index.remove([1, 2])),  # 2 is not stored: 1 must survive
        (UnknownIdError, lambda: index.remove([1, 1])),
        (UnknownIdError, lambda: index.get(2)),
    ]
    bad_rows[2, 5] = np.nan
    cases.append((NonFiniteError, lambda: index.add([1000, 1001, 1002], bad_rows)))
    cases.append((NonFiniteError, lambda: index.search(np.full(32, np.inf), 3)))
    for exc, call in cases:
        with pytest.raises(exc):
            call()  # type: ignore[operator]
        same()
    assert 1 in index and 1000 not in index
    assert isinstance(DimensionError("x"), ValueError)
    assert isinstance(UnknownIdError("x"), KeyError)


def test_bad_configuration_is_rejected() -> None:
    for bad in (0, -3, 2.5):
        with pytest.raises(ConfigError):
            VectorIndex(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        VectorIndex(8, "hnsw", ef_construction=-1)
    with pytest.raises(ValueError):
        VectorIndex(8, "exact")
    with pytest.raises(ValueError):
        VectorIndex(8, "hnsw", m=1)
    with pytest.raises(ValueError):
        VectorIndex(8, "hnsw", ef_search=0)
    with pytest.raises(ValueError):
        VectorIndex(8, "flat").ef_search = 10
    with pytest.raises(ValueError):
        VectorIndex(8, "ivf").ef_search = 10
    with pytest.raises(ValueError):
        VectorIndex(8, "hnsw").nprobe = 10
    with pytest.raises(ValueError):
        VectorIndex(8, "ivf", nprobe=0)
    index = VectorIndex(8, "ivf")
    with pytest.raises(ValueError):
        index.nprobe = 0
    assert index.nprobe == 16


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_and_corruption(
    kind: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, _ = data
    index = filled(kind, x[:500])
    index.remove([1, 4, 7])
    path = tmp_path / "index.sona"
    index.save(path)
    back = VectorIndex.load(path)
    assert back.kind == kind and back.dim == 32 and len(back) == 497 and 1 not in back
    a, b = index.search_batch(x[:30], 10), back.search_batch(x[:30], 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # Updates after load behave like updates before save.
    index.add([10**9], x[600:601])
    back.add([10**9], x[600:601])
    np.testing.assert_array_equal(index.search(x[600], 10)[0], back.search(x[600], 10)[0])

    raw = bytearray(path.read_bytes())
    for corrupt in (
        bytes(raw[: len(raw) // 2]),
        bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF])),
        b"not a checkpoint at all",
    ):
        path.write_bytes(corrupt)
        with pytest.raises(CheckpointError):
            VectorIndex.load(path)
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        VectorIndex.load(path)
    with pytest.raises(CheckpointError):
        VectorIndex.load(tmp_path / "missing.sona")


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_search_while_inserting_and_removing(
    kind: str, data: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> None:
    """A searching thread never crashes and never sees an id whose removal had completed."""
    x, centres = data
    index = filled(kind, x)
    fresh = draw(centres, 300, rng)
    stored = (np.arange(len(x)) * 3 + 1).tolist()
    removed: set[int] = set()
    lock = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for j in range(300):
                index.add([10**10 + j], fresh[j : j + 1])
                victim = stored[j * 5]
                index.remove([victim])
                with lock:
                    removed.add(victim)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    searches = 0
    while not done.is_set() or searches < 50:
        with lock:
            gone = set(removed)
        q = x[(searches * 7) % len(x)]
        ids, sims = index.search(q, 10)
        assert not gone & set(ids.tolist())
        assert len(ids) == 10 and np.all(np.isfinite(sims))
        searches += 1
    t.join()
    assert not errors
    assert len(index) == len(x)
    assert all(10**10 + j in index for j in range(300))
    assert not any(v in index for v in removed)


def test_python_filter_search_writer_and_readers_do_not_deadlock(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    """A search running a Python filter (holds a read lock, needs the GIL), a writer waiting for the
    write lock and a thread calling len()/`in` under the GIL must all finish."""
    x, _ = data
    index = filled("approx", x)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch GIL holders as often as possible
    try:

        def searcher() -> None:
            for r in range(20):
                index.search(x[r], 10, filter=lambda i: i % 2 == 1)

        def writer() -> None:
            for j in range(50):
                index.add([10**11 + j], x[j : j + 1])
                index.remove([10**11 + j])

        def reader() -> None:
            for j in range(2000):
                assert len(index) >= 2000
                _ = (j * 3 + 1) in index

        threads = [threading.Thread(target=f, daemon=True) for f in (searcher, writer, reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "deadlock"
    finally:
        sys.setswitchinterval(old)
    assert len(index) == 2000
