"""Per-layer spectral statistics of weights, gradients, updates and activations.

The quantities of Davis & Drusvyatskiy (arXiv 2512.04299) for a layer `y = A W`:

- stable rank of the activation matrix that feeds the weight, st(A) = ‖A‖_F² / ‖A‖₂²
  (rows = tokens; block power iteration, since only σ_max is needed);
- nuclear rank of the weight's gradient, nr(G) = ‖G‖_*² / ‖G‖_F² (exact singular values);
- their ratio nr(G) / st(A): spectral (Muon-type) steps beat Euclidean ones when it is large;
- spectral norm, Frobenius norm and top singular values of weights and updates
  (randomized SVD; no full decomposition).

For an embedding the feeding matrix is the token-indicator matrix X (one row e_token per
position): XᵀX = diag(counts), so st(X) = N / max count = 1 / p_max exactly, computed from
the counts without any matrix.

Everything here is jit-able and returns dicts of arrays; turning them into table rows is the
caller's job.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from specjax.linalg import _validate, nuclear_rank, randomized_svd, stable_rank


def as_token_matrix(a: jax.Array) -> jax.Array:
    """Activations (..., d) as the (N, d) matrix whose rows are the N = prod(...) tokens.

    Integer input is converted like every linalg input (float64 with x64 enabled, else
    float32; never wrapped)."""
    a = _validate.as_float_array(a, "activation")
    if a.ndim < 2:
        raise ValueError(f"activation must have at least 2 dims (..., d), got shape {a.shape}")
    return a.reshape(-1, a.shape[-1])


def activation_stable_rank(
    a: jax.Array, *, key: jax.Array | None = None, max_iters: int = 30, tol: float = 1e-4
) -> jax.Array:
    """st(A) = ‖A‖_F² / ‖A‖₂² of the token matrix of `a` (..., d), by block power iteration
    (at most `max_iters` iterations, relative tolerance `tol`)."""
    return stable_rank(as_token_matrix(a), method="power", key=key, max_iters=max_iters, tol=tol)


def indicator_stable_rank(tokens: jax.Array, num_classes: int) -> jax.Array:
    """Exact st of the one-hot matrix of integer `tokens` (any shape): N / max_c count_c."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    flat = jnp.ravel(jnp.asarray(tokens))
    if not jnp.issubdtype(flat.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers, got dtype {flat.dtype}")
    counts = jnp.zeros((num_classes,), jnp.float32).at[flat].add(1.0)
    return jnp.float32(flat.size) / jnp.max(counts)


def matrix_summary(x: jax.Array, *, top_k: int, key: jax.Array) -> dict[str, jax.Array]:
    """Spectral norm, Frobenius norm, stable rank and top-`top_k` singular values of `x`.

    σ's come from `randomized_svd` (its defaults, accurate to float32 rounding for the
    top few singular values of the matrices met in training); ‖x‖_F is exact.
    """
    x = jnp.asarray(x, jnp.float32)
    k = min(top_k, *x.shape[-2:])
    _, s, _ = randomized_svd(x, k, key=key)
    frob = jnp.sqrt(jnp.sum(jnp.square(x)))
    spectral = s[0]
    st = jnp.where(spectral > 0, frob**2 / jnp.where(spectral > 0, spectral, 1.0) ** 2, 0.0)
    return {
        "spectral_norm": spectral,
        "frobenius_norm": frob,
        "stable_rank": st,
        "top_singular_values": s,
    }


def gradient_summary(g: jax.Array) -> dict[str, jax.Array]:
    """Nuclear rank (exact SVD) and Frobenius norm of a gradient matrix (or a stack (..., m, n))."""
    g = jnp.asarray(g, jnp.float32)
    return {
        "nuclear_rank": nuclear_rank(g),
        "frobenius_norm": jnp.sqrt(jnp.sum(jnp.square(g), axis=(-2, -1))),
    }


def layer_spectra(
    weights: Mapping[str, jax.Array],
    grads: Mapping[str, jax.Array],
    updates: Mapping[str, jax.Array] | None,
    feeding_stable_ranks: Mapping[str, jax.Array],
    *,
    key: jax.Array,
    top_k: int = 4,
) -> dict[str, dict[str, jax.Array]]:
    """Statistics of every named weight matrix: `{name: {stat: value}}`.

    Stats: `weight_*` and `update_*` (`matrix_summary`), `grad_nuclear_rank`,
    `grad_frobenius_norm`, `act_stable_rank` (from `feeding_stable_ranks`, if present) and
    `ratio` = nr(G) / st(A). `weights`, `grads`, `updates` share keys; each value is 2-D.
    """
    names = sorted(weights)
    for name in names:
        w = weights[name]
        if w.ndim != 2 or grads[name].shape != w.shape:
            raise ValueError(
                f"weight {name!r} must be a matrix with a gradient of equal shape, got "
                f"{w.shape} and {grads[name].shape}"
            )
    # Same-shaped matrices are summarised by one vmapped computation rather than one traced
    # copy per matrix: the compiled program (and its compile time) then grows with the number
    # of distinct shapes, not of layers. Keys stay per matrix: fold_in(key, index in `names`).
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, name in enumerate(names):
        by_shape.setdefault(tuple(weights[name].shape), []).append(i)
    summarise = jax.vmap(lambda x, k: matrix_summary(x, top_k=top_k, key=k))
    out: dict[str, dict[str, jax.Array]] = {}
    for indices in by_shape.values():
        group = [names[i] for i in indices]
        keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i)))(
            jnp.asarray(indices)
        )
        stacked = {"weight": summarise(jnp.stack([weights[n] for n in group]), keys[:, 0])}
        if updates is not None:
            stacked["update"] = summarise(jnp.stack([updates[n] for n in group]), keys[:, 1])
        stacked["grad"] = gradient_summary(jnp.stack([grads[n] for n in group]))
        for j, name in enumerate(group):
            stats = {f"{kind}_{s}": v[j] for kind, summary in stacked.items()
                     for s, v in summary.items()}  # fmt: skip
            if name in feeding_stable_ranks:
                st = jnp.asarray(feeding_stable_ranks[name], jnp.float32)
                stats["act_stable_rank"] = st
                stats["ratio"] = stats["grad_nuclear_rank"] / st
            out[name] = stats
    return {name: out[name] for name in names}
