"""specjax.diagnostics against numpy float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from specjax import diagnostics

RNG = np.random.default_rng(0)


def _low_rank_plus_noise(m, n, r):
    return RNG.normal(size=(m, r)) @ RNG.normal(size=(r, n)) * 3 + 0.1 * RNG.normal(size=(m, n))


def test_indicator_stable_rank_is_one_over_pmax():
    tokens = RNG.integers(0, 7, size=(5, 13))
    onehot = np.eye(9)[tokens.reshape(-1)]
    s = np.linalg.svd(onehot, compute_uv=False)
    reference = (s**2).sum() / s[0] ** 2
    counts = np.bincount(tokens.reshape(-1), minlength=9)
    assert np.isclose(reference, tokens.size / counts.max())
    got = diagnostics.indicator_stable_rank(jnp.asarray(tokens), 9)
    np.testing.assert_allclose(got, reference, rtol=1e-6)


def test_activation_stable_rank_matches_float64_svd():
    a = _low_rank_plus_noise(96, 24, 3).reshape(4, 24, 24)
    flat = a.reshape(-1, 24)
    s = np.linalg.svd(flat, compute_uv=False)
    got = diagnostics.activation_stable_rank(jnp.asarray(a, jnp.float32))
    np.testing.assert_allclose(got, (s**2).sum() / s[0] ** 2, rtol=1e-3)


def test_layer_spectra_matches_float64_svd():
    w = _low_rank_plus_noise(20, 12, 2)
    g = _low_rank_plus_noise(20, 12, 5)
    u = _low_rank_plus_noise(20, 12, 1)
    out = diagnostics.layer_spectra(
        {"w": jnp.asarray(w, jnp.float32)}, {"w": jnp.asarray(g, jnp.float32)},
        {"w": jnp.asarray(u, jnp.float32)}, {"w": jnp.float32(2.5)},
        key=jax.random.PRNGKey(0), top_k=3,
    )["w"]  # fmt: skip
    sw, sg, su = (np.linalg.svd(x, compute_uv=False) for x in (w, g, u))
    np.testing.assert_allclose(out["weight_top_singular_values"], sw[:3], rtol=1e-4)
    np.testing.assert_allclose(out["weight_spectral_norm"], sw[0], rtol=1e-4)
    np.testing.assert_allclose(out["weight_frobenius_norm"], np.linalg.norm(w), rtol=1e-5)
    np.testing.assert_allclose(out["update_spectral_norm"], su[0], rtol=1e-4)
    nr = sg.sum() ** 2 / (sg**2).sum()
    np.testing.assert_allclose(out["grad_nuclear_rank"], nr, rtol=1e-4)
    np.testing.assert_allclose(out["ratio"], nr / 2.5, rtol=1e-4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="num_classes"):
        diagnostics.indicator_stable_rank(jnp.zeros(3, jnp.int32), 0)
    with pytest.raises(ValueError, match="integers"):
        diagnostics.indicator_stable_rank(jnp.zeros(3), 4)
    with pytest.raises(ValueError, match="at least 2 dims"):
        diagnostics.as_token_matrix(jnp.zeros(3))
    with pytest.raises(ValueError, match="gradient of equal shape"):
        diagnostics.layer_spectra(
            {"w": jnp.zeros((3, 4))}, {"w": jnp.zeros((4, 3))}, None, {}, key=jax.random.PRNGKey(0)
        )
