"""Fast variant of `sona eval search` (SPEC §11.4): the direction of the result, not timings."""

from __future__ import annotations

import json
from pathlib import Path

from sona import cli
from sona.evals.search import evaluate, format_table


def test_small_search_eval_has_high_recall_and_no_deleted_hits() -> None:
    (row,) = evaluate([3000], [64], queries=50, churn_ops=100)
    assert row["recall@10"] >= 0.95
    assert row["recall_after_churn"] >= 0.95
    assert row["deleted_ids_returned"] == 0
    assert row["churn_updates_per_s"] > 0 and row["approx_qps"] > 0
    assert "recall@10" in format_table([row])


def test_cli_registration_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "search.json"
    argv = ["eval", "search", "--sizes", "2000", "--dims", "32", "--queries", "20"]
    assert cli.main([*argv, "--churn-ops", "20", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["n"] == 2000 and rows[0]["recall@10"] >= 0.9
