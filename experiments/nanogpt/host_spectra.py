"""The per-layer statistics of `specjax.diagnostics.layer_spectra`, computed on the host.

Logging them from a jitted function meant compiling randomized SVDs, exact SVDs and power
iterations at every cold start, several CPU-seconds for milliseconds of work: the GPT's
matrices have a few hundred rows and columns, where LAPACK (numpy, float64) needs about a
millisecond each and nothing is compiled. Same statistics, names and order as `layer_spectra`,
returned as float32; the σ's are exact rather than sketched:

- `weight_*`, `update_*`: spectral norm σ₁, Frobenius norm, stable rank ‖X‖_F² / σ₁², top-k σ;
- `grad_nuclear_rank` nr(G) = (Σσᵢ)² / Σσᵢ², `grad_frobenius_norm`;
- `act_stable_rank` st(A) of the feeding activation and `ratio` = nr(G) / st(A).

σᵢ² are the eigenvalues of the smaller Gram matrix XᵀX or XXᵀ, in float64: two to three times
faster than an SVD here, and off by at most ~√ε₆₄·σ₁ ≈ 1e-8·σ₁, far below float32 rounding of
the statistics. A zero matrix has stable and nuclear rank 0; NaN/Inf entries give NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # reads the loaded libraries once (~10 ms)


def one_blas_thread():
    """A context with one BLAS thread: the matrices are small, and a BLAS thread pool next to
    XLA's threads on a busy 2-core machine was seen to take seconds for milliseconds of work."""
    return _blas_controller().limit(limits=1, user_api="blas")


def gram_eigenvalues(gram_KxDxD: np.ndarray) -> np.ndarray:
    """Eigenvalues (K, D) of a stack of symmetric PSD matrices, descending, clipped at 0."""
    with one_blas_thread():
        eig = np.linalg.eigvalsh(np.asarray(gram_KxDxD, np.float64))
    return np.maximum(eig[:, ::-1], 0.0)


def singular_values(x_KxMxN: np.ndarray) -> np.ndarray:
    """All singular values (K, min(M, N)) of a stack of matrices, descending, in float64."""
    x = np.asarray(x_KxMxN, np.float64)
    tall = x.shape[-2] >= x.shape[-1]
    with one_blas_thread():  # one BLAS product per matrix: numpy's stacked matmul skips BLAS
        gram = np.stack([m.T @ m if tall else m @ m.T for m in x])
    return np.sqrt(gram_eigenvalues(gram))


def _ratio_or_zero(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _by_shape(arrays: Mapping[str, np.ndarray]) -> list[list[str]]:
    """Names grouped by the shape of their array, in order of first appearance."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for name, x in arrays.items():
        groups.setdefault(np.shape(x), []).append(name)
    return list(groups.values())


def gram_stable_ranks(grams: Mapping[str, np.ndarray]) -> dict[str, np.float32]:
    """st(A) = ‖A‖_F² / σ₁² = tr(G) / λ_max(G) of each activation, from its Gram G = AᵀA."""
    from scipy.linalg import eigvalsh  # only λ_max: half the time of all of numpy's

    out = {}
    with one_blas_thread():
        for name, g in grams.items():
            g = np.asarray(g, np.float32)  # as the device computed it; λ_max to ~1e-7 relative
            if not np.isfinite(g).all():
                out[name] = np.float32(np.nan)
                continue
            d = g.shape[-1]
            lam_max = float(eigvalsh(g, subset_by_index=[d - 1, d - 1], driver="evr")[0])
            trace = float(np.trace(g, dtype=np.float64))
            out[name] = np.float32(_ratio_or_zero(trace, max(lam_max, 0.0)))
    return out


def summaries(x_KxMxN: np.ndarray, *, top_k: int) -> tuple[dict, dict]:
    """(matrix summary, gradient summary) of each matrix of a stack, float32 arrays of (K, ...).

    Matrix: `spectral_norm`, `frobenius_norm`, `stable_rank`, `top_singular_values` (K, k) with
    k = min(top_k, M, N). Gradient: `nuclear_rank`, `frobenius_norm`.
    """
    x = np.asarray(x_KxMxN, np.float64)
    finite = np.isfinite(x).all(axis=(-2, -1))
    s = singular_values(np.where(finite[:, None, None], x, 0.0))  # LAPACK rejects NaN
    frob_sq = np.sum(np.square(x), axis=(-2, -1))
    k = min(top_k, *x.shape[-2:])
    nan = np.where(finite, 0.0, np.nan)  # added to every statistic: NaN where not finite
    matrix = {
        "spectral_norm": s[:, 0] + nan,
        "frobenius_norm": np.sqrt(frob_sq) + nan,
        "stable_rank": _ratio_or_zero(frob_sq, s[:, 0] ** 2) + nan,
        "top_singular_values": s[:, :k] + nan[:, None],
    }
    grad = {
        "nuclear_rank": _ratio_or_zero(np.sum(s, axis=-1) ** 2, np.sum(s**2, axis=-1)) + nan,
        "frobenius_norm": matrix["frobenius_norm"],
    }
    as32 = lambda d: {n: v.astype(np.float32) for n, v in d.items()}  # noqa: E731
    return as32(matrix), as32(grad)


def layer_spectra(
    weights: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    updates: Mapping[str, np.ndarray] | None,
    feeding_stable_ranks: Mapping[str, float],
    *,
    top_k: int = 4,
) -> dict[str, dict[str, np.float32 | np.ndarray]]:
    """`{name: {stat: value}}` of every named weight, as `diagnostics.layer_spectra` gives.

    `weights`, `grads`, `updates` share keys, each value a matrix (numpy or host-readable
    arrays); names come out sorted; same-shaped matrices go through LAPACK as one stack.
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    names = sorted(weights)
    host = {n: (np.asarray(weights[n]), np.asarray(grads[n])) for n in names}
    for name, (w, g) in host.items():
        if w.ndim != 2 or g.shape != w.shape:
            raise ValueError(
                f"weight {name!r} must be a matrix with a gradient of equal shape, got "
                f"{w.shape} and {g.shape}"
            )
    out: dict[str, dict] = {}
    for group in _by_shape({n: host[n][0] for n in names}):
        stacked = {"weight": summaries(np.stack([host[n][0] for n in group]), top_k=top_k)[0]}
        if updates is not None:
            u = np.stack([np.asarray(updates[n]) for n in group])
            stacked["update"] = summaries(u, top_k=top_k)[0]
        stacked["grad"] = summaries(np.stack([host[n][1] for n in group]), top_k=top_k)[1]
        for j, name in enumerate(group):
            stats = {f"{kind}_{s}": v[j] for kind, summary in stacked.items()
                     for s, v in summary.items()}  # fmt: skip
            if name in feeding_stable_ranks:
                st = np.float32(feeding_stable_ranks[name])
                stats["act_stable_rank"] = st
                stats["ratio"] = np.float32(np.float64(stats["grad_nuclear_rank"]) / st)
            out[name] = stats
    return {name: out[name] for name in names}
