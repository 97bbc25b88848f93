"""``sona bench ewc``: latency of the EWC++ calls from Python at P ∈ {1e3, 1e4, 1e5, 1e6}.

Prints p50/p99 per call (``time.perf_counter_ns`` loops, inputs already float32 so the numbers are
the
binding plus the Rust work). Targets (issue 4): ``apply`` and a Fisher update at P = 1e5 ≤ 50 µs in
Rust; from Python the copy of the returned array is included.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

from sona._fsio import write_json
from sona.evals._timing import latency_us
from sona.ewc import EwcPlusPlus, OnlineFisher, TaskBoundaryDetector

SIZES = (1_000, 10_000, 100_000, 1_000_000)


def _time(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    p50, p99 = latency_us(fn, repeat, warmup=10)
    return {"p50_us": p50, "p99_us": p99}


def _observe_next(det: TaskBoundaryDetector, stream: Iterator[Any]) -> bool:
    return det.observe(next(stream))


def run(sizes: tuple[int, ...] = SIZES, repeat: int = 200) -> list[dict[str, Any]]:
    """One row per (call, size)."""
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for p in sizes:
        reps = max(20, repeat * 1000 // max(p, 1000) if p > 100_000 else repeat)
        g = rng.normal(size=p).astype(np.float32)
        theta = rng.normal(size=p).astype(np.float32)
        fisher = OnlineFisher(p, gamma=0.999)
        ewc = EwcPlusPlus(p, lambda_=10.0)
        ewc.complete_task(rng.normal(size=p).astype(np.float32), fisher=np.abs(g))
        batch = rng.normal(size=(32, p)).astype(np.float32) if p <= 100_000 else None
        calls: list[tuple[str, Callable[[], object]]] = [
            ("OnlineFisher.update", partial(fisher.update, g)),
            ("EwcPlusPlus.penalty", partial(ewc.penalty, theta)),
            ("EwcPlusPlus.apply", partial(ewc.apply, theta, g)),
        ]
        if batch is not None:
            calls.append(("OnlineFisher.update_batch(32)", partial(fisher.update_batch, batch)))
        for name, fn in calls:
            rows.append({"call": name, "P": p, **_time(fn, reps)})
    for d in (256, 768):
        det = TaskBoundaryDetector(d)
        xs = rng.normal(size=(512, d)).astype(np.float32)
        det.observe_batch(xs)
        stream = iter(np.tile(xs, (repeat * 5 // 512 + 2, 1)))
        timed = _time(partial(_observe_next, det, stream), repeat * 5)
        rows.append({"call": "TaskBoundaryDetector.observe", "P": d, **timed})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'call':<32} {'P (or d)':>10} {'p50 µs':>10} {'p99 µs':>10}"]
    for r in rows:
        lines.append(f"{r['call']:<32} {r['P']:>10} {r['p50_us']:>10.2f} {r['p99_us']:>10.2f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per row (P ≤ 1e5)")
    parser.add_argument("--json", metavar="OUT.json", help="write the rows as JSON")


def main(args: argparse.Namespace) -> int:
    rows = run(repeat=args.repeat)
    print(f"machine: {platform.processor() or platform.machine()}; note: shared, noisy 2-core box")
    print(format_rows(rows))
    if args.json:
        write_json(args.json, rows)
    return 0


def _register() -> None:
    from sona import cli

    cli.BENCHES["ewc"] = ("EWC++ call latency from Python (p50/p99)", add_arguments, main)


_register()
