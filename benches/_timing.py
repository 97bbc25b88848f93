"""Timing helpers the engine benches share: `process` latencies, alone and while a learning cycle
runs on another thread (the "p99 during loop B / loop C" measurements)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


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
