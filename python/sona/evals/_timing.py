"""Latency sampling shared by the Python benchmarks: one timed call per sample (p50/p99, or the raw
samples of `process`), alone or while a learning cycle runs on another thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def latency_us(fn: Callable[[], object], calls: int, warmup: int = 100) -> tuple[float, float]:
    """p50 and p99 in microseconds of ``calls`` individually timed calls, after ``warmup`` untimed
    ones. Each sample includes ~0.1 µs of ``perf_counter_ns`` overhead."""
    for _ in range(min(warmup, calls)):
        fn()
    samples = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn()
        samples[i] = clock() - t0
    p50, p99 = np.percentile(samples, [50, 99]) / 1e3
    return float(p50), float(p99)


def process_times(engine: Any, xs: Any, n: int) -> list[int]:
    """Nanoseconds of `engine.process` on each of the first `n` rows of `xs`, one call each."""
    out = []
    for x in xs[:n]:
        t0 = time.perf_counter_ns()
        engine.process(x)
        out.append(time.perf_counter_ns() - t0)
    return out


def while_running(engine: Any, xs: Any, work: Callable[[], Any]) -> tuple[list[int], Any, float]:
    """Runs `work` on another thread and times `process` calls (in blocks of 50) until it ends.
    Returns the latencies, what `work` returned and its wall time in seconds."""
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(work()))
    busy: list[int] = []
    t0 = time.perf_counter()
    t.start()
    while t.is_alive():
        busy.extend(process_times(engine, xs, 50))
    t.join()
    return busy, result[0], time.perf_counter() - t0
