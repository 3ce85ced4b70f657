"""One GD step against one SpecGD step from the same W on the same least-squares problem.

With G = ∇L(W), exact smoothness gives, for the two steps of `steps`:

    ‖G‖_F²/(2L_F) ≤ L(W) − L(W_GD) ≤ ‖G‖_F²/L_F
    ‖G‖_*²/(2L_op) ≤ L(W) − L(W_SD) ≤ ‖G‖_*²/L_op

so the measured ratio of decreases (L − L_SD)/(L − L_GD) lies in [nr/(2 st), 2 nr/st]
around the predicted ratio nr(G)/st(A), and nr ≥ 2 st ⇒ L(W_SD) ≤ L(W_GD) exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from specjax import nuclear_rank

from . import steps
from .problems import LeastSquaresProblem


class OneStep(NamedTuple):
    """Losses before and after each step, nr(∇L), st(A) and the two decrease ratios."""

    loss: jax.Array
    loss_gd: jax.Array
    loss_sd: jax.Array
    nuclear_rank: jax.Array
    stable_rank: jax.Array
    predicted_ratio: jax.Array
    measured_ratio: jax.Array


@jax.jit
def one_step(W: jax.Array, problem: LeastSquaresProblem) -> OneStep:
    """Compare one step of each method from W (vmap over W and problem for many instances)."""
    L = steps.smoothness(problem.A_kxn)
    G = steps.gradient(W, problem)
    value = steps.loss(W, problem)
    loss_gd = steps.loss(steps.gd_update(W, G, L), problem)
    loss_sd = steps.loss(steps.specgd_update(W, G, L), problem)
    nr = nuclear_rank(G)
    st = L.operator / L.frobenius
    return OneStep(
        loss=value,
        loss_gd=loss_gd,
        loss_sd=loss_sd,
        nuclear_rank=nr,
        stable_rank=st,
        predicted_ratio=nr / st,
        measured_ratio=(value - loss_sd) / (value - loss_gd),
    )


def implication_holds(result: OneStep, rtol: float = 1e-10) -> jax.Array:
    """Per instance: not (nr ≥ 2 st) or L(W_SD) ≤ L(W_GD) (up to `rtol`·L(W) of rounding)."""
    premise = result.nuclear_rank >= 2 * result.stable_rank
    conclusion = result.loss_sd <= result.loss_gd + rtol * result.loss
    return jnp.logical_or(~premise, conclusion)


def within_bracket(result: OneStep, rtol: float = 1e-8) -> jax.Array:
    """Per instance: nr/(2 st) ≤ measured ratio ≤ 2 nr/st (the bracket the bounds imply)."""
    low = result.predicted_ratio / 2 * (1 - rtol)
    high = 2 * result.predicted_ratio * (1 + rtol)
    return (result.measured_ratio >= low) & (result.measured_ratio <= high)
