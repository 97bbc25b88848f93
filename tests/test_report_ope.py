"""`sona report` on a saved engine, and a fast variant of `sona eval ope`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sona
from sona.cli import main
from sona.engine import SONAConfig, SONAEngine
from sona.evals import ope


def test_report_of_a_saved_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    with SONAEngine(SONAConfig(dim=16, metrics_window=50, seed=1)) as engine:
        for i in range(260):
            x = rng.standard_normal(16).astype(np.float32)
            d = engine.process(x)
            engine.feedback(d.trajectory_id, 1.0 if d.tier == i % 2 else 0.0)
        engine.background_learn()
        phi = engine.deep_learn().phi
        engine.save(tmp_path / "engine")
    # Φ of the last deep cycle is saved with the engine (the report reads it after loading).
    with SONAEngine.load(tmp_path / "engine") as loaded:
        assert loaded.improvement_metrics()["phi"] == phi
    prefix = tmp_path / "rep"
    assert main(["report", str(tmp_path / "engine"), "--out", str(prefix)]) == 0
    out = capsys.readouterr().out
    assert "weekly_gain" in out and f"{phi:.4f}" in out and out.count("\n") > 6
    for name in ("learning", "regret", "cost-quality"):
        assert (tmp_path / f"rep-{name}.png").stat().st_size > 1000
    # A directory that is not a saved engine is a clear error, not a traceback.
    assert main(["report", str(tmp_path), "--no-plots"]) == 1


def test_off_policy_estimates_track_on_policy_values() -> None:
    cfg = ope.OpeConfig(seeds=1, queries=1200, truth_queries=2000, learn_every=200)
    res = ope.run_seed(cfg, seed=3)
    assert 0.0 < res["min_propensity"] <= 1.0
    frozen = res["targets"]["frozen router"]
    dr = frozen["estimates"]["dr"]
    assert dr["low"] <= dr["value"] <= dr["high"]
    # The doubly robust estimate lands near the measured value of the frozen router.
    assert abs(dr["value"] - frozen["on_policy"]) < 0.05, frozen
    # Every fixed tier is estimated within 0.1 by SNIPS (the cheapest tier is logged most).
    for k, name in enumerate(ope.TIER_NAMES[:2]):
        t = res["targets"][f"always {name}"]
        assert abs(t["estimates"]["snips"]["value"] - t["on_policy"]) < 0.1, (k, t)
    # The fixed tiers use the whole log; the frozen router only what was logged after its
    # checkpoint (it learned from the rest, so its choices there are not independent of the log).
    assert {e["n"] for e in res["targets"]["always logistic"]["estimates"].values()} == {1200}
    assert {e["n"] for e in frozen["estimates"].values()} == {600}


def test_ope_cli_rejects_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "ope", "--epsilon", "0"]) == 1
    assert "exploration" in capsys.readouterr().err
    with pytest.raises(sona.SonaError):
        ope.main(type("A", (), {"seeds": 0, "queries": 10, "truth_queries": 10, "epsilon": 0.1})())
