"""`muon`: momentum → polar factor → decoupled weight decay → learning rate on hidden matrices,
AdamW on everything else (embeddings, output head, norm scales, biases), routed by label.

On the hidden matrices, with matching settings (eps, momentum, weight decay), the updates equal
`optax.contrib.muon`'s to float32 precision: same bias-corrected Nesterov form, same Frobenius
normalization and quintic coefficients, same √max(1, fan_out/fan_in) scale, weight decay added
after scaling and multiplied by the learning rate.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from specjax.optim import _validate
from specjax.optim.labels import (
    check_default_routing,
    default_flax_label_fn,
    validated_label_fn,
)
from specjax.optim.polar_update import METHODS, SCALINGS, scale_by_polar

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


def muon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float = 0.95,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    method: str = "newton_schulz",
    iters: int = 5,
    scaling: str | None = "muon",
    ns_dtype=None,
    eps: float = 1e-7,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.95,
    adam_eps: float = 1e-8,
    adam_weight_decay: float | None = None,
    label_fn=None,
    reshape=None,
    mesh: jax.sharding.Mesh | None = None,
    stack_axis: str | None = None,
    track_stats: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Muon on parameters labelled "muon", AdamW on those labelled "adam".

    Hidden matrices: X ← X − η (s · polar(û) + λ X) with û the Nesterov momentum and s the
    `scaling` rule. `label_fn`: params -> tree of "muon"/"adam" (default: flax hidden kernels);
    an unlabelled leaf is a `ValueError` at `init`, and so is a tree in which the default finds
    no hidden kernel but which has matrices (e.g. a plain dict {"w1": ..., "w2": ...}: pass
    `label_fn`). `None` leaves are empty subtrees (as in optax) and stay `None`.
    `adam_learning_rate` None → `learning_rate`; `adam_weight_decay` None → `weight_decay`,
    applied to Adam leaves of ndim ≥ 2 only (0 on vectors: norm scales, biases).
    The returned state's `inner_states["muon"]` holds `ScaleByPolarState.nuclear_rank`.
    """
    _validate.check_learning_rate("learning_rate", learning_rate)
    if adam_learning_rate is not None:
        _validate.check_learning_rate("adam_learning_rate", adam_learning_rate)
    _validate.check_nonnegative("weight_decay", weight_decay)
    _validate.check_choice("method", method, METHODS)
    _validate.check_choice("scaling", scaling, SCALINGS)
    _validate.check_iters("iters", iters)
    _validate.check_unit_interval("adam_b1", adam_b1)
    _validate.check_unit_interval("adam_b2", adam_b2)
    _validate.check_positive("adam_eps", adam_eps)
    if adam_weight_decay is not None:
        _validate.check_nonnegative("adam_weight_decay", adam_weight_decay)
    labels = validated_label_fn(label_fn or default_flax_label_fn("muon", "adam"), MUON_LABELS)
    check_routing = label_fn is None

    muon_tx = optax.chain(
        scale_by_nesterov_momentum(momentum, nesterov),
        scale_by_polar(
            method=method,
            iters=iters,
            ns_dtype=ns_dtype,
            eps=eps,
            scaling=scaling,
            reshape=reshape,
            mesh=mesh,
            stack_axis=stack_axis,
            track_stats=track_stats,
        ),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    adam_tx = optax.adamw(
        learning_rate=learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1=adam_b1,
        b2=adam_b2,
        eps=adam_eps,
        weight_decay=weight_decay if adam_weight_decay is None else adam_weight_decay,
        mask=_matrix_mask,
    )
    partitioned = optax.partition({"muon": muon_tx, "adam": adam_tx}, labels)

    def init_fn(params):
        if check_routing:
            check_default_routing(
                params, labels(params), "muon", "adam", optimizer="muon", step="Muon"
            )
        return partitioned.init(params)

    return optax.GradientTransformationExtraArgs(init_fn, partitioned.update)
