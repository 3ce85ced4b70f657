"""`clip_by_spectral_norm`: spectral clipping of matrix updates, norm clipping of vectors.

Matrices (…, m, n): soft H_c: σ ↦ σ/√(1 + σ²/c²) (`specjax.soft_spectral_clip`, Newton–Schulz
inverse square root, no SVD) or hard σ ↦ min(σ, c) (`specjax.hard_spectral_clip`, SVD).
Vectors and scalars: soft g/√(1 + (‖g‖/c)²), hard g·min(1, c/‖g‖).

Both soft maps satisfy ‖H_c(U)‖₂ < c and H_c(U) = U(1 − O(‖U‖²/c²)), so small updates pass
nearly unchanged; c = inf (allowed, soft or hard) returns every update exactly. Iteration
count: `iters=None` lets the soft clip iterate until converged (its count grows like
log(σ_max/c)); a fixed small `iters` under-converges when σ_max/c is large (10 iterations can
be 25–55% off on power-law spectra), never above c.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from specjax.linalg import hard_spectral_clip, soft_spectral_clip, spectral_norm
from specjax.optim import _validate
from specjax.optim._matrices import (
    LeafView,
    from_matrices,
    map_matrices_batched,
    per_matrix,
    replace_leaves,
    resolve_views,
)
from specjax.optim.labels import leaves_with_paths

KINDS = ("soft", "hard")
STATS_TOL = 1e-3
STATS_MAX_ITERS = 30


class ClipBySpectralNormState(NamedTuple):
    """spectral_norm: {path: ‖U‖₂ before clipping, per matrix (stack shape); ‖g‖₂ for vectors}."""

    spectral_norm: dict[str, jax.Array]


def clip_matrices(u_Bxmxn: jax.Array, c, kind: str, iters: int | None) -> jax.Array:
    """Spectral clip of a stack of matrices at level c (a positive scalar, may be traced)."""
    if kind == "hard":
        return hard_spectral_clip(u_Bxmxn, c)
    u32 = u_Bxmxn.astype(jnp.float32)
    clipped = soft_spectral_clip(u32, jnp.asarray(c, jnp.float32), iters=iters)
    return clipped.astype(u_Bxmxn.dtype)


def clip_vector(g: jax.Array, c, kind: str) -> jax.Array:
    norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
    c = jnp.asarray(c, jnp.float32)
    if kind == "soft":
        factor = 1 / jnp.sqrt(1 + jnp.square(norm / c))
    else:
        factor = jnp.minimum(1.0, c / jnp.where(norm > 0, norm, 1.0))
    return (g * factor.astype(g.dtype)).astype(g.dtype)


def clip_tree(
    updates,
    views: dict[str, LeafView],
    c,
    *,
    kind: str,
    iters: int | None,
    track_stats: bool,
):
    """(clipped updates, {path: norm before clipping}) for a whole tree at clip level c."""

    def clip_and_norm(u_Bxmxn):
        norm_B = (
            spectral_norm(u_Bxmxn, tol=STATS_TOL, max_iters=STATS_MAX_ITERS)
            if track_stats
            else None
        )
        return clip_matrices(u_Bxmxn, c, kind, iters), norm_B

    results = map_matrices_batched(clip_and_norm, updates, views)
    new_leaves, norms = {}, {}
    for path, (clipped, norm_B) in results.items():
        new_leaves[path] = from_matrices(clipped, views[path])
        if track_stats:
            norms[path] = per_matrix(norm_B, views[path])
    for path, leaf in leaves_with_paths(updates):
        if not views[path].is_matrix:
            new_leaves[path] = clip_vector(leaf, c, kind)
            if track_stats:
                norms[path] = jnp.sqrt(jnp.sum(jnp.square(leaf.astype(jnp.float32))))
    return replace_leaves(updates, new_leaves), norms


def init_norm_stats(views: dict[str, LeafView], track_stats: bool) -> dict[str, jax.Array]:
    if not track_stats:
        return {}
    return {path: jnp.zeros(view.stack_shape, jnp.float32) for path, view in views.items()}


def check_clip_args(c, kind: str, iters) -> None:
    _validate.check_positive("c", c, allow_inf=True)
    _validate.check_choice("kind", kind, KINDS)
    _validate.check_iters("iters", iters, allow_none=True)


def clip_by_spectral_norm(
    c: float,
    *,
    kind: str = "soft",
    iters: int | None = None,
    reshape=None,
    track_stats: bool = True,
) -> optax.GradientTransformation:
    """Clip every matrix update's spectrum at c (soft or hard) and every vector's norm at c.

    `c` > 0; c = inf passes every update through unchanged (the limit of both maps).
    `reshape` declares leaves of ndim > 2 ("conv", "stack", "vector"), as in `scale_by_polar`.
    State records the spectral norm of each update before clipping.
    """
    check_clip_args(c, kind, iters)

    def init_fn(params):
        return ClipBySpectralNormState(init_norm_stats(resolve_views(params, reshape), track_stats))

    def update_fn(updates, state, params=None):
        del params
        views = resolve_views(updates, reshape)
        clipped, norms = clip_tree(
            updates, views, c, kind=kind, iters=iters, track_stats=track_stats
        )
        return clipped, ClipBySpectralNormState(norms)

    return optax.GradientTransformation(init_fn, update_fn)
