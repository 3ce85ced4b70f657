"""spectral_norm and randomized_svd against float64 SVD; degenerate inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _linalg_helpers import spectrum_matrix, svals, with_spectrum

import specjax as sj

norm = jax.jit(sj.spectral_norm)
lanczos_1e3 = jax.jit(lambda a: sj.spectral_norm(a, tol=1e-3, method="lanczos"))
KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("kind", ["decaying", "flat", "spiked", "gaussian"])
def test_spectral_norm_matches_float64_svd(kind):
    x = spectrum_matrix(kind, 40, 24)
    np.testing.assert_allclose(float(norm(jnp.asarray(x, jnp.float32))), svals(x)[0], rtol=1e-3)


def test_spectral_norm_tolerance_and_iteration_cap():
    x = jnp.asarray(spectrum_matrix("gaussian", 64, 64), jnp.float32)
    exact = svals(x)[0]
    one = float(sj.spectral_norm(x, max_iters=1, block_size=1))
    tight = float(sj.spectral_norm(x, tol=1e-6, max_iters=200))
    assert one < exact * (1 + 1e-6)  # Ritz values approach from below
    assert abs(tight - exact) < abs(one - exact)
    np.testing.assert_allclose(tight, exact, rtol=1e-4)


def test_spectral_norm_batch_vmap_key():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 12, 9)), jnp.float32)
    out = norm(x)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(
        np.asarray(out), np.linalg.svd(np.asarray(x), compute_uv=False)[..., 0], rtol=1e-3
    )
    np.testing.assert_allclose(np.asarray(jax.vmap(norm)(x[0])), np.asarray(out[0]), rtol=1e-6)
    other_key = float(sj.spectral_norm(x[0, 0], key=jax.random.PRNGKey(7)))
    np.testing.assert_allclose(other_key, float(out[0, 0]), rtol=1e-3)


def test_spectral_norm_degenerate():
    assert float(norm(jnp.zeros((4, 3)))) == 0.0
    assert np.isnan(float(norm(jnp.ones((4, 3)).at[0, 0].set(jnp.nan))))  # NaN, no hang
    assert np.isnan(float(norm(jnp.ones((4, 3)).at[0, 0].set(jnp.inf))))
    np.testing.assert_allclose(float(norm(jnp.asarray([[3.0, 4.0]]))), 5.0, rtol=1e-6)
    np.testing.assert_allclose(float(norm(jnp.asarray([[3.0], [4.0]]))), 5.0, rtol=1e-6)
    x = np.random.default_rng(2).standard_normal((8, 6))
    for scale in (1e-30, 1e30):
        np.testing.assert_allclose(
            float(norm(jnp.asarray(x * scale, jnp.float32))), svals(x)[0] * scale, rtol=1e-3
        )
    out = norm(jnp.asarray(x, jnp.bfloat16))
    assert out.dtype == jnp.float32


def _clustered_top(m, n, rng):
    """Top five σ within 1e-3 of each other above a flat bulk: power iteration's worst case."""
    k = min(m, n)
    sigma = np.concatenate([1.0 - 2e-4 * np.arange(5), np.linspace(0.9, 0.1, k - 5)])
    return with_spectrum(rng, m, n, sigma)


LANCZOS_CASES = {
    "gaussian_square": lambda rng: rng.standard_normal((128, 128)),
    "clustered_top": lambda rng: _clustered_top(128, 128, rng),
    "decaying": lambda rng: with_spectrum(rng, 128, 128, np.exp(-np.arange(128) / 20.0)),
}


@pytest.mark.parametrize("case", sorted(LANCZOS_CASES))
def test_spectral_norm_lanczos_vs_float64_at_tol_1e3(case):
    x = LANCZOS_CASES[case](np.random.default_rng(3))
    exact = svals(x)[0]
    got = float(lanczos_1e3(jnp.asarray(x, jnp.float32)))
    assert got <= exact * (1 + 1e-5)  # Ritz values approach from below
    np.testing.assert_allclose(got, exact, rtol=1e-3)


def test_spectral_norm_lanczos_beats_power_at_equal_matvecs():
    # 12 Lanczos iterations vs 12 single-vector power iterations (same number of products with x̂)
    x = jnp.asarray(np.random.default_rng(4).standard_normal((160, 160)), jnp.float32)
    exact = svals(x)[0]
    lanczos = float(sj.spectral_norm(x, tol=0.0, max_iters=12, method="lanczos"))
    power = float(sj.spectral_norm(x, tol=0.0, max_iters=12, method="power", block_size=1))
    assert abs(lanczos - exact) < 0.5 * abs(power - exact)


def test_spectral_norm_lanczos_rank_one_and_float64():
    rng = np.random.default_rng(5)
    u, v = rng.standard_normal((30, 1)), rng.standard_normal((1, 20))
    x = u @ v  # Krylov space invariant after one step: breakdown must stop cleanly
    np.testing.assert_allclose(
        float(lanczos_1e3(jnp.asarray(x, jnp.float32))), svals(x)[0], rtol=1e-5
    )
    with jax.enable_x64(True):
        y = rng.standard_normal((50, 40))
        out = sj.spectral_norm(jnp.asarray(y), tol=1e-10, method="lanczos")
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(float(out), svals(y)[0], rtol=1e-9)


rsvd = jax.jit(sj.randomized_svd, static_argnums=1)


def test_randomized_svd_decaying_spectrum_accuracy():
    rng = np.random.default_rng(0)
    sigma = np.exp(-np.arange(96) / 20.0)  # the benchmark's slowly decaying spectrum
    x = with_spectrum(rng, 128, 96, sigma)
    u, s, vt = rsvd(jnp.asarray(x, jnp.float32), 8, key=KEY)
    assert u.shape == (128, 8) and s.shape == (8,) and vt.shape == (8, 96)
    np.testing.assert_allclose(np.asarray(s), sigma[:8], rtol=1e-3)
    u64, vt64 = np.asarray(u, np.float64), np.asarray(vt, np.float64)
    np.testing.assert_allclose(u64.T @ u64, np.eye(8), atol=1e-5)
    np.testing.assert_allclose(vt64 @ vt64.T, np.eye(8), atol=1e-5)
    # near-optimal rank-8 approximation: spectral error close to σ_9
    err = svals(x - (u64 * np.asarray(s)) @ vt64)[0]
    assert err < 1.01 * sigma[8], (err, sigma[8])


def test_randomized_svd_power_iterations_help():
    rng = np.random.default_rng(1)
    sigma = np.exp(-np.arange(64) / 20.0)
    x = jnp.asarray(with_spectrum(rng, 64, 64, sigma), jnp.float32)
    errors = [
        np.max(
            np.abs(
                np.asarray(sj.randomized_svd(x, 8, oversample=4, iters=q, key=KEY)[1]) - sigma[:8]
            )
            / sigma[:8]
        )
        for q in (0, 1, 3)
    ]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[0] > 1e-2, errors


def test_randomized_svd_batch_vmap_and_dtypes():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 20, 10)), jnp.float32)
    u, s, vt = rsvd(x, 10, key=KEY)  # full rank: exact
    np.testing.assert_allclose(
        np.asarray(s), np.linalg.svd(np.asarray(x), compute_uv=False), rtol=1e-4
    )
    np.testing.assert_allclose(np.asarray((u * s[..., None, :]) @ vt), np.asarray(x), atol=1e-4)
    s_vmap = jax.vmap(lambda a: sj.randomized_svd(a, 10, key=KEY)[1])(x)
    np.testing.assert_allclose(np.asarray(s_vmap), np.asarray(s), rtol=1e-5)
    ub, sb, vtb = sj.randomized_svd(x[0].astype(jnp.bfloat16), 3, key=KEY)
    assert ub.dtype == sb.dtype == vtb.dtype == jnp.bfloat16


def test_randomized_svd_degenerate():
    u, s, _ = rsvd(jnp.zeros((6, 5)), 2, key=KEY)
    assert np.all(np.asarray(s) == 0) and np.all(np.isfinite(np.asarray(u)))
    x = jnp.asarray(np.random.default_rng(3).standard_normal((6, 5)), jnp.float32)
    for out in rsvd(x.at[1, 1].set(jnp.nan), 2, key=KEY):
        assert np.all(np.isnan(np.asarray(out)))
    _, s_row, _ = rsvd(jnp.asarray([[3.0, 4.0, 0.0]]), 1, key=KEY)
    np.testing.assert_allclose(np.asarray(s_row), [5.0], rtol=1e-6)
    _, s_big, _ = rsvd(x * 1e30, 2, key=KEY)
    np.testing.assert_allclose(np.asarray(s_big), svals(x)[:2] * 1e30, rtol=1e-3)


def test_randomized_svd_defaults_meet_1e3_on_slow_decay():
    # σᵢ = 1/i, the slower of the benchmark's two spectra: the defaults (oversample 16, iters 3)
    # are chosen for top-16 relative error ≤ 1e-3 there; float64 reference.
    sigma = 1.0 / np.arange(1, 201)
    x = with_spectrum(np.random.default_rng(6), 300, 200, sigma)
    for seed in range(3):
        u, s, vt = rsvd(jnp.asarray(x, jnp.float32), 16, key=jax.random.PRNGKey(seed))
        np.testing.assert_allclose(np.asarray(s), sigma[:16], rtol=1e-3)
        u64, vt64 = np.asarray(u, np.float64), np.asarray(vt, np.float64)
        np.testing.assert_allclose(u64.T @ u64, np.eye(16), atol=1e-5)
        np.testing.assert_allclose(vt64 @ vt64.T, np.eye(16), atol=1e-5)


def test_randomized_svd_steep_and_rank_deficient():
    rng = np.random.default_rng(7)
    steep = 10.0 ** (-np.arange(60) / 4.0)  # σ₈/σ₁ ≈ 1e-2: float32 Gram methods lose it
    x = with_spectrum(rng, 90, 60, steep)
    _, s, _ = rsvd(jnp.asarray(x, jnp.float32), 8, key=KEY)
    np.testing.assert_allclose(np.asarray(s), steep[:8], rtol=1e-4)
    low = with_spectrum(rng, 40, 30, [3.0, 2.0, 1.0])  # rank 3, asked for 8
    u, s, vt = rsvd(jnp.asarray(low, jnp.float32), 8, key=KEY)
    assert np.all(np.isfinite(np.asarray(u))) and np.all(np.isfinite(np.asarray(vt)))
    np.testing.assert_allclose(np.asarray(s[:3]), [3.0, 2.0, 1.0], rtol=1e-5)
    assert np.all(np.asarray(s[3:]) < 1e-5)
    u3 = np.asarray(u[:, :3], np.float64)
    np.testing.assert_allclose(u3.T @ u3, np.eye(3), atol=1e-5)
    np.testing.assert_allclose((u3 * np.asarray(s[:3])) @ np.asarray(vt[:3]), low, atol=1e-5)
