"""The README's Python examples run as written (they are the first thing a user copies)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    if not README.exists():
        pytest.skip("README.md is not next to the tests (installed-package run)")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "the README lost its engine or component example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "rejected:" in out
    assert "answer" in out  # the routed query reached a backend
