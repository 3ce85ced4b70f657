"""Randomized truncated SVD (Halko, Martinsson & Tropp 2011, Algorithms 4.4 and 5.1).

Range finder: Y = x Ω with a Gaussian Ω of rank + oversample columns, then `iters`
power iterations Q ← qr(x qr(xᵀ Q)) (re-orthonormalized after every product so float32
does not lose the small directions; shifted CholeskyQR3, see below), then
the SVD of B = Qᵀ x via a thin QR of Bᵀ and the SVD of its small triangular factor.
Costs (2·iters + 3) products with a thin matrix plus small Gram/Cholesky work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specjax.linalg import _numerics, _validate


def _cholesky_qr_pass(y: jax.Array, shift_scale: float) -> jax.Array:
    """One (shifted) Cholesky QR pass: Q = Y R⁻¹ with RᵀR = YᵀY + s·I.

    The shift s = shift_scale·‖Y‖_F² (plus a tiny floor) keeps the Cholesky factor
    finite for ill-conditioned or rank-deficient Y (Fukaya et al. 2020, shifted
    CholeskyQR); a following pass restores orthonormality to round-off.
    """
    gram = _numerics.matrix_transpose(y) @ y
    k = gram.shape[-1]
    eye = jnp.eye(k, dtype=y.dtype)
    trace = jnp.trace(gram, axis1=-2, axis2=-1)[..., None, None]
    tiny = jnp.finfo(y.dtype).tiny ** 0.5
    chol = jnp.linalg.cholesky(gram + (shift_scale * trace + tiny) * eye)
    inv_lower = jax.scipy.linalg.solve_triangular(
        chol, jnp.broadcast_to(eye, chol.shape), lower=True
    )
    return y @ _numerics.matrix_transpose(inv_lower)


def _orthonormal_basis(y: jax.Array) -> jax.Array:
    """Orthonormal basis of range(Y) by shifted CholeskyQR3 (all BLAS-3).

    Householder QR of a tall-thin matrix is BLAS-2 bound on CPU (≈1 s for 2048×26 on
    the 2-core benchmark machine, 300× a matmul with it); three Cholesky passes cost
    three small Gram products.
    """
    m, k = y.shape[-2:]
    eps = float(jnp.finfo(y.dtype).eps)
    q = _cholesky_qr_pass(y, 11 * (m * k + k * (k + 1)) * eps)
    # Later passes see a near-orthonormal Q; a shift of ε·tr keeps them finite for
    # rank-deficient input while biasing column norms by only ~ε·k/2.
    q = _cholesky_qr_pass(q, eps)
    return _cholesky_qr_pass(q, eps)


def randomized_svd(
    x: jax.Array,
    rank: int,
    *,
    oversample: int = 10,
    iters: int = 4,
    key: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Top-`rank` SVD x ≈ u diag(s) vt of each matrix in (..., m, n).

    Returns u (..., m, rank), s (..., rank) descending, vt (..., rank, n), in the input
    dtype; computed in float32 (float64 for float64 input). Integer input is first converted
    to float64 with x64 enabled, float32 otherwise (never wrapped).
    `rank` is static (a Python int, 1 ≤ rank ≤ min(m, n)); the sketch has
    min(rank + oversample, min(m, n)) columns. The error shrinks like
    (σ_{rank+oversample+1}/σ_rank)^(2·iters+1) after `iters` power iterations.

    Degenerate input: zero matrix → s = 0 (u, vt orthonormal but arbitrary); NaN/Inf
    entries → all outputs NaN. The matrix is divided by max |x| first (scale-safe).
    """
    x = _validate.as_matrix(x)
    m, n = x.shape[-2:]
    rank = _validate.check_int(rank, "rank", minimum=1, maximum=min(m, n))
    oversample = _validate.check_int(oversample, "oversample", minimum=0)
    iters = _validate.check_int(iters, "iters", minimum=0)
    out_dtype = _validate.output_dtype(x.dtype)
    x = x.astype(_validate.compute_dtype(x.dtype))
    x_hat, scale, finite = _numerics.normalize_by_max(x)

    sketch = min(rank + oversample, min(m, n))
    omega = jax.random.normal(key, (n, sketch), x.dtype)
    xt = _numerics.matrix_transpose(x_hat)
    q = _orthonormal_basis(x_hat @ omega)
    for _ in range(iters):
        q = _orthonormal_basis(x_hat @ _orthonormal_basis(xt @ q))
    b_t = xt @ q  # Bᵀ = xᵀQ, (..., n, sketch)
    # SVD of the wide B through a thin QR Bᵀ = Q_b R: LAPACK's SVD of a 26×2048 matrix is
    # BLAS-2 bound (≈1 s here), the l×l SVD of R is instant.
    q_b = _orthonormal_basis(b_t)
    r = _numerics.matrix_transpose(q_b) @ b_t  # (..., sketch, sketch)
    ub, s, w_t = jnp.linalg.svd(_numerics.matrix_transpose(r), full_matrices=False)
    vt = w_t @ _numerics.matrix_transpose(q_b)
    u = q @ ub[..., :, :rank]
    s = s[..., :rank] * scale[..., 0]
    vt = vt[..., :rank, :]
    u = _numerics.nan_where_not_finite(u, finite)
    s = _numerics.nan_where_not_finite(s, finite)
    vt = _numerics.nan_where_not_finite(vt, finite)
    return u.astype(out_dtype), s.astype(out_dtype), vt.astype(out_dtype)
