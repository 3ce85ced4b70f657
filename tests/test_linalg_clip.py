"""Spectral clipping: soft (Newton–Schulz and SVD) and hard, against float64 SVD."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _linalg_helpers import spectrum_matrix, svals, with_spectrum
from hypothesis import given, settings
from hypothesis import strategies as st

import specjax as sj


@functools.cache
def jitted_soft(method: str = "newton_schulz", iters: int | None = None):
    return jax.jit(functools.partial(sj.soft_spectral_clip, method=method, iters=iters))


hard = jax.jit(sj.hard_spectral_clip)


def soft_reference(x, c) -> np.ndarray:
    u, s, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
    return (u * (s / np.sqrt(1 + s**2 / c**2))) @ vt


@pytest.mark.parametrize("method", ["newton_schulz", "svd"])
@pytest.mark.parametrize("kind", ["decaying", "flat", "spiked", "gaussian"])
@pytest.mark.parametrize("c", [0.5, 5.0])
def test_soft_clip_matches_float64_svd(method, kind, c):
    x = spectrum_matrix(kind, 20, 12)
    out = jitted_soft(method)(jnp.asarray(x, jnp.float32), c)
    ref = soft_reference(x, c)
    np.testing.assert_allclose(np.asarray(out), ref, atol=2e-5 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("kind", ["decaying", "spiked", "gaussian"])
def test_hard_clip_matches_float64_svd(kind):
    x = spectrum_matrix(kind, 12, 20)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    c = float(np.median(s))
    np.testing.assert_allclose(
        np.asarray(hard(jnp.asarray(x, jnp.float32), c)),
        (u * np.minimum(s, c)) @ vt,
        atol=1e-5 * s[0],
    )


def _relative_sigma_error(out, x, c) -> float:
    s = svals(x)
    exact = s / np.sqrt(1 + s**2 / c**2)
    return float(np.max(np.abs(svals(out) - exact) / exact))


def test_soft_clip_error_vs_iters_and_large_ratio_regime():
    """Hard regime: σ_max/c = 100 and 1000 with σ spread down to c/10.

    Fixed few iterations under-converge the small σ (shrinking them, never exceeding c); the
    default adaptive mode converges, down to the float32 floor of the Gram route,
    relative error ≈ ε·‖X‖_F²/c² on the smallest σ (documented in clip.py).
    """
    rng = np.random.default_rng(0)
    c = 1.0
    for top, adaptive_bound in ((100.0, 2e-4), (1000.0, 2e-2)):
        x = with_spectrum(rng, 24, 16, np.geomspace(top, 0.1, 16))
        xj = jnp.asarray(x, jnp.float32)
        errors = {
            k: _relative_sigma_error(jitted_soft("newton_schulz", k)(xj, c), x, c) for k in (5, 10)
        }
        adaptive = _relative_sigma_error(jitted_soft()(xj, c), x, c)
        assert errors[5] > errors[10] > adaptive, (top, errors, adaptive)
        assert errors[10] > 0.5, (top, errors)  # 10 iterations are not enough here: documented
        assert adaptive < adaptive_bound, (top, adaptive)
        for k in (5, 10):  # under-convergence only shrinks
            assert svals(jitted_soft("newton_schulz", k)(xj, c)).max() <= c * (1 + 1e-5)


def test_soft_clip_few_iters_suffice_when_well_conditioned():
    x = spectrum_matrix("gaussian", 24, 16)
    err = _relative_sigma_error(
        jitted_soft("newton_schulz", 15)(jnp.asarray(x, jnp.float32), 0.01), x, 0.01
    )
    assert err < 1e-3, err


@settings(max_examples=15)
@given(seed=st.integers(0, 2**16), log_c=st.floats(-2.0, 1.0), log_scale=st.floats(-3.0, 3.0))
def test_soft_clip_monotone_and_bounded(seed, log_c, log_scale):
    """Properties where ‖X‖_F/c ≤ ~300, i.e. above the float32 Gram floor ε·‖X‖_F²/c²;
    tiny σ are compared with an absolute floor of 1e-5·σ_max(out)."""
    rng = np.random.default_rng(seed)
    sigma = np.sort(10.0 ** rng.uniform(-2, 2, 8))[::-1] * 10.0**log_scale
    x = with_spectrum(rng, 12, 8, sigma)
    c = 10.0**log_c * sigma[0]
    for method in ("newton_schulz", "svd"):
        out = svals(jitted_soft(method)(jnp.asarray(x, jnp.float32), c))  # descending
        assert np.all(out <= c * (1 + 1e-5)), method
        floor = 1e-5 * out[0]  # float32 resolves σ only down to ~ε·σ_max (SVD too)
        assert np.all(out <= sigma + floor), method
        assert np.all(np.diff(out) <= 1e-6 * c), method  # order of σ kept: monotone map
        exact = sigma / np.sqrt(1 + sigma**2 / c**2)
        np.testing.assert_allclose(out, exact, rtol=5e-3, atol=floor, err_msg=method)


def test_clip_batch_vmap_and_per_matrix_c():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 8, 6)), jnp.float32)
    c = jnp.asarray([0.5, 1.0, 2.0])
    f = jitted_soft()
    batched = f(x, c)
    for i in range(3):
        np.testing.assert_allclose(
            np.asarray(batched[i]), soft_reference(x[i], float(c[i])), atol=2e-5
        )
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(x, c)), np.asarray(batched), atol=1e-6)
    hb = hard(x, c)
    np.testing.assert_allclose(np.asarray(jax.vmap(hard)(x, c)), np.asarray(hb), atol=1e-6)
    assert svals(hb[0]).max() <= 0.5 + 1e-5


@pytest.mark.parametrize("fn", ["soft_ns", "soft_svd", "hard"])
def test_degenerate_inputs(fn):
    f = {"soft_ns": jitted_soft(), "soft_svd": jitted_soft("svd"), "hard": hard}[fn]
    assert np.all(np.asarray(f(jnp.zeros((4, 6)), 1.0)) == 0)
    x = np.random.default_rng(2).standard_normal((6, 4))
    for bad in (jnp.nan, jnp.inf):
        assert np.all(np.isnan(np.asarray(f(jnp.asarray(x, jnp.float32).at[0, 0].set(bad), 1.0))))
    # huge and tiny scales relative to c
    for scale in (1e-30, 1e30):
        out = svals(f(jnp.asarray(x * scale, jnp.float32), 1.0))
        s = svals(x * scale)
        exact = np.minimum(s, 1.0) if fn == "hard" else s / np.sqrt(1 + (s / 1.0) ** 2)
        np.testing.assert_allclose(out, exact, rtol=1e-4)
    # 1×n, n×1: a single σ = ‖x‖
    row = jnp.asarray([[3.0, 4.0]])
    expect = 5.0 / np.sqrt(1 + 25.0) if fn != "hard" else 1.0
    np.testing.assert_allclose(svals(f(row, 1.0)), [expect], rtol=1e-5)
    np.testing.assert_allclose(svals(f(row.T, 1.0)), [expect], rtol=1e-5)
    # traced c ≤ 0 cannot raise at trace time: documented NaN
    assert np.all(np.isnan(np.asarray(f(jnp.asarray(x, jnp.float32), jnp.asarray(-1.0)))))


def test_bfloat16_keeps_dtype():
    x = np.random.default_rng(3).standard_normal((10, 6))
    for f in (jitted_soft(), hard):
        out = f(jnp.asarray(x, jnp.bfloat16), 1.0)
        assert out.dtype == jnp.bfloat16
    out = jitted_soft()(jnp.asarray(x, jnp.bfloat16), 1.0)
    xb = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
    np.testing.assert_allclose(np.asarray(out, np.float64), soft_reference(xb, 1.0), atol=1e-2)


CLIPS = {
    "soft_ns": lambda x, c: sj.soft_spectral_clip(x, c),
    "soft_ns_fixed_iters": lambda x, c: sj.soft_spectral_clip(x, c, iters=6),
    "soft_svd": lambda x, c: sj.soft_spectral_clip(x, c, method="svd"),
    "hard": sj.hard_spectral_clip,
}


@pytest.mark.parametrize("fn", sorted(CLIPS))
def test_infinite_c_returns_x(fn):
    """σ/√(1 + σ²/c²) → σ and min(σ, c) → σ as c → ∞: c = inf is no clipping, not NaN."""
    f = CLIPS[fn]
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 6, 4)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(f(x, float("inf"))), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(jax.jit(f)(x, jnp.inf)), np.asarray(x))  # traced
    np.testing.assert_array_equal(np.asarray(f(x.T, np.inf)), np.asarray(x.T))  # wide
    # per-matrix c with one inf: that matrix unchanged, the other clipped as usual
    out = np.asarray(jax.jit(f)(x, jnp.asarray([1.0, jnp.inf])))
    np.testing.assert_array_equal(out[1], np.asarray(x[1]))
    u, s, vt = np.linalg.svd(np.asarray(x[0], np.float64), full_matrices=False)
    shrink = np.minimum(s, 1.0) if fn == "hard" else s / np.sqrt(1 + s**2)
    np.testing.assert_allclose(out[0], (u * shrink) @ vt, atol=2e-4)
    # continuity: a huge finite c is x to float32 rounding
    np.testing.assert_allclose(np.asarray(f(x, 1e30)), np.asarray(x), rtol=1e-5, atol=1e-6)
    if fn != "soft_ns":  # the adaptive while_loop is not reverse-differentiable
        g = jax.grad(lambda a: jnp.sum(f(a, jnp.inf) * x))(x)  # d⟨f(a), x⟩/da = x at c = ∞
        np.testing.assert_allclose(np.asarray(g), np.asarray(x), rtol=1e-6, atol=1e-6)
