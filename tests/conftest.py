"""Shared fixtures for the Python test suite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests are deterministic."""
    return np.random.default_rng(20261125)


@contextmanager
def scribbling(shared: np.ndarray) -> Iterator[None]:
    """While inside, another thread keeps overwriting ``shared`` with NaN and back with its
    contents on entry (``np.copyto`` releases the GIL for large arrays, so the writes overlap
    calls that read ``shared``)."""
    good, bad = shared.copy(), np.full_like(shared, np.nan)
    stop = threading.Event()

    def scribble() -> None:
        while not stop.is_set():
            np.copyto(shared, bad)
            np.copyto(shared, good)

    t = threading.Thread(target=scribble)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        np.copyto(shared, good)
