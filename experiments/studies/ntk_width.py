"""Study: NTK effective rank against width m at fixed n (finite-width stability).

Shukla (arXiv 2512.00860): a finite-width NTK within O(m^{−1/2}) of its limit in
operator norm moves r_eff by O(m^{−1/2}). Per width and init seed we compute the exact
NTK of `study.model` on one fixed set of n inputs and its r_eff. Two exponents are fitted:
  * approach: mean r_eff(m) = r_lim + c·m^{−α} (nonlinear least squares over the seed
    means, 95% interval from the fit covariance; α = 0.5 predicted);
  * fluctuation: sd over seeds of r_eff(m) ∝ m^{−β} (OLS in log–log, β = 0.5 predicted).
Table: tables/ntk_width.parquet (per width and seed).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from experiments.config import RunConfig, check_positive_int
from experiments.runtime.context import RunContext
from experiments.studies import _ntk_models as ntk_models
from experiments.studies._figures import plt, save
from experiments.studies._ntk_config import NTKConfig, model_and_inputs, ntk, read_tables
from specjax import kernel_effective_rank

TABLE = "ntk_width"


@dataclasses.dataclass
class Config(NTKConfig):
    """NTK effective rank vs width m of one model on one fixed set of n inputs."""

    name: str = "ntk_width"
    block_size: int = 100
    model: str = "mlp"  # mlp (width = hidden units) | resnet (width = base channels)
    widths: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 128, 256, 512, 1024])
    dataset: str = "digits"  # gaussian | digits | cifar10 (downloaded once) | cifar10_shaped
    n: int = 300
    # init seeds 0..seeds-1 (ctx.key("init", seed)) on the same n inputs (ctx.key("data")): the
    # spread over seeds is the initialization's alone (data resampling's would not shrink with m)
    seeds: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.widths) < 3:
            raise ValueError(f"study.widths needs ≥ 3 widths to fit an exponent, got {self.widths}")
        for i, width in enumerate(self.widths):
            check_positive_int(width, f"study.widths[{i}]")
            self.check_model(self.model, width)
        self.check_data(self.dataset, self.n, "study.dataset", "study.n")
        self.check_at_least(self.seeds, "study.seeds", 2, "spread over seeds")


def fit_approach(widths: np.ndarray, r_mean: np.ndarray) -> dict[str, float]:
    """r(m) = r_lim + c·m^{−α}: α and r_lim with 95% intervals (NaN if the fit fails)."""
    p0 = (r_mean[-1], (r_mean[0] - r_mean[-1]) * np.sqrt(widths[0]), 0.5)
    try:
        with warnings.catch_warnings():  # too few widths for a covariance: the CI is then inf
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, pcov = optimize.curve_fit(
                lambda m, r, c, a: r + c * m ** (-a), widths, r_mean, p0=p0, maxfev=20000
            )
        se = np.sqrt(np.diag(pcov))
    except (RuntimeError, ValueError):
        popt, se = np.full(3, np.nan), np.full(3, np.nan)
    dof = max(len(widths) - 3, 1)
    half = stats.t.ppf(0.975, dof) * se
    return {"alpha": float(popt[2]), "alpha_ci_low": float(popt[2] - half[2]),
            "alpha_ci_high": float(popt[2] + half[2]), "r_lim": float(popt[0])}  # fmt: skip


def fit_fluctuation(widths: np.ndarray, r_sd: np.ndarray) -> dict[str, float]:
    """sd_seeds r_eff(m) ∝ m^{−β}: β with its 95% interval from OLS in log–log."""
    fit = stats.linregress(np.log(widths), np.log(r_sd))
    half = float(stats.t.ppf(0.975, len(widths) - 2) * fit.stderr)
    beta = float(-fit.slope)
    return {"beta": beta, "beta_ci_low": beta - half, "beta_ci_high": beta + half}


def run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
    study = cfg.study
    study.check_data_files([study.dataset])
    widths = np.array(sorted(study.widths), float)
    r = np.zeros((len(widths), study.seeds))
    with ctx.progress(r.size, "ntk_width") as bar:
        for i, w in enumerate(widths.astype(int).tolist()):
            for seed in range(study.seeds):
                apply_fn, params, x, ident = model_and_inputs(
                    study, study.model, w, study.dataset, study.n,
                    ctx.key("init", seed), ctx.key("data"),
                )  # fmt: skip
                if i == 0 and seed == 0:
                    ctx.record_dataset(**ident)
                r[i, seed] = float(kernel_effective_rank(ntk(study, apply_fn, params, x)))
                ctx.log_table(TABLE, [dict(model=study.model, width=w, seed=seed, n=study.n,
                                           params=ntk_models.num_params(params),
                                           r_eff=r[i, seed])])  # fmt: skip
                bar.update(1, width=w, r_eff=r[i, seed])
    summary = {f"r_eff_m{int(w)}": float(v) for w, v in zip(widths, r.mean(axis=1), strict=True)}
    summary.update(fit_approach(widths, r.mean(axis=1)))
    summary.update(fit_fluctuation(widths, r.std(axis=1, ddof=1)))
    return summary


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """r_eff vs width (mean ± sd over seeds); the seed spread vs width with an m^(-1/2) guide."""
    df = read_tables(run_dirs, TABLE)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (model, g) in enumerate(df.groupby("model")):
        agg = g.groupby("width")["r_eff"].agg(["mean", "std"])
        ax0.errorbar(agg.index, agg["mean"], yerr=agg["std"], marker="o", capsize=3,
                     color=f"C{i}", label=model)  # fmt: skip
        ax1.loglog(agg.index, agg["std"], "o-", color=f"C{i}", label=f"{model}: sd over seeds")
        m = agg.index.to_numpy(float)
        ax1.loglog(m, agg["std"].iloc[0] * np.sqrt(m[0] / m), "k:", label="∝ m^(-1/2)")
    ax0.set(xscale="log", xlabel="width m", ylabel="r_eff")
    ax0.legend()
    ax1.set(xlabel="width m", ylabel="sd of r_eff over inits")
    ax1.legend(fontsize=8)
    fig.suptitle("NTK effective rank vs width at fixed n")
    return [save(fig, out_dir, "ntk_rank_vs_width", dpi=120, bbox_inches=None)]
