"""RSS over a long run of the engine: ``--n`` requests (default 1M) at d = 256 with loops A and B,
printing the process RSS, the engine's own measured ``memory_bytes`` and its parts against
``memory_budget_mb`` every ``--every`` requests. A benchmark, not a CI test.

    python benches/memory_budget.py [--n 1000000] [--dim 256] [--budget-mb 512] [--every 50000]
        [--clusters 32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np

from sona import _sona


def rss_mb() -> float:
    """Resident set size of this process (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--budget-mb", type=float, default=512.0)
    ap.add_argument("--every", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument(
        "--clusters", type=int, default=32, help="query clusters (many: patterns keep growing)"
    )
    a = ap.parse_args()
    e = _sona.Engine(
        json.dumps({"dim": a.dim, "memory_budget_mb": a.budget_mb, "loop_b_interval_s": 1.0})
    )
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((a.clusters, a.dim)).astype(np.float32)
    bounds = e.stats()["memory"]["bounds"]
    print(f"start: RSS {rss_mb():.1f} MB, budget {a.budget_mb} MB, load {os.getloadavg()}")
    print("bounds from the budget: " + json.dumps(bounds))
    t0 = time.monotonic()
    done = 0
    while done < a.n:
        b = min(a.batch, a.n - done)
        c = rng.integers(a.clusters, size=b)
        xs = centers[c] + 0.3 * rng.standard_normal((b, a.dim)).astype(np.float32)
        ds = e.process_batch(xs)
        ids = np.array([d.trajectory_id for d in ds], dtype=np.uint64)
        rewards = np.array([float(d.tier == c[i] % 4) for i, d in enumerate(ds)], dtype=np.float32)
        e.feedback_batch(ids, rewards)
        done += b
        if done % a.every < b:
            s = e.stats()
            print(
                f"{done:>9} req {time.monotonic() - t0:7.1f} s  RSS {rss_mb():7.1f} MB  "
                f"engine {s['memory_bytes'] / 1e6:7.1f} MB  patterns {s['patterns']:6d} "
                f"(evicted {s['patterns_evicted']})  edges {s['graph_edges']:7d}  "
                f"replay {s['replay']:6d}  pending {s['pending']:6d}  "
                f"over_budget {s['over_budget']}  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    by = e.stats()["memory"]["by_store"]
    print("final by store (MB): " + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in by.items()))
    print(f"max RSS (ru_maxrss) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.1f} MB")
    e.close()


if __name__ == "__main__":
    main()
