"""Tiny end-to-end runs of the NTK studies (+exp=ntk_rank/ntk_width/ntk_sketch), their configs
and their data."""

import importlib
import json

import jax
import numpy as np
import pytest
from hydra.errors import ConfigCompositionException

from experiments import rundir
from experiments.config import compose
from experiments.runtime.context import RunContext
from experiments.runtime.launch import execute
from experiments.studies import _ntk_data as ntk_data
from experiments.studies import _ntk_models as ntk_models

STUDIES = ["ntk_rank", "ntk_width", "ntk_sketch"]
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
    return compose([f"+exp={name}", "trainer.progress=off", *overrides])


@pytest.mark.parametrize("name", STUDIES)
def test_default_config_composes(name):
    cfg = compose_exp(name)
    assert cfg.study.name == name and cfg.exp_name == name


@pytest.mark.parametrize("name", STUDIES)
def test_tiny_run_end_to_end(name, tmp_path):
    module = importlib.import_module(f"experiments.studies.{name}")
    cfg = compose_exp(name, TINY[name])
    summary = execute(cfg, tmp_path / "run", TINY[name], module.run)
    assert summary and all(isinstance(v, float) for v in summary.values())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
    table = rundir.read_table(tmp_path / "run", name)
    column = "r_hat" if name == "ntk_sketch" else "r_eff"
    assert len(table) > 0 and np.isfinite(table[column]).all() and (table[column] >= 0.99).all()
    if name == "ntk_sketch":
        assert len(rundir.read_table(tmp_path / "run", module.LARGE_TABLE)) == 1
    figures = module.plot([tmp_path / "run"], tmp_path / "fig")
    assert figures and all(f.exists() and f.stat().st_size > 0 for f in figures)


def test_rank_study_slope_interval_contains_mean():
    from experiments.studies.ntk_rank import slope_fit

    ns = np.array([10, 100, 1000])
    fit = slope_fit(ns, np.array([np.log(ns) * 0.5 + 1, np.log(ns) * 0.7 + 1]))
    assert fit["slope"] == pytest.approx(0.6)
    assert fit["slope_ci_low"] < 0.5 and fit["slope_ci_high"] > 0.7


@pytest.mark.parametrize(
    ("name", "override", "message"),
    [
        ("ntk_rank", "study.datasets=[mnist]", r"study\.datasets\[0\] .*'mnist'"),
        ("ntk_rank", "study.ns=[2,10]", r"study\.ns\[0\] must be ≥ 3"),
        ("ntk_rank", "study.models=[{model:cnn,width:8}]", r"study\.models\[0\]\.model .*'cnn'"),
        ("ntk_rank", "study.depth=9", r"study\.depth must be 6k \+ 2.*got 9"),
        ("ntk_rank", "study.ns=[10,2000]", r"max\(study\.ns\) must be ≤ 1797"),
        ("ntk_width", "study.seeds=1", r"study\.seeds must be ≥ 2"),
        ("ntk_width", "study.widths=[8,0,16]", r"study\.widths\[1\] must be a positive int"),
        ("ntk_sketch", "study.num_sketches=1", r"study\.num_sketches must be ≥ 2"),
        ("ntk_sketch", "study.output=probe", r"study\.output must be one of"),
        ("ntk_sketch", "study.large.output=logit", r"study\.large\.num_probes must be 1"),
    ],
)
def test_bad_study_config_raises_before_compute(name, override, message):
    with pytest.raises(ValueError, match=message):
        compose_exp(name, [override])


@pytest.mark.parametrize(
    "override", ["study.seed=1", "study.large.widht=8", "study.seeds=abc", "study.n=[1,2]"]
)
def test_unknown_key_or_wrong_type_fails_at_composition(override):
    name = "ntk_sketch" if "large" in override else "ntk_width"
    with pytest.raises(ConfigCompositionException):
        compose_exp(name, [override])


def test_large_sketch_config_can_be_disabled():
    assert compose_exp("ntk_sketch", ["study.large.enabled=false"]).study.large.enabled is False


def test_sketch_sub_seeds_are_distinct_where_the_old_rule_collided(tmp_path):
    ctx = RunContext(tmp_path / "run", compose_exp("ntk_sketch"))
    fold_in = jax.random.fold_in

    def same(a, b):
        return np.array_equal(np.asarray(a), np.asarray(b))

    # ntk_rank / ntk_width keys are unchanged by the move to ctx.key(stream, seed).
    assert same(ctx.key("init", 2), fold_in(ctx.key("init"), 2))
    assert same(ctx.key("data", 1), fold_in(ctx.key("data"), 1))
    # The old sketch rule fold_in(fold_in(key, s·131 + r), rep) collided at (1, 0) vs (0, 131).
    old = lambda s, r, rep: fold_in(fold_in(ctx.key("sketch"), s * 131 + r), rep)  # noqa: E731
    assert same(old(1, 0, 0), old(0, 131, 0))
    grid = [(1, 0, 0), (0, 131, 0), (0, 0, 1), (1, 0, 1), (128, 4, 0), (0, 128 * 131 + 4, 0)]
    keys = {tuple(np.asarray(ctx.key("sketch", s, r, rep)).tolist()) for s, r, rep in grid}
    assert len(keys) == len(grid)


def test_cifar10_offline_gives_clear_message(tmp_path):
    with pytest.raises(ntk_data.DatasetUnavailable, match=r"CIFAR-10 not found.*MD5"):
        ntk_data.cifar10(jax.random.PRNGKey(0), 10, data_dir=tmp_path)
    bad = tmp_path / ntk_data.CIFAR10_ARCHIVE
    bad.write_bytes(b"not the archive")
    with pytest.raises(ntk_data.DatasetUnavailable, match="expected c58f"):
        ntk_data.cifar10_archive(tmp_path)
    study = compose_exp("ntk_width", [f"study.cifar.data_dir={tmp_path / 'none'}"]).study
    with pytest.raises(ntk_data.DatasetUnavailable, match=r"CIFAR-10 not found"):
        study.check_data_files(["digits", "cifar10"])


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
