"""Trace-time argument checks shared by the linear-algebra functions.

Every check raises `ValueError` naming the argument, the value it got and what is
allowed, before any array work is traced. Values that are themselves traced (e.g. a
clip level `c` passed as a jit argument) cannot be checked at trace time and are passed
through; the docstrings of the public functions say what such values get.

Integer input is converted to a float dtype here, before any arithmetic (float64 with x64
enabled, float32 otherwise), so every linalg function treats it alike and nothing wraps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def integer_float_dtype() -> jnp.dtype:
    """The float dtype integer input is converted to: float64 with x64 enabled, else float32."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def as_float_array(x: Any, name: str = "x") -> jax.Array:
    """`x` as a JAX array with a real floating dtype; integer input converted exactly once.

    Integer input (Python ints, numpy or JAX integer arrays) becomes `integer_float_dtype()`
    before any arithmetic: float64 with x64 enabled, float32 otherwise. Non-JAX integer input is
    converted in numpy (through float64), because `jnp.asarray` of an int64 array with x64
    disabled truncates it to int32, silently wrapping entries ≥ 2³¹. Floating dtypes are kept;
    anything else (bool, complex, object) raises `ValueError` naming `name`.
    """
    if not isinstance(x, jax.Array):  # tracers are jax.Arrays too: they stay untouched here
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"{name} must be a real numeric array; got {x!r} ({err})") from None
        if arr.dtype.kind in "iuO":  # "O": e.g. Python ints beyond 64 bits
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError, OverflowError):
                raise ValueError(
                    f"{name} must be a real numeric array; got an object array that does not "
                    f"convert to float64: {x!r}"
                ) from None
        x = arr
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.integer):
        return x.astype(integer_float_dtype())
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{name} must have a real floating or integer dtype; got {x.dtype}; "
            "allowed: float16, bfloat16, float32, float64, integers (converted to float64 "
            "with x64 enabled, else float32)"
        )
    return x


def as_matrix(x: Any, name: str = "x", *, square: bool = False) -> jax.Array:
    """Return `x` as a floating JAX array of shape (..., m, n) with m, n ≥ 1; raise otherwise.

    Integer input is converted by `as_float_array` (float64 with x64 enabled, float32
    otherwise) before anything else, so large entries never wrap.
    """
    x = as_float_array(x, name)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must be a matrix or a batch of matrices with shape (..., m, n); "
            f"got shape {x.shape} (ndim={x.ndim}); allowed: ndim >= 2"
        )
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} must have m >= 1 and n >= 1; got shape {x.shape}")
    if square and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must be square (..., n, n); got shape {x.shape}")
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
    """Matrix outputs keep a floating input dtype; integers give `integer_float_dtype()`.

    (`as_matrix` has already converted integer input, so this only matters for other callers.)
    """
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(dtype)
    return integer_float_dtype()
