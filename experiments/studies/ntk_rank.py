"""Study: the NTK's effective rank r_eff = tr(K)²/‖K‖_F² at initialization against n.

Shukla (arXiv 2512.00860) predicts r_eff(n) → r_∞ = E[k(x,x)]²/E[k(x,x')²], slope ≈ 0
in log n. For each model spec × data set × seed we draw n_max inputs and an init, form
the exact NTK once (`specjax.ntk.exact_ntk`) and read r_eff(n) off its leading n×n
principal submatrices (nested i.i.d. samples), plus r̂_∞ (U-statistic moments) and the
moment prediction (ν + (n−1)μ²)/(ν + (n−1)m₂) from the n_max sample.
Slope: OLS of r_eff on ln n per seed; mean over seeds ± t-interval (95%) across seeds.
Tables: tables/ntk_rank.parquet (per n), tables/ntk_rank_fits.parquet (per config).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import stats

from experiments.config import RunConfig, check_positive_int
from experiments.runtime.context import RunContext
from experiments.studies import _ntk_models as ntk_models
from experiments.studies._figures import plt, save
from experiments.studies._ntk_config import ModelSpec, NTKConfig, model_and_inputs, ntk, read_tables
from specjax import kernel_effective_rank
from specjax.ntk import kernel_moments

TABLE = "ntk_rank"
FITS_TABLE = "ntk_rank_fits"


@dataclasses.dataclass
class Config(NTKConfig):
    """NTK effective rank at init vs n, for every model spec × data set × seed."""

    name: str = "ntk_rank"
    models: list[ModelSpec] = dataclasses.field(
        default_factory=lambda: [ModelSpec("mlp", 256), ModelSpec("resnet", 16)]
    )
    # gaussian (8x8x1 i.i.d. N(0,1)) | digits (sklearn, offline) | cifar10 (local file)
    datasets: list[str] = dataclasses.field(default_factory=lambda: ["gaussian", "digits"])
    # nested: leading principal submatrices of the n_max kernel; each ≥ 3 (moments need 3)
    ns: list[int] = dataclasses.field(default_factory=lambda: [100, 250, 500, 1000, 1797])
    seeds: int = 3  # seeds 0..seeds-1: init ctx.key("init", seed), inputs ctx.key("data", seed)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_nonempty(self.models, "study.models", "{model, width}")
        self.check_nonempty(self.datasets, "study.datasets", "data set names")
        self.check_nonempty(self.ns, "study.ns", "ints ≥ 3")
        for i, spec in enumerate(self.models):
            self.check_model(spec.model, spec.width, f"study.models[{i}].")
        for i, n in enumerate(self.ns):
            self.check_at_least(n, f"study.ns[{i}]", 3, "moments need 3 samples")
        for i, dataset in enumerate(self.datasets):
            self.check_data(dataset, max(self.ns), f"study.datasets[{i}]", "max(study.ns)")
        check_positive_int(self.seeds, "study.seeds")


def slope_fit(ns: np.ndarray, r_sxn: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Per-seed OLS slope of r_eff on ln n; mean and t-interval across seeds (1 seed: OLS SE)."""
    log_n = np.log(ns)
    slopes = np.array([stats.linregress(log_n, r).slope for r in r_sxn])
    s = len(slopes)
    if s >= 2:
        half = stats.t.ppf(0.5 + level / 2, s - 1) * slopes.std(ddof=1) / np.sqrt(s)
    else:
        fit = stats.linregress(log_n, r_sxn[0])
        half = stats.t.ppf(0.5 + level / 2, len(ns) - 2) * fit.stderr if len(ns) > 2 else np.nan
    mean = float(slopes.mean())
    return {"slope": mean, "slope_ci_low": mean - half, "slope_ci_high": mean + half}


def run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
    study = cfg.study
    study.check_data_files(study.datasets)
    ns = np.array(sorted(study.ns))
    n_max = int(ns[-1])
    summary: dict[str, float] = {}
    total = len(study.models) * len(study.datasets) * study.seeds
    with ctx.progress(total, "ntk_rank") as bar:
        for spec in study.models:
            for dataset in study.datasets:
                tag = f"{spec.model}{spec.width}_{dataset}"
                r_sxn, r_inf_s = [], []
                for seed in range(study.seeds):
                    apply_fn, params, x, ident = model_and_inputs(
                        study, spec.model, spec.width, dataset, n_max,
                        ctx.key("init", seed), ctx.key("data", seed),
                    )  # fmt: skip
                    ctx.record_dataset(**ident, seed=seed, config=tag)
                    k = ntk(study, apply_fn, params, x)
                    full = kernel_moments(k)
                    rows = []
                    for n in ns:
                        k_n = k[:n, :n]
                        m = kernel_moments(k_n)
                        rows.append(
                            dict(model=spec.model, width=spec.width, dataset=dataset,
                                 seed=seed, n=int(n), params=ntk_models.num_params(params),
                                 r_eff=float(kernel_effective_rank(k_n)),
                                 r_inf=float(m.r_inf), r_inf_stderr=float(m.r_inf_stderr),
                                 r_pred=float(full.predicted_effective_rank(int(n))))
                        )  # fmt: skip
                    ctx.log_table(TABLE, rows)
                    r_sxn.append([r["r_eff"] for r in rows])
                    r_inf_s.append(float(full.r_inf))
                    bar.update(1, config=tag, r_eff=rows[-1]["r_eff"])
                fit = slope_fit(ns, np.array(r_sxn))
                r_nmax = np.array(r_sxn)[:, -1]
                fit_row = dict(model=spec.model, width=spec.width, dataset=dataset,
                               seeds=study.seeds, n_min=int(ns[0]), n_max=n_max,
                               r_eff_nmax=float(r_nmax.mean()), r_eff_nmax_sd=float(r_nmax.std()),
                               r_inf=float(np.mean(r_inf_s)), **fit)  # fmt: skip
                ctx.log_table(FITS_TABLE, [fit_row])
                for key in ("r_eff_nmax", "r_inf", "slope", "slope_ci_low", "slope_ci_high"):
                    summary[f"{tag}/{key}"] = float(fit_row[key])
    return summary


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """r_eff vs n (mean ± sd over seeds) with the moment prediction as a dashed line."""
    df = read_tables(run_dirs, TABLE)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, ((model, width, dataset), g) in enumerate(df.groupby(["model", "width", "dataset"])):
        agg = g.groupby("n")[["r_eff", "r_pred"]].agg(["mean", "std"]).fillna(0.0)
        color = f"C{i % 10}"
        label = f"{model}-{width} {dataset}"
        ax.errorbar(agg.index, agg[("r_eff", "mean")], yerr=agg[("r_eff", "std")],
                    marker="o", color=color, capsize=3, label=label)  # fmt: skip
        ax.plot(agg.index, agg[("r_pred", "mean")], "--", color=color, alpha=0.7)
    ax.set(xscale="log", xlabel="n (samples)", ylabel="r_eff = tr(K)² / ‖K‖_F²")
    ax.set_title("NTK effective rank at init (dashed: kernel-moment prediction)")
    ax.legend(fontsize=7)
    return [save(fig, out_dir, "ntk_rank_vs_n", dpi=120, bbox_inches=None)]
