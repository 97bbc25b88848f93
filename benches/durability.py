"""Cost of the engine's durability: ``feedback`` latency per log mode, and ``process`` p99 /
throughput under an 8-thread load with loop B and periodic checkpoints.

``feedback`` is timed alone (each trajectory id comes from an untimed ``process``), from Python,
single thread, at d = 256 with the loop-B thread off, for ``durability`` ∈ {off, group, sync}.

    python benches/durability.py [--n 3000] [--dim 256] [--load-seconds 5] [--dir /tmp/x]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from sona import _sona


def feedback_latency(mode: str, n: int, dim: int, work: Path) -> dict[str, float]:
    """p50/p99 of ``feedback`` (µs) with the log in ``mode``."""
    cfg = {"dim": dim, "learning_mode": "instant_only", "bank_index": "flat"}
    if mode != "off":
        cfg |= {"log_path": str(work / f"{mode}.db"), "durability": mode}
    e = _sona.Engine(json.dumps(cfg))
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((n + 200, dim)).astype(np.float32)
    samples = np.empty(n)
    for i in range(n + 200):
        tid = e.process(xs[i]).trajectory_id
        t0 = time.perf_counter_ns()
        e.feedback(tid, 0.5)
        if i >= 200:
            samples[i - 200] = (time.perf_counter_ns() - t0) / 1e3
    e.close()
    return {
        "p50_us": float(np.percentile(samples, 50)),
        "p99_us": float(np.percentile(samples, 99)),
    }


def load(seconds: float, dim: int, work: Path) -> dict[str, float]:
    """8 threads of process (+ feedback 80 %) with loop B and checkpoints, group-mode log."""
    e = _sona.Engine(
        json.dumps(
            {
                "dim": dim,
                "bank_index": "flat",
                "loop_b_every": 1000,
                "loop_b_interval_s": 0.5,
                "log_path": str(work / "load.db"),
                "durability": "group",
                "checkpoint_dir": str(work / "ck"),
            }
        )
    )
    stop = time.monotonic() + seconds
    lat: list[list[float]] = [[] for _ in range(8)]

    def worker(k: int) -> None:
        rng = np.random.default_rng(k)
        xs = rng.standard_normal((1024, dim)).astype(np.float32)
        i = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter_ns()
            d = e.process(xs[i % 1024])
            lat[k].append((time.perf_counter_ns() - t0) / 1e3)
            if rng.random() < 0.8:
                e.feedback(d.trajectory_id, float(rng.random()))
            i += 1

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.monotonic() - t0
    s = e.stats()
    e.close()
    all_lat = np.concatenate([np.array(x) for x in lat])
    return {
        "process_per_s": len(all_lat) / wall,
        "process_p50_us": float(np.percentile(all_lat, 50)),
        "process_p99_us": float(np.percentile(all_lat, 99)),
        "loop_b_runs": s["loop_b_runs"],
        "checkpoints": s["durability"]["checkpoints"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--load-seconds", type=float, default=5.0)
    ap.add_argument("--dir", default=None, help="where the logs go (default: a temporary dir)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        work = Path(d)
        for mode in ("off", "group", "sync"):
            r = feedback_latency(mode, a.n, a.dim, work)
            print(
                f"feedback d={a.dim} durability={mode:5s}: "
                f"p50 {r['p50_us']:8.1f} µs  p99 {r['p99_us']:8.1f} µs"
            )
        r2 = load(a.load_seconds, a.dim, work)
        print("8-thread load (group log, loop B, checkpoints): " + json.dumps(r2))


if __name__ == "__main__":
    main()
