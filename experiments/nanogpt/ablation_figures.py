"""Where Muon's gain comes from: final val loss of AdamW and of Muon on some hidden matrices.

The variants are told apart by `optim.name` and `optim.spectral_blocks` (`+exp=nanogpt_adamw`,
`nanogpt_muon_{mlp_out,attention,all}`; `nanogpt_muon` is Muon on all). Each variant's share of
the AdamW → Muon(all) gain, from the means over seeds L̄,

    share(v) = (L̄_AdamW − L̄_v) / (L̄_AdamW − L̄_Muon(all)),

is set beside each block group's median nr(G)/st(A): the gradient's nuclear rank over the stable
rank of the activation feeding the weight, from the `spectra/` rows of the weights in the group
at every logged step after step 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments.optimizers import MUON_BLOCKS

# (label, optim.name, optim.spectral_blocks or None) in the figure's order
VARIANTS = (
    ("AdamW", "adamw", None),
    ("Muon: MLP out", "muon", "mlp_out"),
    ("Muon: attention", "muon", "attention"),
    ("Muon: all hidden", "muon", "all"),
)
BASELINE, FULL = VARIANTS[0][0], VARIANTS[-1][0]
# block group → the variant whose Muon matrices it holds
BLOCK_GROUPS = {"MLP out": "mlp_out", "attention": "attention", "all hidden": "all"}


def variant_of(config: Mapping) -> str | None:
    """The ablation variant a run's config belongs to, or None."""
    optim = config.get("optim") or {}
    blocks = optim.get("spectral_blocks", "all")  # runs from before the key: Muon everywhere
    for label, name, spectral_blocks in VARIANTS:
        if optim.get("name") == name and spectral_blocks in (None, blocks):
            return label
    return None


def final_val_losses(metrics: pd.DataFrame) -> pd.Series:
    """Each run's val_loss at its last evaluation, indexed by run."""
    evals = metrics.dropna(subset=["val_loss"]).sort_values("step")
    return evals.groupby("run")["val_loss"].last()


def ablation_table(metrics: pd.DataFrame, configs: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per variant present: its setting (`optim` label), seeds, mean, sd (ddof 1),
    min, max of the final val loss, and its share of the AdamW → Muon(all) gain (NaN without
    both ends; the gain itself is `table.attrs["gain"]`). A variant run at several settings
    (an lr grid) is shown at the one with the most seeds, ties going to the lower mean: the
    tuned, multi-seed runs."""
    finals = final_val_losses(metrics).to_frame("final")
    finals["optim"] = metrics.groupby("run")["optim"].first()
    finals["variant"] = [variant_of(configs[run]) for run in finals.index]
    rows = []
    for label, *_ in VARIANTS:
        candidates = finals[finals["variant"] == label]
        if candidates.empty:
            continue
        stats = candidates.groupby("optim")["final"].agg(["count", "mean", "std", "min", "max"])
        best = stats.sort_values(["count", "mean"], ascending=[False, True]).iloc[0]
        rows.append({"variant": label, "optim": best.name, "seeds": int(best["count"]),
                     "mean": best["mean"], "sd": best["std"], "min": best["min"],
                     "max": best["max"]})  # fmt: skip
    table = pd.DataFrame(rows, columns=["variant", "optim", "seeds", "mean", "sd", "min", "max"])
    table = table.set_index("variant")
    gain = math.nan
    if BASELINE in table.index and FULL in table.index:
        gain = table.loc[BASELINE, "mean"] - table.loc[FULL, "mean"]
    baseline = table.loc[BASELINE, "mean"] if BASELINE in table.index else math.nan
    table["gain_share"] = (baseline - table["mean"]) / gain if gain else math.nan
    table.attrs["gain"] = gain  # L̄_AdamW − L̄_Muon(all)
    return table


def in_block_group(name: str, group: str) -> bool:
    """Whether weight `name` (`block_1/mlp/proj`) is a hidden matrix of `group`, by the same
    path pattern the Muon routing uses (`optimizers.MUON_BLOCKS`)."""
    parts = name.split("/")
    if not parts[0].startswith("block_") or len(parts) < 2:
        return False
    pattern = MUON_BLOCKS[BLOCK_GROUPS[group]]
    if pattern is None:
        return True
    k = len(pattern)
    return any(tuple(parts[i : i + k]) == pattern for i in range(len(parts) - k + 1))


def block_group_ratios(spectra: pd.DataFrame, runs_by_variant: Mapping[str, list]) -> pd.DataFrame:
    """Median nr(G)/st(A) per block group (rows) in each variant's runs (columns), over the
    groups' weights at every logged step after 0."""
    table = pd.DataFrame(index=list(BLOCK_GROUPS), dtype=float)
    if not {"kind", "step", "run", "name"} <= set(spectra.columns):  # runs without spectra
        return table.assign(**{variant: math.nan for variant in runs_by_variant})
    weights = spectra[(spectra["kind"] == "weight") & (spectra["step"] > 0)]
    for variant, runs in runs_by_variant.items():
        rows = weights[weights["run"].isin(runs)]
        ratio = rows["grad_nuclear_rank"] / rows["act_stable_rank"]
        table[variant] = [
            float(np.median(ratio[rows["name"].map(lambda n, g=g: in_block_group(n, g))]))
            if len(rows) else math.nan
            for g in BLOCK_GROUPS
        ]  # fmt: skip
    return table


def ablation_figure(metrics: pd.DataFrame, spectra: pd.DataFrame, configs: Mapping):
    """Left: final val loss (mean ± sd over seeds) per variant, with its gain share. Right:
    each block group's median nr(G)/st(A) in the AdamW and Muon(all) runs."""
    table = ablation_table(metrics, configs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained",
                                      gridspec_kw={"width_ratios": [1.4, 1]})  # fmt: skip
    labels = [label for label, *_ in VARIANTS]
    for x, label in enumerate(labels):
        if label not in table.index:
            left.text(x, 0.5, "not run", ha="center", transform=left.get_xaxis_transform(),
                      rotation=90, color="0.4")  # fmt: skip
            continue
        row = table.loc[label]
        sd = row["sd"] if row["seeds"] > 1 else None
        left.bar(x, row["mean"], yerr=sd, capsize=4, color=f"C{x}", alpha=0.8)
        # `+ 0` prints AdamW's share, −0.0, as 0%
        share = "" if math.isnan(row["gain_share"]) else f"\nshare {row['gain_share'] + 0:.0%}"
        left.annotate(f"{row['mean']:.3f}{share}\n({int(row['seeds'])} seed"
                      f"{'s' if row['seeds'] > 1 else ''})", (x, row["mean"] + (sd or 0)),
                      xytext=(0, 4), textcoords="offset points", ha="center",
                      va="bottom", fontsize=7)  # fmt: skip
    if len(table):
        spread = table["sd"].fillna(0)
        low, high = (table["mean"] - spread).min(), (table["mean"] + spread).max()
        pad = max(high - low, 1e-3)
        left.set_ylim(low - 0.3 * pad, high + 0.6 * pad)  # the differences, not the zero
    left.set_xticks(range(len(labels)), labels, fontsize=8)
    left.set_ylabel("final val loss (mean ± sd over seeds)")
    missing = [label for label in labels if label not in table.index]
    note = f"; missing: {', '.join(missing)}" if missing else ""
    if table.attrs["gain"] <= 0:  # NaN (an end missing) compares False
        note += "\n(Muon(all) did not beat AdamW here: the shares measure no gain)"
    left.set_title(f"share of the AdamW → Muon(all) gain per variant{note}", fontsize=9)

    runs_by_variant = {}
    for label in (BASELINE, FULL):
        if label in table.index:
            chosen = metrics[metrics["optim"] == table.loc[label, "optim"]]
            runs_by_variant[label] = sorted(chosen["run"].unique())
    ratios = block_group_ratios(spectra, runs_by_variant)
    if ratios.shape[1] and ratios.notna().any(axis=None):
        ratios.plot.bar(ax=right, rot=0)
        right.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")
        right.set_ylabel("median nr(G)/st(A) (logged steps > 0)")
    else:
        right.text(0.5, 0.5, "no spectra of AdamW or Muon(all) runs", ha="center",
                   transform=right.transAxes)  # fmt: skip
    right.set_xlabel("block group (the matrices the variant gives to Muon)")
    right.set_title("nr(G)/st(A) per block group", fontsize=9)
    return fig
