"""Effective rank of known kernels, U-statistic moments, r_∞ against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from specjax import kernel_effective_rank
from specjax.ntk import kernel_moments, ntk_rank_summary


def const_plus_identity(n, a, b):
    return a * jnp.ones((n, n)) + b * jnp.eye(n)


def test_effective_rank_of_known_kernels():
    n = 37
    assert float(kernel_effective_rank(jnp.eye(n))) == pytest.approx(n, rel=1e-6)
    u = jax.random.normal(jax.random.PRNGKey(0), (n,))
    assert float(kernel_effective_rank(jnp.outer(u, u))) == pytest.approx(1.0, rel=1e-5)
    a, b = 0.7, 2.0  # tr² / ‖K‖_F² = n(a+b)² / (n a² + 2ab + b²)
    closed = n * (a + b) ** 2 / (n * a**2 + 2 * a * b + b**2)
    got = float(kernel_effective_rank(const_plus_identity(n, a, b)))
    assert got == pytest.approx(closed, rel=1e-5)


@pytest.mark.parametrize("n", [5, 40, 300])
def test_const_plus_identity_moments_and_prediction(n):
    a, b = 0.7, 2.0
    m = kernel_moments(const_plus_identity(n, a, b))
    assert float(m.r_inf) == pytest.approx((a + b) ** 2 / a**2, rel=1e-5)
    for n_eval in (3, 17, n, 10_000):  # the finite-n curve is exact for this kernel
        closed = n_eval * (a + b) ** 2 / (n_eval * a**2 + 2 * a * b + b**2)
        assert float(m.predicted_effective_rank(n_eval)) == pytest.approx(closed, rel=1e-5)


def test_moments_match_bruteforce_float64():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(9, 4)) + 1.0
    k = g @ g.T
    m = kernel_moments(jnp.asarray(k, jnp.float32))
    n = k.shape[0]
    k = k / np.abs(k).max()

    def r_inf_of(idx):
        sub = k[np.ix_(idx, idx)]
        off = [(i, j) for i in range(len(idx)) for j in range(len(idx)) if i != j]
        mu_sq = np.mean([sub[i, i] * sub[j, j] for i, j in off])
        return mu_sq / np.mean([sub[i, j] ** 2 for i, j in off])

    assert float(m.r_inf) == pytest.approx(r_inf_of(np.arange(n)), rel=1e-4)
    loo = np.array([r_inf_of(np.delete(np.arange(n), i)) for i in range(n)])
    se = np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2))
    assert float(m.r_inf_stderr) == pytest.approx(se, rel=1e-3)
    # at the sample's own n the moment prediction reproduces r_eff (U-statistic identity)
    summary = ntk_rank_summary(jnp.asarray(k, jnp.float32))
    assert float(m.predicted_effective_rank(n)) == pytest.approx(summary["r_eff"], rel=1e-4)


def test_rbf_kernel_r_inf_closed_form():
    # x ~ N(0, I_d), k = exp(−‖x−x'‖²/(2ℓ²)): k(x,x) = 1, E k(x,x')² = (1 + 4/ℓ²)^(−d/2).
    d, ell, n = 2, 2.0, 500
    x = jax.random.normal(jax.random.PRNGKey(3), (n, d))
    sq = jnp.sum((x[:, None] - x[None]) ** 2, axis=-1)
    m = kernel_moments(jnp.exp(-sq / (2 * ell**2)))
    r_inf = (1 + 4 / ell**2) ** (d / 2)
    assert abs(float(m.r_inf) - r_inf) < 4 * float(m.r_inf_stderr) + 1e-3
    assert 0 < float(m.r_inf_stderr) < 0.2


@pytest.mark.parametrize("k", [jnp.ones((3, 4)), jnp.ones((2, 2)), jnp.ones(5), "K"])
def test_bad_gram_raises(k):
    with pytest.raises(ValueError, match=r"k must|n ≥ 3"):
        kernel_moments(k)
