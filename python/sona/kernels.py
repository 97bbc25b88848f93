"""Dense float32 kernels from the Rust core, with Python-side input conversion.

These are the building blocks of every SONA component (AVX2+FMA where the CPU has it, a portable
vectorised body elsewhere; :func:`simd_level` says which). Inputs may be any array-like; they are
converted to C-contiguous float32 once, and NaN/Inf raise :class:`~sona.errors.NonFiniteError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from sona import _sona
from sona._validate import F32Array, as_matrix, as_real, as_size, as_vector
from sona.errors import ConfigError, InvalidInputError

__all__ = [
    "axpy",
    "batch_dot",
    "cosine",
    "dot",
    "matvec",
    "matvec_t",
    "norm_sq",
    "normalize",
    "rank_update",
    "scale",
    "simd_level",
    "top_k",
]


def dot(a: Any, b: Any) -> float:
    """Inner product ``a · b`` of two equal-length vectors."""
    return _sona.dot(as_vector(a, "a"), as_vector(b, "b"))


def norm_sq(a: Any) -> float:
    """Squared L2 norm."""
    return _sona.norm_sq(as_vector(a, "a"))


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity in [-1, 1]; 0 when either vector is zero."""
    return _sona.cosine(as_vector(a, "a"), as_vector(b, "b"))


def normalize(a: Any) -> F32Array:
    """A unit-norm copy of ``a`` (a zero vector is returned unchanged)."""
    return _sona.normalize(as_vector(a, "a"))


def axpy(alpha: float, x: Any, y: Any) -> F32Array:
    """``y + alpha * x`` as a new array."""
    return _sona.axpy(as_real(alpha, "alpha"), as_vector(x, "x"), as_vector(y, "y"))


def scale(alpha: float, x: Any) -> F32Array:
    """``alpha * x`` as a new array."""
    return _sona.scale(as_real(alpha, "alpha"), as_vector(x, "x"))


def matvec(m: Any, x: Any) -> F32Array:
    """``m @ x`` for a 2-D ``m``."""
    return _sona.matvec(as_matrix(m, "m"), as_vector(x, "x"))


def matvec_t(m: Any, x: Any) -> F32Array:
    """``m.T @ x`` for a 2-D ``m``."""
    return _sona.matvec_t(as_matrix(m, "m"), as_vector(x, "x"))


def rank_update(m: Any, alpha: float, u: Any, v: Any) -> F32Array:
    """``m + alpha * u.T @ v`` as a new array (``u``: r × rows, ``v``: r × cols)."""
    return _sona.rank_update(
        as_matrix(m, "m"), as_real(alpha, "alpha"), as_matrix(u, "u"), as_matrix(v, "v")
    )


def batch_dot(m: Any, q: Any) -> F32Array:
    """One score ``row · q`` per row of ``m``."""
    return _sona.batch_dot(as_matrix(m, "m"), as_vector(q, "q"))


def top_k(scores: Any, k: int) -> tuple[npt.NDArray[np.int64], F32Array]:
    """Indices and values of the ``k`` largest scores, best first (NaN ranks last)."""
    try:
        count = as_size(k, "k")
    except ConfigError as exc:
        # k is an argument of this call, not a configuration value.
        raise InvalidInputError(str(exc)) from None
    return _sona.top_k(as_vector(scores, "scores"), count)


def simd_level() -> str:
    """The kernel body chosen on this CPU (``"avx2+fma"`` or ``"portable"``)."""
    return _sona.simd_level()
