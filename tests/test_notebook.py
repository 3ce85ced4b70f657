"""notebooks/spectra_analysis.ipynb executes (nbclient) on tiny nanogpt runs made here."""

import os
import pathlib

import nbformat
from nbclient import NotebookClient

from experiments.config import compose
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


def test_notebook_executes_on_tiny_runs(tmp_path, monkeypatch):
    for name, seed in (("nanogpt_adamw", 0), ("nanogpt_muon", 0)):
        overrides = [*TINY, f"seed={seed}"]
        run_experiment(tmp_path / f"{name}_{seed}", [f"+exp={name}", "trainer.progress=off",
                                                      *overrides])  # fmt: skip
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("SPECJAX_RUN_DIRS", str(tmp_path))
    root = str(NOTEBOOK.parent.parent)
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": root}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    text = "".join(o.get("text", "") for o in outputs)
    assert "2 runs" in text
