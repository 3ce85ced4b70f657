"""Muon ablation (`optim.spectral_blocks`): exactly the intended GPT kernels take Muon's step.

Behavioural check on a tiny GPT: with `method=svd` a Muon update is exactly orthogonal (all
singular values equal), while the first AdamW update of a random gradient is sign-like with a
wide spectrum; which leaves come out orthogonal is compared with the intended set.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.nanogpt.model import GPT, GPTConfig
from experiments.optimizers import MuonConfig
from specjax.optim.labels import leaves_with_paths

TINY = dict(vocab_size=11, context_length=8, num_layers=2, num_heads=2, width=8)
EXPECTED = {
    "all": {f"block_{i}/{w}/kernel" for i in range(2) for w in ("attn/qkv", "attn/proj",
                                                                 "mlp/fc", "mlp/proj")},
    "mlp_out": {"block_0/mlp/proj/kernel", "block_1/mlp/proj/kernel"},
    "attention": {f"block_{i}/attn/{w}/kernel" for i in range(2) for w in ("qkv", "proj")},
}  # fmt: skip


def _orthogonal_leaves(blocks: str) -> set[str]:
    cfg = GPTConfig(**TINY, tie_embeddings=False)
    params = GPT(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    leaves = leaves_with_paths(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    grads = jax.tree.unflatten(
        jax.tree.structure(params),
        [jax.random.normal(k, x.shape) for k, (_, x) in zip(keys, leaves, strict=True)],
    )
    tx = MuonConfig(name="muon", lr=1.0, method="svd", spectral_blocks=blocks).build(10)
    updates, _ = tx.update(grads, tx.init(params), params)
    out = set()
    for path, u in leaves_with_paths(updates):
        if np.ndim(u) == 2:
            s = np.linalg.svd(np.asarray(u, np.float64), compute_uv=False)
            if s[-1] > 0.999 * s[0]:
                out.add(path)
    return out


@pytest.mark.parametrize("blocks", sorted(EXPECTED))
def test_spectral_blocks_route_exactly_the_intended_kernels(blocks):
    assert _orthogonal_leaves(blocks) == EXPECTED[blocks]


def test_unknown_spectral_blocks_is_a_config_error():
    with pytest.raises(ValueError, match=r"optim\.spectral_blocks"):
        MuonConfig(name="muon", spectral_blocks="mlp")
