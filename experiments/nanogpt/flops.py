"""Model FLOPs of one GPT training step, for MFU (PaLM, arXiv 2204.02311, appendix B).

    flops_per_token = 6·N + 12·L·D·T        (forward + backward)
    flops_per_step  = flops_per_token · B·T

N counts the parameters that multiply activations: all but the position table `wpe` (and the
token table `wte` when the head is untied, since a lookup does no arithmetic); 12·L·D·T is the
attention scores and their weighted sum, with D = heads × head width. nanoGPT's `estimate_mfu`
uses the same count.
"""

from __future__ import annotations

from typing import Any

import jax

from experiments.nanogpt.model import GPTConfig


def matmul_params(params: Any, cfg: GPTConfig) -> int:
    """N: parameters that take part in a matmul (embedding lookups excluded)."""
    total = sum(int(p.size) for p in jax.tree.leaves(params))
    lookups = int(params["wpe"].size)
    if not cfg.tie_embeddings:
        lookups += int(params["wte"]["embedding"].size)
    return total - lookups


def flops_per_token(params: Any, cfg: GPTConfig) -> float:
    """6·N + 12·L·D·T: model FLOPs per trained token."""
    L, D, T = cfg.num_layers, cfg.width, cfg.context_length
    return 6.0 * matmul_params(params, cfg) + 12.0 * L * D * T


def flops_per_step(params: Any, cfg: GPTConfig, batch_size: int) -> float:
    """Model FLOPs of one update on `batch_size` sequences of `cfg.context_length` tokens."""
    return flops_per_token(params, cfg) * batch_size * cfg.context_length
