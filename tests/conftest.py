"""Shared fixtures for the Python test suite."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import settings

# CI runs the property tests with fixed draws and no per-example deadline, so a run is
# reproducible and a loaded machine cannot fail it; local runs keep hypothesis's random search.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


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


def write_while_reading(
    write: Callable[[], None], read: Callable[[], None], timeout: float = 180.0
) -> None:
    """Runs ``write`` once on one thread while another calls ``read`` until it finishes; fails on
    any exception of either thread, or when they are still running after ``timeout`` seconds (a
    deadlock)."""
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            write()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                read()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout)
    assert not any(th.is_alive() for th in threads), "deadlock"
    assert not errors, errors
