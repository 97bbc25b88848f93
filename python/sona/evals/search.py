"""Memory-search evaluation (design §11.4): recall@10 and single-thread queries/s of the approximate
indexes (inverted lists ``ivf``, the default, and the ``hnsw`` graph) against exact search, at
n ∈ {10k, 100k} clustered unit vectors and d ∈ {256, 768}, plus insert and delete while searching.

``sona eval search [--sizes 10000,100000] [--dims 256,768] [--kinds ivf,hnsw] [--json out.json]``
prints a table; the
same function backs ``benches/index_search.py`` and a fast variant in ``tests/test_index_eval.py``.

Data: ``n / 100`` random unit centres; each point is ``normalize(c + 0.75 g)`` with
``g ~ N(0, I/d)`` (cosine ≈ 0.8 to its centre); queries are fresh draws from the same mixture.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from sona._fsio import write_json
from sona.index import VectorIndex

K = 10


def clustered(
    n: int, dim: int, clusters: int, rng: np.random.Generator, spread: float = 0.75
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``n`` clustered unit vectors and the cluster centres (float32, row-major)."""
    centres = rng.standard_normal((max(clusters, 1), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    which = rng.integers(0, len(centres), size=n)
    x = centres[which] + spread / np.sqrt(dim) * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32), centres


def draw(
    centres: npt.NDArray[np.float32], n: int, rng: np.random.Generator, spread: float = 0.75
) -> npt.NDArray[np.float32]:
    """``n`` fresh points of the mixture with these centres."""
    dim = centres.shape[1]
    which = rng.integers(0, len(centres), size=n)
    x = centres[which] + spread / np.sqrt(dim) * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def recall_at_k(approx: npt.NDArray[Any], exact: npt.NDArray[Any]) -> float:
    """Mean over rows of ``|approx ∩ exact| / k``."""
    hits = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) / int(exact.shape[1])


def _latencies(index: VectorIndex, queries: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Per-query wall time in µs of single ``search`` calls from Python."""
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter_ns()
        index.search(q, K)
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return out


def _churn(
    approx: VectorIndex,
    flat: VectorIndex,
    centres: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    first_id: int,
    ops: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Insert and delete on a writer thread while this thread searches.

    Checks that no search returns an id whose deletion had completed before the search started, then
    measures recall on the final state (the exact index received the same operations).
    """
    live = [int(i) for i in approx.ids()]
    removed_done: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    counts = {"inserted": 0, "removed": 0}
    fresh = draw(centres, ops, rng)
    victims = rng.choice(len(live), size=ops, replace=False)

    def writer() -> None:
        for j in range(ops):
            new_id = first_id + j
            approx.add([new_id], fresh[j : j + 1])
            flat.add([new_id], fresh[j : j + 1])
            old = live[int(victims[j])]
            approx.remove([old])
            flat.remove([old])
            with lock:
                removed_done.add(old)
            counts["inserted"] += 1
            counts["removed"] += 1
        stop.set()

    t = threading.Thread(target=writer)
    violations = searches = 0
    t0 = time.perf_counter()
    t.start()
    while not stop.is_set():
        q = queries[searches % len(queries)]
        with lock:
            gone = set(removed_done)
        ids, _ = approx.search(q, K)
        violations += sum(int(i) in gone for i in ids)
        searches += 1
    t.join()
    elapsed = time.perf_counter() - t0
    got, _ = approx.search_batch(queries, K)
    truth, _ = flat.search_batch(queries, K)
    return {
        "churn_searches_per_s": searches / elapsed,
        "churn_updates_per_s": (counts["inserted"] + counts["removed"]) / elapsed,
        "deleted_ids_returned": violations,
        "recall_after_churn": recall_at_k(got, truth),
    }


def evaluate(
    sizes: list[int],
    dims: list[int],
    *,
    kinds: tuple[str, ...] = ("ivf", "hnsw"),
    queries: int = 200,
    ef_search: int = 32,
    nprobe: int = 16,
    churn_ops: int = 500,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One result row per (n, d, kind); see the module docstring for the workload."""
    rows = []
    for n in sizes:
        for dim in dims:
            for kind in kinds:
                rows.append(_one(n, dim, kind, queries, ef_search, nprobe, churn_ops, seed))
                if progress:
                    print(format_table(rows[-1:], header=len(rows) == 1), flush=True)
    return rows


def _one(
    n: int,
    dim: int,
    kind: str,
    queries: int,
    ef_search: int,
    nprobe: int,
    churn_ops: int,
    seed: int,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    data, centres = clustered(n, dim, n // 100, rng)
    qs = draw(centres, queries, rng)
    ids = np.arange(n, dtype=np.uint64)
    flat = VectorIndex(dim, "flat")
    flat.add(ids, data)
    approx = VectorIndex(dim, kind, ef_search=ef_search, nprobe=nprobe, seed=seed)
    t0 = time.perf_counter()
    approx.add(ids, data)
    build_s = time.perf_counter() - t0
    truth, _ = flat.search_batch(qs, K)
    got, _ = approx.search_batch(qs, K)
    lat_a = _latencies(approx, qs)
    lat_e = _latencies(flat, qs[: max(20, queries // 10)])
    row: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "kind": kind,
        "knob": f"nprobe≤{nprobe}" if kind == "ivf" else f"ef={ef_search}",
        "build_s": build_s,
        "bytes_per_vector": approx.memory_bytes() / n,
        f"recall@{K}": recall_at_k(got, truth),
        "approx_qps": 1e6 / float(np.mean(lat_a)),
        "approx_p50_us": float(np.percentile(lat_a, 50)),
        "approx_p99_us": float(np.percentile(lat_a, 99)),
        "exact_qps": 1e6 / float(np.mean(lat_e)),
        "exact_p50_us": float(np.percentile(lat_e, 50)),
    }
    row["speedup"] = row["approx_qps"] / row["exact_qps"]
    if churn_ops:
        row.update(_churn(approx, flat, centres, qs, n, min(churn_ops, n // 2), rng))
    return row


#: (result key, column head, format) of the printed table.
COLUMNS = [
    ("n", "n", "{}"),
    ("dim", "d", "{}"),
    ("kind", "kind", "{}"),
    ("knob", "knob", "{}"),
    ("build_s", "build s", "{:.1f}"),
    (f"recall@{K}", f"recall@{K}", "{:.4f}"),
    ("approx_p50_us", "p50 µs", "{:.1f}"),
    ("approx_p99_us", "p99 µs", "{:.1f}"),
    ("approx_qps", "q/s", "{:.0f}"),
    ("exact_qps", "exact q/s", "{:.0f}"),
    ("speedup", "speedup", "{:.1f}"),
    ("recall_after_churn", "churn rec", "{:.4f}"),
    ("churn_updates_per_s", "upd/s", "{:.0f}"),
    ("deleted_ids_returned", "del ret", "{}"),
]


def format_table(rows: list[dict[str, Any]], header: bool = True) -> str:
    """The result rows as a fixed-width text table."""
    widths = [max(len(head), 9) for _, head, _ in COLUMNS]
    lines = []
    if header:
        lines.append(" ".join(h.rjust(w) for (_, h, _), w in zip(COLUMNS, widths, strict=True)))
    for r in rows:
        cells = [
            (fmt.format(r[key]) if r.get(key) is not None else "-").rjust(w)
            for (key, _, fmt), w in zip(COLUMNS, widths, strict=True)
        ]
        lines.append(" ".join(cells))
    return "\n".join(lines)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """CLI options of ``sona eval search``."""
    p.add_argument("--sizes", type=_ints, default=[10_000, 100_000], help="comma-separated n")
    p.add_argument("--dims", type=_ints, default=[256, 768], help="comma-separated d")
    p.add_argument("--queries", type=int, default=200, help="queries per configuration")
    p.add_argument(
        "--kinds",
        type=lambda s: tuple(x for x in s.split(",") if x),
        default=("ivf", "hnsw"),
        help="comma-separated approximate index kinds",
    )
    p.add_argument("--ef-search", type=int, default=32, help="HNSW search candidate list")
    p.add_argument("--nprobe", type=int, default=16, help="IVF: most lists scanned per search")
    p.add_argument("--churn-ops", type=int, default=500, help="insert+delete pairs while searching")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the result rows as JSON")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``sona eval search``."""
    rows = evaluate(
        args.sizes,
        args.dims,
        kinds=args.kinds,
        queries=args.queries,
        ef_search=args.ef_search,
        nprobe=args.nprobe,
        churn_ops=args.churn_ops,
        seed=args.seed,
        progress=True,
    )
    if args.json:
        write_json(args.json, {"k": K, "rows": rows})
    bad = sum(r.get("deleted_ids_returned", 0) for r in rows)
    return 1 if bad else 0


def _register() -> None:
    from sona import cli

    cli.EVALS["search"] = (
        "recall@10 and queries/s of the approximate index vs exact (design §11.4)",
        add_arguments,
        run,
    )


_register()
