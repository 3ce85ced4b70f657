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
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from experiments.nanogpt.model import GPTConfig
from specjax import diagnostics

BLOCK_FEEDS = {
    "attn/qkv": "attn_in",
    "attn/proj": "attn_out",
    "mlp/fc": "mlp_in",
    "mlp/proj": "mlp_act",
}
# Where each sown activation lives inside the `intermediates` collection of a block.
_BLOCK_ACT_PATHS = {
    "attn_in": ("attn_in",),
    "attn_out": ("attn", "attn_out"),
    "mlp_in": ("mlp_in",),
    "mlp_act": ("mlp", "mlp_act"),
}


def weight_paths(cfg: GPTConfig) -> dict[str, tuple[str, ...]]:
    """Weight name → path of that matrix in the flax `params` tree."""
    paths = {"wte": ("wte", "embedding"), "wpe": ("wpe",)}
    for i in range(cfg.num_layers):
        for name in BLOCK_FEEDS:
            module, dense = name.split("/")
            paths[f"block_{i}/{name}"] = (f"block_{i}", module, dense, "kernel")
    if not cfg.tie_embeddings:
        paths["head"] = ("head", "kernel")
    return paths


def feeds(cfg: GPTConfig) -> dict[str, str]:
    """Weight name → name of the activation matrix that multiplies it."""
    out = {"wte": "tokens", "wpe": "positions"}
    for i in range(cfg.num_layers):
        for weight, act in BLOCK_FEEDS.items():
            out[f"block_{i}/{weight}"] = f"block_{i}/{act}"
    if not cfg.tie_embeddings:
        out["head"] = "head_in"
    return out


def _get(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def named_weights(params, cfg: GPTConfig) -> dict[str, jax.Array]:
    return {name: _get(params, path) for name, path in weight_paths(cfg).items()}


def named_activations(intermediates, cfg: GPTConfig) -> dict[str, jax.Array]:
    """Sown activations by name (each `(B, T, d)`); `sow` stores a 1-tuple per call."""
    acts = {"head_in": intermediates["head_in"][0]}
    for i in range(cfg.num_layers):
        for act, path in _BLOCK_ACT_PATHS.items():
            acts[f"block_{i}/{act}"] = _get(intermediates[f"block_{i}"], path)[0]
    return acts


def activation_stable_ranks(
    acts: Mapping[str, jax.Array],
    tokens_BxT: jax.Array,
    cfg: GPTConfig,
    *,
    max_iters: int,
    tol: float,
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
        path: act_st[feeds(cfg)[name]]
        for name, path in weight_paths(cfg).items()
        if name.startswith("block_")
    }

    def leaf(path, _):
        key = tuple(getattr(p, "key", getattr(p, "name", p)) for p in path)
        return by_path.get(key)

    return jax.tree_util.tree_map_with_path(leaf, params)


def spectra_stats(params, grads, updates, act_st, cfg: GPTConfig, *, key, top_k: int):
    """jit-able: `layer_spectra` of every named weight with its feeding st(A)."""
    weight_to_act = feeds(cfg)
    return diagnostics.layer_spectra(
        named_weights(params, cfg),
        named_weights(grads, cfg),
        None if updates is None else named_weights(updates, cfg),
        {w: act_st[a] for w, a in weight_to_act.items()},
        key=key,
        top_k=top_k,
    )


def _layer_of(name: str) -> int:
    return int(name.split("/")[0].split("_")[1]) if name.startswith("block_") else -1


def to_rows(stats, act_st, act_widths: Mapping[str, int], cfg: GPTConfig) -> list[dict]:
    """Host-side: one row per weight (`kind="weight"`) and per activation (`kind="activation"`)."""
    stats, act_st = jax.device_get((stats, act_st))
    weight_to_act = feeds(cfg)
    rows = []
    for name, values in stats.items():
        row = {"kind": "weight", "name": name, "layer": _layer_of(name)}
        row["activation"] = weight_to_act[name]
        for stat, v in values.items():
            v = np.asarray(v)
            row[stat] = v.astype(np.float64).tolist() if v.ndim else float(v)
        rows.append(row)
    for name, st in act_st.items():
        rows.append(
            {
                "kind": "activation",
                "name": name,
                "layer": _layer_of(name),
                "width": int(act_widths[name]),
                "act_stable_rank": float(st),
            }
        )
    return rows


def activation_widths(cfg: GPTConfig, context_length: int) -> dict[str, int]:
    """Number of columns of every activation matrix (the upper bound on its stable rank)."""
    widths = {"tokens": cfg.vocab_size, "positions": context_length, "head_in": cfg.width}
    for i in range(cfg.num_layers):
        widths[f"block_{i}/attn_in"] = cfg.width
        widths[f"block_{i}/attn_out"] = cfg.width
        widths[f"block_{i}/mlp_in"] = cfg.width
        widths[f"block_{i}/mlp_act"] = cfg.mlp_ratio * cfg.width
    return widths
