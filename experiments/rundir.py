"""The run directory: its file names and formats, and the only code that writes or reads them.

    <run dir>/
      config.yaml  overrides.yaml    resolved config; command-line overrides
      record.json                    git SHA + dirty flag, packages, devices, argv, datasets,
                                     resumes
      metrics.jsonl                  one JSON object per logged event: {"step": k, name: value, ...}
      spectra/step_<k>.parquet       spectra rows logged at step k (with a "step" column)
      tables/<name>.parquet          result tables (rows of a training step carry "step")
      checkpoints/<k>/               orbax checkpoints (experiments.runtime.checkpoint)
      figures/                       PNGs from `python -m experiments.plot`
      summary.json                   {"status": completed|interrupted|non_finite|failed, ...}
      final_params.msgpack, nanogpt.json  a trained model for `python -m experiments.sample`
      wandb_run_id.txt, wandb/       the wandb mirror's run id and files
      .lock                          held by the process writing the run

One directory holds one run: `claim` locks it, resumes a run of the same config, refuses one of
another config (naming the keys that differ) and sets a previous run aside, never mixing two.

Writers: `claim`, `append_metrics`, `write_spectra`, `append_table`, `write_record`, `add_dataset`,
`write_summary`, `truncate_after` (resume). Readers: `load_run`, `load_runs`, `read_metrics`,
`read_table`. Values are written as plain Python (0-d arrays → numbers, arrays → lists);
floats round-trip exactly. Every file but the append-only metrics is replaced atomically.

A run directory may be local or an object-store URI (`gs://bucket/runs/x`, `output_dir=`): every
function here takes either, a `str`, `pathlib.Path` or `epath.Path`; local paths stay
`pathlib.Path`. What differs on an object store (no rename, no append, no lock) is in
`experiments.run_storage`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import yaml

from experiments import run_storage
from experiments.run_storage import AnyPath, as_path, is_remote

PathLike = str | os.PathLike  # a str, pathlib.Path or etils.epath.Path (local or gs://)

CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
RECORD_FILE = "record.json"
METRICS_FILE = "metrics.jsonl"
SPECTRA_DIR = "spectra"
TABLES_DIR = "tables"
STEP_COLUMN = "step"  # in a table: the training step its row was logged at (see truncate_after)
CHECKPOINT_DIR = "checkpoints"
CORRUPT_CHECKPOINT_DIR = "checkpoints.corrupt"
FIGURES_DIR = "figures"
SUMMARY_FILE = "summary.json"
PARAMS_FILE = "final_params.msgpack"
MODEL_FILE = "nanogpt.json"
WANDB_ID_FILE = "wandb_run_id.txt"
LOCK_FILE = ".lock"
# Everything a run writes (Hydra's own .hydra/ and log file are left where they are).
RUN_FILES = (CONFIG_FILE, OVERRIDES_FILE, RECORD_FILE, METRICS_FILE, SPECTRA_DIR, TABLES_DIR,
             CHECKPOINT_DIR, CORRUPT_CHECKPOINT_DIR, FIGURES_DIR, SUMMARY_FILE, PARAMS_FILE,
             MODEL_FILE, WANDB_ID_FILE, "wandb")  # fmt: skip


class RunDirectoryConflict(ValueError):
    """The run directory holds a run of another config."""


class RunDirectoryInUse(OSError):
    """Another process is writing this run directory."""


# --- claiming a directory ----------------------------------------------------------------------
def lock(run_dir: PathLike):
    """Hold `.lock` for this process's lifetime; RunDirectoryInUse at once if another holds it.

    On an object store there is no lock: `.lock` only names the holder (`run_storage`)."""
    import fcntl

    if is_remote(run_dir):
        return run_storage.HolderNote(as_path(run_dir) / LOCK_FILE, run_storage.holder_text())
    handle = (pathlib.Path(run_dir) / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunDirectoryInUse(f"run directory {run_dir} is in use by {holder}; wait for it to "
                                "finish or choose another hydra.run.dir") from None  # fmt: skip
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()
    return handle


def run_location(output_dir: str | None, hydra_dir: PathLike, job: int | None = None) -> AnyPath:
    """Where a run's files go: Hydra's output directory, or `output_dir` when set (local or a URI
    such as gs://bucket/runs/x, which Hydra's own directory cannot be), `<output_dir>/<job>` for
    job `job` of a sweep, as in Hydra's sweep layout."""
    if output_dir is None:
        return as_path(hydra_dir)
    where = as_path(output_dir)
    return where if job is None else where / str(int(job))


def config_differences(old: Mapping, new: Mapping, may_differ: Iterable[str] = ()) -> list[str]:
    """`key: old → new` for every flattened key that differs, except those in `may_differ`."""
    a, b, may_differ = flatten(old), flatten(new), set(may_differ)
    keys = [k for k in dict.fromkeys([*a, *b]) if k not in may_differ]
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def set_aside(run_dir: PathLike) -> AnyPath:
    """Move a previous run's files into `<run dir>.replaced-<UTC time>`; returns that path."""
    run_dir = as_path(run_dir)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    target.mkdir(parents=True, exist_ok=False)
    for name in RUN_FILES:
        if (run_dir / name).exists():
            run_storage.move(run_dir / name, target / name)
    return target


def claim(run_dir: PathLike, config: Mapping, resume: str,
          may_differ: Iterable[str]) -> AnyPath | None:  # fmt: skip
    """Make `run_dir` hold this run. Returns where an earlier run's files were moved, or None
    (a new directory, or a run of the same config with a checkpoint to continue from).
    RunDirectoryConflict when it holds a run of another config and `resume` is not "never";
    nothing is moved then."""
    run_dir = as_path(run_dir)
    if not any((run_dir / name).exists() for name in RUN_FILES):
        return None
    old = _read_yaml(run_dir / CONFIG_FILE)
    if resume != "never" and old is not None:
        differences = config_differences(old, config, may_differ)
        if differences:
            raise RunDirectoryConflict(
                f"run directory {run_dir} holds a run of another config ({'; '.join(differences)})."
                " To continue that run, rerun it with its own config (its config.yaml); to "
                "replace it, add trainer.resume=never (its files are then kept aside); or choose "
                "another hydra.run.dir"
            )
        if any(p.name.isdigit() for p in (run_dir / CHECKPOINT_DIR).glob("*")):
            return None  # resume
    return set_aside(run_dir)


# --- writing -----------------------------------------------------------------------------------
def to_python(value: Any) -> Any:
    """Plain-Python (JSON / parquet friendly) copy of a metric value."""
    if isinstance(value, bool | str | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    array = np.asarray(value)
    if array.dtype.kind in "biu":
        return int(array) if array.ndim == 0 else array.tolist()
    return float(array) if array.ndim == 0 else array.astype(np.float64).tolist()


def atomic_write(path: PathLike, data: str | bytes) -> None:
    """Write to a sibling temporary file, then rename (one upload on an object store): readers
    never see half a file."""
    run_storage.replace_file(as_path(path), data)


def append_metrics(run_dir: PathLike, step: int, metrics: Mapping[str, Any]) -> dict:
    """Append one line {"step": step, **metrics} to metrics.jsonl; returns the row written."""
    row = {"step": int(step), **{str(k): to_python(v) for k, v in metrics.items()}}
    run_storage.append_text(as_path(run_dir) / METRICS_FILE, json.dumps(row, allow_nan=True) + "\n")
    return row


def _arrow_table(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]):
    import pyarrow as pa

    records = [{**extra, **{str(k): to_python(v) for k, v in r.items()}} for r in rows]
    columns: dict[str, list] = {}
    for name in dict.fromkeys(k for r in records for k in r):
        values = [r.get(name) for r in records]
        present = [v for v in values if v is not None]
        # Mixed int/float columns become float64 and lists list<float64>, so part files agree.
        if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
            if not all(isinstance(v, int) for v in present):
                values = [None if v is None else float(v) for v in values]
        elif present and all(isinstance(v, list) for v in present):
            values = [None if v is None else np.ravel(np.asarray(v, np.float64)).tolist()
                      for v in values]  # fmt: skip
        columns[name] = values
    return pa.table(columns)


def _parquet_source(path: AnyPath) -> Any:
    """What pyarrow / pandas read: the local file name, or an object's bytes (not pyarrow's own
    filesystem for a URI, so reads and writes go through one client)."""
    return io.BytesIO(path.read_bytes()) if is_remote(path) else path


def write_parquet(path: PathLike, rows: Sequence[Mapping[str, Any]], *, append=False,
                  extra: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Rows (dicts) → parquet, atomically; `append` concatenates an existing file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        return
    table = _arrow_table(rows, extra or {})
    path = as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if append and path.exists():
        old = pq.read_table(_parquet_source(path))
        table = pa.concat_tables([old, table], promote_options="permissive")
    _replace_parquet(path, table)


def _replace_parquet(path: AnyPath, table) -> None:
    """A pyarrow table → `path`, replaced atomically (readers see the old file or the new)."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    run_storage.replace_file(path, buffer.getvalue())


def spectra_path(run_dir: PathLike, step: int) -> AnyPath:
    return as_path(run_dir) / SPECTRA_DIR / f"step_{int(step):09d}.parquet"


def write_spectra(run_dir: PathLike, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
    """Spectra rows of one step → spectra/step_<k>.parquet (a "step" column added)."""
    path = spectra_path(run_dir, step)
    write_parquet(path, rows, append=path.exists(), extra={"step": int(step)})


def append_table(run_dir: PathLike, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
    if not name or "/" in name:
        raise ValueError(f"table name must be a non-empty file name, got {name!r}")
    write_parquet(as_path(run_dir) / TABLES_DIR / f"{name}.parquet", rows, append=True)


def _truncate_table(path: AnyPath, step: int) -> None:
    """Drop the rows of one table whose `step` is after `step`, atomically; rows at or before
    it and rows with no step (null) stay. The file goes when no row is left (as a table with no
    rows is never written). A table without a numeric `step` column is a run-level table and is
    left as it is."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = _parquet_source(path)
    schema = pq.read_schema(source)
    if STEP_COLUMN not in schema.names:
        return
    kind = schema.field(STEP_COLUMN).type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return
    table = pq.read_table(source)
    steps = table.column(STEP_COLUMN)
    keep = pc.or_kleene(pc.is_null(steps, nan_is_null=True), pc.less_equal(steps, step))
    kept = table.filter(keep)
    if kept.num_rows == table.num_rows:
        return  # nothing logged after `step`: the file is not rewritten
    if kept.num_rows == 0:
        path.unlink()
    else:
        _replace_parquet(path, kept)


def truncate_after(run_dir: PathLike, step: int) -> None:
    """Drop what was logged after `step` (on resume from a checkpoint at `step`; -1: all of it):
    metric lines (and a torn last line), spectra files, and table rows whose `step` > `step`.

    Rows logged at step k describe the state after k updates and are written before that step's
    checkpoint, so a run resumed from k logs again exactly the rows of steps > k. A table's
    `step` column is read as that training step (the trainer's, as in `gate_check` and
    `full_spectra`, logged from the trainer's spectra callback); a table without one is a
    run-level table, kept whole. The trainer's resume is the only caller: a measurement study
    whose `step` counts its own iterations (spiked_rf) never trains, so never truncates. Each
    file is replaced atomically; a kill midway leaves some files truncated, which the next
    resume finishes."""
    run_dir = as_path(run_dir)
    path = run_dir / METRICS_FILE
    if path.exists():
        kept = []
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    kept.append(line + "\n")
            except json.JSONDecodeError:
                continue
        atomic_write(path, "".join(kept))
    for part in (run_dir / SPECTRA_DIR).glob("step_*.parquet"):
        if int(part.stem.split("_")[1]) > step:
            part.unlink()
    for table in _parquet_files(run_dir / TABLES_DIR):
        _truncate_table(table, step)


def write_record(run_dir: PathLike, config: Mapping, overrides: Sequence[str],
                 start: Mapping[str, Any], environment: Mapping[str, Any]) -> dict:  # fmt: skip
    """Config, overrides and record.json at the start of a run; a re-run appends to "resumes"."""
    run_dir = as_path(run_dir)
    path = run_dir / RECORD_FILE
    if path.exists():
        record = json.loads(path.read_text())
        record.setdefault("resumes", []).append(dict(start))
    else:
        record = {"started": dict(start), **environment, "datasets": [], "resumes": []}
        atomic_write(run_dir / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))
        atomic_write(run_dir / OVERRIDES_FILE, yaml.safe_dump(list(overrides)))
    atomic_write(path, json.dumps(record, indent=1) + "\n")
    return record


def add_dataset(run_dir: PathLike, dataset: Mapping[str, Any]) -> None:
    """Record a dataset's identity in record.json (replacing an entry with the same name)."""
    path = as_path(run_dir) / RECORD_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    others = [d for d in record.get("datasets", []) if d.get("name") != dataset["name"]]
    record["datasets"] = [*others, {k: to_python(v) for k, v in dataset.items()}]
    atomic_write(path, json.dumps(record, indent=1) + "\n")


def write_summary(run_dir: PathLike, payload: Mapping[str, Any]) -> None:
    atomic_write(as_path(run_dir) / SUMMARY_FILE,
                 json.dumps(to_python(dict(payload)), indent=1) + "\n")  # fmt: skip


# --- reading -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """One run directory's record and results."""

    path: AnyPath  # pathlib.Path, or epath.Path for a gs:// run
    config: dict[str, Any]
    overrides: list[str]
    record: dict[str, Any]
    summary: dict[str, Any]
    metrics: pd.DataFrame
    spectra: pd.DataFrame
    tables: dict[str, pd.DataFrame]

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
    configs: pd.DataFrame  # one row per run: the flattened config
    config_keys: list[str]  # the config columns added to the stacked frames


def _read_yaml(path: AnyPath) -> Any:
    return yaml.safe_load(path.read_text()) if path.exists() else None


def read_metrics(run_dir: PathLike) -> pd.DataFrame:
    """metrics.jsonl → one row per step (the train and eval lines of a step merged)."""
    path = as_path(run_dir) / METRICS_FILE
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill
    if not rows:
        return pd.DataFrame({"step": pd.Series([], dtype="int64")})
    return pd.DataFrame(rows).groupby("step", as_index=False, sort=True).first()


def _parquet_files(directory: AnyPath) -> list[AnyPath]:
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


def _read_parquet_dir(directory: AnyPath) -> pd.DataFrame:
    frames = [f for f in (pd.read_parquet(_parquet_source(p)) for p in _parquet_files(directory))
              if len(f)]  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_table(run_dir: PathLike, name: str) -> pd.DataFrame:
    return pd.read_parquet(_parquet_source(as_path(run_dir) / TABLES_DIR / f"{name}.parquet"))


def is_run_dir(path: PathLike) -> bool:
    path = as_path(path)
    return (path / CONFIG_FILE).exists() and (path / RECORD_FILE).exists()


def _record_dirs_below(path: AnyPath) -> set[AnyPath]:
    """Directories below `path` holding a record.json (epath cannot `rglob` an object store)."""
    if not is_remote(path):
        return {p.parent for p in path.rglob(RECORD_FILE)}
    return {path / d for d, files in run_storage.walk_files(path) if RECORD_FILE in files}


def find_run_dirs(paths: Iterable[PathLike]) -> list[AnyPath]:
    """Run directories among `paths` and below them (a sweep directory holds one per job; runs
    set aside by `claim` are only read when named)."""
    found: list[AnyPath] = []
    for raw in paths:
        path = as_path(raw)
        if not path.exists():
            raise ValueError(f"run path {str(path)!r} does not exist")
        if is_run_dir(path):
            found.append(path)
            continue
        below = sorted(d for d in _record_dirs_below(path)
                       if is_run_dir(d) and ".replaced-" not in d.name)  # fmt: skip
        if not below:
            raise ValueError(
                f"{str(path)!r} is not a run directory and contains none "
                f"(no {CONFIG_FILE} + {RECORD_FILE})"
            )
        found.extend(below)
    return found


def load_run(path: PathLike) -> Run:
    """Read one run directory (see the module docstring)."""
    path = as_path(path)
    if not is_run_dir(path):
        raise ValueError(f"{str(path)!r} is not a run directory (needs {CONFIG_FILE} and "
                         f"{RECORD_FILE})")  # fmt: skip
    tables_dir = path / TABLES_DIR
    summary = path / SUMMARY_FILE
    return Run(
        path=path,
        config=_read_yaml(path / CONFIG_FILE) or {},
        overrides=list(_read_yaml(path / OVERRIDES_FILE) or []),
        record=json.loads((path / RECORD_FILE).read_text()),
        summary=json.loads(summary.read_text()) if summary.exists() else {"status": "running"},
        metrics=read_metrics(path),
        spectra=_read_parquet_dir(path / SPECTRA_DIR),
        tables={p.stem: pd.read_parquet(_parquet_source(p)) for p in _parquet_files(tables_dir)},
    )


def run_labels(runs: Sequence[Run]) -> list[str]:
    """A short label per run: its command-line overrides that differ between the runs."""
    given = [dict(o.lstrip("+").split("=", 1) for o in run.overrides
                  if "=" in o and not o.startswith("hydra.")) for run in runs]  # fmt: skip
    keys = [k for k in dict.fromkeys(k for g in given for k in g)
            if len({g.get(k) for g in given}) > 1]  # fmt: skip
    return [" ".join(f"{k}={g[k]}" for k in keys if k in g) or run.path.name
            for run, g in zip(runs, given, strict=True)]  # fmt: skip


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}; lists are kept as values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_runs(paths: Iterable[PathLike] | PathLike,
              config_keys: Iterable[str] | None = None) -> Runs:  # fmt: skip
    """Load run or sweep directories and stack their frames with a `run` column.

    Each stacked frame also gets the config keys in `config_keys` (default: the keys that differ
    between the runs, e.g. `optim.name`, `seed`), so `runs.metrics.groupby("optim.name")` works.
    """
    if isinstance(paths, str | os.PathLike):
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

    names = sorted({name for r in runs for name in r.tables})
    return Runs(
        runs=runs,
        metrics=stack([(r, r.metrics) for r in runs]),
        spectra=stack([(r, r.spectra) for r in runs]),
        tables={n: stack([(r, r.tables.get(n, pd.DataFrame())) for r in runs]) for n in names},
        configs=configs,
        config_keys=config_keys,
    )
