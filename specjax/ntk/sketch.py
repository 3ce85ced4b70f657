"""Sketched NTK effective rank: random output probes + CountSketch, O(n·s) memory.

Estimator (derived here; the paper's code is not public). Notation: J_i = ∂f(x_i)/∂θ ∈
ℝ^{C×P}, target kernel K (one of the output conventions of `specjax.ntk.features`).

1. Output probes. Sketch a ∈ {1..M} draws R probes v_{a,r} ∈ ℝ^C with E[v vᵀ] = I
   (Rademacher or N(0, I)) for the "trace" convention; "logit"/"probe" use their one
   fixed direction (R = 1, no probe randomness). g_{i,a,r} = J_iᵀ v_{a,r} ∈ ℝᴾ is one
   vector-Jacobian product, and (1/R) Σ_r ⟨g_{i,a,r}, g_{j,a,r}⟩ is unbiased for K_ij.
2. CountSketch. Sketch a draws a hash h_a: [P] → [s] and signs σ_a: [P] → {±1},
   all independent uniform; (S_a g)_t = Σ_{p: h_a(p)=t} σ_a(p) g_p. Then
   E⟨S_a g, S_a g'⟩ = ⟨g, g'⟩ with Var = (‖g‖²‖g'‖² + ⟨g,g'⟩² − 2Σ_p g_p² g'_p²)/s.
   We keep z_{i,a} = (S_a g_{i,a,r})_r / √R ∈ ℝ^{R·s}, so K̂ᵃ_ij = ⟨z_{i,a}, z_{j,a}⟩ is
   unbiased for K_ij, and d_{a,i} = (1/R) Σ_r ‖g_{i,a,r}‖², taken *before* sketching, is
   unbiased for K_ii (exact for the fixed-probe conventions).
3. Traces. T_a = Σ_i d_{a,i}; tr(K) needs no sketch (exact given the probes).
4. Frobenius norm. (K̂ᵃ_ij)² is biased upward by Var K̂ᵃ_ij, so squares are never used:
   sketches a ≠ b are independent, hence E[K̂ᵃ_ij K̂ᵇ_ij] = K_ij² exactly and
       F_ab = Σ_{i≠j} K̂ᵃ_ij K̂ᵇ_ij + Σ_i d_{a,i} d_{b,i}
   is unbiased for ‖K‖_F²; likewise T_a T_b for tr(K)². Off-diagonal sums come from
   Σ_{ij} K̂ᵃ_ij K̂ᵇ_ij = ‖Z_aᵀ Z_b‖_F² (an (Rs)×(Rs) product, never an n×n matrix when
   n > Rs) minus its i = j terms.
5. Estimates average over the M(M−1)/2 pairs (U-statistics):
       r̂_eff = mean_{a<b} T_a T_b / mean_{a<b} F_ab,
       r̂_∞  = mean (T_a T_b − Σ_i d_{a,i} d_{b,i}) / mean Σ_{i≠j} K̂ᵃ_ij K̂ᵇ_ij   (same ratio
               as `specjax.ntk.moments`: μ² / m₂ with the n(n−1) factors cancelling).
   Numerators and denominators are unbiased; the ratios are consistent (bias O(1/s) from
   the ratio), not exactly unbiased.
6. Standard errors: delete-one-sketch jackknife over the M independent sketches
   (needs M ≥ 3; NaN for M = 2).

Assumptions: sketches (hashes, signs, probes) independent of each other and of the data;
the data and θ are held fixed (the estimate is conditional on them). Memory: M·n·R·s
floats for the sketches plus one block of b·R·P gradients at a time.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from specjax.ntk import features

PROBE_DISTRIBUTIONS = ("rademacher", "gaussian")


class SketchEstimate(NamedTuple):
    """Sketched effective-rank estimate with delete-one-sketch jackknife standard errors."""

    effective_rank: float
    effective_rank_stderr: float
    trace: float
    frob_sq: float
    frob_sq_stderr: float
    r_inf: float
    r_inf_stderr: float
    n: int
    sketch_width: int
    num_probes: int
    num_sketches: int


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def countsketch(g_bxp: jax.Array, hash_p: jax.Array, sign_p: jax.Array, width: int) -> jax.Array:
    """(S g)_t = Σ_{p: h(p)=t} σ(p) g_p for each row of g; (B, P) → (B, width)."""
    signed_pxb = (g_bxp * sign_p).T
    return jax.ops.segment_sum(signed_pxb, hash_p, num_segments=width).T


def sketch_gradients(
    apply_fn: features.ApplyFn,
    params: Any,
    x: jax.Array,
    key: jax.Array,
    *,
    sketch_width: int,
    num_probes: int = 1,
    num_sketches: int = 4,
    output: str = "trace",
    logit_index: int = 0,
    probe: jax.Array | None = None,
    probe_dist: str = "rademacher",
    block_size: int = 64,
) -> tuple[jax.Array, jax.Array]:
    """Sketches Z (M, n, R·s) and probed squared gradient norms d (M, n); see module doc."""
    s = _check_positive_int(sketch_width, "sketch_width")
    m = _check_positive_int(num_sketches, "num_sketches", minimum=2)
    r = _check_positive_int(num_probes, "num_probes")
    block_size = features.check_block_size(block_size)
    if probe_dist not in PROBE_DISTRIBUTIONS:
        raise ValueError(f"probe_dist must be one of {PROBE_DISTRIBUTIONS}, got {probe_dist!r}")
    x = features.check_inputs(x)
    c = features.num_outputs(apply_fn, params, x)
    fixed_v = output != "trace"
    if fixed_v:
        if r != 1:
            raise ValueError(f"num_probes must be 1 for output={output!r} (fixed probe), got {r}")
        v_mxrxc = jnp.broadcast_to(
            features.output_probes(output, c, logit_index=logit_index, probe=probe), (m, 1, c)
        )
    else:
        features.output_probes(output, c)
    theta, unravel = features.flat_params(params)
    p = theta.size
    k_hash, k_sign, k_probe = jax.random.split(key, 3)
    hash_mxp = jax.random.randint(k_hash, (m, p), 0, s)
    sign_mxp = jax.random.rademacher(k_sign, (m, p), dtype=jnp.float32)
    if not fixed_v:
        draw = jax.random.rademacher if probe_dist == "rademacher" else jax.random.normal
        v_mxrxc = draw(k_probe, (m, r, c), dtype=jnp.float32)
    grads = features.probed_gradients_fn(apply_fn, unravel)

    def sketch_one(g_bxrxp: jax.Array, h: jax.Array, sg: jax.Array):
        b = g_bxrxp.shape[0]
        z = countsketch(g_bxrxp.reshape(b * r, p), h, sg, s).reshape(b, r * s)
        d = jnp.sum(g_bxrxp**2, axis=(1, 2)) / r
        return z / jnp.sqrt(r), d

    @jax.jit
    def block_sketch(x_b: jax.Array):
        if fixed_v:  # one gradient per example, hashed M ways
            g = grads(theta, x_b, v_mxrxc[0])
            return jax.lax.map(lambda hs: sketch_one(g, *hs), (hash_mxp, sign_mxp))
        # independent probes per sketch: recompute gradients inside the map (b·R·P live)
        return jax.lax.map(
            lambda vhs: sketch_one(grads(theta, x_b, vhs[0]), vhs[1], vhs[2]),
            (v_mxrxc, hash_mxp, sign_mxp),
        )

    n = x.shape[0]
    x_blocks, _ = features.padded_blocks(x, block_size)
    zs, ds = zip(*(block_sketch(x_b) for x_b in x_blocks), strict=True)
    z = jnp.concatenate(zs, axis=1)[:, :n]
    d = jnp.concatenate(ds, axis=1)[:, :n]
    return z, d


@jax.jit
def _pair_sums(z_a: jax.Array, z_b: jax.Array) -> jax.Array:
    """Σ_{ij} ⟨z_ai, z_aj⟩⟨z_bi, z_bj⟩ by the cheaper of the q×q and n×n contractions."""
    n, q = z_a.shape
    hi = jax.lax.Precision.HIGHEST
    if q <= n:
        return jnp.sum(jnp.matmul(z_a.T, z_b, precision=hi) ** 2)
    return jnp.sum(jnp.matmul(z_a, z_a.T, precision=hi) * jnp.matmul(z_b, z_b.T, precision=hi))


def _jackknife(values_m: np.ndarray) -> float:
    m = values_m.shape[0]
    return float(np.sqrt((m - 1) / m * np.sum((values_m - values_m.mean()) ** 2)))


def effective_rank_from_sketches(z_mxnxq: jax.Array, d_mxn: jax.Array) -> SketchEstimate:
    """Pairwise-independent (bias-free) r_eff, ‖K‖_F², r_∞ from M sketches; see module doc."""
    m, n, q = z_mxnxq.shape
    if m < 2 or d_mxn.shape != (m, n):
        raise ValueError(f"need z (M ≥ 2, n, q) and d (M, n), got {z_mxnxq.shape}, {d_mxn.shape}")
    zn_mxn = np.asarray(jnp.sum(z_mxnxq**2, axis=-1), np.float64)  # sketched ‖z_i‖²
    d = np.asarray(d_mxn, np.float64)
    t_m = d.sum(axis=1)
    # Pair statistics, a < b: tt = T_a T_b, dd = Σ d_a d_b, off = Σ_{i≠j} K̂ᵃ_ij K̂ᵇ_ij.
    pairs = list(combinations(range(m), 2))
    tt, dd, off = (np.zeros((m, m)) for _ in range(3))
    for a, b in pairs:
        cross = float(_pair_sums(z_mxnxq[a], z_mxnxq[b]))
        tt[a, b] = t_m[a] * t_m[b]
        dd[a, b] = float(d[a] @ d[b])
        off[a, b] = cross - float(zn_mxn[a] @ zn_mxn[b])

    def estimates(keep: np.ndarray) -> tuple[float, float, float]:
        mask = np.triu(np.outer(keep, keep), 1).astype(bool)
        frob = np.mean(off[mask] + dd[mask])
        rank = np.mean(tt[mask]) / frob
        r_inf = np.mean(tt[mask] - dd[mask]) / np.mean(off[mask])
        return rank, frob, r_inf

    rank, frob, r_inf = estimates(np.ones(m, bool))
    if m >= 3:
        loo = np.array([estimates(np.arange(m) != c) for c in range(m)])
        rank_se, frob_se, r_inf_se = (_jackknife(loo[:, j]) for j in range(3))
    else:
        rank_se = frob_se = r_inf_se = float("nan")
    return SketchEstimate(
        effective_rank=float(rank),
        effective_rank_stderr=rank_se,
        trace=float(t_m.mean()),
        frob_sq=float(frob),
        frob_sq_stderr=frob_se,
        r_inf=float(r_inf),
        r_inf_stderr=r_inf_se,
        n=n,
        sketch_width=int(q),  # R·s here; the wrapper below records s and R separately
        num_probes=1,
        num_sketches=m,
    )


def sketched_effective_rank(
    apply_fn: features.ApplyFn,
    params: Any,
    x: jax.Array,
    key: jax.Array,
    *,
    sketch_width: int,
    num_probes: int = 1,
    num_sketches: int = 4,
    output: str = "trace",
    logit_index: int = 0,
    probe: jax.Array | None = None,
    probe_dist: str = "rademacher",
    block_size: int = 64,
) -> SketchEstimate:
    """r_eff = tr(K)²/‖K‖_F² of the NTK of `apply_fn` at `params` on x, by the sketch above.

    M = `num_sketches` ≥ 2 independent CountSketches of width s = `sketch_width` ≥ 1, each
    with R = `num_probes` output probes ("trace" convention). Memory O(M·n·R·s).
    """
    z, d = sketch_gradients(
        apply_fn,
        params,
        x,
        key,
        sketch_width=sketch_width,
        num_probes=num_probes,
        num_sketches=num_sketches,
        output=output,
        logit_index=logit_index,
        probe=probe,
        probe_dist=probe_dist,
        block_size=block_size,
    )
    est = effective_rank_from_sketches(z, d)
    return est._replace(sketch_width=int(sketch_width), num_probes=int(num_probes))
