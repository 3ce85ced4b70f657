"""How each parameter is seen as matrices, and batched application of a matrix function.

A parameter of shape `shape` is viewed as a stack of `B` matrices of shape (fan_in, fan_out)
(flax's `x @ W` convention: the first matrix axis is the reduction axis):

| view       | parameter shape          | matrices                                  |
|------------|--------------------------|-------------------------------------------|
| "matrix"   | (fan_in, fan_out)        | B = 1                                     |
| "conv"     | (*window, c_in, c_out)   | B = 1, fan_in = prod(window)·c_in          |
| "stack"    | (*stack, fan_in, fan_out)| B = prod(stack) (scanned / stacked layers) |
| "vector"   | any                      | not a matrix: never orthogonalized         |

Leaves of ndim ≤ 1 are vectors. 2-D leaves are matrices unless declared otherwise. A leaf of
ndim > 2 must be declared "conv", "stack" or "vector": guessing would be optax's mistake.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from specjax.optim.labels import leaves_with_paths, path_str

VIEWS = ("matrix", "conv", "stack", "vector")


class LeafView(NamedTuple):
    """A parameter seen as `stack_shape` matrices of shape (fan_in, fan_out)."""

    kind: str
    shape: tuple[int, ...]
    stack_shape: tuple[int, ...]
    fan_in: int
    fan_out: int

    @property
    def is_matrix(self) -> bool:
        return self.kind != "vector"

    @property
    def batch(self) -> int:
        return math.prod(self.stack_shape)


def leaf_view(path: str, shape: tuple[int, ...], spec: str | None, *, argument: str) -> LeafView:
    """The view of one leaf; `ValueError` naming `path` when `spec` does not fit its shape."""
    shape = tuple(int(d) for d in shape)
    ndim = len(shape)
    if spec is None:
        if ndim <= 1:
            return LeafView("vector", shape, (), 0, 0)
        if ndim == 2:
            return LeafView("matrix", shape, (), shape[0], shape[1])
        raise ValueError(
            f"parameter {path!r} has shape {shape} (ndim {ndim} > 2) and no declared reshape; "
            f"pass {argument}= a tree (or params -> tree) of 'conv', 'stack' or 'vector' for it"
        )
    if spec not in VIEWS:
        raise ValueError(
            f"{argument} for parameter {path!r} must be one of {VIEWS} or None, got {spec!r}"
        )
    if spec == "vector" or ndim <= 1:
        if spec in ("matrix", "conv", "stack") and ndim <= 1:
            raise ValueError(
                f"{argument} declares parameter {path!r} of shape {shape} as {spec!r}, "
                "which needs at least 2 dimensions"
            )
        return LeafView("vector", shape, (), 0, 0)
    if spec == "matrix":
        if ndim != 2:
            raise ValueError(
                f"{argument} declares parameter {path!r} of shape {shape} as 'matrix', "
                "which needs exactly 2 dimensions (use 'conv' or 'stack')"
            )
        return LeafView("matrix", shape, (), shape[0], shape[1])
    if spec == "conv":
        return LeafView("conv", shape, (), math.prod(shape[:-1]), shape[-1])
    # "stack"
    if ndim < 3:
        raise ValueError(
            f"{argument} declares parameter {path!r} of shape {shape} as 'stack', which needs "
            "at least 3 dimensions (*stack, fan_in, fan_out)"
        )
    return LeafView("stack", shape, shape[:-2], shape[-2], shape[-1])


def resolve_views(params, reshape, *, argument: str = "reshape") -> dict[str, LeafView]:
    """{path: LeafView} for every leaf of `params`.

    `reshape` is None (2-D leaves are matrices, ≤1-D are vectors, >2-D is an error), one view
    name applied to every leaf of ndim > 2, a tree of view names / None matching `params`, or a
    callable `params -> such a tree`.
    """
    leaves = leaves_with_paths(params)
    if reshape is None or isinstance(reshape, str):
        specs = {
            path: (reshape if (reshape is not None and np.ndim(leaf) > 2) else None)
            for path, leaf in leaves
        }
    else:
        tree = reshape(params) if callable(reshape) else reshape
        flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
        specs = {path_str(p): spec for p, spec in flat}
        unknown = [path for path, _ in leaves if path not in specs]
        if unknown:
            raise ValueError(
                f"{argument} tree has no entry for parameter {unknown[0]!r}; give one view per "
                "parameter (None for the default)"
            )
    return {
        path: leaf_view(path, np.shape(leaf), specs[path], argument=argument)
        for path, leaf in leaves
    }


def to_matrices(x: jax.Array, view: LeafView) -> jax.Array:
    """(B, fan_in, fan_out) view of a leaf."""
    return x.reshape((view.batch, view.fan_in, view.fan_out))


def from_matrices(y: jax.Array, view: LeafView) -> jax.Array:
    return y.reshape(view.shape)


def per_matrix(values_B: jax.Array, view: LeafView) -> jax.Array:
    """Per-matrix statistics (B,) as the leaf's stack shape (scalar for a single matrix)."""
    return values_B.reshape(view.stack_shape)


def map_matrices_batched(
    fn: Callable[[jax.Array], Any],
    tree,
    views: dict[str, LeafView],
    *,
    pad_to_multiple: int = 1,
    constrain: Callable[[jax.Array], jax.Array] | None = None,
) -> dict[str, Any]:
    """Apply `fn` ((B, m, n) -> pytree of arrays with leading axis B) to every matrix leaf,
    stacking same-(fan_in, fan_out, dtype) matrices into one batched call.

    Returns {path: fn output for that leaf's (B_leaf, m, n) slice}. `pad_to_multiple` pads each
    stack with zero matrices so the stack axis splits evenly over devices; `constrain` (e.g. a
    `with_sharding_constraint`) is applied to each padded stack before `fn`.
    """
    groups: dict[tuple, list[tuple[str, jax.Array]]] = {}
    for path, leaf in leaves_with_paths(tree):
        view = views.get(path)
        if view is None or not view.is_matrix:
            continue
        key = (view.fan_in, view.fan_out, jnp.dtype(leaf.dtype))
        groups.setdefault(key, []).append((path, to_matrices(leaf, views[path])))

    out: dict[str, Any] = {}
    for members in groups.values():
        mats = [m for _, m in members]
        stack = mats[0] if len(mats) == 1 else jnp.concatenate(mats, axis=0)
        total = stack.shape[0]
        padded = -(-total // pad_to_multiple) * pad_to_multiple
        if padded != total:
            pad = jnp.zeros((padded - total, *stack.shape[1:]), stack.dtype)
            stack = jnp.concatenate([stack, pad], axis=0)
        if constrain is not None:
            stack = constrain(stack)
        result = fn(stack)
        start = 0
        for path, m in members:
            size = m.shape[0]
            out[path] = jax.tree.map(lambda r, s=start, e=start + size: r[s:e], result)
            start += size
    return out


def replace_leaves(tree, new_by_path: dict[str, jax.Array]):
    """`tree` with leaves whose path is in `new_by_path` replaced (others kept)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, leaf: new_by_path.get(path_str(p), leaf), tree
    )
