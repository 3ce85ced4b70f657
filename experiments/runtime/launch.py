"""Run one composed config in a run directory: validate, build the context, call the study.

`execute(cfg, run_dir, overrides)` is what `experiments/run.py` calls after Hydra composes;
tests call it directly. It writes `summary.json` = {"status", "summary" | "error", "step"}
(status: completed | interrupted | non_finite | failed).
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Sequence

import jax
from omegaconf import DictConfig

from experiments.runtime.context import RunContext
from experiments.runtime.mesh import maybe_initialize_distributed
from experiments.runtime.trainer import NonFiniteLossError, TrainingInterrupted
from experiments.runtime.validate import validate_config
from experiments.studies import study_module

SUMMARY_FILE = "summary.json"


def _write_summary(run_dir: pathlib.Path, payload: dict) -> None:
    if jax.process_index() == 0:
        path = run_dir / SUMMARY_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1, default=float) + "\n")
        tmp.replace(path)


def execute(cfg: DictConfig, run_dir: str | pathlib.Path, overrides: Sequence[str] = ()) -> dict:
    """Validate `cfg`, run its study in `run_dir` and return the study's summary dict."""
    # Hydra sets the root logger to INFO; orbax/absl would then log every checkpoint file.
    for name in ("absl", "jax._src.xla_bridge", "orbax"):
        logging.getLogger(name).setLevel(logging.WARNING)
    trainer = cfg.get("trainer") or {}
    maybe_initialize_distributed(trainer.get("distributed", "auto"))
    validate_config(cfg)
    module = study_module(cfg.study.name)
    run_dir = pathlib.Path(run_dir)
    ctx = RunContext(run_dir, cfg, overrides=overrides)
    try:
        summary = module.run(cfg, ctx)
    except TrainingInterrupted as err:
        _write_summary(ctx.dir, {"status": "interrupted", "step": err.step, "error": str(err)})
        ctx.close(exit_code=err.exit_code)
        raise
    except NonFiniteLossError as err:
        _write_summary(ctx.dir, {"status": "non_finite", "step": err.step, "error": str(err)})
        ctx.close(exit_code=1)
        raise
    except BaseException as err:
        _write_summary(ctx.dir, {"status": "failed", "error": f"{type(err).__name__}: {err}"})
        ctx.close(exit_code=1)
        raise
    summary = dict(summary or {})
    _write_summary(ctx.dir, {"status": "completed", "summary": summary})
    ctx.close(exit_code=0)
    if (cfg.get("trainer") or {}).get("progress", "auto") != "off":
        shown = " ".join(f"{k}={_short(v)}" for k, v in summary.items())
        print(f"done: {shown}\nrun directory: {ctx.dir}", flush=True)
    return summary


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
