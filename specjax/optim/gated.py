"""`gated_spectral`: per weight block, the spectral step where it guarantees more descent.

Davis & Drusvyatskiy (2025): for a block W with incoming activations A, the Euclidean step
−(1/L_F) G and the spectral step −(‖G‖_*/L_op) polar(G) decrease the loss by at least
‖G‖_F²/(2L_F) and ‖G‖_*²/(2L_op), with L_op/L_F = st(A) = ‖A‖_F²/‖A‖₂² (stable rank). The
spectral step wins iff the nuclear rank nr(G) = ‖G‖_*²/‖G‖_F² ≥ st(A).

With one learning rate η = 1/L_F, the two steps are −η U and −η (‖U‖_*/st(A)) polar(U), U the
(momentum) gradient; ‖U‖_* = ⟨U, polar(U)⟩ from the same polar factor (accurate Polar Express by
default, no SVD). `spectral_learning_rate=η_s` replaces the spectral step by Muon's
−η_s √max(1, fan_out/fan_in) polar(U). `euclidean="adam"` uses Adam's direction as the
Euclidean step (the comparison is then a heuristic: the theorem is for the gradient step).

`match_rms=True` puts both candidates on one scale: the spectral step is Muon's direction at the
Euclidean step's Frobenius norm (so the same RMS), −η κ (‖E‖_F/‖polar(U)‖_F) polar(U) with
κ = `spectral_scale`, and the gate only chooses the direction. Without it the spectral step
η‖U‖_*/st(A) is in raw-gradient units while Adam's E is unit-scale, and the gate compares
steps of unrelated lengths (the gated nanoGPT run then trailed AdamW by 0.47 nats).
`update(..., force_step="spectral" | "euclidean")` takes that step on every block (to evaluate
both candidates, `experiments.nanogpt.gate_check`); `took_spectral` then records the forced step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from specjax.optim import _validate
from specjax.optim._matrices import (
    from_matrices,
    map_matrices_batched,
    per_matrix,
    resolve_views,
    to_matrices,
)
from specjax.optim.labels import (
    check_default_routing,
    default_flax_label_fn,
    leaves_with_paths,
    path_str,
    resolve_labels,
)
from specjax.optim.polar_update import METHODS, make_orthogonalizer, shape_scale

EUCLIDEAN = ("sgd", "adam")
GATED_LABELS = ("block", "other")
FORCED_STEPS = (None, "spectral", "euclidean")


class GatedSpectralState(NamedTuple):
    """count; momentum (optax.TraceState); adam (ScaleByAdamState or empty); per block path:
    nuclear_rank nr(U), stable_rank st(A) as passed in, took_spectral (int32 1 = spectral step),
    each of the block's stack shape (scalar for a plain matrix)."""

    count: jax.Array
    momentum: optax.OptState
    adam: optax.OptState
    nuclear_rank: dict[str, jax.Array]
    stable_rank: dict[str, jax.Array]
    took_spectral: dict[str, jax.Array]


def _stable_ranks_by_path(tree) -> dict[str, jax.Array]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    return {path_str(p): v for p, v in flat if v is not None}


def gated_spectral(
    learning_rate: optax.ScalarOrSchedule,
    *,
    euclidean: str = "sgd",
    momentum: float = 0.0,
    nesterov: bool = False,
    spectral_learning_rate: optax.ScalarOrSchedule | None = None,
    match_rms: bool = False,
    spectral_scale: float = 1.0,
    method: str = "polar_express",
    iters: int = 8,
    weight_decay: float = 0.0,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    label_fn=None,
    reshape=None,
) -> optax.GradientTransformationExtraArgs:
    """Layerwise choice between spectral and Euclidean steps by nr(U) ≥ st(A).

    `update(updates, state, params=None, *, activation_stable_ranks=tree)`: st(A) per block
    (a tree matching params; None or absent for non-block leaves; per-matrix arrays for stacks).
    Blocks are the leaves labelled "block" by `label_fn` (default: flax hidden kernels); others
    ("other") always take the Euclidean step. With the default, a tree that has matrices but no
    flax hidden kernel (a plain dict or list of arrays) is a `ValueError` at `init`: pass
    `label_fn`. `None` leaves are empty subtrees (as in optax) and stay `None`.

    Per step t, with g the gradient and β = `momentum` (optax.trace, no dampening):
    m_t = β m_{t−1} + g_t, U = g_t + β m_t (nesterov) or m_t. Euclidean direction E = U ("sgd")
    or Adam's m̂/(√v̂ + ε) of the raw g ("adam"). A block takes
    −η (‖U‖_*/st(A)) polar(U) where nr(U) = ‖U‖_*²/‖U‖_F² ≥ st(A), else −η E; every leaf then
    adds the decoupled weight decay −ηλX (λ = `weight_decay`; needs `params`). With
    `match_rms` the spectral step is −η κ (‖E‖_F/‖polar(U)‖_F) polar(U), κ = `spectral_scale`.
    """
    _validate.check_learning_rate("learning_rate", learning_rate)
    if spectral_learning_rate is not None:
        _validate.check_learning_rate("spectral_learning_rate", spectral_learning_rate)
    _validate.check_choice("euclidean", euclidean, EUCLIDEAN)
    if not isinstance(match_rms, bool):
        raise ValueError(f"match_rms must be a bool, got {match_rms!r}")
    if match_rms and spectral_learning_rate is not None:
        raise ValueError(
            "match_rms=True sizes the spectral step from the Euclidean one; pass "
            f"spectral_scale, not spectral_learning_rate={spectral_learning_rate!r}"
        )
    _validate.check_positive("spectral_scale", spectral_scale)
    _validate.check_unit_interval("momentum", momentum)
    _validate.check_choice("method", method, METHODS)
    _validate.check_iters("iters", iters)
    _validate.check_nonnegative("weight_decay", weight_decay)
    _validate.check_unit_interval("adam_b1", adam_b1)
    _validate.check_unit_interval("adam_b2", adam_b2)
    _validate.check_positive("adam_eps", adam_eps)
    labels = label_fn or default_flax_label_fn("block", "other")
    trace = optax.trace(decay=momentum, nesterov=nesterov)
    adam = (
        optax.scale_by_adam(b1=adam_b1, b2=adam_b2, eps=adam_eps)
        if euclidean == "adam"
        else (optax.identity())
    )
    orthogonalize = make_orthogonalizer(method, iters, None, 1e-7)

    def block_views(tree):
        label_tree = resolve_labels(tree, labels, GATED_LABELS)
        views = resolve_views(tree, reshape)
        flat_labels = jax.tree.leaves(label_tree)
        blocks = {}
        for (path, _), label in zip(leaves_with_paths(tree), flat_labels, strict=True):
            if label == "block":
                if not views[path].is_matrix:
                    raise ValueError(
                        f"label_fn labels parameter {path!r} of shape {views[path].shape} a "
                        "'block', but it is not a matrix (declare reshape= or label it 'other')"
                    )
                blocks[path] = views[path]
        return blocks

    def init_fn(params):
        blocks = block_views(params)
        if label_fn is None:
            check_default_routing(
                params,
                resolve_labels(params, labels, GATED_LABELS),
                "block",
                "other",
                optimizer="gated_spectral",
                step="gated spectral",
            )
        zeros = {p: jnp.zeros(v.stack_shape, jnp.float32) for p, v in blocks.items()}
        return GatedSpectralState(
            count=jnp.zeros([], jnp.int32),
            momentum=trace.init(params),
            adam=adam.init(params),
            nuclear_rank=zeros,
            stable_rank=dict(zeros),
            took_spectral={p: jnp.zeros(v.stack_shape, jnp.int32) for p, v in blocks.items()},
        )

    def update_fn(
        updates, state, params=None, *, activation_stable_ranks=None, force_step=None, **extra
    ):
        del extra
        if force_step not in FORCED_STEPS:
            raise ValueError(f"force_step must be one of {FORCED_STEPS}, got {force_step!r}")
        blocks = block_views(updates)
        if activation_stable_ranks is None:
            raise ValueError(
                "gated_spectral.update needs activation_stable_ranks= (a tree of st(A) for the "
                f"blocks {sorted(blocks)})"
            )
        st_by_path = _stable_ranks_by_path(activation_stable_ranks)
        missing = [p for p in blocks if p not in st_by_path]
        if missing:
            raise ValueError(
                f"activation_stable_ranks has no value for block {missing[0]!r} "
                f"(got entries for {sorted(st_by_path)})"
            )
        u, momentum_state = trace.update(updates, state.momentum)
        euclid, adam_state = adam.update(u if euclidean == "sgd" else updates, state.adam)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def polar_and_dual(u_Bxmxn):
            p_Bxmxn = orthogonalize(u_Bxmxn).astype(jnp.float32)
            u32 = u_Bxmxn.astype(jnp.float32)
            return p_Bxmxn, jnp.sum(u32 * p_Bxmxn, axis=(-2, -1)), jnp.sum(u32 * u32, (-2, -1))

        results = map_matrices_batched(polar_and_dual, u, blocks)
        steps_by_path, nr, st, took = {}, {}, {}, {}
        euclid_by_path = dict(leaves_with_paths(euclid))
        for path, (p_Bxmxn, dual_B, fro2_B) in results.items():
            view = blocks[path]
            st_B = jnp.broadcast_to(
                jnp.asarray(st_by_path[path], jnp.float32), view.stack_shape
            ).reshape(-1)
            nr_B = jnp.where(fro2_B > 0, dual_B**2 / jnp.where(fro2_B > 0, fro2_B, 1.0), 0.0)
            spectral_B = nr_B >= st_B
            if force_step is not None:
                spectral_B = jnp.full_like(spectral_B, force_step == "spectral")
            euclid_Bxmxn = lr * to_matrices(euclid_by_path[path], view).astype(jnp.float32)
            if match_rms:
                # ‖κ·(‖ηE‖_F/‖P‖_F)·P‖_F = κ‖ηE‖_F: the two candidates have one length.
                e_B = jnp.sqrt(jnp.sum(jnp.square(euclid_Bxmxn), axis=(-2, -1)))
                p_B = jnp.sqrt(jnp.sum(jnp.square(p_Bxmxn), axis=(-2, -1)))
                coef_B = spectral_scale * e_B / jnp.where(p_B > 0, p_B, 1.0)
            elif spectral_learning_rate is None:
                coef_B = lr * dual_B / jnp.maximum(st_B, 1e-12)
            else:
                lr_s = (
                    spectral_learning_rate(state.count)
                    if callable(spectral_learning_rate)
                    else spectral_learning_rate
                )
                scale = shape_scale(view.fan_in, view.fan_out, "muon")
                coef_B = lr_s * scale * jnp.ones_like(dual_B)
            spectral_Bxmxn = coef_B[:, None, None] * p_Bxmxn
            chosen = jnp.where(spectral_B[:, None, None], spectral_Bxmxn, euclid_Bxmxn)
            steps_by_path[path] = from_matrices(chosen, view)
            nr[path] = per_matrix(nr_B, view)
            st[path] = per_matrix(st_B, view)
            took[path] = per_matrix(spectral_B.astype(jnp.int32), view)

        def finish(path, e, x):
            step = steps_by_path.get(path_str(path))
            step = lr * e if step is None else step
            if weight_decay and x is not None:
                step = step + lr * weight_decay * x
            return (-step).astype(e.dtype)

        if params is None and weight_decay:
            raise ValueError(
                f"gated_spectral with weight_decay={weight_decay!r} needs params= in update "
                "(the decay is −η·λ·X); got params=None"
            )
        if params is None:
            out = jax.tree_util.tree_map_with_path(lambda p, e: finish(p, e, None), euclid)
        else:
            out = jax.tree_util.tree_map_with_path(finish, euclid, params)
        new_state = GatedSpectralState(
            count=optax.safe_increment(state.count),
            momentum=momentum_state,
            adam=adam_state,
            nuclear_rank=nr,
            stable_rank=st,
            took_spectral=took,
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
