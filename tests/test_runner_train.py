"""The generic trainer through the quickstart study, in-process: end to end, exact resume,
corrupted checkpoints, NaN injection, logger failure, the run-directory record and loader."""

import json
import pathlib
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

import specjax
from experiments.plot import plot_runs
from experiments.rundir import RunDirectoryConflict, load_run, load_runs
from experiments.runtime.trainer import NonFiniteLossError, TrainingInterrupted
from tests._runs import run_experiment

FAST = ["trainer.max_steps=40", "trainer.log_every=5", "trainer.eval_every=10",
        "trainer.ckpt_every=10", "trainer.spectra_every=20", "trainer.progress=off",
        "trainer.async_checkpointing=false"]  # fmt: skip


def run(run_dir, *overrides):
    return run_experiment(run_dir, ["+exp=quickstart", *FAST, *overrides])


def final_state(run_dir, step):
    return ocp.StandardCheckpointer().restore(
        pathlib.Path(run_dir).resolve() / "checkpoints" / str(step) / "state"
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 40-step run shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("reference")
    summary = run(run_dir)
    return run_dir, summary


def test_end_to_end_writes_the_record(reference):
    run_dir, summary = reference
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.yaml",
        "overrides.yaml",
        "record.json",
        "metrics.jsonl",
        "spectra",
        "checkpoints",
        "summary.json",
    } <= names
    record = json.loads((run_dir / "record.json").read_text())
    assert set(record["started"]["git"]) == {"sha", "dirty"}
    assert record["packages"]["jax"] and record["devices"]["device_count"] >= 1
    # the version of the code that ran, not an editable install's stale metadata
    assert record["packages"]["specjax"] == specjax.__version__
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    # the loss falls from the untrained value ½·E‖xW*‖² ≈ K/2 = 2 towards the noise floor
    run_ = load_run(run_dir)
    losses = run_.metrics.dropna(subset=["loss"])["loss"].to_numpy()
    assert losses[0] > 0.5 and summary["loss"] < 0.2 * losses[0], losses
    assert list(run_.metrics["step"]) == [5 * i for i in range(1, 9)]
    assert run_.metrics["val_loss"].notna().sum() == 4  # eval every 10 of 40 steps
    assert sorted(run_.spectra["step"]) == [0, 20, 40]
    # kept the last 3 checkpoints
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [
        20,
        30,
        40,
    ]


def test_interrupt_and_resume_is_bitwise_identical(reference, tmp_path):
    ref_dir, _ = reference
    with pytest.raises(TrainingInterrupted) as err:
        run(tmp_path, "trainer.stop_at_step=17")
    assert err.value.step == 17 and err.value.exit_code == 143
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"
    # pretend the process also logged past its checkpoint before dying: resume must drop it
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 18, "loss": 123.0}\n{"step": 19, "lo')
    run(tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == (ref_dir / "metrics.jsonl").read_text()
    for name in ("step_000000000.parquet", "step_000000020.parquet", "step_000000040.parquet"):
        assert (tmp_path / "spectra" / name).read_bytes() == (
            ref_dir / "spectra" / name
        ).read_bytes()
    a, b = final_state(ref_dir, 40), final_state(tmp_path, 40)
    np.testing.assert_array_equal(np.asarray(a["w"]), np.asarray(b["w"]))
    assert int(b["step"]) == 40
    record = json.loads((tmp_path / "record.json").read_text())
    assert len(record["resumes"]) == 1


def test_corrupted_latest_checkpoint_falls_back(reference, tmp_path, capfd):
    ref_dir, _ = reference
    with pytest.raises(TrainingInterrupted):
        run(tmp_path, "trainer.stop_at_step=30")
    # damage the newest checkpoint (step 30): its array data disappears
    state_dir = tmp_path / "checkpoints" / "30" / "state"
    for path in [*state_dir.rglob("manifest.ocdbt"), *state_dir.rglob("d")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    run(tmp_path)
    err = capfd.readouterr().err
    assert "checkpoint step 30" in err and "corrupted" in err and "trying step 20" in err
    assert "resumed from checkpoint at step 20" in err
    assert (tmp_path / "metrics.jsonl").read_text() == (ref_dir / "metrics.jsonl").read_text()
    np.testing.assert_array_equal(
        np.asarray(final_state(ref_dir, 40)["w"]), np.asarray(final_state(tmp_path, 40)["w"])
    )


def test_nan_loss_stops_naming_the_step(tmp_path):
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite loss=nan at step 23; last good checkpoint: step 20"
    ):
        run(tmp_path, "study.nan_at_step=23")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "non_finite" and summary["step"] == 23
    metrics = load_run(tmp_path).metrics
    assert metrics["step"].max() == 23 and np.isnan(metrics["loss"].iloc[-1])
    assert np.isfinite(metrics["loss"].iloc[:-1]).all()
    assert sorted(
        int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()
    ) == [10, 20]


def test_failing_logger_warns_once_and_training_goes_on(tmp_path, monkeypatch, capfd):
    import wandb

    calls = []

    def broken_init(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("no network")

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "init", broken_init)
    summary = run(tmp_path, "logger=wandb")
    err = capfd.readouterr().err
    assert len(calls) == 1 and err.count("WARNING: logger 'wandb' failed") == 1
    assert "no network" in err and summary["loss"] > 0
    assert (tmp_path / "wandb_run_id.txt").exists()


def test_logger_failing_mid_run_warns_once(tmp_path, monkeypatch, capfd):
    from experiments.runtime import wandb_mirror

    class Flaky:  # starts fine, then fails on its first metrics line
        def __init__(self, *args):
            self.calls = 0

        def log_metrics(self, step, metrics):
            self.calls += 1
            raise RuntimeError("quota exceeded")

        def log_spectra(self, step, rows): ...

        def finish(self, exit_code=0): ...

    monkeypatch.setattr(wandb_mirror, "WandbMirror", Flaky)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run(tmp_path, "logger=wandb")
    err = capfd.readouterr().err
    assert err.count("WARNING: logger 'wandb' failed (RuntimeError: quota exceeded)") == 1
    assert load_run(tmp_path).metrics["step"].max() == 40


def test_resume_from_another_run_and_never(reference, tmp_path):
    ref_dir, _ = reference
    run(tmp_path / "a", "trainer.max_steps=50", f"trainer.resume={ref_dir}")
    metrics = load_run(tmp_path / "a").metrics
    assert metrics["step"].min() == 45  # continued after the reference's step 40
    run(tmp_path / "b", "trainer.resume=never", "trainer.max_steps=10")
    assert load_run(tmp_path / "b").metrics["step"].min() == 5
    with pytest.raises(ValueError, match="no such file or directory"):
        run(tmp_path / "c", f"trainer.resume={tmp_path / 'missing'}")


def test_runs_loader_and_plot(reference, tmp_path):
    ref_dir, _ = reference
    run(tmp_path / "sweep" / "0", "seed=1", "trainer.max_steps=10")
    shutil.copytree(ref_dir, tmp_path / "sweep" / "1")
    runs = load_runs(tmp_path / "sweep")
    assert len(runs.runs) == 2 and "seed" in runs.metrics.columns
    assert set(runs.metrics["seed"]) == {0, 1}
    assert runs.spectra.groupby("seed")["step"].max().to_dict() == {0: 40, 1: 10}
    with pytest.raises(ValueError, match="not a run directory"):
        load_run(tmp_path)
    paths = plot_runs([tmp_path / "sweep"])
    assert (
        paths == [tmp_path / "sweep" / "figures" / "quickstart_loss.png"]
        and paths[0].stat().st_size > 1000
    )


def test_resume_with_another_seed_is_refused(reference, tmp_path):
    ref_dir, _ = reference
    shutil.copytree(ref_dir, tmp_path / "run")
    with pytest.raises(RunDirectoryConflict, match=r"another config \(seed: 0 → 1\)"):
        run(tmp_path / "run", "seed=1", "trainer.max_steps=50")
    with pytest.raises(ValueError, match=r"written with seed=0 but this run has seed=1"):
        run(tmp_path / "new", "seed=1", "trainer.max_steps=50", f"trainer.resume={ref_dir}")


def test_last_step_is_logged_evaluated_and_saved_off_cadence(tmp_path):
    """max_steps not a multiple of any cadence: the last step still logs, evaluates and saves."""
    run(tmp_path, "trainer.max_steps=23", "trainer.spectra_every=0")
    metrics = load_run(tmp_path).metrics
    assert list(metrics.dropna(subset=["loss"])["step"]) == [5, 10, 15, 20, 23]
    assert list(metrics.dropna(subset=["val_loss"])["step"]) == [10, 20, 23]
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [10, 20, 23] and not (tmp_path / "spectra").exists()


def test_trainer_feeds_batch_k_at_step_k_across_a_resume(tmp_path):
    """Batch k at update k+1, before and after a resume (a trainer that always fed batch 0,
    or restarted the data at 0, would pass every same-code-twice comparison)."""
    import jax.numpy as jnp

    from experiments.config import compose
    from experiments.runtime.context import RunContext
    from experiments.runtime.trainer import train

    def init():
        return {"seen": jnp.full((12,), -1, jnp.int32), "t": jnp.zeros((), jnp.int32)}

    def step(state, batch):
        seen = state["seen"].at[state["t"]].set(batch[0])
        return {"seen": seen, "t": state["t"] + 1}, {"loss": jnp.float32(0.0)}

    def batch(k):
        return np.full((8,), k, np.int32)

    common = ["+exp=quickstart", "trainer.max_steps=12", "trainer.ckpt_every=4",
              "trainer.progress=off", "trainer.async_checkpointing=false"]  # fmt: skip
    for overrides in ([*common, "trainer.stop_at_step=6"], common):
        ctx = RunContext(tmp_path, compose(overrides))
        try:
            result = train(ctx, init=init, step=step, batch=batch)
        except TrainingInterrupted as err:
            assert err.step == 6
        finally:
            ctx.close()
    assert np.asarray(result.state["seen"]).tolist() == list(range(12))


@pytest.mark.parametrize("optim", ["muon", "spectra_adamw", "gated_spectral"])
def test_spectral_optimizers_train_the_quickstart(tmp_path, optim):
    """The quickstart's weight is routed to the spectral step (not silently to AdamW)."""
    lr = {"muon": "0.02", "spectra_adamw": "0.1", "gated_spectral": "0.1"}[optim]
    summary = run(tmp_path, f"optim={optim}", f"optim.lr={lr}", "trainer.max_steps=20",
                  "trainer.spectra_every=0")  # fmt: skip
    losses = load_run(tmp_path).metrics.dropna(subset=["loss"])["loss"].to_numpy()
    assert np.isfinite(losses).all() and summary["loss"] < 0.5 * losses[0], losses
