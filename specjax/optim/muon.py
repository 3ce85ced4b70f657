"""`muon`: momentum → polar factor → decoupled weight decay → learning rate on hidden matrices,
AdamW on everything else (embeddings, output head, norm scales, biases), routed by label.

A drop-in for `optax.contrib.muon` (optax 0.2.8): it takes optax's argument names and positional
order too, and with matching settings its updates equal optax's to float32 precision (same
bias-corrected Nesterov form, Frobenius normalization, Newton–Schulz coefficients, shape scale,
dual-norm `adaptive` step, weight decay after scaling, times the learning rate).

Defaults that differ from optax.contrib.muon (why: docs/notes/optim.md):

| argument            | here                                  | optax                            |
|---------------------|---------------------------------------|----------------------------------|
| routing (no labels) | flax hidden `kernel`s; ValueError if  | every 2-D leaf (embeddings and   |
|                     | none but the tree has matrices        | head too); 3-D/4-D to Adam       |
| adam_b2             | 0.95 (Muon's reference AdamW setup)   | 0.999                            |
| adam_weight_decay   | None → weight_decay, ndim ≥ 2 leaves  | 0.0, every Adam leaf             |
| adam_nesterov       | False: AdamW                          | tied to `nesterov`: NAdam        |
| adaptive, stacked   | ⟨û, O⟩ per matrix of the stack        | one ⟨û, O⟩ for the whole leaf    |
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from specjax.linalg.polar import newton_schulz
from specjax.optim import _optax_compat as compat
from specjax.optim import _validate
from specjax.optim._matrices import from_matrices, replace_leaves, resolve_views, to_matrices
from specjax.optim.labels import (
    check_default_routing,
    default_flax_label_fn,
    leaves_with_paths,
    validated_label_fn,
)
from specjax.optim.polar_update import METHODS, SCALINGS, scale_by_polar, shape_scale

MUON_LABELS = ("muon", "adam")


class NesterovMomentumState(NamedTuple):
    count: jax.Array  # int32 scalar: number of updates so far
    mu: optax.Updates  # EMA of gradients m_t = β m_{t-1} + (1 − β) g_t


def scale_by_nesterov_momentum(
    momentum: float = 0.95, nesterov: bool = True, mu_dtype=None
) -> optax.GradientTransformation:
    """Bias-corrected EMA momentum, in optax.contrib.muon's form.

    m_t = β m_{t-1} + (1 − β) g_t;  nesterov: û = β m_t/(1 − β^{t+1}) + (1 − β) g_t/(1 − β^t),
    otherwise û = m_t/(1 − β^t). (Muon's normalization makes the overall scale irrelevant; the
    correction only sets the Nesterov mix at early steps.)
    """
    _validate.check_unit_interval("momentum", momentum)

    def init_fn(params):
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype or p.dtype), params)
        return NesterovMomentumState(count=jnp.zeros([], jnp.int32), mu=mu)

    def update_fn(updates, state, params=None):
        del params
        beta = momentum
        mu = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g.astype(m.dtype), state.mu, updates)
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.float32)
        if nesterov:
            c_mu = 1 - beta ** (t + 1)
            c_g = 1 - beta**t

            def mix(m, g):
                m_hat = m / c_mu.astype(m.dtype)
                g_hat = g / c_g.astype(g.dtype)
                return (beta * m_hat + (1 - beta) * g_hat).astype(g.dtype)

            direction = jax.tree.map(mix, mu, updates)
        else:
            c_mu = 1 - beta**t
            direction = jax.tree.map(
                lambda m, g: (m / c_mu.astype(m.dtype)).astype(g.dtype), mu, updates
            )
        return direction, NesterovMomentumState(count=count, mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


def _matrix_mask(params):
    """Decay only leaves of ndim ≥ 2 in the Adam group (embeddings, head), not gains/biases."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def scale_matrices(
    polar_tx: optax.GradientTransformation, shape_rule, *, adaptive: bool, reshape=None
) -> optax.GradientTransformation:
    """`polar_tx`'s O = polar(û), then per matrix s(fan_in, fan_out)·O, or with `adaptive`
    s·⟨û, O⟩·O (Bernstein & Newhouse 2024, arXiv:2409.20325: the step the dual norm sets)."""

    def update_fn(updates, state, params=None):
        directions, state = polar_tx.update(updates, state, params)
        views = resolve_views(updates, reshape)
        before = dict(leaves_with_paths(updates))
        scaled = {}
        for path, o in leaves_with_paths(directions):
            view = views[path]
            if not view.is_matrix:
                continue
            if adaptive:
                o_B = to_matrices(o, view).astype(jnp.float32)
                u_B = to_matrices(before[path], view).astype(jnp.float32)
                dual_B = jnp.sum(o_B * u_B, axis=(-2, -1), keepdims=True)
                o = from_matrices(o_B * dual_B, view).astype(o.dtype)
            scale = jnp.asarray(shape_rule(view.fan_in, view.fan_out), o.dtype)
            scaled[path] = o * scale
        return replace_leaves(directions, scaled), state

    return optax.GradientTransformation(polar_tx.init, update_fn)


def muon(
    learning_rate: optax.ScalarOrSchedule,
    ns_coeffs=None,
    ns_steps: int | None = None,
    beta: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask=None,
    mu_dtype=None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.95,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float | None = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers=None,
    consistent_rms: float | None = None,
    momentum: float | None = None,
    method: str | None = None,
    iters: int | None = None,
    scaling: str | compat.Unset | None = compat.UNSET,
    ns_dtype=None,
    ns_form: str = "standard",
    adam_eps: float | None = None,
    adam_nesterov: bool = False,
    label_fn=None,
    reshape=None,
    mesh: jax.sharding.Mesh | None = None,
    stack_axis: str | None = None,
    track_stats: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Muon on parameters labelled "muon", AdamW on those labelled "adam".

    Hidden matrices: X ← X − η (s · polar(û) + λ X) with û the Nesterov momentum and s the
    shape rule. Arguments take optax.contrib.muon's names and positional order; each has a
    native twin, and passing both is a `ValueError`:
    beta ↔ momentum (0.95); ns_steps ↔ iters (5); ns_coeffs ((a, b, c), ((a, b, c), ...),
    "standard" or "dion") ↔ method ("newton_schulz" | "polar_express" | "svd"; default
    Muon's quintic); consistent_rms=c (s = c·√max(fan_in, fan_out)) ↔ scaling ("muon"
    √max(1, fan_out/fan_in), the default | "rms" = consistent_rms 0.2 | "spectral" | None);
    muon_weight_dimension_numbers (tree, prefix or params -> tree of MuonDimensionNumbers /
    None: routes and declares the matrices) ↔ label_fn (params -> tree of "muon"/"adam";
    default: flax hidden kernels) + reshape (views of leaves of ndim > 2).
    When nothing labels the parameters and no hidden kernel is found in a tree that has
    matrices (e.g. a plain dict {"w1": ..., "w2": ...}), `init` raises: pass label_fn or
    muon_weight_dimension_numbers; so does a dimension-numbers tree that routes no matrix.
    `None` leaves are empty subtrees (as in optax) and stay `None`.
    eps: Newton–Schulz normalization and, unless `adam_eps` is given, Adam's ε (as optax); a
    traced eps (optax.inject_hyperparams) reaches Adam, Newton–Schulz keeps 1e-8.
    adaptive: s·⟨û, O⟩·O with O = polar(û), per matrix. preconditioning: "frobenius" only.
    weight_decay_mask: which Muon leaves decay (optax.add_decayed_weights' mask).
    `adam_learning_rate` None → `learning_rate`; `adam_weight_decay` None → `weight_decay`,
    applied to Adam leaves of ndim ≥ 2 only (0 on vectors: norm scales, biases).
    adam_nesterov: NAdam in the Adam group (optax ties it to `nesterov`). mu_dtype: both groups.
    ns_form: how Newton–Schulz iterates ("standard", optax's and Keller Jordan's; "gram" on the
    Gram matrix with restarts; "auto": Gram where it needs fewer FLOPs). See `specjax.polar`.
    The returned state's `inner_states["muon"]` holds `ScaleByPolarState.nuclear_rank`.
    Defaults that differ from optax: see the module docstring.
    """
    momentum = compat.one_of("momentum", momentum, "beta", beta, 0.95)
    iters = compat.one_of("iters", iters, "ns_steps", ns_steps, 5)
    compat.one_of("method", method, "ns_coeffs", ns_coeffs, None)
    if not isinstance(scaling, compat.Unset) and consistent_rms is not None:
        raise ValueError(
            f"muon: got both scaling={scaling!r} and consistent_rms={consistent_rms!r}, two "
            "spellings of the shape rule (scaling is specjax's, consistent_rms optax's); pass one"
        )
    scaling = "muon" if isinstance(scaling, compat.Unset) else scaling
    if muon_weight_dimension_numbers is not None and (label_fn is not None or reshape is not None):
        native = "label_fn" if label_fn is not None else "reshape"
        raise ValueError(
            f"muon: got both {native}= and muon_weight_dimension_numbers=, two spellings of "
            "which parameters take the Muon step and how they are matrices; pass one"
        )
    _validate.check_learning_rate("learning_rate", learning_rate)
    if adam_learning_rate is not None:
        _validate.check_learning_rate("adam_learning_rate", adam_learning_rate)
    _validate.check_nonnegative("weight_decay", weight_decay)
    _validate.check_iters("iters" if ns_steps is None else "ns_steps", iters)
    _validate.check_unit_interval("momentum" if beta is None else "beta", momentum)
    _validate.check_positive("eps", eps)
    # Newton–Schulz unrolls with a static ε. Under optax.inject_hyperparams eps arrives traced
    # (optax's code allows that); ε then stays 1e-8 there: after the max-scaling ‖X‖_F ≥ 1, so
    # ε moves the polar factor by < ε relatively. Adam gets the traced value.
    ns_eps = float(eps) if _validate._is_concrete_number(eps) else 1e-8
    if ns_coeffs is None:
        method = "newton_schulz" if method is None else method
        _validate.check_choice("method", method, METHODS)
        orthogonalizer = None
    else:  # optax's ns_coeffs: a preset name or a coefficient table
        table = compat.coefficient_table(ns_coeffs, iters)

        def orthogonalizer(x):
            return newton_schulz(x, table, dtype=ns_dtype, eps=ns_eps, form=ns_form)

        method = "newton_schulz"
    _validate.check_choice("scaling", scaling, SCALINGS)
    _validate.check_choice("preconditioning", preconditioning, compat.PRECONDITIONINGS)
    if consistent_rms is not None:
        _validate.check_positive("consistent_rms", consistent_rms)
        shape_rule = compat.consistent_rms_rule(consistent_rms)
    else:

        def shape_rule(fan_in, fan_out):
            return shape_scale(fan_in, fan_out, scaling)

    _validate.check_unit_interval("adam_b1", adam_b1)
    _validate.check_unit_interval("adam_b2", adam_b2)
    _validate.check_nonnegative("adam_eps_root", adam_eps_root)
    adam_eps = eps if adam_eps is None else adam_eps
    _validate.check_positive("adam_eps", adam_eps)
    if adam_weight_decay is not None:
        _validate.check_nonnegative("adam_weight_decay", adam_weight_decay)

    if muon_weight_dimension_numbers is not None:
        raw_labels = compat.dimension_numbers_labels(muon_weight_dimension_numbers, *MUON_LABELS)
        reshape = compat.dimension_numbers_reshape(muon_weight_dimension_numbers)
        routed_by = "muon_weight_dimension_numbers (MuonDimensionNumbers per leaf, None = Adam)"
    else:
        raw_labels = label_fn or default_flax_label_fn(*MUON_LABELS)
        routed_by = None
    labels = validated_label_fn(raw_labels, MUON_LABELS)
    check_routing = label_fn is None

    polar_tx = scale_by_polar(
        method=method,
        iters=iters,
        orthogonalizer=orthogonalizer,
        ns_dtype=ns_dtype,
        ns_form=ns_form,
        eps=ns_eps,
        scaling=None,  # the shape rule is applied after the optional dual-norm factor
        reshape=reshape,
        mesh=mesh,
        stack_axis=stack_axis,
        track_stats=track_stats,
    )
    muon_tx = optax.chain(
        scale_by_nesterov_momentum(momentum, nesterov, mu_dtype),
        scale_matrices(polar_tx, shape_rule, adaptive=adaptive, reshape=reshape),
        optax.add_decayed_weights(weight_decay, weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )
    adam_tx = optax.adamw(
        learning_rate=learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1=adam_b1,
        b2=adam_b2,
        eps=adam_eps,
        eps_root=adam_eps_root,
        weight_decay=weight_decay if adam_weight_decay is None else adam_weight_decay,
        mask=_matrix_mask,
        mu_dtype=mu_dtype,
        nesterov=adam_nesterov,
    )
    partitioned = optax.partition({"muon": muon_tx, "adam": adam_tx}, labels)

    def init_fn(params):
        if check_routing:
            check_default_routing(
                params,
                labels(params),
                *MUON_LABELS,
                optimizer="muon",
                step="Muon",
                routed_by=routed_by,
                hint=(
                    ", or optax's form muon_weight_dimension_numbers= a tree (or params -> "
                    "tree) of optax.contrib.MuonDimensionNumbers() / None"
                ),
            )
        return partitioned.init(params)

    return optax.GradientTransformationExtraArgs(init_fn, partitioned.update)
