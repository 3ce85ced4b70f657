"""Pure functions of the NanoGPT study: init, one train step, evaluation, spectra.

The train state is a dict `{"step", "params", "opt_state"}` (orbax checkpoints it as is).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from experiments.nanogpt import layers
from experiments.nanogpt.model import GPT
from specjax import optim as so

# Power iteration for st(A). Inside the gated step a few iterations reach 1e-3 relative accuracy
# (activations have a dominant direction, the mean token); the logged st(A) are exact, computed
# on the host (`layers.spectra_stats`).
GATED_ST_ITERATION = {"max_iters": 10, "tol": 1e-3}


def init_state(model: GPT, tx: optax.GradientTransformation, key: jax.Array) -> dict:
    """Parameters from `key` (nanoGPT init) and the optimizer state."""
    T = model.config.context_length
    params = model.init(key, jnp.zeros((1, T), jnp.int32))["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def cross_entropy(logits_BxTxV: jax.Array, y_BxT: jax.Array) -> jax.Array:
    """Mean next-character cross-entropy (nats), computed in float32."""
    logits = logits_BxTxV.astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y_BxT).mean()


def grads_and_extras(model, tx_needs_st: bool, params, x_BxT, y_BxT, dropout_key, capture):
    """(loss, grads, optimizer extra args, activations by name if `capture` else None).

    Activations are captured only when logged (`capture`) or read by the optimizer (the gated one
    needs st(A) of every block input), so AdamW and Muon steps pay nothing for the model's `sow`s.
    """
    cfg = model.config
    deterministic = cfg.dropout == 0.0
    rngs = None if deterministic else {"dropout": dropout_key}
    mutable = ["intermediates"] if capture or tx_needs_st else False

    def loss_fn(p):
        out = model.apply({"params": p}, x_BxT, deterministic, rngs=rngs, mutable=mutable)
        if not mutable:
            return cross_entropy(out, y_BxT), None
        logits, variables = out
        return cross_entropy(logits, y_BxT), variables["intermediates"]

    (loss, inter), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if inter is None:
        return loss, grads, {}, None
    acts = layers.named_activations(inter, cfg)
    extra = {}
    if tx_needs_st:  # as the train step computes them: the update is the one it would apply
        act_st = layers.activation_stable_ranks(acts, x_BxT, cfg, **GATED_ST_ITERATION)
        tree = layers.stable_rank_tree(params, act_st, cfg)
        extra["activation_stable_ranks"] = jax.lax.stop_gradient(tree)
    return loss, grads, extra, acts if capture else None


def make_train_step(
    model: GPT,
    tx: optax.GradientTransformation,
    dropout_key: jax.Array,
    needs_st: bool,
    learning_rate: optax.Schedule | None = None,
) -> Callable:
    """`train_step(state, (x_BxT, y_BxT)) -> (state, {"loss", "grad_norm"[, "lr"]})`.

    "lr" is `learning_rate(count)` at this update's count (updates done before it), the value
    optax's schedules use for the update.
    """

    def train_step(state, batch):
        x_BxT, y_BxT = batch
        key = jax.random.fold_in(dropout_key, state["step"])
        loss, grads, extra, _ = grads_and_extras(
            model, needs_st, state["params"], x_BxT, y_BxT, key, capture=False
        )
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"], **extra)
        params = optax.apply_updates(state["params"], updates)
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        if learning_rate is not None:
            metrics["lr"] = jnp.asarray(learning_rate(state["step"]), jnp.float32)
        metrics.update(gate_choices(opt_state))
        return new_state, metrics

    return train_step


GATE_PREFIX = "took_spectral/"  # metric per hidden block: 1.0 where this step was spectral


def gate_choices(opt_state) -> dict[str, jax.Array]:
    """The gated optimizer's choice at this step, per block ("took_spectral/<path>", the share
    of the block's matrices that took the spectral step) and overall ("spectral_fraction", the
    share of all blocks); empty for optimizers without a gate."""
    found = gated_states(opt_state)
    if not found:
        return {}
    per_block = {
        GATE_PREFIX + path: jnp.mean(took.astype(jnp.float32))
        for gated in found
        for path, took in sorted(gated.took_spectral.items())
    }
    per_block["spectral_fraction"] = jnp.mean(jnp.stack(list(per_block.values())))
    return per_block


def gated_states(opt_state) -> list[so.GatedSpectralState]:
    """Every `GatedSpectralState` inside an optimizer state (alone or inside a chain)."""
    return [s for s in jax.tree.leaves(opt_state, is_leaf=_is_gated) if _is_gated(s)]


def _is_gated(node) -> bool:
    return isinstance(node, so.GatedSpectralState)


def make_eval_loss(model: GPT) -> Callable:
    """jitted `(params, x_KxBxT, y_KxBxT, mask_KxB or None) -> mean loss` over K batches."""

    @jax.jit
    def eval_loss(params, x_KxBxT, y_KxBxT, mask_KxB=None):
        if mask_KxB is None:
            mask_KxB = jnp.ones(x_KxBxT.shape[:2], jnp.float32)

        def one(carry, batch):
            x, y, m = batch
            logits = model.apply({"params": params}, x, True).astype(jnp.float32)
            nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return carry + jnp.sum(nll_BxT.mean(-1) * m), None

        total, _ = jax.lax.scan(one, jnp.float32(0.0), (x_KxBxT, y_KxBxT, mask_KxB))
        return total / jnp.sum(mask_KxB)

    return eval_loss


def spectra_capture(
    model: GPT, tx: optax.GradientTransformation, needs_st: bool, key: jax.Array
) -> Callable:
    """jit-able `(state, batch) -> captured`: what the spectra need from the device.

    `captured` = (grads, the update `tx` would apply now, `layers.activation_grams`); `key` is
    the dropout key. The statistics are left to the host (`layers.spectra_stats`): compiled,
    their SVDs and power iterations cost several CPU-seconds at every cold start.
    """

    def capture(state, batch):
        x_BxT, y_BxT = batch
        params = state["params"]
        _, grads, extra, acts = grads_and_extras(
            model, needs_st, params, x_BxT, y_BxT, key, capture=True
        )
        updates, _ = tx.update(grads, state["opt_state"], params, **extra)
        return grads, updates, layers.activation_grams(acts, x_BxT, model.config)

    return capture


def make_spectra_fn(
    model: GPT, tx: optax.GradientTransformation, needs_st: bool, key: jax.Array, top_k: int
) -> Callable:
    """`(state, batch) -> (stats, act_st)`: the per-layer spectra of the update `tx` would apply.

    Only `spectra_capture` is jitted; the statistics are numpy on the host. Every process makes
    the same calls in the same order (one jitted call, then numpy).
    """
    capture = jax.jit(spectra_capture(model, tx, needs_st, key))

    def spectra_fn(state, batch):
        captured = capture(state, batch)
        return layers.spectra_stats(state["params"], captured, model.config, top_k=top_k)

    return spectra_fn
