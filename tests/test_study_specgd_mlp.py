"""The sparse-regression MLP and its per-layer GD / spectral step against numpy float64."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from experiments.studies._specgd import sparse_mlp


def _numpy_step(weights, X, y, lr, spectral):
    """Hand-written backprop of the squared-ReLU MLP and the paper's per-layer step."""
    W = [np.asarray(w) for w in weights]
    n = X.shape[0]
    Z, A = [], [X]
    for w in W[:3]:
        Z.append(A[-1] @ w.T)
        A.append(np.maximum(Z[-1], 0) ** 2)
    out = (A[3] @ W[3].T)[:, 0]
    loss = np.mean((out - y) ** 2)
    delta = (2 * (out - y) / n)[:, None]  # ∂loss/∂out, (n, 1)
    grads = [None] * 4
    grads[3] = delta.T @ A[3]
    for layer in (2, 1, 0):
        delta = (delta @ W[layer + 1]) * 2 * np.maximum(Z[layer], 0)
        grads[layer] = delta.T @ A[layer]
    new = []
    for index, (w, g) in enumerate(zip(W, grads, strict=True)):
        if index + 1 in spectral:
            U, s, Vt = np.linalg.svd(g, full_matrices=False)
            keep = s > 1e-12 * s[0]  # n < width: G is rank-deficient; polar = partial isometry
            polar = U[:, keep] @ Vt[keep]
            new.append(w - lr * n / (A[index] ** 2).sum() * s.sum() * polar)
        else:
            op = np.linalg.svd(A[index], compute_uv=False)[0]
            new.append(w - lr * n / op**2 * g)
    return loss, grads, new


@pytest.mark.parametrize("spectral", [(), (2, 3)])
def test_train_step_matches_numpy_backprop(spectral):
    with jax.enable_x64(True):
        weights = sparse_mlp.init_weights(jax.random.PRNGKey(0), 4, "relu_square")
        X, y = sparse_mlp.cubic_dataset(jax.random.PRNGKey(1), 24, 4)
        new, value = sparse_mlp.train_step(
            weights, X, y, 0.1, activation="relu_square", spectral_layers=spectral
        )
        diag = sparse_mlp.diagnostics(weights, X, y, activation="relu_square")
    loss, grads, ref = _numpy_step(weights, np.asarray(X), np.asarray(y), 0.1, spectral)
    assert float(value) == pytest.approx(loss, rel=1e-12)
    for got, want in zip(new, ref, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-7, atol=1e-10)
    for layer in (1, 2, 3):
        s = np.linalg.svd(grads[layer - 1], compute_uv=False)
        assert float(diag[f"nr_W{layer}"]) == pytest.approx(s.sum() ** 2 / (s**2).sum(), rel=1e-9)


def test_init_shapes_and_pytorch_uniform_range():
    with jax.enable_x64(True):
        relu = sparse_mlp.init_weights(jax.random.PRNGKey(0), 8, "relu_square")
        swiglu = sparse_mlp.init_weights(jax.random.PRNGKey(0), 8, "swiglu")
        X, _ = sparse_mlp.cubic_dataset(jax.random.PRNGKey(1), 5, 8)
        out, hidden = sparse_mlp.forward(swiglu, X, "swiglu")
    assert [w.shape for w in relu] == [(32, 8), (32, 32), (32, 32), (1, 32)]
    assert [w.shape for w in swiglu] == [(64, 8), (64, 32), (64, 32), (1, 32)]
    assert out.shape == (5,) and [a.shape for a in hidden] == [(5, 32)] * 3
    for w in relu:
        bound = 1 / np.sqrt(w.shape[1])
        assert np.abs(np.asarray(w)).max() <= bound and np.abs(np.asarray(w)).max() > 0.8 * bound


def test_bad_mlp_inputs_raise():
    with pytest.raises(ValueError, match="activation"):
        sparse_mlp.init_weights(jax.random.PRNGKey(0), 8, "gelu")
    with pytest.raises(ValueError, match="dim"):
        sparse_mlp.init_weights(jax.random.PRNGKey(0), 0, "relu_square")
    with pytest.raises(ValueError, match="dim"):
        sparse_mlp.cubic_dataset(jax.random.PRNGKey(0), 4, 2)
