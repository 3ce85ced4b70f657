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
    "ntk_rank": ["study.models=[{model:mlp,width:8}]", "study.ns=[6,9,12]", "study.seeds=2",
                 "study.datasets=[digits]", "study.exact_max_n=9", "study.sketch_width=16",
                 "study.num_sketches=3"],
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
    if name == "ntk_rank":
        check_rank_exact_column(cfg, tmp_path / "run", tmp_path / "ref")
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
        ("ntk_sketch", "study.depth=9", r"study\.depth must be 6k \+ 2.*got 9"),
        ("ntk_rank", "study.datasets=[digits,gaussian]", r"max\(study\.ns\) must be ≤ 1797"),
        ("ntk_rank", "study.num_sketches=2", r"study\.num_sketches must be ≥ 3"),
        ("ntk_rank", "study.exact_max_n=-1", r"study\.exact_max_n must be an int >= 0"),
        ("ntk_rank", "study.sketch_width=0", r"study\.sketch_width must be a positive int"),
        (
            "ntk_rank",
            "study.depth=32",
            r"study\.depth=32 contradicts study\.models\[0\]\.model=resnet20",
        ),
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


def test_rank_study_fixed_output_takes_one_probe():
    with pytest.raises(ValueError, match=r"study\.num_probes must be 1 with study\.output='logit'"):
        compose_exp("ntk_rank", ["study.output=logit", "study.num_probes=2"])


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


def test_cifar10_missing_fails_before_compute_with_download_off(tmp_path):
    # (the loader itself: tests/test_ntk_data_models.py; nothing here touches the network)
    overrides = [f"study.cifar.data_dir={tmp_path / 'none'}", "study.cifar.download=false"]
    study = compose_exp("ntk_width", overrides).study
    with pytest.raises(ntk_data.DatasetUnavailable, match=r"CIFAR-10 not found.*MD5"):
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


def check_rank_exact_column(cfg, run_dir, ref_dir):
    """ntk_rank's r_eff_exact is the exact trace NTK of the inputs and init its keys give."""
    from experiments.studies._ntk_config import model_and_inputs
    from specjax import kernel_effective_rank
    from specjax.ntk import exact_ntk

    table = rundir.read_table(run_dir, "ntk_rank")
    fits = rundir.read_table(run_dir, "ntk_rank_fits")
    assert fits["paper_r_eff_low"].iloc[0] == 1.0 and np.isfinite(fits["slope"]).all()
    assert table.query("n == 12")["r_eff_exact"].isna().all()  # above exact_max_n = 9: sketch
    ctx = RunContext(ref_dir, cfg)
    for seed in (0, 1):
        keys = ctx.key("init", seed), ctx.key("data", seed)
        apply_fn, params, x, _ = model_and_inputs(cfg.study, "mlp", 8, "digits", 12, *keys)
        for n in (6, 9):
            k = exact_ntk(apply_fn, params, x[:n], output="trace")
            got = float(table.query(f"seed == {seed} and n == {n}")["r_eff_exact"].iloc[0])
            assert got == pytest.approx(float(kernel_effective_rank(k)), rel=1e-5)
