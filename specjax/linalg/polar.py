"""Orthogonal polar factor U Vᵀ of x = U Σ Vᵀ by odd-polynomial (Newton–Schulz) iterations.

Each iteration applies an odd quintic p(σ) = aσ + bσ³ + cσ⁵ to every singular value at once:
X ← aX + (bA + cA²)X with A = XXᵀ, iterated on the smaller Gram side (tall matrices are
transposed) so A is min(m, n)². X is first scaled to ‖X‖_F = 1, which puts every σ in
(0, 1].

Coefficient tables (data, so optimizers can plug in their own):
- `MUON_QUINTIC` (3.4445, −4.7750, 2.0315): Keller Jordan's Muon quintic, applied 5
  times. Tuned for the slope at 0, not for convergence: singular values end in a band
  around 1, not at 1 — measured in float32, every σ ≥ 2e-3‖X‖_F ends in [0.68, 1.21]
  (the band starts at ≈1.5e-3‖X‖_F; σ = 1e-3‖X‖_F ends at ≈0.47). Fast and approximate.
- `polar_express_coefficients(iters)`: Polar Express (Amsel, Persson, Musco & Gower
  2025, arXiv:2505.16932). Iteration k uses the minimax-optimal odd quintic for sign(σ) on
  the interval [l_k, u_k] the previous iterations left, starting from [1e-3, 1], with the
  paper's cushion (0.02) and safety factor (1 + 1e-2, also applied to the Frobenius
  scaling). We derive the table here by the Remez exchange (float64 numpy, cached);
  with safety 2e-2 and 5 iterations it reproduces the table published with modded-nanogpt
  and the authors' repository github.com/NoahAmsel/PolarExpress (checked in the tests).

Two forms of the same iteration (`form=`):
- "standard" iterates on X: each step costs 4m²n + 2m³ FLOPs (m ≤ n).
- "gram" iterates on the m×m Gram matrix (Gram Newton–Schulz: Zhang, Amsel, Chen & Dao 2026,
  tridao.me/blog/2026/gram-newton-schulz). X_{k+1} = Q_k X_k with Q_k = aI + bA_k + cA_k²
  symmetric and commuting with A_k, so A_{k+1} = Q_k A_k Q_k and X_K = (Q_{K-1}⋯Q_0) X_0:
  X is touched only to form A and to apply the accumulated product. Every `restart_every`
  iterations X is re-formed and A recomputed from it ("restarting"), which keeps rounding
  errors in the accumulated product from growing: in float32 with restarts every 3 the
  result is as close to a float64 reference as the standard form's (tests/test_polar_gram.py);
  without restarts it was 40× further on decaying spectra.
- "auto" picks whichever costs fewer FLOPs for the shape (`gram_is_cheaper`): Gram for
  aspect ratios of about 2 and up (128×512, 5 Muon iterations: 60 m³ against 90 m³).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from specjax.linalg import _numerics, _validate

MUON_QUINTIC: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
MUON_ITERS = 5
POLAR_EXPRESS_ITERS = 8
POLAR_EXPRESS_LOWER = 1e-3
POLAR_EXPRESS_SAFETY = 1e-2
POLAR_EXPRESS_CUSHION = 0.02
POLAR_METHODS = ("newton_schulz", "polar_express", "svd")
NS_FORMS = ("standard", "gram", "auto")
GRAM_RESTART_EVERY = 3
DEFAULT_EPS = 1e-7


def _minimax_quintic(lo: float, hi: float) -> tuple[float, float, float]:
    """Odd quintic p minimizing max_{σ∈[lo,hi]} |1 − p(σ)| (Remez exchange, float64).

    The optimum equioscillates at lo, at p's two interior critical points and at hi;
    alternately solve for (a, b, c, E) on the current points and move the interior
    points to the new critical points.
    """
    if lo / hi >= 1 - 5e-6:
        # Interval collapsed to a point: the limit is the classic Newton–Schulz
        # quintic (15σ − 10σ³ + 3σ⁵)/8 rescaled to hi.
        return 15 / 8 / hi, -10 / 8 / hi**3, 3 / 8 / hi**5
    inner = np.array([(3 * lo + hi) / 4, (lo + 3 * hi) / 4])
    error, previous = np.inf, None
    while previous is None or abs(previous - error) > 1e-15:
        previous = error
        nodes = np.array([lo, inner[0], inner[1], hi])
        signs = np.array([1.0, -1.0, 1.0, -1.0])
        system = np.stack([nodes, nodes**3, nodes**5, signs], axis=1)
        a, b, c, error = np.linalg.solve(system, np.ones(4))
        # p'(σ) = a + 3bσ² + 5cσ⁴ = 0 → σ² = (−3b ∓ √(9b² − 20ac)) / (10c)
        root = np.sqrt(9 * b * b - 20 * a * c)
        inner = np.sqrt((-3 * b + np.array([-root, root])) / (10 * c))
    return float(a), float(b), float(c)


@functools.lru_cache(maxsize=64)
def polar_express_coefficients(
    iters: int,
    *,
    lower: float = POLAR_EXPRESS_LOWER,
    safety: float = POLAR_EXPRESS_SAFETY,
    cushion: float = POLAR_EXPRESS_CUSHION,
) -> tuple[tuple[float, float, float], ...]:
    """Per-iteration Polar Express quintic coefficients ((a, b, c), ...) of length `iters`.

    Greedy composition: iteration k is the minimax quintic on [max(l_k, cushion·u_k), u_k],
    recentred on 1 over [l_k, u_k] when the cushion is active, divided by the safety
    factor (a/s, b/s³, c/s⁵, every iteration but the last); then l_{k+1} = p(l_k),
    u_{k+1} = 2 − l_{k+1}. `lower` is the smallest σ/‖X‖_F the table is designed for.
    """
    iters = _validate.check_int(iters, "iters", minimum=1)
    if not 0 < lower < 1:
        raise ValueError(f"lower must be in (0, 1); got {lower}")
    if not 0 <= cushion < 1:
        raise ValueError(f"cushion must be in [0, 1); got {cushion}")
    _validate.check_nonnegative_float(safety, "safety")
    s = 1 + safety
    lo, hi = lower, 1.0
    table = []
    for k in range(iters):
        a, b, c = _minimax_quintic(max(lo, cushion * hi), hi)
        if cushion * hi > lo:
            p_lo = a * lo + b * lo**3 + c * lo**5
            p_hi = a * hi + b * hi**3 + c * hi**5
            recentre = 2 / (p_lo + p_hi)
            a, b, c = a * recentre, b * recentre, c * recentre
        if k < iters - 1:
            a, b, c = a / s, b / s**3, c / s**5
        table.append((a, b, c))
        lo = a * lo + b * lo**3 + c * lo**5
        hi = 2 - lo
    return tuple(table)


def _coefficient_table(coefficients) -> np.ndarray | jax.Array:
    if isinstance(coefficients, jax.core.Tracer):
        table = coefficients
    else:
        table = np.asarray(coefficients, dtype=np.float64)
    if table.ndim != 2 or table.shape[-1] != 3 or table.shape[0] < 1:
        raise ValueError(
            "coefficients must have shape (iters, 3) with iters >= 1, one (a, b, c) row "
            f"per iteration; got shape {tuple(table.shape)}"
        )
    return table


def _standard_flops(m: int, n: int, iters: int) -> int:
    return iters * (4 * m * m * n + 2 * m**3)


def _gram_flops(m: int, n: int, iters: int, restart_every: int) -> int:
    segments = [min(restart_every, iters - start) for start in range(0, iters, restart_every)]
    # Per segment: form A and apply the product (2 · 2m²n); A² every iteration, the product
    # update after the first, the A update before the last (2m³, 2m³, 4m³).
    return sum(4 * m * m * n + m**3 * (8 * length - 6) for length in segments)


def gram_is_cheaper(
    shape: Sequence[int], iters: int, restart_every: int = GRAM_RESTART_EVERY
) -> bool:
    """Whether the Gram form needs fewer FLOPs than the standard one for (..., m, n)."""
    m, n = sorted(shape[-2:])
    return _gram_flops(m, n, iters, restart_every) < _standard_flops(m, n, iters)


def _standard_iterations(y: jax.Array, rows) -> jax.Array:
    for a, b, c in rows:
        gram = y @ _numerics.matrix_transpose(y)
        y = a * y + (b * gram + c * (gram @ gram)) @ y
    return y


def _gram_iterations(y: jax.Array, rows, restart_every: int) -> jax.Array:
    eye = jnp.eye(y.shape[-2], dtype=y.dtype)
    for start in range(0, len(rows), restart_every):
        segment = rows[start : start + restart_every]
        gram = y @ _numerics.matrix_transpose(y)
        product = None
        for i, (a, b, c) in enumerate(segment):
            poly = a * eye + b * gram + c * (gram @ gram)
            product = poly if product is None else poly @ product
            if i < len(segment) - 1:
                gram = poly @ (gram @ poly)
        y = product @ y
    return y


def newton_schulz(
    x: jax.Array,
    coefficients: Sequence[Sequence[float]] | np.ndarray | jax.Array,
    *,
    dtype: jnp.dtype | None = None,
    eps: float = DEFAULT_EPS,
    safety: float = 0.0,
    form: str = "standard",
    restart_every: int = GRAM_RESTART_EVERY,
) -> jax.Array:
    """Apply X ← aₖX + (bₖA + cₖA²)X, A = XXᵀ, for each row (aₖ, bₖ, cₖ) of `coefficients`.

    x (..., m, n) is first divided by max |x| (scale-safe), then by
    ‖x‖_F·(1 + safety) + eps, so a zero matrix maps to zero, not NaN. Iterates on the
    smaller Gram side. `dtype` is the iteration dtype (e.g. jnp.bfloat16; default
    float32, float64 for float64 input); the result has x's dtype. Concrete tables are
    unrolled; a traced (iters, 3) table runs under `lax.scan` in the standard form ("gram"
    needs a concrete table; "auto" then falls back to "standard"). `form` and
    `restart_every`: see the module docstring. NaN/Inf input → NaN.
    """
    x = _validate.as_matrix(x)
    table = _coefficient_table(coefficients)
    eps = _validate.check_nonnegative_float(eps, "eps")
    safety = _validate.check_nonnegative_float(safety, "safety")
    _validate.check_method(form, NS_FORMS, name="form")
    restart_every = _validate.check_int(restart_every, "restart_every", minimum=1)
    traced = not isinstance(table, np.ndarray)
    if form == "gram" and traced:
        raise ValueError(
            "form='gram' needs a concrete coefficient table (its restarts are unrolled); got a "
            "traced one. Pass form='standard' or 'auto', which run a traced table under lax.scan"
        )
    if form == "auto":
        cheaper = not traced and gram_is_cheaper(x.shape, table.shape[0], restart_every)
        form = "gram" if cheaper else "standard"
    out_dtype = _validate.output_dtype(x.dtype)
    work_dtype = _validate.compute_dtype(x.dtype) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(work_dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype!r}")

    x_hat, _, finite = _numerics.normalize_by_max(x.astype(_validate.compute_dtype(x.dtype)))
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x_hat = _numerics.matrix_transpose(x_hat)
    frob = jnp.sqrt(jnp.sum(jnp.square(x_hat), axis=(-2, -1), keepdims=True))
    y = (x_hat / (frob * (1 + safety) + eps)).astype(work_dtype)

    if traced:

        def iteration(y, abc):
            abc = abc.astype(work_dtype)
            return _standard_iterations(y, [(abc[0], abc[1], abc[2])]), None

        y, _ = jax.lax.scan(iteration, y, table)
    else:
        rows = [tuple(float(v) for v in row) for row in table]
        if form == "gram":
            y = _gram_iterations(y, rows, restart_every)
        else:
            y = _standard_iterations(y, rows)

    if transposed:
        y = _numerics.matrix_transpose(y)
    return _numerics.nan_where_not_finite(y, finite).astype(out_dtype)


def _polar_svd(x: jax.Array) -> jax.Array:
    """U·diag(σ > tol)·Vᵀ: the partial isometry, so zero singular values map to zero."""
    out_dtype = _validate.output_dtype(x.dtype)
    work = _validate.compute_dtype(x.dtype)
    x_hat, _, finite = _numerics.normalize_by_max(x.astype(work))
    u, s, vt = jnp.linalg.svd(x_hat, full_matrices=False)
    tol = max(x.shape[-2:]) * jnp.finfo(work).eps * s[..., :1]
    keep = (s > tol).astype(work)
    out = (u * keep[..., None, :]) @ vt
    return _numerics.nan_where_not_finite(out, finite).astype(out_dtype)


def polar(
    x: jax.Array,
    *,
    method: str = "newton_schulz",
    iters: int | None = None,
    dtype: jnp.dtype | None = None,
    eps: float = DEFAULT_EPS,
    form: str = "standard",
) -> jax.Array:
    """Orthogonal polar factor U Vᵀ of each matrix in (..., m, n) (same shape and dtype).

    - "newton_schulz": `MUON_QUINTIC` for `iters` (default 5) iterations. Approximate:
      singular values land in a band around 1: [0.68, 1.21] for σ ≥ 2e-3‖x‖_F (float32,
      5 iterations; the band starts at ≈1.5e-3‖x‖_F, σ = 1e-3‖x‖_F ends at ≈0.47).
    - "polar_express": `polar_express_coefficients(iters)` (default 8), accurate to
      ~1e-3 in σ for σ/‖x‖_F ≥ 1e-3 after 8 iterations (see docs/notes/linalg.md).
    - "svd": exact U·Vᵀ over singular values above max(m, n)·ε·σ_max (reference).
    `dtype` sets the iteration dtype of the polynomial methods (e.g. jnp.bfloat16); `form`
    ("standard" | "gram" | "auto") how they iterate (module docstring; same result in exact
    arithmetic). "svd" ignores `form` but still checks it.

    Degenerate input: zero → zero; rank-r x → a rank-r partial isometry (directions of
    σ = 0 stay 0); 1×n / n×1 → x/‖x‖; NaN/Inf → NaN; any scale from 1e-30 to 1e30.
    """
    _validate.check_method(method, POLAR_METHODS)
    _validate.check_method(form, NS_FORMS, name="form")
    x = _validate.as_matrix(x)
    if method == "svd":
        if iters is not None:
            _validate.check_int(iters, "iters", minimum=1)
        return _polar_svd(x)
    if method == "newton_schulz":
        iters = MUON_ITERS if iters is None else _validate.check_int(iters, "iters")
        return newton_schulz(x, (MUON_QUINTIC,) * iters, dtype=dtype, eps=eps, form=form)
    iters = POLAR_EXPRESS_ITERS if iters is None else _validate.check_int(iters, "iters")
    return newton_schulz(
        x,
        polar_express_coefficients(iters),
        dtype=dtype,
        eps=eps,
        safety=POLAR_EXPRESS_SAFETY,
        form=form,
    )
