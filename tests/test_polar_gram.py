"""Gram Newton–Schulz (`form="gram"` / "auto"): the same polynomial iteration as the standard
form, computed on the m×m Gram matrix with restarts.

References: a float64 numpy run of the standard iteration (the definition), XLA's own FLOP
count of the compiled programs (for the cost model behind "auto"), and `muon` with the
standard form (for the optimizer wiring).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _linalg_helpers import with_spectrum

import specjax.optim as so
from specjax.linalg.polar import (
    GRAM_RESTART_EVERY,
    MUON_QUINTIC,
    _gram_flops,
    _standard_flops,
    gram_is_cheaper,
    newton_schulz,
    polar,
    polar_express_coefficients,
)

MUON_TABLE = (MUON_QUINTIC,) * 5


def reference_iteration(x, table) -> np.ndarray:
    """The standard iteration in float64 numpy: X ← aX + (bA + cA²)X on the short side."""
    x = np.asarray(x, np.float64)
    tall = x.shape[-2] > x.shape[-1]
    y = np.swapaxes(x, -1, -2) if tall else x
    y = y / np.linalg.norm(y, axis=(-2, -1), keepdims=True)
    for a, b, c in table:
        gram = y @ np.swapaxes(y, -1, -2)
        y = a * y + (b * gram + c * gram @ gram) @ y
    return np.swapaxes(y, -1, -2) if tall else y


def decaying(rng, m, n, kind):
    k = min(m, n)
    sigma = {"exp": np.exp(-np.arange(k) / 20.0), "harmonic": 1.0 / np.arange(1, k + 1)}[kind]
    return with_spectrum(rng, m, n, sigma)


@pytest.mark.parametrize("shape", [(32, 128), (128, 32), (24, 72)])
@pytest.mark.parametrize("table_name", ["muon", "polar_express"])
def test_gram_form_equals_the_iteration_in_float64(shape, table_name):
    """Exact arithmetic (float64): the two forms are one algorithm. Catches a dropped Q, a
    one-sided Gram update (Q A instead of Q A Q), a lost iteration at a restart, a transpose."""
    table = MUON_TABLE if table_name == "muon" else polar_express_coefficients(8)
    x = np.random.default_rng(0).standard_normal(shape)
    expected = reference_iteration(x, table)
    with jax.enable_x64(True):
        for restart_every in (1, 2, GRAM_RESTART_EVERY, 100):
            got = newton_schulz(
                jnp.asarray(x), table, eps=0.0, form="gram", restart_every=restart_every
            )
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(got), expected, atol=1e-11, err_msg=restart_every)


@pytest.mark.parametrize("kind", ["exp", "harmonic"])
@pytest.mark.parametrize("shape", [(96, 384), (384, 96)])
def test_restarts_keep_float32_gram_as_accurate_as_standard(kind, shape):
    """float32 on decaying spectra: the restarted Gram form stays within 2× the standard form's
    error against float64 (both ~1e-6); one long segment (no restart) was 40× worse at
    gpt_baby's shapes, and must be visibly worse here too, so the test can tell them apart."""
    rng = np.random.default_rng(1)
    x = decaying(rng, *shape, kind)
    expected = reference_iteration(x, MUON_TABLE)
    x32 = jnp.asarray(x, jnp.float32)

    def error(**kwargs):
        out = jax.jit(lambda x: newton_schulz(x, MUON_TABLE, **kwargs))(x32)
        return float(np.abs(np.asarray(out, np.float64) - expected).max())

    standard = error(form="standard")
    restarted = error(form="gram")
    unrestarted = error(form="gram", restart_every=len(MUON_TABLE))
    assert standard < 5e-6
    assert restarted < 2 * standard + 1e-6, (restarted, standard)
    assert unrestarted > 3 * restarted, (unrestarted, restarted)


def _xla_flops(form: str, shape, iters: int) -> float:
    table = (MUON_QUINTIC,) * iters
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    fn = jax.jit(lambda x: newton_schulz(x, table, form=form))
    cost = fn.lower(x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


@pytest.mark.parametrize("shape", [(64, 64), (64, 96), (64, 128), (64, 256), (256, 64), (32, 320)])
@pytest.mark.parametrize("iters", [3, 5, 8])
def test_flop_model_and_auto_agree_with_xla(shape, iters):
    """The cost model behind form="auto" against XLA's own FLOP count of both programs: each
    form within 8 % (XLA also counts the elementwise work), and "auto" compiles to the form
    the model calls cheaper. A wrong segment count or a dropped 2m²n term is off by ≥ 15 %."""
    m, n = sorted(shape)
    standard = _xla_flops("standard", shape, iters)
    gram = _xla_flops("gram", shape, iters)
    np.testing.assert_allclose(standard, _standard_flops(m, n, iters), rtol=0.08)
    np.testing.assert_allclose(gram, _gram_flops(m, n, iters, GRAM_RESTART_EVERY), rtol=0.08)
    picked = gram if gram_is_cheaper(shape, iters) else standard
    assert _xla_flops("auto", shape, iters) == picked


def test_auto_is_gram_on_wide_matrices_and_standard_on_square():
    x = np.random.default_rng(2).standard_normal((16, 64))
    square = np.random.default_rng(3).standard_normal((32, 32))
    for arr, form in ((x, "gram"), (x.T, "gram"), (square, "standard")):
        arr32 = jnp.asarray(arr, jnp.float32)
        auto = newton_schulz(arr32, MUON_TABLE, form="auto")
        chosen = newton_schulz(arr32, MUON_TABLE, form=form)
        np.testing.assert_array_equal(np.asarray(auto), np.asarray(chosen))


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express"])
def test_polar_gram_degenerate_inputs(method):
    f = jax.jit(lambda x: polar(x, method=method, form="gram"))
    assert np.all(np.asarray(f(jnp.zeros((4, 12)))) == 0)
    u, v = np.arange(1.0, 5.0), np.linspace(-1.0, 1.0, 12)
    rank1 = np.asarray(f(jnp.asarray(np.outer(u, v), jnp.float32)))
    expected = np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    np.testing.assert_allclose(rank1, expected, atol=0.3 if method == "newton_schulz" else 1e-3)
    x = np.random.default_rng(4).standard_normal((6, 20))
    base = np.asarray(f(jnp.asarray(x, jnp.float32)))
    for scale in (1e-30, 1e30):
        scaled = f(jnp.asarray(x * scale, jnp.float32))
        np.testing.assert_allclose(np.asarray(scaled), base, atol=1e-5)
    out = f(jnp.asarray(x, jnp.float32).at[1, 2].set(jnp.nan))
    assert np.all(np.isnan(np.asarray(out)))


def test_bad_form_arguments_are_named():
    x = jnp.ones((4, 8))
    with pytest.raises(ValueError, match=r"form must be one of .*'gram'.*got 'grams'"):
        newton_schulz(x, MUON_TABLE, form="grams")
    with pytest.raises(ValueError, match=r"form must be one of .*got 'Gram'"):
        polar(x, method="svd", form="Gram")
    with pytest.raises(ValueError, match=r"restart_every must be >= 1; got 0"):
        newton_schulz(x, MUON_TABLE, form="gram", restart_every=0)
    with pytest.raises(ValueError, match="form='gram' needs a concrete coefficient table"):
        jax.jit(lambda x, t: newton_schulz(x, t, form="gram"))(x, jnp.asarray(MUON_TABLE))
    traced_auto = jax.jit(lambda x, t: newton_schulz(x, t, form="auto"))(x, jnp.asarray(MUON_TABLE))
    np.testing.assert_allclose(
        np.asarray(traced_auto), np.asarray(newton_schulz(x, MUON_TABLE)), atol=1e-6
    )
    with pytest.raises(ValueError, match=r"ns_form must be one of .*got 'fast'"):
        so.muon(1e-3, ns_form="fast")
    with pytest.raises(ValueError, match=r"ns_form must be one of .*got 'fast'"):
        so.scale_by_polar(ns_form="fast")


def _hidden_tree(rng):
    return {
        "blocks": {
            "fc": {"kernel": jnp.asarray(rng.standard_normal((32, 128)), jnp.float32)},
            "proj": {"kernel": jnp.asarray(rng.standard_normal((128, 32)), jnp.float32)},
            "qkv": {"kernel": jnp.asarray(rng.standard_normal((32, 96)), jnp.float32)},
        },
        "wte": {"embedding": jnp.asarray(rng.standard_normal((40, 32)), jnp.float32)},
    }


@pytest.mark.parametrize("ns_form", ["gram", "auto"])
def test_muon_ns_form_changes_only_rounding(ns_form):
    """Three Muon updates with the Gram form equal those with the standard form to float32
    rounding (the wiring reaches the polar step; the scaling and momentum are untouched)."""
    rng = np.random.default_rng(5)
    params = _hidden_tree(rng)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
             for _ in range(3)]  # fmt: skip

    def run(form):
        tx = so.muon(2e-2, ns_form=form, weight_decay=0.1, scaling="rms")
        state = tx.init(params)
        p, outs = params, []
        for g in grads:
            updates, state = tx.update(g, state, p)
            p = jax.tree.map(jnp.add, p, updates)
            outs.append(updates)
        return outs

    gram_runs, standard_runs = run(ns_form), run("standard")
    # Not bitwise equal: the form did reach the polar step (gpt-like 32×128 is Gram under auto).
    assert not np.array_equal(
        np.asarray(gram_runs[-1]["blocks"]["fc"]["kernel"]),
        np.asarray(standard_runs[-1]["blocks"]["fc"]["kernel"]),
    )
    for got, want in zip(gram_runs, standard_runs, strict=True):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6),
            got,
            want,
        )
        hidden_gap = float(jnp.abs(got["blocks"]["fc"]["kernel"]).max())
        assert hidden_gap > 1e-3  # the Muon leaves did move (not a vacuous comparison)


def test_experiment_muon_config_defaults_to_auto_and_checks_the_form():
    from experiments.optimizers import MuonConfig

    assert MuonConfig().ns_form == "auto"
    with pytest.raises(ValueError, match=r"optim.ns_form must be one of .*got 'grams'"):
        MuonConfig(ns_form="grams")


def test_experiment_muon_config_passes_the_form_to_muon(monkeypatch):
    from experiments.optimizers import MuonConfig

    seen = {}
    monkeypatch.setattr(so, "muon", lambda *args, **kwargs: seen.update(kwargs))
    MuonConfig(ns_form="gram").transform(1e-3, 10)
    assert seen["ns_form"] == "gram"
