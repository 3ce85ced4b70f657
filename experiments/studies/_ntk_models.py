"""Models for the NTK effective-rank studies: an MLP and a ResNet-20-style CNN (flax linen).

`ResNet` follows He et al.'s CIFAR ResNets: a 3×3 stem of `width` channels, three
stages of (depth − 2)/6 basic blocks with widths (w, 2w, 4w) and stride 2 between
stages, global average pooling and a dense head (depth 20 → 3 blocks per stage).
Normalization `norm`:
  "bn_eval": BatchNorm in inference mode with its initial running statistics (mean 0,
             variance 1), i.e. the per-channel affine y = γx + β with γ = 1, β = 0 at
             init; its γ, β are parameters and enter the NTK. This is what a standard
             ResNet's NTK at initialization evaluates to in eval mode. Batch-statistics
             BatchNorm is not offered: it couples the examples of a batch, so k(x, x')
             would depend on the rest of the batch.
  "layer":   LayerNorm over channels at each position (per example).
  "none":    no normalization.
Convolutions use He-normal initialization (fan-in), as in common ResNet code.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

MODEL_NAMES = ("mlp", "resnet")
NORMS = ("bn_eval", "layer", "none")


class EvalBatchNorm(nn.Module):
    """Inference-mode BatchNorm at its initial statistics: y = γ·x + β per channel."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return x * scale + bias


def _norm(kind: str) -> nn.Module:
    if kind == "bn_eval":
        return EvalBatchNorm()
    if kind == "layer":
        return nn.LayerNorm()
    return lambda x: x


class BasicBlock(nn.Module):
    width: int
    stride: int
    norm: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda w, k, s: nn.Conv(  # noqa: E731
            w, (k, k), strides=(s, s), use_bias=False, kernel_init=nn.initializers.he_normal()
        )
        y = nn.relu(_norm(self.norm)(conv(self.width, 3, self.stride)(x)))
        y = _norm(self.norm)(conv(self.width, 3, 1)(y))
        if self.stride != 1 or x.shape[-1] != self.width:
            x = _norm(self.norm)(conv(self.width, 1, self.stride)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """CIFAR-style ResNet; `depth` = 6·blocks + 2 (20, 32, 44, 56)."""

    width: int = 16
    depth: int = 20
    num_classes: int = 10
    norm: str = "bn_eval"

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        blocks = (self.depth - 2) // 6
        x = nn.Conv(self.width, (3, 3), use_bias=False, kernel_init=nn.initializers.he_normal())(
            x_BxHxWxC
        )
        x = nn.relu(_norm(self.norm)(x))
        for stage, mult in enumerate((1, 2, 4)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(self.width * mult, stride, self.norm)(x)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class MLP(nn.Module):
    """ReLU MLP with `depth` hidden layers of `width` units (He-normal weights)."""

    width: int = 256
    depth: int = 3
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.width, kernel_init=nn.initializers.he_normal())(x))
        return nn.Dense(self.num_classes)(x)


def make_model(
    name: str, width: int, *, depth: int | None = None, num_classes: int = 10, norm: str = "bn_eval"
) -> nn.Module:
    """ "mlp" (depth = hidden layers, default 3) or "resnet" (depth default 20)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"model must be one of {MODEL_NAMES}, got {name!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    if name == "mlp":
        return MLP(width=width, depth=3 if depth is None else depth, num_classes=num_classes)
    depth = 20 if depth is None else depth
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet depth must be 6k + 2 with k ≥ 1 (20, 32, 56, ...), got {depth}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return ResNet(width=width, depth=depth, num_classes=num_classes, norm=norm)


def num_params(params) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
