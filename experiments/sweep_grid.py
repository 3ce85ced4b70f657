"""The `sweep.<key>=[v1,v2,...]` grid of a vmapped sweep: parsing, checks, member configs.

    python -m experiments.run +exp=nanogpt_muon sweep.seed='[0,1,2]' sweep.optim.lr='[1e-3,2e-3]'

`peel(argv)` takes the `sweep.*` arguments off the command line before Hydra sees them. The
grid's members are the cartesian product of the lists, the last key varying fastest; member k
is the run config with its values set (`member_configs`), every `__post_init__` check run on
those concrete values. Only keys that keep the compiled program's shapes can be swept this way:
`seed` and the optimizer's numeric hyper-parameters (the study then checks each traces).
Anything else (model width, batch size, `trainer.max_steps`, a choice) is a separate program:
Hydra's `-m` runs it as separate jobs.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

PREFIX = "sweep."
requested: dict[str, list] = {}  # set by experiments/run.py from the command line


def use_multirun_hint(key: str, values: Sequence[Any]) -> str:
    shown = ",".join(str(v) for v in values)
    return (f"sweep.{key} needs one compiled program per value: run separate jobs with Hydra's "
            f"-m instead, e.g. python -m experiments.run -m ... {key}={shown}")  # fmt: skip


def peel(argv: Sequence[str]) -> tuple[list[str], dict[str, list]]:
    """(the other arguments, {key: values}) from a command line; ValueError on a bad `sweep.*`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    rest, grid = [], {}
    for arg in argv:
        if not arg.startswith(PREFIX):
            rest.append(arg)
            continue
        key, sep, text = arg[len(PREFIX) :].partition("=")
        if not sep or not key:
            raise ValueError(f"{arg!r}: a vmapped sweep is given as sweep.KEY='[v1,v2,...]'")
        if key in grid:
            raise ValueError(f"sweep.{key} is given twice")
        try:
            value = OverridesParser.create().parse_override(f"{key}={text}").value()
        except Exception as err:  # Hydra's grammar error names the bad text
            raise ValueError(f"{arg!r} is not a list of numbers: {err}") from None
        grid[key] = check_values(key, value)
    return rest, grid


def check_values(key: str, value: Any) -> list:
    """The list of numbers `value`; ValueError for a non-list, an empty list or a non-number."""
    if not isinstance(value, list):
        raise ValueError(f"sweep.{key} must be a list such as sweep.{key}='[1,2]' (brackets "
                         f"included), got {value!r}")  # fmt: skip
    if not value:
        raise ValueError(f"sweep.{key} is an empty list; give at least one value")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"sweep.{key}={value!r}: {v!r} is not a number; "
                             + use_multirun_hint(key, value))  # fmt: skip
    return list(value)


def _field(obj: Any, name: str, path: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
    if name not in fields:
        raise ValueError(f"sweep.{path}: unknown key {name!r}; keys here: {sorted(fields)}")
    return fields[name]


def _replace_path(obj: Any, parts: Sequence[str], value: Any, path: str) -> Any:
    """A copy of `obj` with the dotted key set (each dataclass on the way re-checked)."""
    field = _field(obj, parts[0], path)
    if len(parts) > 1:
        inner = _replace_path(getattr(obj, parts[0]), parts[1:], value, path)
        return dataclasses.replace(obj, **{parts[0]: inner})
    return dataclasses.replace(obj, **{parts[0]: _coerce(field, value, path)})


def _coerce(field: dataclasses.Field, value: Any, path: str) -> Any:
    """An int given for a float key becomes a float; a float for an int key is refused."""
    kind = str(field.type)
    if "bool" in kind or "str" in kind:
        raise ValueError(f"sweep.{path} is a {kind} key, not a number; "
                         + use_multirun_hint(path, [value]))  # fmt: skip
    if "float" in kind:
        return float(value)
    if "int" in kind and not float(value).is_integer():
        raise ValueError(f"sweep.{path} takes ints, got {value!r}")
    return int(value) if "int" in kind else value


def check_keys(cfg: Any, grid: dict[str, list]) -> None:
    """ValueError for an unknown key or one outside seed / optim.* (another program: use -m)."""
    for key, values in grid.items():
        parts = key.split(".")
        obj = cfg
        for i, name in enumerate(parts):  # unknown keys first: the clearer message
            _field(obj, name, key)
            if i < len(parts) - 1:
                obj = getattr(obj, name)
        if not (key == "seed" or (key.startswith("optim.") and len(parts) == 2)):
            raise ValueError(f"sweep.{key} changes the shapes or the structure of the compiled "
                             "program (only seed and optim.<numeric key> can be vmapped); "
                             + use_multirun_hint(key, values))  # fmt: skip


def members(grid: dict[str, list]) -> list[dict[str, Any]]:
    """The grid's points in order: the cartesian product, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, point, strict=True)) for point in itertools.product(*grid.values())]


def member_configs(cfg: Any, grid: dict[str, list]) -> list[Any]:
    """One run config per grid point, every value checked as a command-line value would be."""
    check_keys(cfg, grid)
    configs = []
    for point in members(grid):
        member = cfg
        for key, value in point.items():
            member = _replace_path(member, key.split("."), value, key)
        configs.append(member)
    return configs


def member_overrides(overrides: Sequence[str], point: dict[str, Any]) -> list[str]:
    """The command-line overrides a separate run of this member would have."""
    swept = set(point)
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in swept]
    return [*kept, *(f"{k}={v}" for k, v in point.items())]
