"""Which blocks took spectral steps over training: the gated optimizer's choices as heat maps.

Source: `tables/gate_check.parquet` of gated runs (`experiments.nanogpt.gate_check`, one row
per hidden block at each spectra step, in single runs and in each member of a vmapped sweep).
Per optimizer setting (`run_groups`), two block × step matrices:

    took spectral:  fraction of the setting's seeds whose gate took the spectral step
    log10 nr(U)/st(A):  mean over seeds; the gate takes the spectral step where it is ≥ 0

The gate_check rows are only as dense as the spectra steps (`trainer.spectra_every`, 250 by
default); runs that log `took_spectral/<block>` at every logged step (the train step's metrics)
give the left map at that density instead (`step_rows`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments.nanogpt.gate_check import TABLE
from experiments.nanogpt.run_groups import group_labels
from experiments.nanogpt.step import GATE_PREFIX

NO_GATED_RUNS = (
    "no gated runs among these runs (no tables/gate_check.parquet):\n"
    "python -m experiments.run +exp=nanogpt_gated  (add trainer.spectra_every=50 for more steps)"
)


def gate_rows(runs) -> pd.DataFrame:
    """The gate_check tables of `runs` (`rundir.Run`s) stacked, with `run` and `optim` (the
    setting's label among all `runs`) columns; empty when no run has one."""
    labels = group_labels({str(r.path): r.config for r in runs})
    parts = [r.tables[TABLE].assign(run=str(r.path), optim=labels[str(r.path)])
             for r in runs if len(r.tables.get(TABLE, ()))]  # fmt: skip
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def step_rows(runs) -> pd.DataFrame:
    """Long rows (run, optim, block, step, took_spectral) from the per-step gate metrics
    (`took_spectral/<block>` columns of metrics.jsonl); empty when no run logged them."""
    labels = group_labels({str(r.path): r.config for r in runs})
    parts = []
    for r in runs:
        columns = [c for c in r.metrics.columns if c.startswith(GATE_PREFIX)]
        if not columns:
            continue
        wide = r.metrics[["step", *columns]].dropna(subset=columns, how="all")
        long = wide.melt(id_vars="step", var_name="block", value_name="took_spectral")
        long["block"] = long["block"].str.removeprefix(GATE_PREFIX)
        parts.append(long.assign(run=str(r.path), optim=labels[str(r.path)]))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _block_key(block: str) -> tuple:
    """`block_2/attn/qkv` → (2, "attn/qkv"): blocks by depth, then layer."""
    head, _, rest = block.partition("/")
    index = int(head[len("block_") :]) if head.startswith("block_") else -1
    return (index, rest or head)


def block_step_matrix(rows: pd.DataFrame, values: pd.Series) -> pd.DataFrame:
    """Blocks (rows, by depth) × steps (columns): the mean of `values` (aligned with `rows`)
    over the runs; a run's duplicate rows of a step (a run resumed before `truncate_after`
    dropped later table rows) count once."""
    frame = rows[["run", "block", "step"]].assign(value=values.to_numpy())
    per_run = frame.groupby(["run", "block", "step"])["value"].mean()
    table = per_run.groupby(["block", "step"]).mean().unstack("step")
    return table.loc[sorted(table.index, key=_block_key)].sort_index(axis=1)


def took_spectral_matrix(rows: pd.DataFrame) -> pd.DataFrame:
    """Fraction of seeds whose gate took the spectral step, block × step."""
    return block_step_matrix(rows, rows["took_spectral"].astype(float))


def log_ratio_matrix(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of log10 nr(U)/st(A), block × step (≥ 0: the gate goes spectral)."""
    return block_step_matrix(rows, np.log10(rows["nr_U"] / rows["st_A"]))


def _heatmap(fig, ax, table: pd.DataFrame, title: str, label: str, **style) -> None:
    image = ax.imshow(table.to_numpy(float), aspect="auto", interpolation="nearest", **style)
    blocks = [block.removesuffix("/kernel") for block in table.index]  # the matrix, by layer
    ax.set_yticks(range(len(blocks)), blocks, fontsize=6)
    ax.set_xticks(range(len(table.columns)), table.columns, fontsize=6, rotation=90)
    ax.set_xlabel("training step (spectra steps)")
    ax.set_ylabel("block")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=label)


def _which(optim: str, rows: pd.DataFrame) -> str:
    """`gated_spectral, 2 seeds`: the setting and how many runs a panel averages."""
    seeds = rows["run"].nunique()
    return f"{optim}, {seeds} seed{'s' if seeds > 1 else ''}"


def gate_choice_heatmap(rows: pd.DataFrame, per_step: pd.DataFrame | None = None,
                        no_rows_reason: str = "no gate_check rows"):  # fmt: skip
    """A row of two heat maps per gated setting: took spectral (from `per_step` rows where the
    setting has them, else from the gate_check `rows`), and log10 nr(U)/st(A). A setting with
    per-step choices but no gate_check rows (the check runs at spectra steps) keeps its left
    map; the right panel says why it is empty (`no_rows_reason`)."""
    per_step = per_step if per_step is not None else pd.DataFrame()
    names = sorted({*rows.get("optim", ()), *per_step.get("optim", ())})
    if not names:
        fig, ax = plt.subplots(figsize=(7, 2.5), layout="constrained")
        ax.text(0.5, 0.5, NO_GATED_RUNS, ha="center", va="center", fontsize=9)
        ax.set_axis_off()
        return fig
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 4.2 * len(names)), squeeze=False,
                             layout="constrained")  # fmt: skip
    for optim, (left, right) in zip(names, axes, strict=True):
        group = rows[rows["optim"] == optim] if len(rows) else rows
        dense = per_step[per_step["optim"] == optim] if len(per_step) else per_step
        source = dense if len(dense) else group
        took = took_spectral_matrix(source)
        _heatmap(fig, left, took, f"took the spectral step ({_which(optim, source)})",
                 "fraction of seeds", cmap="Greys", vmin=0.0, vmax=1.0)  # fmt: skip
        if len(dense):
            left.set_xlabel("training step (logged steps)")
        if not len(group):
            right.text(0.5, 0.5, f"no gate_check rows for log10 nr(U)/st(A):\n{no_rows_reason}",
                       ha="center", va="center", fontsize=9, transform=right.transAxes)  # fmt: skip
            right.set_axis_off()
            continue
        log_ratio = log_ratio_matrix(group)
        bound = max(float(np.nanmax(np.abs(log_ratio.to_numpy(float)))), 1e-3)
        _heatmap(fig, right, log_ratio, f"log10 nr(U)/st(A) ({_which(optim, group)})",
                 "log10 nr(U)/st(A); ≥ 0: spectral", cmap="RdBu_r", vmin=-bound,
                 vmax=bound)  # fmt: skip
    return fig
