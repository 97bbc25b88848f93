"""The routing benchmark (design §11.3), small: the data, the baselines and the direction of SONA's
result (beats a random tier and the cheapest tier on utility, and learns over the stream)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from sona import cli
from sona.evals import routing as r


@pytest.fixture(scope="module")
def split() -> r.Split:
    return r.make_split(0)


def test_split_and_tiers_rise_in_capacity(split: r.Split) -> None:
    acc = split.tier_accuracy["validation"]
    assert acc[0] < acc[1] < acc[3] and acc[0] < acc[2]
    assert acc[3] > 0.97 and acc[0] < 0.93
    assert split.x["test"].dtype == np.float32 and split.x["test"].shape[1] == 64
    assert split.correct["test"].shape == (len(split.y["test"]), 4)
    # Standardized with train statistics: roughly centred on held-out data.
    assert abs(float(split.x["validation"].mean())) < 0.2


def test_stream_flips_the_class_mix_at_half(split: r.Split) -> None:
    y = split.y["test"]
    stream = r.make_stream(y, 2000, seed=0, drift=True)
    first, second = y[stream[:1000]], y[stream[1000:]]
    assert (first < 5).mean() > 0.85 and (second >= 5).mean() > 0.85
    np.testing.assert_array_equal(stream, r.make_stream(y, 2000, seed=0, drift=True))
    flat = r.make_stream(y, 2000, seed=0, drift=False)
    assert (y[flat[1000:]] < 5).mean() > 0.85


def test_oracle_and_fixed_baselines(split: r.Split) -> None:
    x, c = split.x["test"], split.correct["test"]
    stream = r.make_stream(split.y["test"], 1000, 0, True)
    oracle = r.run_stream(r.OraclePolicy(r.TIER_COSTS, 0.002), x, c, stream, 0.002)
    assert np.all(oracle.regrets == 0.0)
    top = r.run_stream(r.FixedPolicy(3), x, c, stream, 0.002)
    assert oracle.rewards.mean() >= top.rewards.mean()
    assert oracle.costs.mean() < 5 < top.costs.mean() == 30.0
    rand = r.run_stream(r.RandomPolicy(0, 4), x, c, stream, 0.002)
    assert rand.regrets.mean() > 0.0


def test_the_plain_bandit_learns(split: r.Split) -> None:
    x, c = split.x["test"], split.correct["test"]
    stream = r.make_stream(split.y["test"], 2000, 0, False)
    bandit = r.run_stream(
        r.LogisticBandit(64, r.TIER_COSTS, 0.002, lr=0.1, epsilon=0.05, seed=0), x, c, stream, 0.002
    )
    rand = r.run_stream(r.RandomPolicy(0, 4), x, c, stream, 0.002)
    assert bandit.regrets.mean() < rand.regrets.mean()
    w = bandit.windows(500)["regret"]
    assert w[-1] < w[0]


def _utility(res: dict[str, float], cw: float) -> float:
    return res["accuracy"] - cw * res["mean_cost"]


def test_sona_beats_random_and_the_cheapest_tier_and_learns(tmp_path: Path) -> None:
    pytest.importorskip("sona.engine")
    out_json = tmp_path / "routing.json"
    argv = ["eval", "routing", "--seeds", "1", "--queries", "2000", "--window", "250"]
    argv += ["--sweep", "0.002", "--no-progress", "--json", str(out_json)]
    argv += ["--plot", str(tmp_path / "routing")]
    assert cli.main(argv) == 0
    out = json.loads(out_json.read_text())
    cw = out["config"]["sona"]["cost_weight"]
    res = {k: {m: v["mean"] for m, v in x["summary"].items()} for k, x in out["results"].items()}
    sona = _utility(res["SONA"], cw)
    assert sona > _utility(res["random"], cw)
    assert sona > _utility(res["fixed:nearest-centroid"], cw)
    assert res["SONA"]["regret"] < res["random"]["regret"]
    windows = out["results"]["SONA"]["windows"]["regret"]
    assert np.mean(windows[2:4]) < windows[0], windows  # learns within the first phase
    assert (tmp_path / "routing-learning.png").stat().st_size > 10_000
    assert (tmp_path / "routing-cost-quality.png").stat().st_size > 10_000


def test_cli_rejects_bad_settings() -> None:
    assert cli.main(["eval", "routing", "--queries", "10", "--window", "250"]) == 1
    assert cli.main(["eval", "routing", "--sweep", "a,b"]) == 1
    assert cli.main(["eval", "routing", "--sweep", "-1"]) == 1
    assert isinstance(r.config_from_args(_args()), r.RoutingConfig)


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    r.add_arguments(parser)
    return parser.parse_args([])
