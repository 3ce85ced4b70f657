"""The GPT's layers by name: each named weight, the activation matrix that feeds it, and the
spectra rows the NanoGPT study logs for them (built from `specjax.diagnostics`).

Weight `W` of a layer `y = A W` and the matrix `A` that feeds it:

| weight               | feeding activation A                               |
|----------------------|----------------------------------------------------|
| `wte`                | token-indicator matrix (st = 1/p_max, exact)       |
| `wpe`                | position-indicator matrix (st = T, exact)          |
| `block_i/attn/qkv`   | `block_i/attn_in`  = LayerNorm(x), attention input |
| `block_i/attn/proj`  | `block_i/attn_out` = concatenated head outputs     |
| `block_i/mlp/fc`     | `block_i/mlp_in`   = LayerNorm(x), MLP input       |
| `block_i/mlp/proj`   | `block_i/mlp_act`  = GELU / ReLU² output           |
| `head` (untied)      | `head_in` = final LayerNorm output                 |

With tied embeddings `head_in` feeds `wteᵀ`; it is logged as an activation row.

`full_spectra_rows` gives every singular value and the ESD power-law fit of each named weight
(`specjax.diagnostics.spectra_table`), the rows of the `full_spectra` table.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from experiments.nanogpt import host_spectra
from experiments.nanogpt.model import GPTConfig
from experiments.runtime.mesh import to_host
from specjax import diagnostics

FULL_SPECTRA_TABLE = "full_spectra"  # tables/full_spectra.parquet in the run directory
FULL_SPECTRA_COLUMNS = (
    "name", "spectrum", "singular_values", "spectral_norm", "frobenius_norm", "stable_rank",
    "nuclear_rank", "alpha", "xmin", "ks_distance", "n_tail", "esd_size",
)  # fmt: skip

BLOCK_FEEDS = {
    "attn/qkv": "attn_in",
    "attn/proj": "attn_out",
    "mlp/fc": "mlp_in",
    "mlp/proj": "mlp_act",
}


def feeds(cfg: GPTConfig) -> dict[str, str]:
    """Weight name → name of the activation matrix that multiplies it."""
    out = {"wte": "tokens", "wpe": "positions"}
    for i in range(cfg.num_layers):
        for weight, act in BLOCK_FEEDS.items():
            out[f"block_{i}/{weight}"] = f"block_{i}/{act}"
    if not cfg.tie_embeddings:
        out["head"] = "head_in"
    return out


def weight_path(name: str) -> tuple[str, ...]:
    """Path of a named weight in the flax `params` tree, e.g. `block_0/attn/qkv/kernel`."""
    embeddings = {"wte": ("wte", "embedding"), "wpe": ("wpe",)}
    return embeddings.get(name, (*name.split("/"), "kernel"))


def named_weights(params, cfg: GPTConfig) -> dict[str, jax.Array]:
    """Weight name → its matrix in `params` (or in a tree shaped like it: grads, updates)."""
    flat = traverse_util.flatten_dict(params)
    return {name: flat[weight_path(name)] for name in feeds(cfg)}


def named_activations(intermediates, cfg: GPTConfig) -> dict[str, jax.Array]:
    """Every sown activation by name (each `(B, T, d)`; `sow` stores a 1-tuple per call)."""
    acts = {"head_in": intermediates["head_in"][0]}
    for i in range(cfg.num_layers):
        for path, sown in traverse_util.flatten_dict(intermediates[f"block_{i}"]).items():
            acts[f"block_{i}/{path[-1]}"] = sown[0]
    return acts


def activation_stable_ranks(
    acts: Mapping[str, jax.Array], tokens_BxT: jax.Array, cfg: GPTConfig, *, max_iters, tol
) -> dict[str, jax.Array]:
    """st(A) of every activation; indicator matrices exactly, the rest by power iteration."""
    out = {
        "tokens": diagnostics.indicator_stable_rank(tokens_BxT, cfg.vocab_size),
        # Every position appears once per sequence: N / max count = T.
        "positions": jnp.float32(tokens_BxT.shape[-1]),
    }
    for name, a in acts.items():
        out[name] = diagnostics.activation_stable_rank(a, max_iters=max_iters, tol=tol)
    return out


def stable_rank_tree(params, act_st: Mapping[str, jax.Array], cfg: GPTConfig):
    """A tree like `params`: st(A) of the feeding activation at each hidden kernel, else None.

    This is the `activation_stable_ranks=` argument of `specjax.optim.gated_spectral`.
    """
    by_path = {
        weight_path(name): act_st[act]
        for name, act in feeds(cfg).items()
        if name.startswith("block_")
    }
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({path: by_path.get(path) for path in flat})


def activation_grams(
    acts: Mapping[str, jax.Array], tokens_BxT: jax.Array, cfg: GPTConfig
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """jit-able: (AᵀA (d, d) of every activation's token matrix, exact st of the indicators).

    st(A) = tr(AᵀA) / λ_max(AᵀA) then needs no power iteration in the compiled program
    (`host_spectra.gram_stable_ranks`); the Gram matrix, a sum over tokens, is also whole
    where the batch is split over processes.
    """
    grams = {}
    for name, a in acts.items():
        a_Nxd = diagnostics.as_token_matrix(a).astype(jnp.float32)
        grams[name] = jnp.matmul(a_Nxd.T, a_Nxd, precision=jax.lax.Precision.HIGHEST)
    indicators = {
        "tokens": diagnostics.indicator_stable_rank(tokens_BxT, cfg.vocab_size),
        # Every position appears once per sequence: N / max count = T.
        "positions": jnp.float32(tokens_BxT.shape[-1]),
    }
    return grams, indicators


def spectra_stats(params, captured, cfg: GPTConfig, *, top_k: int) -> tuple[dict, dict]:
    """Host-side: (`host_spectra.layer_spectra` of every named weight with its feeding st(A),
    st(A) by activation name) from `step.spectra_capture`'s (grads, updates, grams)."""
    weights, grads, updates, (grams, indicators) = to_host((
        named_weights(params, cfg), named_weights(captured[0], cfg),
        named_weights(captured[1], cfg), captured[2],
    ))  # fmt: skip
    act_st = {**indicators, **host_spectra.gram_stable_ranks(grams)}
    act_st = {name: np.float32(act_st[name]) for name in sorted(act_st)}  # as jit returned them
    feeding = {weight: act_st[act] for weight, act in feeds(cfg).items()}
    return host_spectra.layer_spectra(weights, grads, updates, feeding, top_k=top_k), act_st


def _row(kind: str, name: str, **values) -> dict:
    layer = int(name.split("/")[0].split("_")[1]) if name.startswith("block_") else -1
    return {"kind": kind, "name": name, "layer": layer, **values}


def to_rows(stats, act_st, act_widths: Mapping[str, int], cfg: GPTConfig) -> list[dict]:
    """Host-side: one row per weight (`kind="weight"`) and per activation (`kind="activation"`)."""
    stats, act_st = to_host((stats, act_st))
    weight_to_act = feeds(cfg)
    rows = []
    for name, values in stats.items():
        row = _row("weight", name, activation=weight_to_act[name])
        for stat, v in values.items():
            v = np.asarray(v)
            row[stat] = v.astype(np.float64).tolist() if v.ndim else float(v)
        rows.append(row)
    for name, st in act_st.items():
        width = int(act_widths[name])
        rows.append(_row("activation", name, width=width, act_stable_rank=float(st)))
    return rows


def activation_widths(cfg: GPTConfig, context_length: int) -> dict[str, int]:
    """Number of columns of every activation matrix (the upper bound on its stable rank)."""
    widths = {"tokens": cfg.vocab_size, "positions": context_length, "head_in": cfg.width}
    for i in range(cfg.num_layers):
        for act in ("attn_in", "attn_out", "mlp_in"):
            widths[f"block_{i}/{act}"] = cfg.width
        widths[f"block_{i}/mlp_act"] = cfg.mlp_ratio * cfg.width
    return widths


def check_full_spectra_every(full_spectra_every: int, spectra_every: int) -> None:
    """The full spectra are taken at spectra steps, so their interval must be a multiple."""
    if full_spectra_every and (not spectra_every or full_spectra_every % spectra_every):
        raise ValueError(
            f"study.full_spectra_every={full_spectra_every} must be a multiple of "
            f"trainer.spectra_every={spectra_every} (full spectra are taken at spectra steps)"
        )


def full_spectra_rows(params, cfg: GPTConfig, step: int, *, key) -> list[dict]:
    """Host-side: one row per named weight at `step`, with all its singular values, norms,
    stable and nuclear rank and the ESD power-law fit (α, x_min, KS distance, tail size)."""
    weights = {name: np.asarray(w) for name, w in to_host(named_weights(params, cfg)).items()}
    table = diagnostics.spectra_table(weights, key=key)
    rows = []
    for i in range(len(table["name"])):
        values = {c: table[c][i] for c in FULL_SPECTRA_COLUMNS}
        values["singular_values"] = np.asarray(values["singular_values"]).tolist()
        rows.append({"step": int(step), **_row("weight", **values)})
    return rows
