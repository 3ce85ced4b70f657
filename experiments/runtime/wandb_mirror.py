"""The wandb mirror of a run directory's metrics, spectra and tables, behind a guard.

Local files are always written by `RunContext`; wandb only mirrors them. Any exception from
wandb prints ONE warning, disables the mirror, and the run goes on.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import sys
from collections.abc import Mapping
from typing import Any

from experiments import rundir
from experiments.config import LoggerConfig


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

    def log_metrics(self, step, metrics):
        self.run.log(dict(metrics), step=step)

    def log_spectra(self, step, rows):
        if not rows:
            return
        self.run.log({"spectra": self._table(rows)}, step=step)

    def log_table(self, name, rows):
        if rows:
            self.run.log({f"tables/{name}": self._table(rows)})

    def _table(self, rows):
        columns = list(dict.fromkeys(k for r in rows for k in r))
        data = [[r.get(c) for c in columns] for r in rows]
        return self._wandb.Table(columns=columns, data=data)

    def finish(self, exit_code=0):
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

    def finish(self, exit_code=0):
        self._safe("finish", exit_code)
        self.logger = None


def make_mirrors(run_dir, config: dict, logger_cfg: LoggerConfig, record_tags) -> list:
    """[guarded wandb mirror], or [] when `logger.kind` is local or wandb is disabled."""
    mode = logger_cfg.mode or os.environ.get("WANDB_MODE")
    if logger_cfg.kind != "wandb" or mode == "disabled":
        return []
    return [GuardedMirror("wandb", lambda: WandbMirror(run_dir, config, logger_cfg, record_tags))]
