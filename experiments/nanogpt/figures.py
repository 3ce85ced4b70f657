"""Figures of the NanoGPT study from run directories (read with `experiments.rundir.load_run`).

Each function takes the stacked `metrics` or `spectra` DataFrame (a `run` column, and in `optim`
the label of the run's optimizer setting, `run_groups`: seeds of one setting share it) and
returns a matplotlib Figure; `load_frames` builds the frames, `plot_runs` writes every figure,
those of `gate_figures` (the gated optimizer's choices) and `ablation_figures` (the Muon
ablation) included.
Spectra over training are small multiples: a row of panels per optimizer, a panel per layer
type (`layer_type`: embeddings, attn/qkv, attn/proj, mlp/fc, mlp/proj, ... and the matrices
feeding them), a line per layer coloured by depth, the legend under the panel.
`nanogpt_run_dirs` finds the runs the notebook reads.
"""

from __future__ import annotations

import pathlib
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from experiments.nanogpt.run_groups import group_labels, repeated_runs

DEFAULT_RUN_ROOTS = ("outputs", "multirun")  # where `experiments.run` writes runs and sweeps
MAKE_RUNS = (
    "python -m experiments.run +exp=nanogpt_muon            (one run, in outputs/)\n"
    "python -m experiments.run -m +exp=nanogpt_adamw,nanogpt_muon seed=0,1,2   (a sweep, in "
    "multirun/)"
)


def _default_roots(cwd: pathlib.Path) -> list[pathlib.Path]:
    """outputs/ and multirun/ of the repository: cwd, or its parent when run from notebooks/."""
    base = cwd.parent if cwd.name == "notebooks" else cwd
    return [base / name for name in DEFAULT_RUN_ROOTS]


def nanogpt_run_dirs(spec: str | None = None, cwd: pathlib.Path | None = None):
    """(nanogpt run directories, the roots searched) under `spec` (`:`-separated run or sweep
    directories, e.g. `$SPECJAX_RUN_DIRS`) or, when it is None or empty, the repository's
    outputs/ and multirun/. Roots that do not exist or hold no runs are skipped."""
    from experiments.rundir import CONFIG_FILE, find_run_dirs

    cwd = pathlib.Path.cwd() if cwd is None else pathlib.Path(cwd)
    roots = [pathlib.Path(p) for p in spec.split(":") if p] if spec else _default_roots(cwd)
    found: list[pathlib.Path] = []
    for root in roots:
        if not root.exists():
            continue
        try:
            candidates = find_run_dirs([root])
        except ValueError:  # a directory without runs
            continue
        for run_dir in candidates:
            config = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
            if (config.get("study") or {}).get("name") == "nanogpt":
                found.append(run_dir)
    return found, roots


def no_runs_message(roots) -> str:
    """What to say when `nanogpt_run_dirs` found nothing: where it looked, what makes runs."""
    where = ", ".join(str(r) for r in roots) or "(no paths)"
    return (
        f"No nanogpt run directories found in: {where}.\n"
        f"Create some from the repository root with\n{MAKE_RUNS}\n"
        "or point SPECJAX_RUN_DIRS at run or sweep directories (separated by ':')."
    )


def with_optimizer(df: pd.DataFrame, configs: dict) -> pd.DataFrame:
    """Add an `optim` column: each run's optimizer setting (`run_groups.group_labels`), so runs
    that differ only in their seed share it, and two learning rates of one optimizer do not."""
    labels = group_labels(configs)
    return df.assign(optim=df["run"].map(labels))


LOSS_LABEL = "cross-entropy (nats / character)"
# Panel order of the layer types; a type not listed here comes after them, in name order.
LAYER_TYPES = ("embeddings", "attn_in", "attn/qkv", "attn_out", "attn/proj", "mlp_in", "mlp/fc",
               "mlp_act", "mlp/proj", "head_in", "head")  # fmt: skip
_EMBEDDING_NAMES = {"wte", "wpe", "tokens", "positions"}


def layer_type(name: str) -> str:
    """`block_3/attn/qkv` → `attn/qkv`; embedding weights and their inputs → `embeddings`."""
    if name in _EMBEDDING_NAMES:
        return "embeddings"
    block, _, rest = name.partition("/")
    return rest if block.startswith("block_") and rest else name


def _block_index(name: str) -> int | None:
    head = name.split("/")[0]
    return int(head[len("block_") :]) if head.startswith("block_") else None


def _layer_label(name: str) -> str:
    index = _block_index(name)
    return f"block {index}" if index is not None else name


def _layer_colours(names: list[str], num_blocks: int) -> dict[str, tuple]:
    """Blocks by depth along viridis (the same colour in every panel); other names C0, C1, …"""
    cmap = plt.get_cmap("viridis")
    colours, others = {}, 0
    for name in names:
        index = _block_index(name)
        if index is None:
            colours[name] = plt.matplotlib.colors.to_rgba(f"C{others % 10}")
            others += 1
        else:
            colours[name] = cmap(0.85 * index / max(num_blocks - 1, 1))
    return colours


def _ordered_types(names) -> list[str]:
    present = {layer_type(n) for n in names}
    known = [t for t in LAYER_TYPES if t in present]
    return known + sorted(present - set(known))


def _layer_sort_key(name: str) -> tuple:
    index = _block_index(name)
    return (index is not None, index if index is not None else 0, name)


def _first_run_per_optimizer(rows: pd.DataFrame):
    """(optimizer, rows of its first run) in optimizer order: one seed is enough for a curve."""
    first_runs = rows.groupby("optim")["run"].min()
    return list(rows[rows["run"].isin(first_runs.values)].groupby("optim"))


def _legend_below(ax, ncol: int) -> None:
    """Legend under the panel, outside the data."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=ncol,
              frameon=False)  # fmt: skip


def loss_bands(metrics: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per (optimizer setting, step): mean, sd (ddof 1; NaN for one seed), min, max of `column`
    over the setting's runs and `seeds`, how many runs logged it (no rows when none did)."""
    if column not in metrics.columns:  # e.g. val_loss with trainer.eval_every=0
        metrics = metrics.assign(**{column: np.nan})
    rows = metrics.dropna(subset=[column])
    stats = rows.groupby(["optim", "step"])[column].agg(["mean", "std", "min", "max", "count"])
    return stats.rename(columns={"std": "sd", "count": "seeds"}).reset_index()


def loss_curves(metrics: pd.DataFrame):
    """Train loss (per step) and val loss (eval steps) per optimizer setting: mean over seeds,
    min–max band (`loss_bands`)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, column in zip(axes, ("loss", "val_loss"), strict=True):
        bands = loss_bands(metrics, column)
        for i, (optim, band) in enumerate(bands.groupby("optim")):
            seeds = int(band["seeds"].max())
            colour = f"C{i % 10}"
            label = f"{optim} ({seeds} seed{'s' if seeds > 1 else ''})"
            ax.plot(band["step"], band["mean"], color=colour, label=label)
            ax.fill_between(band["step"], band["min"], band["max"], color=colour, alpha=0.25)
        if bands.empty:
            ax.text(0.5, 0.5, f"no {column} logged", ha="center", transform=ax.transAxes)
        ax.set_xlabel("training step")
        ax.set_ylabel(LOSS_LABEL)
        _legend_below(ax, ncol=2)
    axes[0].set_title("training loss (mean, min–max over seeds)")
    axes[1].set_title("validation loss on the fixed batches (mean, min–max)")
    return fig


def small_multiples(rows: pd.DataFrame, column: str, ylabel: str, titles: dict | None = None):
    """A panel per (optimizer, layer type), a line per layer over steps, log y.

    Rows of the figure are optimizers (their first run), columns are layer types (`layer_type`);
    a block's colour encodes its depth and is the same in every panel. `titles` maps a layer
    type to its panel title (default: the type).
    """
    rows = rows.dropna(subset=[column])
    per_optim = _first_run_per_optimizer(rows)
    if not per_optim:
        raise ValueError(f"no rows with a {column!r} value to plot")
    names = sorted(rows["name"].unique(), key=_layer_sort_key)
    types = _ordered_types(names)
    blocks = [i for i in map(_block_index, names) if i is not None]
    colours = _layer_colours(names, max(blocks) + 1 if blocks else 1)
    n_rows, n_cols = len(per_optim), len(types)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.9 * n_cols, 2.6 * n_rows + 0.8),
                             squeeze=False, sharex=True, layout="constrained")  # fmt: skip
    for r, (optim, optim_rows) in enumerate(per_optim):
        for c, kind in enumerate(types):
            ax = axes[r, c]
            panel = optim_rows[optim_rows["name"].map(layer_type) == kind]
            for name in sorted(panel["name"].unique(), key=_layer_sort_key):
                line = panel[panel["name"] == name].sort_values("step")
                ax.plot(line["step"], line[column], marker=".", markersize=3,
                        color=colours[name], label=_layer_label(name))  # fmt: skip
            ax.set_yscale("log")
            ax.set_title(f"{(titles or {}).get(kind, kind)} · {optim}", fontsize=9)
            ax.set_xlabel("training step")
            ax.set_ylabel(ylabel)
            if r == n_rows - 1 and ax.lines:
                _legend_below(ax, ncol=min(len(ax.lines), 3))
    return fig


def activation_stable_ranks(spectra: pd.DataFrame):
    """st(A) of every activation over training, a panel per activation type (title: width d)."""
    acts = spectra[spectra["kind"] == "activation"]
    widths = acts.groupby(acts["name"].map(layer_type))["width"].max()
    titles = {kind: f"{kind} (d ≤ {int(w)})" for kind, w in widths.items()}
    return small_multiples(
        acts, "act_stable_rank", r"st(A) = $\Vert A\Vert_F^2 / \Vert A\Vert_2^2$", titles
    )


def gradient_nuclear_ranks(spectra: pd.DataFrame):
    """nr(G) of every weight's gradient over training, a panel per weight type."""
    weights = spectra[spectra["kind"] == "weight"]
    return small_multiples(
        weights, "grad_nuclear_rank", r"nr(G) = $\Vert G\Vert_*^2 / \Vert G\Vert_F^2$"
    )


def ratio_heatmap(spectra: pd.DataFrame):
    """log10 nr(G)/st(A) as a weight × step heat map (first run of each optimizer)."""
    per_optim = _first_run_per_optimizer(spectra[spectra["kind"] == "weight"])
    n = len(per_optim)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4.5), squeeze=False, layout="constrained")
    for ax, (optim, optim_rows) in zip(axes[0], per_optim, strict=True):
        table = optim_rows.pivot_table(index="name", columns="step", values="ratio")
        table = table.loc[sorted(table.index, key=_layer_sort_key)]
        image = ax.imshow(np.log10(table.to_numpy()), aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(table.index)), table.index, fontsize=6)
        ax.set_xticks(range(len(table.columns)), table.columns, fontsize=6, rotation=90)
        ax.set_xlabel("training step")
        ax.set_ylabel("weight")
        ax.set_title(f"log10 nr(G)/st(A), {optim}")
        fig.colorbar(image, ax=ax, label="log10 nr(G)/st(A)")
    return fig


def weight_spectral_norms(spectra: pd.DataFrame):
    """‖W‖₂ of every weight at its run's last logged step: a panel per weight type, a bar per
    layer and optimizer (mean over seeds)."""
    weights = spectra[spectra["kind"] == "weight"]
    last = weights[weights["step"] == weights.groupby("run")["step"].transform("max")]
    types = _ordered_types(last["name"].unique())
    fig, axes = plt.subplots(1, len(types), figsize=(2.9 * len(types), 3.6), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, kind in zip(axes[0], types, strict=True):
        panel = last[last["name"].map(layer_type) == kind]
        table = panel.pivot_table(index="name", columns="optim", values="weight_spectral_norm")
        table = table.loc[sorted(table.index, key=_layer_sort_key)]
        table.index = [_layer_label(n) for n in table.index]
        table.plot.bar(ax=ax, legend=False, rot=0)  # linear y: bar lengths compare
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("‖W‖₂ at the end")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    return fig


def load_frames(run_dirs):
    """(runs, metrics, spectra, configs) of nanogpt run directories, `metrics` and `spectra`
    stacked with `run` and `optim` (the setting's label) columns. A run repeating another's
    setting and seed (`run_groups.repeated_runs`) is left out, and named on stderr."""
    from experiments.rundir import load_run

    runs = [load_run(d) for d in run_dirs]
    repeats = set(repeated_runs({str(r.path): r.config for r in runs}))
    if repeats:
        print(f"note: left out {len(repeats)} run(s) repeating another run's config and seed: "
              f"{sorted(repeats)}", file=sys.stderr)  # fmt: skip
    runs = [r for r in runs if str(r.path) not in repeats]
    configs = {str(r.path): r.config for r in runs}

    def stack(frames):
        frames = [f.assign(run=str(r.path)) for r, f in zip(runs, frames, strict=True) if len(f)]
        empty = pd.DataFrame({"run": pd.Series([], dtype=str)})
        return with_optimizer(pd.concat(frames, ignore_index=True) if frames else empty, configs)

    return runs, stack([r.metrics for r in runs]), stack([r.spectra for r in runs]), configs


def no_spectra_reason(configs: dict) -> str:
    """Why a set of runs has no spectra rows: the cadence off in every run, or none logged."""
    cadences = {(c.get("trainer") or {}).get("spectra_every") for c in configs.values()}
    if cadences <= {0, None}:
        return "no spectra logged (trainer.spectra_every=0)"
    return "no spectra logged yet (the runs' spectra/ directories hold no rows)"


def missing_spectra(spectra: pd.DataFrame, kind: str, column: str, reason: str) -> str | None:
    """None when `spectra` has `kind` rows with a `column` value to draw, else why not."""
    if not len(spectra) or not {"kind", "name", "step"} <= set(spectra.columns):
        return reason
    if column not in spectra.columns or spectra.loc[spectra["kind"] == kind, column].isna().all():
        return f"no {column} in the {kind} spectra rows"
    return None


def plot_runs(run_dirs: list[pathlib.Path], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Write every figure whose data the runs hold; for each one skipped, a line on stderr says
    why (e.g. "no spectra logged (trainer.spectra_every=0)")."""
    from experiments.nanogpt import ablation_figures, gate_figures

    runs, metrics, spectra, configs = load_frames(run_dirs)
    no_spectra = no_spectra_reason(configs)
    losses = [c for c in ("loss", "val_loss") if c in metrics.columns]
    # name: (why it cannot be drawn, or None; how to draw it)
    figures = {
        "nanogpt_loss": (None if losses else "no loss or val_loss logged",
                         lambda: loss_curves(metrics)),
        "nanogpt_activation_stable_rank": (
            missing_spectra(spectra, "activation", "act_stable_rank", no_spectra),
            lambda: activation_stable_ranks(spectra)),
        "nanogpt_gradient_nuclear_rank": (
            missing_spectra(spectra, "weight", "grad_nuclear_rank", no_spectra),
            lambda: gradient_nuclear_ranks(spectra)),
        "nanogpt_ratio_heatmap": (missing_spectra(spectra, "weight", "ratio", no_spectra),
                                  lambda: ratio_heatmap(spectra)),
        "nanogpt_weight_spectral_norm": (
            missing_spectra(spectra, "weight", "weight_spectral_norm", no_spectra),
            lambda: weight_spectral_norms(spectra)),
        # Both draw what they have and say in the panel what is missing (no gated runs, ...).
        "nanogpt_gate_choices": (None, lambda: gate_figures.gate_choice_heatmap(
            gate_figures.gate_rows(runs), gate_figures.step_rows(runs), no_spectra)),
        "nanogpt_muon_ablation": (None if "val_loss" in metrics.columns else "no val_loss logged",
                                  lambda: ablation_figures.ablation_figure(metrics, spectra,
                                                                           configs)),
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (missing, draw) in figures.items():
        if missing is not None:
            print(f"skipped {name}.png: {missing}", file=sys.stderr)
            continue
        fig = draw()
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return paths
