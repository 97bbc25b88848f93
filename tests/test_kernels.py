"""The Rust kernels against numpy, and their handling of bad input."""

from __future__ import annotations

import numpy as np
import pytest

import sona
from sona import _sona, kernels

LENGTHS = [0, 1, 7, 8, 15, 16, 767, 768, 4097]


def _rel_close(got: float, want: float, scale: float) -> bool:
    return abs(got - want) <= 1e-5 * max(scale, 1.0)


@pytest.mark.parametrize("n", LENGTHS)
def test_vector_kernels_match_numpy(n: int, rng: np.random.Generator) -> None:
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    mag = float(np.abs(a64 * b64).sum())
    assert _rel_close(_sona.dot(a, b), float(a64 @ b64), mag)
    assert _rel_close(_sona.norm_sq(a), float(a64 @ a64), float(a64 @ a64))
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    want_cos = float(a64 @ b64 / (na * nb)) if na > 0 and nb > 0 else 0.0
    assert abs(_sona.cosine(a, b) - want_cos) < 1e-5
    np.testing.assert_allclose(_sona.axpy(0.5, a, b), b64 + 0.5 * a64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_sona.scale(-2.0, a), -2.0 * a64, rtol=1e-6, atol=1e-6)
    unit = _sona.normalize(a)
    if n:
        np.testing.assert_allclose(unit, a64 / na, rtol=1e-5, atol=1e-6)
    # Inputs are never mutated.
    assert a.dtype == np.float32 and unit is not a


@pytest.mark.parametrize(("rows", "cols"), [(0, 5), (1, 1), (3, 7), (17, 768), (4, 4097)])
def test_matrix_kernels_match_numpy(rows: int, cols: int, rng: np.random.Generator) -> None:
    m = rng.standard_normal((rows, cols)).astype(np.float32)
    x = rng.standard_normal(cols).astype(np.float32)
    xt = rng.standard_normal(rows).astype(np.float32)
    m64 = m.astype(np.float64)
    tol = 1e-5 * np.sqrt(max(cols, rows, 1)) * 4
    np.testing.assert_allclose(_sona.matvec(m, x), m64 @ x, rtol=1e-5, atol=tol)
    np.testing.assert_allclose(_sona.batch_dot(m, x), m64 @ x, rtol=1e-5, atol=tol)
    np.testing.assert_allclose(_sona.matvec_t(m, xt), m64.T @ xt, rtol=1e-5, atol=tol)
    r = 3
    u = rng.standard_normal((r, rows)).astype(np.float32)
    v = rng.standard_normal((r, cols)).astype(np.float32)
    np.testing.assert_allclose(
        _sona.rank_update(m, 0.25, u, v), m64 + 0.25 * u.T @ v, rtol=1e-5, atol=1e-4
    )


def test_top_k_orders_and_breaks_ties_by_index() -> None:
    scores = np.array([0.1, 0.9, -1.0, 0.5, np.nan, 0.9], np.float32)
    with pytest.raises(sona.NonFiniteError):
        _sona.top_k(scores, 3)
    scores[4] = -5.0
    idx, val = _sona.top_k(scores, 3)
    assert idx.tolist() == [1, 5, 3]
    np.testing.assert_allclose(val, [0.9, 0.9, 0.5])
    assert len(_sona.top_k(scores, 100)[0]) == 6
    assert len(_sona.top_k(scores, 0)[0]) == 0


def test_python_layer_converts_float64_and_strided_input(rng: np.random.Generator) -> None:
    a = rng.standard_normal(64)  # float64
    b = rng.standard_normal(128)[::2]  # non-contiguous
    assert abs(kernels.dot(a, b) - float(a @ b)) < 1e-4
    assert (
        abs(kernels.cosine(a.tolist(), b) - float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
        < 1e-5
    )
    m = rng.standard_normal((8, 64))
    np.testing.assert_allclose(kernels.matvec(m.T.copy().T, a), m @ a, rtol=1e-4, atol=1e-4)
    assert kernels.simd_level() in {"avx2+fma", "portable", "neon (portable)"}


def test_raw_binding_rejects_what_it_cannot_read_without_copying() -> None:
    a64 = np.ones(8)
    strided = np.ones(16, np.float32)[::2]
    with pytest.raises(sona.InvalidInputError, match="float32"):
        _sona.dot(a64, a64)
    with pytest.raises(sona.InvalidInputError, match="C-contiguous"):
        _sona.dot(strided, strided)
    with pytest.raises(sona.InvalidInputError):
        _sona.dot([1.0, 2.0], [1.0, 2.0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        lambda: kernels.dot(np.ones(3), np.ones(4)),
        lambda: kernels.axpy(1.0, np.ones(3), np.ones(2)),
        lambda: kernels.matvec(np.ones((2, 3)), np.ones(4)),
        lambda: kernels.matvec_t(np.ones((2, 3)), np.ones(3)),
        lambda: kernels.rank_update(np.ones((2, 3)), 1.0, np.ones((1, 3)), np.ones((1, 3))),
        lambda: kernels.matvec(np.ones(3), np.ones(3)),
        lambda: _sona.matvec(np.ones(3, np.float32), np.ones(3, np.float32)),
    ],
)
def test_wrong_shapes_raise_dimension_error(call: object) -> None:
    with pytest.raises(sona.DimensionError) as info:
        call()  # type: ignore[operator]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected(bad: float) -> None:
    x = np.ones(16, np.float32)
    x[5] = bad
    with pytest.raises(sona.NonFiniteError, match="index 5"):
        kernels.dot(x, np.ones(16))
    with pytest.raises(sona.NonFiniteError):
        kernels.matvec(np.ones((2, 16)), x)
    with pytest.raises(sona.NonFiniteError):
        kernels.axpy(float(bad), np.ones(3), np.ones(3))
    with pytest.raises(sona.InvalidInputError):
        kernels.top_k(np.ones(3), -1)


def test_exception_hierarchy() -> None:
    assert issubclass(sona.DimensionError, sona.SonaError)
    assert issubclass(sona.DimensionError, ValueError)
    assert issubclass(sona.NonFiniteError, sona.InvalidInputError)
    assert issubclass(sona.UnknownIdError, KeyError)
    assert issubclass(sona.CheckpointError, sona.SonaError)
    assert not issubclass(sona.CheckpointError, ValueError)
    assert sona.SonaError.__module__ == "sona"


def test_rust_panic_becomes_internal_error_not_abort() -> None:
    with pytest.raises(sona.InternalError, match="deliberate test panic"):
        _sona._panic_for_tests()
    # The interpreter and the extension keep working afterwards.
    assert _sona.dot(np.ones(2, np.float32), np.ones(2, np.float32)) == 2.0


def test_raw_binding_refuses_fortran_ordered_matrices() -> None:
    """A Fortran-ordered array is contiguous but column-major: reading it as rows would be wrong."""
    m = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(sona.InvalidInputError):
        _sona.matvec(np.asfortranarray(m), x)
    np.testing.assert_allclose(_sona.matvec(m, x), m @ x)
