"""Each optimizer lowers the loss of a small regression; states round-trip through orbax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import specjax.optim as so


def _problem():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x_nxd = jax.random.normal(k1, (128, 16))
    w_true = jax.random.normal(k2, (16, 16)) / 4
    y_nxk = jnp.tanh(x_nxd @ w_true) @ jax.random.normal(k3, (16, 4))
    params = {
        "hidden": {"kernel": 0.3 * jax.random.normal(k1, (16, 16)), "bias": jnp.zeros(16)},
        "head": {"kernel": 0.3 * jax.random.normal(k2, (16, 4))},
    }

    def loss(p):
        h = jnp.tanh(x_nxd @ p["hidden"]["kernel"] + p["hidden"]["bias"])
        return jnp.mean((h @ p["head"]["kernel"] - y_nxk) ** 2)

    return params, loss


OPTIMIZERS = {
    "muon": lambda: so.muon(0.02, adam_learning_rate=0.01),
    "spectra_adamw": lambda: so.spectra_adamw(0.03, 1.0),
    "spectra_signum": lambda: so.spectra_signum(0.03, 1.0),
    "spectra_ademamix": lambda: so.spectra_ademamix(0.03, 1.0),
    "clip_sgd": lambda: optax.chain(so.clip_by_spectral_norm(1.0), optax.sgd(0.1)),
    "gated_sgd": lambda: so.gated_spectral(0.1),
    "gated_adam": lambda: so.gated_spectral(0.01, euclidean="adam"),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_lowers_regression_loss(name):
    params, loss = _problem()
    tx = OPTIMIZERS[name]()
    extra = {"activation_stable_ranks": {"hidden": {"kernel": 2.0}}} if "gated" in name else {}

    @jax.jit
    def run(p):
        def body(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p, **extra)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (p, tx.init(p)), None, length=30)
        return p

    start, end = float(loss(params)), float(loss(run(params)))
    assert end < 0.7 * start, (name, start, end)


def test_states_round_trip_through_orbax(tmp_path):
    params, loss = _problem()
    states = {}
    for name in ("muon", "spectra_adamw", "gated_sgd"):
        tx = OPTIMIZERS[name]()
        extra = {"activation_stable_ranks": {"hidden": {"kernel": 2.0}}} if "gated" in name else {}
        _, states[name] = tx.update(jax.grad(loss)(params), tx.init(params), params, **extra)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "opt", states)
    checkpointer.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, states)
    restored = checkpointer.restore(tmp_path / "opt", abstract)
    assert jax.tree.structure(restored) == jax.tree.structure(states)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(states), strict=True):
        np.testing.assert_array_equal(a, b)
    # the logged statistics survive too
    muon_stats = restored["muon"].inner_states["muon"].inner_state[1].nuclear_rank
    assert set(muon_stats) == {"hidden/kernel"}
