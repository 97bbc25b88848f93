"""Loop C (deep cycle) wall time and request latency while it runs (issue 11 target).

Usage: ``python benches/deep_cycle.py [--d 256] [--trajectories 10000] [--patterns 1000]``

Target: a deep cycle over 10k trajectories and 1k patterns at d = 256 finishes in ≤ 10 s without
raising ``process`` p99 above 2× its idle value, measured while the cycle runs on another thread.

The engine gets ``--patterns`` imported patterns around 64 cluster centres, then ``--trajectories``
queries around the same centres are processed and rewarded (reward depends on the tier and the
cluster, so the replayed decisions carry signal); loop B runs on demand only. ``process`` is timed
one call at a time (``perf_counter_ns``) idle, then in a loop while ``deep_learn()`` runs on a
second thread; the cycle's own report gives its step count and elapsed time.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from sona import _sona
from sona.evals._timing import process_times, while_running


def clustered(
    rng: np.random.Generator, n: int, d: int, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    c = rng.integers(len(centres), size=n)
    x = centres[c] + 0.3 * rng.standard_normal((n, d)) / np.sqrt(d)
    return np.ascontiguousarray(x, dtype=np.float32), c


def pct(ns: list[int]) -> tuple[float, float]:
    a = np.array(ns) / 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def build(
    d: int, n_traj: int, n_pat: int, seed: int, **kw: object
) -> tuple[_sona.Engine, np.ndarray]:
    """An engine with `n_pat` patterns and `n_traj` rewarded decisions in its replay store."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cfg = {"dim": d, "learning_mode": "instant_only", "bank_index": "ivf", "seed": seed, **kw}
    e = _sona.Engine(json.dumps(cfg))
    e.import_patterns(clustered(rng, n_pat, d, centres)[0])
    # Which tier "answers well" depends on the cluster: a learnable reward signal.
    best = rng.integers(3, size=len(centres))
    xs, cl = clustered(rng, n_traj, d, centres)
    for s in range(0, n_traj, 1000):
        ds = e.process_batch(xs[s : s + 1000])
        ids = np.array([x.trajectory_id for x in ds], dtype=np.uint64)
        tiers = np.array([x.tier for x in ds])
        r = np.where(tiers == best[cl[s : s + 1000]], 0.9, 0.2) + 0.1 * rng.random(len(ds))
        e.feedback_batch(ids, np.clip(r, 0, 1).astype(np.float32))
    return e, clustered(rng, 4000, d, centres)[0]


def measure(d: int, n_traj: int, n_pat: int, seed: int, **kw: object) -> dict[str, object]:
    e, qs = build(d, n_traj, n_pat, seed, **kw)
    st = e.stats()

    def timed(n: int) -> list[int]:
        return process_times(e, qs, n)

    timed(300)  # warm-up
    idle = timed(4000)
    busy, r, wall = while_running(e, qs, e.deep_learn)
    idle_after = timed(4000)
    e.close()
    (i50, i99), (b50, b99), (a50, a99) = pct(idle), pct(busy), pct(idle_after)
    return {
        "d": d,
        "trajectories": n_traj,
        "patterns": st["patterns"],
        "deep_wall_s": wall,
        "deep_elapsed_ms": r.elapsed_ms,
        "steps": r.steps,
        "replayed": r.replayed,
        "synthesized": r.synthesized,
        "accepted": r.accepted,
        "out_of_budget": r.out_of_budget,
        "probe_size": r.probe_size,
        "idle_p50_us": i50,
        "idle_p99_us": i99,
        "idle_after_p50_us": a50,
        "idle_after_p99_us": a99,
        "deep_p50_us": b50,
        "deep_p99_us": b99,
        "p99_ratio": b99 / max(i99, a99),
        "calls_during_deep": len(busy),
        "load_avg": open("/proc/loadavg").read().split()[0],
        "creative_proposed": r.creative_proposed,
        "edges_added": r.edges_added,
        "edges_removed": r.edges_removed,
        "edges_after": r.edges_after,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--trajectories", type=int, default=10_000)
    ap.add_argument("--patterns", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="{}", help="extra engine config as JSON")
    args = ap.parse_args()
    print("build:", _sona.build_info()["simd"])
    extra = json.loads(args.config)
    print(json.dumps(measure(args.d, args.trajectories, args.patterns, args.seed, **extra)))


if __name__ == "__main__":
    main()
