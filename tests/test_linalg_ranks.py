"""Effective ranks against numpy float64 SVD, hypothesis properties, degenerate inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _linalg_helpers import SPECTRA, orthonormal, spectrum_matrix, svals
from hypothesis import given, settings
from hypothesis import strategies as st

import specjax as sj

stable_exact = jax.jit(sj.stable_rank)
stable_power = jax.jit(lambda x: sj.stable_rank(x, method="power"))
nuclear = jax.jit(sj.nuclear_rank)
entropy = jax.jit(sj.entropy_effective_rank)
kernel = jax.jit(sj.kernel_effective_rank)
RANK_FNS = {"stable": stable_exact, "power": stable_power, "nuclear": nuclear, "entropy": entropy}


def reference_ranks(x) -> dict[str, float]:
    s = svals(x)
    p = s / s.sum()
    p = p[p > 0]
    return {
        "stable": (s**2).sum() / s[0] ** 2,
        "power": (s**2).sum() / s[0] ** 2,
        "nuclear": s.sum() ** 2 / (s**2).sum(),
        "entropy": float(np.exp(-(p * np.log(p)).sum())),
    }


@pytest.mark.parametrize("kind", sorted(SPECTRA))
def test_ranks_match_float64_svd(kind):
    x = spectrum_matrix(kind, 24, 12)
    ref = reference_ranks(x)
    xj = jnp.asarray(x, jnp.float32)
    for name, fn in RANK_FNS.items():
        np.testing.assert_allclose(float(fn(xj)), ref[name], rtol=2e-4, err_msg=name)


def test_kernel_effective_rank_matches_eigenvalues():
    x = spectrum_matrix("decaying", 16, 16)
    k = x @ x.T
    lam = np.linalg.eigvalsh(k)
    np.testing.assert_allclose(
        float(kernel(jnp.asarray(k, jnp.float32))), lam.sum() ** 2 / (lam**2).sum(), rtol=1e-4
    )


def test_batched_matches_loop():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 10, 6)), jnp.float32)
    for name, fn in RANK_FNS.items():
        out = fn(x)
        assert out.shape == (2, 3), name
        loop = np.array([[float(fn(x[i, j])) for j in range(3)] for i in range(2)])
        np.testing.assert_allclose(np.asarray(out), loop, rtol=1e-5, err_msg=name)


def test_vmap_matches_batch():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 10, 6)), jnp.float32)
    for name, fn in RANK_FNS.items():
        np.testing.assert_allclose(jax.vmap(fn)(x), fn(x), rtol=1e-5, err_msg=name)


MATS = st.sampled_from([(10, 6), (6, 10), (8, 8)])


@settings(max_examples=15)
@given(shape=MATS, seed=st.integers(0, 2**16), log_decay=st.floats(-3.0, 1.0))
def test_stable_le_nuclear_le_rank(shape, seed, log_decay):
    rng = np.random.default_rng(seed)
    k = min(shape)
    sigma = np.exp(-np.arange(k) * 10.0**log_decay)
    x = jnp.asarray(
        orthonormal(rng, shape[0], k) * sigma @ orthonormal(rng, shape[1], k).T, jnp.float32
    )
    s_rank, n_rank = float(stable_exact(x)), float(nuclear(x))
    assert 1 - 1e-5 <= s_rank <= n_rank * (1 + 1e-5)
    assert n_rank <= k * (1 + 1e-5)
    assert 1 - 1e-5 <= float(entropy(x)) <= k * (1 + 1e-5)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_identity_and_orthonormal_columns(k):
    eye = jnp.eye(8, dtype=jnp.float32)[:, :k]  # an 8×k matrix with k orthonormal columns
    for name, fn in RANK_FNS.items():
        np.testing.assert_allclose(float(fn(eye)), k, rtol=1e-5, err_msg=name)


@settings(max_examples=15)
@given(r=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_nuclear_rank_of_orthonormal_product_is_r(r, seed):
    rng = np.random.default_rng(seed)
    g = orthonormal(rng, 12, r) @ orthonormal(rng, 10, r).T  # rank r, all σ = 1
    np.testing.assert_allclose(float(nuclear(jnp.asarray(g, jnp.float32))), r, rtol=1e-4)


@settings(max_examples=15)
@given(shape=MATS, seed=st.integers(0, 2**16), log_scale=st.floats(-30.0, 30.0))
def test_transpose_and_scale_invariance(shape, seed, log_scale):
    x = np.random.default_rng(seed).standard_normal(shape)
    base = jnp.asarray(x, jnp.float32)
    scaled = jnp.asarray(x * 10.0**log_scale, jnp.float32)
    for name, fn in RANK_FNS.items():
        ref = float(fn(base))
        np.testing.assert_allclose(float(fn(scaled)), ref, rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(float(fn(base.T)), ref, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_extreme_scales_float32(scale):
    x = np.random.default_rng(3).standard_normal((12, 8))
    for name, fn in RANK_FNS.items():
        ref = float(fn(jnp.asarray(x, jnp.float32)))
        got = float(fn(jnp.asarray(x * scale, jnp.float32)))
        np.testing.assert_allclose(got, ref, rtol=1e-5, err_msg=name)
    k = x @ x.T
    np.testing.assert_allclose(
        float(kernel(jnp.asarray(k * scale, jnp.float32))),
        float(kernel(jnp.asarray(k, jnp.float32))),
        rtol=1e-5,
    )


def test_degenerate_inputs():
    zero = jnp.zeros((5, 4), jnp.float32)
    rank1 = jnp.outer(jnp.arange(1.0, 6.0), jnp.arange(1.0, 5.0))
    for name, fn in RANK_FNS.items():
        assert float(fn(zero)) == 0.0, name  # documented: rank of zero is 0
        np.testing.assert_allclose(float(fn(rank1)), 1.0, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(float(fn(jnp.ones((1, 7)))), 1.0, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(float(fn(jnp.ones((7, 1)))), 1.0, rtol=1e-5, err_msg=name)
        for bad in (jnp.nan, jnp.inf, -jnp.inf):
            assert np.isnan(float(fn(zero.at[1, 2].set(bad)))), (name, bad)
    assert float(kernel(jnp.zeros((4, 4)))) == 0.0
    assert np.isnan(float(kernel(jnp.eye(4).at[0, 0].set(jnp.nan))))


def test_bfloat16_input_computes_in_float32():
    x = np.random.default_rng(4).standard_normal((16, 8))
    xb = jnp.asarray(x, jnp.bfloat16)
    ref = reference_ranks(np.asarray(xb.astype(jnp.float32)))
    for name, fn in RANK_FNS.items():
        out = fn(xb)
        assert out.dtype == jnp.float32, name
        np.testing.assert_allclose(float(out), ref[name], rtol=2e-4, err_msg=name)


def test_float64_when_x64_enabled():
    x = np.random.default_rng(5).standard_normal((9, 7))
    with jax.enable_x64(True):
        out = sj.nuclear_rank(jnp.asarray(x, jnp.float64))
        assert out.dtype == jnp.float64
        s = svals(x)
        np.testing.assert_allclose(float(out), s.sum() ** 2 / (s**2).sum(), rtol=1e-12)
