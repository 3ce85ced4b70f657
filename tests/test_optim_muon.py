"""scale_by_polar and muon: agreement with optax.contrib.muon, routing, shapes, stats."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _optim_trees import HIDDEN, gpt_like_params, random_grads
from optax.contrib import MuonDimensionNumbers
from optax.contrib import muon as optax_muon

import specjax.optim as so
from specjax.optim.labels import is_hidden_kernel, leaves_with_paths


def _by_path(tree):
    return dict(leaves_with_paths(tree))


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_matches_optax_contrib_muon_on_hidden_matrices(nesterov):
    params = gpt_like_params()
    dims = jax.tree_util.tree_map_with_path(
        lambda p, _: MuonDimensionNumbers() if is_hidden_kernel(p) else None, params
    )
    ours = so.muon(0.02, weight_decay=0.1, eps=1e-8, nesterov=nesterov)
    ref = optax_muon(
        0.02, weight_decay=0.1, eps=1e-8, nesterov=nesterov, muon_weight_dimension_numbers=dims
    )
    s_ours, s_ref = ours.init(params), ref.init(params)
    p_ours = p_ref = params
    update_ours, update_ref = jax.jit(ours.update), jax.jit(ref.update)
    for step in range(3):
        g = random_grads(params, step)
        u_ours, s_ours = update_ours(g, s_ours, p_ours)
        u_ref, s_ref = update_ref(g, s_ref, p_ref)
        a, b = _by_path(u_ours), _by_path(u_ref)
        for path in HIDDEN:
            np.testing.assert_allclose(a[path], b[path], rtol=2e-5, atol=2e-6, err_msg=path)
        p_ours, p_ref = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_ref, u_ref)


def test_default_labels_route_embeddings_heads_and_vectors_to_adam():
    params = gpt_like_params()
    labels = _by_path(so.default_flax_label_fn()(params))
    assert {p for p, label in labels.items() if label == "muon"} == set(HIDDEN)
    # optax's rule would have sent these 2-D leaves to Muon:
    assert labels["embed/embedding"] == "adam" and labels["head/kernel"] == "adam"


def test_adam_leaves_get_adamw_updates():
    params = gpt_like_params()
    g = random_grads(params, 0)
    ours = so.muon(0.01, adam_b2=0.95, weight_decay=0.0)
    u, _ = jax.jit(ours.update)(g, ours.init(params), params)
    ref = optax.adamw(0.01, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0)
    u_ref, _ = ref.update(g, ref.init(params), params)
    a, b = _by_path(u), _by_path(u_ref)
    for path in ("embed/embedding", "head/kernel", "block_0/mlp/bias", "block_1/ln/scale"):
        np.testing.assert_allclose(a[path], b[path], rtol=1e-6, err_msg=path)


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [("muon", np.sqrt(2.0)), ("rms", 0.2 * np.sqrt(32)), ("spectral", np.sqrt(2.0)), (None, 1.0)],
)
def test_scale_by_polar_shape_rules_with_exact_polar(scaling, expected):
    u = jax.random.normal(jax.random.PRNGKey(3), (16, 32))
    tx = so.scale_by_polar(method="svd", scaling=scaling)
    out, state = tx.update({"w": u}, tx.init({"w": u}))
    uu, s, vt = np.linalg.svd(np.asarray(u, np.float64), full_matrices=False)
    np.testing.assert_allclose(out["w"], expected * uu @ vt, atol=1e-5)
    # nr(U) = ‖U‖_*²/‖U‖_F² from the exact polar factor
    np.testing.assert_allclose(state.nuclear_rank["w"], s.sum() ** 2 / (s**2).sum(), rtol=1e-5)


def test_zero_gradient_gives_zero_update_not_nan():
    tx = so.scale_by_polar()
    out, _ = tx.update({"w": jnp.zeros((8, 4))}, tx.init({"w": jnp.zeros((8, 4))}))
    assert np.all(np.asarray(out["w"]) == 0)


def test_conv_and_stacked_parameters():
    key = jax.random.PRNGKey(4)
    conv = jax.random.normal(key, (3, 3, 4, 8))
    stack = jax.random.normal(jax.random.fold_in(key, 1), (3, 8, 8))
    params = {"conv": conv, "stack": stack, "bias": jnp.ones(8)}
    tx = so.scale_by_polar(
        method="svd", scaling=None, reshape={"conv": "conv", "stack": "stack", "bias": None}
    )
    out, state = tx.update(params, tx.init(params))
    flat = np.asarray(conv, np.float64).reshape(36, 8)
    uu, _, vt = np.linalg.svd(flat, full_matrices=False)
    np.testing.assert_allclose(np.asarray(out["conv"]).reshape(36, 8), uu @ vt, atol=1e-5)
    for i in range(3):
        uu, _, vt = np.linalg.svd(np.asarray(stack[i], np.float64))
        np.testing.assert_allclose(out["stack"][i], uu @ vt, atol=1e-5)
    np.testing.assert_array_equal(out["bias"], params["bias"])  # vectors pass unchanged
    assert state.nuclear_rank["stack"].shape == (3,)


def test_muon_rejects_undeclared_stacked_kernel_at_init():
    params = {"layers": {"mlp": {"kernel": jnp.zeros((2, 8, 8))}}}
    with pytest.raises(ValueError, match=r"layers/mlp/kernel.*\(2, 8, 8\)"):
        so.muon(0.1).init(params)
    so.muon(0.1, reshape="stack").init(params)  # declared: fine


def test_label_fn_leaving_a_parameter_unassigned_is_rejected_at_init():
    params = gpt_like_params()

    def labels(p):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: None if "ln" in str(path) else "adam", p
        )

    with pytest.raises(ValueError, match=r"block_1/ln/scale.*None"):
        so.muon(0.1, label_fn=labels).init(params)


def test_muon_with_schedule_and_inject_hyperparams():
    params = gpt_like_params()
    sched = optax.linear_schedule(0.0, 0.02, 5)
    # iters and eps size the unrolled Newton–Schulz loop: they must stay static.
    tx = optax.inject_hyperparams(so.muon, static_args=("iters", "eps"))(learning_rate=sched)
    state = tx.init(params)
    u, state = jax.jit(tx.update)(random_grads(params, 0), state, params)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))  # lr(0) = 0
    u, state = jax.jit(tx.update)(random_grads(params, 1), state, params)
    assert float(jnp.abs(u["block_0"]["mlp"]["kernel"]).max()) > 0
