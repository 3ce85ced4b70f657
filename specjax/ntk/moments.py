"""Kernel moments of an n×n Gram matrix and the large-n limit r_∞ of its effective rank.

For i.i.d. inputs x₁..xₙ and a kernel k, write
    μ = E[k(x, x)],   ν = E[k(x, x)²],   m₂ = E[k(x, x')²]   (x, x' independent).
Then E[tr K] = nμ, E[(tr K)²] = nν + n(n−1)μ² and E‖K‖_F² = nν + n(n−1)m₂, so

    r_eff(n) = (tr K)² / ‖K‖_F²  ≈  (ν + (n−1)μ²) / (ν + (n−1)m₂)   →   r_∞ = μ² / m₂.

The first form (a ratio of expectations, exact to first order in the delta method) is
the finite-n correction: the curve the measured r_eff(n) should follow. All three
moments are estimated without bias from the same n samples by U-statistics:
    μ² ← Σ_{i≠j} K_ii K_jj / (n(n−1)),   m₂ ← Σ_{i≠j} K_ij² / (n(n−1)),   ν ← Σ K_ii² / n
(the naive (tr K / n)² would be biased upward by Var k(x, x)/n). The standard error of
r̂_∞ is the delete-one-example jackknife, computed in O(n²) from row sums.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from specjax.linalg import kernel_effective_rank


class KernelMoments(NamedTuple):
    """U-statistic moment estimates of a kernel from an n×n Gram matrix (see module doc)."""

    n: jax.Array
    diag_mean: jax.Array  # μ̂
    diag_sq_mean: jax.Array  # ν̂
    diag_mean_sq: jax.Array  # unbiased μ²
    offdiag_sq_mean: jax.Array  # m̂₂
    r_inf: jax.Array  # μ²/m₂
    r_inf_stderr: jax.Array  # jackknife over examples

    def predicted_effective_rank(self, n: jax.Array | int) -> jax.Array:
        """Moment prediction (ν + (n−1)μ²) / (ν + (n−1)m₂) of r_eff at sample size n."""
        n = jnp.asarray(n, self.diag_mean.dtype)
        num = self.diag_sq_mean + (n - 1) * self.diag_mean_sq
        return num / (self.diag_sq_mean + (n - 1) * self.offdiag_sq_mean)


def _check_gram(k: jax.Array) -> jax.Array:
    if not hasattr(k, "shape"):
        raise ValueError(f"k must be a square (n, n) array, got {type(k)}")
    k = jnp.asarray(k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"k must be a square (n, n) array, got shape {k.shape}")
    if k.shape[0] < 3:
        raise ValueError(f"kernel moments need n ≥ 3 samples (jackknife), got n = {k.shape[0]}")
    return k


@jax.jit
def _moments(k: jax.Array) -> KernelMoments:
    k = k.astype(jnp.promote_types(k.dtype, jnp.float32))
    # Scale out the magnitude first: every moment ratio below is scale invariant.
    k = k / jnp.maximum(jnp.max(jnp.abs(k)), jnp.finfo(k.dtype).tiny)
    n = k.shape[0]
    d = jnp.diag(k)
    d1, d2 = jnp.sum(d), jnp.sum(d**2)
    row_off_sq = jnp.sum(k**2, axis=1) - d**2  # Σ_{j≠i} K_ij²
    s_off = jnp.sum(row_off_sq)
    pairs = n * (n - 1)
    mu_sq = (d1**2 - d2) / pairs
    m2 = s_off / pairs
    # Delete-one jackknife of r̂_∞: removing example i removes its row and column.
    pairs_loo = (n - 1) * (n - 2)
    d1_loo, d2_loo = d1 - d, d2 - d**2
    r_loo = ((d1_loo**2 - d2_loo) / pairs_loo) / ((s_off - 2 * row_off_sq) / pairs_loo)
    stderr = jnp.sqrt((n - 1) / n * jnp.sum((r_loo - jnp.mean(r_loo)) ** 2))
    return KernelMoments(
        n=jnp.asarray(n),
        diag_mean=d1 / n,
        diag_sq_mean=d2 / n,
        diag_mean_sq=mu_sq,
        offdiag_sq_mean=m2,
        r_inf=mu_sq / m2,
        r_inf_stderr=stderr,
    )


def kernel_moments(k: jax.Array) -> KernelMoments:
    """μ, ν, unbiased μ², m₂, r̂_∞ = μ²/m₂ and its jackknife standard error, from K (n, n).

    Moments are returned for K divided by max|K| (r_∞ and the prediction are unaffected).
    """
    return _moments(_check_gram(k))


def ntk_rank_summary(k: jax.Array) -> dict[str, float]:
    """r_eff = tr(K)²/‖K‖_F², r̂_∞ and its jackknife standard error, as floats.

    (The moment prediction evaluated at the sample's own n reproduces r_eff exactly, an
    identity of the U-statistics; it is informative only at other n.)
    """
    m = kernel_moments(k)
    return {
        "n": float(k.shape[0]),
        "r_eff": float(kernel_effective_rank(k)),
        "r_inf": float(m.r_inf),
        "r_inf_stderr": float(m.r_inf_stderr),
    }
