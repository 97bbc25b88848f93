"""Text embedders: the text → vector step of :meth:`sona.engine.SONAEngine.query`.

Any object with a ``dim`` attribute, ``embed(text) -> (dim,) float32`` and
``embed_batch(texts) -> (n, dim) float32`` is an :class:`Embedder`. Three are provided:

- :class:`HashingEmbedder` (the default): signed feature hashing of character 3–5-grams, words and
  word bigrams, in Rust. No model file, a few µs per query, deterministic across runs and
  platforms; it captures surface similarity (shared words, spelling variants), not meaning.
- :class:`SentenceTransformerEmbedder`: any `sentence-transformers` model (needs that package).
- :class:`OnnxEmbedder`: a transformer exported to ONNX with its ``tokenizer.json`` (needs
  ``onnxruntime`` and ``tokenizers``); mean pooling over the attention mask, then L2 normalization.

The adapters import their packages only when constructed and raise
:class:`~sona.errors.MissingDependencyError` naming what to install. :func:`check_embedding`
is how the engine validates whatever an embedder returns (shape and finite values).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sona import _sona
from sona.errors import DimensionError, InvalidInputError, MissingDependencyError, NonFiniteError

F32 = npt.NDArray[np.float32]

__all__ = [
    "Embedder",
    "HashingEmbedder",
    "OnnxEmbedder",
    "SentenceTransformerEmbedder",
    "check_embedding",
]


@runtime_checkable
class Embedder(Protocol):
    """What :class:`~sona.engine.SONAEngine` needs from an embedder."""

    @property
    def dim(self) -> int:
        """Length of every vector this embedder returns."""
        ...

    def embed(self, text: str) -> F32:
        """The ``(dim,)`` vector of one text."""
        ...

    def embed_batch(self, texts: Sequence[str]) -> F32:
        """The ``(len(texts), dim)`` matrix of several texts, one row each."""
        ...


def check_embedding(x: Any, dim: int, what: str = "embedding") -> F32:
    """``x`` as a C-contiguous float32 array of shape ``(dim,)`` or ``(n, dim)``, all finite.

    Raises :class:`~sona.errors.DimensionError` for another shape, :class:`InvalidInputError` for
    something that is not numeric, :class:`NonFiniteError` for NaN/Inf — with the embedder's
    name in the message, because the fault is the embedder's, not the caller's.
    """
    try:
        arr = np.ascontiguousarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what}: not a numeric array ({exc})") from exc
    if arr.ndim not in (1, 2) or arr.shape[-1] != dim:
        raise DimensionError(
            f"{what}: expected a vector of length {dim} (the engine's dim), got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr.ravel()))[0])
        raise NonFiniteError(f"{what} contains NaN or Inf (first at flat index {bad})")
    return arr


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError("texts: expected a sequence of str, got one str")
    if not isinstance(texts, Iterable):
        raise InvalidInputError(f"texts: expected a sequence of str, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidInputError(f"texts[{i}]: expected a str, got {type(t).__name__}")
    return out


class HashingEmbedder:
    """The built-in embedder: hashed char 3–5-grams, words and word bigrams → a unit vector.

    Args:
        dim: output length, 2 … 65,536 (the engine's ``dim``).
        seed: hash seed; vectors are comparable only between embedders of equal ``(dim, seed)``.
        max_text_bytes: longer texts raise :class:`~sona.errors.InvalidInputError` (default 1 MiB).

    A text without any letter or digit embeds to the zero vector. ``embed_batch`` releases the GIL
    and uses two threads for 64 texts or more.
    """

    def __init__(self, dim: int = 256, *, seed: int = 0, max_text_bytes: int = 1 << 20) -> None:
        self._inner = _sona.HashingEmbedder(dim, seed, max_text_bytes)

    @property
    def dim(self) -> int:
        """Output length."""
        return self._inner.dim

    @property
    def seed(self) -> int:
        """Hash seed."""
        return self._inner.seed

    @property
    def max_text_bytes(self) -> int:
        """Longest accepted text, in UTF-8 bytes."""
        return self._inner.max_text_bytes

    def embed(self, text: str) -> F32:
        """The unit vector of ``text`` (zero if it has no letter or digit)."""
        if not isinstance(text, str):
            raise InvalidInputError(f"text: expected a str, got {type(text).__name__}")
        out: F32 = self._inner.embed(text)
        return out

    def embed_batch(self, texts: Sequence[str]) -> F32:
        """One row per text, shape ``(len(texts), dim)``."""
        return self._inner.embed_batch(_texts(texts))

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim}, seed={self.seed})"


def _require(module: str, install: str, what: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError saying which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} needs the `{module}` package: pip install {install}"
        ) from exc


class SentenceTransformerEmbedder:
    """Any `sentence-transformers <https://sbert.net>`_ model as an :class:`Embedder`.

    Args:
        model_name_or_path: a local directory or a Hugging Face model id (downloading needs network;
            set ``HF_HUB_OFFLINE=1`` to forbid it).
        device: ``"cpu"``, ``"cuda"``… (default: the package's choice).
        normalize: L2-normalize the output (recommended: SONA's memory compares by cosine).

    Raises :class:`~sona.errors.MissingDependencyError` if ``sentence-transformers`` is missing.
    """

    def __init__(
        self, model_name_or_path: str | Path, *, device: str | None = None, normalize: bool = True
    ) -> None:
        st = _require(
            "sentence_transformers", "sentence-transformers", "SentenceTransformerEmbedder"
        )
        self._model = st.SentenceTransformer(str(model_name_or_path), device=device)
        self._normalize = normalize
        dim = self._model.get_sentence_embedding_dimension()
        if dim is None:
            dim = int(np.asarray(self._encode(["dimension probe"])).shape[-1])
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        """Output length of the model."""
        return self._dim

    def _encode(self, texts: list[str]) -> F32:
        out = self._model.encode(
            texts,
            convert_to_numpy=True,
            normalize_embeddings=self._normalize,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed(self, text: str) -> F32:
        """The vector of one text."""
        return check_embedding(self.embed_batch([text])[0], self._dim, "SentenceTransformer")

    def embed_batch(self, texts: Sequence[str]) -> F32:
        """One row per text."""
        items = _texts(texts)
        if not items:
            return np.zeros((0, self._dim), np.float32)
        return check_embedding(self._encode(items), self._dim, "SentenceTransformer")


class OnnxEmbedder:
    """A transformer encoder exported to ONNX, with mean pooling and L2 normalization.

    Args:
        model_path: the ``.onnx`` file (inputs ``input_ids``, ``attention_mask`` and optionally
            ``token_type_ids``; first output ``(batch, tokens, dim)`` or ``(batch, dim)``).
        tokenizer_path: the Hugging Face ``tokenizer.json`` that goes with it.
        max_length: tokens kept per text (longer texts are truncated).

    Needs ``onnxruntime`` and ``tokenizers``; raises :class:`~sona.errors.MissingDependencyError`
    naming them when missing.
    """

    def __init__(
        self, model_path: str | Path, tokenizer_path: str | Path, *, max_length: int = 256
    ) -> None:
        ort = _require("onnxruntime", "onnxruntime", "OnnxEmbedder")
        tok = _require("tokenizers", "tokenizers", "OnnxEmbedder")
        if not 1 <= max_length <= 8192:
            raise InvalidInputError(f"max_length must be in [1, 8192], got {max_length}")
        self._tokenizer = tok.Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding()
        self._session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._dim = int(self._run(["dimension probe"]).shape[-1])

    @property
    def dim(self) -> int:
        """Output length of the model."""
        return self._dim

    def _run(self, texts: list[str]) -> F32:
        enc = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        out = np.asarray(self._session.run(None, feed)[0], dtype=np.float32)
        if out.ndim == 3:  # token states: mean over real tokens
            m = mask[:, :, None].astype(np.float32)
            out = (out * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)

    def embed(self, text: str) -> F32:
        """The unit vector of one text."""
        row: F32 = self.embed_batch([text])[0]
        return row

    def embed_batch(self, texts: Sequence[str]) -> F32:
        """One row per text."""
        items = _texts(texts)
        if not items:
            return np.zeros((0, self._dim), np.float32)
        return check_embedding(self._run(items), self._dim, "OnnxEmbedder")
