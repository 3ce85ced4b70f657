"""`RunContext`: what a study talks to — its config, run directory, random streams and devices.

    ctx.cfg                      the RunConfig object (ctx.cfg.study, ctx.cfg.optim, ...)
    ctx.dir                      the run directory: pathlib.Path, or epath.Path for gs://...
    ctx.mesh                     1-D `Mesh` with axis "data" over all devices
    ctx.key(stream, *index)      fold_in(stream key, index) for each index: the one sub-seed rule
    ctx.log_metrics(step, m)     a line of metrics.jsonl (+ wandb)
    ctx.log_spectra(step, rows)  spectra/step_<k>.parquet (+ wandb)
    ctx.log_table(name, rows)    tables/<name>.parquet, appended (+ wandb)
    ctx.record_dataset(name, size, sha256, **extra)   dataset identity → record.json
    ctx.record_entry(key, value)  any other top-level entry of record.json
    ctx.progress(total, desc)    context manager with .update(n=1, **postfix)

Only process 0 writes files; other processes' calls are no-ops (multi-host runs). That is also
what keeps an object-store run directory (no lock there, see `experiments.run_storage`) to
one writer per command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from jax.sharding import Mesh

from experiments import run_storage, rundir
from experiments.config import RunConfig
from experiments.runtime import provenance, wandb_mirror
from experiments.runtime.mesh import make_data_mesh
from experiments.runtime.progress import Progress


def stream_key(seed: int, stream: str) -> jax.Array:
    """fold_in(PRNGKey(seed), h(stream)), h = first 31 bits of sha256(stream): stable everywhere.

    A raw uint32 key, so train states holding keys checkpoint with orbax as plain arrays.
    """
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream name must be a non-empty str, got {stream!r}")
    digest = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little") & 0x7FFFFFFF
    return jax.random.fold_in(jax.random.PRNGKey(seed), digest)


class RunContext:
    """The run directory, config, device mesh, random streams and loggers of one run."""

    def __init__(self, run_dir: str | pathlib.Path, cfg: RunConfig, overrides: Sequence[str] = (),
                 mesh: Mesh | None = None):  # fmt: skip
        self.dir = run_storage.as_path(run_dir, resolve=True)  # a gs:// URI stays a URI
        self.cfg = cfg
        self.mesh = mesh if mesh is not None else make_data_mesh()
        self.is_writer = jax.process_index() == 0
        self._mirrors: list[wandb_mirror.GuardedMirror] = []
        self._lock = None
        if self.is_writer:
            run_storage.make_dir(self.dir)
            self._lock = rundir.lock(self.dir)
            try:
                self._start_record(cfg, overrides)
            except BaseException:
                self.close()
                raise

    def _start_record(self, cfg: RunConfig, overrides: Sequence[str]) -> None:
        plain = dataclasses.asdict(cfg)
        moved = rundir.claim(self.dir, plain, cfg.trainer.resume, cfg.may_differ_on_resume())
        if moved is not None:
            print(f"note: {self.dir} held an earlier run; its files were moved to {moved}",
                  file=sys.stderr, flush=True)  # fmt: skip
        record = rundir.write_record(self.dir, plain, overrides,
                                     provenance.start_entry(list(overrides)),
                                     provenance.environment())  # fmt: skip
        if cfg.logger.kind == "wandb":
            tags = {"git": record["started"]["git"], "devices": record["devices"]}
            self._mirrors = wandb_mirror.make_mirrors(self.dir, plain, cfg.logger, tags)

    def key(self, stream: str, *index: int) -> jax.Array:
        """The named stream's key, with each `index` folded in (per step, seed, repeat, ...)."""
        key = stream_key(self.cfg.seed, stream)
        for i in index:
            key = jax.random.fold_in(key, i)
        return key

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.is_writer:
            return
        row = rundir.append_metrics(self.dir, step, metrics)
        row.pop("step")
        for mirror in self._mirrors:
            mirror.log_metrics(int(step), row)

    def log_spectra(self, step: int, rows: Sequence[Mapping[str, Any]]) -> None:
        if not self.is_writer or not rows:
            return
        rundir.write_spectra(self.dir, step, rows)
        for mirror in self._mirrors:
            mirror.log_spectra(int(step), [rundir.to_python(dict(r)) for r in rows])

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not self.is_writer or not rows:
            return
        rundir.append_table(self.dir, name, rows)
        for mirror in self._mirrors:
            mirror.log_table(name, [rundir.to_python(dict(r)) for r in rows])

    def record_dataset(self, name: str, size: int, sha256: str, **extra: Any) -> None:
        if self.is_writer:
            rundir.add_dataset(self.dir, {"name": name, "size": int(size), "sha256": sha256,
                                          **extra})  # fmt: skip

    def record_entry(self, key: str, value: Any) -> None:
        """Set a top-level entry of record.json (the latest start's value wins)."""
        if self.is_writer:
            path = self.dir / rundir.RECORD_FILE
            record = json.loads(path.read_text()) if path.exists() else {}
            record[key] = rundir.to_python(value)
            rundir.atomic_write(path, json.dumps(record, indent=1) + "\n")

    def truncate_after(self, step: int) -> None:
        if self.is_writer:
            rundir.truncate_after(self.dir, step)

    def progress(self, total: int, desc: str, initial: int = 0) -> Progress:
        """`with ctx.progress(n, "sweep") as p: p.update(1, loss=...)`; silent off process 0."""
        mode = self.cfg.trainer.progress if self.is_writer else "off"
        return Progress(total, desc, mode=mode, initial=initial)

    def figure_dir(self) -> run_storage.AnyPath:
        path = self.dir / rundir.FIGURES_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self, exit_code: int = 0) -> None:
        for mirror in self._mirrors:
            mirror.finish(exit_code)
        self._mirrors = []
        if self._lock is not None:
            self._lock.close()  # releases the flock (removes the holder note on a bucket)
            self._lock = None
