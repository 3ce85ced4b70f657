"""Spiked random-feature least-squares problems (samples are columns).

Features A = σ(V X) ∈ ℝ^{k×n} with X ∈ ℝ^{d×n} standard Gaussian and V ∈ ℝ^{k×d} Gaussian
scaled 1/√d, so every pre-activation is ≈ N(0, 1). A non-centred σ (ReLU, squared ReLU)
puts a rank-one "mean spike" E[σ(z)]·𝟙𝟙ᵀ into A, which is why st(A) stays O(1):
st(A) → E[σ(z)²] / E[σ(z)]², which is π for ReLU and 6 for squared ReLU. SwiGLU
features silu(V₁X) ∘ (V₂X) are centred (odd in V₂X), so they carry no spike.

Targets: realizable Y = W♯ A, or teacher–student Y = W̄ σ(V̄ X) with an independent
teacher (V̄, W̄); W♯ and W̄ are Gaussian scaled 1/√k.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from experiments.config import check_choice, check_positive_int

FEATURES = ("relu", "relu_square", "swiglu", "tanh", "linear")
TARGETS = ("realizable", "teacher_student")


class LeastSquaresProblem(NamedTuple):
    """min_W (1/2n)‖W A − Y‖_F² with A ∈ ℝ^{k×n}, Y ∈ ℝ^{m×n}."""

    A_kxn: jax.Array
    Y_mxn: jax.Array


def feature_map(feature: str, key: jax.Array, X_dxn: jax.Array, width: int) -> jax.Array:
    """σ(V X) for a fresh Gaussian V ∈ ℝ^{width×d} scaled 1/√d (two of them for SwiGLU)."""
    check_choice(feature, "feature", FEATURES)
    d = X_dxn.shape[0]
    key_1, key_2 = jax.random.split(key)
    V_kxd = jax.random.normal(key_1, (width, d), X_dxn.dtype) / math.sqrt(d)
    Z_kxn = V_kxd @ X_dxn
    if feature == "relu":
        return jax.nn.relu(Z_kxn)
    if feature == "relu_square":
        return jnp.square(jax.nn.relu(Z_kxn))
    if feature == "tanh":
        return jnp.tanh(Z_kxn)
    if feature == "linear":
        return Z_kxn
    gate_kxd = jax.random.normal(key_2, (width, d), X_dxn.dtype) / math.sqrt(d)
    return jax.nn.silu(Z_kxn) * (gate_kxd @ X_dxn)


def random_feature_problem(
    key: jax.Array,
    *,
    width: int,
    input_dim: int,
    num_samples: int,
    feature: str = "relu",
    target: str = "realizable",
    dtype=jnp.float64,
) -> LeastSquaresProblem:
    """A = σ(V X) ∈ ℝ^{width×num_samples}; Y = W♯ A (realizable) or W̄ σ(V̄ X) (teacher–student)."""
    for value, name in ((width, "width"), (input_dim, "input_dim"), (num_samples, "num_samples")):
        check_positive_int(value, name)
    check_choice(feature, "feature", FEATURES)
    check_choice(target, "target", TARGETS)
    key_x, key_v, key_w, key_teacher = jax.random.split(key, 4)
    X_dxn = jax.random.normal(key_x, (input_dim, num_samples), dtype)
    A_kxn = feature_map(feature, key_v, X_dxn, width)
    W_kxk = jax.random.normal(key_w, (width, width), dtype) / math.sqrt(width)
    if target == "realizable":
        teacher_kxn = A_kxn
    else:
        teacher_kxn = feature_map(feature, key_teacher, X_dxn, width)
    return LeastSquaresProblem(A_kxn, W_kxk @ teacher_kxn)


def spike_limit(feature: str) -> float:
    """Large-width limit of st(σ(VX)) = E[σ(z)²]/E[σ(z)]², z ~ N(0, 1) (inf if E σ = 0).

    ReLU: (1/2)/(1/(2π)) = π. Squared ReLU: E[z⁴ 1{z>0}] = 3/2, E[z² 1{z>0}] = 1/2 → 6.
    """
    check_choice(feature, "feature", FEATURES)
    return {"relu": math.pi, "relu_square": 6.0}.get(feature, math.inf)
