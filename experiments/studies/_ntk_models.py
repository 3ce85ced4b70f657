"""Models for the NTK effective-rank studies: an MLP and He et al.'s CIFAR ResNets (flax linen).

`ResNet` follows He et al.'s CIFAR ResNets: a 3×3 stem of `width` channels, three stages of
(depth − 2)/6 basic blocks of widths (w, 2w, 4w), stride 2 between stages, global average
pooling and a dense head; He-normal (fan-in) convolutions. Where a stage changes width the
shortcut is a 1×1 strided convolution (He et al.'s option B; option A, zero-padding, has no
parameters: the difference is 2.6 k of ResNet-20's 0.27 M at w = 16). Names: "resnet20"
(3 blocks per stage) and "resnet56" (9), as in the paper; "resnet" takes `depth` (6k + 2).
Normalization `norm`:
  "bn_eval": inference-mode BatchNorm at its initial statistics, y = γx + β per channel
             (γ = 1, β = 0 at init; both enter the NTK): a standard ResNet's NTK at init in
             eval mode. Batch-statistics BatchNorm is not offered: it couples a batch's
             examples, so k(x, x') would depend on the rest of the batch.
  "layer":   LayerNorm over channels at each position (per example).
  "none":    no normalization.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.config import check_choice, check_positive_int

MODEL_NAMES = ("mlp", "resnet", "resnet20", "resnet56")
RESNET_DEPTHS = {"resnet20": 20, "resnet56": 56}  # fixed-depth names
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


def _conv(width: int, kernel: int, stride: int = 1) -> nn.Conv:
    he_normal = nn.initializers.he_normal()
    return nn.Conv(width, (kernel, kernel), strides=stride, use_bias=False, kernel_init=he_normal)


class BasicBlock(nn.Module):
    width: int
    stride: int
    norm: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(_norm(self.norm)(_conv(self.width, 3, self.stride)(x)))
        y = _norm(self.norm)(_conv(self.width, 3)(y))
        if self.stride != 1 or x.shape[-1] != self.width:
            x = _norm(self.norm)(_conv(self.width, 1, self.stride)(x))
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
        x = nn.relu(_norm(self.norm)(_conv(self.width, 3)(x_BxHxWxC)))
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
    """ "mlp" (depth = hidden layers, default 3), "resnet" (depth default 20), "resnet20|56"."""
    check_choice(name, "model", MODEL_NAMES)
    check_positive_int(width, "width")
    if name == "mlp":
        return MLP(width=width, depth=3 if depth is None else depth, num_classes=num_classes)
    if name in RESNET_DEPTHS:
        if depth is not None and depth != RESNET_DEPTHS[name]:
            raise ValueError(f"model {name!r} has depth {RESNET_DEPTHS[name]}; got depth={depth} "
                             "(use model 'resnet' with a depth, or leave depth unset)")  # fmt: skip
        depth = RESNET_DEPTHS[name]
    depth = 20 if depth is None else depth
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet depth must be 6k + 2 with k ≥ 1 (20, 32, 56, ...), got {depth}")
    check_choice(norm, "norm", NORMS)
    return ResNet(width=width, depth=depth, num_classes=num_classes, norm=norm)


def num_params(params) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
