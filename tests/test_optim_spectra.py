"""clip_by_spectral_norm, spectra*: clip bounds, small updates, c → ∞ (and c = inf) equals the
base, a float64 reference of the SPECTRA step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from _optim_trees import Adam64, gpt_like_params, random_grads, soft_clip64, to_numpy64
from hypothesis import given, settings
from hypothesis import strategies as st

import specjax.optim as so
from specjax.optim.labels import leaves_with_paths


def _official_alpha(path: str, shape) -> float:
    """The published α: √max(1, rows/cols) of torch's layout, i.e. fan_out/fan_in of a flax
    kernel (in, out) and vocab/d of an embedding table (vocab, d) (path with "embedding")."""
    if len(shape) != 2:
        return 1.0
    rows, cols = (shape[0], shape[1]) if "embedding" in path else (shape[1], shape[0])
    return float(np.sqrt(max(1.0, rows / cols)))


def _soft_clip_reference(u, c):
    uu, s, vt = np.linalg.svd(np.asarray(u, np.float64), full_matrices=False)
    return (uu * (s / np.sqrt(1 + (s / c) ** 2))) @ vt


@jax.jit
def _clip_soft(u, c):
    """One compile for every (u, c): a traced c is allowed (checked when concrete)."""
    tx = so.clip_by_spectral_norm(c)
    return tx.update({"w": u}, tx.init({"w": u}))


@settings(max_examples=12)
@given(scale=st.floats(0.01, 300.0), c=st.floats(0.05, 20.0), seed=st.integers(0, 3))
def test_soft_clip_matches_float64_svd_and_bounds_norm(scale, c, seed):
    u = scale * jax.random.normal(jax.random.PRNGKey(seed), (12, 20))
    out, state = _clip_soft(u, c)
    ref = _soft_clip_reference(u, c)
    np.testing.assert_allclose(out["w"], ref, atol=2e-4 * max(1.0, c))
    assert np.linalg.norm(np.asarray(out["w"], np.float64), 2) <= c * (1 + 1e-4)
    np.testing.assert_allclose(state.spectral_norm["w"], np.linalg.norm(u, 2), rtol=1e-2)


def test_small_updates_pass_nearly_unchanged_and_hard_clip_is_exact():
    u = 1e-3 * jax.random.normal(jax.random.PRNGKey(0), (8, 6))
    out, _ = so.clip_by_spectral_norm(1.0).update({"w": u}, None)
    # H_c(U) = U(1 − O(σ²/c²)), σ ≈ 5e-3 here: relative change ≈ 1e-5
    np.testing.assert_allclose(out["w"], u, rtol=1e-4)
    np.testing.assert_allclose(out["w"], _soft_clip_reference(u, 1.0), rtol=2e-6, atol=1e-9)
    big = 10 * jax.random.normal(jax.random.PRNGKey(1), (8, 6))
    out, _ = so.clip_by_spectral_norm(2.0, kind="hard").update({"w": big}, None)
    uu, s, vt = np.linalg.svd(np.asarray(big, np.float64), full_matrices=False)
    np.testing.assert_allclose(out["w"], (uu * np.minimum(s, 2.0)) @ vt, atol=1e-4)


def test_vectors_are_norm_clipped():
    g = jnp.arange(1.0, 5.0)
    out, state = so.clip_by_spectral_norm(1.0).update({"b": g}, None)
    norm = np.linalg.norm(np.asarray(g))
    np.testing.assert_allclose(out["b"], g / np.sqrt(1 + norm**2), rtol=1e-6)
    np.testing.assert_allclose(state.spectral_norm["b"], norm, rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "make_base"),
    [
        (
            lambda: so.spectra_adamw(1e-2, 1e12, alpha=None, weight_decay=0.1, track_stats=False),
            lambda: optax.adamw(1e-2, weight_decay=0.1),
        ),
        (
            lambda: so.spectra_ademamix(1e-2, 1e12, alpha=None, track_stats=False),
            lambda: optax.chain(
                optax.contrib.scale_by_ademamix(alpha=5.0), optax.scale_by_learning_rate(1e-2)
            ),
        ),
    ],
    ids=["adamw", "ademamix"],
)
def test_spectra_with_huge_c_is_its_base_step_for_step(make, make_base):
    params = gpt_like_params()
    tx, base = make(), make_base()
    s, sb = tx.init(params), base.init(params)
    p, pb = params, params
    update = jax.jit(tx.update)
    for step in range(2):
        g = random_grads(params, step)
        u, s = update(g, s, p)
        ub, sb = base.update(g, sb, pb)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(ub), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
        p, pb = optax.apply_updates(p, u), optax.apply_updates(pb, ub)


def test_spectra_update_spectral_norm_is_below_alpha_lr_c():
    params = gpt_like_params()
    lr, c = 0.05, 0.5
    tx = so.spectra_signum(lr, c)  # sign updates have large spectral norm: clipping is active
    u, state = jax.jit(tx.update)(random_grads(params, 0), tx.init(params), params)
    for path, leaf in leaves_with_paths(u):
        x = np.asarray(leaf, np.float64)
        alpha = _official_alpha(path, x.shape)
        norm = np.linalg.norm(x, 2) if x.ndim == 2 else np.linalg.norm(x)
        assert norm <= alpha * lr * c * (1 + 1e-4), path
        assert float(state.spectral_norm[path]) > c  # it was clipped from above c


def test_pre_clip_and_constant_clr_warmup():
    params = {"w": jnp.ones((4, 4))}
    sched = optax.linear_schedule(0.0, 1.0, 4)
    tx = so.spectra(optax.identity(), 1.0, learning_rate=sched, constant_clr_warmup=4, pre_clip=2.0)
    state = tx.init(params)
    update = jax.jit(tx.update)
    levels = []
    for _ in range(6):
        _, state = update({"w": 10 * jnp.ones((4, 4))}, state, params)
        levels.append(float(state.clip_level))
    # c·η(t) held at c·η(4) = 1 during warm-up, then c
    np.testing.assert_allclose(levels[1:], [4.0, 2.0, 4 / 3, 1.0, 1.0], rtol=1e-5)
    # pre-clip bounded the raw gradient's spectral norm (40) by 2 before the base
    np.testing.assert_allclose(state.pre_clip_spectral_norm["w"], 40.0, rtol=1e-3)


# ---- c = inf: no clipping ----


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_clip_by_spectral_norm_with_infinite_c_is_the_identity(kind):
    params = gpt_like_params()
    g = random_grads(params, 0)
    tx = so.clip_by_spectral_norm(float("inf"), kind=kind)
    out, state = jax.jit(tx.update)(g, tx.init(params))
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(g), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    w = np.asarray(g["block_0"]["mlp"]["kernel"], np.float64)
    np.testing.assert_allclose(
        state.spectral_norm["block_0/mlp/kernel"], np.linalg.norm(w, 2), rtol=1e-2
    )


def test_spectra_with_infinite_c_is_its_base_step_for_step():
    """c = inf: alpha=None gives optax.adamw exactly; the default (official) α gives
    α·(Adam direction)."""
    params = gpt_like_params()
    inf = float("inf")
    sched = optax.linear_schedule(1e-3, 1e-2, 3)
    cases = {
        "adamw": (
            so.spectra_adamw(1e-2, inf, alpha=None, weight_decay=0.1),
            optax.adamw(1e-2, weight_decay=0.1),
            None,
        ),
        "warmup": (
            so.spectra_adamw(sched, inf, alpha=None, constant_clr_warmup=3, pre_clip=inf),
            optax.adamw(sched, weight_decay=0.0),
            None,
        ),
        "alpha": (so.spectra_adamw(1e-2, inf, weight_decay=0.1), None, 1e-2),
    }
    for name, (tx, base, lr) in cases.items():
        s, p = tx.init(params), params
        sb, pb = (base.init(params), params) if base is not None else (None, None)
        adam = Adam64(0.9, 0.999, 1e-8)
        update = jax.jit(tx.update)
        for step in range(3):
            g = random_grads(params, step)
            u, s = update(g, s, p)
            assert np.isinf(float(s.clip_level)), name
            if base is not None:
                ub, sb = base.update(g, sb, pb)
                for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(ub), strict=True):
                    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=name)
                pb = optax.apply_updates(pb, ub)
            else:
                x = to_numpy64(p)
                for path, d in to_numpy64(g).items():
                    alpha = _official_alpha(path, x[path].shape)
                    ref = -lr * (alpha * adam.direction(path, d) + 0.1 * x[path])
                    np.testing.assert_allclose(
                        to_numpy64(u)[path], ref, rtol=2e-4, atol=1e-7, err_msg=path
                    )
            p = optax.apply_updates(p, u)


# ---- float64 reference of the SPECTRA step with the clip active ----


def _spectra_adamw_reference(params, grads, *, lr, c, weight_decay, alpha):
    """X ← (1 − λη)X − α η H_c(U), U = Adam's m̂/(√v̂ + ε), α = √max(1, fan_out/fan_in)."""
    x = to_numpy64(params)
    adam = Adam64(0.9, 0.999, 1e-8)
    updates = []
    for g_tree in grads:
        step_updates = {}
        for path, g in to_numpy64(g_tree).items():
            h = soft_clip64(adam.direction(path, g), c)
            a = 1.0
            if alpha == "muon" and h.ndim == 2:
                a = np.sqrt(max(1.0, h.shape[1] / h.shape[0]))
            elif alpha == "official":
                a = _official_alpha(path, h.shape)
            step = lr * (a * h + weight_decay * x[path])
            step_updates[path] = -step
            x[path] = x[path] - step
        updates.append(step_updates)
    return updates


@pytest.mark.parametrize("alpha", ["official", "muon", None])
def test_spectra_adamw_matches_float64_reference_with_active_clip(alpha):
    """Sign-like Adam directions have ‖U‖₂ ≫ c = 2: the clip and α = √max(1, fan_out/fan_in)
    (√2 for 16×32, √2.5 for the 16×40 head; on the 40×16 embedding 1 with "muon", √2.5 with
    "official") both matter."""
    params = gpt_like_params()
    lr, c, wd = 1e-2, 2.0, 0.1
    tx = so.spectra_adamw(lr, c, weight_decay=wd, alpha=alpha)
    grads = [random_grads(params, t) for t in range(3)]
    refs = _spectra_adamw_reference(params, grads, lr=lr, c=c, weight_decay=wd, alpha=alpha)
    state, p = tx.init(params), params
    update = jax.jit(tx.update)
    for t, g in enumerate(grads):
        u, state = update(g, state, p)
        got = to_numpy64(u)
        for path, ref in refs[t].items():
            np.testing.assert_allclose(got[path], ref, rtol=2e-4, atol=2e-7, err_msg=f"{t} {path}")
        p = optax.apply_updates(p, u)
