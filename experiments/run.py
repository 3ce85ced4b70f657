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
"""

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.config import CONFIG_DIR, register_configs, renamed_key_errors, to_run_config

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(composed: DictConfig) -> None:
    from experiments.runtime.launch import execute
    from experiments.runtime.trainer import NonFiniteLossError, TrainingInterrupted
    from experiments.studies import study_module

    hydra_cfg = HydraConfig.get()
    try:
        cfg = to_run_config(composed)
        study = study_module(cfg.study.name)
        execute(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task), study.run)
    except TrainingInterrupted as err:
        print(str(err), file=sys.stderr)
        sys.exit(err.exit_code)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, FileNotFoundError) as err:  # bad config or missing data: no traceback
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # unwritable, full or busy run directory: no traceback
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: I/O: {err}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    if errors := renamed_key_errors(sys.argv[1:]):
        print("error: " + "\n       ".join(errors), file=sys.stderr)
        sys.exit(2)
    main()
