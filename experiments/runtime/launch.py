"""Run one study in a run directory: build the context, call the study, write `summary.json`.

`execute(cfg, run_dir, overrides, run_study, job=)` is what `experiments/run.py` calls after
Hydra composes; tests call it directly. summary.json = {"status", "summary" | "error", "step"},
with status completed | interrupted | non_finite | failed. The run lives in `run_dir` (Hydra's
directory), or in `cfg.output_dir` (`/<job>` in a sweep) when set, e.g. a gs:// bucket; a
sweep job's summary.json is then also copied to Hydra's job directory for the sweep summary.
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
from experiments.runtime import compile_cache, gpus, provenance
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


def prepare_process(cfg: RunConfig) -> dict:
    """Quiet library logs and point JAX's compilation cache at `trainer.compilation_cache_dir`
    (before anything compiles); returns the cache's record entry. Every entry path calls it."""
    # Hydra sets the root logger to INFO; orbax / absl would then log every checkpoint file.
    for name in ("absl", "jax._src.xla_bridge", "orbax"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.raiseExceptions = False  # a library's malformed log call must not print tracebacks
    return compile_cache.configure(cfg.trainer.compilation_cache_dir)


def execute(cfg: RunConfig, run_dir: str | pathlib.Path, overrides: Sequence[str],
            run_study: StudyRun, job: int | None = None) -> dict:  # fmt: skip
    """Run `run_study(cfg, ctx)` in `run_dir` (or `cfg.output_dir`); `job` is the job number in
    a sweep (None otherwise). Returns the study's summary dict."""
    gpus.pin_gpus(job, cfg.trainer.gpus_per_job)  # before JAX's backend starts
    cache = prepare_process(cfg)
    maybe_initialize_distributed(cfg.trainer.distributed)
    check_processes_agree(cfg)
    location = rundir.run_location(cfg.output_dir, run_dir, job)
    ctx = RunContext(location, cfg, overrides=overrides)
    ctx.record_entry("compilation_cache", cache)

    def finish(payload: dict, exit_code: int) -> None:
        try:
            if jax.process_index() == 0:
                rundir.write_summary(ctx.dir, payload)
                if job is not None and cfg.output_dir is not None:  # experiments.sweep reads it
                    rundir.write_summary(run_dir, payload)
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
