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

import warnings
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from scipy import optimize, stats

from experiments.studies import _ntk_data as ntk_data
from experiments.studies import _ntk_models as ntk_models
from experiments.studies.ntk_rank import model_and_inputs, ntk
from specjax import kernel_effective_rank

TABLE = "ntk_width"


def _check(study: DictConfig) -> None:
    if len(study.widths) < 3:
        raise ValueError(f"study.widths needs ≥ 3 widths to fit an exponent, got {study.widths}")
    for w in study.widths:
        ntk_models.make_model(study.model, w, depth=study.get("depth"), norm=study.norm)
    if study.dataset not in ntk_data.DATASETS:
        raise ValueError(f"study.dataset must be in {ntk_data.DATASETS}, got {study.dataset!r}")
    if isinstance(study.seeds, bool) or not isinstance(study.seeds, int) or study.seeds < 2:
        raise ValueError(f"study.seeds must be an int ≥ 2 (spread over seeds), got {study.seeds!r}")


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
    half = stats.t.ppf(0.975, len(widths) - 2) * fit.stderr
    beta = -fit.slope
    return {
        "beta": float(beta),
        "beta_ci_low": float(beta - half),
        "beta_ci_high": float(beta + half),
    }


def run(cfg: DictConfig, ctx) -> dict[str, float]:
    study = cfg.study
    _check(study)
    widths = np.array(sorted(study.widths), float)
    r = np.zeros((len(widths), study.seeds))
    with ctx.progress(r.size, "ntk_width") as bar:
        for i, w in enumerate(widths.astype(int)):
            spec = SimpleNamespace(model=study.model, width=int(w))
            for seed in range(study.seeds):
                init_key = jax.random.fold_in(ctx.key("init"), seed)
                # One fixed input set for every width and seed: the spread over seeds is
                # then the initialization's alone (data resampling would not shrink with m).
                data_key = ctx.key("data")
                apply_fn, params, x, ident = model_and_inputs(
                    study, spec, study.dataset, study.n, init_key, data_key
                )
                if i == 0 and seed == 0:
                    ctx.record_dataset(**ident)
                r[i, seed] = float(kernel_effective_rank(ntk(study, apply_fn, params, x)))
                ctx.log_table(TABLE, [dict(model=study.model, width=int(w), seed=seed,
                                           n=int(study.n), params=ntk_models.num_params(params),
                                           r_eff=r[i, seed])])  # fmt: skip
                bar.update(1, width=int(w), r_eff=r[i, seed])
    summary = {f"r_eff_m{int(w)}": float(v) for w, v in zip(widths, r.mean(axis=1), strict=True)}
    summary.update(fit_approach(widths, r.mean(axis=1)))
    summary.update(fit_fluctuation(widths, r.std(axis=1, ddof=1)))
    return summary


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """r_eff vs width (mean ± sd over seeds); the seed spread vs width with an m^(-1/2) guide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [Path(d) / "tables" / f"{TABLE}.parquet" for d in run_dirs]
    df = pd.concat([pd.read_parquet(t) for t in tables if t.exists()], ignore_index=True)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (model, g) in enumerate(df.groupby("model")):
        agg = g.groupby("width")["r_eff"].agg(["mean", "std"])
        ax0.errorbar(agg.index, agg["mean"], yerr=agg["std"], marker="o", capsize=3,
                     color=f"C{i}", label=model)  # fmt: skip
        ax1.loglog(agg.index, agg["std"], "o-", color=f"C{i}", label=f"{model}: sd over seeds")
        m = agg.index.to_numpy(float)
        ax1.loglog(m, agg["std"].iloc[0] * np.sqrt(m[0] / m), "k:", label="∝ m^(-1/2)")
    ax0.set_xscale("log")
    ax0.set_xlabel("width m")
    ax0.set_ylabel("r_eff")
    ax0.legend()
    ax1.set_xlabel("width m")
    ax1.set_ylabel("sd of r_eff over inits")
    ax1.legend(fontsize=8)
    fig.suptitle("NTK effective rank vs width at fixed n")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ntk_rank_vs_width.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
