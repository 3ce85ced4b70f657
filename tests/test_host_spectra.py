"""The host-side per-layer spectra (`experiments.nanogpt.host_spectra`) against numpy float64
SVDs, and the NanoGPT spectra call against the former jitted `diagnostics.layer_spectra` path."""

import jax
import numpy as np
import pytest

from experiments.nanogpt import host_spectra, layers
from experiments.nanogpt import step as step_lib
from experiments.nanogpt.model import GPT, GPTConfig
from experiments.optimizers import MuonConfig
from specjax import diagnostics

RNG = np.random.default_rng(0)


def _low_rank_plus_noise(m, n, r):
    return RNG.normal(size=(m, r)) @ RNG.normal(size=(r, n)) * 3 + 0.1 * RNG.normal(size=(m, n))


def _reference(x, top_k):
    """float64 SVD: (top-k σ, ‖x‖_F, stable rank ‖x‖_F²/σ₁², nuclear rank (Σσ)²/Σσ²)."""
    s = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
    frob = np.sqrt((s**2).sum())
    return s[:top_k], frob, frob**2 / s[0] ** 2, s.sum() ** 2 / (s**2).sum()


def test_every_statistic_matches_a_float64_svd_of_its_own_matrix():
    """Several same-shaped layers and a transposed shape: each row is its own matrix's, the
    update's σ's are the update's, and ratio = nr(G) / st(A)."""
    shapes = {"b": (20, 12), "a": (20, 12), "c": (12, 20), "d": (20, 12), "e": (7, 5)}
    w, g, u = ({n: _low_rank_plus_noise(*sh, r).astype(np.float32) for n, sh in shapes.items()}
               for r in (2, 5, 1))  # fmt: skip
    st = {n: np.float32(1.5 + i) for i, n in enumerate(shapes) if n != "e"}
    out = host_spectra.layer_spectra(w, g, u, st, top_k=6)
    assert list(out) == sorted(shapes)
    for name in shapes:
        got = out[name]
        for kind, x in (("weight", w[name]), ("update", u[name])):
            top, frob, stable, _ = _reference(x, 6)
            np.testing.assert_allclose(got[f"{kind}_top_singular_values"], top, rtol=1e-5)
            np.testing.assert_allclose(got[f"{kind}_spectral_norm"], top[0], rtol=1e-5)
            np.testing.assert_allclose(got[f"{kind}_frobenius_norm"], frob, rtol=1e-5)
            np.testing.assert_allclose(got[f"{kind}_stable_rank"], stable, rtol=1e-5)
        _, frob_g, _, nr = _reference(g[name], 6)
        np.testing.assert_allclose(got["grad_nuclear_rank"], nr, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(got["grad_frobenius_norm"], frob_g, rtol=1e-5, err_msg=name)
        if name in st:
            assert got["act_stable_rank"] == st[name]
            np.testing.assert_allclose(got["ratio"], nr / st[name], rtol=1e-5, err_msg=name)
        else:
            assert "ratio" not in got and "act_stable_rank" not in got
    assert out["e"]["weight_top_singular_values"].shape == (5,)  # k = min(top_k, m, n)


def test_activation_stable_rank_from_its_gram_matches_a_float64_svd():
    """st(A) = tr(AᵀA) / λ_max(AᵀA) = ‖A‖_F² / σ₁², from a float32 Gram as the jit gives it."""
    acts = {"a": _low_rank_plus_noise(96, 24, 3) + 2.0, "b": _low_rank_plus_noise(40, 24, 1),
            "c": _low_rank_plus_noise(50, 8, 8)}  # fmt: skip
    grams = {n: (a.T @ a).astype(np.float32) for n, a in acts.items()}
    grams["zero"] = np.zeros((8, 8), np.float32)
    grams["nan"] = np.full((8, 8), np.nan, np.float32)
    got = host_spectra.gram_stable_ranks(grams)
    for name, a in acts.items():
        s = np.linalg.svd(a, compute_uv=False)
        np.testing.assert_allclose(got[name], (s**2).sum() / s[0] ** 2, rtol=1e-5, err_msg=name)
    assert got["zero"] == 0 and np.isnan(got["nan"])


def test_zero_and_non_finite_matrices():
    w = {"z": np.zeros((4, 3), np.float32), "n": np.full((4, 3), np.nan, np.float32)}
    out = host_spectra.layer_spectra(w, w, None, {}, top_k=2)
    assert out["z"]["weight_stable_rank"] == 0 and out["z"]["grad_nuclear_rank"] == 0
    assert all(np.isnan(v).all() for v in out["n"].values())
    assert not any(k.startswith("update_") for k in out["z"])


def test_bad_inputs_raise_before_any_svd():
    w = {"w": np.zeros((3, 4))}
    with pytest.raises(ValueError, match="gradient of equal shape"):
        host_spectra.layer_spectra(w, {"w": np.zeros((4, 3))}, None, {})
    with pytest.raises(ValueError, match="top_k must be a positive int, got 0"):
        host_spectra.layer_spectra(w, w, None, {}, top_k=0)


def test_gpt_spectra_equal_the_former_jitted_layer_spectra_path():
    """Same state and batch: the rows the study logs equal those of the jitted library path
    (`diagnostics.layer_spectra` inside jit), names, columns and order included."""
    # Two matrix shapes, (16, 16) and (16, 48): the jitted reference compiles in seconds.
    cfg = GPTConfig(vocab_size=16, context_length=16, num_layers=1, num_heads=2, width=16,
                    mlp_ratio=1)  # fmt: skip
    model = GPT(cfg)
    tx = MuonConfig(name="muon", lr=3e-2).build(10)
    key = jax.random.PRNGKey(0)
    state = jax.jit(lambda: step_lib.init_state(model, tx, key))()
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 17), 0, 16)
    batch = (tokens[:, :-1], tokens[:, 1:])
    stats, act_st = step_lib.make_spectra_fn(model, tx, False, key, 3)(state, batch)

    @jax.jit
    def former(state, batch):  # the former spectra function, step for step
        x, y = batch
        params = state["params"]
        _, grads, _, acts = step_lib.grads_and_extras(model, False, params, x, y, key, True)
        act_st = layers.activation_stable_ranks(acts, x, cfg, max_iters=50, tol=1e-5)
        updates, _ = tx.update(grads, state["opt_state"], params)
        old = diagnostics.layer_spectra(
            layers.named_weights(state["params"], cfg), layers.named_weights(grads, cfg),
            layers.named_weights(updates, cfg),
            {w: act_st[a] for w, a in layers.feeds(cfg).items()},
            key=jax.random.fold_in(key, state["step"]), top_k=3,
        )  # fmt: skip
        return old, act_st

    widths = layers.activation_widths(cfg, 16)
    got = layers.to_rows(stats, act_st, widths, cfg)
    want = layers.to_rows(*former(state, batch), widths, cfg)
    assert [list(r) for r in got] == [list(r) for r in want]  # names, columns, order
    for g, w in zip(got, want, strict=True):
        for column, value in w.items():
            if isinstance(value, str):
                assert g[column] == value
            else:
                np.testing.assert_allclose(g[column], value, rtol=2e-4, atol=1e-6,
                                           err_msg=f"{w['name']}: {column}")  # fmt: skip
    later = [r for r in got if r["kind"] == "weight" and r["name"].startswith("block_")]
    assert all(r["update_spectral_norm"] > 0 for r in later)  # Muon's update is not zero
