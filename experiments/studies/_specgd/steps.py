"""Gradient descent and spectral gradient descent on L(W) = (1/2n)‖W A − Y‖_F².

∇L(W) = (1/n)(W A − Y) Aᵀ. L is L_F-smooth in the Frobenius norm with L_F = ‖A‖₂²/n and
L_op-smooth in the operator norm with L_op = ‖A‖_F²/n. The two steps minimise the
matching quadratic upper bounds:

    GD:      W⁺ = W − (1/L_F) ∇L                        guaranteed drop ‖∇L‖_F² / (2 L_F)
    SpecGD:  W⁺ = W − (‖∇L‖_*/L_op) polar(∇L)           guaranteed drop ‖∇L‖_*² / (2 L_op)

so the ratio of guaranteed drops is nr(∇L)/st(A). All functions are pure and jit-able;
the paper's exact SpecGD takes the polar factor from an SVD (use float64).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from experiments.config import check_choice
from specjax import nuclear_rank, polar

from .problems import LeastSquaresProblem

METHODS = ("gd", "specgd")


class Smoothness(NamedTuple):
    """L_F = ‖A‖₂²/n (Frobenius geometry) and L_op = ‖A‖_F²/n (operator geometry)."""

    frobenius: jax.Array
    operator: jax.Array


def smoothness(A_kxn: jax.Array) -> Smoothness:
    """Exact smoothness constants of L in the two geometries (σ_max from the SVD)."""
    n = A_kxn.shape[-1]
    frob_sq = jnp.sum(jnp.square(A_kxn))
    op_sq = jnp.linalg.svd(A_kxn, compute_uv=False)[0] ** 2
    return Smoothness(frobenius=op_sq / n, operator=frob_sq / n)


def loss(W_mxk: jax.Array, problem: LeastSquaresProblem) -> jax.Array:
    """L(W) = (1/2n)‖W A − Y‖_F²."""
    residual = W_mxk @ problem.A_kxn - problem.Y_mxn
    return 0.5 * jnp.sum(jnp.square(residual)) / problem.A_kxn.shape[-1]


def gradient(W_mxk: jax.Array, problem: LeastSquaresProblem) -> jax.Array:
    """∇L(W) = (1/n)(W A − Y) Aᵀ."""
    residual = W_mxk @ problem.A_kxn - problem.Y_mxn
    return residual @ problem.A_kxn.T / problem.A_kxn.shape[-1]


def nuclear_norm_and_polar(G: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(‖G‖_*, polar(G)) with ‖G‖_* = ⟨G, U Vᵀ⟩ = Σσᵢ read off the same SVD-based factor."""
    P = polar(G, method="svd")
    return jnp.sum(G * P), P


def gd_update(W: jax.Array, G: jax.Array, L: Smoothness) -> jax.Array:
    return W - G / L.frobenius


def specgd_update(W: jax.Array, G: jax.Array, L: Smoothness) -> jax.Array:
    nuclear, P = nuclear_norm_and_polar(G)
    return W - (nuclear / L.operator) * P


class Trajectory(NamedTuple):
    """Per-iterate records of t = 0..T: loss L(W_t) and nr(∇L(W_t)); the last iterate W_T."""

    loss: jax.Array
    nuclear_rank: jax.Array
    W_final: jax.Array


def gram_gradient(W_mxk: jax.Array, S_kxk: jax.Array, B_mxk: jax.Array) -> jax.Array:
    """∇L(W) = W S − B with S = AAᵀ/n, B = YAᵀ/n: k³ instead of k²n flops per step."""
    return W_mxk @ S_kxk - B_mxk


def _gram(problem: LeastSquaresProblem) -> tuple[jax.Array, jax.Array]:
    n = problem.A_kxn.shape[-1]
    return problem.A_kxn @ problem.A_kxn.T / n, problem.Y_mxn @ problem.A_kxn.T / n


@partial(jax.jit, static_argnames=("method", "num_steps"))
def trajectory(
    W0: jax.Array,
    problem: LeastSquaresProblem,
    L: Smoothness,
    *,
    method: str,
    num_steps: int,
    record: jax.Array | None = None,
) -> Trajectory:
    """`num_steps` steps of `method` from W0 as one `lax.scan`.

    `record` (bool, shape (num_steps + 1,)) picks the iterates whose loss and nr(∇L) are
    computed (others get NaN): an SVD per record is the whole cost of a large GD sweep.
    Steps use the Gram form of the gradient; the logged loss uses the residual, which
    keeps its relative accuracy down to the 1e-30s.
    """
    check_choice(method, "method", METHODS)
    update = gd_update if method == "gd" else specgd_update
    if record is None:
        record = jnp.ones((num_steps + 1,), bool)
    S, B = _gram(problem)

    def measure(W, G, on):
        nan = jnp.full((), jnp.nan, W.dtype)
        return jax.lax.cond(on, lambda: (loss(W, problem), nuclear_rank(G)), lambda: (nan, nan))

    def body(W, on):
        G = gram_gradient(W, S, B)
        return update(W, G, L), measure(W, G, on)

    W_final, (loss_t, nr_t) = jax.lax.scan(body, W0, record[:-1])
    last_loss, last_nr = measure(W_final, gram_gradient(W_final, S, B), record[-1])
    return Trajectory(
        loss=jnp.append(loss_t, last_loss), nuclear_rank=jnp.append(nr_t, last_nr), W_final=W_final
    )


@jax.jit
def gd_iterate(W0: jax.Array, problem: LeastSquaresProblem, L: Smoothness, num_steps) -> jax.Array:
    """W_t of GD after `num_steps` (traced, so one compile serves every restart point)."""
    S, B = _gram(problem)
    return jax.lax.fori_loop(0, num_steps, lambda _, W: gd_update(W, gram_gradient(W, S, B), L), W0)


def steps_to_reach(loss_t, threshold: float) -> int:
    """First t with loss_t ≤ threshold, or -1 if never (host-side summary helper)."""
    hits = jnp.nonzero(jnp.asarray(loss_t) <= threshold)[0]
    return int(hits[0]) if hits.size else -1
