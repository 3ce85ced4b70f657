"""NanoGPT on character-level text with logged spectra (Davis & Drusvyatskiy, arXiv 2512.04299).

    python -m experiments.run +exp=nanogpt_muon        # also nanogpt_adamw / _spectra / _gated

Trains `model` (a nanoGPT-shaped GPT) on `data` with `optim` through the generic trainer. Every
`trainer.eval_every` steps: mean loss on fixed train and validation batches (the same batches
for every seed and optimizer). Every `trainer.spectra_every` steps: st(A) of each activation
matrix feeding a weight, nr(G) of each weight's gradient, their ratio, norms and top singular
values of weights and updates (`experiments.nanogpt.spectra`). At the end: loss on the whole
validation split, and `final_params.msgpack` + `nanogpt.json` for `python -m experiments.sample`.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import jax
import numpy as np
from flax import serialization
from omegaconf import DictConfig, OmegaConf

from experiments.nanogpt import data as data_lib
from experiments.nanogpt import spectra as spectra_lib
from experiments.nanogpt import step as step_lib
from experiments.nanogpt.model import GPT, GPTConfig
from experiments.optimizers import build_optimizer
from experiments.runtime.context import RunContext
from experiments.runtime.trainer import train

STUDY_DEFAULTS = {
    "batch_size": 12,
    "eval_batches": 20,
    "full_eval": True,
    "full_eval_windows": 256,
    "spectra_top_k": 4,
    "save_params": True,
}
DATA_DEFAULTS = {
    "name": "shakespeare_char",
    "path": None,
    "fallback": None,
    "download": True,
    "train_fraction": 0.9,
}
MODEL_KEYS = {f.name for f in GPTConfig.__dataclass_fields__.values()} - {"vocab_size"}
NEEDS_ACTIVATION_ST = {"gated_spectral"}
PARAMS_FILE = "final_params.msgpack"
META_FILE = "nanogpt.json"


def _section(cfg: DictConfig, name: str, defaults: dict[str, Any], allowed: set[str]) -> dict:
    given = OmegaConf.to_container(cfg.get(name) or {}, resolve=True)
    given.pop("name", None) if name == "study" else None
    unknown = set(given) - allowed
    if unknown:
        raise ValueError(
            f"unknown {name} keys {sorted(unknown)} for nanogpt; valid: {sorted(allowed)}"
        )
    return {**defaults, **given}


def options(cfg: DictConfig) -> tuple[dict, dict, dict]:
    """Validated (study, data, model) options; raises ValueError before any work."""
    study = _section(cfg, "study", STUDY_DEFAULTS, set(STUDY_DEFAULTS))
    data = _section(cfg, "data", DATA_DEFAULTS, set(DATA_DEFAULTS))
    model = _section(cfg, "model", {}, MODEL_KEYS)
    for key in ("batch_size", "eval_batches", "full_eval_windows", "spectra_top_k"):
        if not isinstance(study[key], int) or study[key] < 1:
            raise ValueError(f"study.{key} must be a positive int, got {study[key]!r}")
    return study, data, model


def build(cfg: DictConfig):
    """(corpus, GPT, optimizer, study options): everything but the run directory."""
    study, data, model_kw = options(cfg)
    corpus = data_lib.load_corpus(**data)
    gpt = GPT(GPTConfig(vocab_size=corpus.vocab_size, **model_kw))
    max_steps = int(cfg.trainer.max_steps)
    tx = build_optimizer(cfg.optim, total_steps=max_steps)
    return corpus, gpt, tx, study


def run(cfg: DictConfig, ctx: RunContext) -> dict[str, float]:
    corpus, gpt, tx, study = build(cfg)
    mcfg = gpt.config
    T, B = mcfg.context_length, study["batch_size"]
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
    needs_st = cfg.optim.name in NEEDS_ACTIVATION_ST
    train_batch = data_lib.make_batch_fn(corpus.train_tokens, B, T)
    data_key = ctx.key("data")
    eval_loss = step_lib.make_eval_loss(gpt)
    k = study["eval_batches"]
    val_x, val_y = data_lib.fixed_validation_batches(corpus.val_tokens, k, B, T)
    tr_x, tr_y = data_lib.fixed_validation_batches(corpus.train_tokens, k, B, T)

    def eval_fn(state):
        params = state["params"]
        return {
            "val_loss": eval_loss(params, val_x, val_y),
            "train_loss": eval_loss(params, tr_x, tr_y),
        }

    spectra_step = step_lib.make_spectra_fn(
        gpt, tx, needs_st, ctx.key("spectra"), study["spectra_top_k"]
    )
    widths = spectra_lib.activation_widths(mcfg, T)

    def spectra_fn(state, step):
        stats, act_st = spectra_step(state, train_batch(data_key, step))
        return spectra_lib.to_rows(stats, act_st, widths, mcfg)

    result = train(
        ctx,
        init_fn=lambda: step_lib.init_state(gpt, tx, ctx.key("init")),
        train_step=step_lib.make_train_step(gpt, tx, ctx.key("dropout"), needs_st),
        batch_for_step=lambda step: train_batch(data_key, step),
        eval_fn=eval_fn,
        spectra_fn=spectra_fn,
    )
    summary = {k: float(v) for k, v in result.metrics.items()}
    params = result.state["params"]
    if study["full_eval"]:
        x, y, mask = data_lib.full_split_windows(corpus.val_tokens, T, study["full_eval_windows"])
        summary["val_loss_full"] = float(eval_loss(params, x, y, mask))
        ctx.log_metrics(result.step, {"val_loss_full": summary["val_loss_full"]})
    if study["save_params"] and ctx.is_writer:
        save_for_sampling(ctx.dir, params, mcfg, corpus)
    return summary


def save_for_sampling(run_dir: pathlib.Path, params, mcfg: GPTConfig, corpus) -> None:
    """Final parameters and what `experiments.sample` needs to rebuild the model."""
    (run_dir / PARAMS_FILE).write_bytes(serialization.to_bytes(jax.device_get(params)))
    meta = {"model": mcfg.__dict__, "chars": corpus.chars, "dataset": corpus.name}
    (run_dir / META_FILE).write_text(json.dumps(meta, indent=1))


def load_for_sampling(run_dir: str | pathlib.Path):
    """(GPT, params, chars) saved by `save_for_sampling`."""
    run_dir = pathlib.Path(run_dir)
    meta_path = run_dir / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} not found: RUN_DIR must be the directory of a finished nanogpt run"
        )
    meta = json.loads(meta_path.read_text())
    gpt = GPT(GPTConfig(**meta["model"]))
    T = gpt.config.context_length
    template = jax.eval_shape(lambda: gpt.init(jax.random.PRNGKey(0), np.zeros((1, T), np.int32)))
    params = serialization.from_bytes(template["params"], (run_dir / PARAMS_FILE).read_bytes())
    return gpt, params, meta["chars"]


def plot(run_dirs, out_dir) -> list[pathlib.Path]:
    """Loss curves per optimizer and st(A) / nr(G) per layer over training."""
    from experiments.nanogpt import figures

    return figures.plot_runs([pathlib.Path(d) for d in run_dirs], pathlib.Path(out_dir))
