"""gated_spectral: chooses the spectral step where nr(G) ≥ st(A), records what it did."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import specjax
import specjax.optim as so


def _random_feature_problem(key, n=256, d=32, k=16):
    """Linear layer W (d, k) on random features A (n, d) with a flat spectrum: st(A) ≈ d."""
    ka, kt = jax.random.split(key)
    a_nxd = jax.random.normal(ka, (n, d))
    target_nxk = a_nxd @ jax.random.normal(kt, (d, k))
    return a_nxd, target_nxk


def test_gated_chooses_spectral_when_nr_exceeds_st_and_euclidean_otherwise():
    a_nxd, target = _random_feature_problem(jax.random.PRNGKey(0))
    # A low-stable-rank input: one dominant direction, st(A) ≈ 1.
    spike = a_nxd[:, :1] * 30.0
    a_low = a_nxd.at[:, :1].set(spike)
    params = {"layer": {"kernel": jnp.zeros((32, 16))}}
    tx = so.gated_spectral(0.1)
    init = tx.init(params)

    def loss(p, a):
        return 0.5 * jnp.mean(jnp.sum((a @ p["layer"]["kernel"] - target) ** 2, -1))

    for a, expect in ((a_low, 1), (a_nxd, 0)):
        g = jax.grad(loss)(params, a)
        st_a = float(specjax.stable_rank(a))
        nr_g = float(specjax.nuclear_rank(g["layer"]["kernel"]))
        _, state = tx.update(g, init, params, activation_stable_ranks={"layer": {"kernel": st_a}})
        assert int(state.took_spectral["layer/kernel"]) == int(nr_g >= st_a) == expect
        np.testing.assert_allclose(state.nuclear_rank["layer/kernel"], nr_g, rtol=2e-2)
        np.testing.assert_allclose(state.stable_rank["layer/kernel"], st_a, rtol=1e-6)


def test_gated_spectral_trains_on_random_features_and_reports_choices():
    a_nxd, target = _random_feature_problem(jax.random.PRNGKey(1))
    a_nxd = a_nxd * jnp.linspace(3.0, 0.1, 32)  # decaying spectrum: st(A) small, nr(G) larger
    params = {"layer": {"kernel": jnp.zeros((32, 16))}, "bias": jnp.zeros(16)}
    st_a = float(specjax.stable_rank(a_nxd))

    def loss(p):
        return 0.5 * jnp.mean(jnp.sum((a_nxd @ p["layer"]["kernel"] + p["bias"] - target) ** 2, -1))

    tx = so.gated_spectral(1.0 / float(jnp.linalg.norm(a_nxd, 2) ** 2 / 256))
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p, activation_stable_ranks={"layer": {"kernel": st_a}})
        return optax.apply_updates(p, u), s

    start = float(loss(params))
    took = []
    for _ in range(20):
        params, state = step(params, state)
        took.append(int(state.took_spectral["layer/kernel"]))
    assert float(loss(params)) < 0.5 * start
    assert took[0] == 1  # nr(G) ≫ st(A) at the start: spectral step
