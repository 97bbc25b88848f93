"""The `sona` command line: version, info and the subcommand skeleton."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import sona
from sona import cli


def test_version_attribute_matches_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert sona.__version__.count(".") == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sona {sona.__version__}"


def test_info_reports_simd_level(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["version"] == sona.__version__
    assert data["simd"] in {"avx2+fma", "portable", "neon (portable)"}
    assert "sona-core" in data["crates"]
    assert data["build"] in {"debug", "release"}


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sona.cli", "info"], capture_output=True, text=True, check=True
    )
    assert "simd" in out.stdout


def test_module_entry_point_sees_the_registered_evaluations() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sona.cli", "eval", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for job in ("routing", "continual", "search", "memory-curation"):
        assert job in out.stdout


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["no-such-command"])
    assert info.value.code == 2


def test_eval_without_job_prints_help_and_fails() -> None:
    assert cli.main(["eval"]) == 2
