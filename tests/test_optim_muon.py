"""scale_by_polar and muon: agreement with optax.contrib.muon and a float64 reference, routing,
shapes, stats, None leaves."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _optim_trees import HIDDEN, Adam64, gpt_like_params, polar64, random_grads, to_numpy64
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


# ---- float64 reference of the documented step (both groups, weight decay, several steps) ----


def _muon_reference(params, grads, *, lr, momentum, nesterov, weight_decay, adam_weight_decay,
                    adam_lr, b1, b2, eps):  # fmt: skip
    """`muon`'s docstrings in float64. Hidden kernels: m_t = β m + (1 − β) g, Nesterov
    û = β m_t/(1 − β^{t+1}) + (1 − β) g/(1 − β^t) (else m_t/(1 − β^t)), X ← X − η(√max(1,
    fan_out/fan_in)·polar(û) + λX). Others: AdamW, decay λ_adam (default λ) on ndim ≥ 2 only."""
    x = to_numpy64(params)
    mu = {p: np.zeros_like(v) for p, v in x.items()}
    adam = Adam64(b1, b2, eps)
    lam_adam = weight_decay if adam_weight_decay is None else adam_weight_decay
    updates = []
    for t, g_tree in enumerate(grads, start=1):
        step_updates = {}
        for path, g in to_numpy64(g_tree).items():
            if path in HIDDEN:
                mu[path] = momentum * mu[path] + (1 - momentum) * g
                if nesterov:
                    u = momentum * mu[path] / (1 - momentum ** (t + 1)) + (1 - momentum) * g / (
                        1 - momentum**t
                    )
                else:
                    u = mu[path] / (1 - momentum**t)
                fan_in, fan_out = u.shape
                step = lr * (
                    np.sqrt(max(1.0, fan_out / fan_in)) * polar64(u) + weight_decay * x[path]
                )
            else:
                decay = lam_adam if x[path].ndim >= 2 else 0.0
                step = adam_lr * (adam.direction(path, g) + decay * x[path])
            step_updates[path] = -step
            x[path] = x[path] - step
        updates.append(step_updates)
    return updates


@pytest.mark.parametrize(
    ("nesterov", "adam_weight_decay"), [(True, None), (False, 0.3)], ids=["nesterov", "heavy_ball"]
)
def test_muon_matches_float64_reference_over_several_steps(nesterov, adam_weight_decay):
    """Exact polar (method="svd") so the reference is the formula itself: catches a wrong
    momentum form, scale, weight decay, and an AdamW group decaying vectors (norm gains, biases)."""
    params = gpt_like_params()
    params["block_0"]["mlp"]["bias"] = jnp.linspace(-1.0, 1.0, 32)  # nonzero: decay would show
    lr, adam_lr, wd = 0.02, 0.01, 0.1
    tx = so.muon(
        lr,
        momentum=0.9,
        nesterov=nesterov,
        weight_decay=wd,
        method="svd",
        adam_learning_rate=adam_lr,
        adam_weight_decay=adam_weight_decay,
    )
    grads = [random_grads(params, t) for t in range(3)]
    refs = _muon_reference(
        params, grads, lr=lr, momentum=0.9, nesterov=nesterov, weight_decay=wd,
        adam_weight_decay=adam_weight_decay, adam_lr=adam_lr, b1=0.9, b2=0.95, eps=1e-8,
    )  # fmt: skip
    state, p = tx.init(params), params
    update = jax.jit(tx.update)
    for t, g in enumerate(grads):
        u, state = update(g, state, p)
        got = to_numpy64(u)
        assert got.keys() == refs[t].keys()
        for path, ref in refs[t].items():
            np.testing.assert_allclose(got[path], ref, rtol=1e-4, atol=1e-6, err_msg=f"{t} {path}")
        p = optax.apply_updates(p, u)


def test_muon_docstring_states_the_adam_decay_rule():
    doc = so.muon.__doc__
    assert "ndim ≥ 2 only" in doc and "0 on vectors" in doc


# ---- None leaves and default routing ----


def test_muon_accepts_none_leaves_like_optax():
    params = gpt_like_params()
    with_none = {**params, "frozen": None, "extra": [None, {"kernel": params["head"]["kernel"]}]}
    ref = optax.adamw(1e-3)
    ref_u, _ = ref.update(with_none, ref.init(with_none), with_none)  # optax: None = empty subtree
    tx = so.muon(0.02, weight_decay=0.1)
    u, _ = jax.jit(tx.update)(random_grads(with_none, 0), tx.init(with_none), with_none)
    assert jax.tree.structure(u) == jax.tree.structure(ref_u)
    assert u["frozen"] is None and u["extra"][0] is None
    # the non-None leaves get exactly the updates of the same tree without the None entries
    plain = {**params, "extra": {"kernel": params["head"]["kernel"]}}
    tx2 = so.muon(0.02, weight_decay=0.1)
    u2, _ = jax.jit(tx2.update)(random_grads(plain, 0), tx2.init(plain), plain)
    got, want = _by_path(u), _by_path(u2)
    for path in (*HIDDEN, "embed/embedding", "head/kernel", "block_1/ln/scale"):
        np.testing.assert_allclose(got[path], want[path], rtol=1e-6, err_msg=path)
    assert "extra/1/kernel" in got  # a hidden kernel inside a list next to a None
    # explicit label functions see the None leaves as empty subtrees too
    labels = so.default_flax_label_fn()
    so.muon(0.02, label_fn=labels).init(with_none)


@pytest.mark.parametrize(
    "params",
    [
        {"w1": jnp.ones((8, 16)), "w2": jnp.ones((16, 4)), "b": jnp.zeros(16)},
        [jnp.ones((8, 16)), jnp.ones((16, 4))],
        {"embed": {"embedding": jnp.ones((10, 4))}, "head": {"kernel": jnp.ones((4, 10))}},
    ],
    ids=["plain_dict", "list", "only_embed_and_head"],
)
def test_muon_default_labels_finding_no_hidden_matrix_raise_at_init(params):
    with pytest.raises(ValueError, match=r"muon: label_fn=None .*no parameter .*label_fn=lambda"):
        so.muon(0.02).init(params)

    def labels(p):
        return jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adam", p)

    tx = so.muon(0.02, label_fn=labels)  # explicit label_fn: unchanged behaviour
    state = tx.init(params)
    assert len(state.inner_states["muon"].inner_state[1].nuclear_rank) == 2
    so.muon(0.02, label_fn=lambda p: jax.tree.map(lambda _: "adam", p)).init(params)
    so.muon(0.02).init({"scale": jnp.ones(4)})  # no matrix at all: nothing to route, no error
