"""Real multi-process JAX on this machine: two processes × 4 CPU devices on 127.0.0.1 (gloo)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

from experiments.rundir import load_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICK = ["+exp=quickstart", "trainer.log_every=1", "trainer.ckpt_every=10", "trainer.progress=off",
         "trainer.spectra_every=10"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(run_dir, overrides, processes: int) -> list[str]:
    """`python -m experiments.run` as `processes` processes sharing 8 CPU devices; stderr each."""
    port, local = _free_port(), 8 // processes
    procs = []
    for pid in range(processes):
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={local}"}  # fmt: skip
        if processes > 1:
            env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                       JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(pid))  # fmt: skip
        cmd = [sys.executable, "-m", "experiments.run", *QUICK, *overrides,
               f"hydra.run.dir={run_dir}"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    errs = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        errs.append(f"exit {proc.returncode}\n{err[-3000:]}")
    return errs


def test_two_processes_train_like_one_and_resume_bitwise(tmp_path):
    errs = _run(tmp_path / "one", ["trainer.max_steps=30"], processes=1)
    assert errs[0].startswith("exit 0"), errs[0]
    errs = _run(tmp_path / "two", ["trainer.max_steps=30"], processes=2)
    assert all(e.startswith("exit 0") for e in errs), errs
    one, two = load_run(tmp_path / "one"), load_run(tmp_path / "two")
    assert two.record["devices"]["process_count"] == 2
    assert two.record["devices"]["device_count"] == 8 == one.record["devices"]["device_count"]
    assert list(two.metrics["step"]) == list(range(1, 31))  # process 0 alone wrote each line
    np.testing.assert_allclose(two.metrics["loss"], one.metrics["loss"], rtol=1e-5)
    saved = sorted(int(p.name) for p in (tmp_path / "two" / "checkpoints").iterdir()
                   if p.name.isdigit())  # fmt: skip
    assert saved == [10, 20, 30]  # orbax's multi-process save, committed by both processes

    # stopped at step 20 on both processes, then the same commands again: bitwise equal
    errs = _run(tmp_path / "resumed", ["trainer.max_steps=40", "trainer.stop_at_step=20"], 2)
    assert all(e.startswith("exit 143") for e in errs), errs
    errs = _run(tmp_path / "resumed", ["trainer.max_steps=40"], processes=2)
    assert all("resumed from checkpoint at step 20" in e for e in errs), errs
    errs = _run(tmp_path / "straight", ["trainer.max_steps=40"], processes=2)
    assert all(e.startswith("exit 0") for e in errs), errs
    resumed = (tmp_path / "resumed" / "metrics.jsonl").read_text()
    assert resumed == (tmp_path / "straight" / "metrics.jsonl").read_text()
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_coordinator_without_process_count_says_what_to_set(tmp_path):
    env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}",
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "experiments.run", *QUICK, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "missing: JAX_NUM_PROCESSES, JAX_PROCESS_ID" in done.stderr
