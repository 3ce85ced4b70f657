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
floats for the sketches plus one block of b·M·R·P gradients at a time (all sketches' probes
go through one batched VJP per example, sharing its forward pass).
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
) -> tuple[np.ndarray, np.ndarray]:
    """Sketches Z (M, n, R·s) and probed squared gradient norms d (M, n); see module doc.

    Returned as float32 numpy arrays (host memory, filled block by block).
    """
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
    # One program per block: a single forward per example, and one batched vector-Jacobian
    # product over the probes of all M sketches stacked as cotangents (M·R rows; the fixed
    # conventions need only their one row), then each sketch's CountSketch. Profiled on
    # ResNet-20 (docs/notes/ntk.md, 0.4): the per-example VJPs are ~90% of the time, so the
    # win is fewer forwards and dispatches, not the scatter.
    v_qxc = v_mxrxc[:1, 0] if fixed_v else v_mxrxc.reshape(m * r, c)

    def one_sketch(g_bxrxp, h, sg):
        b = g_bxrxp.shape[0]
        z = countsketch(g_bxrxp.reshape(b * r, p), h, sg, s).reshape(b, r * s)
        return z / jnp.sqrt(r), jnp.sum(g_bxrxp**2, axis=(1, 2)) / r

    def sketch_block(theta, x_b, v_qxc, hash_mxp, sign_mxp):
        g_bxqxp = grads(theta, x_b, v_qxc)
        if fixed_v:  # one gradient per example, hashed M ways
            return jax.vmap(one_sketch, in_axes=(None, 0, 0))(g_bxqxp, hash_mxp, sign_mxp)
        g_bxmxrxp = g_bxqxp.reshape(g_bxqxp.shape[0], m, r, p)  # sketch a: probes v[a, :]
        return jax.vmap(one_sketch, in_axes=(1, 0, 0))(g_bxmxrxp, hash_mxp, sign_mxp)

    # θ, probes and hashes are arguments, not closed-over constants: XLA would otherwise embed
    # (and constant-fold) P-sized arrays into the program, which made it several times slower.
    sketch_block = jax.jit(sketch_block)

    def block_sketch(x_b: jax.Array):
        return sketch_block(theta, x_b, v_qxc, hash_mxp, sign_mxp)

    n = x.shape[0]
    x_blocks, b = features.padded_blocks(x, block_size)
    # Filled block by block: the n·M·R·s floats are held once (no list + concatenate copy).
    z = np.empty((m, len(x_blocks) * b, r * s), np.float32)
    d = np.empty((m, len(x_blocks) * b), np.float32)
    for i, x_b in enumerate(x_blocks):
        z_b, d_b = block_sketch(x_b)
        z[:, i * b : (i + 1) * b], d[:, i * b : (i + 1) * b] = np.asarray(z_b), np.asarray(d_b)
    return z[:, :n], d[:, :n]


@jax.jit
def _cross(z_a: jax.Array, z_b: jax.Array) -> jax.Array:
    return jnp.matmul(z_a.T, z_b, precision=jax.lax.Precision.HIGHEST)


@jax.jit
def _gram_pair_sum(z_a: jax.Array, z_b: jax.Array) -> jax.Array:
    hi = jax.lax.Precision.HIGHEST
    return jnp.sum(jnp.matmul(z_a, z_a.T, precision=hi) * jnp.matmul(z_b, z_b.T, precision=hi))


def _pair_sums(z_a: np.ndarray, z_b: np.ndarray, ns: list[int]) -> list[float]:
    """Σ_{i,j<n} ⟨z_ai, z_aj⟩⟨z_bi, z_bj⟩ for each prefix n in ns (sorted), in one pass.

    = ‖Z_aᵀ Z_b‖_F² with Z_aᵀ Z_b (q×q) accumulated over the chunks between successive n;
    when q exceeds n the n×n Grams are cheaper and are used instead.
    """
    q = z_a.shape[1]
    if q > ns[-1]:
        return [float(_gram_pair_sum(z_a[:n], z_b[:n])) for n in ns]
    out, cross, start = [], np.zeros((q, q)), 0
    for n in ns:
        if n > start:
            cross += np.asarray(_cross(z_a[start:n], z_b[start:n]), np.float64)
        out.append(float(np.sum(cross**2)))
        start = n
    return out


def _jackknife(values_m: np.ndarray) -> float:
    m = values_m.shape[0]
    return float(np.sqrt((m - 1) / m * np.sum((values_m - values_m.mean()) ** 2)))


def effective_rank_by_prefix(
    z_mxnxq: Any, d_mxn: Any, ns: list[int] | tuple[int, ...]
) -> list[SketchEstimate]:
    """`effective_rank_from_sketches(z[:, :n], d[:, :n])` for each n in `ns`, in one pass.

    With i.i.d. examples, the leading n of an n_max sample are a sample of size n: one
    sketch of n_max examples gives r̂_eff at every smaller n (estimates at different n share
    examples and sketches, so they are correlated).
    """
    z = np.asarray(z_mxnxq, np.float32)
    d = np.asarray(d_mxn, np.float64)
    if z.ndim != 3 or z.shape[0] < 2 or d.shape != z.shape[:2]:
        raise ValueError(f"need z (M ≥ 2, n, q) and d (M, n), got {z.shape}, {d.shape}")
    m, n_max, q = z.shape
    ns = [int(n) for n in ns]
    if not ns or any(not 1 <= n <= n_max for n in ns):
        raise ValueError(f"ns must be a non-empty list of sizes in [1, {n_max}], got {ns}")
    order = sorted(set(ns))
    zn = np.stack([np.einsum("nq,nq->n", z[a], z[a], dtype=np.float64) for a in range(m)])
    # Pair statistics per prefix, a < b: tt = T_a T_b, dd = Σ d_a d_b, off = Σ_{i≠j} K̂ᵃK̂ᵇ.
    tt, dd, off = (np.zeros((len(order), m, m)) for _ in range(3))
    idx = np.array(order) - 1
    t_mxk = np.cumsum(d, axis=1)[:, idx]  # T_a at each prefix
    for a, b in combinations(range(m), 2):
        dd[:, a, b] = np.cumsum(d[a] * d[b])[idx]
        off[:, a, b] = np.array(_pair_sums(z[a], z[b], order)) - np.cumsum(zn[a] * zn[b])[idx]
        tt[:, a, b] = t_mxk[a] * t_mxk[b]
    by_n = {n: _estimate(tt[k], dd[k], off[k], t_mxk[:, k], n, q) for k, n in enumerate(order)}
    return [by_n[n] for n in ns]


def _estimate(tt, dd, off, t_m, n: int, q: int) -> SketchEstimate:
    """U-statistic ratios over sketch pairs a < b, with delete-one-sketch jackknife SEs."""
    m = t_m.shape[0]

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


def effective_rank_from_sketches(z_mxnxq: Any, d_mxn: Any) -> SketchEstimate:
    """Pairwise-independent (bias-free) r_eff, ‖K‖_F², r_∞ from M sketches; see module doc."""
    shape = getattr(z_mxnxq, "shape", ())
    if len(shape) != 3:
        raise ValueError(f"need z (M ≥ 2, n, q) and d (M, n), got {shape}, {np.shape(d_mxn)}")
    return effective_rank_by_prefix(z_mxnxq, d_mxn, [shape[1]])[0]


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
