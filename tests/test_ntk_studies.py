"""Tiny end-to-end runs of the NTK studies (+exp=ntk_rank/ntk_width/ntk_sketch), their data."""

import json
import pathlib

import jax
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from experiments.runtime.launch import execute
from experiments.schema import register_schemas
from experiments.studies import _ntk_data as ntk_data
from experiments.studies import _ntk_models as ntk_models

CONFIGS = str(pathlib.Path(__file__).resolve().parent.parent / "configs")

TINY = {
    # depth 8 = the smallest CIFAR ResNet (one block per stage): compile time dominates here.
    "ntk_rank": ["study.models=[{model:mlp,width:8},{model:resnet,width:2}]", "study.ns=[6,9,12]",
                 "study.seeds=1", "study.datasets=[digits]", "study.depth=8"],
    "ntk_width": ["study.widths=[4,8,16]", "study.n=8", "study.seeds=2"],
    "ntk_sketch": ["study.model=mlp", "study.width=4", "study.n=8", "study.sketch_widths=[8]",
                   "study.num_probes=[2]", "study.repeats=1", "study.num_sketches=3",
                   "study.large.model=mlp", "study.large.width=4", "study.large.n=10",
                   "study.large.sketch_width=16"],
}  # fmt: skip


def compose_exp(name, overrides=()):
    register_schemas()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("config", overrides=[f"+exp={name}", "trainer.progress=off", *overrides])


@pytest.mark.parametrize("name", ["ntk_rank", "ntk_width", "ntk_sketch"])
def test_default_config_composes(name):
    cfg = compose_exp(name)
    assert cfg.study.name == name and cfg.exp_name == name


@pytest.mark.parametrize("name", ["ntk_rank", "ntk_width", "ntk_sketch"])
def test_tiny_run_end_to_end(name, tmp_path):
    import importlib

    cfg = compose_exp(name, TINY[name])
    summary = execute(cfg, tmp_path, TINY[name])
    assert summary and all(isinstance(v, float) for v in summary.values())
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    table = pd.read_parquet(tmp_path / "tables" / f"{name}.parquet")
    column = "r_hat" if name == "ntk_sketch" else "r_eff"
    assert len(table) > 0 and np.isfinite(table[column]).all() and (table[column] >= 0.99).all()
    figures = importlib.import_module(f"experiments.studies.{name}").plot(
        [tmp_path], tmp_path / "fig"
    )
    assert figures and all(f.exists() and f.stat().st_size > 0 for f in figures)


def test_rank_study_slope_interval_contains_mean():
    from experiments.studies.ntk_rank import slope_fit

    ns = np.array([10, 100, 1000])
    fit = slope_fit(ns, np.array([np.log(ns) * 0.5 + 1, np.log(ns) * 0.7 + 1]))
    assert fit["slope"] == pytest.approx(0.6)
    assert fit["slope_ci_low"] < 0.5 and fit["slope_ci_high"] > 0.7


def test_bad_study_config_raises_before_compute(tmp_path):
    cfg = compose_exp("ntk_rank", ["study.datasets=[mnist]"])
    with pytest.raises(ValueError, match=r"study\.datasets"):
        execute(cfg, tmp_path)


def test_cifar10_offline_gives_clear_message(tmp_path):
    with pytest.raises(ntk_data.DatasetUnavailable, match=r"CIFAR-10 not found.*MD5"):
        ntk_data.cifar10(jax.random.PRNGKey(0), 10, data_dir=tmp_path)
    bad = tmp_path / ntk_data.CIFAR10_ARCHIVE
    bad.write_bytes(b"not the archive")
    with pytest.raises(ntk_data.DatasetUnavailable, match="expected c58f"):
        ntk_data.cifar10_archive(tmp_path)


def test_data_is_deterministic_and_digits_offline():
    a, ident_a = ntk_data.load("digits", jax.random.PRNGKey(0), 50)
    b, ident_b = ntk_data.load("digits", jax.random.PRNGKey(0), 50)
    assert a.shape == (50, 8, 8, 1) and ident_a == ident_b
    np.testing.assert_array_equal(a, b)
    g, ident_g = ntk_data.load("gaussian", jax.random.PRNGKey(0), 5)
    assert g.shape == (5, 8, 8, 1) and ident_g["size"] == 5
    with pytest.raises(ValueError, match="n must be in"):
        ntk_data.digits(jax.random.PRNGKey(0), ntk_data.DIGITS_SIZE + 1)


def test_resnet20_parameter_count():
    # 16-channel CIFAR ResNet-20 has ≈ 0.27 M parameters (He et al. 2016, Table 6).
    x = np.zeros((1, 8, 8, 1), np.float32)
    params = jax.eval_shape(ntk_models.make_model("resnet", 16).init, jax.random.PRNGKey(0), x)
    assert 0.26e6 < ntk_models.num_params(params) < 0.28e6
    with pytest.raises(ValueError, match="depth must be 6k"):
        ntk_models.make_model("resnet", 16, depth=21)
