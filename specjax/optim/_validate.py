"""Argument checks shared by the optimizers: `ValueError`s at construction or `init` time.

Each message names the argument (or the parameter path), the value it got and what is allowed,
so a bad config fails before the first step rather than as a NaN thousands of steps later.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import jax
import numpy as np


def _is_concrete_number(value) -> bool:
    """True for Python / numpy scalars and concrete 0-d arrays (not tracers, not schedules)."""
    if isinstance(value, jax.core.Tracer):
        return False
    if isinstance(value, numbers.Number):
        return True
    return isinstance(value, np.ndarray | jax.Array) and np.ndim(value) == 0


def check_positive(
    name: str, value, *, allow_schedule: bool = False, allow_inf: bool = False
) -> None:
    """`value` must be a positive finite number (or, if allowed, a schedule `step -> value`;
    with `allow_inf`, +inf too: a clip level c = inf means no clipping).

    Traced values (e.g. hyperparameters under `optax.inject_hyperparams` inside `jit`) are
    accepted unchecked: they were checked when first injected as concrete numbers.
    """
    if allow_schedule and callable(value):
        return
    if isinstance(value, jax.core.Tracer):
        return
    if allow_schedule and isinstance(value, jax.Array) and np.ndim(value) == 0:
        # A schedule's value injected by `optax.inject_hyperparams` (0 during warm-up is fine).
        check_nonnegative(name, value)
        return
    if not _is_concrete_number(value):
        what = (
            "a positive number or a schedule (step -> value)"
            if allow_schedule
            else ("a positive number")
        )
        raise ValueError(f"{name} must be {what}, got {value!r}")
    v = float(value)
    if allow_inf and v == np.inf:
        return
    if not (np.isfinite(v) and v > 0):
        what = "a positive number (finite or inf)" if allow_inf else "a positive finite number"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def check_nonnegative(name: str, value) -> None:
    """`value` must be a finite number ≥ 0 (tracers pass unchecked, see `check_positive`)."""
    if isinstance(value, jax.core.Tracer):
        return
    if not _is_concrete_number(value) or not (np.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_unit_interval(name: str, value) -> None:
    """`value` must lie in [0, 1) (momentum / EMA decay rates)."""
    if isinstance(value, jax.core.Tracer):
        return
    if not _is_concrete_number(value) or not (0.0 <= float(value) < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def check_iters(name: str, value, *, allow_none: bool = False) -> None:
    """`value` must be an integer ≥ 1 (iteration counts are static: they size the unrolled loop)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        allowed = "an integer >= 1" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_choice(name: str, value, allowed: Iterable) -> None:
    """`value` must be one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_callable_or_none(name: str, value) -> None:
    if value is not None and not callable(value):
        raise ValueError(f"{name} must be a callable or None, got {value!r}")


def check_learning_rate(name: str, value) -> None:
    """A learning rate: a positive number or an optax schedule."""
    check_positive(name, value, allow_schedule=True)
