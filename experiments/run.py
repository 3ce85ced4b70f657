"""Entry point: `python -m experiments.run +exp=NAME [key=value ...]` (add `-m` for a sweep).

Hydra composes `configs/config.yaml` with the overrides against the typed configs
(`experiments.config.register_configs`); the study `cfg.study.name` then runs through
`experiments.runtime.launch.execute`. Exit status:
    0  done
    1  non-finite loss (or an unexpected error, with its traceback)
    2  invalid config, missing data file, or a run directory holding a run of another config
    3  I/O: the run or checkpoint directory is unwritable, full, or in use by another process
    128+signal after SIGTERM/SIGINT: a checkpoint was saved; rerun the same command with
       `hydra.run.dir=<run dir>` to resume
Under `-m` a failing job is recorded (its summary.json, the sweep's sweep_summary.json) and the
other jobs run; the sweep then exits 1 if any job did not complete (`experiments.sweep`).
"""

import os
import sys
import traceback

from experiments.runtime.lazy_imports import defer_heavy_imports

# First: composing the configs imports every study, and with them plotting and statistics
# modules that a run needs only once training has begun (a second start stays within seconds).
defer_heavy_imports()

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments import sweep, sweep_grid  # noqa: E402
from experiments.config import (  # noqa: E402
    CONFIG_DIR,
    register_configs,
    renamed_key_errors,
    to_run_config,
)
from experiments.rundir import SUMMARY_FILE, write_summary  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(composed: DictConfig) -> None:
    from experiments.runtime.launch import execute
    from experiments.runtime.trainer import TrainingInterrupted
    from experiments.studies import study_module

    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = hydra_cfg.runtime.output_dir
    try:
        cfg = to_run_config(composed)
        study = study_module(cfg.study.name)
        if sweep_grid.requested:  # sweep.KEY=[...]: the grid trained as one vmapped program
            from experiments.runtime.vmap_sweep import execute_sweep

            execute_sweep(cfg, run_dir, list(hydra_cfg.overrides.task), sweep_grid.requested)
            return
        job = hydra_cfg.job.num if in_sweep else None  # output_dir/<job>, its GPU slot
        execute(cfg, run_dir, list(hydra_cfg.overrides.task), study.run, job=job)
    except TrainingInterrupted as err:  # a signal stops the whole sweep too
        print(str(err), file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:
        code, prefix = _exit_status(err)
        if not in_sweep and (code is None or os.environ.get("HYDRA_FULL_ERROR") == "1"):
            raise
        if code is None:  # unexpected: show where, then let the sweep go on
            traceback.print_exc()
        print(f"error: {prefix}{err}", file=sys.stderr)
        if not in_sweep:
            sys.exit(code)
        # In a sweep the other jobs go on: record this one (if execute did not) and return.
        if not os.path.exists(os.path.join(run_dir, SUMMARY_FILE)):
            os.makedirs(run_dir, exist_ok=True)
            write_summary(run_dir, {"status": "invalid_config" if code == 2 else "failed",
                                    "error": f"{type(err).__name__}: {err}"})  # fmt: skip


def _exit_status(err: Exception) -> tuple[int | None, str]:
    """(exit status, message prefix) of an error that needs no traceback; (None, "") else."""
    from experiments.runtime.trainer import NonFiniteLossError

    if isinstance(err, NonFiniteLossError):
        return 1, ""
    if isinstance(err, ValueError | FileNotFoundError):  # bad config or missing data
        return 2, ""
    if isinstance(err, OSError):  # unwritable, full or busy run directory
        return 3, "I/O: "
    return None, ""


if __name__ == "__main__":
    try:
        sys.argv[1:], sweep_grid.requested = sweep_grid.peel(sys.argv[1:])
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if errors := renamed_key_errors(sys.argv[1:]):
        print("error: " + "\n       ".join(errors), file=sys.stderr)
        sys.exit(2)
    main()
    if sweep.failed_jobs:
        sys.exit(1)
