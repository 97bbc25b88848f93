"""Vector indexes over unit vectors keyed by integer ids (design §5): exact and approximate.

>>> import numpy as np
>>> from sona.index import VectorIndex
>>> index = VectorIndex(4, kind="approx")
>>> index.add([10, 11], np.eye(4, dtype=np.float32)[:2])
>>> ids, sims = index.search([1.0, 0.1, 0.0, 0.0], k=1)
>>> int(ids[0]), round(float(sims[0]), 3)
(10, 0.995)

Similarity is the cosine: vectors are normalised on insert and queries on search. ``kind="flat"``
scans every vector (exact; best below a few thousand vectors, and the reference in tests).
``kind="ivf"`` (also ``"approx"``, the default approximate index) partitions the vectors by k-means
into inverted lists and scans the lists nearest the query (recall@10 0.98–1.00 against exact search
on the clustered benchmark sets with the defaults; ``nprobe`` caps the lists scanned).
``kind="hnsw"`` searches a graph (``ef_search`` is its recall/latency knob); it is slower on
clustered data but degrades less on weakly clustered data (measurements in ``docs/benchmarks.md``).
Inserts are visible to the next search; deleted ids are never returned. Every method validates its
whole input first and leaves the index unchanged when it raises.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from sona import _sona
from sona._validate import F32Array, as_matrix, as_size, as_vector
from sona.errors import InvalidInputError

__all__ = ["IdArray", "VectorIndex"]

IdArray = npt.NDArray[np.uint64]
_U64_MAX = (1 << 64) - 1
#: A filter: the ids that may be returned, or a predicate called with each candidate id.
Filter = Iterable[int] | npt.ArrayLike | Callable[[int], bool] | None


def _as_ids(x: Any, name: str) -> IdArray:
    """A 1-D uint64 id array; negative, fractional or non-numeric ids raise InvalidInputError."""
    if np.isscalar(x):
        x = [x]
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-D array of ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype == np.uint64:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind not in "iu":
        raise InvalidInputError(f"{name}: ids must be integers, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise InvalidInputError(f"{name}: ids must be non-negative, got {int(arr.min())}")
    return np.ascontiguousarray(arr, dtype=np.uint64)


def _as_filter(f: Filter) -> Any:
    if f is None or callable(f):
        return f
    return _as_ids(np.asarray(list(f) if isinstance(f, set | frozenset) else f), "filter")


class VectorIndex:
    """An index of unit vectors keyed by non-negative integer ids.

    Args:
        dim: vector dimension.
        kind: ``"flat"`` (exact scan), ``"ivf"`` or ``"approx"`` (inverted lists), or ``"hnsw"``
            (graph).
        m: HNSW links per node on the upper layers (layer 0 keeps ``2 m``).
        ef_construction: HNSW candidate list while inserting (graph quality vs insert time).
        ef_search: HNSW candidate list while searching (recall vs latency; raised to ``k``).
        nprobe: IVF: most lists scanned per search. After the nearest list, a list is scanned only
            if it may hold a vector better than the current ``k``-th hit (a statistical rule), so
            on clustered data far fewer are scanned; raise it for recall on weakly clustered data.
        seed: seed of the HNSW level draws and the IVF k-means (builds are reproducible).

    Thread-safe: searches run concurrently, ``add``/``remove`` are exclusive, and long calls
    release the GIL (numpy inputs are copied first, so a thread writing them meanwhile cannot tear
    what is stored). A callable ``filter`` must not modify the index it filters (that raises).
    """

    __slots__ = ("_inner",)

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        *,
        m: int = 16,
        ef_construction: int = 100,
        ef_search: int = 32,
        nprobe: int = 16,
        seed: int = 0x534F4E41,
    ) -> None:
        params = {
            "dim": dim,
            "m": m,
            "ef_construction": ef_construction,
            "ef_search": ef_search,
            "nprobe": nprobe,
        }
        sizes = {name: as_size(value, name) for name, value in params.items()}
        self._inner = _sona.VectorIndex(
            sizes["dim"],
            kind,
            sizes["m"],
            sizes["ef_construction"],
            sizes["ef_search"],
            sizes["nprobe"],
            as_size(seed, "seed"),
        )

    @classmethod
    def _wrap(cls, inner: _sona.VectorIndex) -> VectorIndex:
        obj = cls.__new__(cls)
        obj._inner = inner
        return obj

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._inner.dim

    @property
    def kind(self) -> str:
        """``"flat"``, ``"ivf"`` or ``"hnsw"`` (``"approx"`` builds an ``"ivf"`` index)."""
        return self._inner.kind

    @property
    def ef_search(self) -> int | None:
        """HNSW search candidate-list size (``None`` unless ``kind="hnsw"``); settable any time."""
        return self._inner.ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._inner.ef_search = as_size(value, "ef_search")

    @property
    def nprobe(self) -> int | None:
        """IVF: most lists scanned per search (``None`` unless ``kind="ivf"``); settable."""
        return self._inner.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._inner.nprobe = as_size(value, "nprobe")

    def __len__(self) -> int:
        return len(self._inner)

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, int | np.integer) or int(id) < 0 or int(id) >= 2**64:
            return False
        return int(id) in self._inner

    def __repr__(self) -> str:
        return repr(self._inner)

    def add(self, ids: Any, vectors: Any) -> None:
        """Insert ``vectors[i]`` under ``ids[i]`` (all or nothing).

        Raises:
            DimensionError: ``vectors`` is not ``(len(ids), dim)``.
            NonFiniteError: a vector contains NaN or Inf.
            InvalidInputError: an id is negative, repeated, already present, or a vector is zero.
        """
        id_arr = _as_ids(ids, "ids")
        mat = as_matrix(vectors, "vectors", self.dim)
        self._inner.add(id_arr, mat)

    def remove(self, ids: Any) -> None:
        """Delete ``ids`` (all or nothing); an absent or repeated id raises UnknownIdError."""
        self._inner.remove(_as_ids(ids, "ids"))

    def search(
        self, vector: Any, k: int, filter: Filter = None
    ) -> tuple[IdArray, npt.NDArray[np.float32]]:
        """The ``k`` most similar ids and their cosine similarities, best first.

        ``filter`` restricts the result to some ids: an array/iterable of allowed ids, or a callable
        ``id -> bool``. Fewer than ``k`` hits are returned when the index holds fewer vectors (as in
        every ANN library) or fewer ids pass the filter. A callable filter must not modify this
        index: that raises InvalidInputError (the search holds the index while the filter runs).

        Raises:
            InvalidInputError: ``k < 1``, or the filter modified this index.
            DimensionError / NonFiniteError: bad ``vector``.
        """
        q = as_vector(vector, "vector", self.dim)
        return self._inner.search(q, _as_k(k), _as_filter(filter))

    def search_batch(
        self, vectors: Any, k: int, filter: Filter = None
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        """:meth:`search` for every row: ids and similarities of shape ``(rows, min(k, len))``.

        Rows with fewer hits (only with a filter) are padded with id ``2**64 - 1`` and similarity
        NaN.
        """
        mat = as_matrix(vectors, "vectors", self.dim)
        return self._inner.search_batch(mat, _as_k(k), _as_filter(filter))

    def ids(self) -> IdArray:
        """The stored ids."""
        return self._inner.ids()

    def get(self, id: int) -> F32Array:
        """The stored unit vector of ``id`` (UnknownIdError if absent)."""
        return self._inner.get(int(_as_ids(id, "id")[0]))

    def memory_bytes(self) -> int:
        """Approximate heap bytes held by the index."""
        return self._inner.memory_bytes()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a checksummed checkpoint (written to a temporary file, then renamed)."""
        self._inner.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VectorIndex:
        """Read a file written by :meth:`save` (CheckpointError if corrupted or of another kind)."""
        return cls._wrap(_sona.VectorIndex.load(os.fspath(path)))


def _as_k(k: Any) -> int:
    """A result count ≥ 1; above the number of vectors it means "all of them"."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InvalidInputError(f"k must be an integer, got {type(k).__name__} {k!r}")
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {int(k)}")
    return min(int(k), _U64_MAX)
