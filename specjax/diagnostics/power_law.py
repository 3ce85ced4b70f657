"""Power-law fit of an empirical spectral density (WeightWatcher's α), in numpy on the host.

The ESD of a weight W is the set of eigenvalues λᵢ = σᵢ² of WᵀW. Its tail is fitted by the
method of Clauset, Shalizi & Newman (SIAM Review 51, 2009), as in Clauset's `plfit` and the
`powerlaw` package that WeightWatcher calls:

- for a candidate x_min, the continuous maximum-likelihood exponent of the n points x ≥ x_min
  is α = 1 + n / Σ ln(xᵢ / x_min) (density ∝ x^(−α));
- its Kolmogorov–Smirnov distance is D = maxₖ |(1 − (x₍ₖ₎/x_min)^(1−α)) − k/n| over the sorted
  tail x₍₀₎ ≤ … ≤ x₍ₙ₋₁₎ (the empirical CDF k/n taken just below each point, `plfit`'s and
  `powerlaw`'s convention);
- x_min is the candidate with the smallest D. Candidates are the distinct data values except
  the largest (a one-point tail has no fit), restricted to tails of at least `min_tail`
  points.

Heavy-tailed self-regularization (Martin & Mahoney, JMLR 2021) reads α ≈ 2–4 as a well-trained
layer and α > 6 as a layer whose tail is not (yet) heavy. α and D are scale invariant;
x_min scales with the eigenvalues.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """Tail exponent α, its x_min, KS distance D, tail size n_tail and data size n."""

    alpha: float
    xmin: float
    ks_distance: float
    n_tail: int
    n: int


NO_FIT = PowerLawFit(float("nan"), float("nan"), float("nan"), 0, 0)


def esd(singular_values) -> np.ndarray:
    """Eigenvalues σᵢ² of WᵀW from W's singular values, ascending, zeros and non-finite
    values dropped (a rank-deficient W has no power-law mass at 0)."""
    s = np.asarray(singular_values, np.float64).ravel()
    lam = np.sort(s[np.isfinite(s)] ** 2)
    return lam[lam > 0]


def _fit_at(tail: np.ndarray, xmin: float) -> tuple[float, float]:
    """(α, D) of the sorted tail (all ≥ xmin) for a fixed x_min."""
    n = tail.size
    log_sum = np.sum(np.log(tail / xmin))
    if not log_sum > 0:  # every point equals x_min: no exponent
        return float("nan"), float("inf")
    alpha = 1.0 + n / log_sum
    model_cdf = 1.0 - (tail / xmin) ** (1.0 - alpha)
    return alpha, float(np.max(np.abs(model_cdf - np.arange(n) / n)))


def fit_power_law(x, *, xmin: float | None = None, min_tail: int = 2) -> PowerLawFit:
    """Clauset–Shalizi–Newman fit of a power-law tail to the positive values in `x`.

    With `xmin` given only α is fitted (on x ≥ xmin). Returns NaNs (`n_tail` 0) when fewer than
    `min_tail` (≥ 2) positive finite values lie in any candidate tail. O(n²) time; fine for the
    few thousand eigenvalues of a layer.
    """
    if not isinstance(min_tail, int) or isinstance(min_tail, bool) or min_tail < 2:
        raise ValueError(f"min_tail must be an int >= 2, got {min_tail!r}")
    data = np.asarray(x, np.float64).ravel()
    data = np.sort(data[np.isfinite(data) & (data > 0)])
    if xmin is not None:
        if not (np.isfinite(xmin) and xmin > 0):
            raise ValueError(f"xmin must be a positive finite number, got {xmin!r}")
        tail = data[data >= xmin]
        if tail.size < min_tail:
            return dataclasses.replace(NO_FIT, n=data.size)
        alpha, dist = _fit_at(tail, float(xmin))
        return PowerLawFit(alpha, float(xmin), dist, tail.size, data.size)

    candidates, first_index = np.unique(data, return_index=True)
    # Drop the largest value, and any candidate whose tail is shorter than min_tail.
    keep = (np.arange(candidates.size) < candidates.size - 1) & (
        data.size - first_index >= min_tail
    )
    best = dataclasses.replace(NO_FIT, n=data.size)
    for xm, start in zip(candidates[keep], first_index[keep], strict=True):
        alpha, dist = _fit_at(data[start:], float(xm))
        if dist < best.ks_distance or np.isnan(best.ks_distance):
            best = PowerLawFit(alpha, float(xm), dist, data.size - int(start), data.size)
    return best
