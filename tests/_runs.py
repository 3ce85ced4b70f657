"""Run an experiment in-process as `python -m experiments.run OVERRIDES` would."""

from experiments.config import compose
from experiments.runtime.launch import execute
from experiments.studies import study_module


def run_experiment(run_dir, overrides):
    overrides = list(overrides)
    cfg = compose(overrides)
    return execute(cfg, run_dir, overrides, study_module(cfg.study.name).run)
