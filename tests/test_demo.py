"""`sona demo` wiring: every step names a registered evaluation and passes arguments it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sona import cli, demo


@pytest.mark.parametrize("quick", [True, False])
def test_every_demo_step_parses(quick: bool, tmp_path: Path) -> None:
    parser = cli.build_parser()
    for step in demo.STEPS + demo.COMPONENT_STEPS:
        assert step.job in cli.EVALS, f"demo step {step.job!r} has no registered evaluation"
        args = parser.parse_args(["eval", step.job, *step.argv(tmp_path, quick)])
        assert callable(args.func)


def test_the_demo_is_the_routing_benchmark() -> None:
    assert [s.job for s in demo.STEPS] == ["routing"]
    args = cli.build_parser().parse_args(["demo", "--quick", "--components"])
    assert args.quick and args.components


def test_memory_curation_writes_json_through_the_cli(tmp_path: Path) -> None:
    """Through the CLI the parsed arguments carry the job function; JSON must still be written."""
    import json

    out = tmp_path / "memory.json"
    argv = ["eval", "memory-curation", "--n", "400", "--groups", "4", "--replays", "1"]
    assert cli.main([*argv, "--dim", "16", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["args"]["n"] == 400
    assert data["counts"]["sona"][0] > 0
