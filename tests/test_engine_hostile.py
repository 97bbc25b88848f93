"""Hostile input over the engine binding's whole API (hypothesis): random shapes, dtypes,
NaN/Inf, huge and empty values, wrong ids and rewards. Only documented exceptions (``SonaError``
subclasses, or ``TypeError`` for a wrong Python type at the binding boundary) and the state is
unchanged: ``stats()`` and a probe decision are the same before and after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sona import _sona
from sona.errors import SonaError

DIM = 8
ALLOWED = (SonaError, TypeError, OverflowError)


def _engine() -> _sona.Engine:
    e = _sona.Engine(
        json.dumps(
            {"dim": DIM, "learning_mode": "instant_only", "bank_index": "flat", "epsilon": 0.0}
        )
    )
    rng = np.random.default_rng(1)
    for _ in range(20):
        d = e.process(rng.standard_normal(DIM).astype(np.float32))
        e.feedback(d.trajectory_id, float(rng.random()))
    return e


ENGINE = _engine()
PROBE = np.linspace(-1, 1, DIM).astype(np.float32)


def _state(e: _sona.Engine) -> dict[str, Any]:
    s = e.stats()
    s.pop("durability", None)
    return s


dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.bool_, object])
specials = st.sampled_from([np.nan, np.inf, -np.inf, 1e39, -1e39])


@st.composite
def arrays(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 6))
    if kind == 0:
        shape = draw(st.lists(st.integers(0, 10), min_size=0, max_size=3))
        dt = draw(dtypes)
        try:
            return np.zeros(shape, dtype=dt)
        except (TypeError, ValueError):
            return np.zeros(shape, dtype=np.float32)
    if kind == 1:
        a = np.ones(DIM, dtype=np.float32)
        with np.errstate(over="ignore"):
            a[draw(st.integers(0, DIM - 1))] = draw(specials)
        return a
    if kind == 2:
        return np.zeros(DIM, dtype=np.float32)  # zero vector: no direction
    if kind == 3:
        return draw(st.sampled_from([None, "x", 3, 3.5, [1.0] * DIM, b"abc", {}]))
    if kind == 4:
        return np.full((DIM, 2), np.nan, dtype=np.float32).T[0]  # non-contiguous view
    if kind == 5:
        return np.ones(draw(st.sampled_from([DIM - 1, DIM + 1, 0, 10_000])), dtype=np.float32)
    return np.ones((2, DIM + 1), dtype=np.float32)


ids = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63, 2**64 - 1, 10**9]),
)
rewards = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.1, 1.0001, float("nan"), 1e308]),
)
sources = st.one_of(st.text(max_size=10), st.sampled_from(["explicit", "EXPLICIT", "", "judge "]))


def _call(op: int, a: Any, i: int, r: float, s: str, tmp: Path) -> None:
    e = ENGINE
    if op == 0:
        e.process(a)
    elif op == 1:
        e.process_batch(a)
    elif op == 2:
        e.feedback(i, r, s)
    elif op == 3:
        e.feedback(i, 0.5)
    elif op == 4:
        with np.errstate(over="ignore"):
            rs = np.array([r], dtype=np.float32)
        e.feedback_batch(a, rs, s)
    elif op == 5:
        e.feedback_batch(np.array([abs(i) % 2**64], dtype=np.uint64), a)
    elif op == 6:
        _sona.Engine.load(str(tmp / "no-such-checkpoint"), fallback=True)
    elif op == 7:
        e.save("")
    else:
        _sona.Engine(json.dumps({"dim": DIM, "durability": s, "group_commit_ms": i}))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(op=st.integers(0, 8), a=arrays(), i=ids, r=rewards, s=sources)
def test_hostile_calls_raise_documented_errors_and_change_nothing(
    tmp_path: Path, op: int, a: Any, i: int, r: float, s: str
) -> None:
    before = _state(ENGINE)
    try:
        _call(op, a, i, r, s, tmp_path)
    except ALLOWED:
        pass
    if op != 8:  # op 8 builds another engine
        assert _state(ENGINE) == before


def test_probe_decision_unchanged_by_hostile_calls(tmp_path: Path) -> None:
    e = _engine()
    p0 = e.process(PROBE).predicted
    rng = np.random.default_rng(9)
    for k in range(200):
        unknown = 10**12 + k
        for call in (
            lambda: e.process(np.full(DIM, np.nan, dtype=np.float32)),
            lambda: e.feedback(unknown, 0.5),  # noqa: B023 - called in this iteration
            lambda: e.feedback(1, float(rng.choice([np.nan, -1.0, 2.0]))),
            lambda: e.process_batch(np.ones((3, DIM + 1), dtype=np.float32)),
        ):
            with pytest.raises(SonaError):
                call()
    np.testing.assert_array_equal(e.process(PROBE).predicted, p0)


def test_nothing_is_loaded_with_pickle(tmp_path: Path) -> None:
    import pickle

    ck = tmp_path / "ck"
    ck.mkdir()
    for name in ("MANIFEST", "engine.ckpt", "ewc.ckpt", "bank.ckpt"):
        (ck / name).write_bytes(pickle.dumps({"evil": name}))
    with pytest.raises(SonaError):
        _sona.Engine.load(str(ck))
