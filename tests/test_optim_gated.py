"""gated_spectral: chooses the spectral step where nr(G) ≥ st(A), records what it did; matches
a float64 reference of its documented step; None leaves; default routing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _linalg_helpers import with_spectrum
from _optim_trees import Adam64, polar64, to_numpy64

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


# ---- float64 reference of the documented step (several steps, all options) ----

TINY_SIGMA = 4e-4  # σ/‖U‖_F below Polar Express's design floor 1e-3: the 8th iteration matters


def _designed_gradient(m=24, n=16, seed=0):
    """‖G‖_F ≈ 1, decaying spectrum (‖G‖_* ≈ 2.9 ≠ ‖G‖_F) plus one σ = 4e-4·‖G‖_F.

    Polar Express reaches that σ to ≈1e-3 with its default 8 iterations, ≈8e-2 with 7.
    """
    rng = np.random.default_rng(seed)
    s = np.geomspace(1.0, 0.05, n - 1)
    s = np.append(s / np.linalg.norm(s), TINY_SIGMA)
    return with_spectrum(rng, m, n, s)


def _gated_problem(steps=3):
    rng = np.random.default_rng(1)
    params = {
        "spec": {"kernel": jnp.asarray(rng.standard_normal((24, 16)) / 4, jnp.float32)},
        "euc": {"kernel": jnp.asarray(rng.standard_normal((16, 8)) / 2, jnp.float32)},
        "bias": jnp.asarray(rng.standard_normal(8), jnp.float32),
    }
    g_spec = _designed_gradient()
    scales = (1.0, -0.4, 0.7, 1.3)[:steps]  # U stays ∝ G under momentum: spectrum controlled
    grads = [
        {
            "spec": {"kernel": jnp.asarray(c * g_spec, jnp.float32)},
            "euc": {"kernel": jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)},
            "bias": jnp.asarray(rng.standard_normal(8), jnp.float32),
        }
        for c in scales
    ]
    # st(A) = 1 ≤ nr(U): spectral step; st(A) = 100 > min(m, n) ≥ nr(U): Euclidean step
    st_a = {"spec": {"kernel": 1.0}, "euc": {"kernel": 100.0}, "bias": None}
    return params, grads, st_a


def _gated_reference(params, grads, st_a, *, lr, momentum, nesterov, weight_decay, euclidean,
                     spectral_lr, match_rms=False, spectral_scale=1.0):  # fmt: skip
    """The docstring's step in float64: trace momentum, Euclidean (U or Adam of g), gate
    nr(U) ≥ st(A), spectral step lr·‖U‖_*/st(A)·polar(U) (or lr_s·√max(1, n/m)·polar(U), or
    with match_rms κ·‖lr·E‖_F/‖polar(U)‖_F·polar(U)), decoupled weight decay −lr·λ·X on every
    leaf."""
    x = to_numpy64(params)
    st_by_path = {"spec/kernel": 1.0, "euc/kernel": 100.0}
    assert to_numpy64(st_a).keys() == st_by_path.keys()
    trace = {p: np.zeros_like(v) for p, v in x.items()}
    adam = Adam64(0.9, 0.999, 1e-8)
    updates, took = [], []
    for g_tree in grads:
        step_updates, step_took = {}, {}
        for path, g in to_numpy64(g_tree).items():
            trace[path] = momentum * trace[path] + g
            u = g + momentum * trace[path] if nesterov else trace[path]
            e = adam.direction(path, g) if euclidean == "adam" else u
            step = lr * e
            if path in st_by_path:
                s = np.linalg.svd(u, compute_uv=False)
                spectral = s.sum() ** 2 / (s**2).sum() >= st_by_path[path]
                if spectral:
                    m, n = u.shape
                    coef = (
                        lr * s.sum() / st_by_path[path]
                        if spectral_lr is None
                        else spectral_lr * np.sqrt(max(1.0, n / m))
                    )
                    if match_rms:  # ‖polar(U)‖_F = √rank(U)
                        coef = spectral_scale * np.linalg.norm(lr * e) / np.sqrt(min(m, n))
                    step = coef * polar64(u)
                step_took[path] = int(spectral)
            step = step + lr * weight_decay * x[path]
            step_updates[path] = -step
            x[path] = x[path] - step
        updates.append(step_updates)
        took.append(step_took)
    return updates, took


GATED_CASES = {
    "sgd_heavy_ball": dict(euclidean="sgd", momentum=0.9, nesterov=False, spectral_lr=None),
    "sgd_nesterov": dict(euclidean="sgd", momentum=0.9, nesterov=True, spectral_lr=None),
    "adam": dict(euclidean="adam", momentum=0.5, nesterov=False, spectral_lr=None),
    "spectral_lr": dict(euclidean="sgd", momentum=0.0, nesterov=False, spectral_lr=0.05),
    "matched": dict(euclidean="adam", momentum=0.9, nesterov=True, spectral_lr=None,
                    match_rms=True, spectral_scale=0.5),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(GATED_CASES))
def test_gated_matches_float64_reference_over_several_steps(case):
    """Catches a flipped weight-decay sign, ‖U‖_F in place of ‖U‖_*, ignored momentum, and
    Polar Express with fewer than its default 8 iterations (σ = 4e-4‖U‖_F in the spectral block)."""
    kw = GATED_CASES[case]
    lr, wd = 0.1, 0.1
    params, grads, st_a = _gated_problem()
    tx = so.gated_spectral(
        lr,
        euclidean=kw["euclidean"],
        momentum=kw["momentum"],
        nesterov=kw["nesterov"],
        spectral_learning_rate=kw["spectral_lr"],
        match_rms=kw.get("match_rms", False),
        spectral_scale=kw.get("spectral_scale", 1.0),
        weight_decay=wd,
    )
    ref_updates, ref_took = _gated_reference(params, grads, st_a, lr=lr, weight_decay=wd, **kw)
    state = tx.init(params)
    update = jax.jit(tx.update)
    p = params
    for t, g in enumerate(grads):
        u, state = update(g, state, p, activation_stable_ranks=st_a)
        got = to_numpy64(u)
        for path, ref in ref_updates[t].items():
            if path == "spec/kernel":  # polar factor by Polar Express: spectral-norm error ≤ 1%
                err = np.linalg.norm(got[path] - ref, 2) / np.linalg.norm(ref, 2)
                assert err < 1e-2, (t, path, err)
            else:
                np.testing.assert_allclose(got[path], ref, rtol=1e-4, atol=1e-6, err_msg=path)
        for path, spectral in ref_took[t].items():
            assert int(state.took_spectral[path]) == spectral, (t, path)
        p = optax.apply_updates(p, u)


def test_polar_express_default_reaches_small_singular_values():
    """The gated optimizer's polar factor with its default iterations, on U with σ = 4e-4‖U‖_F:
    the spectral step (st(A) = 1, lr = 1) equals ‖U‖_*·polar(U) to 1% in spectral norm."""
    g = _designed_gradient()
    params = {"w": {"kernel": jnp.zeros((24, 16))}}
    tx = so.gated_spectral(1.0)
    u, _ = tx.update(
        {"w": {"kernel": jnp.asarray(g, jnp.float32)}},
        tx.init(params),
        params,
        activation_stable_ranks={"w": {"kernel": 1.0}},
    )
    ref = -np.linalg.svd(g, compute_uv=False).sum() * polar64(g)
    err = np.linalg.norm(np.asarray(u["w"]["kernel"], np.float64) - ref, 2) / np.linalg.norm(ref, 2)
    assert err < 1e-2, err


# ---- None leaves and default routing ----


def test_gated_accepts_none_leaves_like_optax():
    params, grads, st_a = _gated_problem(steps=2)
    with_none = {**params, "frozen": None, "pair": [None, params["bias"]]}
    ref = optax.adamw(1e-3)
    ref_u, _ = ref.update(with_none, ref.init(with_none), with_none)  # optax: None = empty subtree
    tx = so.gated_spectral(0.1, momentum=0.9, weight_decay=0.1)
    tx_plain = so.gated_spectral(0.1, momentum=0.9, weight_decay=0.1)
    s, s_plain = tx.init(with_none), tx_plain.init(params)
    st_none = {**st_a, "frozen": None, "pair": [None, None]}
    for g in grads:
        g_none = {**g, "frozen": None, "pair": [None, g["bias"]]}
        u, s = tx.update(g_none, s, with_none, activation_stable_ranks=st_none)
        u_plain, s_plain = tx_plain.update(g, s_plain, params, activation_stable_ranks=st_a)
        assert jax.tree.structure(u) == jax.tree.structure(ref_u)
        assert u["frozen"] is None and u["pair"][0] is None
        got, plain = to_numpy64(u), to_numpy64(u_plain)
        assert set(got) == set(plain) | {"pair/1"}
        for path, value in plain.items():
            np.testing.assert_allclose(got[path], value, rtol=1e-6, err_msg=path)
        np.testing.assert_allclose(got["pair/1"], plain["bias"], rtol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        {"w1": jnp.ones((8, 16)), "w2": jnp.ones((16, 4)), "b": jnp.zeros(16)},
        [jnp.ones((8, 16)), jnp.ones((16, 4))],
    ],
    ids=["plain_dict", "list"],
)
def test_gated_default_labels_finding_no_block_raise_at_init(params):
    with pytest.raises(
        ValueError, match=r"gated_spectral: label_fn=None .*no parameter.*label_fn="
    ):
        so.gated_spectral(0.1).init(params)

    def labels(p):
        return jax.tree.map(lambda x: "block" if x.ndim == 2 else "other", p)

    state = so.gated_spectral(0.1, label_fn=labels).init(params)  # explicit: unchanged
    assert len(state.took_spectral) == 2
    # an explicit label_fn routing nothing to the spectral step is the user's choice
    so.gated_spectral(0.1, label_fn=lambda p: jax.tree.map(lambda _: "other", p)).init(params)
    # vectors only: nothing to route, no error
    so.gated_spectral(0.1).init({"b": jnp.zeros(3)})


def test_matched_candidates_have_one_length_and_force_step_takes_them():
    """match_rms: ‖spectral step‖_F = κ‖Euclidean step‖_F per block; force_step overrides the
    gate on every block and is recorded in took_spectral; a bad force_step raises."""
    params, grads, st_a = _gated_problem(steps=1)
    tx = so.gated_spectral(0.1, euclidean="adam", momentum=0.9, match_rms=True, spectral_scale=2.0)
    state = tx.init(params)
    steps = {}
    for force in ("spectral", "euclidean"):
        u, s = tx.update(grads[0], state, params, activation_stable_ranks=st_a, force_step=force)
        steps[force] = to_numpy64(u)
        assert {int(v) for v in s.took_spectral.values()} == {int(force == "spectral")}
    for path in ("spec/kernel", "euc/kernel"):
        ratio = np.linalg.norm(steps["spectral"][path]) / np.linalg.norm(steps["euclidean"][path])
        np.testing.assert_allclose(ratio, 2.0, rtol=1e-3, err_msg=path)
    np.testing.assert_array_equal(steps["spectral"]["bias"], steps["euclidean"]["bias"])
    with pytest.raises(ValueError, match="force_step"):
        tx.update(grads[0], state, params, activation_stable_ranks=st_a, force_step="muon")
    with pytest.raises(ValueError, match="spectral_learning_rate"):
        so.gated_spectral(0.1, match_rms=True, spectral_learning_rate=0.1)
    with pytest.raises(ValueError, match="spectral_scale"):
        so.gated_spectral(0.1, match_rms=True, spectral_scale=0.0)
