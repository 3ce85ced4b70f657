"""ESD figures of a NanoGPT run logged with `study.full_spectra_every` > 0.

    python -m experiments.nanogpt.esd_figures RUN_DIR [--step N]   # → RUN_DIR/figures/

Reads `tables/full_spectra.parquet` (one row per weight and logged step: every singular value
and the power-law fit of its ESD, the eigenvalues λ = σ² of WᵀW) and draws, one panel per
weight type (`attn/qkv`, `attn/proj`, `mlp/fc`, `mlp/proj`, embeddings):

- `esd_figure`: the ESD of each layer at one step as a complementary CDF P(Λ ≥ λ) on log-log
  axes (a power-law tail is a straight line of slope 1 − α), with the fitted tail dashed;
- `alpha_figure`: the fitted α of each layer over training (Martin & Mahoney read 2 ≲ α ≲ 6 as
  a heavy-tailed, well-trained layer).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments import rundir
from experiments.nanogpt.layers import FULL_SPECTRA_TABLE


def load_full_spectra(run_dir) -> pd.DataFrame:
    """The run's full-spectra rows with a `weight_type` column; for a step logged twice (runs
    resumed before `rundir.truncate_after` dropped later table rows) the last rows are kept."""
    path = pathlib.Path(run_dir) / rundir.TABLES_DIR / f"{FULL_SPECTRA_TABLE}.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run the NanoGPT study with study.full_spectra_every=<k> (a "
            "multiple of trainer.spectra_every) to log full spectra"
        )
    frame = rundir.read_table(run_dir, FULL_SPECTRA_TABLE)
    frame = frame.drop_duplicates(["step", "name"], keep="last").reset_index(drop=True)
    frame["weight_type"] = [n.split("/", 1)[1] if n.startswith("block_") else n
                            for n in frame["name"]]  # fmt: skip
    return frame


def _panels(types: list[str], width: float = 3.2):
    cols = min(len(types), 3)
    rows = -(-len(types) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(types) :]:
        ax.set_visible(False)
    return fig, dict(zip(types, axes.ravel(), strict=False))


def _layer_colour(layer: int, num_layers: int):
    return plt.cm.viridis(0.85 * layer / max(num_layers - 1, 1)) if layer >= 0 else "black"


def _type_order(frame: pd.DataFrame) -> list[str]:
    types = list(dict.fromkeys(frame["weight_type"]))
    return [t for t in types if "/" in t] + [t for t in types if "/" not in t]


def esd_figure(frame: pd.DataFrame, *, step: int | None = None):
    """CCDF of each layer's ESD at `step` (default: the last logged) with its fitted tail."""
    step = int(frame["step"].max()) if step is None else int(step)
    at = frame[frame["step"] == step]
    if at.empty:
        raise ValueError(f"no full spectra at step {step}; logged: {sorted(set(frame['step']))}")
    num_layers = int(frame["layer"].max()) + 1
    fig, axes = _panels(_type_order(at))
    for _, row in at.iterrows():
        ax = axes[row["weight_type"]]
        lam = np.sort(np.asarray(row["singular_values"], np.float64) ** 2)
        lam = lam[lam > 0]
        ccdf = 1.0 - np.arange(lam.size) / lam.size
        colour = _layer_colour(int(row["layer"]), num_layers)
        label = f"layer {row['layer']}" if row["layer"] >= 0 else row["name"]
        ax.loglog(lam, ccdf, color=colour, lw=1.2, label=f"{label}: α={row['alpha']:.2f}")
        if np.isfinite(row["alpha"]):
            tail = lam[lam >= row["xmin"]]
            frac = row["n_tail"] / lam.size  # P(Λ ≥ x_min)
            ax.loglog(tail, frac * (tail / row["xmin"]) ** (1 - row["alpha"]), "--",
                      color=colour, lw=0.9)  # fmt: skip
    for name, ax in axes.items():
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("eigenvalue λ of WᵀW")
        ax.set_ylabel("P(Λ ≥ λ)")
        ax.legend(fontsize=6, loc="lower left", frameon=False)
    fig.suptitle(f"ESD per layer at step {step} (dashed: power-law fit of the tail)", fontsize=10)
    fig.tight_layout()
    return fig


def alpha_figure(frame: pd.DataFrame):
    """ESD power-law α of each layer against the training step, one panel per weight type."""
    num_layers = int(frame["layer"].max()) + 1
    fig, axes = _panels(_type_order(frame))
    for (wtype, layer), group in frame.sort_values("step").groupby(["weight_type", "layer"]):
        label = f"layer {layer}" if layer >= 0 else wtype
        axes[wtype].plot(group["step"], group["alpha"], marker="o", ms=2.5, lw=1.2,
                         color=_layer_colour(int(layer), num_layers), label=label)  # fmt: skip
    for name, ax in axes.items():
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("ESD power-law α")
        ax.legend(fontsize=6, frameon=False)
    fig.suptitle("ESD power-law α per layer over training", fontsize=10)
    fig.tight_layout()
    return fig


def plot_esd_figures(run_dir, out_dir=None, *, step: int | None = None) -> list[pathlib.Path]:
    """Write `esd.png` (at `step`, default the last logged) and `esd_alpha.png` for one run
    into `out_dir` (default `<run_dir>/figures`); returns their paths."""
    frame = load_full_spectra(run_dir)
    out = (
        pathlib.Path(out_dir) if out_dir is not None else pathlib.Path(run_dir) / rundir.FIGURES_DIR
    )
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    figures = {"esd.png": esd_figure(frame, step=step), "esd_alpha.png": alpha_figure(frame)}
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    return paths


def main(argv=None) -> int:
    """0 with the figures written, or with one line saying why they were skipped (no full
    spectra logged); 2 for a path that is not a run directory or a `--step` not logged."""
    parser = argparse.ArgumentParser(
        description="ESD and power-law α figures of a NanoGPT run with full spectra logged "
        "(study.full_spectra_every > 0)."
    )
    parser.add_argument("run_dir", help="the run directory")
    parser.add_argument("--step", type=int, default=None, help="step of the ESD figure (last)")
    parser.add_argument("--out", default=None, help="output directory (RUN_DIR/figures)")
    args = parser.parse_args(argv)
    if not rundir.is_run_dir(args.run_dir):
        print(f"error: {args.run_dir!r} is not a run directory (no {rundir.CONFIG_FILE} and "
              f"{rundir.RECORD_FILE})", file=sys.stderr)  # fmt: skip
        return 2
    try:
        paths = plot_esd_figures(args.run_dir, args.out, step=args.step)
    except FileNotFoundError as err:  # a run without full spectra: nothing to draw
        print(f"skipped esd.png, esd_alpha.png: {err}", file=sys.stderr)
        return 0
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
