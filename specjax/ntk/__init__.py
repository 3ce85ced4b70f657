"""Empirical neural tangent kernel: exact blocked Gram, kernel moments, sketched effective rank.

- `exact_ntk(apply_fn, params, x, output=...)`: K (n, n) by blocked Jacobian contractions.
- `kernel_moments(k)`: μ, ν, m₂, r_∞ = E[k(x,x)]²/E[k(x,x')²] and the finite-n prediction.
- `sketched_effective_rank(apply_fn, params, x, key, sketch_width=...)`: r_eff from
  output probes + CountSketch in O(n·s) memory, bias-free via independent sketch pairs;
  `effective_rank_by_prefix` reads it off every leading n of one sketch.

Output conventions ("trace", "logit", "probe") are defined in `specjax.ntk.features`.
"""

from specjax.ntk.exact import exact_ntk
from specjax.ntk.features import OUTPUT_CONVENTIONS
from specjax.ntk.moments import KernelMoments, kernel_moments, ntk_rank_summary
from specjax.ntk.sketch import (
    SketchEstimate,
    countsketch,
    effective_rank_by_prefix,
    effective_rank_from_sketches,
    sketch_gradients,
    sketched_effective_rank,
)

__all__ = [
    "OUTPUT_CONVENTIONS",
    "KernelMoments",
    "SketchEstimate",
    "countsketch",
    "effective_rank_by_prefix",
    "effective_rank_from_sketches",
    "exact_ntk",
    "kernel_moments",
    "ntk_rank_summary",
    "sketch_gradients",
    "sketched_effective_rank",
]
