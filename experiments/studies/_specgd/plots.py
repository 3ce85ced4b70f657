"""Figures of the spectral-vs-gradient studies: each draws one PNG from one `rundir.Run`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.rundir import Run
from experiments.studies._figures import plt, save

METHOD_STYLE = {"gd": ("GD", "tab:blue"), "specgd": ("SpecGD", "tab:red")}


def spiked_rf_figure(run: Run, out_dir: Path) -> Path:
    """Left: loss of GD, SpecGD and SpecGD restarts (log). Right: nr(∇L) of each vs st(A)."""
    m = run.metrics
    restarts = run.tables.get("restarts")
    fig, (ax_loss, ax_nr) = plt.subplots(1, 2, figsize=(11, 4))
    floor = 1e-300  # log axes cannot show an exact zero
    peak_style = dict(color="tab:green", lw=1.6, alpha=1.0, label="SpecGD from GD nr peak")
    iterate_style = dict(color="tab:orange", lw=0.8, alpha=0.6, label=None)
    if restarts is not None:
        for _start, part in restarts.groupby("start"):
            style = peak_style if part["from_peak"].iloc[0] else iterate_style
            ax_loss.semilogy(part["step"], np.maximum(part["loss"], floor), **style)
        ax_loss.plot([], [], color="tab:orange", lw=0.8, label="SpecGD from GD iterates")
    for method, (label, color) in METHOD_STYLE.items():
        ax_loss.semilogy(
            m["step"], np.maximum(m[f"{method}/loss"], floor), color=color, lw=2, label=label
        )
        ax_nr.plot(m["step"], m[f"{method}/nr"], color=color, lw=1.5, label=f"nr(∇L), {label}")
    ax_nr.axhline(m["st_A"].iloc[0], color="k", ls="--", label=f"st(A) = {m['st_A'].iloc[0]:.2f}")
    ax_loss.set(xlabel="iteration", ylabel="loss L(W)", title="loss (realizable, min = 0)")
    ax_nr.set(xlabel="iteration", ylabel="nuclear rank", title="nr(∇L) vs st(A)")
    for ax in (ax_loss, ax_nr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, out_dir, f"spiked_rf_{run.path.name}")


def sweep_figure(run: Run, out_dir: Path) -> Path:
    """Per target: seed-mean nr(∇L) over GD steps per width; nr at steps 0, 1 vs k with the fit."""
    curves, fits = run.tables["nr_curves"], run.tables["fits"]
    targets = list(dict.fromkeys(curves["target"]))
    fig, axes = plt.subplots(len(targets), 2, figsize=(11, 4 * len(targets)), squeeze=False)
    for row, target in enumerate(targets):
        part = curves[(curves["target"] == target) & curves["nr"].notna()]
        mean = part.groupby(["width", "step"], as_index=False)["nr"].mean()
        ax_t, ax_k = axes[row]
        for width, w_part in mean.groupby("width"):
            ax_t.plot(w_part["step"] + 1, w_part["nr"], lw=1.5, label=f"k = {width}")
        ax_t.set_xscale("log")
        ax_t.set(xlabel="GD iteration + 1", ylabel="nr(∇L), mean over seeds")
        ax_t.set_title(f"{target}: nr over training")
        for step, marker in ((0, "o"), (1, "s")):
            at = mean[mean["step"] == step]
            ax_k.plot(at["width"], at["nr"], marker=marker, lw=0, label=f"step {step}")
        fit = fits[(fits["target"] == target) & (fits["step"] == 1)].iloc[0]
        ks = np.asarray(sorted(mean["width"].unique()), float)
        label = f"fit step 1: {fit['slope']:.3f}·k + {fit['intercept']:.1f}, R²={fit['r2']:.3f}"
        ax_k.plot(ks, fit["slope"] * ks + fit["intercept"], "k--", label=label)
        ax_k.set(xlabel="width k", ylabel="nr(∇L)", title=f"{target}: nr vs k")
        for ax in (ax_t, ax_k):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return save(fig, out_dir, f"spiked_rf_sweep_{run.path.name}")


def sparse_regression_figure(run: Run, out_dir: Path) -> Path:
    """Rows = variants; columns = loss (log), st(A_ℓ) per layer, nr(∇W_ℓ) per layer."""
    m = run.metrics
    variants = sorted({c.split("/")[0] for c in m.columns if c.endswith("/loss")})
    fig, axes = plt.subplots(len(variants), 3, figsize=(15, 3.8 * len(variants)), squeeze=False)
    styles = ("-", "--", ":")
    for row, variant in enumerate(variants):
        ax_loss, ax_st, ax_nr = axes[row]
        for method, (label, color) in METHOD_STYLE.items():
            prefix = f"{variant}/{method}"
            if f"{prefix}/loss" not in m:
                continue
            part = m[["step", f"{prefix}/loss"]].dropna()
            ax_loss.semilogy(part["step"], part[f"{prefix}/loss"], color=color, label=label)
            for ax, key, name in ((ax_st, "st_A", "st(A"), (ax_nr, "nr_W", "nr(∇W")):
                for layer, ls in enumerate(styles, start=1):
                    column = f"{prefix}/{key}{layer}"
                    part = m[["step", column]].dropna()
                    line_label = f"{label} {name}{layer})"
                    ax.plot(part["step"], part[column], color=color, ls=ls, label=line_label)
        titles = ("training MSE", "post-activation stable rank", "gradient nuclear rank")
        for ax, title in zip(axes[row], titles, strict=True):
            ax.set(title=f"{variant}: {title}", xlabel="iteration")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return save(fig, out_dir, f"sparse_regression_{run.path.name}")


def swiglu_batch_figure(run: Run, out_dir: Path) -> Path:
    """st(A_ℓ) of a SwiGLU MLP at initialisation against the batch size n."""
    table = run.tables["swiglu_batch_sweep"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for layer, part in table.groupby("layer"):
        ax.semilogx(part["num_samples"], part["stable_rank"], marker="o", label=f"layer {layer}")
    ax.set(xlabel="batch size n", ylabel="st(A_ℓ) at init")
    ax.set_title("SwiGLU post-activation stable rank")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, out_dir, f"swiglu_batch_sweep_{run.path.name}")


def trained_stable_rank_figure(run: Run, out_dir: Path) -> Path:
    """st(A_ℓ) against the batch size n: at initialisation (dotted) and after training."""
    table = run.tables["trained_stable_ranks"]
    layers = sorted(table["layer"].unique())
    fig, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 4), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        part = table[table["layer"] == layer].sort_values("num_samples")
        for method, (label, color) in METHOD_STYLE.items():
            rows = part[part["method"] == method]
            if rows.empty:
                continue
            ax.semilogx(rows["num_samples"], rows["st_final"], "o-", color=color, label=label)
            if method == "gd":  # both methods start from the same network: one init curve
                ax.semilogx(rows["num_samples"], rows["st_initial"], "k:", marker=".", label="init")
        sizes = sorted(part["num_samples"].unique())
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()  # log-axis minor labels overlap the n labels
        ax.set(xlabel="batch size n", ylabel=f"st(A{layer})", title=f"layer {layer}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, out_dir, f"trained_stable_ranks_{run.path.name}")


def one_step_figure(run: Run, out_dir: Path) -> Path:
    """Measured ratio of one-step decreases vs the predicted nr/st (log–log), with the bracket."""
    table = run.tables["one_step"]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for family, part in table.groupby("family"):
        ax.loglog(
            part["predicted_ratio"], part["measured_ratio"], "o", ms=3, alpha=0.7, label=family
        )
    lo, hi = table["predicted_ratio"].min(), table["predicted_ratio"].max()
    xs = np.geomspace(lo, hi, 50)
    ax.loglog(xs, xs, "k-", lw=1, label="measured = predicted")
    ax.loglog(xs, xs / 2, "k:", lw=1, label="bracket ×1/2, ×2")
    ax.loglog(xs, 2 * xs, "k:", lw=1)
    ax.axvline(2, color="gray", ls="--", lw=1, label="nr = 2 st")
    ax.axhline(1, color="gray", ls="-.", lw=1)
    ax.set(xlabel="predicted nr(∇L)/st(A)", ylabel="measured (L−L_SD)/(L−L_GD)")
    ax.set_title("one-step check")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save(fig, out_dir, f"one_step_check_{run.path.name}")
