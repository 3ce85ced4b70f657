"""The SwiGLU sparse-regression MLP and its per-layer GD / spectral step against numpy float64."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from experiments.studies import sparse_regression
from experiments.studies._specgd import sparse_mlp

# dim 8, n 32: the shapes of the SwiGLU variant in test_study_specgd_runs (shared compiles)
DIM, NUM_SAMPLES, LR = 8, 32, 0.02


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _numpy_swiglu_step(weights, X, y, lr, spectral):
    """Hand-written forward and backprop: Z = A Wᵀ = [gate | value], A⁺ = silu(gate) ∘ value."""
    W = [np.asarray(w) for w in weights]
    n, hidden = X.shape[0], W[0].shape[0] // 2
    A, cache = [X], []
    for w in W[:3]:
        z = A[-1] @ w.T
        gate, value = z[:, :hidden], z[:, hidden:]
        A.append(gate * _sigmoid(gate) * value)
        cache.append((gate, value))
    out = (A[3] @ W[3].T)[:, 0]
    loss = np.mean((out - y) ** 2)
    d_out = (2 * (out - y) / n)[:, None]
    grads = [None] * 4
    grads[3] = d_out.T @ A[3]
    d_a = d_out @ W[3]
    for layer in (2, 1, 0):
        gate, value = cache[layer]
        s = _sigmoid(gate)
        d_gate = d_a * value * s * (1 + gate * (1 - s))  # silu'(g) = σ(g)(1 + g(1 − σ(g)))
        d_z = np.concatenate([d_gate, d_a * gate * s], axis=1)
        grads[layer] = d_z.T @ A[layer]
        d_a = d_z @ W[layer]
    new = []
    for index, (w, g) in enumerate(zip(W, grads, strict=True)):
        if index + 1 in spectral:  # lr · n/‖A‖_F² · ‖G‖_* · U Vᵀ
            U, sv, Vt = np.linalg.svd(g, full_matrices=False)
            keep = sv > 1e-12 * sv[0]
            step = lr * NUM_SAMPLES / (A[index] ** 2).sum() * sv.sum()
            new.append(w - step * U[:, keep] @ Vt[keep])
        else:  # lr · n/‖A‖₂² · G
            op = np.linalg.svd(A[index], compute_uv=False)[0]
            new.append(w - lr * NUM_SAMPLES / op**2 * g)
    return loss, grads, A[1:], new


@pytest.mark.parametrize("spectral", [(), (2, 3)])
def test_swiglu_train_step_matches_numpy_backprop(spectral):
    with jax.enable_x64(True):
        weights = sparse_mlp.init_weights(jax.random.PRNGKey(0), DIM, "swiglu")
        X, y = sparse_mlp.cubic_dataset(jax.random.PRNGKey(1), NUM_SAMPLES, DIM)
        new, value = sparse_mlp.train_step(
            weights, X, y, LR, activation="swiglu", spectral_layers=spectral
        )
        diag = sparse_mlp.diagnostics(weights, X, y, activation="swiglu")
    X, y = np.asarray(X), np.asarray(y)
    loss, grads, hidden, ref = _numpy_swiglu_step(weights, X, y, LR, spectral)
    assert float(value) == pytest.approx(loss, rel=1e-12)
    for got, want, w in zip(new, ref, weights, strict=True):
        # Compare the step itself, not W + step, so a wrong step cannot hide inside W. The polar
        # factor's smallest directions are ill-conditioned (entries agree to ~1e-7 of the largest).
        step, step_ref = np.asarray(got - w), want - np.asarray(w)
        atol = 1e-6 * np.abs(step_ref).max()
        np.testing.assert_allclose(step, step_ref, rtol=1e-6, atol=atol)
    for layer in (1, 2, 3):
        s = np.linalg.svd(grads[layer - 1], compute_uv=False)
        assert float(diag[f"nr_W{layer}"]) == pytest.approx(s.sum() ** 2 / (s**2).sum(), rel=1e-9)
        a = np.linalg.svd(hidden[layer - 1], compute_uv=False)
        assert float(diag[f"st_A{layer}"]) == pytest.approx((a**2).sum() / a[0] ** 2, rel=1e-9)


def test_stable_rank_rows_summarise_each_layer_over_training():
    variant = sparse_regression.Variant("v", activation="swiglu", num_samples=64, num_steps=10)
    records = {
        step: {f"st_A{layer}": 10.0 * layer + value for layer in (1, 2, 3)}
        for step, value in ((10, 4.0), (0, 2.0), (5, 7.0))  # unordered on purpose
    }
    rows = sparse_regression.stable_rank_rows(variant, "specgd", records)
    assert [r["layer"] for r in rows] == [1, 2, 3]
    for row in rows:
        base = 10.0 * row["layer"]
        assert (row["st_initial"], row["st_final"]) == (base + 2.0, base + 4.0)
        assert (row["st_min"], row["st_max"]) == (base + 2.0, base + 7.0)
        assert (row["num_samples"], row["method"], row["variant"]) == (64, "specgd", "v")


def test_best_learning_rate_skips_diverged_and_unfinished_runs():
    def run(losses):  # {step: loss}
        return {step: {"loss": value} for step, value in losses.items()}

    runs = {
        0.1: run({0: 1.0, 10: 0.5}),
        0.2: run({0: 1.0, 10: 0.2}),
        0.4: run({0: 1.0, 5: np.nan}),  # diverged at step 5: ended early
        0.8: run({0: 1.0, 10: np.inf}),
    }
    assert sparse_regression.best_learning_rate(runs, 10) == 0.2
    assert sparse_regression.best_learning_rate({0.4: runs[0.4], 0.8: runs[0.8]}, 10) is None


@pytest.mark.parametrize("grid", ["[]", "[0.5,0.5]", "[0,1]", "[-1]"])
def test_bad_lr_multipliers_raise_naming_the_key(grid):
    from experiments.config import compose

    with pytest.raises(ValueError, match=r"study\.lr_multipliers must be"):
        compose(["+exp=sparse_regression_swiglu", f"study.lr_multipliers={grid}"])
