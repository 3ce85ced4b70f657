"""specjax.optim.muon as a drop-in for optax.contrib.muon: optax's own usage runs unchanged,
updates match optax numerically (dimension numbers, consistent_rms, adaptive, ns_coeffs), each
optax spelling equals its native twin, and both spellings at once are rejected."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _optim_trees import gpt_like_params, random_grads
from optax.contrib import MuonDimensionNumbers as MDN
from optax.contrib import muon as optax_muon

import specjax.optim as so
from specjax.optim._matrices import from_matrices, leaf_view, to_matrices
from specjax.optim.labels import leaves_with_paths

RTOL, ATOL = 2e-5, 2e-6  # float32, 5 Newton–Schulz iterations


def _by_path(tree):
    return dict(leaves_with_paths(tree))


def _run(tx, params, steps, *, seed=1, jit=False):
    """Updates of `steps` steps of `tx` from `params` on the shared random gradients."""
    state, p, out = tx.init(params), params, []
    update = jax.jit(tx.update) if jit else tx.update
    for t in range(steps):
        u, state = update(random_grads(params, t, seed), state, p)
        out.append(u)
        p = optax.apply_updates(p, u)
    return out


# ---- optax's own usage, unchanged ----


def optax_documented_usage(muon):
    """optax's usage of `optax.contrib.muon`, with `muon` passed in: the loop optax's optimizer
    docstrings show, and the calls of optax 0.2.8's own muon tests (contrib/_muon_test.py:
    callable dimension numbers, a (10, 12) kernel seen as 4-D, prefix trees). Returns the
    updates each made, by name."""
    out = {}

    def f(x):
        return jnp.sum(x**2)

    solver = muon(learning_rate=0.003)
    params = jnp.array([1.0, 2.0, 3.0])
    opt_state = solver.init(params)
    losses = [f(params)]
    for _ in range(5):
        grad = jax.grad(f)(params)
        updates, opt_state = solver.update(grad, opt_state, params)
        params = optax.apply_updates(params, updates)
        losses.append(f(params))
    out["quadratic_losses"] = jnp.stack(losses)

    def weight_dim_nums_fn(params):
        fn_ = lambda x: MDN(0, 1) if x.ndim == 2 else None  # noqa: E731
        return jax.tree.map(fn_, params)

    opt = muon(learning_rate=1e-3, muon_weight_dimension_numbers=weight_dim_nums_fn)
    params = {"w1": jnp.ones((10, 10)), "w2": jnp.ones((2, 10))}
    state = opt.init(params)
    out["callable"], _ = opt.update(params, state, params=params)

    w = jax.random.normal(jax.random.key(0), shape=(10, 12))
    reshape_fn = lambda x: x.reshape(10, 3, 1, 4).transpose(3, 2, 0, 1)  # noqa: E731
    opt = muon(
        learning_rate=1e-3,
        muon_weight_dimension_numbers={"w": MDN(reduction_axis=(2,), output_axis=(0, 3))},
    )
    params = {"w": reshape_fn(w)}
    out["4d"], _ = opt.update(params, opt.init(params), params=params)
    opt = muon(learning_rate=1e-3, muon_weight_dimension_numbers={"w": MDN()})
    params = {"w": w}
    out["2d"], _ = opt.update(params, opt.init(params), params=params)
    out["2d_as_4d"] = jax.tree.map(reshape_fn, out["2d"])

    params = {
        "w1": {"a": jnp.ones((2, 3)), "b": jnp.ones((2, 3))},
        "w2": {"a": jnp.ones((2, 3)), "b": 2 * jnp.ones((2, 3))},
    }
    opt = muon(learning_rate=1e-3, muon_weight_dimension_numbers={"w1": MDN(), "w2": None})
    out["prefix"], _ = opt.update(params, opt.init(params), params=params)
    return out


def test_optax_documented_usage_runs_unchanged_and_matches_optax():
    ours, ref = optax_documented_usage(so.muon), optax_documented_usage(optax_muon)
    # the quadratic's 1-D parameter goes to the Adam group in both; it converges in both
    # (numbers differ by the documented Adam defaults: b2 0.95 vs 0.999, AdamW vs NAdam)
    assert float(ours["quadratic_losses"][-1]) < float(ours["quadratic_losses"][0])
    for name in ("callable", "4d", "prefix"):
        a, b = _by_path(ours[name]), _by_path(ref[name])
        assert a.keys() == b.keys()
        for path in a:
            if name == "prefix" and path.startswith("w2"):
                continue  # Adam leaves: documented default differences
            np.testing.assert_allclose(a[path], b[path], rtol=1e-5, atol=1e-6, err_msg=path)
    # optax's invariance: the same kernel seen as 4-D by dimension numbers gets the same update
    np.testing.assert_allclose(ours["4d"]["w"], ours["2d_as_4d"]["w"], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_optax_usage_with_matching_adam_settings_matches_optax_everywhere():
    """With the documented differences set to optax's values, the Adam group matches too."""
    params = {"w": jnp.ones((3, 4)), "b": jnp.array([1.0, 2.0, 3.0])}
    dims = {"w": MDN(), "b": None}
    kw = {"learning_rate": 0.003, "muon_weight_dimension_numbers": dims, "adam_b2": 0.999}
    ours = _run(so.muon(**kw, adam_nesterov=True), params, 2)
    ref = _run(optax_muon(**kw), params, 2)
    for a, b in zip(ours, ref, strict=True):
        for path, x in _by_path(a).items():
            np.testing.assert_allclose(x, _by_path(b)[path], rtol=RTOL, atol=ATOL, err_msg=path)


@pytest.mark.slow
def test_optax_positional_order_is_accepted():
    params = {"w": jax.random.normal(jax.random.key(2), (6, 4))}
    dims = {"w": MDN()}
    coeffs = (3.4445, -4.775, 2.0315)
    positional = so.muon(0.02, coeffs, 4, 0.9, 1e-8, 0.1, None, None,
                         muon_weight_dimension_numbers=dims)  # fmt: skip
    ref = optax_muon(0.02, coeffs, 4, 0.9, 1e-8, 0.1, None, None,
                     muon_weight_dimension_numbers=dims)  # fmt: skip
    np.testing.assert_allclose(
        _run(positional, params, 2)[-1]["w"], _run(ref, params, 2)[-1]["w"], rtol=RTOL, atol=ATOL
    )


@pytest.mark.slow
def test_inject_hyperparams_with_optax_names_matches_optax():
    """optax users inject hyperparameters: beta, eps, consistent_rms arrive as arrays."""
    params = {"w": jax.random.normal(jax.random.key(3), (6, 4)), "b": jnp.ones(4)}
    kw = dict(learning_rate=optax.linear_schedule(0.01, 0.02, 4), beta=0.9, eps=1e-8,
              consistent_rms=0.2, adam_b2=0.999, muon_weight_dimension_numbers={"w": MDN(),
              "b": None})  # fmt: skip
    ours = optax.inject_hyperparams(so.muon, static_args=("ns_steps",))(**kw, adam_nesterov=True)
    ref = optax.inject_hyperparams(optax_muon, static_args=("ns_steps",))(**kw)
    for a, b in zip(_run(ours, params, 2, jit=True), _run(ref, params, 2, jit=True), strict=True):
        for path, x in _by_path(a).items():
            np.testing.assert_allclose(x, _by_path(b)[path], rtol=RTOL, atol=ATOL, err_msg=path)


# ---- numerical agreement with optax.contrib.muon over several steps ----


def _mixed_params():
    """2-D kernels, a stacked (2, 8, 12) leaf, a conv (3, 3, 4, 8) kernel, an attention-style
    (16, 2, 4) kernel whose output is two axes, a transposed (12, 8) kernel, an embedding and
    a bias: every dimension-numbers form, plus Adam leaves."""
    ks = jax.random.split(jax.random.key(0), 7)
    params = {
        "embed": jax.random.normal(ks[0], (20, 8)),
        "dense": jax.random.normal(ks[1], (8, 16)),
        "stack": jax.random.normal(ks[2], (2, 8, 12)),
        "conv": jax.random.normal(ks[3], (3, 3, 4, 8)) * 0.1,
        "qkv": jax.random.normal(ks[4], (16, 2, 4)),
        "transposed": jax.random.normal(ks[5], (12, 8)),
        "bias": jnp.linspace(-1.0, 1.0, 16),
    }
    dims = {
        "embed": None,
        "dense": MDN(),
        "stack": MDN(reduction_axis=1, output_axis=2),
        "conv": MDN(reduction_axis=(0, 1, 2), output_axis=3),
        "qkv": MDN(reduction_axis=0, output_axis=(1, 2)),
        "transposed": MDN(reduction_axis=1, output_axis=0),
        "bias": None,
    }
    return params, dims


CASES = {
    "defaults_wd_mask": dict(
        weight_decay=0.1, weight_decay_mask=lambda p: jax.tree.map(lambda x: x.ndim != 3, p)
    ),
    "consistent_rms_heavy_ball": dict(consistent_rms=0.2, nesterov=False, beta=0.9),
    "custom_ns_coeffs": dict(ns_coeffs=(3.0, -3.2, 1.2), ns_steps=6, eps=1e-7),
    "dion_table": dict(ns_coeffs="dion"),
    # the default-run case: also a custom ns_coeffs triple, beta and ns_steps
    "adaptive": dict(
        adaptive=True, consistent_rms=0.2, beta=0.9, ns_coeffs=(3.0, -3.2, 1.2), ns_steps=6
    ),
}


def _unstack(params, dims):
    """The (2, 8, 12) stack as two 2-D leaves: optax's `adaptive` takes one ⟨û, O⟩ per leaf,
    ours one per matrix, so the per-matrix reference is optax on the unstacked tree."""
    p = {k: v for k, v in params.items() if k != "stack"}
    d = {k: v for k, v in dims.items() if k != "stack"}
    p["stack"] = [params["stack"][0], params["stack"][1]]
    d["stack"] = [MDN(), MDN()]
    return p, d


@pytest.mark.parametrize(
    "case", [c if c == "adaptive" else pytest.param(c, marks=pytest.mark.slow) for c in CASES]
)
def test_muon_matches_optax_contrib_muon_over_several_steps(case):
    params, dims = _mixed_params()
    # Adam settings at optax's values (their defaults differ here: see muon's docstring)
    kw = {"muon_weight_dimension_numbers": dims, "adam_b2": 0.999, "adam_weight_decay": 0.0}
    kw.update(CASES[case])
    nesterov = kw.get("nesterov", True)
    tx = so.muon(0.02, adam_nesterov=nesterov, **kw)
    if case == "adaptive":
        ref_params, ref_dims = _unstack(params, dims)
        ref_tx = optax_muon(0.02, **{**kw, "muon_weight_dimension_numbers": ref_dims})
    else:
        ref_params, ref_tx = params, optax_muon(0.02, **kw)
    ours = jax.jit(tx.update)
    ref = jax.jit(ref_tx.update)
    s, s_ref, p, p_ref = tx.init(params), ref_tx.init(ref_params), params, ref_params
    for t in range(3):
        g = random_grads(params, t)
        g_ref = _unstack(g, dims)[0] if case == "adaptive" else g
        u, s = ours(g, s, p)
        u_ref, s_ref = ref(g_ref, s_ref, p_ref)
        got = dict(u)
        if case == "adaptive":
            got["stack"] = [u["stack"][0], u["stack"][1]]
        for path, want in _by_path(u_ref).items():
            np.testing.assert_allclose(
                _by_path(got)[path], want, rtol=RTOL, atol=ATOL, err_msg=f"step {t} {path}"
            )
        p, p_ref = optax.apply_updates(p, u), optax.apply_updates(p_ref, u_ref)


# ---- each optax spelling equals its native twin; both at once is an error ----

TWINS = [
    (dict(beta=0.8), dict(momentum=0.8)),
    (dict(ns_steps=3), dict(iters=3)),
    (dict(ns_coeffs="standard"), dict(method="newton_schulz")),
    (dict(consistent_rms=0.2), dict(scaling="rms")),
]


@pytest.mark.slow
@pytest.mark.parametrize(("optax_kw", "native_kw"), TWINS, ids=lambda kw: next(iter(kw)))
def test_optax_spelling_equals_native_spelling(optax_kw, native_kw):
    params = gpt_like_params()
    a = _run(so.muon(0.02, **optax_kw), params, 2)[-1]
    b = _run(so.muon(0.02, **native_kw), params, 2)[-1]
    base = _run(so.muon(0.02), params, 2)[-1]
    kernel = "block_0/mlp/kernel"
    np.testing.assert_allclose(_by_path(a)[kernel], _by_path(b)[kernel], rtol=1e-6)
    if "ns_coeffs" not in optax_kw:  # "standard" is the default itself
        assert not np.allclose(_by_path(a)[kernel], _by_path(base)[kernel], rtol=1e-3)


@pytest.mark.slow
def test_dimension_numbers_equal_label_fn_and_reshape():
    params, dims = _mixed_params()
    params, dims = (
        {k: params[k] for k in ("dense", "stack", "bias")},
        {k: dims[k] for k in ("dense", "stack", "bias")},
    )
    by_dims = _run(so.muon(0.02, muon_weight_dimension_numbers=dims), params, 2)[-1]
    by_labels = _run(
        so.muon(
            0.02,
            label_fn=lambda p: {"dense": "muon", "stack": "muon", "bias": "adam"},
            reshape="stack",
        ),
        params,
        2,
    )[-1]
    for k in params:
        np.testing.assert_allclose(by_dims[k], by_labels[k], rtol=1e-6, err_msg=k)


BOTH = [
    (dict(momentum=0.9, beta=0.9), ("momentum", "beta")),
    (dict(iters=5, ns_steps=5), ("iters", "ns_steps")),
    (dict(method="svd", ns_coeffs=(3.4445, -4.775, 2.0315)), ("method", "ns_coeffs")),
    (dict(scaling="rms", consistent_rms=0.2), ("scaling", "consistent_rms")),
    (dict(scaling=None, consistent_rms=0.2), ("scaling", "consistent_rms")),
    (dict(label_fn=lambda p: p, muon_weight_dimension_numbers={}), ("label_fn", "muon_weight")),
    (dict(reshape="stack", muon_weight_dimension_numbers={}), ("reshape", "muon_weight")),
]


@pytest.mark.parametrize(("kw", "names"), BOTH, ids=[n[0] for _, n in BOTH])
def test_both_spellings_of_one_setting_is_an_error_naming_both(kw, names):
    with pytest.raises(ValueError, match=rf"{names[0]}=.*{names[1]}"):
        so.muon(0.02, **kw)


# ---- routing and bad input ----


def test_dimension_numbers_routing_no_matrix_raises_at_init_and_says_how():
    params = {"w1": jnp.ones((8, 16)), "w2": jnp.ones((16, 4)), "b": jnp.zeros(16)}
    tx = so.muon(0.02, muon_weight_dimension_numbers=lambda p: jax.tree.map(lambda _: None, p))
    with pytest.raises(ValueError, match=r"muon_weight_dimension_numbers .*sent no parameter.*"
                       r"'w1'.*label_fn=.*MuonDimensionNumbers"):  # fmt: skip
        tx.init(params)
    # the flax default on a plain dict points to optax's form too
    with pytest.raises(ValueError, match=r"label_fn=None.*muon_weight_dimension_numbers="):
        so.muon(0.02).init(params)


@pytest.mark.parametrize(
    ("kw", "params", "match"),
    [
        (dict(muon_weight_dimension_numbers={"b": MDN()}), {"b": jnp.ones(3)}, r"'b'.*ndim >= 2"),
        (
            dict(muon_weight_dimension_numbers={"w": MDN(0, 0)}),
            {"w": jnp.ones((3, 3))},
            r"'w'.*disjoint",
        ),
        (
            dict(muon_weight_dimension_numbers={"w": MDN(0, 2)}),
            {"w": jnp.ones((3, 3))},
            r"'w'.*output_axis 2 is out of range",
        ),
        (
            dict(muon_weight_dimension_numbers={"a": MDN(), "c": None}),
            {"w": jnp.ones((3, 3))},
            r"muon_weight_dimension_numbers must be a tree",
        ),
    ],
    ids=["vector", "same_axis", "out_of_range", "wrong_tree"],
)
def test_bad_dimension_numbers_raise_at_init_naming_the_parameter(kw, params, match):
    with pytest.raises(ValueError, match=match):
        so.muon(0.02, **kw).init(params)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(ns_coeffs="quintic"), r"ns_coeffs='quintic' is not a preset.*dion"),
        (dict(ns_coeffs=(1.0, 2.0)), r"ns_coeffs must have shape \(3,\) or \(n, 3\)"),
        (dict(ns_coeffs=((3.0, -3.0, 1.0),) * 6), r"6 rows .*ns_steps=5"),
        (dict(ns_steps=0), r"ns_steps must be an integer >= 1, got 0"),
        (dict(preconditioning="aol"), r"preconditioning must be one of \('frobenius',\)"),
        (dict(consistent_rms=-0.2), r"consistent_rms must be a positive"),
        (dict(beta=1.5), r"beta must be a number in \[0, 1\), got 1.5"),
        (dict(momentum=-0.1), r"momentum must be a number in \[0, 1\), got -0.1"),
        (dict(adam_eps_root=-1.0), r"adam_eps_root must be a finite number >= 0"),
    ],
    ids=lambda x: next(iter(x)) if isinstance(x, dict) else "",
)
def test_bad_optax_style_arguments_raise_at_construction(kw, match):
    with pytest.raises(ValueError, match=match):
        so.muon(0.02, **kw)


def test_dimension_numbers_view_round_trip_and_fans():
    x = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
    view = leaf_view("w", x.shape, MDN(reduction_axis=(3, 0), output_axis=2), argument="dims")
    assert (view.stack_shape, view.fan_in, view.fan_out) == ((3,), 10, 4)
    mats = to_matrices(x, view)
    # matrix b, row (i3, i0), column i2 holds x[i0, b, i2, i3]
    np.testing.assert_array_equal(mats[1, 2 * 2 + 1, 3], x[1, 1, 3, 2])
    np.testing.assert_array_equal(from_matrices(mats, view), x)


# ---- the optax_muon experiment config ----


def test_optax_muon_config_passes_consistent_rms_to_optax_and_matches_rms_scaled_muon():
    """`optim=optax_muon optim.consistent_rms=0.2` reaches optax.contrib.muon, and its hidden
    matrix updates then equal specjax's `optim=muon optim.scaling=rms` (equal terms). (Every
    optimizer config composes from the command line: tests/test_configs.py.)"""
    from experiments.optimizers import MuonConfig, OptaxMuonConfig

    cfg = OptaxMuonConfig(consistent_rms=0.2)
    with pytest.raises(ValueError, match=r"optim.consistent_rms must be a finite number in \(0"):
        OptaxMuonConfig(consistent_rms=-0.2)
    ks = jax.random.split(jax.random.key(5), 2)
    params = {"mlp": {"kernel": jax.random.normal(ks[0], (8, 16))}, "ln": {"scale": jnp.ones(8)}}
    from_config = _run(cfg.build(10), params, 1)[-1]
    direct = _run(optax_muon(cfg.lr, consistent_rms=0.2), params, 1)[-1]
    width_scaled = _run(optax_muon(cfg.lr), params, 1)[-1]
    ours = _run(MuonConfig(lr=cfg.lr, scaling="rms").build(10), params, 1)[-1]
    a, b, c, d = (t["mlp"]["kernel"] for t in (from_config, direct, width_scaled, ours))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(a, c, rtol=1e-2)  # consistent_rms changed the step
    np.testing.assert_allclose(a, d, rtol=RTOL, atol=ATOL)
