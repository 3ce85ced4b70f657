"""Spectral linear algebra: effective ranks, spectral norm, randomized SVD, polar factor
and spectral clipping. Pure JAX; batched over leading axes (..., m, n); jit/vmap-able.
"""

from specjax.linalg.clip import hard_spectral_clip, soft_spectral_clip
from specjax.linalg.norms import spectral_norm
from specjax.linalg.polar import (
    MUON_ITERS,
    MUON_QUINTIC,
    POLAR_EXPRESS_ITERS,
    newton_schulz,
    polar,
    polar_express_coefficients,
)
from specjax.linalg.ranks import (
    entropy_effective_rank,
    kernel_effective_rank,
    nuclear_rank,
    stable_rank,
)
from specjax.linalg.rsvd import randomized_svd

__all__ = [
    "MUON_ITERS",
    "MUON_QUINTIC",
    "POLAR_EXPRESS_ITERS",
    "entropy_effective_rank",
    "hard_spectral_clip",
    "kernel_effective_rank",
    "newton_schulz",
    "nuclear_rank",
    "polar",
    "polar_express_coefficients",
    "randomized_svd",
    "soft_spectral_clip",
    "spectral_norm",
    "stable_rank",
]
