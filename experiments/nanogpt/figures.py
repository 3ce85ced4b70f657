"""Figures of the NanoGPT study from run directories (read with `experiments.rundir.load_run`).

Each function takes the stacked `metrics` or `spectra` DataFrame (a `run` column, and the
optimizer name in `optim`) and returns a matplotlib Figure; `plot_runs` writes them all.
"""

from __future__ import annotations

import pathlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def with_optimizer(df: pd.DataFrame, configs: dict) -> pd.DataFrame:
    """Add an `optim` column from each run's resolved config."""
    df = df.copy()
    df["optim"] = df["run"].map(lambda r: configs[r]["optim"]["name"])
    return df


def loss_curves(metrics: pd.DataFrame):
    """Train loss (per step) and val loss (eval steps): mean over seeds, min–max band."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, column in zip(axes, ("loss", "val_loss"), strict=True):
        rows = metrics.dropna(subset=[column])
        for optim, group in rows.groupby("optim"):
            stats = group.groupby("step")[column].agg(["mean", "min", "max", "count"])
            seeds = int(stats["count"].max())
            ax.plot(stats.index, stats["mean"], label=f"{optim} ({seeds} seeds)")
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.25)
        ax.set_xlabel("step")
        ax.set_ylabel(column)
        ax.legend()
    axes[0].set_title("training loss (mean, min–max over seeds)")
    axes[1].set_title("validation loss on the fixed batches")
    fig.tight_layout()
    return fig


def _first_run_per_optim(spectra: pd.DataFrame) -> pd.DataFrame:
    first = spectra.groupby("optim")["run"].min()
    return spectra[spectra["run"].isin(first.values)]


def _lines_per_optimizer(rows: pd.DataFrame, column: str, title: str, label):
    """One log-scale panel per optimizer (its first run): `column` over steps, a line per name."""
    rows = _first_run_per_optim(rows)
    optims = sorted(rows["optim"].unique())
    fig, axes = plt.subplots(1, len(optims), figsize=(5 * len(optims), 4), squeeze=False)
    for ax, optim in zip(axes[0], optims, strict=True):
        for name, group in rows[rows["optim"] == optim].groupby("name"):
            ax.plot(group["step"], group[column], label=label(name, group))
        ax.set_yscale("log")
        ax.set_title(f"{title}, {optim}")
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def activation_stable_ranks(spectra: pd.DataFrame):
    """st(A) of every activation over training (one panel per optimizer), width in the label."""
    return _lines_per_optimizer(
        spectra[spectra["kind"] == "activation"],
        "act_stable_rank",
        "st(A)",
        lambda name, group: f"{name} (d={int(group['width'].iloc[0])})",
    )


def gradient_nuclear_ranks(spectra: pd.DataFrame):
    """nr(G) of every weight over training (one panel per optimizer)."""
    return _lines_per_optimizer(
        spectra[spectra["kind"] == "weight"], "grad_nuclear_rank", "nr(G)", lambda name, _: name
    )


def ratio_heatmap(spectra: pd.DataFrame):
    """log10 nr(G)/st(A) as a weight × step heat map (first run of each optimizer)."""
    weights = _first_run_per_optim(spectra[spectra["kind"] == "weight"])
    optims = sorted(weights["optim"].unique())
    fig, axes = plt.subplots(1, len(optims), figsize=(5 * len(optims), 4.5), squeeze=False)
    for ax, optim in zip(axes[0], optims, strict=True):
        table = weights[weights["optim"] == optim].pivot_table(
            index="name", columns="step", values="ratio"
        )
        image = ax.imshow(np.log10(table.to_numpy()), aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(table.index)), table.index, fontsize=6)
        ax.set_xticks(range(len(table.columns)), table.columns, fontsize=6, rotation=90)
        ax.set_title(f"log10 nr(G)/st(A), {optim}")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def weight_spectral_norms(spectra: pd.DataFrame):
    """Spectral norm of every weight at the last logged step, per optimizer (mean over seeds)."""
    weights = spectra[spectra["kind"] == "weight"]
    last = weights[weights["step"] == weights.groupby("run")["step"].transform("max")]
    table = last.pivot_table(index="name", columns="optim", values="weight_spectral_norm")
    fig, ax = plt.subplots(figsize=(10, 4))
    table.plot.bar(ax=ax)
    ax.set_ylabel("‖W‖₂ at the end")
    ax.set_yscale("log")
    fig.tight_layout()
    return fig


def plot_runs(run_dirs: list[pathlib.Path], out_dir: pathlib.Path) -> list[pathlib.Path]:
    from experiments.rundir import load_run

    runs = [load_run(d) for d in run_dirs]
    configs = {str(r.path): r.config for r in runs}
    metrics = with_optimizer(
        pd.concat([r.metrics.assign(run=str(r.path)) for r in runs], ignore_index=True), configs
    )
    spectra = with_optimizer(
        pd.concat([r.spectra.assign(run=str(r.path)) for r in runs], ignore_index=True), configs
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "nanogpt_loss": loss_curves(metrics),
        "nanogpt_activation_stable_rank": activation_stable_ranks(spectra),
        "nanogpt_gradient_nuclear_rank": gradient_nuclear_ranks(spectra),
        "nanogpt_ratio_heatmap": ratio_heatmap(spectra),
        "nanogpt_weight_spectral_norm": weight_spectral_norms(spectra),
    }
    paths = []
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
