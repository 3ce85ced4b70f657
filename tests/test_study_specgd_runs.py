"""Tiny end-to-end runs of the four spectral-vs-GD studies through a real RunContext,
their pure helpers, and config validation."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from experiments.runtime.context import RunContext
from experiments.schema import register_schemas
from experiments.studies import one_step_check, sparse_regression, spiked_rf, spiked_rf_sweep

CONFIG_DIR = str(pathlib.Path(__file__).resolve().parent.parent / "configs")
EXPS = ["spiked_rf", "spiked_rf_swiglu", "spiked_rf_sweep", "sparse_regression", "one_step_check"]


def _compose(exp: str, overrides=()):
    register_schemas()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[f"+exp={exp}", *overrides])


def _run(module, cfg, tmp_path):
    ctx = RunContext(tmp_path / "run", cfg, write_record=False)
    summary = module.run(cfg, ctx)
    figures = module.plot([ctx.dir], tmp_path / "figures")
    assert figures and all(p.exists() and p.stat().st_size > 0 for p in figures)
    return summary, ctx.dir


@pytest.mark.parametrize("exp", EXPS)
def test_every_exp_config_composes(exp):
    cfg = _compose(exp)
    assert cfg.exp_name == exp
    assert cfg.study.name in {"spiked_rf", "spiked_rf_sweep", "sparse_regression", "one_step_check"}


def test_spiked_rf_tiny_end_to_end(tmp_path):
    cfg = _compose(
        "spiked_rf",
        [
            "study.width=16",
            "study.input_dim=8",
            "study.num_samples=48",
            "study.num_steps=30",
            "study.restart_every=15",
        ],
    )
    summary, run_dir = _run(spiked_rf, cfg, tmp_path)
    metrics = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    assert list(metrics["step"]) == list(range(31))
    assert 2.0 < summary["st_A"] < np.pi
    assert summary["nr_gd_max"] > 2 * summary["st_A"]
    # Spike present, nr ≫ st: SpecGD ends below GD (the paper's Fig. 1 in miniature).
    assert summary["loss_final_specgd"] < summary["loss_final_gd"]
    assert all(isinstance(v, float) for v in summary.values())
    json.dumps(summary, allow_nan=False)
    restarts = pd.read_parquet(run_dir / "tables" / "restarts.parquet")
    starts = sorted(set(restarts["start"]))
    assert 15 in set(starts) and restarts["from_peak"].any()
    for start in starts:  # each restart begins at the GD iterate's loss
        first = restarts[(restarts["start"] == start) & (restarts["step"] == start)]["loss"].iloc[0]
        assert first == pytest.approx(metrics["gd/loss"][start], rel=1e-10)


def test_spiked_rf_same_seed_same_numbers(tmp_path):
    overrides = [
        "study.width=16",  # the shapes of the tiny end-to-end run (shared compiles)
        "study.input_dim=8",
        "study.num_samples=48",
        "study.num_steps=30",
        "study.restart_every=null",
        "study.restart_from_peak=false",
    ]
    a, _ = _run(spiked_rf, _compose("spiked_rf", overrides), tmp_path / "a")
    b, _ = _run(spiked_rf, _compose("spiked_rf", overrides), tmp_path / "b")
    c, _ = _run(spiked_rf, _compose("spiked_rf", [*overrides, "seed=1"]), tmp_path / "c")
    assert a == b
    assert a["st_A"] != c["st_A"]


def test_sweep_slope_positive_on_small_grid(tmp_path):
    cfg = _compose(
        "spiked_rf_sweep",
        [
            "study.widths=[16,32,48]",
            "study.seeds=[0,1]",
            "study.num_steps=12",
            "study.dense_steps=4",
            "study.nr_every=4",
        ],
    )
    summary, run_dir = _run(spiked_rf_sweep, cfg, tmp_path)
    for target in ("realizable", "teacher_student"):
        assert summary[f"{target}/nr_step1_slope"] > 0.1
        assert summary[f"{target}/nr_step1_r2"] > 0.9
    curves = pd.read_parquet(run_dir / "tables" / "nr_curves.parquet")
    assert sorted(set(curves["step"])) == [0, 1, 2, 3, 4, 8, 12]


def test_sparse_regression_tiny_end_to_end(tmp_path):
    cfg = _compose(
        "sparse_regression",
        [
            "study.log_every=2",
            "study.early_step=4",
            "study.swiglu_batch_sizes=[16,64]",
            "study.swiglu_sweep_dim=8",
        ],
    )
    with open_dict(cfg):
        cfg.study.variants = [
            {
                "name": "relu_square",  # the shapes of test_study_specgd_mlp (shared compiles)
                "activation": "relu_square",
                "dim": 4,
                "num_samples": 24,
                "num_steps": 6,
                "lr_gd": 0.081,
                "lr_specgd": 0.1,
            },
            {
                "name": "swiglu",
                "activation": "swiglu",
                "dim": 8,
                "num_samples": 32,
                "num_steps": 4,
                "lr_gd": 0.01,
                "lr_specgd": 0.025,
            },
        ]
    summary, run_dir = _run(sparse_regression, cfg, tmp_path)
    for variant in ("relu_square", "swiglu"):
        for method in ("gd", "specgd"):
            assert (
                summary[f"{variant}/{method}/loss_final"]
                < summary[f"{variant}/{method}/loss_initial"]
            )
    assert summary["relu_square/gd/st_A1_max"] < 6.0
    table = pd.read_parquet(run_dir / "tables" / "swiglu_batch_sweep.parquet")
    assert len(table) == 6
    metrics = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    assert {"relu_square/specgd/nr_W2", "swiglu/gd/st_A3"} <= set(metrics.columns)


def test_one_step_check_tiny_end_to_end(tmp_path):
    cfg = _compose("one_step_check", ["study.num_instances=2", "study.gd_steps=[0,3]"])
    with open_dict(cfg):
        for family in cfg.study.families:
            family.width, family.input_dim, family.num_samples = 12, 6, 30
    summary, run_dir = _run(one_step_check, cfg, tmp_path)
    assert summary["num_instances"] == 6 * 2 * 2
    assert summary["fraction_implication_holds"] == 1.0
    assert summary["fraction_within_bracket"] == 1.0
    assert summary["spearman_predicted_vs_measured"] > 0.8
    assert len(pd.read_parquet(run_dir / "tables" / "one_step.parquet")) == 24


def test_helpers():
    slope, intercept, r2 = spiked_rf_sweep.linear_fit([1, 2, 3], [3, 5, 7])
    assert (slope, intercept, r2) == pytest.approx((2.0, 1.0, 1.0))
    assert spiked_rf_sweep.linear_fit([1, 2, 3, 4], [1, 3, 2, 4])[2] == pytest.approx(0.64)
    assert spiked_rf_sweep.window_above([0, 1, 2, 3, 4], [9, 5, 6, 2, 7], 5) == (1, 2)
    assert spiked_rf_sweep.window_above([0, 1, 2], [9, 1, 1], 5) == (-1, -1)
    assert spiked_rf_sweep.window_above([0, 1, 2], [9, 6, 6], 5) == (1, 2)
    mask = spiked_rf_sweep.record_mask(20, 3, 8)
    assert np.nonzero(mask)[0].tolist() == [0, 1, 2, 3, 8, 16, 20]
    assert spiked_rf.restart_points(100, 30, 45) == [30, 45, 60, 90]
    assert spiked_rf.restart_points(100, None, 0) == []
    assert one_step_check.spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("module", "exp", "override", "match"),
    [
        (spiked_rf, "spiked_rf", {"feature": "gelu"}, "feature"),
        (spiked_rf, "spiked_rf", {"num_steps": 0}, "num_steps"),
        (spiked_rf_sweep, "spiked_rf_sweep", {"widths": [64]}, "widths"),
        (spiked_rf_sweep, "spiked_rf_sweep", {"targets": ["noisy"]}, "targets"),
        (sparse_regression, "sparse_regression", {"spectral_layers": [4]}, "spectral_layers"),
        (sparse_regression, "sparse_regression", {"variants": []}, "variants"),
        (one_step_check, "one_step_check", {"gd_steps": [-1]}, "gd_steps"),
    ],
)
def test_invalid_study_config_raises_before_work(module, exp, override, match, tmp_path):
    cfg = _compose(exp)
    with open_dict(cfg):
        cfg.study = OmegaConf.merge(cfg.study, override)
    ctx = RunContext(tmp_path / "run", cfg, write_record=False)
    with pytest.raises(ValueError, match=match):
        module.run(cfg, ctx)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
