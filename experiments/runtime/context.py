"""`RunContext`: what a study gets to talk to its run directory, random streams and devices.

Contract used by every study (`experiments/studies/*.py`):

    ctx.dir                      pathlib.Path, the run directory (Hydra's output dir)
    ctx.cfg                      DictConfig, the resolved config
    ctx.mesh                     1-D `Mesh` with axis "data" over all devices
    ctx.key(stream)              raw uint32 key fold_in(PRNGKey(cfg.seed), sha256(stream)[:31 bits])
    ctx.log_metrics(step, m)     one JSON line {"step": step, **m} in metrics.jsonl (+ wandb)
    ctx.log_spectra(step, rows)  rows → spectra/step_<step>.parquet with a "step" column (+ wandb)
    ctx.log_table(name, rows)    rows → tables/<name>.parquet, appending (+ wandb table)
    ctx.record_dataset(name, size, sha256, **extra)   dataset identity → record.json
    ctx.progress(total, desc)    context manager with .update(n=1, **postfix)
    ctx.figure_dir()             <run dir>/figures, created

Only process 0 writes files; other processes' calls are no-ops (multi-host runs).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from jax.sharding import Mesh
from omegaconf import DictConfig, OmegaConf

from experiments.runtime import loggers, metrics, record, seeds
from experiments.runtime.mesh import make_data_mesh
from experiments.runtime.progress import Progress

METRICS_FILE = "metrics.jsonl"
SPECTRA_DIR = "spectra"
TABLES_DIR = "tables"
FIGURES_DIR = "figures"
CHECKPOINT_DIR = "checkpoints"


class RunContext:
    """The run directory, resolved config, device mesh, random streams and loggers of one run."""

    def __init__(
        self,
        run_dir: str | pathlib.Path,
        cfg: DictConfig,
        mesh: Mesh | None = None,
        overrides: Sequence[str] = (),
        write_record: bool = True,
    ):
        self.dir = pathlib.Path(run_dir).resolve()
        self.cfg = cfg
        self.mesh = mesh if mesh is not None else make_data_mesh()
        self.is_writer = jax.process_index() == 0
        if self.is_writer:
            self.dir.mkdir(parents=True, exist_ok=True)
        self._metrics = metrics.JsonlWriter(self.dir / METRICS_FILE)
        self._spectra = metrics.SpectraWriter(self.dir / SPECTRA_DIR)
        self._remote: list[loggers.GuardedLogger] = []
        if write_record and self.is_writer:
            rec = record.write_start_record(self.dir, cfg, list(overrides))
            logger_cfg = cfg.get("logger") or {}
            kind = logger_cfg.get("kind", "local")
            tags = {"git": rec["started"]["git"], "devices": rec["devices"]}
            plain_cfg = OmegaConf.to_container(cfg, resolve=True)
            self._remote = loggers.make_remote_loggers(kind, self.dir, plain_cfg, logger_cfg, tags)

    # --- randomness -----------------------------------------------------------------
    def key(self, stream: str) -> jax.Array:
        """Named stream key from `cfg.seed` (stable hash of the name, same in every process)."""
        return seeds.stream_key(int(self.cfg.seed), stream)

    # --- local files + remote mirrors -------------------------------------------------
    def log_metrics(self, step: int, metrics_: Mapping[str, Any]) -> None:
        """Append {"step": step, **metrics} to metrics.jsonl (arrays → floats/lists); mirror."""
        if not self.is_writer:
            return
        row = self._metrics.write(step, metrics_)
        row.pop("step")
        for logger in self._remote:
            logger.log_metrics(int(step), row)

    def log_spectra(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows (each gets `step`) to spectra/step_<step>.parquet, mirror remotely."""
        if not self.is_writer or not rows:
            return
        self._spectra.write(step, rows)
        plain = [{k: metrics.to_python(v) for k, v in r.items()} for r in rows]
        for logger in self._remote:
            logger.log_spectra(int(step), plain)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows to tables/<name>.parquet (created on first call), mirror remotely."""
        if not name or "/" in name:
            raise ValueError(f"table name must be a non-empty file name, got {name!r}")
        if not self.is_writer or not rows:
            return
        metrics.write_parquet_rows(self.dir / TABLES_DIR / f"{name}.parquet", rows, append=True)
        plain = [{k: metrics.to_python(v) for k, v in r.items()} for r in rows]
        for logger in self._remote:
            logger.log_table(name, plain)

    def record_dataset(self, name: str, size: int, sha256: str, **extra: Any) -> None:
        """Record a dataset's identity (name, size, sha256, extras) in record.json."""
        if self.is_writer:
            entry = {"name": name, "size": int(size), "sha256": sha256}
            entry.update({k: metrics.to_python(v) for k, v in extra.items()})
            record.add_dataset(self.dir, entry)

    def truncate_after(self, step: int) -> None:
        """Drop metric lines and spectra files logged after `step` (used on resume)."""
        if self.is_writer:
            self._metrics.truncate_after(step)
            self._spectra.truncate_after(step)

    # --- helpers ------------------------------------------------------------------------
    def progress(self, total: int, desc: str, initial: int = 0) -> Progress:
        """Progress context manager: `with ctx.progress(n, "sweep") as p: p.update(1, loss=...)`."""
        trainer = self.cfg.get("trainer") or {}
        mode = trainer.get("progress", "auto") if self.is_writer else "off"
        return Progress(total, desc, mode=mode, initial=initial)

    def figure_dir(self) -> pathlib.Path:
        path = self.dir / FIGURES_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint_dir(self) -> pathlib.Path:
        return self.dir / CHECKPOINT_DIR

    def close(self, exit_code: int = 0) -> None:
        for logger in self._remote:
            logger.finish(exit_code)
        self._remote = []
