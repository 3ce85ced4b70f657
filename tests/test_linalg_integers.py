"""Integer input: converted to float (float64 with x64, else float32) before any arithmetic.

Regression: int64 [[2**40, 1], [1, 2**33]] went through `jnp.asarray`, which with x64 off
truncates int64 to int32 (2**40 → 0, 2**33 → 0), so `stable_rank` returned 2.0 for a matrix
whose stable rank is 1 + 2**-14. References are numpy float64 formulas.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specjax as sj
from specjax import diagnostics

BIG = [[2**40, 1], [1, 2**33]]  # σ ≈ 2**40, 2**33: stable rank 1 + 2**-14 ≈ 1.000061
BIG_INT32 = [[2**30, 3], [-(2**31), 2**23]]  # squares and |−2**31| wrap in int32 arithmetic
CLIP_C = 2.0**36  # between the two singular values of BIG


def _svd(x):
    return np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)


def _ref(name: str, x: np.ndarray):
    x = np.asarray(x, np.float64)
    u, s, vt = _svd(x)
    c = CLIP_C * np.abs(x).max() / 2.0**40
    p = s / s.sum()
    return {
        "stable_rank": (s**2).sum() / s[0] ** 2,
        "stable_rank_power": (s**2).sum() / s[0] ** 2,
        "nuclear_rank": s.sum() ** 2 / (s**2).sum(),
        "entropy_effective_rank": np.exp(-(p * np.log(p)).sum()),
        "kernel_effective_rank": np.trace(x) ** 2 / (x**2).sum(),
        "spectral_norm": s[0],
        "randomized_svd": s[:1],
        "polar": u @ vt,
        "hard_spectral_clip": (u * np.minimum(s, c)) @ vt,
        "soft_spectral_clip": (u * (s / np.sqrt(1 + (s / c) ** 2))) @ vt,
        "soft_spectral_clip_svd": (u * (s / np.sqrt(1 + (s / c) ** 2))) @ vt,
    }[name]


def _call(name: str, x):
    c = CLIP_C * float(np.abs(np.asarray(x, np.float64)).max()) / 2.0**40
    return {
        "stable_rank": lambda: sj.stable_rank(x),
        "stable_rank_power": lambda: sj.stable_rank(x, method="power", tol=1e-7),
        "nuclear_rank": lambda: sj.nuclear_rank(x),
        "entropy_effective_rank": lambda: sj.entropy_effective_rank(x),
        "kernel_effective_rank": lambda: sj.kernel_effective_rank(x),
        "spectral_norm": lambda: sj.spectral_norm(x, tol=1e-7),
        "randomized_svd": lambda: sj.randomized_svd(x, 1, key=jax.random.PRNGKey(0))[1],
        "polar": lambda: sj.polar(x, method="svd"),
        "hard_spectral_clip": lambda: sj.hard_spectral_clip(x, c),
        "soft_spectral_clip": lambda: sj.soft_spectral_clip(x, c),
        "soft_spectral_clip_svd": lambda: sj.soft_spectral_clip(x, c, method="svd"),
    }[name]()


NAMES = [
    "stable_rank",
    "stable_rank_power",
    "nuclear_rank",
    "entropy_effective_rank",
    "kernel_effective_rank",
    "spectral_norm",
    "randomized_svd",
    "polar",
    "hard_spectral_clip",
    "soft_spectral_clip",
    "soft_spectral_clip_svd",
]


def _assert_close(name, got, ref, rtol):
    got = np.asarray(got, np.float64)
    if np.ndim(ref) == 2:  # matrices: error relative to the largest entry
        np.testing.assert_allclose(got, ref, atol=rtol * np.abs(ref).max(), err_msg=name)
    else:
        np.testing.assert_allclose(got, ref, rtol=rtol, err_msg=name)


def test_true_stable_rank_of_the_regression_matrix_is_one():
    assert abs(_ref("stable_rank", np.array(BIG)) - 1.0) < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_int64_with_x64_is_converted_to_float64(name):
    with jax.enable_x64(True):
        for x in (np.array(BIG, np.int64), jnp.asarray(BIG, jnp.int64), BIG):
            got = _call(name, x)
            assert got.dtype == jnp.float64, (name, got.dtype)
            _assert_close(name, got, _ref(name, np.array(BIG)), 1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_int64_without_x64_does_not_wrap(name):
    """numpy int64 (and Python ints) without x64: converted through float64, computed in float32."""
    for x in (np.array(BIG, np.int64), BIG, np.array(BIG, np.uint64)):
        got = _call(name, x)
        assert got.dtype == jnp.float32, (name, got.dtype)
        _assert_close(name, got, _ref(name, np.array(BIG)), 2e-5)


@pytest.mark.parametrize("name", NAMES)
def test_int32_entries_whose_squares_overflow_int32(name):
    x = jnp.asarray(BIG_INT32, jnp.int32)
    got = _call(name, x)
    assert got.dtype == jnp.float32
    _assert_close(name, got, _ref(name, np.array(BIG_INT32)), 2e-5)


def test_python_ints_beyond_int64_and_bool_input():
    huge = [[2**70, 1], [1, 2**63]]
    ref = _ref("stable_rank", np.array(huge, np.float64))
    np.testing.assert_allclose(float(sj.stable_rank(huge)), ref, rtol=1e-6)
    bad_dtype = r"^x must have a real floating or integer dtype; got "
    with pytest.raises(ValueError, match=bad_dtype + "bool"):
        sj.stable_rank(np.ones((2, 2), bool))
    with pytest.raises(ValueError, match=bad_dtype + "complex"):
        sj.stable_rank([[1 + 2j, 0], [0, 1]])


def test_integer_input_under_jit_and_diagnostics():
    x = jnp.asarray(BIG_INT32, jnp.int32)
    ref = _ref("stable_rank", np.array(BIG_INT32))
    np.testing.assert_allclose(float(jax.jit(sj.stable_rank)(x)), ref, rtol=1e-6)
    # activations reach specjax.linalg through diagnostics.as_token_matrix
    a = np.array(BIG, np.int64).reshape(1, 2, 2)
    np.testing.assert_allclose(
        float(diagnostics.activation_stable_rank(a, tol=1e-7)), _ref("stable_rank", BIG), rtol=1e-5
    )
