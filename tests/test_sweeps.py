"""Sweeps (`-m`) survive a failed job: each job recorded, a sweep summary, exit 1 at the end."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def sweep(sweep_dir, *overrides):
    cmd = [sys.executable, "-m", "experiments.run", "-m", "+exp=quickstart",
           "trainer.max_steps=10", "trainer.progress=off", f"hydra.sweep.dir={sweep_dir}",
           *overrides]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    summary_path = pathlib.Path(sweep_dir) / "sweep_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return done, summary


def test_an_invalid_job_does_not_stop_the_others(tmp_path):
    done, summary = sweep(tmp_path, "optim.lr=-1,0.1")
    assert done.returncode == 1, done.stderr[-2000:]
    assert [j["status"] for j in summary["by_job"]] == ["invalid_config", "completed"]
    assert "optim.lr must be a finite number" in summary["by_job"][0]["error"]
    assert summary["failed"] == 1 and (tmp_path / "1" / "metrics.jsonl").exists()
    assert "sweep: 1 of 2 jobs completed" in done.stdout


def test_parallel_launcher_records_a_non_finite_job(tmp_path):
    done, summary = sweep(tmp_path, "hydra/launcher=parallel", "study.nan_at_step=3,null")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Joblib.Parallel(n_jobs=2" in done.stderr + done.stdout
    assert [j["status"] for j in summary["by_job"]] == ["non_finite", "completed"]
    assert summary["by_job"][0]["overrides"][-1] == "study.nan_at_step=3"


def test_a_sweep_whose_jobs_all_complete_exits_0(tmp_path):
    done, summary = sweep(tmp_path, "seed=0,1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert summary["failed"] == 0 and summary["jobs"] == 2
