"""The arrays behind the NanoGPT figures, against numpy computed from the raw rows.

Loss bands per optimizer setting (mean, sd, min, max over that setting's seeds only), the gate's
block × step matrices, the Muon ablation's means and gain shares, and the block groups' median
nr(G)/st(A). Frames are synthetic and small; no training.
"""

import math

import numpy as np
import pandas as pd
import pytest

from experiments.nanogpt import ablation_figures, figures, gate_figures, run_groups

STEPS = (0, 10, 20)


def config(name="adamw", lr=4e-3, seed=0, **optim):
    return {"seed": seed, "exp_name": f"x{seed}", "trainer": {"max_steps": 20, "progress": "off"},
            "logger": {"kind": "local"}, "optim": {"name": name, "lr": lr, **optim},
            "study": {"name": "nanogpt", "save_params": seed % 2 == 0}}  # fmt: skip


def metrics_frame(configs, rng):
    rows = [{"run": run, "step": s, "loss": rng.normal(3.0, 0.3), "val_loss": rng.normal(2, 0.2)}
            for run in configs for s in STEPS]  # fmt: skip
    return figures.with_optimizer(pd.DataFrame(rows), configs)


def test_runs_differing_only_in_seed_and_bookkeeping_share_a_setting():
    configs = {"a": config(seed=0), "b": config(seed=1), "c": config(lr=2e-3),
               "d": config("muon", spectral_blocks="all"),
               "e": config("muon", spectral_blocks="mlp_out", seed=3)}  # fmt: skip
    labels = run_groups.group_labels(configs)
    assert labels == {
        "a": "adamw lr=0.004",
        "b": "adamw lr=0.004",
        "c": "adamw lr=0.002",
        "d": "muon spectral_blocks=all",
        "e": "muon spectral_blocks=mlp_out",
    }
    longer = {**configs, "f": {**config(), "trainer": {"max_steps": 40}}}
    assert run_groups.group_labels(longer)["f"].endswith("trainer.max_steps=40")
    # the lr grid's seed-0 run beside the seed runs at that lr: the same run twice
    assert run_groups.repeated_runs({**configs, "a2": config(seed=0)}) == ["a2"]


def test_loss_bands_use_each_settings_own_seeds():
    rng = np.random.default_rng(0)
    configs = {f"{name}{seed}": config(name, seed=seed) for name in ("adamw", "muon")
               for seed in range(3)}  # fmt: skip
    configs["solo"] = config("sgd")  # one seed: sd NaN, band of width 0
    metrics = metrics_frame(configs, rng)
    for column in ("loss", "val_loss"):
        bands = figures.loss_bands(metrics, column).set_index(["optim", "step"])
        for optim in ("adamw", "muon", "sgd"):
            runs = [r for r in configs if configs[r]["optim"]["name"] == optim]
            raw = np.array([[metrics[(metrics.run == r) & (metrics.step == s)][column].item()
                             for s in STEPS] for r in runs])  # fmt: skip
            band = bands.loc[optim]
            np.testing.assert_allclose(band["mean"], raw.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(band["min"], raw.min(axis=0), rtol=1e-12)
            np.testing.assert_allclose(band["max"], raw.max(axis=0), rtol=1e-12)
            assert (band["seeds"] == len(runs)).all()
            if len(runs) > 1:
                np.testing.assert_allclose(band["sd"], raw.std(axis=0, ddof=1), rtol=1e-12)
            else:
                assert band["sd"].isna().all()
    figures.loss_curves(metrics)  # draws, one seed included


def gate_frame(rng, runs=("r0", "r1"), blocks=("block_0/attn/qkv", "block_10/mlp/proj",
                                                "block_2/mlp/fc", "block_0/mlp/proj")):  # fmt: skip
    rows = [{"run": run, "step": s, "block": b, "took_spectral": int(rng.random() < 0.5),
             "nr_U": rng.uniform(1, 40), "st_A": rng.uniform(1, 8)}
            for run in runs for s in STEPS for b in blocks]  # fmt: skip
    return pd.DataFrame(rows).assign(optim="gated_spectral")


def test_gate_matrices_are_blocks_by_steps_averaged_over_seeds():
    rng = np.random.default_rng(1)
    rows = gate_frame(rng)
    took = gate_figures.took_spectral_matrix(rows)
    order = ["block_0/attn/qkv", "block_0/mlp/proj", "block_2/mlp/fc", "block_10/mlp/proj"]
    assert list(took.index) == order and list(took.columns) == list(STEPS)  # depth, not text

    def by_hand(value):
        out = np.zeros((len(order), len(STEPS)))
        for i, block in enumerate(order):
            for j, step in enumerate(STEPS):
                sel = rows[(rows.block == block) & (rows.step == step)]
                out[i, j] = np.mean([value(r) for r in sel.itertuples()])
        return out

    np.testing.assert_allclose(took.to_numpy(), by_hand(lambda r: r.took_spectral))
    np.testing.assert_allclose(gate_figures.log_ratio_matrix(rows).to_numpy(),
                               by_hand(lambda r: np.log10(r.nr_U / r.st_A)))  # fmt: skip
    # a resumed run that logged step 10 again (the same rows) still counts as one seed there
    again = rows[(rows.run == "r0") & (rows.step == 10)]
    doubled = gate_figures.took_spectral_matrix(pd.concat([rows, again], ignore_index=True))
    np.testing.assert_allclose(doubled.to_numpy(), took.to_numpy())
    gate_figures.gate_choice_heatmap(gate_frame(rng, runs=("one",)))
    empty = gate_figures.gate_choice_heatmap(pd.DataFrame())
    assert "no gated runs" in empty.axes[0].texts[0].get_text()


def ablation_configs():
    configs = {}
    for seed in range(3):
        configs[f"adamw{seed}"] = config("adamw", seed=seed)
        configs[f"all{seed}"] = config("muon", seed=seed, spectral_blocks="all")
        configs[f"mlp{seed}"] = config("muon", seed=seed, spectral_blocks="mlp_out")
    configs["attn0"] = config("muon", spectral_blocks="attention")  # one seed only
    configs["mlp_lr"] = config("muon", lr=1e-3, spectral_blocks="mlp_out")  # an lr grid point
    return configs


FINAL = {"adamw": 1.8, "all": 1.6, "mlp": 1.7, "attn": 1.75}


def ablation_metrics(configs, rng):
    rows = []
    for run in configs:
        final = FINAL[run.rstrip("0123456789").removesuffix("_lr")] + rng.normal(0, 0.01)
        if run == "mlp_lr":
            final = 1.0  # better, but one seed: the three-seed setting is the tuned one
        rows += [
            {"run": run, "step": 10, "val_loss": 3.0},
            {"run": run, "step": 20, "val_loss": final},
            {"run": run, "step": 21, "val_loss_full": 9.0},
        ]
    return figures.with_optimizer(pd.DataFrame(rows), configs)


def test_ablation_means_and_gain_shares_match_numpy():
    rng = np.random.default_rng(2)
    configs = ablation_configs()
    metrics = ablation_metrics(configs, rng)
    table = ablation_figures.ablation_table(metrics, configs)

    def finals(prefix):
        runs = [r for r in configs if r.startswith(prefix) and r != "mlp_lr"]
        return np.array([metrics[(metrics.run == r) & (metrics.step == 20)].val_loss.item()
                         for r in runs])  # fmt: skip

    raw = {"AdamW": finals("adamw"), "Muon: MLP out": finals("mlp"),
           "Muon: attention": finals("attn"), "Muon: all hidden": finals("all")}  # fmt: skip
    assert list(table.index) == list(raw)
    gain = raw["AdamW"].mean() - raw["Muon: all hidden"].mean()
    for variant, values in raw.items():
        row = table.loc[variant]
        assert row["seeds"] == len(values)
        np.testing.assert_allclose(row["mean"], values.mean(), rtol=1e-12)
        if len(values) > 1:
            np.testing.assert_allclose(row["sd"], values.std(ddof=1), rtol=1e-12)
        share = (raw["AdamW"].mean() - values.mean()) / gain
        np.testing.assert_allclose(row["gain_share"], share, rtol=1e-12)
    assert 0.3 < table.loc["Muon: MLP out", "gain_share"] < 0.7  # AdamW 1.8, MLP 1.7, all 1.6
    assert table.loc["Muon: MLP out", "optim"] == "muon lr=0.004 spectral_blocks=mlp_out"


def test_ablation_copes_with_missing_variants_and_one_seed():
    configs = {"mlp0": config("muon", spectral_blocks="mlp_out")}
    metrics = ablation_metrics(configs, np.random.default_rng(3))
    table = ablation_figures.ablation_table(metrics, configs)
    assert list(table.index) == ["Muon: MLP out"] and math.isnan(table["gain_share"].item())
    fig = ablation_figures.ablation_figure(metrics, pd.DataFrame(), configs)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("not run") == 3 and "no spectra of AdamW or Muon(all) runs" in texts
    assert "missing: AdamW, Muon: attention, Muon: all hidden" in fig.axes[0].get_title()


def test_block_group_ratios_are_medians_of_nr_over_st():
    rng = np.random.default_rng(4)
    names = ["block_0/attn/qkv", "block_0/attn/proj", "block_0/mlp/fc", "block_0/mlp/proj",
             "block_1/mlp/proj", "wte"]  # fmt: skip
    rows = [{"run": run, "kind": kind, "step": s, "name": n,
             "grad_nuclear_rank": rng.uniform(1, 60), "act_stable_rank": rng.uniform(1, 9)}
            for run in ("a", "b", "c") for s in STEPS for n in names
            for kind in ("weight", "activation")]  # fmt: skip
    spectra = pd.DataFrame(rows)
    got = ablation_figures.block_group_ratios(spectra, {"AdamW": ["a", "b"], "other": ["c"]})
    members = {"MLP out": ["block_0/mlp/proj", "block_1/mlp/proj"],
               "attention": ["block_0/attn/qkv", "block_0/attn/proj"],
               "all hidden": names[:5]}  # fmt: skip
    for group, block_names in members.items():
        sel = spectra[(spectra.kind == "weight") & (spectra.step > 0) & spectra.name.isin(
            block_names) & spectra.run.isin(["a", "b"])]  # fmt: skip
        expected = np.median(sel.grad_nuclear_rank.to_numpy() / sel.act_stable_rank.to_numpy())
        assert got.loc[group, "AdamW"] == pytest.approx(expected, rel=1e-12)
    assert got.loc["MLP out", "other"] != got.loc["MLP out", "AdamW"]


def test_per_step_gate_metrics_become_the_same_block_by_step_rows():
    """`step_rows` from metrics.jsonl columns `took_spectral/<block>`: each run's own values,
    rows without the columns (eval rows) dropped, averaged over seeds like the gate_check rows."""
    from types import SimpleNamespace

    from experiments.nanogpt.step import GATE_PREFIX

    rng = np.random.default_rng(2)
    blocks = ["block_1/mlp/fc", "block_0/attn/qkv"]
    config = {"optim": {"name": "gated_spectral", "lr": 4e-3}, "study": {"name": "nanogpt"}}
    runs, raw = [], {}
    for seed in (0, 1):
        took = rng.integers(0, 2, size=(len(STEPS), len(blocks))).astype(float)
        raw[seed] = took
        frame = pd.DataFrame(took, columns=[GATE_PREFIX + b for b in blocks]).assign(step=STEPS)
        evals = pd.DataFrame({"step": STEPS, "val_loss": 1.0})  # rows without gate columns
        metrics = pd.concat([frame, evals], ignore_index=True)
        runs.append(SimpleNamespace(path=f"/r{seed}", config={**config, "seed": seed},
                                    metrics=metrics))  # fmt: skip
    rows = gate_figures.step_rows(runs)
    assert set(rows["optim"]) == {"gated_spectral"} and len(rows) == 2 * len(STEPS) * len(blocks)
    took = gate_figures.took_spectral_matrix(rows)
    assert list(took.index) == ["block_0/attn/qkv", "block_1/mlp/fc"]
    expected = (raw[0] + raw[1]).T[::-1] / 2  # blocks × steps, block_0 first
    np.testing.assert_allclose(took.to_numpy(), expected)
    assert gate_figures.step_rows(
        [SimpleNamespace(path="/a", config=config, metrics=pd.DataFrame({"step": [1]}))]
    ).empty
    gate_figures.gate_choice_heatmap(gate_frame(rng), rows.assign(optim="gated_spectral"))
