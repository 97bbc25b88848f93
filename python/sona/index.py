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

:class:`VectorIndex` is the Rust extension's own class (``crates/sona-py/src/index.rs``: signature,
defaults and docstrings are written there once; ``sona/_sona.pyi`` types it). Vectors are any
array-like (converted once to C-contiguous float32), ids an int or an array-like of non-negative
integers (anything else raises :class:`~sona.errors.InvalidInputError`), sizes ``int`` (``1.5`` or
``"8"`` raise :class:`~sona.errors.ConfigError`) and ``k`` an ``int`` ≥ 1 (InvalidInputError).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from sona._sona import VectorIndex

__all__ = ["Filter", "IdArray", "VectorIndex"]

IdArray = npt.NDArray[np.uint64]
#: A filter: the ids that may be returned, or a predicate called with each candidate id.
Filter = Iterable[int] | npt.ArrayLike | Callable[[int], bool] | None
