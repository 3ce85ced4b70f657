"""benchmarks/compare_nanogpt_recipe.py: nanoGPT weights in our GPT, and nanoGPT's schedule.

References are independent: nanoGPT's forward pass written in numpy float64 from its model.py
(torch layout, y = x Wᵀ, LayerNorm ε 1e-5), and its `get_lr` from train.py:231-242.
"""

import math

import jax
import numpy as np
import pytest
from scipy.special import erf

from benchmarks import compare_nanogpt_recipe as cmp
from experiments.nanogpt.model import GPT, GPTConfig

V, T, D, L, H = 11, 8, 16, 2, 2


def nanogpt_state_dict(rng, emb_std=0.5) -> dict[str, np.ndarray]:
    """Random weights under nanoGPT's names and shapes (bias=False, head tied to wte)."""
    sd = {
        "transformer.wte.weight": rng.normal(0, emb_std, (V, D)),
        "transformer.wpe.weight": rng.normal(0, emb_std, (T, D)),
        "transformer.ln_f.weight": rng.uniform(0.5, 1.5, D),
    }
    for i in range(L):
        h = f"transformer.h.{i}."
        sd[h + "ln_1.weight"] = rng.uniform(0.5, 1.5, D)
        sd[h + "ln_2.weight"] = rng.uniform(0.5, 1.5, D)
        sd[h + "attn.c_attn.weight"] = rng.normal(0, 0.3, (3 * D, D))
        sd[h + "attn.c_proj.weight"] = rng.normal(0, 0.3, (D, D))
        sd[h + "mlp.c_fc.weight"] = rng.normal(0, 0.3, (4 * D, D))
        sd[h + "mlp.c_proj.weight"] = rng.normal(0, 0.3, (D, 4 * D))
    return sd


def nanogpt_logits(sd, idx_BxT, eps=1e-6) -> np.ndarray:
    """nanoGPT's GPT.forward (model.py:170-193) in float64 numpy; nanoGPT's own ε is 1e-5."""

    def ln(x, w, eps):  # F.layer_norm without bias
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w

    B, S = idx_BxT.shape
    x = sd["transformer.wte.weight"][idx_BxT] + sd["transformer.wpe.weight"][:S]
    causal = np.tril(np.ones((S, S), bool))
    for i in range(L):
        h = f"transformer.h.{i}."
        q, k, v = np.split(
            ln(x, sd[h + "ln_1.weight"], eps) @ sd[h + "attn.c_attn.weight"].T, 3, -1
        )
        q, k, v = (a.reshape(B, S, H, D // H).transpose(0, 2, 1, 3) for a in (q, k, v))
        att = np.where(causal, q @ k.transpose(0, 1, 3, 2) / math.sqrt(D // H), -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        y = (att / att.sum(-1, keepdims=True)) @ v
        x = x + y.transpose(0, 2, 1, 3).reshape(B, S, D) @ sd[h + "attn.c_proj.weight"].T
        f = ln(x, sd[h + "ln_2.weight"], eps) @ sd[h + "mlp.c_fc.weight"].T
        f = 0.5 * f * (1 + erf(f / math.sqrt(2)))  # nn.GELU(), exact
        x = x + f @ sd[h + "mlp.c_proj.weight"].T
    return ln(x, sd["transformer.ln_f.weight"], eps) @ sd["transformer.wte.weight"].T


def test_nanogpt_weights_give_nanogpts_logits_in_our_gpt():
    rng = np.random.default_rng(0)
    sd = nanogpt_state_dict(rng)
    idx = rng.integers(0, V, (3, T))
    gpt = GPT(GPTConfig(vocab_size=V, context_length=T, num_layers=L, num_heads=H, width=D))
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), cmp.flax_params_from_nanogpt(sd, L))
    ours = np.asarray(gpt.apply({"params": params}, idx), np.float64)
    np.testing.assert_allclose(ours, nanogpt_logits(sd, idx), rtol=1e-4, atol=1e-4)


def test_torch_layernorm_eps_applies_inside_the_block_only():
    # Embeddings of std 0.003 (activation variance ~2e-5) make ε = 1e-5 vs 1e-6 visible.
    rng = np.random.default_rng(1)
    sd = nanogpt_state_dict(rng, emb_std=0.003)
    idx = rng.integers(0, V, (2, T))
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), cmp.flax_params_from_nanogpt(sd, L))
    gpt = GPT(GPTConfig(vocab_size=V, context_length=T, num_layers=L, num_heads=H, width=D))
    torch_eps, flax_eps = nanogpt_logits(sd, idx, 1e-5), nanogpt_logits(sd, idx, 1e-6)
    # The logits are small (the head is the tiny tied embedding); the two ε differ by > 5 % here.
    assert np.abs(torch_eps - flax_eps).max() > 0.05 * np.abs(flax_eps).max()
    with cmp.torch_layernorm_eps():
        inside = np.asarray(gpt.apply({"params": params}, idx), np.float64)
    after = np.asarray(gpt.apply({"params": params}, idx), np.float64)
    np.testing.assert_allclose(inside, torch_eps, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(after, flax_eps, rtol=1e-3, atol=1e-6)


def nanogpt_get_lr(it, learning_rate=1e-3, warmup_iters=100, lr_decay_iters=2000, min_lr=1e-4):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    coeff = 0.5 * (1.0 + math.cos(math.pi * (it - warmup_iters) / (lr_decay_iters - warmup_iters)))
    return min_lr + coeff * (learning_rate - min_lr)


def test_nanogpt_schedule_is_train_py_get_lr():
    schedule = cmp.nanogpt_schedule(1e-3, 100, 2000, 0.1)
    steps = np.arange(0, 2101)
    got = np.asarray(jax.vmap(schedule)(steps), np.float64)
    want = np.array([nanogpt_get_lr(int(k)) for k in steps])
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-10)


def test_nanogpt_schedule_rejects_warmup_not_below_decay():
    with pytest.raises(ValueError, match=r"warmup \(100\) < decay \(100\)"):
        cmp.nanogpt_schedule(1e-3, 100, 100, 0.1)
