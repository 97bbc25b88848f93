"""The engine binding (`sona._sona.Engine`, `Router`): round trip, bad input, files, threads."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sona import _sona
from sona.errors import (
    CheckpointError,
    ConfigError,
    DimensionError,
    InvalidInputError,
    NonFiniteError,
    UnknownIdError,
)


def make(dim: int = 32, **kw: object) -> _sona.Engine:
    cfg = {"dim": dim, "learning_mode": "instant_only", "bank_index": "flat", **kw}
    return _sona.Engine(json.dumps(cfg))


def rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return rng.standard_normal((n, d)).astype(np.float32)


def test_config_defaults_and_validation() -> None:
    d = json.loads(_sona.engine_config_defaults())
    assert d["n_tiers"] == 4 and d["tier_costs"] == [1.0, 3.0, 10.0, 30.0]
    norm = json.loads(_sona.engine_config_validate(json.dumps({"dim": 768, "n_tiers": 2})))
    assert norm["dim"] == 768 and norm["tier_costs"] == [1.0, 3.0]
    assert set(norm) == set(d)
    for bad in ['{"n_tiers": 0}', '{"epsilon": 2}', '{"bogus": 1}', "not json", "[1]"]:
        with pytest.raises(ConfigError):
            _sona.engine_config_validate(bad)
        with pytest.raises(ConfigError):
            _sona.Engine(bad)


def test_round_trip(rng: np.random.Generator) -> None:
    e = make()
    assert (e.dim, e.n_tiers, e.closed) == (32, 4, False)
    assert json.loads(e.config_json)["dim"] == 32
    xs = rows(rng, 100, 32)
    ds = e.process_batch(xs)
    assert len(ds) == 100
    d0 = ds[0]
    assert 0 <= d0.tier < 4 and 0 < d0.propensity <= 1
    assert d0.utilities.dtype == np.float32 and d0.utilities.shape == (4,)
    assert np.all((d0.predicted >= 0) & (d0.predicted <= 1))
    costs = np.array([1, 3, 10, 30], dtype=np.float32)
    np.testing.assert_allclose(d0.utilities, d0.predicted - 0.002 * costs, atol=1e-6)
    ids = np.array([d.trajectory_id for d in ds], dtype=np.uint64)
    assert len(set(ids.tolist())) == 100
    e.feedback_batch(ids[:50], np.full(50, 0.9, dtype=np.float32), source="judge")
    for i in ids[50:]:
        e.feedback(int(i), 0.2, source="implicit")
    st = e.stats()
    assert (st["processed"], st["feedbacks"], st["pending"]) == (100, 100, 0)
    r = e.background_learn()
    assert r.replayed > 0 and r.patterns_total > 0 and r.elapsed_ms > 0
    assert "LearningResult(" in repr(r) and r.to_dict()["cycle"] == 1
    d = e.process(xs[0])
    assert len(d.patterns) > 0
    m = e.improvement_metrics()
    assert m["overall"]["n"] == 100
    assert abs(m["overall"]["mean_reward"] - 0.55) < 1e-6


def test_bad_input_leaves_state_unchanged(rng: np.random.Generator) -> None:
    e = make()
    x = rows(rng, 1, 32)[0]
    d = e.process(x)
    before = e.stats()
    with pytest.raises(DimensionError):
        e.process(x[:31])
    with pytest.raises(DimensionError):
        e.process_batch(rows(rng, 3, 31))
    bad = x.copy()
    bad[5] = np.nan
    with pytest.raises(NonFiniteError):
        e.process(bad)
    with pytest.raises(InvalidInputError):
        e.process(x.astype(np.float64))
    with pytest.raises(InvalidInputError):
        e.process(np.zeros(32, dtype=np.float32))
    for r in (1.5, -0.1, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError):
            e.feedback(d.trajectory_id, r)
    with pytest.raises(InvalidInputError):
        e.feedback(d.trajectory_id, 0.5, source="oracle")
    with pytest.raises(UnknownIdError):
        e.feedback(d.trajectory_id + 1000, 0.5)
    with pytest.raises(UnknownIdError):
        e.feedback(-1, 0.5)
    ids = np.array([d.trajectory_id, d.trajectory_id], dtype=np.uint64)
    with pytest.raises(UnknownIdError):
        e.feedback_batch(ids, np.array([0.5, 0.5], dtype=np.float32))
    with pytest.raises(InvalidInputError):
        e.feedback_batch(ids[:1], np.array([1.5], dtype=np.float32))
    with pytest.raises(InvalidInputError):
        e.feedback_batch([1], [0.5])  # type: ignore[arg-type]
    assert e.stats() == before
    e.feedback(d.trajectory_id, 0.0, source="error")
    with pytest.raises(UnknownIdError):
        e.feedback(d.trajectory_id, 0.5)  # repeated


def test_calls_after_close(rng: np.random.Generator) -> None:
    e = make(learning_mode="instant_and_background")
    x = rows(rng, 1, 32)[0]
    d = e.process(x)
    e.close()
    e.close()
    assert e.closed
    for call in (
        lambda: e.process(x),
        lambda: e.process_batch(x[None, :]),
        lambda: e.feedback(d.trajectory_id, 0.5),
        lambda: e.background_learn(),
        lambda: e.save("/tmp/never-written"),
    ):
        with pytest.raises(InvalidInputError, match="closed"):
            call()
    assert e.stats()["closed"] is True


def test_save_load_gives_identical_decisions(rng: np.random.Generator, tmp_path: Path) -> None:
    e = make(epsilon=0.0, seed=3)
    xs = rows(rng, 300, 32)
    ds = e.process_batch(xs)
    e.feedback_batch(
        np.array([d.trajectory_id for d in ds], dtype=np.uint64),
        rng.uniform(0, 1, 300).astype(np.float32),
    )
    e.background_learn()
    e.save(str(tmp_path / "ck"))
    e2 = _sona.Engine.load(str(tmp_path / "ck"))
    assert e2.config_json == e.config_json
    s1, s2 = e.stats(), e2.stats()
    for k in ("processed", "feedbacks", "patterns", "replay", "generation", "next_trajectory_id"):
        assert s1[k] == s2[k], k
    for x in xs[:20]:
        a, b = e.process(x), e2.process(x)
        assert a.trajectory_id == b.trajectory_id
        assert a.tier == b.tier and a.patterns == b.patterns
        np.testing.assert_array_equal(a.predicted, b.predicted)
    m1, m2 = e.improvement_metrics(), e2.improvement_metrics()
    for part in ("overall", "current"):
        assert m1[part]["n"] == m2[part]["n"]
        assert m1[part]["regret"] == pytest.approx(m2[part]["regret"], abs=1e-12)
        assert m1[part]["tier_shares"] == m2[part]["tier_shares"]
    # Learning continues identically on both.
    ra, rb = e.background_learn(), e2.background_learn()
    assert ra.loss_after == rb.loss_after


def test_load_refuses_corrupt_or_mixed_files(rng: np.random.Generator, tmp_path: Path) -> None:
    e = make()
    e.feedback(e.process(rows(rng, 1, 32)[0]).trajectory_id, 1.0)
    e.save(str(tmp_path / "a"))
    e.save(str(tmp_path / "b"))
    with pytest.raises(CheckpointError):
        _sona.Engine.load(str(tmp_path / "missing"))
    # Mixing files of two saves is refused.
    (tmp_path / "a" / "bank.ckpt").write_bytes((tmp_path / "b" / "bank.ckpt").read_bytes())
    with pytest.raises(CheckpointError):
        _sona.Engine.load(str(tmp_path / "a"))
    raw = bytearray((tmp_path / "b" / "engine.ckpt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "b" / "engine.ckpt").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        _sona.Engine.load(str(tmp_path / "b"))


def test_two_threads_conserve_counts_while_loop_b_runs(rng: np.random.Generator) -> None:
    e = make(dim=64, loop_b_steps=20)
    xs = rows(rng, 400, 64)
    warm = e.process_batch(xs[:100])
    e.feedback_batch(
        np.array([d.trajectory_id for d in warm], dtype=np.uint64), np.ones(100, dtype=np.float32)
    )
    errors: list[BaseException] = []
    done = threading.Event()

    def worker(part: np.ndarray) -> None:
        try:
            for x in part:
                d = e.process(x)
                e.feedback(d.trajectory_id, float(d.tier == 0))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def learner() -> None:
        try:
            while not done.is_set():
                e.background_learn()
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    lt = threading.Thread(target=learner)
    lt.start()
    ts = [
        threading.Thread(target=worker, args=(xs[100 + 150 * i : 250 + 150 * i],)) for i in (0, 1)
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    done.set()
    lt.join()
    assert not errors, errors
    st = e.stats()
    assert st["processed"] == 400 and st["feedbacks"] == 400 and st["pending"] == 0
    assert st["loop_b_runs"] >= 1
    assert e.improvement_metrics()["overall"]["n"] == 400


def test_gil_is_released_during_loop_b(rng: np.random.Generator) -> None:
    e = make(dim=256, loop_b_steps=400, loop_b_batch=64)
    xs = rows(rng, 300, 256)
    ds = e.process_batch(xs)
    e.feedback_batch(
        np.array([d.trajectory_id for d in ds], dtype=np.uint64), np.ones(300, dtype=np.float32)
    )
    t = threading.Thread(target=e.background_learn)
    t.start()
    ticks = 0
    t0 = time.perf_counter()
    while t.is_alive():
        ticks += 1
    elapsed = time.perf_counter() - t0
    t.join()
    # With the GIL held for the whole cycle the loop would run a handful of times.
    assert elapsed > 0.02
    assert ticks > 1000


def test_router_alone(rng: np.random.Generator) -> None:
    r = _sona.Router(8, 3, hidden=8, rank_w=2, rank_u=2, seed=1)
    assert r.n_params > 0 and r.size_bytes == 4 * r.n_params and "Router(" in repr(r)
    seq = rows(rng, 4, 8) * 0.3
    p = r.forward(seq)
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))
    loss, g = r.loss_and_grad(seq, 1, 1.0)
    assert g.shape == (r.n_params,) and loss > 0
    # The gradient matches a central finite difference of the loss on a few coordinates.
    th = r.parameters()
    for i in rng.choice(r.n_params, 8, replace=False):
        h = 1e-2
        tp, tm = th.copy(), th.copy()
        tp[i] += h
        tm[i] -= h
        r.set_parameters(tp)
        lp = r.loss_and_grad(seq, 1, 1.0)[0]
        r.set_parameters(tm)
        lm = r.loss_and_grad(seq, 1, 1.0)[0]
        assert abs((lp - lm) / (2 * h) - g[i]) < 2e-3 + 0.02 * abs(g[i])
    r.set_parameters(th)
    losses = [r.train_step(seq, 1, 1.0, lr=0.05) for _ in range(50)]
    assert losses[-1] < losses[0]
    with pytest.raises(DimensionError):
        r.forward(rows(rng, 4, 7))
    with pytest.raises(InvalidInputError):
        r.train_step(seq, 3, 1.0)
    with pytest.raises(InvalidInputError):
        r.train_step(seq, 0, 1.5)
    with pytest.raises(DimensionError):
        r.set_parameters(np.zeros(3, dtype=np.float32))
    with pytest.raises(ConfigError):
        _sona.Router(8, 0)


def test_router_two_threads(rng: np.random.Generator) -> None:
    r = _sona.Router(8, 2, seed=2)
    seq = rows(rng, 3, 8) * 0.3

    def work() -> None:
        for _ in range(200):
            r.train_step(seq, 0, 1.0)
            r.forward(seq)

    ts = [threading.Thread(target=work) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert r.forward(seq)[0] > 0.9


def test_router_module(rng: np.random.Generator) -> None:
    from sona.router import Router

    r = Router(6, 2, hidden=8, rank_w=2, rank_u=2, seed=4)
    seq = rng.standard_normal((3, 6)) * 0.3  # float64 is converted
    assert r.forward(seq).shape == (2,)
    loss, g = r.loss_and_grad(seq, 0, 1.0)
    assert g.shape == (r.n_params,)
    assert r.train_step(seq.tolist(), 0, 1.0) == pytest.approx(loss)
    assert "Router(" in repr(r) and r.size_bytes == 4 * r.n_params
    r.set_parameters(r.parameters())
    with pytest.raises(ConfigError):
        r.train_step(seq, -1, 1.0)
    with pytest.raises(InvalidInputError):
        r.train_step(seq, 0, "1.0")  # type: ignore[arg-type]
    with pytest.raises(DimensionError):
        r.forward(np.zeros((3, 5)))


def test_value_objects_read_from_two_threads(rng: np.random.Generator) -> None:
    e = make()
    d = e.process(rows(rng, 1, 32)[0])
    e.feedback(d.trajectory_id, 1.0)
    r = e.background_learn()
    deep = e.deep_learn()
    seen: list[tuple[int, int, float, int, bool, int]] = []

    def read() -> None:
        for _ in range(500):
            seen.append(
                (d.trajectory_id, d.tier, r.loss_after, len(r.to_dict()), deep.accepted,
                 len(deep.to_dict()))
            )  # fmt: skip
            assert d.utilities.shape == (4,) and isinstance(d.patterns, list)

    ts = [threading.Thread(target=read) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(set(seen)) == 1 and len(seen) == 1000


@pytest.mark.parametrize("index", ["ivf", "flat", "hnsw"])
def test_process_batch_decides_as_process_row_after_row(index: str) -> None:
    # Two identical engines over the same 2000 imported patterns; one decides a batch, the other
    # row by row: same ids, tiers, propensities, utilities and recalled patterns.
    g = np.random.default_rng(5)
    centres = g.standard_normal((16, 32))
    pats = (centres[g.integers(16, size=2000)] + 0.05 * g.standard_normal((2000, 32))).astype(
        np.float32
    )
    xs = (centres[g.integers(16, size=300)] + 0.05 * g.standard_normal((300, 32))).astype(
        np.float32
    )
    a, b = make(bank_index=index, epsilon=0.3, seed=4), make(bank_index=index, epsilon=0.3, seed=4)
    for e in (a, b):
        e.import_patterns(pats)
    batch = a.process_batch(xs)
    single = [b.process(x) for x in xs]
    assert [d.trajectory_id for d in batch] == [d.trajectory_id for d in single]
    for x, y in zip(batch, single, strict=True):
        assert (x.tier, x.propensity, x.explored, x.patterns) == (
            y.tier,
            y.propensity,
            y.explored,
            y.patterns,
        )
        np.testing.assert_array_equal(x.utilities, y.utilities)
        np.testing.assert_array_equal(x.predicted, y.predicted)
    assert any(d.explored for d in batch) and len(batch[0].patterns) == 4
    # A zero row fails the whole batch before anything is recorded.
    before = a.stats()["processed"]
    bad = xs[:100].copy()
    bad[70] = 0.0
    with pytest.raises(InvalidInputError):
        a.process_batch(bad)
    assert a.stats()["processed"] == before
