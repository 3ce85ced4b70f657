"""Local metric files of a run directory.

- `metrics.jsonl`: one JSON object per logged event, `{"step": int, name: float, ...}`.
- `spectra/step_<step>.parquet`: spectra rows logged at that step (one file per call, so a
  resumed run can drop what came after its checkpoint); `pd.read_parquet(run / "spectra")`
  or `specjax.runs.load_run` reads them as one table.
- `tables/<name>.parquet`: result tables of measurement studies.

Values are converted to plain Python: 0-d arrays → float/int, arrays → nested lists.
Floats are written with `repr`, so they round-trip exactly.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def to_python(value: Any) -> Any:
    """Plain-Python (JSON/parquet friendly) copy of a metric value."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    array = np.asarray(value)
    if array.dtype.kind in "biu" and array.ndim == 0:
        return int(array)
    if array.dtype.kind in "biu":
        return array.tolist()
    if array.ndim == 0:
        return float(array)
    return array.astype(np.float64).tolist()


def _atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class JsonlWriter:
    """Append-only JSON-lines file, flushed per line; `truncate_after(step)` for resume."""

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
        row = {"step": int(step)}
        row.update({str(k): to_python(v) for k, v in metrics.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(row, allow_nan=True) + "\n")
        return row

    def truncate_after(self, step: int) -> int:
        """Drop lines whose step is > `step` (and a torn last line). Returns lines dropped."""
        if not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if int(row.get("step", 0)) > step:
                dropped += 1
            else:
                kept.append(line)
        if dropped:
            _atomic_write_bytes(self.path, "".join(s + "\n" for s in kept).encode())
        return dropped


def _rows_to_table(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]):
    import pyarrow as pa

    records = [
        {
            **{k: to_python(v) for k, v in extra.items()},
            **{str(k): to_python(v) for k, v in r.items()},
        }
        for r in rows
    ]
    columns: dict[str, list] = {}
    for name in dict.fromkeys(k for r in records for k in r):
        values = [r.get(name) for r in records]
        # Mixed int/float columns become float64 and lists list<float64>, so part files agree.
        numbers = [v for v in values if v is not None]
        if numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            if not all(isinstance(v, int) for v in numbers):
                values = [None if v is None else float(v) for v in values]
        elif numbers and all(isinstance(v, list) for v in numbers):
            values = [
                None if v is None else np.asarray(v, np.float64).ravel().tolist() for v in values
            ]
        columns[name] = values
    return pa.table(columns)


def write_parquet_rows(
    path: pathlib.Path,
    rows: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
    append: bool = False,
) -> None:
    """Write `rows` (dicts) to a parquet file atomically; `append` concatenates an existing file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        return
    table = _rows_to_table(rows, extra or {})
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if append and path.exists():
        table = pa.concat_tables([pq.read_table(path), table], promote_options="permissive")
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class SpectraWriter:
    """`spectra/step_<step>.parquet` per logged step; rows get a `step` column."""

    def __init__(self, directory: pathlib.Path):
        self.dir = pathlib.Path(directory)

    def path_for(self, step: int) -> pathlib.Path:
        return self.dir / f"step_{int(step):09d}.parquet"

    def write(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        path = self.path_for(step)
        write_parquet_rows(path, rows, extra={"step": int(step)}, append=path.exists())

    def truncate_after(self, step: int) -> int:
        dropped = 0
        if self.dir.exists():
            for path in self.dir.glob("step_*.parquet"):
                if int(path.stem.split("_")[1]) > step:
                    path.unlink()
                    dropped += 1
        return dropped


def is_finite_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True
