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
    return df.assign(optim=df["run"].map(lambda r: configs[r]["optim"]["name"]))


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


def _panel_per_optimizer(rows: pd.DataFrame, height: float):
    """(figure with a panel per optimizer, zip of panels and (optimizer, its first run's rows))."""
    first_runs = rows.groupby("optim")["run"].min()
    by_optim = rows[rows["run"].isin(first_runs.values)].groupby("optim")
    n = by_optim.ngroups
    fig, axes = plt.subplots(1, n, figsize=(5 * n, height), squeeze=False)
    return fig, zip(axes[0], by_optim, strict=True)


def _lines_per_optimizer(rows: pd.DataFrame, column: str, title: str, label):
    """One log-scale panel per optimizer (its first run): `column` over steps, a line per name."""
    fig, panels = _panel_per_optimizer(rows, height=4)
    for ax, (optim, optim_rows) in panels:
        for name, group in optim_rows.groupby("name"):
            ax.plot(group["step"], group[column], label=label(name, group))
        ax.set_yscale("log")
        ax.set_title(f"{title}, {optim}")
        ax.set_xlabel("step")
    fig.axes[0].legend(fontsize=6)
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
    fig, panels = _panel_per_optimizer(spectra[spectra["kind"] == "weight"], height=4.5)
    for ax, (optim, optim_rows) in panels:
        table = optim_rows.pivot_table(index="name", columns="step", values="ratio")
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
    paths = [out_dir / f"{name}.png" for name in figures]
    for path, fig in zip(paths, figures.values(), strict=True):
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return paths
