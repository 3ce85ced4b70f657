"""The wandb mirror of a run directory's metrics, spectra, tables and figures, behind a guard.

Local files are always written by `RunContext`; wandb only mirrors them. Any exception from
wandb prints ONE warning, disables the mirror, and the run goes on.

Every logged dict carries the training step as `trainer/step`, declared with `define_metric`
as the x-axis of every chart (so a resumed run's curves line up and nothing is dropped as
"out of order"). Spectra rows become per-layer scalars `spectra/<layer>/<quantity>` (see
`spectra_scalars`) plus one `spectra_table` per step holding the full rows; PNGs in the run's
`figures/` go up as `wandb.Image`s when the run finishes.
"""

from __future__ import annotations

import math
import os
import pathlib
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from experiments import rundir
from experiments.config import LoggerConfig

STEP_METRIC = "trainer/step"
# Spectra columns with the short names the paper uses: st(A), nr(G), nr(G)/st(A), ‖W‖₂.
SPECTRA_NAMES = {
    "act_stable_rank": "stable_rank_A",
    "grad_nuclear_rank": "nuclear_rank_G",
    "ratio": "nr_G_over_st_A",
    "weight_spectral_norm": "spectral_norm_W",
}
# Columns that say which row it is (or are constant per layer), never logged as curves.
_ROW_IDENTITY = ("step", "kind", "name", "layer", "activation", "width", "index", "quantity")
# Lower is better for these; the summary keeps the minimum and the last value.
_LOSS_METRICS = ("loss", "train_loss", "val_loss", "val_loss_full")


def _row_label(row: Mapping[str, Any]) -> str | None:
    """The layer a spectra row describes: its `name`, else a string `layer`; None if neither."""
    for key in ("name", "layer"):
        value = row.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _is_scalar(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def spectra_scalars(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """`spectra/<layer>/<quantity>` → value for every finite scalar column of every named row.

    Columns in `SPECTRA_NAMES` take their short name (`act_stable_rank` → `stable_rank_A`);
    other scalar columns keep theirs. Lists (top singular values) and identity columns are
    left to the table; rows without a layer name (e.g. one row per singular value) too.
    """
    out: dict[str, float] = {}
    for row in rows:
        label = _row_label(row)
        if label is None:
            continue
        for column, value in row.items():
            if column in _ROW_IDENTITY or not _is_scalar(value):
                continue
            out[f"spectra/{label}/{SPECTRA_NAMES.get(column, column)}"] = float(value)
    return out


class WandbMirror:
    """wandb mirror; the run id is kept in `<run dir>/wandb_run_id.txt` so a resume continues it."""

    def __init__(
        self,
        run_dir: pathlib.Path,
        config: dict,
        logger_cfg: LoggerConfig,
        tags: Mapping[str, Any],
    ):
        import wandb

        self._wandb = wandb
        id_path = pathlib.Path(run_dir) / rundir.WANDB_ID_FILE
        run_id = id_path.read_text().strip() if id_path.exists() else secrets.token_hex(4)
        id_path.write_text(run_id + "\n")
        mode = logger_cfg.mode or os.environ.get("WANDB_MODE") or "online"
        self.run = wandb.init(
            project=logger_cfg.project,
            entity=logger_cfg.entity,
            group=logger_cfg.group,
            tags=list(logger_cfg.tags),
            name=logger_cfg.name or pathlib.Path(run_dir).name,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            mode=mode,
            config={**config, "_record": dict(tags)},
        )
        self._run_dir = pathlib.Path(run_dir) if isinstance(run_dir, str) else run_dir
        self._figures_sent: set[pathlib.Path] = set()
        self._define_metrics()

    def _define_metrics(self) -> None:
        """`trainer/step` is every chart's x-axis; losses keep min and last, spectra the last."""
        self.run.define_metric(STEP_METRIC, hidden=True)
        self.run.define_metric("*", step_metric=STEP_METRIC)
        self.run.define_metric("spectra/*", step_metric=STEP_METRIC, summary="last")
        for name in _LOSS_METRICS:
            self.run.define_metric(name, step_metric=STEP_METRIC, summary="min,last")

    def log_metrics(self, step, metrics):
        self.run.log({STEP_METRIC: int(step), **metrics})

    def log_spectra(self, step, rows):
        if not rows:
            return
        self.run.log({STEP_METRIC: int(step), **spectra_scalars(rows),
                      "spectra_table": self._table(rows)})  # fmt: skip

    def log_figures(self, paths: Sequence[pathlib.Path], step: int | None = None):
        """Each PNG as `figures/<file stem>` (a `wandb.Image`), each file at most once."""
        new = [pathlib.Path(p) for p in paths if pathlib.Path(p) not in self._figures_sent]
        if not new:
            return
        payload: dict[str, Any] = {f"figures/{p.stem}": self._wandb.Image(str(p)) for p in new}
        if step is not None:
            payload[STEP_METRIC] = int(step)
        self.run.log(payload)
        self._figures_sent.update(new)

    def log_table(self, name, rows):
        if rows:
            self.run.log({f"tables/{name}": self._table(rows)})

    def _table(self, rows):
        columns = list(dict.fromkeys(k for r in rows for k in r))
        data = [[r.get(c) for c in columns] for r in rows]
        return self._wandb.Table(columns=columns, data=data)

    def finish(self, exit_code=0):
        self.log_figures(sorted((self._run_dir / rundir.FIGURES_DIR).glob("*.png")))
        self.run.finish(exit_code=exit_code)


class GuardedMirror:
    """Wraps a mirror factory; the first failure prints one warning and disables the mirror."""

    def __init__(self, name: str, factory):
        self.name = name
        self.logger: WandbMirror | None = None
        try:
            self.logger = factory()
        except Exception as err:  # a logger must never kill a run
            self._fail(err)

    def _fail(self, err: BaseException) -> None:
        self.logger = None
        print(
            f"WARNING: logger {self.name!r} failed ({type(err).__name__}: {err}); "
            "continuing with local files only",
            file=sys.stderr,
            flush=True,
        )

    def _safe(self, method: str, *args, **kwargs) -> None:
        if self.logger is None:
            return
        try:
            getattr(self.logger, method)(*args, **kwargs)
        except Exception as err:  # a logger must never kill a run
            self._fail(err)

    def log_metrics(self, step, metrics):
        self._safe("log_metrics", step, metrics)

    def log_spectra(self, step, rows):
        self._safe("log_spectra", step, rows)

    def log_table(self, name, rows):
        self._safe("log_table", name, rows)

    def log_figures(self, paths, step=None):
        self._safe("log_figures", paths, step)

    def finish(self, exit_code=0):
        self._safe("finish", exit_code)
        self.logger = None


def make_mirrors(run_dir, config: dict, logger_cfg: LoggerConfig, record_tags) -> list:
    """[guarded wandb mirror], or [] when `logger.kind` is local or wandb is disabled."""
    mode = logger_cfg.mode or os.environ.get("WANDB_MODE")
    if logger_cfg.kind != "wandb" or mode == "disabled":
        return []
    return [GuardedMirror("wandb", lambda: WandbMirror(run_dir, config, logger_cfg, record_tags))]
