"""Per-example NTK features: the parameter gradients whose inner products make the NTK.

A model is an `apply_fn(params, x_B...) -> out_BxC` (or `out_B`, read as C = 1) that
maps a batch to one output row per example; any flax linen `model.apply` is one. With
θ ∈ ℝᴾ the flattened parameters and J(x) = ∂f(x)/∂θ ∈ ℝ^{C×P}, the empirical NTK under
each declared *output convention* is

    "trace":  K(x, x') = Σ_c ⟨J_c(x), J_c(x')⟩ = tr(J(x) J(x')ᵀ)   (sum over logits)
    "logit":  K(x, x') = ⟨J_c(x), J_c(x')⟩ for one logit c = `logit_index`
    "probe":  K(x, x') = ⟨J(x)ᵀv, J(x')ᵀv⟩ for one fixed output probe v ∈ ℝ^C

so every convention is K = Φ Φᵀ for per-example feature rows φ(x) ∈ ℝ^{R·P}, with
R = C ("trace": the Jacobian rows) or R = 1 (the other two: one vector-Jacobian
product). Since E[v vᵀ] = I for Rademacher or standard Gaussian v, the "probe" kernel
with a random v is an unbiased estimate of the "trace" kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

OUTPUT_CONVENTIONS = ("trace", "logit", "probe")

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def check_inputs(x: Any, name: str = "x") -> jax.Array:
    """A non-empty batch with a leading example axis. A numpy array stays on the host (it is
    sent to the device one block at a time: at n = 50,000 CIFAR-shaped inputs a device copy
    would add 0.6 GB); anything else array-like becomes a JAX array."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"{name} must be an array with a leading batch axis, got {type(x)}")
    if not isinstance(x, np.ndarray | jax.Array):
        x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty batch (shape (n, ...), n ≥ 1), got {x.shape}")
    return x


def check_block_size(block_size: Any) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an integer ≥ 1, got {block_size!r}")
    return block_size


def num_outputs(apply_fn: ApplyFn, params: Any, x: jax.Array) -> int:
    """C, the output width, checked abstractly on a one-example batch (no FLOPs spent)."""
    out = jax.eval_shape(apply_fn, params, x[:1])
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(
            "apply_fn(params, x) must return one array of shape (batch,) or (batch, C); "
            f"got {jax.tree_util.tree_structure(out)}"
        )
    if out.ndim not in (1, 2) or out.shape[0] != 1:
        raise ValueError(
            "apply_fn(params, x) must return shape (batch,) or (batch, C) with batch = "
            f"x.shape[0]; a batch of 1 gave output shape {out.shape}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"apply_fn output must be floating point, got {out.dtype}")
    return 1 if out.ndim == 1 else out.shape[1]


def output_probes(
    output: str, c: int, *, logit_index: int = 0, probe: jax.Array | None = None
) -> jax.Array:
    """The cotangents V ∈ ℝ^{R×C} whose vector-Jacobian products are the features."""
    if output not in OUTPUT_CONVENTIONS:
        raise ValueError(f"output must be one of {OUTPUT_CONVENTIONS}, got {output!r}")
    if output == "trace":
        return jnp.eye(c, dtype=jnp.float32)
    if output == "logit":
        if isinstance(logit_index, bool) or not isinstance(logit_index, int):
            raise ValueError(f"logit_index must be an int, got {logit_index!r}")
        if not 0 <= logit_index < c:
            raise ValueError(f"logit_index must be in [0, {c}), got {logit_index}")
        return jax.nn.one_hot(jnp.array([logit_index]), c, dtype=jnp.float32)
    if probe is None:
        raise ValueError("output='probe' needs a probe vector of shape (C,), got probe=None")
    probe = jnp.asarray(probe, jnp.float32)
    if probe.shape != (c,):
        raise ValueError(f"probe must have shape (C,) = ({c},), got {probe.shape}")
    return probe[None, :]


def flat_params(params: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
    """θ as one float vector and the function that rebuilds the parameter tree."""
    theta, unravel = ravel_pytree(params)
    if theta.size == 0:
        raise ValueError("params has no parameters (P = 0)")
    return theta, unravel


def probed_gradients_fn(
    apply_fn: ApplyFn, unravel: Callable[[jax.Array], Any]
) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """(θ, x_BxD..., V_RxC) ↦ G_BxRxP with G[b, r] = J(x_b)ᵀ V[r] (one vjp per example)."""

    def single_output(theta: jax.Array, x: jax.Array) -> jax.Array:
        out = apply_fn(unravel(theta), x[None])
        return jnp.reshape(out, (-1,)).astype(jnp.float32)

    def per_example(theta: jax.Array, x: jax.Array, v_rxc: jax.Array) -> jax.Array:
        _, vjp = jax.vjp(lambda t: single_output(t, x), theta)
        return jax.vmap(lambda v: vjp(v)[0])(v_rxc)

    return jax.vmap(per_example, in_axes=(None, 0, None))


def padded_blocks(x: Any, block_size: int) -> tuple[Blocks, int]:
    """x as a sequence of (block, ...) slices, the last padded by repeating the last row.

    Every block then has one shape, so the jitted block function compiles once. Blocks are
    sliced when asked for, so no padded copy of all of x is ever made.
    """
    n = x.shape[0]
    b = min(block_size, n)
    return Blocks(x, b), b


class Blocks(Sequence):
    """The blocks of `padded_blocks`: block i is rows [i·b, (i+1)·b) of x, padded if short."""

    def __init__(self, x: Any, block: int):
        self._x, self._block = x, block

    def __len__(self) -> int:
        return -(-self._x.shape[0] // self._block)

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"block {i} of {len(self)}")
        rows = self._x[i * self._block : (i + 1) * self._block]
        pad = self._block - rows.shape[0]
        if pad:
            xp = np if isinstance(rows, np.ndarray) else jnp
            rows = xp.concatenate([rows, xp.repeat(rows[-1:], pad, axis=0)], axis=0)
        return rows
