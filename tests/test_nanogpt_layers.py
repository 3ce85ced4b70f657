"""experiments.nanogpt.layers: every named weight W is fed by the activation `feeds` names.

For a layer Y = A W (no bias) the gradient is ∂L/∂W = Aᵀ ∂L/∂Y. We add a zero perturbation to
the output Y of every Dense / Embed call (a flax method interceptor), so jax.grad gives ∂L/∂Y
independently of the model's own bookkeeping, and check ∂L/∂W = Aᵀ ∂L/∂Y with A the activation
that `named_activations(...)[feeds(cfg)[name]]` returns; for Dense layers also Y = A W forward.
A wiring slip (a swapped `BLOCK_FEEDS` entry, an activation stored under the wrong name, a weight
missing from `named_weights`) breaks one of these identities; the last tests plant such slips
and check that they are reported. Only `feeds`, `named_weights`, `named_activations`,
`activation_widths` and `BLOCK_FEEDS` of `layers` are used.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.nanogpt import layers
from experiments.nanogpt.model import GPT, GPTConfig

TINY = dict(vocab_size=11, context_length=8, num_layers=2, num_heads=2, width=16)
BATCH, SEQ = 3, 8


def _random_params(params, key):
    """Parameters of unit scale (fan-in scaled matrices, gains ≈ 1), so that the activations
    feeding different weights are far apart (at nanoGPT's N(0, 0.02) init, LayerNorm(x) and
    LayerNorm(x + attention(x)) nearly coincide and a swapped feed would hide in round-off)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, leaf in zip(keys, leaves, strict=True):
        z = jax.random.normal(k, leaf.shape, jnp.float32)
        out.append(z / np.sqrt(leaf.shape[0]) if leaf.ndim >= 2 else 1.0 + 0.3 * z)
    return jax.tree.unflatten(treedef, out)


def _intercepting(deltas: dict | None, record: dict):
    """Interceptor adding deltas[(path, method)] to each Dense / Embed output, recording them."""

    def interceptor(next_fun, args, kwargs, ctx):
        out = next_fun(*args, **kwargs)
        if isinstance(ctx.module, nn.Dense | nn.Embed) and ctx.method_name in (
            "__call__",
            "attend",
        ):
            key = (tuple(ctx.module.path), ctx.method_name)
            record[key] = out
            if deltas is not None:
                out = out + deltas[key]
        return out

    return interceptor


def _layer_data(cfg: GPTConfig, seed: int = 0):
    """params, tokens, named activations, outputs Y per Dense/Embed call, ∂L/∂params, ∂L/∂Y."""
    model = GPT(cfg)
    k_init, k_params, k_tok, k_tgt = jax.random.split(jax.random.PRNGKey(seed), 4)
    tokens = jax.random.randint(k_tok, (BATCH, SEQ), 0, cfg.vocab_size)
    targets = jax.random.randint(k_tgt, (BATCH, SEQ), 0, cfg.vocab_size)
    params = _random_params(model.init(k_init, tokens)["params"], k_params)

    outputs: dict = {}
    with nn.intercept_methods(_intercepting(None, outputs)):
        logits, variables = model.apply({"params": params}, tokens, mutable=["intermediates"])
    acts = layers.named_activations(variables["intermediates"], cfg)
    deltas = {key: jnp.zeros_like(y) for key, y in outputs.items()}

    def loss(p, d):
        with nn.intercept_methods(_intercepting(d, {})):
            out = model.apply({"params": p}, tokens)
        return optax.softmax_cross_entropy_with_integer_labels(out, targets).mean()

    grads, grad_outputs = jax.grad(loss, argnums=(0, 1))(params, deltas)
    return params, tokens, logits, acts, outputs, grads, grad_outputs


def _close(a, b, rtol=1e-4) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def _wiring_errors(cfg: GPTConfig) -> list[str]:
    """Every way the names in `layers` disagree with what the model computes (empty: wired)."""
    params, tokens, logits, acts, outputs, grads, grad_outputs = _layer_data(cfg)
    weights, weight_grads = layers.named_weights(params, cfg), layers.named_weights(grads, cfg)
    feeds = layers.feeds(cfg)
    widths = layers.activation_widths(cfg, SEQ)
    errors = []

    # where each named weight lives in `params` (found by identity, whatever layers calls it)
    leaves = _paths(params)
    where = {}
    for name, w in weights.items():
        hits = [path for path, leaf in leaves if leaf is w]
        if len(hits) != 1:
            errors.append(f"{name}: named_weights returns no single leaf of params ({hits})")
            continue
        where[name] = hits[0]
    matrices = {path for path, leaf in leaves if leaf.ndim >= 2}
    if matrices != set(where.values()):
        errors.append(f"named weights {sorted(where.values())}, model matrices {sorted(matrices)}")
    if set(feeds) != set(weights):
        errors.append(f"feeds names {sorted(feeds)}, named_weights {sorted(weights)}")

    embed_key, attend_key = (("wte",), "__call__"), (("wte",), "attend")
    g_embed = grad_outputs[embed_key].reshape(-1, cfg.width)  # ∂L/∂x₀, x₀ = wte[tok] + wpe[:T]
    for name, act_name in feeds.items():
        w, g_w = weights[name], weight_grads[name]
        fan_in, fan_out = w.shape
        if act_name == "tokens":  # token indicator X: wte lookup = X wte
            a = jax.nn.one_hot(tokens.reshape(-1), cfg.vocab_size)
            forward = outputs[embed_key].reshape(-1, fan_out)
            expected = a.T @ g_embed
            if cfg.tie_embeddings:  # logits = head_in wteᵀ adds (∂L/∂logits)ᵀ head_in
                g_logits = grad_outputs[attend_key].reshape(-1, cfg.vocab_size)
                expected = expected + g_logits.T @ acts["head_in"].reshape(-1, cfg.width)
        elif act_name == "positions":  # position indicator P: wpe[:T] broadcast = P wpe
            a = jax.nn.one_hot(jnp.tile(jnp.arange(SEQ), BATCH), cfg.context_length)
            forward, expected = None, a.T @ g_embed
        else:
            if act_name not in acts:
                errors.append(f"{name}: activation {act_name!r} is not a named activation")
                continue
            a = acts[act_name]
            if a.shape[-1] != fan_in or widths.get(act_name) != fan_in:
                errors.append(
                    f"{name}: W is {fan_in}×{fan_out} but {act_name!r} has width {a.shape[-1]} "
                    f"(activation_widths says {widths.get(act_name)})"
                )
                continue
            a = a.reshape(-1, fan_in)
            key = (where[name][:-1], "__call__")  # the Dense module owning this kernel
            forward = outputs[key].reshape(-1, fan_out)
            expected = a.T @ grad_outputs[key].reshape(-1, fan_out)
        if forward is not None and not _close(a @ w, forward):
            errors.append(f"{name}: {act_name} @ W is not the layer's output")
        if not _close(g_w, expected):
            errors.append(f"{name}: ∂L/∂W ≠ {act_name}ᵀ ∂L/∂(AW)")

    if cfg.tie_embeddings:  # head_in feeds wteᵀ (documented, logged as an activation row)
        head = acts["head_in"].reshape(-1, cfg.width) @ weights["wte"].T
        if not _close(head, logits.reshape(-1, cfg.vocab_size)):
            errors.append("tied head: head_in @ wteᵀ is not the logits")
    return errors


def _paths(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(tuple(p.key for p in path), leaf) for path, leaf in flat]


@pytest.mark.parametrize("tie_embeddings", [True, False], ids=["tied", "untied"])
def test_every_named_weight_is_fed_by_its_named_activation(tie_embeddings):
    cfg = GPTConfig(**TINY, tie_embeddings=tie_embeddings)
    assert _wiring_errors(cfg) == []


@pytest.mark.parametrize(
    ("patch", "expect"),
    [
        # same width (D): only the gradient identity tells them apart
        ({"attn/qkv": "mlp_in", "mlp/fc": "attn_in"}, ["attn/qkv", "mlp/fc"]),
        ({"attn/proj": "attn_in"}, ["attn/proj"]),
        ({"mlp/proj": "mlp_in"}, ["mlp/proj"]),  # wrong width
    ],
    ids=["swap_qkv_fc", "proj_fed_by_attn_in", "mlp_proj_fed_by_mlp_in"],
)
def test_planted_wiring_bugs_are_reported(monkeypatch, patch, expect):
    cfg = GPTConfig(**TINY)
    for weight, act in patch.items():
        monkeypatch.setitem(layers.BLOCK_FEEDS, weight, act)
    errors = _wiring_errors(cfg)
    for weight in expect:
        for i in range(cfg.num_layers):
            assert any(e.startswith(f"block_{i}/{weight}:") for e in errors), (weight, errors)


def test_a_misnamed_activation_is_reported(monkeypatch):
    """`named_activations` handing out the wrong sown array under a name is caught as well."""
    original = layers.named_activations

    def misnamed(intermediates, cfg):
        acts = dict(original(intermediates, cfg))
        acts["block_0/attn_out"] = acts["block_0/attn_in"]
        return acts

    monkeypatch.setattr(layers, "named_activations", misnamed)
    errors = _wiring_errors(GPTConfig(**TINY))
    assert any(e.startswith("block_0/attn/proj:") for e in errors), errors
    assert not any(e.startswith("block_1/") for e in errors), errors
