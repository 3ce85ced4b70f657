"""The studies, by the name a config gives them (`study=NAME`, set by each `+exp=NAME`).

A study module defines
    Config                                   its typed config (dataclass), group `study/<name>`
    run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]        the summary
    plot(run_dirs, out_dir) -> list[Path]    optional: its standard figures
Modules starting with "_" are helpers shared by studies.
"""

from __future__ import annotations

import importlib
from types import ModuleType

STUDIES = (
    "quickstart",
    "nanogpt",
    "spiked_rf",
    "spiked_rf_sweep",
    "one_step_check",
    "sparse_regression",
    "ntk_rank",
    "ntk_width",
    "ntk_sketch",
)


def study_module(name: str) -> ModuleType:
    """The module of study `name`; ValueError listing the valid names."""
    if name not in STUDIES:
        raise ValueError(f"study.name must be one of {list(STUDIES)}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def config_class(name: str) -> type:
    return study_module(name).Config
