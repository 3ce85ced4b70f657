"""Numerical helpers: scale normalization and non-finite masking.

Squaring entries of a float32 matrix overflows above ~1e19 and underflows below ~1e-19,
so every spectral quantity here first divides by the largest absolute entry. Non-finite
entries are zeroed before LAPACK-backed routines (so they never see NaN) and the result
is masked to NaN afterwards.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def max_abs(x: jax.Array) -> jax.Array:
    """Largest |x| over the last two axes, keepdims; shape (..., 1, 1)."""
    return jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True)


def all_finite(x: jax.Array) -> jax.Array:
    """Whether every entry of each matrix is finite; shape (...)."""
    return jnp.all(jnp.isfinite(x), axis=(-2, -1))


def normalize_by_max(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Split `x` = scale · x̂ with max |x̂| = 1 (or x̂ = 0 for a zero matrix).

    Non-finite entries are replaced by 0 in x̂; returns (x̂, scale (...,1,1), finite (...)).
    """
    finite = all_finite(x)
    x_clean = jnp.where(jnp.isfinite(x), x, 0)
    scale = max_abs(x_clean)
    safe = jnp.where(scale > 0, scale, 1)
    return x_clean / safe, scale, finite


def nan_where_not_finite(value: jax.Array, finite: jax.Array) -> jax.Array:
    """`value` where `finite`, NaN elsewhere; `finite` broadcasts over trailing axes."""
    finite = finite.reshape(finite.shape + (1,) * (value.ndim - finite.ndim))
    return jnp.where(finite, value, jnp.nan)


def matrix_transpose(x: jax.Array) -> jax.Array:
    """Swap the last two axes."""
    return jnp.swapaxes(x, -1, -2)
