"""Run directories anywhere `etils.epath` reaches: the same rundir / context / checkpoint code on
a local path given as a str or `epath.Path`, and on gs:// served by an in-memory fsspec
filesystem (no GCS here: what is tested is our code's object-store path, not Google's)."""

import importlib
import json
import pathlib

import pandas as pd
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.memory import MemoryFileSystem

from experiments import run_storage, rundir
from experiments.runtime.checkpoint import resolve_checkpoint_path
from experiments.runtime.trainer import TrainingInterrupted
from tests._runs import run_experiment

FAST = ["+exp=quickstart", "trainer.max_steps=20", "trainer.log_every=5", "trainer.eval_every=10",
        "trainer.ckpt_every=10", "trainer.spectra_every=10", "trainer.progress=off",
        "trainer.async_checkpointing=false"]  # fmt: skip


class _InMemoryBucket(MemoryFileSystem):
    """gs://bucket/key held in a dict: no rename of directories, no lock, like an object store."""

    protocol = ("gs", "gcs")
    root_marker = ""

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        for prefix in ("gs://", "gcs://"):
            path = path.removeprefix(prefix)
        return path.rstrip("/")


@pytest.fixture
def bucket(monkeypatch):
    """A fresh in-memory gs:// for this test; its dict of objects."""
    if gpath._is_tf_installed():
        pytest.skip("tensorflow installed: epath would send gs:// to tf.io.gfile, not fsspec")
    fs = type("Bucket", (_InMemoryBucket,), {"store": {}, "pseudo_dirs": [""]})
    registry = importlib.import_module("fsspec.registry")._registry  # `fsspec.registry` is a view
    for name in ("gs", "gcs"):
        monkeypatch.setitem(registry, name, fs)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    yield fs.store
    epath_backend.fsspec_backend._get_filesystem.cache_clear()


CONFIG = {"seed": 0, "optim": {"name": "sgd", "lr": 0.1}}


def _write_a_run(run_dir, seed: int = 0) -> None:
    """What a run writes, through rundir only: claim, lock, record, metrics, spectra, tables,
    a resume's truncation and the summary."""
    config = {**CONFIG, "seed": seed}
    run_storage.make_dir(run_storage.as_path(run_dir))
    assert rundir.claim(run_dir, config, "auto", ()) is None
    held = rundir.lock(run_dir)
    rundir.write_record(run_dir, config, ["optim=sgd", f"seed={seed}"], {"argv": []},
                        {"devices": {"device_count": 1}})  # fmt: skip
    rundir.add_dataset(run_dir, {"name": "toy", "size": 3, "sha256": "ab"})
    for step in (1, 2, 3, 4):
        rundir.append_metrics(run_dir, step, {"loss": 1.0 / step + seed, "lr": 0.1})
    for step in (2, 4):
        rundir.write_spectra(run_dir, step, [{"layer": "w", "sigma": [3.0, 1.0]}])
        rundir.write_spectra(run_dir, step, [{"layer": "b", "sigma": [2.0]}])  # appended
    rundir.append_table(run_dir, "sizes", [{"n": 1, "err": 0.5}])
    rundir.append_table(run_dir, "sizes", [{"n": 2, "err": 0.25}])
    rundir.truncate_after(run_dir, 3)  # as a resume from step 3 does
    rundir.write_summary(run_dir, {"status": "completed", "summary": {"loss": 1 / 3 + seed}})
    held.close()


def test_a_run_directory_in_a_bucket_reads_back_like_a_local_one(bucket, tmp_path):
    _write_a_run(tmp_path / "local")
    _write_a_run("gs://b/sweep/0")
    _write_a_run(epath.Path("gs://b/sweep/1"), seed=1)

    local, remote = rundir.load_run(tmp_path / "local"), rundir.load_run("gs://b/sweep/0")
    assert isinstance(remote.path, epath.Path) and str(remote.path) == "gs://b/sweep/0"
    assert (remote.config, remote.overrides, remote.summary) == (
        local.config, local.overrides, local.summary)  # fmt: skip
    assert remote.record == local.record and remote.record["datasets"][0]["name"] == "toy"
    pd.testing.assert_frame_equal(remote.metrics, local.metrics)
    assert list(remote.metrics["step"]) == [1, 2, 3] and remote.metrics["loss"][2] == 1 / 3
    pd.testing.assert_frame_equal(remote.spectra, local.spectra)
    assert list(remote.spectra["layer"]) == ["w", "b"]  # step 4 dropped, step 2 appended
    pd.testing.assert_frame_equal(remote.tables["sizes"], local.tables["sizes"])
    assert list(remote.tables["sizes"]["n"]) == [1, 2]

    found = rundir.find_run_dirs(["gs://b/sweep"])
    assert [str(p) for p in found] == ["gs://b/sweep/0", "gs://b/sweep/1"]
    runs = rundir.load_runs("gs://b/sweep")
    assert runs.config_keys == ["seed"] and sorted(runs.metrics["seed"].unique()) == [0, 1]
    leftovers = [k for k in bucket if k.endswith((".tmp", rundir.LOCK_FILE))]
    assert not leftovers  # no temporary objects; each holder note removed on close


def test_claim_in_a_bucket_refuses_another_config_and_sets_aside_on_resume_never(bucket):
    _write_a_run("gs://b/run")
    other = {**CONFIG, "optim": {"name": "sgd", "lr": 0.2}}
    with pytest.raises(rundir.RunDirectoryConflict, match=r"optim.lr: 0.1 → 0.2"):
        rundir.claim("gs://b/run", other, "auto", ())
    before = {k: v.getvalue() for k, v in bucket.items()}

    aside = rundir.claim("gs://b/run", other, "never", ())
    assert str(aside).startswith("gs://b/run.replaced-")
    moved = {k.replace(str(aside).removeprefix("gs://"), "b/run"): v.getvalue()
             for k, v in bucket.items()}  # fmt: skip
    assert moved == before  # every object moved, byte for byte
    assert not [k for k in bucket if k.startswith("b/run/")]  # and none left behind
    with pytest.raises(ValueError, match="contains none"):  # set-aside runs: only when named
        rundir.find_run_dirs(["gs://b"])
    assert rundir.load_run(aside).metrics["step"].tolist() == [1, 2, 3]


def test_a_holder_note_is_reported_not_refused_and_removed_on_close(bucket, capfd):
    rundir.lock("gs://b/run")  # a run preempted before it could close
    note = rundir.lock("gs://b/run")
    err = capfd.readouterr().err
    assert "gs://b/run/.lock names pid" in err and "cannot lock" in err
    note.close()
    assert not epath.Path("gs://b/run/.lock").exists()


def test_uris_are_never_resolved_and_local_paths_stay_pathlib(bucket, tmp_path):
    assert str(run_storage.as_path("gs://b/x", resolve=True)) == "gs://b/x"
    with pytest.raises(ValueError, match=r"'gs:/b/x' looks like a URI with one slash too few"):
        run_storage.as_path("gs:/b/x")  # would otherwise become a local directory "gs:"
    local = run_storage.as_path(epath.Path(tmp_path) / "x", resolve=True)
    assert type(local) is type(tmp_path) and local == tmp_path / "x"
    assert rundir.run_location(None, tmp_path) == tmp_path
    assert str(rundir.run_location("gs://b/sweep", tmp_path, job=3)) == "gs://b/sweep/3"
    assert rundir.run_location(str(tmp_path), "ignored", job=0) == tmp_path / "0"

    step_dir = epath.Path("gs://b/run/checkpoints/10")
    (step_dir / "state").mkdir(parents=True)
    (step_dir / "state" / "data").write_text("x")
    directory, step = resolve_checkpoint_path("gs://b/run")
    assert (str(directory), step) == ("gs://b/run/checkpoints", None)
    directory, step = resolve_checkpoint_path(str(step_dir))
    assert (str(directory), step) == ("gs://b/run/checkpoints", 10)


def _run(run_dir, *overrides):
    return run_experiment(run_dir, [*FAST, *overrides])


def test_output_dir_holds_the_run_and_a_resume_there_is_bitwise(tmp_path):
    """`output_dir` (a plain string, as from the command line) is where the run lives; Hydra's
    directory keeps none of its files, except a sweep job's summary copy."""
    hydra_dir, out = tmp_path / "hydra", tmp_path / "out"
    hydra_dir.mkdir()
    cfg_dir = f"output_dir={out / 'sweep'}"
    from experiments.config import compose
    from experiments.runtime.launch import execute
    from experiments.studies import study_module

    overrides = [*FAST, cfg_dir]
    cfg = compose(overrides)
    execute(cfg, hydra_dir, overrides, study_module("quickstart").run, job=2)
    straight = out / "sweep" / "2"
    assert json.loads((straight / "summary.json").read_text())["status"] == "completed"
    assert (hydra_dir / "summary.json").read_text() == (straight / "summary.json").read_text()
    assert sorted(p.name for p in hydra_dir.iterdir()) == ["summary.json"]

    resumed = epath.Path(out) / "resumed"
    with pytest.raises(TrainingInterrupted):
        _run(tmp_path / "unused", f"output_dir={resumed}", "trainer.stop_at_step=10")
    _run(tmp_path / "unused", f"output_dir={resumed}")
    assert not (tmp_path / "unused").exists()
    resumed_run = pathlib.Path(resumed)
    assert (resumed_run / "metrics.jsonl").read_bytes() == (straight / "metrics.jsonl").read_bytes()
    record = json.loads((resumed_run / "record.json").read_text())
    assert len(record["resumes"]) == 1


def test_an_empty_output_dir_is_refused_by_name():
    from experiments.config import compose

    with pytest.raises(ValueError, match="output_dir must be"):
        compose([*FAST, "output_dir=' '"])


def test_a_run_context_writes_a_bucket_run_directory(bucket, capfd):
    from experiments.config import compose
    from experiments.runtime.context import RunContext

    cfg = compose([*FAST, "output_dir=gs://b/run"])
    ctx = RunContext(cfg.output_dir, cfg, overrides=["optim.lr=0.1"])
    assert isinstance(ctx.dir, epath.Path) and str(ctx.dir) == "gs://b/run"
    assert epath.Path("gs://b/run/.lock").read_text().startswith("pid ")
    ctx.log_metrics(1, {"loss": 0.5})
    ctx.log_metrics(2, {"loss": 0.25})
    ctx.log_table("sizes", [{"n": 1}])
    ctx.close()
    run = rundir.load_run("gs://b/run")
    assert run.metrics["loss"].tolist() == [0.5, 0.25] and run.overrides == ["optim.lr=0.1"]
    assert run.config["output_dir"] == "gs://b/run" and run.tables["sizes"]["n"].tolist() == [1]
    assert not epath.Path("gs://b/run/.lock").exists()
    RunContext("gs://b/run", cfg).close()  # again, with no checkpoint: the old files set aside
    err = capfd.readouterr().err
    assert "its files were moved to gs://b/run.replaced-" in err and "WARNING" not in err
    (aside,) = [p for p in epath.Path("gs://b").iterdir() if ".replaced-" in p.name]
    assert rundir.load_run(aside).metrics["loss"].tolist() == [0.5, 0.25]
