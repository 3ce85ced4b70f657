"""Spectral clipping: soft σ ↦ σ/√(1 + σ²/c²) (SPECTRA) and hard σ ↦ min(σ, c).

Soft clip without an SVD: X(I + XᵀX/c²)^(−1/2) on the smaller Gram side. With
Ŷ = X/‖X‖_F and t = ‖X‖_F/c, I + XᵀX/c² = (1 + t²)·B where B = wI + (1 − w)ŶᵀŶ and
w = 1/(1 + t²); B's spectrum lies in [w, 1] ⊂ (0, 2), the convergence region of the
coupled Newton–Schulz iteration (Higham 2008, §6.7)
    T = (3I − ZY)/2,  Y ← YT,  Z ← TZ,   Y₀ = B, Z₀ = I  →  Z → B^(−1/2),
so soft_clip(X) = c·√(1 − w)·Ŷ·B^(−1/2). Nothing overflows for any scale of X or c.

Iterations: an eigenvalue λ of B grows by about 9/4 per iteration until it nears 1, then the
error squares, so the iteration needs about log(1/w)/log(9/4) + 3 iterations,
w ≥ 1/(1 + rank·σ_max²/c²). For σ_max/c ≥ ~100 that is ≥ ~17 iterations for small ranks; with
a fixed small `iters` the directions with small σ are not converged and come out shrunk too
much (never above the exact value, so the output stays ≤ c). Default `iters=None` therefore
iterates adaptively (bounded `while_loop`) until max|I − ZY| ≤ 1e-3, then takes 2 more
iterations (error ~1e-12 in exact arithmetic, i.e. float32 round-off), capped at `max_iters`.

Precision floor: B is formed in the working precision, and its small eigenvalues
w + (1 − w)σ̂² carry an absolute error ≈ ε, so σ near or below c come out with a
relative error of roughly ε·‖X‖_F²/c² (float32, σ log-spaced from σ_max down to c/10:
measured 4e-5 at σ_max/c = 100 and 4e-3 at σ_max/c = 1000; see docs/notes/linalg.md). Beyond
‖X‖_F/c ≈ 300 in float32 use method="svd" or float64 input.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specjax.linalg import _numerics, _validate

SOFT_CLIP_METHODS = ("newton_schulz", "svd")
ADAPTIVE_TOL = 1e-3
ADAPTIVE_EXTRA_ITERS = 2
DEFAULT_MAX_ITERS = 100


def _clip_level(c, batch_ndim: int, dtype) -> jax.Array:
    c = jnp.asarray(c, dtype)
    if c.ndim > batch_ndim:
        raise ValueError(f"c must be a scalar or have the batch shape; got shape {c.shape}")
    return c[..., None, None]


def _coupled_iteration(y, z, eye):
    zy = z @ y
    t = 1.5 * eye - 0.5 * zy
    return y @ t, t @ z, jnp.max(jnp.abs(eye - zy), axis=(-2, -1))


def _inverse_sqrt(b: jax.Array, iters: int | None, max_iters: int) -> jax.Array:
    """B^(−1/2) for symmetric B with spectrum in (0, 1], by coupled Newton–Schulz."""
    eye = jnp.broadcast_to(jnp.eye(b.shape[-1], dtype=b.dtype), b.shape)
    if iters is not None:

        def body(_, yz):
            y, z, _ = _coupled_iteration(*yz[:2], eye)
            return y, z, yz[2]

        _, z, _ = jax.lax.fori_loop(0, iters, body, (b, eye, eye))
        return z

    def cond(state):
        i, _, _, residual = state
        return (i < max_iters - ADAPTIVE_EXTRA_ITERS) & jnp.any(residual > ADAPTIVE_TOL)

    def adaptive_body(state):
        i, y, z, _ = state
        y, z, residual = _coupled_iteration(y, z, eye)
        return i + 1, y, z, residual

    batch_residual = jnp.full(b.shape[:-2], jnp.inf, b.dtype)
    _, y, z, _ = jax.lax.while_loop(cond, adaptive_body, (0, b, eye, batch_residual))
    for _ in range(ADAPTIVE_EXTRA_ITERS):
        y, z, _ = _coupled_iteration(y, z, eye)
    return z


def _soft_scale(sigma: jax.Array, c: jax.Array) -> jax.Array:
    """σ/√(1 + σ²/c²) without overflow: c/√(1 + 1/r²) for r = σ/c > 1, else σ/√(1 + r²).

    Neither branch multiplies c by r (c·r = σ), so c = ∞ gives σ, not ∞·0 = NaN.
    """
    r = sigma / c
    big = r > 1
    r_safe = jnp.where(big, r, 1)
    c_safe = jnp.where(big, c, 1)  # the unselected branch stays finite for c = ∞ (gradients)
    return jnp.where(big, c_safe / jnp.sqrt(1 + 1 / r_safe**2), sigma / jnp.sqrt(1 + r**2))


def _svd_map(x: jax.Array, c: jax.Array, sigma_map) -> jax.Array:
    out_dtype = _validate.output_dtype(x.dtype)
    work = _validate.compute_dtype(x.dtype)
    x_hat, scale, finite = _numerics.normalize_by_max(x.astype(work))
    u, s, vt = jnp.linalg.svd(x_hat, full_matrices=False)
    c = _clip_level(c, x.ndim - 2, work)
    # Clip the normalized σ against c/scale; rescale at the end (scale ≤ 3e38 fits).
    safe_scale = jnp.where(scale > 0, scale, 1)
    # c = ∞ stays ∞ without forming ∞/scale (whose gradient in scale would be ∞·0 = NaN)
    c_finite = jnp.where(jnp.isposinf(c), 1, c)
    c_hat = jnp.where(jnp.isposinf(c), jnp.inf, c_finite / safe_scale)
    s_new = sigma_map(s, c_hat[..., 0]) * safe_scale[..., 0]
    out = (u * s_new[..., None, :]) @ vt
    out = jnp.where(jnp.isposinf(c), x.astype(work), out)  # c = ∞: no clipping, exactly x
    out = jnp.where(c > 0, out, jnp.nan)
    return _numerics.nan_where_not_finite(out, finite).astype(out_dtype)


def hard_spectral_clip(x: jax.Array, c) -> jax.Array:
    """U·diag(min(σ, c))·Vᵀ for each matrix in (..., m, n) (exact, by SVD).

    `c` > 0: a scalar or an array of the batch shape; c = inf returns x unchanged. Zero →
    zero; NaN/Inf entries → NaN; a traced c ≤ 0 (not checkable at trace time) gives NaN.
    Keeps x's dtype.
    """
    x = _validate.as_matrix(x)
    _validate.check_positive(c, "c")
    return _svd_map(x, c, jnp.minimum)


def soft_spectral_clip(
    x: jax.Array,
    c,
    *,
    method: str = "newton_schulz",
    iters: int | None = None,
    max_iters: int = DEFAULT_MAX_ITERS,
) -> jax.Array:
    """(I + XXᵀ/c²)^(−1/2)·X = X(I + XᵀX/c²)^(−1/2): each σ ↦ σ/√(1 + σ²/c²) < min(σ, c).

    method="newton_schulz" (no SVD): coupled Newton–Schulz on the smaller Gram;
    `iters=None` adapts to the scale (converged to float32 round-off, at most
    `max_iters` iterations, ≈ log(1 + rank·σ_max²/c²)/log(9/4) + 3); a fixed `iters` is
    differentiable but under-converged when σ_max/c is large (see module docstring).
    method="svd": exact. `c` > 0: scalar or batch-shaped; c = inf returns x unchanged (the
    limit σ/√(1 + σ²/c²) → σ). Zero → zero; NaN/Inf entries → NaN; traced c ≤ 0 → NaN.
    Keeps x's dtype (computes in float32 or float64).
    """
    _validate.check_method(method, SOFT_CLIP_METHODS)
    x = _validate.as_matrix(x)
    _validate.check_positive(c, "c")
    if iters is not None:
        iters = _validate.check_int(iters, "iters", minimum=1)
    max_iters = _validate.check_int(max_iters, "max_iters", minimum=ADAPTIVE_EXTRA_ITERS + 1)
    if method == "svd":
        return _svd_map(x, c, _soft_scale)

    out_dtype = _validate.output_dtype(x.dtype)
    work = _validate.compute_dtype(x.dtype)
    x_hat, scale, finite = _numerics.normalize_by_max(x.astype(work))
    transposed = x.shape[-2] < x.shape[-1]
    if transposed:  # make it tall so the Gram ŶᵀŶ is the small side
        x_hat = _numerics.matrix_transpose(x_hat)
    frob = jnp.sqrt(jnp.sum(jnp.square(x_hat), axis=(-2, -1), keepdims=True))
    y_hat = x_hat / jnp.where(frob > 0, frob, 1)
    c_arr = _clip_level(c, x.ndim - 2, work)
    norm_x = frob * scale  # ‖X‖_F
    t = norm_x / c_arr  # ‖X‖_F / c, may be inf for extreme ratios (then w = 0); 0 for c = ∞
    w = 1 / (1 + t * t)
    # c·√(1 − w) = c·t/√(1 + t²): c/√(1 + 1/t²) for t > 1, ‖X‖_F/√(1 + t²) otherwise, so that
    # neither t² → 0 nor t² → ∞ loses it and c = ∞ gives ‖X‖_F, not ∞·0 = NaN
    big = t > 1
    t_safe = jnp.where(big, t, 1)
    c_safe = jnp.where(big, c_arr, 1)  # finite in the unselected branch (gradients at c = ∞)
    coef = jnp.where(big, c_safe / jnp.sqrt(1 + 1 / t_safe**2), norm_x / jnp.sqrt(1 + t * t))
    gram = _numerics.matrix_transpose(y_hat) @ y_hat
    eye = jnp.eye(gram.shape[-1], dtype=work)
    b = w * eye + (1 - w) * gram
    z = _inverse_sqrt(b, iters, max_iters)
    out = coef * (y_hat @ z)
    if transposed:
        out = _numerics.matrix_transpose(out)
    out = jnp.where(jnp.isposinf(c_arr), x.astype(work), out)  # c = ∞: no clipping, exactly x
    out = jnp.where(c_arr > 0, out, jnp.nan)
    return _numerics.nan_where_not_finite(out, finite).astype(out_dtype)
