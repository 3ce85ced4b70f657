"""`python -m experiments.plot` on NanoGPT runs made with spectra off (trainer.spectra_every=0).

Every figure with its data is drawn, each figure without gets one line on stderr saying why,
and the exit status is 0 (the spectra figures once raised KeyError: 'kind').
"""

import json

import numpy as np
import pandas as pd
import pytest

from experiments.nanogpt import figures, gate_figures
from tests._tiny import tiny_nanogpt

SPECTRA_FIGURES = ("activation_stable_rank", "gradient_nuclear_rank", "ratio_heatmap",
                   "weight_spectral_norm")  # fmt: skip
DRAWN = ("loss", "gate_choices", "muon_ablation")
TINY_NO_SPECTRA = tiny_nanogpt("gated", {"study.eval_batches": 2, "study.full_eval": "false",
    "trainer.max_steps": 4, "optim.warmup_steps": 1, "trainer.eval_every": 2,
    "trainer.spectra_every": 0, "trainer.ckpt_every": 0, "trainer.log_every": 1,
    "trainer.log_throughput": "false"})  # fmt: skip


@pytest.fixture(scope="module")
def gated_run_without_spectra(tmp_path_factory):
    from tests._runs import run_experiment

    run_dir = tmp_path_factory.mktemp("no_spectra") / "run"
    run_experiment(run_dir, TINY_NO_SPECTRA)
    assert not (run_dir / "spectra").exists() and not (run_dir / "tables").exists()
    return run_dir


def test_plot_cli_draws_what_it_has_and_names_what_it_skips(gated_run_without_spectra, tmp_path,
                                                            capsys):  # fmt: skip
    from experiments.plot import main

    assert main([str(gated_run_without_spectra), "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    expected = sorted(str(tmp_path / f"nanogpt_{n}.png") for n in DRAWN)
    assert sorted(out.split()) == expected
    assert all((tmp_path / f"nanogpt_{n}.png").stat().st_size > 1000 for n in DRAWN)
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert skipped == [f"skipped nanogpt_{n}.png: no spectra logged (trainer.spectra_every=0)"
                       for n in SPECTRA_FIGURES]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"nanogpt_{n}.png" for n in DRAWN)


def test_gate_figure_shows_the_per_step_choices_without_gate_check_rows(
    gated_run_without_spectra,
):
    """Reference: the took_spectral/<block> values of metrics.jsonl, read with json."""
    from experiments import rundir

    run = rundir.load_run(gated_run_without_spectra)
    checks = gate_figures.gate_rows([run])
    assert checks.empty  # the check runs at spectra steps only
    fig = gate_figures.gate_choice_heatmap(checks, gate_figures.step_rows([run]), "spectra off")
    took = {}
    for line in (gated_run_without_spectra / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key.startswith("took_spectral/"):
                took[(key.removeprefix("took_spectral/"), row["step"])] = value
    blocks = sorted({b for b, _ in took})  # one block: no depth order to mind
    steps = sorted({s for _, s in took})
    assert steps == [1, 2, 3, 4] and len(blocks) == 4
    expected = np.array([[took[(b, s)] for s in steps] for b in blocks])
    image = fig.axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(image), expected)
    right_text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "no gate_check rows" in right_text and "spectra off" in right_text


def test_the_reason_names_the_cadence_only_when_it_was_off():
    off = {"a": {"trainer": {"spectra_every": 0}}, "b": {"trainer": {"spectra_every": 0}}}
    assert figures.no_spectra_reason(off) == "no spectra logged (trainer.spectra_every=0)"
    on = {**off, "c": {"trainer": {"spectra_every": 250}}}  # killed before its first spectra
    assert "spectra_every=0" not in figures.no_spectra_reason(on)
    weights = pd.DataFrame({"run": "a", "kind": "weight", "name": ["wte"], "step": [0],
                            "ratio": [np.nan]})  # fmt: skip
    assert figures.missing_spectra(pd.DataFrame(), "weight", "ratio", "why") == "why"
    assert figures.missing_spectra(weights, "weight", "ratio", "why") == (
        "no ratio in the weight spectra rows")  # fmt: skip
    assert figures.missing_spectra(weights.assign(ratio=2.0), "weight", "ratio", "why") is None
    assert "act_stable_rank" in figures.missing_spectra(weights, "activation",
                                                        "act_stable_rank", "why")  # fmt: skip


def test_loss_bands_of_a_metric_never_logged_are_empty():
    metrics = figures.with_optimizer(
        pd.DataFrame({"run": "a", "step": [1, 2], "loss": [3.0, 2.5]}),
        {"a": {"optim": {"name": "adamw"}, "seed": 0}},
    )
    assert figures.loss_bands(metrics, "val_loss").empty
    assert figures.loss_bands(metrics, "loss")["mean"].tolist() == [3.0, 2.5]


def test_esd_cli_skips_a_run_without_full_spectra(gated_run_without_spectra, tmp_path, capsys):
    from experiments.nanogpt import esd_figures

    assert esd_figures.main([str(gated_run_without_spectra), "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and not any(tmp_path.iterdir())
    assert err.startswith("skipped esd.png, esd_alpha.png: ") and "full_spectra_every" in err
    assert len(err.splitlines()) == 1
    assert esd_figures.main([str(tmp_path / "typo")]) == 2  # not a run: an error, not a skip
    assert "is not a run directory" in capsys.readouterr().err


def test_gate_panels_count_their_own_seeds():
    """Two seeds logged per-step choices, one of them also gate_check rows: 2 left, 1 right."""
    per_step = pd.DataFrame({"run": ["r0", "r1"], "optim": "g", "block": "block_0/mlp/fc",
                             "step": 1, "took_spectral": [1.0, 0.0]})  # fmt: skip
    rows = pd.DataFrame({"run": ["r0"], "optim": "g", "block": "block_0/mlp/fc", "step": [0],
                         "took_spectral": [1], "nr_U": [2.0], "st_A": [1.0]})  # fmt: skip
    fig = gate_figures.gate_choice_heatmap(rows, per_step)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["took the spectral step (g, 2 seeds)", "log10 nr(U)/st(A) (g, 1 seed)"]
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), [[0.5]])
