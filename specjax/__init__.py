"""specjax: spectral linear algebra, spectral optimizers and spectral diagnostics in JAX.

The linear-algebra core is re-exported here; the optimizers, diagnostics and NTK tools
live in `specjax.optim`, `specjax.diagnostics` and `specjax.ntk` (run directories are read by
`experiments.rundir`).
"""

from specjax.linalg import (
    entropy_effective_rank,
    hard_spectral_clip,
    kernel_effective_rank,
    nuclear_rank,
    polar,
    randomized_svd,
    soft_spectral_clip,
    spectral_norm,
    stable_rank,
)

__version__ = "0.6.0"

__all__ = [
    "entropy_effective_rank",
    "hard_spectral_clip",
    "kernel_effective_rank",
    "nuclear_rank",
    "polar",
    "randomized_svd",
    "soft_spectral_clip",
    "spectral_norm",
    "stable_rank",
]
