"""One directory holds one run: leftovers, changed configs, resume=never, locks, verified
checkpoints and I/O failures, each tried the way a user or a hostile environment would."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import rundir
from experiments.rundir import RunDirectoryConflict, load_run
from experiments.runtime.checkpoint import CheckpointSaveError, state_fingerprint
from tests._runs import run_experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = ["+exp=quickstart", "trainer.max_steps=20", "trainer.log_every=5", "trainer.eval_every=10",
        "trainer.ckpt_every=10", "trainer.spectra_every=10", "trainer.progress=off",
        "trainer.async_checkpointing=false"]  # fmt: skip


def run(run_dir, *overrides):
    return run_experiment(run_dir, [*FAST, *overrides])


def aside_dirs(run_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(run_dir.parent.glob(f"{run_dir.name}.replaced-*"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run(run_dir)
    return run_dir


def test_leftovers_without_a_checkpoint_are_set_aside_not_appended(straight, tmp_path, capfd):
    run_dir = tmp_path / "run"
    run(run_dir)
    old_metrics = (run_dir / "metrics.jsonl").read_text()
    for step in (run_dir / "checkpoints").iterdir():  # e.g. removed by hand
        if step.name.isdigit():
            shutil.rmtree(step)
    run(run_dir)
    assert "its files were moved to" in capfd.readouterr().err
    assert (run_dir / "metrics.jsonl").read_text() == (straight / "metrics.jsonl").read_text()
    assert len(load_run(run_dir).spectra) == len(load_run(straight).spectra)
    (aside,) = aside_dirs(run_dir)
    assert (aside / "metrics.jsonl").read_text() == old_metrics  # nothing lost


def test_a_changed_config_is_refused_and_nothing_moves(straight, tmp_path):
    run_dir = tmp_path / "run"
    run(run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(RunDirectoryConflict) as err:
        run(run_dir, "optim.lr=0.2", "study.dim=8")
    text = str(err.value)
    assert "optim.lr: 0.1 → 0.2" in text and "study.dim: 16 → 8" in text
    assert "trainer.resume=never" in text
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before and not aside_dirs(run_dir)


def test_resume_never_keeps_the_old_run_aside(tmp_path, capfd):
    run_dir = tmp_path / "run"
    run(run_dir)
    old = (run_dir / "metrics.jsonl").read_text()
    run(run_dir, "optim.lr=0.05", "trainer.resume=never")
    err = capfd.readouterr().err
    (aside,) = aside_dirs(run_dir)
    assert str(aside) in err
    assert (aside / "metrics.jsonl").read_text() == old
    assert load_run(run_dir).config["optim"]["lr"] == 0.05
    assert load_run(aside).config["optim"]["lr"] == 0.1
    assert rundir.find_run_dirs([tmp_path]) == [run_dir]  # a sweep's analysis skips it
    assert (run_dir / "metrics.jsonl").read_text() != old


def test_same_config_resumes_and_a_longer_constant_schedule_may_extend(straight, tmp_path):
    run_dir = tmp_path / "run"
    run(run_dir, "trainer.max_steps=10")
    run(run_dir)  # max_steps 10 → 20 with a constant schedule: the same run, continued
    assert (run_dir / "metrics.jsonl").read_text() == (straight / "metrics.jsonl").read_text()
    assert len(json.loads((run_dir / "record.json").read_text())["resumes"]) == 1


def test_a_second_process_fails_at_once(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    handle = rundir.lock(run_dir)  # this process is "writing" the run
    try:
        done = subprocess.run(
            [sys.executable, "-m", "experiments.run", *FAST, f"hydra.run.dir={run_dir}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        handle.close()
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"is in use by pid {os.getpid()}" in done.stderr and "Traceback" not in done.stderr
    assert not (run_dir / "metrics.jsonl").exists()


def _flip_a_bit_in_the_state(step_dir: pathlib.Path) -> None:
    """Flip one bit inside the largest data file of a checkpoint (an array's raw bytes)."""
    data = max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)  # fmt: skip
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    data.write_bytes(bytes(raw))


def test_a_flipped_bit_is_caught_and_the_previous_checkpoint_used(tmp_path, capfd):
    big = ["study.dim=256", "study.outputs=64"]  # a 64 KiB weight: stored as raw array bytes
    run(tmp_path / "straight", *big, "trainer.max_steps=30")
    run_dir = tmp_path / "run"
    run(run_dir, *big)
    _flip_a_bit_in_the_state(run_dir / "checkpoints" / "20")
    run(run_dir, *big, "trainer.max_steps=30")
    err = capfd.readouterr().err
    assert "checkpoint step 20" in err and "differs from what was saved" in err
    assert "trying step 10" in err and "resumed from checkpoint at step 10" in err
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text()
    assert (run_dir / "metrics.jsonl").read_text() == straight


def test_metadata_naming_another_step_is_not_trusted(tmp_path, capfd):
    run_dir = tmp_path / "run"
    run(run_dir)
    meta = run_dir / "checkpoints" / "20" / "meta" / "metadata"
    payload = json.loads(meta.read_text())
    meta.write_text(json.dumps({**payload, "step": 5}))
    run(run_dir, "trainer.max_steps=30")
    err = capfd.readouterr().err
    assert "its metadata names step 5" in err and "resumed from checkpoint at step 10" in err
    steps = list(load_run(run_dir).metrics["step"])
    assert steps == sorted(set(steps)) and steps[-1] == 30  # no metric row deleted or doubled


def test_fingerprint_changes_with_any_single_bit():
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int64(3)}
    base = state_fingerprint(state)
    for i in range(6):
        for bit in (0, 17, 31):
            w = state["w"].copy().view(np.uint32)
            w.flat[i] ^= np.uint32(1 << bit)
            assert state_fingerprint({**state, "w": w.view(np.float32)}) != base


def test_unwritable_checkpoint_directory_fails_before_training(tmp_path, monkeypatch):
    write_text = pathlib.Path.write_text

    def read_only_checkpoints(self, *args, **kwargs):
        if self.parent.name == "checkpoints":  # as root, chmod cannot make a directory read-only
            raise PermissionError(13, "Permission denied", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", read_only_checkpoints)
    with pytest.raises(PermissionError):
        run(tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained or logged
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "Permission denied" in summary["error"]


def test_a_failing_save_stops_at_once_as_an_io_error(tmp_path, monkeypatch):
    def full_disk(self, *args, **kwargs):
        raise ValueError("RESOURCE_EXHAUSTED: No space left on device [os_error_code='28']")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(CheckpointSaveError, match=r"saving checkpoint step 10 .* No space left"):
        run(tmp_path / "run")
    metrics = load_run(tmp_path / "run").metrics
    assert metrics["step"].max() == 10  # logged metrics up to the failed save are kept
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"
