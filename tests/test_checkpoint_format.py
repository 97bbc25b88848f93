"""Checkpoints are safetensors files (issue 13, item 2): tensors by name, the SONA header in
``__metadata__``, readable with ``safetensors.numpy.load_file`` by anyone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import sona
from sona.ewc import EwcPlusPlus
from sona.lora import MicroLoRA


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    assert meta is not None
    return dict(meta)


def test_ewc_checkpoint_opens_with_safetensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    e = EwcPlusPlus(40, lambda_=2.5, decay=0.8)
    e.update_fisher_batch(rng.normal(size=(5, 40)))
    e.complete_task(rng.normal(size=40))
    e.update_fisher(rng.normal(size=40))
    path = tmp_path / "ewc.safetensors"
    e.save(path)
    tensors = load_file(str(path))
    assert set(tensors) == {"fisher", "theta_star", "online_raw", "counts"}
    np.testing.assert_array_equal(tensors["fisher"], e.fisher)
    np.testing.assert_array_equal(tensors["theta_star"], e.theta_star)
    assert tensors["fisher"].dtype == np.float32
    assert tensors["counts"].dtype == np.uint64
    assert tensors["counts"].tolist() == [1, 1]
    meta = _metadata(path)
    assert meta["format"] == "sona-checkpoint" and meta["format_version"] == "2"
    assert meta["kind"] == "ewc"
    fields = json.loads(meta["meta"])
    assert fields["param_count"] == 40 and fields["lambda"] == 2.5
    assert len(meta["crc32"]) == 8


def test_lora_checkpoint_opens_with_safetensors(tmp_path: Path) -> None:
    lora = MicroLoRA(16, rank=2, seed=1)
    x = np.random.default_rng(0).normal(size=16).astype(np.float32)
    lora.forward(x)
    path = tmp_path / "micro.safetensors"
    lora.save(path)
    tensors = load_file(str(path))
    assert tensors["A"].shape == (2, 16) and tensors["Bt"].shape == (2, 16)
    assert all(t.dtype in (np.float32, np.uint64) for t in tensors.values())
    assert _metadata(path)["kind"].startswith("lora")
    back = MicroLoRA.load(path)
    np.testing.assert_array_equal(back.forward(x), lora.forward(x))


def test_edited_or_foreign_safetensors_files_are_refused(tmp_path: Path) -> None:
    e = EwcPlusPlus(4)
    e.complete_task(np.ones(4), fisher=np.ones(4))
    path = tmp_path / "e.safetensors"
    e.save(path)
    # Changing a tensor with a safetensors tool keeps the file valid safetensors but breaks the
    # SONA checksum.
    tensors = load_file(str(path))
    tensors["fisher"] = tensors["fisher"] * 2
    save_file(tensors, str(path), metadata=_metadata(path))
    with pytest.raises(sona.CheckpointError, match="checksum"):
        EwcPlusPlus.load(path)
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(path))
    with pytest.raises(sona.CheckpointError, match="SONA metadata"):
        EwcPlusPlus.load(path)
