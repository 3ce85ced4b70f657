"""Test matrices with known spectra for the linear-algebra tests (numpy float64)."""

from __future__ import annotations

import numpy as np


def orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return q


def with_spectrum(rng: np.random.Generator, m: int, n: int, sigma) -> np.ndarray:
    """U diag(sigma) Vᵀ with Haar-like random U (m×k), V (n×k), k = len(sigma)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    k = sigma.shape[0]
    return (orthonormal(rng, m, k) * sigma) @ orthonormal(rng, n, k).T


SPECTRA = {
    "decaying": lambda k: np.exp(-np.arange(k) / 4.0),
    "flat": lambda k: np.ones(k),
    "spiked": lambda k: np.concatenate([[50.0, 20.0], np.full(k - 2, 1.0)]),
    "gaussian": None,  # a plain standard-normal matrix
}


def spectrum_matrix(kind: str, m: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if SPECTRA[kind] is None:
        return rng.standard_normal((m, n))
    return with_spectrum(rng, m, n, SPECTRA[kind](min(m, n)))


def svals(x) -> np.ndarray:
    return np.linalg.svd(np.asarray(x, dtype=np.float64), compute_uv=False)
