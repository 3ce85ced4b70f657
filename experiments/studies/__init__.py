"""Study registry: `cfg.study.name` → the module `experiments.studies.<name>`, imported lazily.

A study module (or package) exposes
    run(cfg: DictConfig, ctx: RunContext) -> dict[str, float]      # required
    plot(run_dirs: list[pathlib.Path], out_dir: pathlib.Path) -> list[pathlib.Path]  # optional
A new study needs no registration: drop `experiments/studies/<name>.py` (or a package) that
defines `run`. Names starting with "_" are private helpers, not studies.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from types import ModuleType

# Alias → module path, for a study whose module name differs from its config name.
ALIASES: dict[str, str] = {}


def available_studies() -> list[str]:
    """Names of the modules in this package (and aliases); not all need to define `run`."""
    names = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return sorted(names | set(ALIASES))


def study_module(name: str) -> ModuleType:
    """Import the study `name`; ValueError listing the valid names if it does not exist."""
    if not isinstance(name, str) or not name or name.startswith("_") or "." in name:
        raise ValueError(f"study.name must be one of {available_studies()}, got {name!r}")
    path = ALIASES.get(name, f"{__name__}.{name}")
    if importlib.util.find_spec(path) is None:
        raise ValueError(f"study.name={name!r} is not a study; valid names: {available_studies()}")
    module = importlib.import_module(path)
    if not callable(getattr(module, "run", None)):
        raise ValueError(f"study module {path} has no run(cfg, ctx) function")
    return module
