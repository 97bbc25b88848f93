"""Fast variant of the adaptation benchmark (design §11.1): the result's direction, not a timing."""

from __future__ import annotations

import pytest

from sona.evals.adapt import AdaptSettings, run, table


@pytest.fixture(scope="module")
def results() -> dict:
    s = AdaptSettings(feedbacks=1200, seeds=[0], eval_every=300, merge_every=600)
    return run(s)


def test_scores_rise_well_above_untrained(results: dict) -> None:
    for method, data in results["methods"].items():
        summary = data["summary"]
        assert abs(summary["untrained_A"]["mean"]) < 0.05, method
        assert summary["A_after_A"]["mean"] > 0.3, method
        assert summary["B_after_B"]["mean"] > 0.3, method


def test_two_tier_keeps_phase_a_while_plain_forgets(results: dict) -> None:
    two = results["methods"]["two_tier"]["summary"]
    plain = results["methods"]["plain"]["summary"]
    assert two["A_after_B"]["mean"] > 0.4
    assert two["A_after_B"]["mean"] > plain["A_after_B"]["mean"] + 0.1
    assert two["A_after_A"]["mean"] - two["A_after_B"]["mean"] < 0.1


def test_report_has_curves_and_table(results: dict) -> None:
    run0 = results["methods"]["micro"]["runs"][0]
    assert len(run0["curve"]) == 2 * 1200 // 300
    assert "A after B" in table(results)


def test_cli_writes_json_and_plot(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from sona import cli

    out_json, out_png = tmp_path / "a.json", tmp_path / "a.png"
    code = cli.main(
        [
            "eval",
            "adapt",
            "--seeds",
            "1",
            "--feedbacks",
            "200",
            "--methods",
            "micro",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
            "--quiet",
        ]
    )
    assert code == 0 and out_json.stat().st_size > 0 and out_png.stat().st_size > 0


def test_phases_split_the_clusters_in_halves() -> None:
    from sona.evals.adapt import phases

    assert phases(4) == ((0, 1), (2, 3))
    assert phases(7) == ((0, 1, 2), (3, 4, 5, 6))
    with pytest.raises(ValueError):
        phases(1)


def test_size_grid_runs_every_setting_and_learns() -> None:
    from sona.evals.adapt import grid, grid_table

    s = AdaptSettings(feedbacks=800, seeds=[0], eval_every=400, merge_every=400)
    rows = grid(s, dims=[48, 64], clusters=[4, 6], methods=("two_tier",))
    assert [(r["d"], r["clusters"]) for r in rows] == [(48, 4), (48, 6), (64, 4), (64, 6)]
    for r in rows:
        assert abs(r["untrained_A"]) < 0.1
        assert r["A_after_A"] > 0.25 and r["B_after_B"] > 0.25, r
        assert r["own_min"] <= min(r["A_after_A"], r["B_after_B"]) + 1e-9
    assert grid_table(rows).count("\n") == len(rows) + 1


def test_defaults_scale_with_d_and_keep_the_d256_values() -> None:
    from sona.lora import MicroLoRA, TwoTierLoRA, default_lr, default_sigma

    for d in (64, 128, 256):
        assert default_sigma(d) == 0.1 and default_lr(d) == 3e-4
        assert default_lr(d, two_tier=True) == 3e-4
    assert abs(default_sigma(1024) - 0.05) < 1e-12
    assert default_lr(1024) == 3e-4 and abs(default_lr(1024, two_tier=True) - 6e-4) < 1e-12
    m = MicroLoRA(1024)
    assert abs(m.config["sigma"] - 0.05) < 1e-7 and abs(m.config["lr"] - 3e-4) < 1e-9
    assert MicroLoRA(1024, sigma=0.2).config["sigma"] == pytest.approx(0.2)
    tt = TwoTierLoRA(1024, merge_every=0)
    assert tt.micro.config["lr"] == pytest.approx(6e-4)
    assert tt.micro.config["sigma"] == pytest.approx(0.05)
    assert MicroLoRA(256).config["sigma"] == pytest.approx(0.1)
