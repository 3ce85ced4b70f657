"""Small parameter trees shared by the optimizer tests (flax-style names)."""

import jax
import jax.numpy as jnp


def gpt_like_params(seed: int = 0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    return {
        "embed": {"embedding": jax.random.normal(ks[0], (40, 16))},
        "block_0": {
            "mlp": {"kernel": jax.random.normal(ks[1], (16, 32)), "bias": jnp.zeros(32)},
            "attn": {"kernel": jax.random.normal(ks[2], (16, 16))},
        },
        "block_1": {
            "mlp": {"kernel": jax.random.normal(ks[3], (32, 16))},
            "ln": {"scale": jnp.ones(16)},
        },
        "head": {"kernel": jax.random.normal(ks[4], (16, 40))},
    }


HIDDEN = ("block_0/mlp/kernel", "block_0/attn/kernel", "block_1/mlp/kernel")


def random_grads(params, step: int, seed: int = 1):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )
