"""`scale_by_polar`: replace each matrix-shaped update by its scaled polar factor.

U = P H (polar decomposition, P = U Vᵀ of the SVD U = U Σ Vᵀ) ↦ s · P, with the shape rule s:
  "muon"     √max(1, fan_out/fan_in)        (Keller Jordan's Muon; optax.contrib.muon)
  "rms"      0.2 · √max(fan_in, fan_out)     (Moonlight: match AdamW's update RMS ≈ 0.2)
  "spectral" √(fan_out/fan_in)               (μP spectral condition)
  None       1
Same-shaped matrices (all layers' Q/K/V/O, scanned stacks) are stacked and orthogonalized in
one batched call. Given `stack_axis` (a mesh axis name), the stack axis is padded to a multiple
of that axis' size and sharded over it, so each device orthogonalizes whole matrices instead
of the compiler inserting an all-reduce into every Newton–Schulz iteration of a sharded matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from specjax.linalg import polar
from specjax.linalg.polar import NS_FORMS
from specjax.optim import _validate
from specjax.optim._matrices import (
    from_matrices,
    map_matrices_batched,
    per_matrix,
    replace_leaves,
    resolve_views,
)

SCALINGS = ("muon", "rms", "spectral", None)
METHODS = ("newton_schulz", "polar_express", "svd")
RMS_MATCH = 0.2  # AdamW's typical update RMS (Liu et al. 2025, "Muon is scalable").


class ScaleByPolarState(NamedTuple):
    """nuclear_rank: {path: nr(U) estimate per matrix (stack shape)}, nr = ⟨U, polar(U)⟩²/‖U‖_F².

    Exact for an exact polar factor ("svd", converged "polar_express"); with Muon's quintic
    Newton–Schulz (output singular values spread over [0.68, 1.21] for σ ≥ 2e-3‖U‖_F, see
    `specjax.polar`) it is an estimate.
    """

    nuclear_rank: dict[str, jax.Array]


def shape_scale(fan_in: int, fan_out: int, scaling: str | None) -> float:
    """The shape rule s(fan_in, fan_out) (see module docstring)."""
    if scaling == "muon":
        return math.sqrt(max(1.0, fan_out / fan_in))
    if scaling == "rms":
        return RMS_MATCH * math.sqrt(max(fan_in, fan_out))
    if scaling == "spectral":
        return math.sqrt(fan_out / fan_in)
    if scaling is None:
        return 1.0
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")


def make_orthogonalizer(
    method: str, iters: int, ns_dtype, eps: float, ns_form: str = "standard"
) -> Callable[[jax.Array], jax.Array]:
    """(..., m, n) -> polar factor with `specjax.polar`'s `method`, `iters` and `form`."""

    def orthogonalize(x):
        return polar(x, method=method, iters=iters, dtype=ns_dtype, eps=eps, form=ns_form)

    return orthogonalize


def nuclear_rank_estimate(u_Bxmxn: jax.Array, p_Bxmxn: jax.Array) -> jax.Array:
    """⟨U, P⟩² / ‖U‖_F² per matrix (= ‖U‖_*²/‖U‖_F² when P is the exact polar factor); 0 for U=0."""
    u = u_Bxmxn.astype(jnp.float32)
    dual = jnp.sum(u * p_Bxmxn.astype(jnp.float32), axis=(-2, -1))
    fro2 = jnp.sum(u * u, axis=(-2, -1))
    return jnp.where(fro2 > 0, dual**2 / jnp.where(fro2 > 0, fro2, 1.0), 0.0)


def stack_sharding_hooks(mesh, stack_axis: str | None):
    """(pad_to_multiple, constrain) that shard a (B, m, n) stack over mesh axis `stack_axis`."""
    if stack_axis is None:
        return 1, None
    active = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
    if active is None or stack_axis not in getattr(active, "axis_names", ()):
        raise ValueError(
            f"stack_axis={stack_axis!r} is not an axis of the mesh "
            f"{getattr(active, 'axis_names', None)}; pass mesh= or run under jax.set_mesh"
        )
    size = dict(zip(active.axis_names, active.axis_sizes, strict=True))[stack_axis]
    spec = PartitionSpec(stack_axis, None, None)
    sharding = NamedSharding(mesh, spec) if mesh is not None else spec

    def constrain(stack):
        return jax.lax.with_sharding_constraint(stack, sharding)

    return size, constrain


def scale_by_polar(
    *,
    method: str = "newton_schulz",
    iters: int = 5,
    orthogonalizer: Callable[[jax.Array], jax.Array] | None = None,
    ns_dtype=None,
    ns_form: str = "standard",
    eps: float = 1e-7,
    scaling: str | None = "muon",
    reshape=None,
    track_stats: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    stack_axis: str | None = None,
) -> optax.GradientTransformation:
    """U ↦ s(fan_in, fan_out) · polar(U) for every matrix leaf; vectors pass unchanged.

    `reshape` declares how leaves of ndim > 2 are matrices ("conv", "stack", "vector"; a tree or
    `params -> tree` of these, or one name for all). A zero update gives a zero update (eps in
    the normalization), never NaN. `ns_form`: `specjax.polar`'s `form` ("standard" | "gram" |
    "auto": the Gram form where it needs fewer FLOPs).
    """
    _validate.check_choice("method", method, METHODS)
    _validate.check_iters("iters", iters)
    _validate.check_choice("scaling", scaling, SCALINGS)
    _validate.check_choice("ns_form", ns_form, NS_FORMS)
    _validate.check_callable_or_none("orthogonalizer", orthogonalizer)
    _validate.check_positive("eps", eps)
    if mesh is not None and stack_axis is not None and stack_axis not in mesh.axis_names:
        raise ValueError(f"stack_axis={stack_axis!r} is not an axis of mesh {mesh.axis_names}")
    ortho = orthogonalizer or make_orthogonalizer(method, iters, ns_dtype, eps, ns_form)

    def init_fn(params):
        views = resolve_views(params, reshape)
        nr = {
            path: jnp.zeros(view.stack_shape, jnp.float32)
            for path, view in views.items()
            if view.is_matrix and track_stats
        }
        return ScaleByPolarState(nuclear_rank=nr)

    def update_fn(updates, state, params=None):
        del params
        views = resolve_views(updates, reshape)
        pad, constrain = stack_sharding_hooks(mesh, stack_axis)

        def polar_and_stats(u_Bxmxn):
            p_Bxmxn = ortho(u_Bxmxn)
            nr_B = nuclear_rank_estimate(u_Bxmxn, p_Bxmxn) if track_stats else None
            return p_Bxmxn.astype(u_Bxmxn.dtype), nr_B

        results = map_matrices_batched(
            polar_and_stats, updates, views, pad_to_multiple=pad, constrain=constrain
        )
        new_leaves, nr = {}, {}
        for path, (p_Bxmxn, nr_B) in results.items():
            view = views[path]
            s = shape_scale(view.fan_in, view.fan_out, scaling)
            new_leaves[path] = from_matrices(p_Bxmxn * jnp.asarray(s, p_Bxmxn.dtype), view)
            if track_stats:
                nr[path] = per_matrix(nr_B, view)
        return replace_leaves(updates, new_leaves), ScaleByPolarState(nuclear_rank=nr)

    return optax.GradientTransformation(init_fn, update_fn)
