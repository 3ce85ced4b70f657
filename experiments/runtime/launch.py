"""Run one study in a run directory: build the context, call the study, write `summary.json`.

`execute(cfg, run_dir, overrides, run_study)` is what `experiments/run.py` calls after Hydra
composes; tests call it directly. summary.json = {"status", "summary" | "error", "step"}, with
status completed | interrupted | non_finite | failed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import sys
from collections.abc import Callable, Sequence

import jax
import numpy as np

from experiments import rundir
from experiments.config import RunConfig
from experiments.runtime import provenance
from experiments.runtime.context import RunContext
from experiments.runtime.mesh import maybe_initialize_distributed
from experiments.runtime.trainer import NonFiniteLossError, TrainingInterrupted

StudyRun = Callable[[RunConfig, RunContext], dict]


def check_processes_agree(cfg: RunConfig) -> None:
    """ValueError on every process unless all processes run the same config and code version."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    state = json.dumps([dataclasses.asdict(cfg), provenance.git_state()], sort_keys=True)
    digest = np.frombuffer(hashlib.sha256(state.encode()).digest()[:8], np.uint8)
    digests = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1, digest.size)
    differ = [i for i, d in enumerate(digests) if not np.array_equal(d, digests[0])]
    if differ:
        # Every process sees the same digests, so all stop here: leave the coordination service
        # together now rather than racing each other at interpreter exit.
        jax.distributed.shutdown()
        raise ValueError(f"processes {differ} run another config or code version than process 0 "
                         "(resolved config and git SHA compared); give every process the same "
                         "command and checkout")  # fmt: skip


def execute(cfg: RunConfig, run_dir: str | pathlib.Path, overrides: Sequence[str],
            run_study: StudyRun) -> dict:  # fmt: skip
    """Run `run_study(cfg, ctx)` in `run_dir`; returns the study's summary dict."""
    # Hydra sets the root logger to INFO; orbax / absl would then log every checkpoint file.
    for name in ("absl", "jax._src.xla_bridge", "orbax"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.raiseExceptions = False  # a library's malformed log call must not print tracebacks
    maybe_initialize_distributed(cfg.trainer.distributed)
    check_processes_agree(cfg)
    ctx = RunContext(run_dir, cfg, overrides=overrides)

    def finish(payload: dict, exit_code: int) -> None:
        try:
            if jax.process_index() == 0:
                rundir.write_summary(ctx.dir, payload)
        except OSError as err:  # e.g. a full disk: keep the error that ended the run
            print(f"WARNING: could not write summary.json: {err}", file=sys.stderr, flush=True)
        finally:
            ctx.close(exit_code=exit_code)

    try:
        summary = dict(run_study(cfg, ctx) or {})
    except TrainingInterrupted as err:
        finish({"status": "interrupted", "step": err.step, "error": str(err)}, err.exit_code)
        raise
    except NonFiniteLossError as err:
        finish({"status": "non_finite", "step": err.step, "error": str(err)}, 1)
        raise
    except BaseException as err:
        finish({"status": "failed", "error": f"{type(err).__name__}: {err}"}, 1)
        raise
    finish({"status": "completed", "summary": summary}, 0)
    if cfg.trainer.progress != "off":
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in summary.items())  # fmt: skip
        print(f"done: {shown}\nrun directory: {ctx.dir}", flush=True)
    return summary
