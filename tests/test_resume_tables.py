"""A resumed run drops the table rows it will log again: `rundir.truncate_after` on `tables/`.

A run killed after logging a table row at step k, then resumed from a checkpoint at step s < k,
logs step k again. Rows with `step` > s must go (once, atomically), rows at or before s stay
exactly as written, and tables without a step column (run-level results) are left alone.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from experiments import rundir
from tests._tiny import tiny_nanogpt
from tests.test_epath_rundir import bucket  # noqa: F401  (the in-memory gs:// fixture)

pytest.importorskip("pyarrow")

STEPS = (0, 250, 500)
BLOCKS = ("block_0/attn/qkv/kernel", "block_0/mlp/fc/kernel")


def gate_rows(step):
    """Rows shaped like `gate_check`'s: one per block, values distinct per step and block."""
    agree = float("nan") if step == 0 else 1.0  # a tie at step 0, as η = 0 gives
    rows = []
    for i, block in enumerate(BLOCKS):
        rows.append({"step": step, "block": block, "took_spectral": (step // 250 + i) % 2,
                     "nr_U": 1.5 + step / 1000 + i, "delta": -0.01 * (i + 1) - step * 1e-6,
                     "agree": agree})  # fmt: skip
    return rows


def reference(steps):
    """The table an uninterrupted run logging `steps` holds, built without truncate_after."""
    return pd.DataFrame([r for s in steps for r in gate_rows(s)])


def log_steps(run_dir, steps):
    for step in steps:  # one append per logged step, as the trainer's spectra callback does
        rundir.append_table(run_dir, "gate_check", gate_rows(step))


def test_resume_drops_rows_after_the_restored_step_and_logs_them_once(tmp_path):
    log_steps(tmp_path, STEPS)  # killed after the check at 500; the last checkpoint is at 250
    rundir.append_table(tmp_path, "sizes", [{"n": 1, "err": 0.5}, {"n": 2, "err": 0.25}])
    sizes = (tmp_path / "tables" / "sizes.parquet").read_bytes()

    rundir.truncate_after(tmp_path, 250)
    kept = rundir.read_table(tmp_path, "gate_check")
    pd.testing.assert_frame_equal(kept, reference(STEPS[:2]))  # 0 and 250 intact, 500 gone
    assert (tmp_path / "tables" / "sizes.parquet").read_bytes() == sizes  # run-level: untouched

    log_steps(tmp_path, STEPS[2:])  # the resumed run logs 500 again
    pd.testing.assert_frame_equal(rundir.read_table(tmp_path, "gate_check"), reference(STEPS))
    left = sorted(p.name for p in (tmp_path / "tables").iterdir())
    assert left == ["gate_check.parquet", "sizes.parquet"]  # no temporary file left


def test_rows_at_the_restored_step_stay_and_nothing_after_means_no_rewrite(tmp_path):
    log_steps(tmp_path, STEPS)
    path = tmp_path / "tables" / "gate_check.parquet"
    before = path.read_bytes()
    rundir.truncate_after(tmp_path, 500)  # resumed at the last logged step: all rows stay
    assert path.read_bytes() == before
    rundir.truncate_after(tmp_path, 499)
    assert sorted(rundir.read_table(tmp_path, "gate_check")["step"].unique()) == [0, 250]
    rundir.truncate_after(tmp_path, 0)
    pd.testing.assert_frame_equal(rundir.read_table(tmp_path, "gate_check"), reference([0]))


def test_a_restart_without_checkpoint_empties_step_tables_only(tmp_path):
    log_steps(tmp_path, STEPS)
    rundir.append_table(tmp_path, "sizes", [{"n": 1, "err": 0.5}])
    rundir.truncate_after(tmp_path, -1)  # the trainer's call when no checkpoint restores
    assert not (tmp_path / "tables" / "gate_check.parquet").exists()
    assert rundir.read_table(tmp_path, "sizes").to_dict("records") == [{"n": 1, "err": 0.5}]
    log_steps(tmp_path, STEPS)
    pd.testing.assert_frame_equal(rundir.read_table(tmp_path, "gate_check"), reference(STEPS))


def test_float_steps_and_rows_without_a_step(tmp_path):
    """A float step column (mixed int/float rows are stored as float64) is compared by value;
    a row with no step (null) belongs to no step and stays."""
    rundir.append_table(tmp_path, "mixed", [{"step": 0, "x": 1.0}, {"step": 2.5, "x": 2.0},
                                            {"x": 3.0}, {"step": 3, "x": 4.0}])  # fmt: skip
    rundir.append_table(tmp_path, "labels", [{"step": "late", "x": 1.0}])  # not a training step
    labels = (tmp_path / "tables" / "labels.parquet").read_bytes()
    rundir.truncate_after(tmp_path, 2)
    frame = rundir.read_table(tmp_path, "mixed")
    assert frame["x"].tolist() == [1.0, 3.0] and frame["step"].iloc[0] == 0.0
    assert np.isnan(frame["step"].iloc[1])
    assert (tmp_path / "tables" / "labels.parquet").read_bytes() == labels


def test_a_kill_while_rewriting_a_table_leaves_the_old_file_whole(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    log_steps(tmp_path, STEPS)
    path = tmp_path / "tables" / "gate_check.parquet"
    before = path.read_bytes()
    real_write = pq.write_table

    def torn_write(table, where, **kwargs):
        """Write half of the file, then die as a kill would."""
        real_write(table, where, **kwargs)
        if hasattr(where, "truncate"):
            where.truncate(where.tell() // 2)
        else:
            with open(where, "r+b") as f:
                f.truncate(f.seek(0, 2) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", torn_write)
    with pytest.raises(KeyboardInterrupt):
        rundir.truncate_after(tmp_path, 250)
    monkeypatch.undo()
    assert path.read_bytes() == before  # readable and whole: the old table
    assert [p.name for p in path.parent.iterdir()] == ["gate_check.parquet"]
    rundir.truncate_after(tmp_path, 250)  # the next resume finishes the job
    pd.testing.assert_frame_equal(rundir.read_table(tmp_path, "gate_check"), reference(STEPS[:2]))


@pytest.mark.usefixtures("bucket")
def test_a_bucket_run_directory_truncates_its_tables_like_a_local_one(tmp_path):
    """gs:// (the in-memory fsspec bucket of test_epath_rundir): objects are read, replaced
    whole, or deleted, with the local result."""
    from etils import epath

    for run_dir in (tmp_path, "gs://b/run"):
        log_steps(run_dir, STEPS)
        rundir.append_table(run_dir, "late", gate_rows(500))
        rundir.append_table(run_dir, "sizes", [{"n": 1}])
        rundir.truncate_after(run_dir, 250)
    for name in ("gate_check", "sizes"):
        pd.testing.assert_frame_equal(rundir.read_table("gs://b/run", name),
                                      rundir.read_table(tmp_path, name))  # fmt: skip
    pd.testing.assert_frame_equal(rundir.read_table(tmp_path, "gate_check"), reference(STEPS[:2]))
    assert not (tmp_path / "tables" / "late.parquet").exists()
    assert not epath.Path("gs://b/run/tables/late.parquet").exists()


# --- end to end: a tiny gated NanoGPT run, killed between a gate check and its checkpoint ------
TINY = tiny_nanogpt("gated", {"study.eval_batches": 2, "study.full_eval": "false",
    "trainer.max_steps": 6, "optim.warmup_steps": 1, "trainer.eval_every": 2,
    "trainer.spectra_every": 2, "trainer.ckpt_every": 2, "trainer.log_every": 1,
    "trainer.async_checkpointing": "false", "trainer.log_throughput": "false"})  # fmt: skip


@pytest.mark.slow  # ~19 s on the loaded 2-core CPU (three tiny runs)
def test_resumed_gated_run_logs_each_gate_check_once(tmp_path):
    """Stopped at step 4 with the step-4 checkpoint lost (a kill after the gate check, before
    the save landed), the run resumes from 2: its gate_check table, metrics and spectra equal
    those of an uninterrupted run (the table once held step 4's rows twice)."""
    from experiments.runtime.trainer import TrainingInterrupted
    from tests._runs import run_experiment

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_experiment(straight, TINY)
    with pytest.raises(TrainingInterrupted):
        run_experiment(resumed, [*TINY, "trainer.stop_at_step=4"])
    assert sorted(rundir.read_table(resumed, "gate_check")["step"].unique()) == [0, 2, 4]
    shutil.rmtree(resumed / "checkpoints" / "4")
    run_experiment(resumed, TINY)
    resumes = json.loads((resumed / "record.json").read_text())["resumes"]
    assert len(resumes) == 1
    expected = rundir.read_table(straight, "gate_check")
    assert sorted(expected["step"].unique()) == [0, 2, 4, 6] and len(expected) == 4 * 4
    pd.testing.assert_frame_equal(rundir.read_table(resumed, "gate_check"), expected)
    assert (resumed / "metrics.jsonl").read_bytes() == (straight / "metrics.jsonl").read_bytes()
