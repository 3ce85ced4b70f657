"""notebooks/spectra_analysis.ipynb executes (nbclient) on tiny nanogpt runs made here."""

import os
import pathlib

import nbformat
from nbclient import NotebookClient

from experiments import rundir
from experiments.config import compose
from experiments.nanogpt import figures
from tests._runs import run_experiment

TINY = [
    "data=stdlib_source", "model.num_layers=1", "model.width=16", "model.num_heads=2",
    "model.context_length=8", "study.batch_size=4", "study.eval_batches=2",
    "study.full_eval_windows=2048", "trainer.max_steps=4", "optim.warmup_steps=1",
    "trainer.eval_every=2", "trainer.spectra_every=2", "trainer.ckpt_every=0",
]  # fmt: skip
NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "spectra_analysis.ipynb"


def compose_exp(name, overrides=()):
    return compose([f"+exp={name}", "trainer.progress=off", *overrides])


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


def execute_notebook(cwd, monkeypatch):
    """Run the notebook as it is, from `cwd`, without SPECJAX_RUN_DIRS; its outputs."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.delenv("SPECJAX_RUN_DIRS", raising=False)
    root = str(NOTEBOOK.parent.parent)
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    return outputs, text


def test_notebook_finds_the_runs_in_outputs_and_multirun(tmp_path, monkeypatch):
    """The default places: a run in outputs/ and a sweep job in multirun/ of the cwd."""
    places = {"nanogpt_adamw": "outputs/nanogpt_adamw/2026-01-01_00-00-00",
              "nanogpt_muon": "multirun/nanogpt_muon/2026-01-01_00-00-00/0"}  # fmt: skip
    full_spectra = {"nanogpt_muon": ["study.full_spectra_every=2"]}  # section 6's ESD figures
    for name, place in places.items():
        extra = full_spectra.get(name, [])
        run_experiment(tmp_path / place, [f"+exp={name}", "trainer.progress=off", *TINY, *extra])
    outputs, text = execute_notebook(tmp_path, monkeypatch)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # sections 1-5, an ESD and an α figure for the muon run, 7 (saying there is no gated run)
    # and 8 (AdamW and Muon(all), one seed each, the other variants marked "not run")
    assert len(images) >= 9
    assert "2 runs: ['adamw', 'muon']" in text
    assert "1 of 2 runs logged full spectra" in text
    assert "0 of 2 runs have a gate check" in text
    tables = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "AdamW" in tables and "Muon: all hidden" in tables and "gain_share" in tables


def test_notebook_without_runs_says_which_command_makes_them(tmp_path, monkeypatch):
    (tmp_path / "outputs" / "other").mkdir(parents=True)  # exists, holds no run
    outputs, text = execute_notebook(tmp_path, monkeypatch)
    assert "No nanogpt run directories found in: " in text
    assert str(tmp_path / "outputs") in text and str(tmp_path / "multirun") in text
    assert "python -m experiments.run +exp=nanogpt_muon" in text
    assert not [o for o in outputs if "image/png" in o.get("data", {})]


def _fake_run(path, study):
    path.mkdir(parents=True)
    (path / rundir.CONFIG_FILE).write_text(f"study:\n  name: {study}\n")
    (path / rundir.RECORD_FILE).write_text("{}")
    return path


def test_run_discovery_defaults_and_the_environment_override(tmp_path):
    repo = tmp_path / "repo"
    ours = _fake_run(repo / "outputs" / "nanogpt_muon" / "t", "nanogpt")
    _fake_run(repo / "outputs" / "quickstart" / "t", "quickstart")  # another study: skipped
    sweep = [_fake_run(repo / "multirun" / "s" / str(j), "nanogpt") for j in (0, 1)]
    elsewhere = _fake_run(tmp_path / "elsewhere" / "run", "nanogpt")
    (repo / "notebooks").mkdir()
    for cwd in (repo, repo / "notebooks"):  # Jupyter starts in notebooks/: look one up
        found, searched = figures.nanogpt_run_dirs(None, cwd=cwd)
        assert found == [ours, *sweep]
        assert searched == [repo / "outputs", repo / "multirun"]
    spec = f"{elsewhere}:{tmp_path / 'missing'}"
    assert figures.nanogpt_run_dirs(spec, cwd=repo) == (
        [elsewhere],
        [elsewhere, tmp_path / "missing"],
    )
