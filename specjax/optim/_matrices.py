"""How each parameter is seen as matrices, and batched application of a matrix function.

A parameter of shape `shape` is viewed as a stack of `B` matrices of shape (fan_in, fan_out)
(flax's `x @ W` convention: the first matrix axis is the reduction axis):

| view       | parameter shape          | matrices                                  |
|------------|--------------------------|-------------------------------------------|
| "matrix"   | (fan_in, fan_out)        | B = 1                                     |
| "conv"     | (*window, c_in, c_out)   | B = 1, fan_in = prod(window)·c_in          |
| "stack"    | (*stack, fan_in, fan_out)| B = prod(stack) (scanned / stacked layers) |
| "vector"   | any                      | not a matrix: never orthogonalized         |
| dim. nums  | any, ndim ≥ 2            | B = prod(other axes), fan_in = prod(reduction |
|            |                          | axes), fan_out = prod(output axes)            |

Leaves of ndim ≤ 1 are vectors. 2-D leaves are matrices unless declared otherwise. A leaf of
ndim > 2 must be declared "conv", "stack", "vector" or by dimension numbers (any object with
`reduction_axis` and `output_axis`, ints or sequences of ints): guessing would be optax's mistake.
Dimension numbers (optax's `MuonDimensionNumbers`) transpose the leaf to (*batch axes,
*reduction axes, *output axes) first.
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
    # Axis order (batch, reduction, output) to transpose to before reshaping; None = as stored.
    perm: tuple[int, ...] | None = None

    @property
    def is_matrix(self) -> bool:
        return self.kind != "vector"

    @property
    def batch(self) -> int:
        return math.prod(self.stack_shape)


def is_dimension_numbers(spec) -> bool:
    """True for optax's `MuonDimensionNumbers` or any object shaped like it."""
    return hasattr(spec, "reduction_axis") and hasattr(spec, "output_axis")


def _axes(value, ndim: int, what: str, path: str, shape, argument: str) -> tuple[int, ...]:
    axes = (value,) if isinstance(value, int) else tuple(value)
    if not axes or any(isinstance(a, bool) or not isinstance(a, int) for a in axes):
        raise ValueError(
            f"{argument} for parameter {path!r}: {what} must be an int or a non-empty sequence "
            f"of ints, got {value!r}"
        )
    if any(not -ndim <= a < ndim for a in axes):
        raise ValueError(
            f"{argument} for parameter {path!r} of shape {shape}: {what} {value!r} is out of "
            f"range for ndim {ndim}"
        )
    return tuple(a % ndim for a in axes)


def dimension_numbers_view(path: str, shape: tuple[int, ...], spec, *, argument: str) -> LeafView:
    """The view declared by dimension numbers: batch = every axis not named, in order."""
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(
            f"{argument} gives parameter {path!r} of shape {shape} dimension numbers {spec}, "
            "but only leaves of ndim >= 2 are matrices (give None to send it to Adam)"
        )
    reduction = _axes(spec.reduction_axis, ndim, "reduction_axis", path, shape, argument)
    output = _axes(spec.output_axis, ndim, "output_axis", path, shape, argument)
    named = reduction + output
    if len(set(named)) != len(named):
        raise ValueError(
            f"{argument} for parameter {path!r} of shape {shape}: reduction axes {reduction} and "
            f"output axes {output} must be distinct and disjoint"
        )
    batch = tuple(a for a in range(ndim) if a not in named)
    perm = batch + reduction + output
    return LeafView(
        "dimension_numbers",
        shape,
        tuple(shape[a] for a in batch),
        math.prod(shape[a] for a in reduction),
        math.prod(shape[a] for a in output),
        None if perm == tuple(range(ndim)) else perm,
    )


def leaf_view(path: str, shape: tuple[int, ...], spec, *, argument: str) -> LeafView:
    """The view of one leaf; `ValueError` naming `path` when `spec` does not fit its shape."""
    shape = tuple(int(d) for d in shape)
    ndim = len(shape)
    if is_dimension_numbers(spec):
        return dimension_numbers_view(path, shape, spec, argument=argument)
    if spec is None:
        if ndim <= 1:
            return LeafView("vector", shape, (), 0, 0)
        if ndim == 2:
            return LeafView("matrix", shape, (), shape[0], shape[1])
        raise ValueError(
            f"parameter {path!r} has shape {shape} (ndim {ndim} > 2) and no declared reshape; "
            f"pass {argument}= a tree (or params -> tree) of 'conv', 'stack', 'vector' or "
            "dimension numbers for it"
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
        flat, _ = jax.tree_util.tree_flatten_with_path(
            tree, is_leaf=lambda x: x is None or is_dimension_numbers(x)
        )
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
    if view.perm is not None:
        x = x.transpose(view.perm)
    return x.reshape((view.batch, view.fan_in, view.fan_out))


def from_matrices(y: jax.Array, view: LeafView) -> jax.Array:
    """Inverse of `to_matrices`."""
    if view.perm is None:
        return y.reshape(view.shape)
    permuted_shape = tuple(view.shape[a] for a in view.perm)
    return y.reshape(permuted_shape).transpose(tuple(int(i) for i in np.argsort(view.perm)))


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
