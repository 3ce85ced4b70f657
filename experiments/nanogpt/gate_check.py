"""Does the gate pick the better step? Both candidates of the gated optimizer, per block.

At a logged step, for each hidden block W (the blocks `gated_spectral` gates) and each candidate
update D ∈ {spectral, Euclidean} of that block alone, the loss change on the step's batch

    Δ_D = L(params with W ← W + D) − L(params)      (dropout off, every other leaf unchanged)

is compared with the gate's choice nr(U) ≥ st(A). A row per block goes to the `gate_check` table;
`gate_agreement` (fraction of blocks where the gate took the step with the smaller Δ) and
`gate_spectral_fraction` go to the metrics. This tests Davis & Drusvyatskiy's condition
directly on the transformer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import specjax.optim as so
from experiments.nanogpt import step as step_lib
from experiments.nanogpt.model import GPT
from specjax.optim.labels import path_str

TABLE = "gate_check"


def gated_state(opt_state) -> so.GatedSpectralState:
    """The `GatedSpectralState` inside an optimizer state (alone or inside a chain)."""
    found = step_lib.gated_states(opt_state)
    if len(found) != 1:
        raise ValueError(
            f"gate_check needs exactly one gated_spectral state in the optimizer state, found "
            f"{len(found)} (optim=gated_spectral)"
        )
    return found[0]


def candidate_losses(model: GPT, tx, dropout_key: jax.Array, state, batch) -> dict:
    """`{path: (Δ_spectral, Δ_euclidean, took, nr, st)}` per gated block. Traceable, so a
    vmapped sweep can call it with a member's traced hyper-parameters inside `tx`."""

    def loss_at(params, x_BxT, y_BxT):
        return step_lib.cross_entropy(model.apply({"params": params}, x_BxT, True), y_BxT)

    x_BxT, y_BxT = batch
    params, opt_state = state["params"], state["opt_state"]
    _, grads, extra, _ = step_lib.grads_and_extras(
        model, True, params, x_BxT, y_BxT, dropout_key, capture=False
    )
    _, gate = tx.update(grads, opt_state, params, **extra)
    u_spec, _ = tx.update(grads, opt_state, params, **extra, force_step="spectral")
    u_euc, _ = tx.update(grads, opt_state, params, **extra, force_step="euclidean")
    gs = gated_state(gate)
    paths = sorted(gs.took_spectral)
    n = len(paths)
    index = {p: j for j, p in enumerate(paths)}

    def loss_with(k):
        # candidate k: block k % n moved by the spectral (k < n) or the Euclidean step
        def move(path, x, us, ue):
            j = index.get(path_str(path))
            if j is None:
                return x
            d = jnp.where(k < n, us, ue)
            return x + jnp.where(k % n == j, 1.0, 0.0).astype(x.dtype) * d

        moved = jax.tree_util.tree_map_with_path(move, params, u_spec, u_euc)
        return loss_at(moved, x_BxT, y_BxT)

    base = loss_at(params, x_BxT, y_BxT)
    deltas = jax.lax.map(loss_with, jnp.arange(2 * n)) - base
    return {
        p: (deltas[j], deltas[n + j], gs.took_spectral[p], gs.nuclear_rank[p], gs.stable_rank[p])
        for j, p in enumerate(paths)
    }


def make_candidate_losses(model: GPT, tx, dropout_key: jax.Array) -> Callable:
    """jitted `(state, batch) -> {path: (Δ_spectral, Δ_euclidean, took, nr, st)}` per block."""
    return jax.jit(lambda state, batch: candidate_losses(model, tx, dropout_key, state, batch))


def to_rows(step: int, per_block) -> tuple[list[dict], dict[str, float]]:
    """(one table row per block, summary metrics) from `candidate_losses`' output.

    A tie Δ_spectral = Δ_Euclidean (both 0 at η = 0) has `spectral_better` and `agree` NaN and
    is left out of `gate_agreement`, which is absent when every block tied."""
    rows = []
    for path, values in sorted(per_block.items()):
        d_spec, d_euc, took, nr, st = (float(np.asarray(v)) for v in values)
        better = math.nan if d_spec == d_euc else float(d_spec < d_euc)
        agree = math.nan if math.isnan(better) else float(float(took) == better)
        rows.append(
            {
                "step": step, "block": path, "took_spectral": int(took), "nr_U": nr, "st_A": st,
                "delta_spectral": d_spec, "delta_euclidean": d_euc, "spectral_better": better,
                "agree": agree,
            }
        )  # fmt: skip
    summary = {"gate_spectral_fraction": float(np.mean([r["took_spectral"] for r in rows]))}
    decided = [r for r in rows if not math.isnan(r["agree"])]
    if decided:
        summary["gate_agreement"] = float(np.mean([r["agree"] for r in decided]))
        summary["gate_spectral_better_fraction"] = float(
            np.mean([r["spectral_better"] for r in decided])
        )
    return rows, summary


def make_gate_check(model: GPT, tx, key: jax.Array) -> Callable:
    """`check(ctx, step, state, batch)`: evaluates both candidates and logs table and metrics."""
    candidate_losses = make_candidate_losses(model, tx, key)

    def check(ctx, step: int, state, batch) -> dict[str, float]:
        rows, summary = to_rows(step, candidate_losses(state, batch))
        ctx.log_table(TABLE, rows)
        ctx.log_metrics(step, summary)
        return summary

    return check
