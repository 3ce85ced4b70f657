"""Trace-time argument checks shared by the linear-algebra functions.

Every check raises `ValueError` naming the argument, the value it got and what is
allowed, before any array work is traced. Values that are themselves traced (e.g. a
clip level `c` passed as a jit argument) cannot be checked at trace time and are passed
through; the docstrings of the public functions say what such values get.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def as_matrix(x: Any, name: str = "x", *, square: bool = False) -> jax.Array:
    """Return `x` as a JAX array of shape (..., m, n) with m, n ≥ 1; raise otherwise."""
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must be a matrix or a batch of matrices with shape (..., m, n); "
            f"got shape {x.shape} (ndim={x.ndim}); allowed: ndim >= 2"
        )
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} must have m >= 1 and n >= 1; got shape {x.shape}")
    if square and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must be square (..., n, n); got shape {x.shape}")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise ValueError(
            f"{name} must have a real floating or integer dtype; got {x.dtype}; "
            "allowed: float16, bfloat16, float32, float64, integers"
        )
    return x


def check_method(method: Any, allowed: Sequence[str], name: str = "method") -> str:
    """Return `method` if it is one of `allowed`; raise otherwise."""
    if method not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}; got {method!r}")
    return method


def check_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return `value` as a Python int in [minimum, maximum]; raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a Python int (static); got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be >= {minimum}{upper}; got {value}")
    return int(value)


def check_positive(value: Any, name: str) -> Any:
    """Raise if a concrete `value` is not > 0 everywhere (NaN counts as invalid).

    Traced values pass through unchecked (their sign is not known at trace time).
    """
    if isinstance(value, jax.core.Tracer):
        return value
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0 or not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0; got {value!r}")
    return value


def check_nonnegative_float(value: Any, name: str) -> float:
    """Return `value` as a Python float ≥ 0 (finite); raise otherwise."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite float >= 0; got {value!r}") from None
    if not np.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a finite float >= 0; got {value!r}")
    return out


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The dtype used internally: float64 for float64 input (x64 on), float32 otherwise."""
    if jnp.dtype(dtype) == jnp.float64:
        return jnp.dtype(jnp.float64)
    return jnp.dtype(jnp.float32)


def output_dtype(dtype: Any) -> jnp.dtype:
    """Matrix outputs keep a floating input dtype; integer input gives float32."""
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(dtype)
    return jnp.dtype(jnp.float32)
