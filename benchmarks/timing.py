"""Shared wall-clock timing helper for the specjax benchmarks.

Usage::

    from benchmarks.timing import time_fn   # or `from timing import time_fn` inside benchmarks/

    seconds = time_fn(jitted_f, x, repeats=7)          # median seconds per call
    stats = time_stats(jitted_f, x, repeats=7)         # {"median", "min", "max", "repeats"}

Every call is warmed up first (compile + one run, excluded), every timed call ends with
`jax.block_until_ready` on its outputs (JAX dispatch is asynchronous), and the median of
the repeats is reported because the shared CPU machine is noisy. Plain numpy callables
work too: `block_until_ready` passes non-JAX values through unchanged. Always compare
against a reference measured in the same run; absolute seconds mean little here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def time_stats(
    fn: Callable[..., Any],
    *args: Any,
    repeats: int = 5,
    warmup: int = 1,
    min_time: float = 0.0,
    **kwargs: Any,
) -> dict[str, float]:
    """Time `fn(*args, **kwargs)`; return median/min/max seconds per call over `repeats`.

    `warmup` untimed calls come first (they absorb jit compilation). If `min_time` > 0,
    each repeat loops the call until at least `min_time` seconds have passed and divides,
    which steadies very fast functions.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        jax.block_until_ready(fn(*args, **kwargs))
    samples = []
    for _ in range(repeats):
        calls = 0
        start = time.perf_counter()
        while True:
            jax.block_until_ready(fn(*args, **kwargs))
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / calls)
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "repeats": float(repeats),
    }


def time_fn(
    fn: Callable[..., Any], *args: Any, repeats: int = 5, warmup: int = 1, **kwargs: Any
) -> float:
    """Median seconds per call of `fn(*args, **kwargs)` after `warmup` untimed calls."""
    return time_stats(fn, *args, repeats=repeats, warmup=warmup, **kwargs)["median"]
