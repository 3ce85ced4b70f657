"""Load run directories written by `python -m experiments.run` into pandas DataFrames.

    run = load_run("outputs/quickstart/2026-11-25_05-00-00")
    run.metrics     # one row per logged step (train and eval lines of a step merged)
    run.spectra     # spectra rows (step, layer, quantity, statistics, singular_values)
    run.tables      # {name: DataFrame} of tables/<name>.parquet
    run.config      # the resolved config (dict); run.record, run.summary

    runs = load_runs(["multirun/quickstart/2026-11-25_05-10-00"])   # a sweep dir or many runs
    runs.metrics    # all runs stacked, with a "run" column and the overridden config keys

This module only reads files (it never imports `experiments`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

__all__ = ["Run", "Runs", "find_run_dirs", "load_run", "load_runs"]


@dataclasses.dataclass
class Run:
    """One run directory's record and results."""

    path: pathlib.Path
    config: dict[str, Any]
    overrides: list[str]
    record: dict[str, Any]
    summary: dict[str, Any]
    metrics: pd.DataFrame
    spectra: pd.DataFrame
    tables: dict[str, pd.DataFrame]

    @property
    def label(self) -> str:
        """Short name: the command-line overrides other than +exp/hydra ones, else the dir name."""
        keep = [o for o in self.overrides if not o.startswith(("+exp=", "hydra.", "exp="))]
        return " ".join(keep) if keep else self.path.name

    @property
    def study(self) -> str | None:
        return (self.config.get("study") or {}).get("name")


@dataclasses.dataclass
class Runs:
    """Several runs stacked into long DataFrames keyed by a `run` column."""

    runs: list[Run]
    metrics: pd.DataFrame
    spectra: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    configs: pd.DataFrame  # one row per run: flattened config
    config_keys: list[str]  # the config columns added to the stacked frames


def _read_yaml(path: pathlib.Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text()) if path.exists() else None


def read_metrics(path: pathlib.Path) -> pd.DataFrame:
    """metrics.jsonl → DataFrame with one row per step (rows of the same step merged)."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill
    if not rows:
        return pd.DataFrame({"step": pd.Series([], dtype="int64")})
    frame = pd.DataFrame(rows)
    return frame.groupby("step", as_index=False, sort=True).first()


def read_parquet_dir(directory: pathlib.Path) -> pd.DataFrame:
    parts = (
        sorted(pathlib.Path(directory).glob("*.parquet"))
        if pathlib.Path(directory).is_dir()
        else []
    )
    frames = [pd.read_parquet(p) for p in parts]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def is_run_dir(path: pathlib.Path) -> bool:
    return (path / "config.yaml").exists() and (path / "record.json").exists()


def find_run_dirs(paths: Iterable[str | pathlib.Path]) -> list[pathlib.Path]:
    """Run directories among `paths` and below them (a sweep directory holds one per job)."""
    found: list[pathlib.Path] = []
    for raw in paths:
        path = pathlib.Path(raw).expanduser()
        if not path.exists():
            raise ValueError(f"run path {str(path)!r} does not exist")
        if is_run_dir(path):
            found.append(path)
            continue
        below = sorted({p.parent for p in path.rglob("record.json") if is_run_dir(p.parent)})
        if not below:
            raise ValueError(
                f"{str(path)!r} is not a run directory and contains none "
                "(no config.yaml + record.json)"
            )
        found.extend(below)
    return found


def load_run(path: str | pathlib.Path) -> Run:
    """Read one run directory (see module docstring)."""
    path = pathlib.Path(path).expanduser()
    if not is_run_dir(path):
        raise ValueError(
            f"{str(path)!r} is not a run directory (needs config.yaml and record.json)"
        )
    summary_path = path / "summary.json"
    tables_dir = path / "tables"
    tables = (
        {p.stem: pd.read_parquet(p) for p in sorted(tables_dir.glob("*.parquet"))}
        if tables_dir.is_dir()
        else {}
    )
    return Run(
        path=path,
        config=_read_yaml(path / "config.yaml") or {},
        overrides=list(_read_yaml(path / "overrides.yaml") or []),
        record=json.loads((path / "record.json").read_text()),
        summary=json.loads(summary_path.read_text())
        if summary_path.exists()
        else {"status": "running"},
        metrics=read_metrics(path / "metrics.jsonl"),
        spectra=read_parquet_dir(path / "spectra"),
        tables=tables,
    )


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}; lists kept as values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_runs(
    paths: Iterable[str | pathlib.Path] | str | pathlib.Path,
    config_keys: Iterable[str] | None = None,
) -> Runs:
    """Load many runs (run dirs or sweep dirs) and stack their frames with a `run` column.

    Each stacked frame also gets the config keys in `config_keys` (default: the keys that differ
    between the runs, e.g. `optim.name`, `seed`), so `runs.metrics.groupby("optim.name")` works.
    """
    if isinstance(paths, str | pathlib.Path):
        paths = [paths]
    runs = [load_run(p) for p in find_run_dirs(paths)]
    configs = pd.DataFrame([{"run": str(r.path), **flatten(r.config)} for r in runs])
    if config_keys is None:
        config_keys = [
            c for c in configs.columns
            if c != "run" and configs[c].astype(str).nunique(dropna=False) > 1
        ]  # fmt: skip
    config_keys = list(config_keys)
    missing = [k for k in config_keys if k not in configs.columns]
    if missing:
        raise ValueError(f"config_keys {missing} not in the runs' configs")

    def stack(frames: list[tuple[Run, pd.DataFrame]]) -> pd.DataFrame:
        parts = []
        for run, frame in frames:
            if len(frame):
                extra = configs.loc[configs["run"] == str(run.path), config_keys].iloc[0].to_dict()
                parts.append(frame.assign(run=str(run.path), **extra))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    table_names = sorted({name for r in runs for name in r.tables})
    return Runs(
        runs=runs,
        metrics=stack([(r, r.metrics) for r in runs]),
        spectra=stack([(r, r.spectra) for r in runs]),
        tables={
            name: stack([(r, r.tables.get(name, pd.DataFrame())) for r in runs])
            for name in table_names
        },
        configs=configs,
        config_keys=config_keys,
    )
