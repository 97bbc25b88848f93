"""Fast variant of the adaptation benchmark (SPEC §11.1): direction of the result, not a timing."""

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
