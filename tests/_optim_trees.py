"""Small parameter trees shared by the optimizer tests (flax-style names), and numpy float64
references of the optimizer formulas."""

import jax
import jax.numpy as jnp
import numpy as np


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


# ---- numpy float64 references for the optimizer formulas (written from the docstrings) ----


def to_numpy64(tree) -> dict:
    """{path: float64 array} of a tree's leaves (paths as `specjax.optim.path_str`)."""
    from specjax.optim import path_str

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_str(p): np.asarray(x, np.float64) for p, x in flat}


def polar64(u) -> np.ndarray:
    """Exact orthogonal polar factor U Vᵀ of the SVD (float64)."""
    uu, _, vt = np.linalg.svd(np.asarray(u, np.float64), full_matrices=False)
    return uu @ vt


def soft_clip64(u, c) -> np.ndarray:
    """SPECTRA's H_c: σ ↦ σ/√(1 + σ²/c²) on matrices, g/√(1 + ‖g‖²/c²) on vectors."""
    u = np.asarray(u, np.float64)
    if u.ndim < 2:
        return u / np.sqrt(1 + np.sum(u**2) / c**2)
    uu, s, vt = np.linalg.svd(u, full_matrices=False)
    return (uu * (s / np.sqrt(1 + (s / c) ** 2))) @ vt


class Adam64:
    """optax.scale_by_adam in float64: m̂/(√v̂ + ε) (eps_root = 0)."""

    def __init__(self, b1: float, b2: float, eps: float):
        self.b1, self.b2, self.eps = b1, b2, eps
        self.m: dict = {}
        self.v: dict = {}
        self.t: dict = {}

    def direction(self, path: str, g: np.ndarray) -> np.ndarray:
        m = self.b1 * self.m.get(path, 0.0) + (1 - self.b1) * g
        v = self.b2 * self.v.get(path, 0.0) + (1 - self.b2) * g**2
        t = self.t.get(path, 0) + 1
        self.m[path], self.v[path], self.t[path] = m, v, t
        return (m / (1 - self.b1**t)) / (np.sqrt(v / (1 - self.b2**t)) + self.eps)
