"""Entry point: `python -m experiments.run +exp=NAME [key=value ...]` (add `-m` for a sweep).

Hydra composes `configs/config.yaml` with the overrides; everything else lives in tested
modules: `experiments.runtime.launch.execute` validates the config, builds the run context
and calls the study (`experiments.studies.<cfg.study.name>.run`).
Exit status: 0 done; 1 non-finite loss; 2 invalid config or missing data file;
128+signal after SIGTERM/SIGINT
(a checkpoint was saved: run the same command with `hydra.run.dir=<run dir>` to resume).
"""

import os
import pathlib
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.schema import register_schemas

CONFIG_DIR = str(pathlib.Path(__file__).resolve().parent.parent / "configs")
register_schemas()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from experiments.runtime.launch import execute
    from experiments.runtime.trainer import NonFiniteLossError, TrainingInterrupted

    hydra_cfg = HydraConfig.get()
    try:
        execute(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))
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


if __name__ == "__main__":
    main()
