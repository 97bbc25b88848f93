"""Hardening of ``sona.index.VectorIndex`` (issue 9): a filter that writes to its own index, ``k``
above the count, coercion of sizes, two threads on one index above every size threshold, and numpy
inputs written by another thread during a call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import scribbling, write_while_reading
from sona.errors import ConfigError, InvalidInputError, SonaError
from sona.index import VectorIndex

KINDS = ["flat", "ivf", "hnsw"]


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _finishes(fn: Callable[[], object], seconds: float = 20.0) -> object:
    """Runs ``fn`` on a daemon thread: a call that does not return in time (a deadlock) fails the
    test instead of hanging the suite."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the call did not return: deadlock"
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out.get("value")


@pytest.mark.parametrize("kind", KINDS)
def test_a_filter_that_writes_to_its_own_index_raises_instead_of_deadlocking(
    kind: str, rng: np.random.Generator
) -> None:
    index = VectorIndex(16, kind)
    x = _unit_rows(rng, 50, 16)
    index.add(np.arange(50), x)
    writes: list[Callable[[], None]] = [
        lambda: index.add([1000], x[:1]),
        lambda: index.remove([3]),
    ]
    if kind == "hnsw":
        writes.append(lambda: setattr(index, "ef_search", 40))
    if kind == "ivf":
        writes.append(lambda: setattr(index, "nprobe", 4))
    for write in writes:
        seen: list[BaseException] = []

        def keep(
            i: int, write: Callable[[], None] = write, seen: list[BaseException] = seen
        ) -> bool:
            if not seen:
                try:
                    write()
                except SonaError as exc:
                    seen.append(exc)
                    raise
            return True

        with pytest.raises(InvalidInputError, match="filter cannot modify"):
            _finishes(lambda keep=keep: index.search(x[0], 5, filter=keep))
        assert isinstance(seen[0], InvalidInputError)
        assert len(index) == 50 and 1000 not in index and 3 in index
    # Reading the same index from its filter, and writing another one, are fine.
    other = VectorIndex(16)
    hits = _finishes(
        lambda: index.search(
            x[0], 3, filter=lambda i: len(index) == 50 and other.add([i], x[:1]) is None
        )
    )
    assert len(hits[0]) == 3  # type: ignore[index]
    # After the search, writes work again on this thread.
    index.add([1000], x[:1])
    assert 1000 in index


@pytest.mark.parametrize("kind", KINDS)
def test_k_above_the_count_returns_fewer_hits(kind: str, rng: np.random.Generator) -> None:
    index = VectorIndex(8, kind)
    ids, sims = index.search(np.ones(8), 5)
    assert ids.shape == (0,) and sims.shape == (0,)
    x = _unit_rows(rng, 7, 8)
    index.add(np.arange(7), x)
    for k in (7, 8, 10**6, 2**64 - 1, 2**70):
        ids, sims = index.search(x[0], k)
        assert sorted(ids.tolist()) == list(range(7)) and ids[0] == 0
        bids, bsims = index.search_batch(x[:3], k)
        assert bids.shape == (3, 7) and np.isfinite(bsims).all()
    ids, _ = index.search(x[0], 100, filter=[1, 2])
    assert sorted(ids.tolist()) == [1, 2]


@pytest.mark.parametrize(
    "args",
    [
        {"dim": 1.5},
        {"dim": "8"},
        {"dim": 2**40},
        {"dim": 2**70},
        {"dim": -1},
        {"dim": 8, "m": 2**70},
        {"dim": 8, "nprobe": 2.0},
        {"dim": 8, "seed": 2**64},
        {"dim": 8, "ef_search": True},
    ],
)
def test_sizes_of_the_wrong_kind_or_range_raise_config_errors(args: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        VectorIndex(**args)  # type: ignore[arg-type]


def test_setters_and_k_refuse_strings_floats_and_huge_ints() -> None:
    hnsw, ivf = VectorIndex(8, "hnsw"), VectorIndex(8, "ivf")
    for bad in ("8", 8.0, 2**70, -1):
        with pytest.raises(ConfigError):
            hnsw.ef_search = bad  # type: ignore[assignment]
        with pytest.raises(ConfigError):
            ivf.nprobe = bad  # type: ignore[assignment]
    assert hnsw.ef_search == 32 and ivf.nprobe == 16
    for bad_k in ("3", 3.0, 0, -2, True):
        with pytest.raises(InvalidInputError):
            hnsw.search(np.ones(8), bad_k)  # type: ignore[arg-type]
    # Ids beyond 64 bits are a SonaError, never a bare OverflowError.
    for call in (
        lambda: hnsw.get(2**64),
        lambda: hnsw.remove([2**70]),
        lambda: hnsw.add([2**64], np.ones((1, 8))),
        lambda: hnsw.search(np.ones(8), 3, filter=[2**65]),
    ):
        with pytest.raises(InvalidInputError):
            call()
    assert 2**70 not in hnsw and len(hnsw) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_two_threads_on_one_index_above_every_size_threshold(
    kind: str, rng: np.random.Generator, tmp_path: Path
) -> None:
    # dim 256 turns on HNSW's sign-bit gate; 1,600 vectors pass IVF's training threshold (1,024)
    # and trigger its re-partition while the other thread searches.
    dim, n = 256, 1600
    index = VectorIndex(dim, kind, ef_construction=32)
    x = _unit_rows(rng, n, dim)

    def write() -> None:
        for start in range(0, n, 200):
            index.add(np.arange(start, start + 200), x[start : start + 200])
        index.remove(np.arange(0, n, 10))

    def read() -> None:
        ids, sims = index.search(x[5], 10)
        assert np.isfinite(sims).all() and len(ids) <= 10
        index.search_batch(x[:4], 3, filter=np.arange(0, n, 2))
        index.search(x[7], 3, filter=lambda i: i % 3 == 0)
        _ = len(index), 5 in index, index.memory_bytes(), repr(index)
        if 5 in index:
            index.get(5)

    write_while_reading(write, read, 120)
    assert len(index) == n - n // 10
    index.save(tmp_path / "i.ckpt")
    back = VectorIndex.load(tmp_path / "i.ckpt")
    ids, _ = back.search(x[11], 1)
    assert ids[0] == 11


@pytest.mark.parametrize("kind", KINDS)
def test_an_array_written_by_another_thread_during_add_never_stores_a_bad_vector(
    kind: str, rng: np.random.Generator
) -> None:
    # The binding copies numpy inputs before releasing the GIL and validates the copy: a writer
    # flipping the array between valid rows and NaN (numpy releases the GIL while copying large
    # arrays) can make a call fail, never store a non-finite or non-unit vector.
    dim, rows = 64, 256
    index = VectorIndex(dim, kind)
    shared = np.ascontiguousarray(_unit_rows(rng, rows, dim))
    failures = 0
    with scribbling(shared):
        for batch in range(12):
            try:
                index.add(np.arange(batch * rows, (batch + 1) * rows), shared)
            except SonaError:
                failures += 1
    for i in index.ids()[:: max(1, len(index) // 200)]:
        v = index.get(int(i))
        assert np.isfinite(v).all() and abs(float(v @ v) - 1.0) < 1e-3
    assert len(index) == (12 - failures) * rows


def test_the_class_is_the_extensions_own_with_the_core_defaults() -> None:
    """One API surface (issue 13): ``sona.index`` re-exports the Rust class, whose defaults are
    the core parameters' and whose arguments accept lists, float64, sets and numpy integers."""
    from sona import _sona, index

    cls = index.VectorIndex
    assert cls is _sona.VectorIndex and cls.__module__ == "sona.index"
    assert cls.__doc__ and "non-negative integer ids" in cls.__doc__
    assert cls.search.__doc__ and "best first" in cls.search.__doc__
    hnsw, ivf = VectorIndex(4, "hnsw"), VectorIndex(4, "approx")
    assert hnsw.ef_search == 32 and ivf.nprobe == 16 and ivf.kind == "ivf"
    ivf.add(np.array([3, 5], dtype=np.int8), [[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    ivf.add(np.uint32(9), np.array([[0, 0, 1.0, 0]]))
    assert np.int64(3) in ivf and True not in ivf and "3" not in ivf and 2**70 not in ivf
    ids, _ = ivf.search(np.array([1, 0.5, 0, 0]), np.int64(5), filter=frozenset({5, 9}))
    assert sorted(ids.tolist()) == [5, 9]
    np.testing.assert_allclose(ivf.get(np.uint64(9)), [0, 0, 1, 0])
    with pytest.raises(TypeError):
        VectorIndex(4, "hnsw", 8)  # type: ignore[misc]  # the parameters are keyword-only
    for bad in (-1, 2**64, "3", 3.0, None):
        with pytest.raises(InvalidInputError):
            ivf.get(bad)  # type: ignore[arg-type]
    for bad_ids in ([[1]], {7}, [1.5], np.array(["a"]), [2**64]):
        with pytest.raises(InvalidInputError):
            ivf.remove(bad_ids)  # type: ignore[arg-type]
    assert len(ivf) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_huge_and_denormal_finite_vectors_are_stored_as_unit_vectors(kind: str) -> None:
    """Their squared norm overflows (1e38) or underflows (1e-45) float32, but they have a
    direction: they are stored unit-norm and found, not refused as 'zero' (the add and the
    search normalise by max |x| first). Zero is still refused, with the index unchanged."""
    index = VectorIndex(4, kind)
    huge = np.array([[3.4e38, 0, 3.4e38, 0], [0, -1e38, 0, 0]], np.float32)
    tiny = np.array([[0, 0, 1e-45, 0]], np.float32)
    index.add([1, 2], huge)
    index.add([3], tiny)
    for i in (1, 2, 3):
        v = index.get(i)
        assert np.isfinite(v).all() and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert index.search(huge[0], 1)[0].tolist() == [1]
    assert index.search(tiny[0], 1)[0].tolist() == [3]
    ids, sims = index.search_batch(np.vstack([huge, tiny]), 1)
    assert ids[:, 0].tolist() == [1, 2, 3] and np.allclose(sims[:, 0], 1, atol=1e-5)
    with pytest.raises(InvalidInputError, match="zero vector"):
        index.add([4], np.zeros((1, 4), np.float32))
    with pytest.raises(InvalidInputError, match="zero vector"):
        index.search(np.array([0, -0.0, 0, 0], np.float32), 1)
    assert sorted(index.ids().tolist()) == [1, 2, 3]


@pytest.mark.parametrize("kind", KINDS)
def test_id_arrays_of_any_layout_are_read(kind: str, rng: np.random.Generator) -> None:
    """A strided or big-endian uint64 id array is valid input (it was refused as 'not
    contiguous'); its values are what gets stored."""
    index = VectorIndex(8, kind)
    x = _unit_rows(rng, 3, 8)
    index.add(np.array([10, 0, 11, 0, 12], np.uint64)[::2], x)
    index.add(np.array([20], ">u8"), _unit_rows(rng, 1, 8))
    index.remove(np.array([10, 99, 11], np.uint64)[::2])
    assert sorted(index.ids().tolist()) == [12, 20]


def test_wrong_kinds_of_argument_raise_documented_errors(tmp_path: Path) -> None:
    """A non-str kind is a ConfigError, a non-path path an InvalidInputError (not a bare
    TypeError from the conversion); bytes and path-likes are paths."""
    with pytest.raises(ConfigError, match="expected a str"):
        VectorIndex(8, None)  # type: ignore[arg-type]
    index = VectorIndex(8)
    index.add([1], np.ones((1, 8), np.float32))
    for bad in (None, 3, 1.5, ["a"]):
        with pytest.raises(InvalidInputError, match="expected a path"):
            index.save(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="expected a path"):
            VectorIndex.load(bad)  # type: ignore[arg-type]
    index.save(str(tmp_path / "a.idx").encode())  # type: ignore[arg-type]
    assert VectorIndex.load(tmp_path / "a.idx").ids().tolist() == [1]
    assert VectorIndex.load(str(tmp_path / "a.idx").encode()).ids().tolist() == [1]  # type: ignore[arg-type]
