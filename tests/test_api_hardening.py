"""Hardening of the Python-facing engine pieces outside the component classes: ``SONAConfig``
parsing, ``SONAEngine.save``/``load`` paths, ``sona.embed`` and ``sona._sona.Router`` /
``HashingEmbedder`` arguments. Wrong kinds of value raise the documented ``SonaError`` classes,
never a bare TypeError/ValueError/OverflowError/RecursionError from deep inside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sona import SONAConfig, SONAEngine, _sona
from sona.embed import HashingEmbedder
from sona.errors import ConfigError, InvalidInputError, UnknownIdError


@pytest.mark.parametrize("text", [None, 5, "[" * 100_000, b"\xff\xfe{", "{"])
def test_config_json_that_is_not_a_json_object_is_a_config_error(text: Any) -> None:
    with pytest.raises(ConfigError):
        SONAConfig.from_json(text)


def test_engine_paths_of_the_wrong_kind_are_invalid_input(tmp_path: Path) -> None:
    """None/int paths and NUL bytes raise InvalidInputError before anything is written; bytes
    and path-likes are paths."""
    engine = SONAEngine(SONAConfig(dim=16))
    try:
        for bad in (None, 3, ["x"]):
            with pytest.raises(InvalidInputError, match="expected a path"):
                engine.save(bad)  # type: ignore[arg-type]
            with pytest.raises(InvalidInputError, match="expected a path"):
                SONAEngine.load(bad)  # type: ignore[arg-type]
        nul = str(tmp_path / "a\0b")
        with pytest.raises(InvalidInputError, match="NUL"):
            engine.save(nul)
        with pytest.raises(InvalidInputError, match="NUL"):
            SONAEngine.load(nul)
        assert list(tmp_path.iterdir()) == []
        engine.process(np.ones(16, np.float32))
        engine.save(str(tmp_path / "e").encode())  # type: ignore[arg-type]
        again = SONAEngine.load(tmp_path / "e")
        assert again.dim == 16
        again.close()
    finally:
        engine.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda: _sona.Router(8, 4, seed=-1),
        lambda: _sona.Router(8, 4, hidden=2**64),
        lambda: _sona.Router(-8, 4),
        lambda: _sona.HashingEmbedder(8, seed=-1),
        lambda: _sona.HashingEmbedder(8, seed=2**64),
        lambda: _sona.HashingEmbedder(8, max_text_bytes=-1),
        lambda: _sona.HashingEmbedder(True),
    ],
)
def test_binding_sizes_are_config_errors_not_overflow_errors(make: Any) -> None:
    with pytest.raises(ConfigError):
        make()


def test_binding_defaults_are_unchanged() -> None:
    """The checked sizes keep the documented defaults (what stubtest compares too)."""
    r = _sona.Router(8, 4)
    assert (r.input_dim, r.n_tiers) == (8, 4)
    assert r.n_params == _sona.Router(8, 4, 16, 8, 4, 0).n_params
    h = _sona.HashingEmbedder()
    assert (h.dim, h.seed, h.max_text_bytes) == (256, 0, 1 << 20)
    assert _sona.HashingEmbedder(8, seed=2**64 - 1).seed == 2**64 - 1


@pytest.mark.parametrize("texts", [None, 5, 1.5])
def test_embed_batch_of_a_non_sequence_is_invalid_input(texts: Any) -> None:
    with pytest.raises(InvalidInputError, match="sequence of str"):
        HashingEmbedder(16).embed_batch(texts)
    assert HashingEmbedder(16).embed_batch(iter(["a", "b"])).shape == (2, 16)


def test_loaders_refuse_fifos_instead_of_blocking(tmp_path: Path) -> None:
    """Opening a named pipe to read blocks until a writer comes (forever, for a crafted path):
    every loader refuses it as not a regular file. In a child, so a regression times out
    instead of hanging the session."""
    code = f"""
import os, shutil, sys
import numpy as np
import sona
from sona import SONAConfig, SONAEngine
from sona.ewc import EwcPlusPlus
from sona.index import VectorIndex
from sona.lora import BaseLoRA, MicroLoRA, load_quantized, read_peft
from sona.reasoning import ReasoningBank
d = {str(tmp_path)!r}
pipe = os.path.join(d, "pipe")
os.mkfifo(pipe)
peft = os.path.join(d, "peft")
MicroLoRA(8).save_peft(peft, module="model.layers.0.q_proj")
os.remove(os.path.join(peft, "adapter_config.json"))
os.mkfifo(os.path.join(peft, "adapter_config.json"))
eng = os.path.join(d, "eng")
e = SONAEngine(SONAConfig(dim=16))
e.save(eng)
e.close()
os.remove(os.path.join(eng, "MANIFEST"))
os.mkfifo(os.path.join(eng, "MANIFEST"))
calls = [
    lambda: VectorIndex.load(pipe),
    lambda: ReasoningBank.load(pipe),
    lambda: EwcPlusPlus.load(pipe),
    lambda: MicroLoRA.load(pipe),
    lambda: load_quantized(pipe),
    lambda: read_peft(peft),
    lambda: BaseLoRA.from_peft(peft),
    lambda: MicroLoRA(8).load_peft(peft),
    lambda: SONAEngine.load(eng),
]
for call in calls:
    try:
        call()
    except sona.CheckpointError:
        print("refused")
    else:
        print("loaded")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused"] * 9


def test_engine_binding_arguments_of_the_wrong_kind_raise_sona_errors(tmp_path: Path) -> None:
    # The binding itself (not only the SONAEngine wrapper) refuses wrong kinds with the
    # documented classes, and nothing is learned from a refused call.
    e = SONAEngine(SONAConfig(dim=16))
    raw = e._engine
    t = e.process(np.ones(16, np.float32)).trajectory_id
    with pytest.raises(ConfigError):
        _sona.Engine(None)  # type: ignore[arg-type]
    for path_call in (lambda: _sona.Engine.load(None), lambda: raw.save(None)):
        with pytest.raises(InvalidInputError):
            path_call()  # type: ignore[no-untyped-call]
    for call in (
        lambda: e.feedback(t, 0.5, None),  # type: ignore[arg-type]
        lambda: raw.tenant_adapter(None),
        lambda: raw.process(np.ones(16, np.float32), 5),
        lambda: e.feedback(t, 10**400),
        lambda: e.feedback_batch([t], [10**400]),
        lambda: raw.feedback(t, "0.5"),
        lambda: raw.feedback(True, 0.5),  # bool is not an id
    ):
        with pytest.raises(InvalidInputError):
            call()  # type: ignore[no-untyped-call]
    for unknown in (-1, 2**70):
        # The message names the id given, not a saturated stand-in.
        with pytest.raises(UnknownIdError, match=rf"id {unknown}\b"):
            e.feedback(unknown, 0.5)
    assert e.stats()["feedbacks"] == 0
    e.feedback(np.uint64(t), np.float32(0.5))  # numpy scalars are numbers
    assert e.stats()["feedbacks"] == 1
    e.close()
