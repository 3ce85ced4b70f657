"""`python -m experiments.run` as a process: SIGTERM saves and resumes exactly, exit codes,
and the same losses on 1 and on 8 (fake CPU) devices."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments.rundir import load_run
from tests._runs import run_experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_in_process(run_dir, *overrides):
    return run_experiment(run_dir, ["+exp=quickstart", "trainer.progress=off", *overrides])


def launch(run_dir, *overrides, env=None):
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        "+exp=quickstart",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_saves_then_resume_matches_uninterrupted(tmp_path):
    run_dir = tmp_path / "killed"
    proc = launch(
        run_dir, "trainer.max_steps=100000", "trainer.log_every=5", "trainer.progress=plain"
    )
    # Training has begun (signal handlers installed) once the record notes its start-up time.
    record = run_dir / "record.json"
    deadline = time.time() + 300  # generous: a loaded 2-core machine starts in minutes
    while (
        time.time() < deadline
        and proc.poll() is None
        and (not record.exists() or "startup" not in record.read_text())
    ):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM received" in err and "re-run to resume" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    stopped = summary["step"]
    assert summary["status"] == "interrupted" and (run_dir / "checkpoints" / str(stopped)).is_dir()
    assert load_run(run_dir).metrics["step"].max() <= stopped

    # resume in the same directory and finish 7 steps later; compare with a run never stopped
    common = ["trainer.log_every=5", f"trainer.max_steps={stopped + 7}"]
    run_in_process(run_dir, *common)
    run_in_process(tmp_path / "straight", *common)
    assert (run_dir / "metrics.jsonl").read_text() == (
        tmp_path / "straight" / "metrics.jsonl"
    ).read_text()


def test_exit_codes_of_the_entry_point(tmp_path):
    bad = launch(tmp_path / "bad", "optim.lr=-1")
    nan = launch(tmp_path / "nan", "study.nan_at_step=7", "trainer.max_steps=20")
    renamed = launch(tmp_path / "renamed", "optim=muon", "optim.steps=3")
    _, bad_err = bad.communicate(timeout=120)
    _, nan_err = nan.communicate(timeout=120)
    _, renamed_err = renamed.communicate(timeout=120)
    assert bad.returncode == 2, bad_err[-2000:]
    assert "error: optim.lr must be a finite number in (0.0, inf), got -1.0" in bad_err
    # rejected before the run record is written (Hydra itself has made the directory)
    assert not (tmp_path / "bad" / "record.json").exists()
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()
    assert renamed.returncode == 2 and "Traceback" not in renamed_err
    assert "optim.steps was renamed to optim.iters" in renamed_err, renamed_err[-2000:]
    assert nan.returncode == 1 and "non-finite loss=nan at step 7" in nan_err, nan_err[-2000:]


def test_missing_data_file_exits_2_with_where_it_looked(tmp_path):
    missing = tmp_path / "nowhere" / "input.txt"
    cmd = [
        sys.executable, "-m", "experiments.run", "+exp=nanogpt_adamw", "data=shakespeare_char",
        f"data.path={missing}", "data.download=false", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    env = {**os.environ, "SPECJAX_DATA_DIR": str(tmp_path / "empty")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"error: data.path={str(missing)!r} does not exist" in done.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


EIGHT_DEVICES = """
import sys
import jax
from tests._runs import run_experiment
assert jax.device_count() == 8, jax.devices()
run_experiment(sys.argv[1], ["+exp=quickstart", "trainer.progress=off", "trainer.max_steps=30",
                             "trainer.log_every=1"])
"""


def test_one_and_eight_devices_give_the_same_losses(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES, str(tmp_path / "eight")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_in_process(tmp_path / "one", "trainer.max_steps=30", "trainer.log_every=1")
    one, eight = load_run(tmp_path / "one"), load_run(tmp_path / "eight")
    assert eight.record["devices"]["device_count"] == 8
    assert list(one.metrics["step"]) == list(eight.metrics["step"]) == list(range(1, 31))
    np.testing.assert_allclose(eight.metrics["loss"], one.metrics["loss"], rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(
        eight.metrics["val_loss"].dropna(), one.metrics["val_loss"].dropna(), rtol=1e-4
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["offline"])
def test_wandb_offline_run_keeps_its_id_across_resume(tmp_path, mode):
    """A real (offline) wandb run: the id file is written and reused by the resumed run."""
    env = {"WANDB_MODE": mode, "WANDB_SILENT": "true"}
    first = launch(
        tmp_path, "logger=wandb", "trainer.max_steps=10", "trainer.stop_at_step=5", env=env
    )
    _, err = first.communicate(timeout=180)
    assert first.returncode == 143, err[-2000:]
    run_id = (tmp_path / "wandb_run_id.txt").read_text().strip()
    second = launch(tmp_path, "logger=wandb", "trainer.max_steps=10", env=env)
    _, err = second.communicate(timeout=180)
    assert second.returncode == 0 and "WARNING" not in err, err[-2000:]
    assert (tmp_path / "wandb_run_id.txt").read_text().strip() == run_id
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))) == 2


def test_same_config_same_numbers_with_xla_optimizations_on(tmp_path):
    """Determinism with the compiler's optimizations on (the rest of the suite turns them off)."""
    env = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "false"}
    args = ["trainer.max_steps=30", "trainer.log_every=1", "trainer.progress=off"]
    procs = [launch(tmp_path / name, *args, env=env) for name in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
    a, b = ((tmp_path / name / "metrics.jsonl").read_text() for name in ("a", "b"))
    assert a == b and len(a.splitlines()) >= 30
