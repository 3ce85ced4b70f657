"""Spectral norm ‖x‖₂ = σ_max(x) by block power iteration (default) or Lanczos.

`method="lanczos"`: Lanczos on the smaller Gram matrix A = x̂ᵀx̂ (applied implicitly as
two matvecs, never formed) with full reorthogonalization against the stored Krylov basis.
After j iterations the tridiagonal T_j = Vᵀ A V holds the Ritz values; σ_max ≈ √λ_max(T_j).
Krylov methods find λ_max to relative accuracy ε in O(log n / √ε) iterations whatever the gap
(Kuczyński & Woźniakowski 1992), which matters for square Gaussian matrices, whose top
singular values are clustered (gaps ~n^(−2/3)) and defeat power iteration.

`method="power"`: a block of `block_size` vectors is multiplied by x̂ᵀx̂ each iteration and
re-orthonormalized (QR); σ_max is read off the small Gram matrix of x̂ Q (Rayleigh–Ritz).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specjax.linalg import _numerics, _validate

DEFAULT_KEY_SEED = 0
SPECTRAL_NORM_METHODS = ("lanczos", "power")


def _ritz_sigma_max(w: jax.Array) -> jax.Array:
    """sqrt of the largest eigenvalue of wᵀw (w: (m, b))."""
    gram = w.T @ w
    return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[-1], 0.0))


def _tall(x_hat: jax.Array) -> jax.Array:
    """x̂ with m ≥ n, so the Gram side xᵀx is the smaller one."""
    return x_hat.T if x_hat.shape[0] < x_hat.shape[1] else x_hat


def _power_sigma_max(
    x_hat: jax.Array, key: jax.Array, tol: float, max_iters: int, block_size: int
) -> jax.Array:
    """σ_max of one 2-D matrix with max |entry| ≤ 1 (bounded while_loop)."""
    x_hat = _tall(x_hat)
    n = x_hat.shape[1]
    b = min(block_size, n)
    v = jax.random.normal(key, (n, b), x_hat.dtype)

    def cond(state):
        i, _, sigma_prev, sigma = state
        converged = jnp.abs(sigma - sigma_prev) <= tol * sigma
        return (i < max_iters) & ~converged

    def body(state):
        i, v, _, sigma = state
        q, _ = jnp.linalg.qr(v)
        w = x_hat @ q
        # (wᵀ x̂)ᵀ, not x̂ᵀ w: XLA:CPU's transposed matrix product is far slower here
        return i + 1, (w.T @ x_hat).T, sigma, _ritz_sigma_max(w)

    minus_one = jnp.asarray(-1.0, x_hat.dtype)
    init = (jnp.asarray(0), v, minus_one, jnp.asarray(-2.0, x_hat.dtype))
    _, _, _, sigma = jax.lax.while_loop(cond, body, init)
    return sigma


def _tridiagonal(alpha: jax.Array, beta: jax.Array, j: jax.Array) -> jax.Array:
    """T_j (k×k, zero-padded): diag α_0..α_j, off-diagonal β_0..β_{j−1}.

    The padding adds zero eigenvalues only, harmless since A is PSD and λ_max ≥ 0.
    """
    off = jnp.where(jnp.arange(beta.shape[0]) < j, beta, 0)[:-1]
    return jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)


def _lanczos_sigma_max(x_hat: jax.Array, key: jax.Array, tol: float, max_iters: int) -> jax.Array:
    """σ_max of one 2-D matrix with max |entry| ≤ 1 by Gram-side Lanczos.

    Iteration j: w = x̂ᵀ(x̂ v_j), α_j = v_jᵀw, w ← w − V(Vᵀw) twice (full reorthogonalization,
    classical Gram–Schmidt twice), β_j = ‖w‖, v_{j+1} = w/β_j. Stops when the top Ritz
    pair's residual β_j |s_top[j]| ≤ 2·tol·θ (θ = λ_max(T_j); since λ_max − θ ≤ residual,
    σ = √λ is then within ≈ tol relative), on breakdown (β_j ≈ 0: the Krylov space is
    invariant, so T_j is exact), or after min(max_iters, n) iterations (buffers are that size).
    """
    x_hat = _tall(x_hat)
    n = x_hat.shape[1]
    k = min(max_iters, n)
    dtype = x_hat.dtype
    v0 = jax.random.normal(key, (n,), dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    basis = jnp.zeros((k + 1, n), dtype).at[0].set(v0)
    tiny = jnp.asarray(n * jnp.finfo(dtype).eps, dtype)  # ‖A‖ ≤ n for max |x̂| ≤ 1

    def cond(state):
        j, _, _, _, residual, lam, broke = state
        # λ_max − θ ≤ residual and σ = √λ, so residual ≤ 2·tol·θ ⇒ σ relative error ≲ tol
        converged = residual <= 2 * tol * lam
        return (j < k) & ~converged & ~broke

    def body(state):
        j, basis, alpha, beta, _, _, _ = state
        v = basis[j]
        # row-vector products: XLA:CPU runs u @ x̂ as a fast GEMV but x̂.T @ u ~100× slower
        w = (x_hat @ v) @ x_hat
        a = v @ w
        w = w - (basis @ w) @ basis
        w = w - (basis @ w) @ basis
        b = jnp.linalg.norm(w)
        broke = b <= tiny * jnp.maximum(a, 1.0)
        v_next = jnp.where(broke, 0.0, w / jnp.where(broke, 1.0, b))
        basis = basis.at[j + 1].set(v_next)
        alpha = alpha.at[j].set(a)
        beta = beta.at[j].set(b)
        theta, s = jnp.linalg.eigh(_tridiagonal(alpha, beta, j))
        lam = jnp.maximum(theta[-1], 0.0)
        # ‖A y − θ y‖ = β_j |s_top[j]| for the Ritz pair (θ, y = V s_top); bounds λ_max − θ
        residual = b * jnp.abs(s[j, -1])
        return j + 1, basis, alpha, beta, residual, lam, broke

    zeros = jnp.zeros((k,), dtype)
    init = (
        jnp.asarray(0),
        basis,
        zeros,
        zeros,
        jnp.asarray(jnp.inf, dtype),  # residual
        jnp.asarray(0.0, dtype),  # λ_max(T_j)
        jnp.asarray(False),
    )
    return jnp.sqrt(jax.lax.while_loop(cond, body, init)[5])


def spectral_sigma_max(
    x_hat: jax.Array,
    key: jax.Array,
    tol: float,
    max_iters: int,
    block_size: int,
    method: str = "power",
) -> jax.Array:
    """Batched σ_max of pre-normalized, finite matrices x_hat (..., m, n) → (...).

    `method` defaults to "power" (block power iteration, what `stable_rank(method="power")`
    documents); `spectral_norm` passes its `method` argument.
    """
    batch = x_hat.shape[:-2]
    flat = x_hat.reshape((-1, *x_hat.shape[-2:]))
    if method == "lanczos":
        # lax.map, not vmap: a batched while_loop turns the matvecs into batched dot_generals,
        # which XLA:CPU runs ~100× slower than plain GEMVs, and each matrix stops on its own
        fn = lambda a: jax.lax.map(lambda m: _lanczos_sigma_max(m, key, tol, max_iters), a)  # noqa: E731
    else:
        fn = jax.vmap(lambda a: _power_sigma_max(a, key, tol, max_iters, block_size))
    return fn(flat).reshape(batch)


def spectral_norm(
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    tol: float = 1e-4,
    max_iters: int = 100,
    block_size: int = 8,
    method: str = "power",
) -> jax.Array:
    """Largest singular value ‖x‖₂ of each matrix in a batch (..., m, n) → (...).

    `method="power"` (default): block power iteration with `block_size` vectors;
    `"lanczos"`: Lanczos on the smaller Gram side with full reorthogonalization (fewer
    passes over x, but many small sequential kernels: slower than power on the shared
    2-core benchmark machine, see docs/notes/linalg.md; `block_size` is ignored). Power
    stops when the Ritz estimate changes by ≤ `tol` (relative) in one iteration, Lanczos when
    its residual bound certifies ≈ `tol`; both after at most `max_iters` iterations (a bounded
    `while_loop`, so NaN input cannot hang), and approach σ_max from below. `key` draws the start
    vector(s); None uses `PRNGKey(0)` (deterministic).

    Degenerate input: zero matrix → 0; NaN/Inf entries → NaN. Computed in float32
    (float64 for float64 input); the result has the compute dtype, since rounding a
    norm to bfloat16 helps nobody. Scale-safe: x is divided by max |x| first.
    """
    x = _validate.as_matrix(x)
    tol = _validate.check_nonnegative_float(tol, "tol")
    max_iters = _validate.check_int(max_iters, "max_iters", minimum=1)
    block_size = _validate.check_int(block_size, "block_size", minimum=1)
    method = _validate.check_method(method, SPECTRAL_NORM_METHODS)
    if key is None:
        key = jax.random.PRNGKey(DEFAULT_KEY_SEED)
    x = x.astype(_validate.compute_dtype(x.dtype))
    x_hat, scale, finite = _numerics.normalize_by_max(x)
    sigma = spectral_sigma_max(x_hat, key, tol, max_iters, block_size, method)
    return _numerics.nan_where_not_finite(sigma * scale[..., 0, 0], finite)
