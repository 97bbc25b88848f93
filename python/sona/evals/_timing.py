"""Latency sampling shared by the Python benchmarks: one timed call per sample, p50 and p99."""

from __future__ import annotations

import time
from collections.abc import Callable

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
