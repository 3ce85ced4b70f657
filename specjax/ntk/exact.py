"""Exact empirical NTK Gram matrix, computed in blocks of examples (bounded memory).

K = Φ Φᵀ where row φ(x_i) ∈ ℝ^{R·P} stacks the R vector-Jacobian products of example i
(see `specjax.ntk.features` for the output conventions). The n examples are split into
blocks of `block_size`; block (i, j) of K is Φ_i Φ_jᵀ, a Jacobian contraction. Only the
lower triangle of blocks is computed and mirrored.

Memory: at most two feature blocks (2·b·R·P floats) plus the blocks kept in a cache of
`cache_bytes`, plus K itself (n² floats). Blocks that do not fit the cache are recomputed
when needed, trading time for memory: with every block cached each per-example gradient
is computed once; with no cache, n_blocks·(n_blocks+1)/2 block gradients are computed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from specjax.ntk import features

DEFAULT_CACHE_BYTES = 2**30


def exact_ntk(
    apply_fn: features.ApplyFn,
    params: Any,
    x: jax.Array,
    *,
    output: str = "trace",
    logit_index: int = 0,
    probe: jax.Array | None = None,
    block_size: int = 128,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> jax.Array:
    """Empirical NTK K_ij = ⟨φ(x_i), φ(x_j)⟩ of `apply_fn` at `params`; (n, ...) → (n, n).

    `output` picks the multi-output convention ("trace": sum over logits; "logit": the
    logit `logit_index`; "probe": the fixed output direction `probe` ∈ ℝ^C). Float32,
    symmetric by construction.
    """
    x = features.check_inputs(x)
    block_size = features.check_block_size(block_size)
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
        raise ValueError(f"cache_bytes must be an integer ≥ 0, got {cache_bytes!r}")
    c = features.num_outputs(apply_fn, params, x)
    v_rxc = features.output_probes(output, c, logit_index=logit_index, probe=probe)
    theta, unravel = features.flat_params(params)
    grads = features.probed_gradients_fn(apply_fn, unravel)

    @jax.jit
    def features_fn(theta: jax.Array, x_b: jax.Array, v_rxc: jax.Array) -> jax.Array:
        g_bxrxp = grads(theta, x_b, v_rxc)
        return g_bxrxp.reshape(g_bxrxp.shape[0], -1)

    def block_features(x_b: jax.Array) -> jax.Array:
        # θ and V passed as arguments, not baked into the program as constants
        return features_fn(theta, x_b, v_rxc)

    @jax.jit
    def contract(phi_a: jax.Array, phi_b: jax.Array) -> jax.Array:
        return jnp.matmul(phi_a, phi_b.T, precision=jax.lax.Precision.HIGHEST)

    n = x.shape[0]
    x_blocks, b = features.padded_blocks(x, block_size)
    num_blocks = len(x_blocks)
    block_bytes = b * v_rxc.shape[0] * theta.size * 4
    cache_capacity = cache_bytes // block_bytes
    cache: dict[int, jax.Array] = {}

    def features_of(i: int) -> jax.Array:
        if i in cache:
            return cache[i]
        phi = block_features(x_blocks[i])
        if len(cache) < cache_capacity:
            cache[i] = phi
        return phi

    k = np.zeros((num_blocks * b, num_blocks * b), np.float32)
    for i in range(num_blocks):
        phi_i = features_of(i)
        for j in range(i + 1):
            phi_j = phi_i if j == i else features_of(j)
            k_ij = np.asarray(contract(phi_i, phi_j))
            k[i * b : (i + 1) * b, j * b : (j + 1) * b] = k_ij
            k[j * b : (j + 1) * b, i * b : (i + 1) * b] = k_ij.T
    return jnp.asarray(k[:n, :n])
