"""A GPT in flax, shaped like nanoGPT's `model.py`.

Token and position embeddings, `num_layers` pre-norm blocks (causal self-attention, then an
MLP), a final LayerNorm and an output head tied to the token embedding or not. No biases
anywhere (nanoGPT's `bias=False`). Initialisation follows nanoGPT: N(0, 0.02) for every
matrix, and N(0, 0.02 / sqrt(2 L)) for the two residual output projections of each block.

Every activation matrix that multiplies a weight is `sow`n into the `intermediates`
collection, so `apply(..., mutable=["intermediates"])` returns them for spectral logging
and the gated optimizer; without `mutable` the `sow`s cost nothing.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.config import check_choice, check_positive_int

ACTIVATIONS = ("gelu", "relu2")


@dataclasses.dataclass
class GPTConfig:
    """Model hyper-parameters (nanoGPT's names: n_layer ↔ num_layers, n_embd ↔ width).

    The defaults are nanoGPT's CPU "baby GPT" for character-level Shakespeare (`model=gpt_baby`,
    ≈0.8 M parameters); `vocab_size` comes from the data (None until then).
    """

    vocab_size: int | None = None
    context_length: int = 64
    num_layers: int = 4
    num_heads: int = 4
    width: int = 128
    mlp_ratio: int = 4
    activation: str = "gelu"
    tie_embeddings: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("context_length", "num_layers", "num_heads", "width", "mlp_ratio"):
            check_positive_int(getattr(self, name), f"model.{name}")
        if self.vocab_size is not None:
            check_positive_int(self.vocab_size, "model.vocab_size")
        if self.width % self.num_heads:
            raise ValueError(
                f"model.width={self.width} must be divisible by model.num_heads={self.num_heads}"
            )
        check_choice(self.activation, "model.activation", ACTIVATIONS)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout!r}")


MODELS = {
    "gpt_baby": GPTConfig(),
    # nanoGPT's shakespeare_char GPU model (≈10.7 M parameters); nanoGPT trains it with
    # dropout 0.2, batch 64 and lr 1e-3.
    "gpt_small": GPTConfig(context_length=256, num_layers=6, num_heads=6, width=384, dropout=0.2),
}


def gelu_exact(h: jax.Array) -> jax.Array:
    """GELU(h) = h Φ(h) = ½ h (1 + erf(h/√2)), torch.nn.GELU()'s exact form.

    Written out because on XLA:CPU its autodiff fuses into cheaper kernels than
    `jax.nn.gelu(approximate=False)` (measured 2× faster MLP backward on 2 cores).
    """
    return 0.5 * h * (1.0 + jax.lax.erf(h * (1.0 / math.sqrt(2.0))))


def _dense(features: int, std: float, name: str) -> nn.Dense:
    return nn.Dense(
        features, use_bias=False, kernel_init=nn.initializers.normal(stddev=std), name=name
    )


class CausalSelfAttention(nn.Module):
    config: GPTConfig

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        B, T, D = x_BxTxD.shape
        H = D // cfg.num_heads
        qkv_BxTx3D = _dense(3 * D, 0.02, "qkv")(x_BxTxD)
        q, k, v = (a.reshape(B, T, cfg.num_heads, H) for a in jnp.split(qkv_BxTx3D, 3, axis=-1))
        # jax.nn.dot_product_attention picks a fused kernel where the backend has one.
        y_BxTxD = jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(B, T, D)
        self.sow("intermediates", "attn_out", y_BxTxD)
        out = _dense(D, 0.02 / math.sqrt(2 * cfg.num_layers), "proj")(y_BxTxD)
        return nn.Dropout(cfg.dropout)(out, deterministic=deterministic)


class MLP(nn.Module):
    config: GPTConfig

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        D = x_BxTxD.shape[-1]
        h_BxTxF = _dense(cfg.mlp_ratio * D, 0.02, "fc")(x_BxTxD)
        h_BxTxF = gelu_exact(h_BxTxF) if cfg.activation == "gelu" else jnp.square(nn.relu(h_BxTxF))
        self.sow("intermediates", "mlp_act", h_BxTxF)
        out = _dense(D, 0.02 / math.sqrt(2 * cfg.num_layers), "proj")(h_BxTxF)
        return nn.Dropout(cfg.dropout)(out, deterministic=deterministic)


class Block(nn.Module):
    config: GPTConfig

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array, deterministic: bool) -> jax.Array:
        a_BxTxD = nn.LayerNorm(use_bias=False, name="ln_attn")(x_BxTxD)
        self.sow("intermediates", "attn_in", a_BxTxD)
        x_BxTxD = x_BxTxD + CausalSelfAttention(self.config, name="attn")(a_BxTxD, deterministic)
        m_BxTxD = nn.LayerNorm(use_bias=False, name="ln_mlp")(x_BxTxD)
        self.sow("intermediates", "mlp_in", m_BxTxD)
        return x_BxTxD + MLP(self.config, name="mlp")(m_BxTxD, deterministic)


class GPT(nn.Module):
    """`GPT(config).apply(params, tokens_BxT) -> logits_BxTxV`."""

    config: GPTConfig

    @nn.compact
    def __call__(self, tokens_BxT: jax.Array, deterministic: bool = True) -> jax.Array:
        cfg = self.config
        T = tokens_BxT.shape[-1]
        if T > cfg.context_length:
            raise ValueError(
                f"sequence length {T} exceeds model.context_length={cfg.context_length}"
            )
        init = nn.initializers.normal(stddev=0.02)
        wte = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=init, name="wte")
        wpe = self.param("wpe", init, (cfg.context_length, cfg.width))
        x_BxTxD = wte(tokens_BxT) + wpe[:T]
        x_BxTxD = nn.Dropout(cfg.dropout)(x_BxTxD, deterministic=deterministic)
        for i in range(cfg.num_layers):
            x_BxTxD = Block(cfg, name=f"block_{i}")(x_BxTxD, deterministic)
        x_BxTxD = nn.LayerNorm(use_bias=False, name="ln_f")(x_BxTxD)
        self.sow("intermediates", "head_in", x_BxTxD)
        if cfg.tie_embeddings:
            return wte.attend(x_BxTxD)
        return _dense(cfg.vocab_size, 0.02, "head")(x_BxTxD)


def count_params(params) -> int:
    """Number of scalars in a parameter tree (nanoGPT reports it without `wpe`; we count all)."""
    return sum(int(p.size) for p in jax.tree.leaves(params))
