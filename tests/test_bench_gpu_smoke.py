"""`benchmarks/bench_gpu.py` is the GPU check a lent device runs once, unattended: its linalg
section must run end to end (here on the CPU, tiny sizes) and print every figure it promises."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_linalg_section_runs_and_reports_each_comparison():
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--smoke", "--only", "linalg"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "FAILED" not in out, out
    for promised in ("jnp.linalg.svd 256²", "randomized_svd(x, 16):", "top-16 max rel. error",
                     "optax orthogonalize_via_newton_schulz", "polar NS form=standard 256×256",
                     "polar NS form=auto 64×256", "polar polar_express"):  # fmt: skip
        assert promised in out, (promised, out)
    assert "not GPU figures" not in out  # --smoke says nothing about GPU figures


def test_bad_arguments_are_refused_before_any_work():
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--n", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--n must be at least 64, got 8" in done.stderr
