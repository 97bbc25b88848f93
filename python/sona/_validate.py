"""Input conversion shared by the Python wrappers.

The Rust extension accepts only C-contiguous float32 arrays (read without copying). These helpers
bring anything array-like to that form — converting float64, lists and strided views — and raise
:class:`~sona.errors.DimensionError` for the wrong rank or length before Rust is called.
NaN/Inf are rejected by the extension itself, so every path checks them exactly once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from sona.errors import ConfigError, DimensionError, InvalidInputError

F32Array = npt.NDArray[np.float32]


def as_f32(x: Any, name: str, ndim: int, shape: tuple[int | None, ...] | None = None) -> F32Array:
    """Return ``x`` as a C-contiguous float32 array of rank ``ndim`` (a no-op when it already is).

    ``shape`` may fix some dimensions (``None`` leaves one free); mismatches raise DimensionError.
    """
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous:
        arr = x
    else:
        try:
            arr = np.ascontiguousarray(x, dtype=np.float32)
        except (TypeError, ValueError, OverflowError) as exc:
            # OverflowError: a Python int beyond float range (10**400) in a list.
            raise InvalidInputError(f"{name}: cannot convert to a float32 array ({exc})") from exc
        if isinstance(x, np.ndarray) and x.dtype.kind not in "fiub":
            raise InvalidInputError(f"{name}: expected a numeric array, got dtype {x.dtype}")
    if arr.ndim != ndim:
        raise DimensionError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, arr.shape, strict=True)):
            if want is not None and want != got:
                raise DimensionError(
                    f"{name}: expected size {want} on axis {axis}, got shape {arr.shape}"
                )
    return arr


_F32 = np.dtype(np.float32)


def as_vector(x: Any, name: str, dim: int | None = None) -> F32Array:
    """A 1-D float32 vector, optionally of length ``dim``."""
    # Fast path for what hot-path callers pass: the general checks cost more than a micro-LoRA
    # forward. Exact type and dtype identity, so subclasses and odd dtypes take the full path.
    if (
        type(x) is np.ndarray
        and x.dtype is _F32
        and x.ndim == 1
        and x.flags.c_contiguous
        and (dim is None or x.shape[0] == dim)
    ):
        return x
    return as_f32(x, name, 1, (dim,))


def as_matrix(x: Any, name: str, cols: int | None = None) -> F32Array:
    """A 2-D float32 row-major matrix, optionally with ``cols`` columns."""
    if (
        type(x) is np.ndarray
        and x.dtype is _F32
        and x.ndim == 2
        and x.flags.c_contiguous
        and (cols is None or x.shape[1] == cols)
    ):
        return x
    return as_f32(x, name, 2, (None, cols))


# Sizes and scalars: Python's int()/float() would accept 1.5 as a size, "8" as a count and
# "0.5" as a reward, and an int beyond 64 bits would surface as a bare OverflowError from the
# binding. These accept only real numbers of the right kind and report a SonaError subclass.

_U64_MAX = (1 << 64) - 1


def as_size(x: Any, name: str, lo: int = 0, hi: int = _U64_MAX) -> int:
    """An integer argument (``int`` or a numpy integer, not ``bool``) within ``[lo, hi]``.

    Raises :class:`~sona.errors.ConfigError` otherwise (also a ``ValueError``).
    """
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {type(x).__name__} {x!r}")
    value = int(x)
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def as_real(x: Any, name: str, error: type[Exception] | None = None) -> float:
    """A real-number argument (``int``, ``float`` or a numpy number, not ``bool`` or ``str``).

    Range checks stay in Rust (one place per bound); this only refuses the wrong kinds of value,
    with ``error`` (default :class:`~sona.errors.InvalidInputError`).
    """
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
        raise (error or InvalidInputError)(
            f"{name} must be a real number, got {type(x).__name__} {x!r}"
        )
    try:
        return float(x)
    except OverflowError:
        raise (error or InvalidInputError)(f"{name} is too large: {x!r}") from None
