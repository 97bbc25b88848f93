"""`sona.engine`: SONAConfig (defaults from Rust, validation, builder), SONAEngine (process,
feedback, query with embedders and backends, learning, save/load, lifetime) and its bad input."""

from __future__ import annotations

import gc
import json
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sona
from sona import _sona
from sona.engine import LearningMode, Response, SONAConfig, SONAEngine

D = 32


def _cfg(**kw: Any) -> SONAConfig:
    base: dict[str, Any] = {
        "dim": D,
        "learning_mode": LearningMode.INSTANT_ONLY,
        "loop_b_every": 0,
        "loop_b_interval_s": 0.0,
    }
    return SONAConfig(**{**base, **kw})


def _vec(seed: int = 0, d: int = D) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


BACKENDS = [lambda p: f"t0:{p}", lambda p: f"t1:{p}", lambda p: f"t2:{p}", lambda p: f"t3:{p}"]


# --- SONAConfig --------------------------------------------------------------------------------


def test_config_defaults_come_from_rust() -> None:
    defaults = json.loads(_sona.engine_config_defaults())
    cfg = SONAConfig()
    assert SONAConfig.fields() == list(defaults)
    for name, value in defaults.items():
        if name not in ("tier_names", "tier_costs"):  # normalization may fill these
            assert getattr(cfg, name) == value, name
    assert cfg.learning_mode in set(LearningMode)
    assert SONAConfig(dim=64).dim == 64
    assert "dim=64" in repr(SONAConfig(dim=64))


def test_config_is_immutable_and_replace_validates() -> None:
    cfg = SONAConfig(dim=64)
    with pytest.raises(AttributeError):
        cfg.dim = 3  # type: ignore[misc]
    assert cfg.replace(cost_weight=0.01).cost_weight == 0.01
    assert cfg.replace(cost_weight=0.01).dim == 64
    assert cfg == SONAConfig(dim=64) and cfg != SONAConfig(dim=65)
    assert SONAConfig.from_json(cfg.to_json()) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(AttributeError, match="no setting"):
        _ = cfg.no_such_setting


@pytest.mark.parametrize(
    "bad",
    [
        {"dim": 0},
        {"dim": 10**9},
        {"n_tiers": 0},
        {"cost_weight": -1.0},
        {"cost_weight": float("nan")},
        {"epsilon": 1.5},
        {"readout_lr": -0.1},
        {"readout_lr": 101.0},
        {"readout_lr": float("nan")},
        {"replay_half_life": -1},
        {"replay_half_life": 2_000_000_000},
        {"learning_mode": "sometimes"},
        {"no_such_setting": 1},
        {"dim": "large"},
        {"tier_costs": [1.0, 2.0], "n_tiers": 4},
        {"tier_names": ["a", "b"], "tier_costs": [1.0, 2.0, 3.0]},
        {"seed": object()},
    ],
)
def test_config_out_of_range_is_a_config_error(bad: dict[str, Any]) -> None:
    with pytest.raises(sona.ConfigError):
        SONAConfig(**bad)


def test_config_counts_the_tiers_it_lists() -> None:
    cfg = SONAConfig(tier_names=["small", "large"])
    assert (cfg.n_tiers, cfg.tier_costs) == (2, [1.0, 3.0])
    assert SONAConfig(tier_costs=[1.0, 4.0, 9.0]).n_tiers == 3
    # A config that states its count keeps it, and a list of another length is refused.
    with pytest.raises(sona.ConfigError, match="tier_names"):
        SONAConfig(n_tiers=3, tier_names=["a", "b"])


def test_config_from_bad_json() -> None:
    with pytest.raises(sona.ConfigError):
        SONAConfig.from_json("{not json")
    with pytest.raises(sona.ConfigError):
        SONAConfig.from_json("[1, 2]")


def test_builder_as_in_the_overview() -> None:
    with pytest.warns(UserWarning, match="target_latency_us"):
        cfg = (
            SONAConfig.builder()
            .lora_rank(8)
            .ewc_lambda(1000.0)
            .learning_loops(LearningMode.ALL_THREE_TIERS)
            .memory_budget_mb(50)
            .target_latency_us(100)
            .build()
        )
    assert cfg.base_rank == 8 and cfg.ewc_lambda == 1000.0 and cfg.memory_budget_mb == 50
    assert cfg.learning_mode is LearningMode.ALL_THREE_TIERS
    assert SONAConfig.builder().dim(128).cost_weight(0.01).build().dim == 128
    with pytest.raises(AttributeError):
        SONAConfig.builder().no_such_setting(1)  # type: ignore[operator]
    with pytest.raises(sona.ConfigError):
        SONAConfig.builder().dim(-5).build()
    with pytest.raises(sona.ConfigError):
        SONAConfig.builder().target_latency_us(-1)


# --- process / feedback --------------------------------------------------------------------


def test_process_and_feedback_round_trip() -> None:
    with SONAEngine(_cfg()) as engine:
        assert engine.dim == D and engine.n_tiers == 4 and not engine.closed
        d = engine.process(_vec())
        assert 0 <= d.tier < 4 and 0 < d.propensity <= 1
        assert d.utilities.shape == (4,) and d.utilities.dtype == np.float32
        engine.feedback(d.trajectory_id, 1.0)
        d2 = engine.process(_vec(1).astype(np.float64).tolist())  # lists/float64 are converted
        assert d2.trajectory_id > d.trajectory_id
        engine.feedback(d2.trajectory_id, 0.25, source="judge")
    assert engine.closed


def test_batch_forms() -> None:
    with SONAEngine(_cfg()) as engine:
        xs = np.stack([_vec(i) for i in range(20)])
        decisions = engine.process_batch(xs)
        assert len(decisions) == 20
        ids = [d.trajectory_id for d in decisions]
        assert len(set(ids)) == 20
        engine.feedback_batch(ids, np.linspace(0, 1, 20))
        with pytest.raises(sona.UnknownIdError):
            engine.feedback_batch(ids[:1], [1.0])  # already used


def test_bad_feedback_leaves_the_trajectory_pending() -> None:
    with SONAEngine(_cfg()) as engine:
        d = engine.process(_vec())
        for reward in (-0.1, 1.5, float("nan"), float("inf")):
            with pytest.raises(sona.InvalidInputError):
                engine.feedback(d.trajectory_id, reward)
        with pytest.raises(sona.InvalidInputError):
            engine.feedback(d.trajectory_id, "high")  # type: ignore[arg-type]
        with pytest.raises((sona.InvalidInputError, sona.ConfigError)):
            engine.feedback(d.trajectory_id, 1.0, source="self-confidence")
        engine.feedback(d.trajectory_id, 1.0)  # still pending: the bad calls changed nothing
        with pytest.raises(sona.UnknownIdError):
            engine.feedback(d.trajectory_id, 1.0)  # repeated
        with pytest.raises(sona.UnknownIdError):
            engine.feedback(10**12, 1.0)  # unknown
        with pytest.raises(sona.UnknownIdError):
            engine.feedback(-1, 1.0)
        with pytest.raises(sona.InvalidInputError):
            engine.feedback(1.5, 1.0)  # type: ignore[arg-type]


def test_expired_trajectory_is_unknown() -> None:
    with SONAEngine(_cfg(pending_ttl_s=0.05)) as engine:
        d = engine.process(_vec())
        time.sleep(0.2)
        with pytest.raises(sona.UnknownIdError):
            engine.feedback(d.trajectory_id, 1.0)
        d2 = engine.process(_vec(1))  # still usable
        engine.feedback(d2.trajectory_id, 1.0)


def test_bad_feedback_batch_applies_nothing() -> None:
    with SONAEngine(_cfg()) as engine:
        ids = [d.trajectory_id for d in engine.process_batch(np.stack([_vec(i) for i in range(3)]))]
        with pytest.raises(sona.InvalidInputError):
            engine.feedback_batch(ids, [1.0, 2.0, 0.5])
        with pytest.raises(sona.DimensionError):
            engine.feedback_batch(ids, [1.0, 0.5])
        with pytest.raises(sona.UnknownIdError):
            engine.feedback_batch([ids[0], 10**12], [1.0, 1.0])
        with pytest.raises(sona.UnknownIdError):
            engine.feedback_batch([ids[0], -3], [1.0, 1.0])
        with pytest.raises(sona.InvalidInputError):
            engine.feedback_batch([[1, 2]], [1.0])
        with pytest.raises(sona.InvalidInputError):
            engine.feedback_batch([0.5], [1.0])
        engine.feedback_batch(ids, [1.0, 0.0, 0.5])  # all three were still pending


def test_bad_vectors() -> None:
    with SONAEngine(_cfg()) as engine:
        before = engine.stats()
        with pytest.raises(sona.DimensionError):
            engine.process(np.ones(D + 1, np.float32))
        with pytest.raises(sona.DimensionError):
            engine.process(np.ones((2, D), np.float32))
        bad = _vec()
        bad[3] = np.nan
        with pytest.raises(sona.NonFiniteError):
            engine.process(bad)
        with pytest.raises(sona.DimensionError):
            engine.process_batch(np.ones((3, D + 2), np.float32))
        xs = np.stack([_vec(i) for i in range(3)])
        xs[2, 0] = np.inf
        with pytest.raises(sona.NonFiniteError):
            engine.process_batch(xs)
        with pytest.raises(sona.InvalidInputError):
            engine.process("not a vector")
        assert engine.stats() == before  # nothing was recorded


def test_calls_after_close_raise() -> None:
    engine = SONAEngine(_cfg(), backends=BACKENDS)
    d = engine.process(_vec())
    engine.close()
    engine.close()  # idempotent
    for call in (
        lambda: engine.process(_vec()),
        lambda: engine.feedback(d.trajectory_id, 1.0),
        lambda: engine.query("hello"),
        lambda: engine.background_learn(),
        lambda: engine.save("/tmp/never"),
        lambda: engine.deep_learn(),
    ):
        with pytest.raises(sona.SonaError):
            call()
    assert "closed" in repr(engine)


# --- query: embedder and backends ----------------------------------------------------------


def test_query_routes_text_to_a_backend() -> None:
    with SONAEngine(_cfg(), backends=BACKENDS) as engine:
        r = engine.query("How do I reset my password?")
        assert isinstance(r, Response)
        assert r.text == f"t{r.tier}:How do I reset my password?"
        assert r.tier_name == engine.tier_names[r.tier]
        assert r.latency_ms > 0 and 0 < r.propensity <= 1
        assert all(isinstance(p, int) for p in r.patterns)
        engine.feedback(r.trajectory_id, 1.0)


def test_backends_by_tier_name_and_validation() -> None:
    cfg = _cfg(n_tiers=2, tier_names=["small", "large"], tier_costs=[1.0, 10.0])
    with SONAEngine(cfg, backends={"small": str.lower, "large": str.upper}) as engine:
        r = engine.query("MiXeD")
        assert r.text == ("mixed" if r.tier_name == "small" else "MIXED")
    with pytest.raises(sona.ConfigError, match="missing"):
        SONAEngine(cfg, backends={"small": str.lower})
    with pytest.raises(sona.ConfigError, match="unknown"):
        SONAEngine(cfg, backends={"small": str.lower, "large": str.upper, "huge": str.title})
    with pytest.raises(sona.ConfigError, match="2 backends"):
        SONAEngine(cfg, backends=[str.lower])
    with pytest.raises(sona.ConfigError):
        SONAEngine(cfg, backends=str.lower)  # type: ignore[arg-type]
    with pytest.raises(sona.InvalidInputError):
        SONAEngine(cfg, backends=[str.lower, 42])  # type: ignore[list-item]
    with SONAEngine(cfg) as engine, pytest.raises(sona.ConfigError, match="backends"):
        engine.query("no backends configured")
    with pytest.raises(sona.ConfigError):
        SONAEngine("not a config")  # type: ignore[arg-type]


def _failing(p: str) -> str:
    raise RuntimeError("model server exploded")


def test_a_failing_backend_is_a_backend_error_and_recorded_failed() -> None:
    cfg = _cfg(n_tiers=1, tier_names=["only"], tier_costs=[1.0])
    with SONAEngine(cfg, backends=[_failing]) as engine:
        with pytest.raises(sona.BackendError, match="exploded") as info:
            engine.query("hello")
        err = info.value
        assert isinstance(err.__cause__, RuntimeError) and err.tier == 0
        # Recorded as failed (reward 0, source "error"): feedback on it is now a repeat.
        with pytest.raises(sona.UnknownIdError):
            engine.feedback(err.trajectory_id, 1.0)
        # The engine stays usable.
        d = engine.process(_vec())
        engine.feedback(d.trajectory_id, 1.0)


def test_a_backend_timeout_and_a_non_text_answer_are_backend_errors() -> None:
    from sona.backends import CallableBackend

    slow = CallableBackend(lambda p: (time.sleep(1.0), p)[1], timeout=0.05)
    cfg = _cfg(n_tiers=2, tier_names=["a", "b"], tier_costs=[1.0, 2.0])
    with SONAEngine(cfg, backends=[slow, lambda p: 42]) as engine:  # type: ignore[list-item]
        for _ in range(6):
            with pytest.raises(sona.BackendError) as info:
                engine.query("x")
            assert isinstance(info.value.__cause__, (TimeoutError, TypeError))
        assert engine.query.__doc__


class _BadEmbedder:
    def __init__(self, out: Any, dim: int = D) -> None:
        self.out = out
        self.dim = dim

    def embed(self, text: str) -> Any:
        return self.out

    def embed_batch(self, texts: list[str]) -> Any:
        return np.stack([self.out for _ in texts])


def test_bad_embedder_output_is_rejected_before_anything_is_recorded() -> None:
    nan = np.full(D, np.nan, np.float32)
    with SONAEngine(_cfg(), embedder=_BadEmbedder(nan), backends=BACKENDS) as engine:
        before = engine.stats()
        with pytest.raises(sona.NonFiniteError, match="_BadEmbedder"):
            engine.query("x")
        assert engine.stats() == before
    short = _BadEmbedder(np.ones(D - 1, np.float32))  # claims dim D, returns D - 1
    with SONAEngine(_cfg(), embedder=short, backends=BACKENDS) as engine:
        with pytest.raises(sona.DimensionError, match="length 32"):
            engine.query("x")
    with pytest.raises(sona.ConfigError, match="dim"):
        SONAEngine(_cfg(), embedder=_BadEmbedder(np.ones(8), dim=8))
    with pytest.raises(sona.ConfigError):
        SONAEngine(_cfg(), embedder=object())  # type: ignore[arg-type]
    with SONAEngine(_cfg(), backends=BACKENDS) as engine:
        with pytest.raises(sona.InvalidInputError):
            engine.query(b"bytes")  # type: ignore[arg-type]
        with pytest.raises(sona.InvalidInputError, match="bytes"):
            engine.query("x" * (2 << 20))  # over the hashing embedder's cap


# --- learning, metrics, persistence, lifetime ----------------------------------------------


def test_background_learn_metrics_and_deep_learn() -> None:
    with SONAEngine(_cfg(learning_mode=LearningMode.INSTANT_AND_BACKGROUND)) as engine:
        for i in range(200):
            d = engine.process(_vec(i % 10))
            engine.feedback(d.trajectory_id, 1.0 if d.tier == i % 4 else 0.0)
        result = engine.background_learn()
        assert result.elapsed_ms >= 0
        metrics = engine.improvement_metrics()
        assert isinstance(metrics, dict) and metrics
        assert isinstance(engine.stats(), dict)
        deep = engine.deep_learn()
        assert isinstance(deep, sona.DeepLearningResult), type(deep)
        assert deep.probe_size > 0 and deep.replayed > 0, deep
        assert isinstance(deep.accepted, bool) and deep.phi >= 0.0
        if not deep.accepted:
            assert deep.probe_after < deep.probe_before
        assert engine.improvement_metrics()["phi"] == deep.phi
        assert deep.to_dict()["replayed"] == deep.replayed and "DeepLearningResult(" in repr(deep)
        # Creative edges: never more added than proposed, counts are reported.
        assert 0 <= deep.edges_added <= deep.creative_proposed <= 64, deep
        assert 0 <= deep.edges_removed <= deep.edges_before, deep


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    with SONAEngine(_cfg(seed=3), backends=BACKENDS) as engine:
        for i in range(50):
            d = engine.process(_vec(i))
            engine.feedback(d.trajectory_id, float(d.tier == 1))
        engine.background_learn()
        engine.save(tmp_path / "ckpt")
        probe = np.stack([_vec(100 + i) for i in range(5)])
        want = [d.predicted for d in engine.process_batch(probe)]
    loaded = SONAEngine.load(tmp_path / "ckpt", backends=BACKENDS)
    with loaded:
        assert loaded.config == engine.config
        got = [d.predicted for d in loaded.process_batch(probe)]
        for a, b in zip(want, got, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert loaded.query("still answers").text.startswith("t")
        np.testing.assert_array_equal(
            loaded.embedder.embed("same embedder"), engine.embedder.embed("same embedder")
        )


def test_load_rejects_missing_and_corrupted_directories(tmp_path: Path) -> None:
    with pytest.raises(sona.CheckpointError):
        SONAEngine.load(tmp_path / "nowhere")
    with SONAEngine(_cfg()) as engine:
        engine.save(tmp_path / "ok")
    (tmp_path / "ok" / "sona.json").write_text("{broken")
    with pytest.raises(sona.CheckpointError):
        SONAEngine.load(tmp_path / "ok")
    with SONAEngine(_cfg()) as engine:
        engine.save(tmp_path / "ok2")
    (tmp_path / "ok2" / "engine.ckpt").write_bytes(b"garbage" * 10)
    with pytest.raises(sona.CheckpointError):
        SONAEngine.load(tmp_path / "ok2")
    (tmp_path / "file").write_text("x")
    with SONAEngine(_cfg()) as engine, pytest.raises(sona.CheckpointError):
        engine.save(tmp_path / "file")


def test_two_threads_share_one_engine() -> None:
    with SONAEngine(
        _cfg(learning_mode=LearningMode.INSTANT_AND_BACKGROUND), backends=BACKENDS
    ) as engine:
        errors: list[BaseException] = []

        def work(offset: int) -> None:
            try:
                for i in range(200):
                    if i % 3 == 0:
                        r = engine.query(f"question {offset} {i}")
                        engine.feedback(r.trajectory_id, 0.5)
                    else:
                        d = engine.process(_vec(offset + i))
                        engine.feedback(d.trajectory_id, 1.0)
                    if i == 100:
                        engine.background_learn()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors


def test_engine_closes_at_interpreter_exit() -> None:
    code = (
        "from sona.engine import SONAEngine, SONAConfig, LearningMode\n"
        "e = SONAEngine(SONAConfig(dim=16, learning_mode=LearningMode.INSTANT_AND_BACKGROUND,"
        " loop_b_interval_s=0.01))\n"
        "import numpy as np\n"
        "for i in range(50):\n"
        "    d = e.process(np.ones(16, np.float32))\n"
        "    e.feedback(d.trajectory_id, 1.0)\n"
        "print('done')\n"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert time.perf_counter() - started < 30


def test_unreferenced_engines_are_collected() -> None:
    import weakref

    engine = SONAEngine(_cfg())
    ref = weakref.ref(engine)
    del engine
    gc.collect()
    assert ref() is None


# --- per-tenant micro-LoRAs --------------------------------------------------------------------


def test_tenant_feedback_moves_only_that_tenant(tmp_path: Path) -> None:
    """A's traffic adapts A's pair of micro-LoRAs; B and untenanted outputs stay bit-identical."""
    from sona.errors import InvalidInputError

    with SONAEngine(_cfg(epsilon=0.0)) as engine:
        probes = [_vec(100 + i) for i in range(6)]
        b0 = [engine.process(p, tenant="b").predicted for p in probes]
        s0 = [engine.process(p).predicted for p in probes]
        a0 = [engine.process(p, tenant="a").predicted for p in probes]
        for i in range(150):
            d = engine.process(_vec(i), tenant="a")
            engine.feedback(d.trajectory_id, 0.0)
        for p, before in zip(probes, b0, strict=True):
            assert np.array_equal(engine.process(p, tenant="b").predicted, before)
        for p, before in zip(probes, s0, strict=True):
            assert np.array_equal(engine.process(p).predicted, before)
        a1 = [engine.process(p, tenant="a").predicted for p in probes]
        # Zero rewards teach A that its chosen tiers fail: its predictions fall.
        assert np.mean(a1) < np.mean(a0) - 0.05
        assert engine.tenant_count == 2
        assert engine.tenant_adapter("zz") is None
        a, bt = engine.tenant_adapter("a")
        assert a.shape[1] == D and bt.shape[1] == D and np.abs(bt).sum() > 0
        engine.save(tmp_path / "ck")
        before = engine.stats()["processed"]
        for bad in ("", "a\x00", "x" * 300):
            with pytest.raises(InvalidInputError):
                engine.process(_vec(), tenant=bad)
        with pytest.raises(InvalidInputError):
            engine.process(_vec(), tenant=3)  # type: ignore[arg-type]
        assert engine.stats()["processed"] == before and engine.tenant_count == 2
    restored = SONAEngine.load(tmp_path / "ck")
    try:
        assert restored.tenant_count == 2
        np.testing.assert_array_equal(restored.tenant_adapter("a")[1], bt)
    finally:
        restored.close()


def test_tenant_process_and_feedback_from_two_threads() -> None:
    with SONAEngine(_cfg()) as engine:
        errors: list[BaseException] = []

        def work(tenant: str) -> None:
            try:
                for i in range(200):
                    d = engine.process(_vec(i), tenant=tenant if i % 3 else None)
                    engine.feedback(d.trajectory_id, float(i % 2))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        stats = engine.stats()
        tenanted = 2 * sum(1 for i in range(200) if i % 3)
        assert stats["tenant_feedbacks"] == tenanted and stats["pending"] == 0
        assert stats["feedbacks"] == 400 - tenanted  # the shared loop A's
