"""A vmapped sweep's run directory and loggers: one trainer run whose state has a "runs" axis.

    <run dir>/
      sweep.json          the grid, each member's values and overrides, the base config, git
      checkpoints/        the whole sweep's state (every member), as for one run
      metrics.jsonl       the sweep's own metrics: mean loss over the live members, how many live
      summary.json        status, and per member its directory, values and status
      runs/<k>/           member k: an ordinary run directory (config.yaml with its values,
                          record.json, metrics.jsonl, spectra/, summary.json, final params)

`execute_sweep(cfg, run_dir, overrides, grid)` is `launch.execute` for `sweep.<key>=[...]`.
`SweepContext` stands in for `RunContext` in `trainer.train`: metric values with a runs axis are
split into the members' files, scalars go to the sweep's. A member whose loss goes non-finite is
frozen by the study's step and marked non_finite in its own summary; the others go on.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from experiments import rundir, sweep_grid
from experiments.config import RunConfig
from experiments.runtime import provenance
from experiments.runtime.launch import prepare_process
from experiments.runtime.mesh import make_data_mesh
from experiments.runtime.progress import Progress
from experiments.runtime.trainer import NonFiniteLossError, TrainingInterrupted

SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"
# Study name → module with `run_sweep(members, ctx) -> list[dict | None]` (None: member failed).
SWEEP_STUDIES = {"nanogpt": "experiments.nanogpt.sweep"}
FAILED_AT = "failed_at"  # per-member metric: step whose loss went non-finite (0 = alive)


class MembersFailed(NonFiniteLossError):
    """Some members of a vmapped sweep went non-finite; the others completed."""

    def __init__(self, failed: dict[int, int], total: int):
        self.step, self.loss, self.failed = max(failed.values()), float("nan"), failed
        names = ", ".join(f"runs/{k} (step {s})" for k, s in failed.items())
        FloatingPointError.__init__(self, f"{len(failed)} of {total} members went non-finite: "
                                    f"{names}; the others completed")  # fmt: skip


class MemberRun:
    """Member k's run directory: the files one `RunContext` would write, without its lock."""

    def __init__(self, path: pathlib.Path, cfg: RunConfig, overrides: Sequence[str]):
        self.dir, self.cfg, self.overrides = path, cfg, list(overrides)
        self.failed_at = 0

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        rundir.write_record(self.dir, dataclasses.asdict(self.cfg), self.overrides,
                            provenance.start_entry(self.overrides),
                            provenance.environment())  # fmt: skip

    def alive_at(self, step: int) -> bool:
        """Whether a separate run would have logged at `step` (it stops at its non-finite step)."""
        return self.failed_at == 0 or step <= self.failed_at


class SweepContext:
    """What `trainer.train` needs of a `RunContext`, for a sweep of `len(members)` runs."""

    def __init__(self, run_dir, cfg: RunConfig, members: Sequence[MemberRun], grid: dict,
                 overrides: Sequence[str] = ()):  # fmt: skip
        self.dir = pathlib.Path(run_dir).resolve()
        self.cfg, self.members, self.grid = cfg, list(members), grid
        self.mesh = make_data_mesh()
        self.is_writer = jax.process_index() == 0
        self._lock = None
        if self.is_writer:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = rundir.lock(self.dir)
            try:
                self._start_record(overrides)
            except BaseException:
                self.close()
                raise

    def _start_record(self, overrides: Sequence[str]) -> None:
        record = {
            "grid": self.grid,
            "members": [{"run": k, "dir": f"{RUNS_DIR}/{k}", "values": point,
                         "overrides": m.overrides}
                        for k, (point, m) in enumerate(zip(sweep_grid.members(self.grid),
                                                           self.members, strict=True))],
            "config": dataclasses.asdict(self.cfg),
        }  # fmt: skip
        claim_sweep(self.dir, record, self.cfg)
        path = self.dir / SWEEP_FILE
        old = json.loads(path.read_text()) if path.exists() else {}
        record["started"] = old.get("started", provenance.start_entry(list(overrides)))
        record["resumes"] = old.get("resumes", [])
        if old:
            record["resumes"].append(provenance.start_entry(list(overrides)))
        rundir.atomic_write(path, json.dumps(rundir.to_python(record), indent=1) + "\n")
        for member in self.members:
            member.start()

    def split(self, metrics: Mapping[str, Any]) -> tuple[dict, list[dict]]:
        """(the sweep's scalar metrics, one row per member) from values with a runs axis."""
        n = len(self.members)
        own, rows = {}, [{} for _ in range(n)]
        for name, value in metrics.items():
            # One member's values are read back as scalars; a scalar of several (the trainer's
            # throughput, say) belongs to the whole sweep.
            if name in SWEEP_METRICS or (n > 1 and np.shape(value)[:1] != (n,)):
                own[name] = value
                continue
            for row, v in zip(rows, np.reshape(value, (n, *np.shape(value)[1:])), strict=True):
                row[name] = v
        return own, rows

    def note_failures(self, failed_at: Any) -> None:
        for member, step in zip(self.members, np.reshape(failed_at, -1), strict=True):
            member.failed_at = int(step)

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.is_writer:
            return
        own, rows = self.split(metrics)
        if FAILED_AT in rows[0]:
            self.note_failures([row.pop(FAILED_AT) for row in rows])
        if own:
            rundir.append_metrics(self.dir, step, own)
        for member, row in zip(self.members, rows, strict=True):
            if row and member.alive_at(step):
                rundir.append_metrics(member.dir, step, row)

    def log_spectra(self, step: int, rows_by_member: Mapping[int, Sequence[Mapping]]) -> None:
        """`rows_by_member`: {member index: its spectra rows} (members no longer live left out)."""
        if not self.is_writer:
            return
        for k, rows in rows_by_member.items():
            if rows and self.members[k].alive_at(step):
                rundir.write_spectra(self.members[k].dir, step, rows)

    def record_dataset(self, name: str, size: int, sha256: str, **extra: Any) -> None:
        if self.is_writer:
            entry = {"name": name, "size": int(size), "sha256": sha256, **extra}
            for member in self.members:
                rundir.add_dataset(member.dir, entry)

    def truncate_after(self, step: int) -> None:
        if self.is_writer:
            for path in (self.dir, *(m.dir for m in self.members)):
                rundir.truncate_after(path, step)

    def progress(self, total: int, desc: str, initial: int = 0) -> Progress:
        mode = self.cfg.trainer.progress if self.is_writer else "off"
        return Progress(total, desc, mode=mode, initial=initial)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


# The sweep's own metrics (scalars); every other metric has a runs axis.
SWEEP_METRICS = ("loss_live_mean", "live_runs")


def claim_sweep(run_dir: pathlib.Path, record: dict, cfg: RunConfig) -> None:
    """Resume a sweep of the same grid and config, refuse another one, or set an old one aside."""
    path = run_dir / SWEEP_FILE
    if not path.exists() and not any((run_dir / n).exists() for n in rundir.RUN_FILES):
        return
    old = json.loads(path.read_text()) if path.exists() else None
    if cfg.trainer.resume != "never" and old is not None:
        old_plain = {"grid": old.get("grid"), "config": old.get("config")}
        new_plain = {"grid": record["grid"], "config": record["config"]}
        may_differ = [f"config.{k}" for k in cfg.may_differ_on_resume()]
        differences = rundir.config_differences(old_plain, new_plain, may_differ)
        if differences:
            raise rundir.RunDirectoryConflict(
                f"run directory {run_dir} holds another sweep ({'; '.join(differences)}); add "
                "trainer.resume=never to set it aside, or choose another hydra.run.dir"
            )
        if any(p.name.isdigit() for p in (run_dir / rundir.CHECKPOINT_DIR).glob("*")):
            return  # resume
    target = rundir.set_aside(run_dir)
    for name in (SWEEP_FILE, RUNS_DIR):
        if (run_dir / name).exists():
            os.replace(run_dir / name, target / name)
    print(f"note: {run_dir} held an earlier run; its files were moved to {target}",
          file=sys.stderr, flush=True)  # fmt: skip


def sweep_module(study: str):
    if study not in SWEEP_STUDIES:
        raise ValueError(
            f"study {study!r} cannot run a vmapped sweep (sweep.KEY=[...]); studies "
            f"that can: {list(SWEEP_STUDIES)}. Use Hydra's -m for separate jobs"
        )
    return importlib.import_module(SWEEP_STUDIES[study])


def execute_sweep(cfg: RunConfig, run_dir, overrides: Sequence[str], grid: dict) -> list:
    """Train the grid's members as one program in `run_dir`; their summaries (None if failed).

    Raises `MembersFailed` (exit 1) after finishing when some members went non-finite.
    """
    prepare_process(cfg)  # the same logging and compilation cache as a single run
    module = sweep_module(cfg.study.name)
    if cfg.logger.kind != "local":
        raise ValueError("a vmapped sweep writes local files only; use logger=local")
    if jax.process_count() > 1:
        raise ValueError("a vmapped sweep runs in one process; use Hydra's -m across hosts")
    configs = sweep_grid.member_configs(cfg, grid)
    if len(configs) % jax.device_count():
        raise ValueError(f"the runs axis ({len(configs)} members) is split over the "
                         f"{jax.device_count()} devices: make the grid a multiple of that, or "
                         "run on fewer devices (e.g. CUDA_VISIBLE_DEVICES)")  # fmt: skip
    run_dir = pathlib.Path(run_dir).resolve()
    members = [
        MemberRun(run_dir / RUNS_DIR / str(k), c, sweep_grid.member_overrides(overrides, p))
        for k, (c, p) in enumerate(zip(configs, sweep_grid.members(grid), strict=True))
    ]
    module.check_sweep(configs, grid)  # untraceable keys fail here, before anything compiles
    ctx = SweepContext(run_dir, cfg, members, grid, overrides)
    try:
        summaries = _train(module, configs, ctx)
    finally:
        ctx.close()
    failed = {k: m.failed_at for k, m in enumerate(members) if summaries[k] is None}
    if failed:
        raise MembersFailed(failed, len(members))
    if cfg.trainer.progress != "off":
        print(f"done: {len(members)} runs\nrun directory: {run_dir}", flush=True)
    return summaries


def _train(module, configs: Sequence[RunConfig], ctx: SweepContext) -> list:
    def finish(status: str, summaries: Sequence[dict | None] = (), **extra: Any) -> None:
        entries = []
        for k, member in enumerate(ctx.members):
            if member.failed_at:
                payload = {"status": "non_finite", "step": member.failed_at,
                           "error": f"non-finite loss at step {member.failed_at}; the sweep's "
                                    "other members went on"}  # fmt: skip
            elif status == "completed":
                payload = {"status": status, "summary": summaries[k]}
            else:
                payload = {"status": status, **extra}
            rundir.write_summary(member.dir, payload)
            entries.append({"run": k, "dir": f"{RUNS_DIR}/{k}", "status": payload["status"]})
        done = sum(e["status"] == "completed" for e in entries)
        rundir.write_summary(ctx.dir, {"status": status, "completed": done,
                                       "members": entries, **extra})  # fmt: skip

    try:
        summaries = module.run_sweep(configs, ctx)
    except TrainingInterrupted as err:
        finish("interrupted", step=err.step, error=str(err))
        raise
    except NonFiniteLossError as err:  # every member went non-finite
        ctx.note_failures([m.failed_at or err.step for m in ctx.members])
        finish("non_finite", step=err.step, error=str(err))
        raise
    except BaseException as err:
        finish("failed", error=f"{type(err).__name__}: {err}")
        raise
    finish("completed", summaries)
    return summaries
