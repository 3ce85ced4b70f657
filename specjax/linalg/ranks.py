"""Effective ranks: stable, nuclear, kernel (trace) and entropy effective rank.

All are scale invariant. Each matrix is divided by its largest absolute entry before
anything is squared, so float32 input from 1e-30 to 1e30 gives the same answer.

Degenerate inputs (all functions): a zero matrix has effective rank 0 (as rank(0) = 0);
NaN or Inf entries give NaN; 1×n and n×1 matrices have rank ≤ 1 and give 1 (or 0 if
zero). Results are computed in float32 (float64 for float64 input) and returned in that
compute dtype, including for bfloat16 input, because a rank rounded to bfloat16's
8-bit mantissa would be misleading. Integer input is converted before any arithmetic: to
float64 with x64 enabled, float32 otherwise (so int64 entries ≥ 2³¹ never wrap).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specjax.linalg import _numerics, _validate
from specjax.linalg.norms import DEFAULT_KEY_SEED, spectral_sigma_max

STABLE_RANK_METHODS = ("exact", "power")


def _prepare(x, *, square: bool = False):
    x = _validate.as_matrix(x, "x", square=square)
    x = x.astype(_validate.compute_dtype(x.dtype))
    return _numerics.normalize_by_max(x)


def _singular_values(x_hat: jax.Array) -> jax.Array:
    return jnp.linalg.svd(x_hat, compute_uv=False)


def _ratio_or_zero(num: jax.Array, den: jax.Array) -> jax.Array:
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0)


def stable_rank(
    x: jax.Array,
    *,
    method: str = "exact",
    key: jax.Array | None = None,
    max_iters: int = 50,
    tol: float = 1e-5,
) -> jax.Array:
    """Stable rank ‖x‖_F² / ‖x‖₂² of each matrix (..., m, n) → (...).

    `method="exact"` takes σ_max from the singular values; `method="power"` from block
    power iteration (`spectral_norm`'s algorithm, at most `max_iters` iterations, relative
    tolerance `tol`, start block from `key`, default `PRNGKey(0)`). Power iteration
    underestimates σ_max slightly, so the fast value is ≥ the exact one.
    1 ≤ stable_rank ≤ rank for nonzero x; zero matrix → 0; NaN/Inf → NaN.
    """
    _validate.check_method(method, STABLE_RANK_METHODS)
    max_iters = _validate.check_int(max_iters, "max_iters", minimum=1)
    tol = _validate.check_nonnegative_float(tol, "tol")
    x_hat, _, finite = _prepare(x)
    frob_sq = jnp.sum(jnp.square(x_hat), axis=(-2, -1))
    if method == "exact":
        sigma_max = _singular_values(x_hat)[..., 0]
    else:
        if key is None:
            key = jax.random.PRNGKey(DEFAULT_KEY_SEED)
        sigma_max = spectral_sigma_max(x_hat, key, tol, max_iters, block_size=8)
    return _numerics.nan_where_not_finite(_ratio_or_zero(frob_sq, sigma_max**2), finite)


def nuclear_rank(g: jax.Array) -> jax.Array:
    """Nuclear rank ‖g‖_*² / ‖g‖_F² = (Σσᵢ)² / Σσᵢ² of each matrix (..., m, n) → (...).

    stable_rank ≤ nuclear_rank ≤ rank; an r-column orthonormal matrix gives exactly r.
    Zero matrix → 0; NaN/Inf → NaN.
    """
    x_hat, _, finite = _prepare(g)
    s = _singular_values(x_hat)
    value = _ratio_or_zero(jnp.sum(s, axis=-1) ** 2, jnp.sum(s**2, axis=-1))
    return _numerics.nan_where_not_finite(value, finite)


def kernel_effective_rank(k: jax.Array) -> jax.Array:
    """Trace effective rank tr(K)² / ‖K‖_F² of square kernel matrices (..., n, n) → (...).

    For symmetric PSD K this is (Σλᵢ)² / Σλᵢ², between 1 and rank(K); no
    eigendecomposition is needed. Symmetry and PSD-ness are assumed, not checked (they
    are data-dependent); for indefinite K the value can be < 1. Zero K → 0; NaN/Inf → NaN.
    """
    k_hat, _, finite = _prepare(k, square=True)
    trace = jnp.trace(k_hat, axis1=-2, axis2=-1)
    frob_sq = jnp.sum(jnp.square(k_hat), axis=(-2, -1))
    return _numerics.nan_where_not_finite(_ratio_or_zero(trace**2, frob_sq), finite)


def entropy_effective_rank(x: jax.Array) -> jax.Array:
    """Roy–Vetterli effective rank exp(−Σ pᵢ log pᵢ), pᵢ = σᵢ / Σσⱼ; (..., m, n) → (...).

    1 ≤ value ≤ rank for nonzero x (0·log 0 = 0); zero matrix → 0; NaN/Inf → NaN.
    """
    x_hat, _, finite = _prepare(x)
    s = _singular_values(x_hat)
    total = jnp.sum(s, axis=-1, keepdims=True)
    p = s / jnp.where(total > 0, total, 1)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1)), 0)
    value = jnp.where(total[..., 0] > 0, jnp.exp(-jnp.sum(plogp, axis=-1)), 0)
    return _numerics.nan_where_not_finite(value, finite)
