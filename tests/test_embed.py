"""The built-in hashing embedder and the optional adapters (``sona.embed``)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Any

import numpy as np
import pytest

import sona
from sona import _sona
from sona.embed import (
    Embedder,
    HashingEmbedder,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    check_embedding,
)


def test_hashing_embedder_is_deterministic_unit_and_an_embedder() -> None:
    e = HashingEmbedder(128, seed=3)
    assert isinstance(e, Embedder)
    a = e.embed("Where is my parcel?")
    assert a.dtype == np.float32 and a.shape == (128,)
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    np.testing.assert_array_equal(a, HashingEmbedder(128, seed=3).embed("where is my PARCEL"))
    assert not np.array_equal(a, HashingEmbedder(128, seed=4).embed("Where is my parcel?"))


def test_similar_texts_are_closer_than_unrelated() -> None:
    e = HashingEmbedder(384)
    q = e.embed("cancel my subscription please")
    assert float(q @ e.embed("please cancel the subscriptions")) > 0.5
    assert float(q @ e.embed("weather forecast for tomorrow in Oslo")) < 0.15


def test_batch_matches_single_and_handles_empty() -> None:
    e = HashingEmbedder(64)
    texts = [f"text {i} about {'cats' if i % 2 else 'dogs'}" for i in range(130)]
    batch = e.embed_batch(texts)
    assert batch.shape == (130, 64)
    np.testing.assert_array_equal(batch[7], e.embed(texts[7]))
    assert e.embed_batch([]).shape == (0, 64)
    assert not e.embed("").any()


def test_bad_input_is_rejected() -> None:
    e = HashingEmbedder(32, max_text_bytes=100)
    with pytest.raises(sona.InvalidInputError, match="101 bytes"):
        e.embed("x" * 101)
    with pytest.raises(sona.InvalidInputError, match=r"texts\[1\]"):
        e.embed_batch(["fine", "y" * 500])
    with pytest.raises(sona.InvalidInputError):
        e.embed(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(sona.InvalidInputError, match=r"texts\[1\]"):
        e.embed_batch(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(sona.InvalidInputError, match="one str"):
        e.embed_batch("not a list")
    with pytest.raises(sona.InvalidInputError):
        _sona.HashingEmbedder(8).embed_batch(("a", "b"))  # type: ignore[arg-type]
    for dim in (0, 1, 1 << 17):
        with pytest.raises(sona.ConfigError):
            HashingEmbedder(dim)
    with pytest.raises(sona.ConfigError):
        HashingEmbedder(8, max_text_bytes=0)
    # A negative or huge size is the documented ConfigError (it was a bare OverflowError).
    for bad in (-1, 2**64, True, 8.0):
        with pytest.raises(sona.ConfigError):
            HashingEmbedder(bad)  # type: ignore[arg-type]
    with pytest.raises(sona.ConfigError):
        HashingEmbedder(8, seed=-1)


def test_two_threads_share_one_embedder() -> None:
    e = HashingEmbedder(256)
    texts = [f"query {i} " * (1 + i % 7) for i in range(400)]
    want = e.embed_batch(texts)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for _ in range(5):
                np.testing.assert_array_equal(e.embed_batch(texts), want)
                np.testing.assert_array_equal(e.embed(texts[offset]), want[offset])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (3, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_check_embedding_catches_wrong_size_and_non_finite() -> None:
    assert check_embedding([1.0, 2.0], 2).dtype == np.float32
    assert check_embedding(np.ones((3, 4)), 4).shape == (3, 4)
    with pytest.raises(sona.DimensionError, match="length 5"):
        check_embedding(np.ones(4), 5)
    with pytest.raises(sona.DimensionError):
        check_embedding(np.ones((2, 2, 2)), 2)
    with pytest.raises(sona.NonFiniteError):
        check_embedding(np.array([1.0, np.nan]), 2)
    with pytest.raises(sona.InvalidInputError):
        check_embedding("text", 2)


def _block_import(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError


def test_adapters_name_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    _block_import(monkeypatch, "sentence_transformers", "onnxruntime")
    with pytest.raises(sona.MissingDependencyError, match="pip install sentence-transformers"):
        SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        OnnxEmbedder("model.onnx", "tokenizer.json")


class _FakeSentenceTransformer:
    """Stands in for sentence_transformers.SentenceTransformer (the real one needs torch)."""

    def __init__(self, name: str, device: str | None = None) -> None:
        self.name = name
        self.broken = name == "broken"

    def get_sentence_embedding_dimension(self) -> int:
        return 8

    def encode(self, texts: list[str], **kw: Any) -> np.ndarray:
        out = np.stack([HashingEmbedder(8).embed(t) for t in texts])
        if self.broken:
            out[0, 0] = np.inf
        return out


def test_sentence_transformer_adapter_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("sentence_transformers")
    fake.SentenceTransformer = _FakeSentenceTransformer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sentence_transformers", fake)
    e = SentenceTransformerEmbedder("fake-model")
    assert isinstance(e, Embedder) and e.dim == 8
    assert e.embed("hello world").shape == (8,)
    assert e.embed_batch(["a b", "c d", "e f"]).shape == (3, 8)
    assert e.embed_batch([]).shape == (0, 8)
    with pytest.raises(sona.NonFiniteError, match="SentenceTransformer"):
        SentenceTransformerEmbedder("broken").embed("x")


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None,
    reason="sentence-transformers is not installed (it pulls torch; see docs)",
)
def test_real_sentence_transformer_if_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        e = SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    except Exception as exc:  # the model is not cached offline
        pytest.skip(f"model not available offline: {exc}")
    q = e.embed("How do I reset my password?")
    assert q.shape == (e.dim,)
    assert float(q @ e.embed("I forgot my login credentials")) > float(
        q @ e.embed("Recipe for tomato soup")
    )
