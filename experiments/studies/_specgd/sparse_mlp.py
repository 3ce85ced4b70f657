"""Four-layer bias-free MLP on the sparse cubic y = x₁x₂x₃ (Davis & Drusvyatskiy 2025, §5).

ℝ^d → ℝ^{h} → ℝ^{h} → ℝ^{h} → ℝ with h = 4d, samples as rows (A₀ = X ∈ ℝ^{n×d}),
A_ℓ = σ(A_{ℓ−1} W_ℓᵀ), loss (1/n)Σ(f(x) − y)². Squared-ReLU layers, or SwiGLU layers whose
W_ℓ ∈ ℝ^{2h×fan_in} produce [gate, value] and A_ℓ = silu(gate) ∘ value.

Per-layer steps (the paper's "weighted" rule), with s_ℓ = n/‖A_{ℓ−1}‖²:
    GD layer:        W_ℓ ← W_ℓ − lr · s_ℓ · G_ℓ               (‖A_{ℓ−1}‖ = operator norm)
    spectral layer:  W_ℓ ← W_ℓ − lr · s_ℓ · ‖G_ℓ‖_* polar(G_ℓ)  (‖A_{ℓ−1}‖ = Frobenius norm)
Initialisation matches PyTorch's nn.Linear: U(−1/√fan_in, 1/√fan_in).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from experiments.config import check_choice, check_positive_int
from specjax import nuclear_rank, spectral_norm, stable_rank

from .steps import nuclear_norm_and_polar

ACTIVATIONS = ("relu_square", "swiglu")


def init_weights(key: jax.Array, dim: int, activation: str, dtype=jnp.float64) -> tuple:
    """(W₁, W₂, W₃, W₄) in (out, in) layout; hidden width 4·dim (doubled outputs for SwiGLU)."""
    check_choice(activation, "activation", ACTIVATIONS)
    check_positive_int(dim, "dim")
    hidden = 4 * dim
    out = hidden * (2 if activation == "swiglu" else 1)
    shapes = [(out, dim), (out, hidden), (out, hidden), (1, hidden)]
    keys = jax.random.split(key, len(shapes))
    return tuple(
        jax.random.uniform(k, shape, dtype, -1.0, 1.0) / math.sqrt(shape[1])
        for k, shape in zip(keys, shapes, strict=True)
    )


def _activate(Z_nxo: jax.Array, activation: str) -> jax.Array:
    if activation == "relu_square":
        return jnp.square(jax.nn.relu(Z_nxo))
    gate, value = jnp.split(Z_nxo, 2, axis=-1)
    return jax.nn.silu(gate) * value


def forward(weights: tuple, X_nxd: jax.Array, activation: str) -> tuple[jax.Array, list]:
    """Outputs f(X) ∈ ℝ^n and the post-activations [A₁, A₂, A₃]."""
    A = X_nxd
    hidden = []
    for W in weights[:-1]:
        A = _activate(A @ W.T, activation)
        hidden.append(A)
    return (A @ weights[-1].T)[:, 0], hidden


def mse(weights: tuple, X_nxd: jax.Array, y_n: jax.Array, activation: str):
    """(1/n)Σ(f(x) − y)², with the post-activations as auxiliary output."""
    out, hidden = forward(weights, X_nxd, activation)
    return jnp.mean(jnp.square(out - y_n)), hidden


def cubic_dataset(key: jax.Array, num_samples: int, dim: int, dtype=jnp.float64):
    """X ~ N(0, I_d) rows, y = x₁x₂x₃."""
    if dim < 3:
        raise ValueError(f"dim must be ≥ 3 for the target x₁x₂x₃, got {dim!r}")
    X = jax.random.normal(key, (num_samples, dim), dtype)
    return X, X[:, 0] * X[:, 1] * X[:, 2]


@partial(jax.jit, static_argnames=("activation", "spectral_layers"))
def train_step(weights, X_nxd, y_n, lr, *, activation: str, spectral_layers: tuple[int, ...]):
    """One full-batch step; layer ℓ (1-based) in `spectral_layers` takes the spectral step."""
    (value, hidden), grads = jax.value_and_grad(mse, has_aux=True)(weights, X_nxd, y_n, activation)
    inputs = [X_nxd, *hidden]
    n = X_nxd.shape[0]
    new = []
    for layer, (W, G, A_prev) in enumerate(zip(weights, grads, inputs, strict=True), start=1):
        if layer in spectral_layers:
            scale = n / jnp.sum(jnp.square(A_prev))
            nuclear, P = nuclear_norm_and_polar(G)
            new.append(W - lr * scale * nuclear * P)
        else:
            scale = n / spectral_norm(A_prev, tol=1e-8) ** 2
            new.append(W - lr * scale * G)
    return tuple(new), value


@partial(jax.jit, static_argnames=("activation",))
def diagnostics(weights, X_nxd, y_n, *, activation: str) -> dict:
    """Loss, st(A_ℓ) of each hidden post-activation and nr(G_ℓ) of layers 1–3."""
    (value, hidden), grads = jax.value_and_grad(mse, has_aux=True)(weights, X_nxd, y_n, activation)
    metrics = {"loss": value}
    for layer, A in enumerate(hidden, start=1):
        metrics[f"st_A{layer}"] = stable_rank(A)
    for layer, G in enumerate(grads[:-1], start=1):
        metrics[f"nr_W{layer}"] = nuclear_rank(G)
    return metrics


@partial(jax.jit, static_argnames=("activation",))
def hidden_stable_ranks(weights, X_nxd, *, activation: str) -> jax.Array:
    """st(A₁), st(A₂), st(A₃) at the given weights (the SwiGLU batch-size sweep)."""
    _, hidden = forward(weights, X_nxd, activation)
    return jnp.stack([stable_rank(A) for A in hidden])
