"""Sweeps that survive a failed job: every job's status, and one summary for the whole sweep.

Under `-m` a job that fails (invalid config, non-finite loss, I/O error, an exception) is
recorded in its own `summary.json` and the sweep goes on. At the end `SweepSummary` (a Hydra
callback, `hydra.callbacks` in `configs/config.yaml`) writes `<sweep dir>/sweep_summary.json`
listing every job with its overrides and status, prints one line per job, and
`python -m experiments.run` exits 1 when any job did not complete.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from experiments import rundir

SWEEP_SUMMARY_FILE = "sweep_summary.json"
failed_jobs = 0  # set at the end of a sweep; read by experiments/run.py for the exit status


def job_statuses(sweep_dir: pathlib.Path) -> list[dict[str, Any]]:
    """One entry per job directory of a sweep: job number, overrides, status, error."""
    jobs = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name)):  # fmt: skip
        summary_path = job_dir / rundir.SUMMARY_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        overrides_path = job_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.exists() else []
        jobs.append({"job": int(job_dir.name), "dir": str(job_dir), "overrides": overrides,
                     "status": summary.get("status", "missing"),
                     "error": summary.get("error")})  # fmt: skip
    return jobs


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs: Any) -> None:
        global failed_jobs
        sweep_dir = pathlib.Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        jobs = job_statuses(sweep_dir)
        failed_jobs = sum(job["status"] != "completed" for job in jobs)
        payload = {"jobs": len(jobs), "failed": failed_jobs, "by_job": jobs}
        rundir.atomic_write(sweep_dir / SWEEP_SUMMARY_FILE, json.dumps(payload, indent=1) + "\n")
        for job in jobs:
            print(f"job {job['job']}: {job['status']:<11} {' '.join(job['overrides'])}", flush=True)
        print(f"sweep: {len(jobs) - failed_jobs} of {len(jobs)} jobs completed; "
              f"{sweep_dir / SWEEP_SUMMARY_FILE}", flush=True)  # fmt: skip
