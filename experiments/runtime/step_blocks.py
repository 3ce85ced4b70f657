"""Several train steps per dispatch: one jitted `lax.scan` over a fixed-length block of steps.

    run_block = make_block_step(step, length, state_sharding, block_sharding)
    state, metrics_L = run_block(state, batches_L, active)   # steps 0..active-1 of the block run

Every block has the same `length`, so the loop compiles once, whatever the cadences; a block cut
short by an evaluation, a checkpoint or the last step runs its first `active` steps and passes
the state through the rest (`lax.cond`, so skipped steps cost no compute). Each step is then the
same compiled loop body wherever it falls in a block, so a resumed run (whose blocks start
elsewhere) repeats the uninterrupted one bit for bit. Metrics come back stacked, one row per
step of the block, read back by the host once per block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from experiments.runtime.mesh import DATA_AXIS


def make_block_step(
    step: Callable[[Any, Any], tuple[Any, Any]],
    length: int,
    state_sharding: NamedSharding,
    block_sharding: NamedSharding,
) -> Callable:
    """jitted `(state, batches_L, active) -> (state, metrics_L)`, the state donated."""

    def run_block(state, batches, active):
        first = jax.tree.map(lambda b: b[0], batches)
        _, metrics_shape = jax.eval_shape(step, state, first)

        def skip(state, batch):
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape)
            return state, zeros

        def body(state, xs):
            i, batch = xs
            return jax.lax.cond(i < active, step, skip, state, batch)

        return jax.lax.scan(body, state, (jnp.arange(length), batches))

    return jax.jit(run_block, in_shardings=(state_sharding, block_sharding, None),
                   out_shardings=(state_sharding, state_sharding), donate_argnums=0)  # fmt: skip


def block_sharded(mesh: Mesh) -> NamedSharding:
    """A stack of batches: block axis unsharded, each batch split along "data"."""
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def put_block(batches: Sequence[Any], length: int, mesh: Mesh) -> Any:
    """Stack `batches` (padded to `length` by repeating the last) and place them on the mesh."""
    padded = [*batches, *[batches[-1]] * (length - len(batches))]
    sharding = block_sharded(mesh)
    if jax.process_count() == 1:
        return jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *padded), sharding)
    host = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *padded)
    return jax.tree.map(
        lambda leaf: jax.make_array_from_callback(leaf.shape, sharding, lambda idx: leaf[idx]),
        host,
    )


def next_stop(done: int, max_steps: int, cadences: Sequence[int], extra: Sequence[int] = ()) -> int:
    """The first step after `done` where the host must look: a multiple of a non-zero cadence,
    one of `extra` (e.g. `trainer.stop_at_step`), or `max_steps`."""
    candidates = [max_steps]
    candidates += [(done // e + 1) * e for e in cadences if e]
    candidates += [s for s in extra if s is not None and s > done]
    return min(candidates)
