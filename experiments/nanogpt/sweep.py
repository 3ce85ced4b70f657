"""The nanogpt study as one program vmapped over a "runs" axis (`sweep.<key>=[...]`).

Member r keeps everything a separate run with its values would have: its seed's streams (init,
data, dropout, spectra) and its optimizer hyper-parameters, which enter the program as traced
values: the optimizer config is copied, the swept keys set to member r's tracers, and `build`
called inside the vmapped function (the concrete member configs were checked beforehand). The
state is `{"runs": member states stacked, "live": bool_R, "failed_at": int_R}`; a member whose
loss goes non-finite keeps its last finite state (`jnp.where` on `live`) and its step is
recorded in `failed_at`, so the others go on.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from experiments import rundir
from experiments.config import RunConfig
from experiments.nanogpt import data as data_lib
from experiments.nanogpt import gate_check as gate_check_lib
from experiments.nanogpt import layers
from experiments.nanogpt import step as step_lib
from experiments.nanogpt.model import GPT
from experiments.runtime.context import stream_key
from experiments.runtime.mesh import DATA_AXIS, to_host
from experiments.runtime.trainer import train
from experiments.runtime.vmap_sweep import FAILED_AT, SweepContext
from experiments.studies import nanogpt as study_lib
from experiments.sweep_grid import use_multirun_hint

LOSS_KEY = "loss_live_mean"  # the trainer stops on it: NaN only once every member is dead


def swept_optimizer_values(configs: Sequence[RunConfig], grid: dict) -> dict[str, jax.Array]:
    """{optimizer key: its value per member} for the swept `optim.*` keys."""
    values = {}
    for key in (k.split(".", 1)[1] for k in grid if k.startswith("optim.")):
        column = [getattr(c.optim, key) for c in configs]
        is_float = any(isinstance(v, float) for v in column)
        values[key] = jnp.asarray(column, jnp.float32 if is_float else jnp.int32)
    return values


def traced_optimizer(template, values: dict):
    """A copy of the optimizer config `template` with the swept keys set to (traced) `values`."""
    optim = copy.copy(template)
    for key, value in values.items():
        setattr(optim, key, value)  # no __post_init__: the concrete member values were checked
    return optim


def traced_transform(template, values: dict, total_steps: int):
    """`template.build(total_steps)` with the swept keys set to (traced) `values`."""
    return traced_optimizer(template, values).build(total_steps)


def check_sweep(configs: Sequence[RunConfig], grid: dict) -> None:
    """ValueError naming each swept optimizer key the optimizer cannot take as a traced value."""
    base = configs[0]
    values = swept_optimizer_values(configs, grid)
    gpt = GPT(dataclasses.replace(base.model, vocab_size=8))  # the model's parameter tree
    T = gpt.config.context_length
    params = jax.eval_shape(lambda: gpt.init(jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32)))
    params = params["params"]
    extra = {}
    if base.optim.needs_activation_stable_ranks:  # the gated optimizer: st(A) per hidden block
        act_st = {act: jnp.ones(()) for act in layers.feeds(gpt.config).values()}
        extra["activation_stable_ranks"] = layers.stable_rank_tree(params, act_st, gpt.config)
    for key, column in values.items():

        def update(value, key=key):
            tx = traced_transform(base.optim, {key: value}, base.trainer.max_steps)
            zeros = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, p.dtype), params)
            return tx.update(zeros, tx.init(zeros), zeros, **extra)

        try:
            jax.eval_shape(update, jax.ShapeDtypeStruct((), column.dtype))
        except (jax.errors.ConcretizationTypeError, TypeError, ValueError):  # e.g. a range()
            raise ValueError(
                f"sweep.optim.{key}: optim={base.optim.name} uses {key} as a Python value "
                "(a loop count, a branch or a schedule boundary), so it cannot be vmapped; "
                + use_multirun_hint(f"optim.{key}", grid[f"optim.{key}"])
            ) from None


def log_gate_check(ctx: SweepContext, member: int, step: int, per_block) -> None:
    """Member `member`'s gate-check rows and summary metrics, into its own run directory."""
    rows, summary = gate_check_lib.to_rows(step, per_block)
    if ctx.is_writer:
        run_dir = ctx.members[member].dir
        rundir.append_table(run_dir, gate_check_lib.TABLE, rows)
        rundir.append_metrics(run_dir, step, summary)


def run_sweep(configs: Sequence[RunConfig], ctx: SweepContext) -> list[dict | None]:
    """Train every member; per member its summary as `study.nanogpt.run` gives it, or None."""
    base = configs[0]
    corpus, gpt, _ = study_lib.build(base)
    study, mcfg = base.study, gpt.config
    T, B, R = mcfg.context_length, study.batch_size, len(configs)
    ctx.record_dataset(
        corpus.name, corpus.num_chars, corpus.sha256, source=corpus.source,
        vocab_size=corpus.vocab_size, train_tokens=corpus.train_tokens.size,
        val_tokens=corpus.val_tokens.size,
    )  # fmt: skip
    needs_st = base.optim.needs_activation_stable_ranks
    total = base.trainer.max_steps
    hyper = swept_optimizer_values(configs, ctx.grid)

    def keys(stream):
        return jnp.stack([stream_key(c.seed, stream) for c in configs])

    init_keys, data_keys, dropout_keys, spectra_keys = map(
        keys, ("init", "data", "dropout", "spectra")
    )

    def init():
        def one(key, hp):
            return step_lib.init_state(gpt, traced_transform(base.optim, hp, total), key)

        return {"runs": jax.vmap(one)(init_keys, hyper), "live": jnp.ones(R, bool),
                FAILED_AT: jnp.zeros(R, jnp.int32)}  # fmt: skip

    runs_sharding = NamedSharding(ctx.mesh, PartitionSpec(DATA_AXIS))

    def on_runs_axis(tree):
        """Each device computes its share of the members (the batch is split the same way)."""
        return jax.lax.with_sharding_constraint(tree, runs_sharding)

    def step(state, batch_R):
        def one(run, live, failed_at, batch, dropout_key, hp):
            optim = traced_optimizer(base.optim, hp)
            tx, schedule = optim.build(total), optim.learning_rate(total)
            new, metrics = step_lib.make_train_step(gpt, tx, dropout_key, needs_st,
                                                    schedule)(run, batch)  # fmt: skip
            ok = live & jnp.isfinite(metrics["loss"])
            new = jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, run)
            failed_at = jnp.where(live & ~ok, run["step"] + 1, failed_at)
            return new, ok, failed_at, metrics

        runs, live, failed_at, metrics = jax.vmap(one)(
            on_runs_axis(state["runs"]), state["live"], state[FAILED_AT], batch_R, dropout_keys,
            hyper,
        )  # fmt: skip
        runs = on_runs_axis(runs)
        n_live = live.sum()
        mean = jnp.where(live, metrics["loss"], 0.0).sum() / n_live
        metrics = {**metrics, FAILED_AT: failed_at, "live_runs": n_live,
                   LOSS_KEY: jnp.where(n_live > 0, mean, jnp.nan)}  # fmt: skip
        return {"runs": runs, "live": live, FAILED_AT: failed_at}, metrics

    train_batch = data_lib.make_batch_fn(corpus.train_tokens, B, T)
    batch_all = jax.jit(jax.vmap(train_batch, in_axes=(0, None)))
    eval_loss = step_lib.make_eval_loss(gpt)
    eval_all = jax.jit(jax.vmap(eval_loss, in_axes=(0, None, None)))
    val_x, val_y = data_lib.fixed_validation_batches(corpus.val_tokens, study.eval_batches, B, T)
    tr_x, tr_y = data_lib.fixed_validation_batches(corpus.train_tokens, study.eval_batches, B, T)

    def evaluate(state):
        params = state["runs"]["params"]
        return {
            "val_loss": eval_all(params, val_x, val_y),
            "train_loss": eval_all(params, tr_x, tr_y),
            FAILED_AT: state[FAILED_AT],
        }

    def capture_one(run, batch, key, hp):
        tx = traced_transform(base.optim, hp, total)
        return step_lib.spectra_capture(gpt, tx, needs_st, key)(run, batch)

    # One member at a time (off the hot path): XLA's CPU runtime was seen to hang running a
    # vmapped spectra program over 6 gpt_baby members (back when it held power-iteration while
    # loops). Only the capture is jitted; the statistics are computed on the host.
    capture_member = jax.jit(capture_one)
    widths = layers.activation_widths(mcfg, T)

    def gate_check_one(run, batch, key, hp):
        tx = traced_transform(base.optim, hp, total)
        return gate_check_lib.candidate_losses(gpt, tx, key, run, batch)

    # The gated optimizer: each member's gate check, as a separate run does it (`study.nanogpt`).
    gate_check_member = jax.jit(gate_check_one) if needs_st else None

    def spectra(state, k):
        batches, live = batch_all(data_keys, k), np.asarray(state["live"])
        rows = {}
        for r in (r for r in range(R) if live[r]):
            member = jax.tree_util.tree_map(lambda a, r=r: a[r], (state["runs"], batches, hyper))
            run, batch, hp = member
            captured = capture_member(run, batch, spectra_keys[r], hp)
            stats, act_st = layers.spectra_stats(run["params"], captured, mcfg,
                                                 top_k=study.spectra_top_k)  # fmt: skip
            if gate_check_member is not None:
                per_block = gate_check_member(run, batch, dropout_keys[r], hp)
                log_gate_check(ctx, r, k, per_block)
            rows[r] = layers.to_rows(stats, act_st, widths, mcfg)
        return rows

    result = train(ctx, init=init, step=step, batch=lambda k: batch_all(data_keys, k),
                   evaluate=evaluate, spectra=spectra, loss_key=LOSS_KEY,
                   tokens_per_step=R * B * T)  # fmt: skip
    ctx.note_failures(to_host(result.state[FAILED_AT]))
    _, rows = ctx.split({k: v for k, v in result.metrics.items() if k != FAILED_AT})
    params = result.state["runs"]["params"]
    full = None
    if study.full_eval:
        x, y, mask = data_lib.full_split_windows(corpus.val_tokens, T, study.full_eval_windows)
        full_eval_all = jax.jit(jax.vmap(eval_loss, in_axes=(0, None, None, None)))
        full = to_host(full_eval_all(params, x, y, mask))
    summaries: list[dict | None] = []
    for r, (member, row) in enumerate(zip(ctx.members, rows, strict=True)):
        if member.failed_at:
            summaries.append(None)
            continue
        summary = {k: float(v) for k, v in row.items()}
        if full is not None:
            summary["val_loss_full"] = float(full[r])
            if ctx.is_writer:
                rundir.append_metrics(member.dir, result.step,
                                      {"val_loss_full": summary["val_loss_full"]})  # fmt: skip
        if study.save_params and ctx.is_writer:
            member_params = jax.tree_util.tree_map(lambda a, r=r: a[r], to_host(params))
            study_lib.save_for_sampling(member.dir, member_params, mcfg, corpus)
        summaries.append(summary)
    return summaries
