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


def test_layer_spectra_of_many_layers_matches_each_layer_alone():
    """Same-shaped layers are summarised together: each row must still be its own matrix's,
    with its own key (fold_in(key, index in sorted names)), whatever the mix of shapes."""
    shapes = {"b": (20, 12), "a": (20, 12), "c": (12, 20), "d": (20, 12)}
    w, g, u = ({n: _low_rank_plus_noise(*sh, r) for n, sh in shapes.items()} for r in (2, 5, 1))
    st = {n: np.float32(1.5 + i) for i, n in enumerate(shapes)}
    f32 = lambda tree: {n: jnp.asarray(x, jnp.float32) for n, x in tree.items()}  # noqa: E731
    key = jax.random.PRNGKey(3)
    out = diagnostics.layer_spectra(f32(w), f32(g), f32(u), st, key=key, top_k=3)
    assert list(out) == sorted(shapes)
    for i, name in enumerate(sorted(shapes)):
        k_w, k_u = jax.random.split(jax.random.fold_in(key, i))
        alone_w = diagnostics.matrix_summary(jnp.asarray(w[name], jnp.float32), top_k=3, key=k_w)
        alone_u = diagnostics.matrix_summary(jnp.asarray(u[name], jnp.float32), top_k=3, key=k_u)
        for s_name, v in alone_w.items():
            np.testing.assert_allclose(out[name][f"weight_{s_name}"], v, rtol=1e-5, err_msg=name)
        for s_name, v in alone_u.items():
            np.testing.assert_allclose(out[name][f"update_{s_name}"], v, rtol=1e-5, err_msg=name)
        sg = np.linalg.svd(g[name], compute_uv=False)
        nr = sg.sum() ** 2 / (sg**2).sum()
        np.testing.assert_allclose(out[name]["grad_nuclear_rank"], nr, rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(out[name]["grad_frobenius_norm"], np.linalg.norm(g[name]),
                                   rtol=1e-5, err_msg=name)  # fmt: skip
        np.testing.assert_allclose(out[name]["ratio"], nr / st[name], rtol=1e-4, err_msg=name)


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
