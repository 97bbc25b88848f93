"""The one atomic file writer (sona._fsio): replaces whole files, leaves no temporary behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sona._fsio import write_atomic, write_json


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    write_json(out, {"a": 1})
    write_json(out, {"a": [1, 2.5]})
    assert json.loads(out.read_text()) == {"a": [1, 2.5]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    write_json(out, {"ok": True})
    with pytest.raises(TypeError):
        write_json(out, {"bad": object()})
    assert json.loads(out.read_text()) == {"ok": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_write_atomic_into_a_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "x.bin", b"x")
