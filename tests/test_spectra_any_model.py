"""specjax.diagnostics.spectra_table and the ESD power-law fit, against numpy float64 and the
independent `powerlaw` package (Alstott et al.)."""

import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from specjax import diagnostics
from specjax.diagnostics import fit_power_law


def _pareto(rng, alpha, n, xmin=1.0):
    """Continuous power law with density ∝ x^(−alpha) on [xmin, ∞) by inverse CDF."""
    return xmin * (1.0 - rng.uniform(size=n)) ** (-1.0 / (alpha - 1.0))


def _reference_fit(x):
    """`powerlaw.Fit` with α unrestricted above 1 (powerlaw 2.0 defaults to α < 3)."""
    powerlaw = pytest.importorskip("powerlaw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return powerlaw.Fit(x, verbose=False, parameter_ranges={"alpha": [1, None]})


@pytest.mark.parametrize("case", ["pareto_2.5_plus_bulk", "pareto_4_plus_bulk", "esd_student_t"])
def test_fit_power_law_agrees_with_powerlaw_package(case):
    rng = np.random.default_rng(1)
    if case == "esd_student_t":  # heavy-tailed weights: the ESD a WeightWatcher user fits
        x = diagnostics.esd(np.linalg.svd(rng.standard_t(3, size=(160, 80)), compute_uv=False))
    else:
        alpha = float(case.split("_")[1])
        x = np.concatenate([_pareto(rng, alpha, 120, xmin=2.0), rng.uniform(0.1, 2.0, 80)])
    ours, ref = fit_power_law(x), _reference_fit(x)
    # Same estimator, same KS convention, same candidates: equal to round-off.
    np.testing.assert_allclose(ours.alpha, ref.alpha, rtol=1e-9)
    np.testing.assert_allclose(ours.xmin, ref.xmin, rtol=1e-12)
    np.testing.assert_allclose(ours.ks_distance, ref.power_law.D, rtol=1e-9)
    assert ours.n_tail == ref.n_tail


def test_fit_power_law_recovers_known_alpha_and_closed_form():
    rng = np.random.default_rng(2)
    for alpha in (2.0, 3.0, 4.5):
        x = _pareto(rng, alpha, 4000)
        fit = fit_power_law(x)
        assert abs(fit.alpha - alpha) < 0.15 * (alpha - 1), (alpha, fit)
        fixed = fit_power_law(x, xmin=1.5)
        tail = x[x >= 1.5]
        np.testing.assert_allclose(
            fixed.alpha, 1 + tail.size / np.log(tail / 1.5).sum(), rtol=1e-12
        )
        assert fixed.n_tail == tail.size and fixed.n == x.size


def test_fit_power_law_degenerate_and_bad_input():
    assert np.isnan(fit_power_law([np.nan, 0.0, -1.0, 2.0]).alpha)  # one usable value
    assert np.isnan(fit_power_law(np.ones(10)).alpha)  # no distinct tail
    np.testing.assert_array_equal(diagnostics.esd([2.0, 0.0, np.nan, 1.0]), [1.0, 4.0])
    with pytest.raises(ValueError, match="min_tail must be an int >= 2, got 1"):
        fit_power_law([1.0, 2.0, 3.0], min_tail=1)
    with pytest.raises(ValueError, match="xmin must be a positive finite number, got -1"):
        fit_power_law([1.0, 2.0, 3.0], xmin=-1.0)


def _tree(rng):
    return {
        "dense": {"kernel": rng.standard_normal((12, 8)), "bias": np.zeros(8)},
        "conv": {"kernel": rng.standard_normal((3, 3, 2, 4))},
        "scan": {"kernel": rng.standard_normal((2, 5, 6))},
        "step": np.int32(7),
    }


def _svals(x):
    return np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)


def test_spectra_table_rows_match_float64_reference():
    rng = np.random.default_rng(3)
    tree = _tree(rng)
    acts = {"dense_in": rng.standard_normal((2, 5, 12))}
    table = diagnostics.spectra_table(tree, acts)
    columns = list(table)
    rows = [dict(zip(columns, vals, strict=True)) for vals in zip(*table.values(), strict=True)]
    rows = {r["name"]: r for r in rows}
    assert sorted(rows) == ["conv/kernel", "dense/kernel", "dense_in", "scan/kernel"]
    conv = tree["conv"]["kernel"].reshape(18, 4)  # (*window, c_in, c_out) → (9·2, 4)
    refs = {
        "dense/kernel": tree["dense"]["kernel"],
        "conv/kernel": conv,
        "scan/kernel": tree["scan"]["kernel"].reshape(10, 6),
        "dense_in": acts["dense_in"].reshape(10, 12),
    }
    for name, ref in refs.items():
        row, s = rows[name], _svals(ref)
        assert (row["rows"], row["cols"], row["spectrum"]) == (*ref.shape, "full"), name
        np.testing.assert_allclose(row["singular_values"], s, rtol=1e-4, atol=1e-5 * s[0])
        np.testing.assert_allclose(row["spectral_norm"], s[0], rtol=1e-5)
        np.testing.assert_allclose(row["frobenius_norm"], np.linalg.norm(ref), rtol=1e-5)
        np.testing.assert_allclose(row["stable_rank"], (s**2).sum() / s[0] ** 2, rtol=1e-4)
        np.testing.assert_allclose(row["nuclear_rank"], s.sum() ** 2 / (s**2).sum(), rtol=1e-4)
        fit = fit_power_law(row["singular_values"] ** 2)
        assert (row["alpha"], row["xmin"], row["n_tail"]) == (fit.alpha, fit.xmin, fit.n_tail)
    assert rows["conv/kernel"]["view"] == "conv" and rows["conv/kernel"]["shape"] == (3, 3, 2, 4)
    assert rows["dense_in"]["kind"] == "activation" and rows["dense/kernel"]["kind"] == "weight"


def test_spectra_table_views_top_k_and_frame():
    rng = np.random.default_rng(4)
    tree = _tree(rng)
    pd = pytest.importorskip("pandas")
    table = pd.DataFrame(diagnostics.spectra_table(tree, view="stack", full_svd_max_dim=5, top_k=3))
    assert list(table.columns) == list(diagnostics.COLUMNS)
    by_name = table.set_index("name")
    stacked = [f"conv/kernel[{i}]" for i in range(9)] + ["scan/kernel[0]", "scan/kernel[1]"]
    assert sorted(by_name.index) == sorted([*stacked, "dense/kernel"])
    conv_4 = _svals(tree["conv"]["kernel"][1, 1])  # window position 4 of 3×3: a (2, 4) matrix
    np.testing.assert_allclose(by_name.loc["conv/kernel[4]", "singular_values"], conv_4, rtol=1e-4)
    scan_1 = _svals(tree["scan"]["kernel"][1])
    np.testing.assert_allclose(by_name.loc["scan/kernel[1]", "singular_values"], scan_1, rtol=1e-4)
    dense = by_name.loc["dense/kernel"]  # min side 8 > 5: top 3 by randomized SVD
    assert dense["spectrum"] == "top_k" and np.isnan(dense["nuclear_rank"])
    s = _svals(tree["dense"]["kernel"])
    np.testing.assert_allclose(dense["singular_values"], s[:3], rtol=1e-4)
    assert dense["stable_rank"] >= (s**2).sum() / s[0] ** 2 * (1 - 1e-4)
    skipped = diagnostics.spectra_table(tree, view="skip")["name"]
    assert sorted(skipped) == ["dense/kernel"]
    bad = diagnostics.spectra_table({"w": np.full((3, 2), np.nan)})
    assert np.isnan(bad["stable_rank"][0]) and np.isnan(bad["alpha"][0])


def test_spectra_table_flax_model():
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(4, (3, 3))(x)
            return nn.Dense(3)(nn.Dense(16)(x.reshape(x.shape[0], -1)))

    params = Net().init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 2)))["params"]
    table = diagnostics.spectra_table(params)
    assert table["name"] == ["Conv_0/kernel", "Dense_0/kernel", "Dense_1/kernel"]
    assert list(zip(table["rows"], table["cols"], strict=True)) == [
        (18, 4),
        (16, 3),
        (144, 16),
    ]  # Dense(3) is built first
    assert np.isfinite(table["alpha"]).all()


def test_spectra_table_bad_input_and_no_pandas_needed(monkeypatch):
    with pytest.raises(ValueError, match="view must be one of"):
        diagnostics.spectra_table({"w": np.ones((3, 3))}, view="guess")
    with pytest.raises(ValueError, match="top_k must be a positive int, got 0"):
        diagnostics.spectra_table({"w": np.ones((3, 3))}, top_k=0)
    with pytest.raises(ValueError, match="no matrices to analyse"):
        diagnostics.spectra_table({"b": np.ones(3)})
    monkeypatch.setitem(sys.modules, "pandas", None)  # the core library works without pandas
    assert diagnostics.spectra_table({"w": np.eye(3)})["stable_rank"] == [3.0]


TINY_NANOGPT = [
    "+exp=nanogpt_adamw", "trainer.progress=off", "data=stdlib_source", "model.num_layers=1",
    "model.width=16", "model.num_heads=2", "model.context_length=8", "study.batch_size=4",
    "study.eval_batches=2", "study.full_eval=false", "trainer.max_steps=4",
    "optim.warmup_steps=1", "trainer.eval_every=4", "trainer.spectra_every=2",
    "trainer.ckpt_every=0",
]  # fmt: skip


def test_nanogpt_logs_full_spectra_and_esd_figures(tmp_path):
    pytest.importorskip("hydra")
    from experiments.nanogpt import esd_figures
    from experiments.studies.nanogpt import load_for_sampling
    from tests._runs import run_experiment

    run_experiment(tmp_path, [*TINY_NANOGPT, "study.full_spectra_every=4"])
    frame = esd_figures.load_full_spectra(tmp_path)
    assert sorted(set(frame["step"])) == [0, 4]
    names = {"wte", "wpe", "block_0/attn/qkv", "block_0/attn/proj", "block_0/mlp/fc",
             "block_0/mlp/proj"}  # fmt: skip
    assert set(frame["name"]) == names
    _, params, _ = load_for_sampling(tmp_path)  # the final (step 4) parameters
    fc = np.asarray(params["block_0"]["mlp"]["fc"]["kernel"])
    last = frame[(frame["step"] == 4) & (frame["name"] == "block_0/mlp/fc")].iloc[0]
    np.testing.assert_allclose(last["singular_values"], _svals(fc), rtol=1e-4, atol=1e-6)
    assert last["weight_type"] == "mlp/fc" and last["layer"] == 0
    assert np.isfinite(frame["alpha"]).all() and (frame["alpha"] > 1).all()
    paths = esd_figures.plot_esd_figures(tmp_path)
    assert [p.name for p in paths] == ["esd.png", "esd_alpha.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_nanogpt_full_spectra_interval_must_be_a_spectra_step(tmp_path):
    pytest.importorskip("hydra")
    from experiments.nanogpt.layers import check_full_spectra_every

    with pytest.raises(ValueError, match="full_spectra_every=3 must be a multiple of"):
        check_full_spectra_every(3, 2)
    with pytest.raises(ValueError, match=r"trainer\.spectra_every=0"):
        check_full_spectra_every(2, 0)
    check_full_spectra_every(0, 0)  # off
    check_full_spectra_every(4, 2)


def test_load_full_spectra_keeps_the_last_rows_of_a_relogged_step(tmp_path):
    pytest.importorskip("pyarrow")
    from experiments import rundir
    from experiments.nanogpt import esd_figures

    def row(step, alpha):
        return {"step": step, "kind": "weight", "name": "block_1/mlp/fc", "layer": 1,
                "singular_values": [2.0, 1.0], "alpha": alpha}  # fmt: skip

    rundir.append_table(tmp_path, "full_spectra", [row(0, 5.0), row(2, 4.0)])
    rundir.append_table(tmp_path, "full_spectra", [row(2, 3.0)])  # resumed from step 0
    frame = esd_figures.load_full_spectra(tmp_path)
    assert list(frame["alpha"]) == [5.0, 3.0] and set(frame["weight_type"]) == {"mlp/fc"}
    with pytest.raises(FileNotFoundError, match=r"study\.full_spectra_every"):
        esd_figures.load_full_spectra(tmp_path / "elsewhere")
