"""NanoGPT on character-level text with logged spectra (Davis & Drusvyatskiy, arXiv 2512.04299).

    python -m experiments.run +exp=nanogpt_muon        # also nanogpt_adamw / _spectra / _gated

Trains `model` (a nanoGPT-shaped GPT) on `data` with `optim` through the generic trainer. Every
`trainer.eval_every` steps: mean loss on fixed train and validation batches (the same batches
for every seed and optimizer). Every `trainer.spectra_every` steps: st(A) of each activation
matrix feeding a weight, nr(G) of each weight's gradient, their ratio, norms and top singular
values of weights and updates (`experiments.nanogpt.layers`). At the end: loss on the whole
validation split, and `final_params.msgpack` + `nanogpt.json` for `python -m experiments.sample`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

import jax
import numpy as np
from flax import serialization

from experiments import rundir
from experiments.config import RunConfig, check_positive_int
from experiments.nanogpt import data as data_lib
from experiments.nanogpt import flops, layers
from experiments.nanogpt import gate_check as gate_check_lib
from experiments.nanogpt import step as step_lib
from experiments.nanogpt.model import GPT, GPTConfig
from experiments.runtime.context import RunContext
from experiments.runtime.mesh import to_host
from experiments.runtime.trainer import train


@dataclasses.dataclass
class Config:
    name: str = "nanogpt"
    batch_size: int = 12
    eval_batches: int = 20  # fixed validation batches, identical for every seed and optimizer
    full_eval: bool = True  # loss on the whole validation split at the end
    full_eval_windows: int = 256  # windows per batch of the full-split evaluation
    spectra_top_k: int = 4  # top singular values logged per weight / update
    # every σ and the ESD power-law α of each weight → tables/full_spectra.parquet, every k steps
    # (0 = off; a multiple of trainer.spectra_every)
    full_spectra_every: int = 0
    save_params: bool = True  # final_params.msgpack + nanogpt.json for experiments.sample

    def __post_init__(self) -> None:
        for key in ("batch_size", "eval_batches", "full_eval_windows", "spectra_top_k"):
            check_positive_int(getattr(self, key), f"study.{key}")
        check_positive_int(self.full_spectra_every, "study.full_spectra_every", zero_ok=True)


def build(cfg: RunConfig):
    """(corpus, GPT, optimizer): everything but the run directory."""
    if not isinstance(cfg.model, GPTConfig) or not isinstance(cfg.data, data_lib.CharDataConfig):
        raise ValueError("the nanogpt study needs model=gpt_baby|gpt_small and a character data "
                         f"config, got model={cfg.model!r}, data={cfg.data!r}")  # fmt: skip
    corpus = cfg.data.load()
    gpt = GPT(dataclasses.replace(cfg.model, vocab_size=corpus.vocab_size))
    return corpus, gpt, cfg.optim.build(cfg.trainer.max_steps)


def run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
    layers.check_full_spectra_every(cfg.study.full_spectra_every, cfg.trainer.spectra_every)
    corpus, gpt, tx = build(cfg)
    study, mcfg = cfg.study, gpt.config
    T, B = mcfg.context_length, study.batch_size
    ctx.record_dataset(
        corpus.name, corpus.num_chars, corpus.sha256, source=corpus.source,
        vocab_size=corpus.vocab_size, train_tokens=corpus.train_tokens.size,
        val_tokens=corpus.val_tokens.size,
    )  # fmt: skip
    print(
        f"[nanogpt] data={corpus.name} ({corpus.num_chars:,} chars, vocab {corpus.vocab_size}, "
        f"from {corpus.source}); model {mcfg.num_layers}L/{mcfg.num_heads}H/{mcfg.width}D "
        f"ctx {T}; optim={cfg.optim.name}",
        file=sys.stderr,
    )
    needs_st = cfg.optim.needs_activation_stable_ranks
    train_batch = data_lib.make_batch_fn(corpus.train_tokens, B, T)
    data_key = ctx.key("data")
    eval_loss = step_lib.make_eval_loss(gpt)
    k = study.eval_batches
    val_x, val_y = data_lib.fixed_validation_batches(corpus.val_tokens, k, B, T)
    tr_x, tr_y = data_lib.fixed_validation_batches(corpus.train_tokens, k, B, T)

    def evaluate(state):
        params = state["params"]
        return {
            "val_loss": eval_loss(params, val_x, val_y),
            "train_loss": eval_loss(params, tr_x, tr_y),
        }

    spectra_step = step_lib.make_spectra_fn(gpt, tx, needs_st, ctx.key("spectra"),
                                            study.spectra_top_k)  # fmt: skip
    widths = layers.activation_widths(mcfg, T)
    # The gated optimizer: both candidate steps per block at each spectra step (gate_check).
    gate_check = gate_check_lib.make_gate_check(gpt, tx, ctx.key("dropout")) if needs_st else None

    def spectra(state, step):
        batch = train_batch(data_key, step)
        stats, act_st = spectra_step(state, batch)
        if gate_check is not None:
            gate_check(ctx, step, state, batch)
        if study.full_spectra_every and step % study.full_spectra_every == 0:
            key = ctx.key("full_spectra", step)
            rows = layers.full_spectra_rows(state["params"], mcfg, step, key=key)
            ctx.log_table(layers.FULL_SPECTRA_TABLE, rows)
        return layers.to_rows(stats, act_st, widths, mcfg)

    def init():
        return step_lib.init_state(gpt, tx, ctx.key("init"))

    params_shape = jax.eval_shape(init)["params"]
    schedule = cfg.optim.learning_rate(cfg.trainer.max_steps)
    result = train(
        ctx,
        init=init,
        step=step_lib.make_train_step(gpt, tx, ctx.key("dropout"), needs_st, schedule),
        batch=lambda step: train_batch(data_key, step),
        evaluate=evaluate,
        spectra=spectra,
        tokens_per_step=B * T,
        flops_per_step=flops.flops_per_step(params_shape, mcfg, B),
    )
    summary = {k: float(v) for k, v in result.metrics.items()}
    params = result.state["params"]
    if study.full_eval:
        x, y, mask = data_lib.full_split_windows(corpus.val_tokens, T, study.full_eval_windows)
        summary["val_loss_full"] = float(eval_loss(params, x, y, mask))
        ctx.log_metrics(result.step, {"val_loss_full": summary["val_loss_full"]})
    if study.save_params and ctx.is_writer:
        save_for_sampling(ctx.dir, params, mcfg, corpus)
    if cfg.logger.kind == "wandb" and ctx.is_writer:
        # The figures exist only if drawn now: the wandb mirror uploads figures/ when it closes.
        plot([ctx.dir], ctx.figure_dir())
    return summary


def save_for_sampling(run_dir: pathlib.Path, params, mcfg: GPTConfig, corpus) -> None:
    """Final parameters and what `experiments.sample` needs to rebuild the model."""
    rundir.atomic_write(run_dir / rundir.PARAMS_FILE,
                        serialization.to_bytes(to_host(params)))  # fmt: skip
    meta = {"model": dataclasses.asdict(mcfg), "chars": corpus.chars, "dataset": corpus.name}
    rundir.atomic_write(run_dir / rundir.MODEL_FILE, json.dumps(meta, indent=1))


def load_for_sampling(run_dir: str | pathlib.Path):
    """(GPT, params, chars) saved by `save_for_sampling`."""
    run_dir = pathlib.Path(run_dir)
    meta_path = run_dir / rundir.MODEL_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} not found: RUN_DIR must be the directory of a finished nanogpt run"
        )
    meta = json.loads(meta_path.read_text())
    gpt = GPT(GPTConfig(**meta["model"]))
    T = gpt.config.context_length
    template = jax.eval_shape(lambda: gpt.init(jax.random.PRNGKey(0), np.zeros((1, T), np.int32)))
    raw = (run_dir / rundir.PARAMS_FILE).read_bytes()
    params = serialization.from_bytes(template["params"], raw)
    return gpt, params, meta["chars"]


def plot(run_dirs, out_dir) -> list[pathlib.Path]:
    """Loss curves per optimizer setting (mean, min–max over seeds), st(A) / nr(G) per layer
    over training, the gated optimizer's choices per block and the Muon ablation."""
    from experiments.nanogpt import figures

    return figures.plot_runs([pathlib.Path(d) for d in run_dirs], pathlib.Path(out_dir))
