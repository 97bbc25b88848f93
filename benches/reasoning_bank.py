"""ReasoningBank benchmark: extraction time, add/search latency, memory per trajectory and pattern.

Run: ``python benches/reasoning_bank.py [--json out.json]``. Extraction of 100k trajectories is
opt-in (``SONA_BENCH_100K=1`` or ``--big``): it takes seconds on a shared 2-core machine.
Timings use ``time.perf_counter_ns``; latencies print p50/p99. Memory is the bank's own accounting
(allocated capacity) and, as a cross-check, the growth of the process RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import numpy as np

from sona.reasoning import ReasoningBank

D = 256


def clustered(n: int, c: int, seed: int, d: int = D) -> np.ndarray:
    """``n`` unit vectors around ``c`` random unit centres (cosine ≈ 0.9 to their centre)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((c, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, c, n)]
    x = x + rng.standard_normal((n, d)).astype(np.float32) * (0.48 / np.sqrt(d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def pct(ns: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(ns) / 1e3, q))


def fill(bank: ReasoningBank, x: np.ndarray) -> None:
    for i, v in enumerate(x):
        bank.add_trajectory(v, 0.5, i % 4, ts_ms=0)


def bench_extraction(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        x = clustered(n, 100, 7)
        for mode in ("new", "repeat"):
            times, report = [], None
            for _ in range(repeats if n < 100_000 else 1):
                bank = ReasoningBank(D, seed=1, buffer_capacity=max(n, 1))
                fill(bank, x)
                if mode == "repeat":
                    bank.extract_patterns()
                    fill(bank, x)
                t0 = time.perf_counter_ns()
                report = bank.extract_patterns()
                times.append(time.perf_counter_ns() - t0)
            assert report is not None
            rows.append(
                {
                    "n": n,
                    "mode": mode,
                    "median_ms": float(np.median(times)) / 1e6,
                    "min_ms": min(times) / 1e6,
                    "cluster_ms": report.cluster_ms,
                    "apply_ms": report.apply_ms,
                    "clusters": report.clusters,
                    "created": report.created,
                    "patterns": report.patterns,
                }
            )
    return rows


def bench_latency(n_patterns_target: int) -> dict[str, Any]:
    x = clustered(20_000, n_patterns_target, 11)
    bank = ReasoningBank(D, seed=1, max_clusters=1024, merge_threshold=0.99, merge_slack=None)
    fill(bank, x)
    bank.extract_patterns()
    q = clustered(2000, n_patterns_target, 12)
    add = []
    for v in q:
        t0 = time.perf_counter_ns()
        bank.add_trajectory(v, 0.5, 1)
        add.append(time.perf_counter_ns() - t0)
    ids, full = [], []
    for v in q:
        t0 = time.perf_counter_ns()
        bank.search_ids(v, 10)
        ids.append(time.perf_counter_ns() - t0)
    for v in q[:500]:
        t0 = time.perf_counter_ns()
        bank.search(v, 10)
        full.append(time.perf_counter_ns() - t0)
    return {
        "patterns": len(bank),
        "add_us": (pct(add, 50), pct(add, 99)),
        "search_ids_k10_us": (pct(ids, 50), pct(ids, 99)),
        "search_k10_dataclasses_us": (pct(full, 50), pct(full, 99)),
    }


def _rss_per_trajectory(n: int) -> float:
    """RSS growth per stored trajectory, measured in a fresh interpreter: in this process, memory
    freed by earlier benchmarks is reused by the allocator and hides the growth."""
    code = f"""
import numpy as np, os
from sona.reasoning import ReasoningBank
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
rng = np.random.default_rng(0)
bank = ReasoningBank({D}, seed=1, reservoir_capacity={n}, buffer_capacity={n})
chunk = rng.standard_normal((100, {D})).astype(np.float32)
base = rss()
for i in range({n} // 100):
    for v in chunk:
        bank.add_trajectory(v, 0.5, 1, ts_ms=0)
print((rss() - base) / bank.stats().stored_trajectories)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def bench_memory() -> dict[str, Any]:
    n = 10_000
    x = clustered(n, 100, 3)
    bank = ReasoningBank(D, seed=1, reservoir_capacity=n)
    fill(bank, x)
    s = bank.stats()
    own_traj = s.trajectory_bytes / s.stored_trajectories
    del bank
    y = clustered(50_000, 2000, 4)
    pbank = ReasoningBank(D, seed=1, max_clusters=1000, merge_threshold=1.0, merge_slack=None)
    fill(pbank, y)
    pbank.extract_patterns()
    s = pbank.stats()
    return {
        "stored_trajectories": 2 * n,  # ring + reservoir each hold all n
        "bytes_per_trajectory_own": own_traj,
        "bytes_per_trajectory_rss": _rss_per_trajectory(n),
        "patterns": s.patterns,
        "bytes_per_pattern_own": s.pattern_bytes / max(s.patterns, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--big", action="store_true", help="include 100k trajectories")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sizes = [1_000, 10_000]
    if args.big or os.environ.get("SONA_BENCH_100K"):
        sizes.append(100_000)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    print(f"ReasoningBank benchmark, d={D}, CPU: {cpu}")
    mem = bench_memory()
    ext = bench_extraction(sizes, args.repeats)
    print(
        f"\n{'n':>7} {'mode':>7} {'median ms':>10} {'min ms':>8} {'cluster':>8} {'apply':>7} "
        f"{'clusters':>8} {'created':>7} {'patterns':>8}"
    )
    for r in ext:
        print(
            f"{r['n']:>7} {r['mode']:>7} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} "
            f"{r['cluster_ms']:>8.1f} {r['apply_ms']:>7.2f} {r['clusters']:>8} "
            f"{r['created']:>7} {r['patterns']:>8}"
        )
    lat = bench_latency(1000)
    print(f"\nlatency from Python over {lat['patterns']} patterns (flat index), µs p50 / p99:")
    for k in ("add_us", "search_ids_k10_us", "search_k10_dataclasses_us"):
        print(f"  {k:<28} {lat[k][0]:8.1f} {lat[k][1]:8.1f}")
    print("\nmemory, d=256:")
    print(
        f"  per stored trajectory: {mem['bytes_per_trajectory_own']:.0f} B (bank accounting), "
        f"{mem['bytes_per_trajectory_rss']:.0f} B (RSS growth); target ≤ 1536 B"
    )
    print(f"  per pattern ({mem['patterns']} patterns): {mem['bytes_per_pattern_own']:.0f} B")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"cpu": cpu, "d": D, "extraction": ext, "latency": lat, "memory": mem}, f, indent=2
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
