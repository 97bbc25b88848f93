"""`sona demo` wiring: every step names a registered evaluation and passes arguments it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sona import cli, demo


@pytest.mark.parametrize("quick", [True, False])
def test_every_demo_step_parses(quick: bool, tmp_path: Path) -> None:
    parser = cli.build_parser()
    for step in demo.STEPS:
        assert step.job in cli.EVALS, f"demo step {step.job!r} has no registered evaluation"
        args = parser.parse_args(["eval", step.job, *step.argv(tmp_path, quick)])
        assert callable(args.func)
