"""Named random streams derived from one integer seed.

`stream_key(seed, name) = fold_in(PRNGKey(seed), h(name))` where `h` is the first 31 bits of
sha256(name): stable across processes and Python versions (unlike `hash()`).
Per-step keys are `fold_in(stream_key, step)`.
"""

from __future__ import annotations

import hashlib

import jax


def stable_name_hash(name: str) -> int:
    """31-bit integer from sha256 of `name` (fits `fold_in`'s uint32 data, stable everywhere)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"stream name must be a non-empty str, got {name!r}")
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def stream_key(seed: int, name: str) -> jax.Array:
    """Raw uint32 PRNG key of the named stream (raw keys checkpoint with orbax as plain arrays)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return jax.random.fold_in(jax.random.PRNGKey(seed), stable_name_hash(name))


def step_key(key: jax.Array, step: int) -> jax.Array:
    """Per-step key `fold_in(key, step)`."""
    return jax.random.fold_in(key, step)
