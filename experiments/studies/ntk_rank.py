"""Study: the NTK's effective rank r_eff = tr(K)²/‖K‖_F² at initialization against n.

Shukla (arXiv 2512.00860) predicts r_eff(n) → r_∞ = E[k(x,x)]²/E[k(x,x')²], slope ≈ 0 in n.
For each model spec × data set × seed we draw n_max inputs and an init, then
  * sketch: one set of M CountSketches (R random output probes each) of all n_max examples
    (`specjax.ntk.sketch_gradients`, O(M·n·R·s) memory); r̂_eff and r̂_∞ at every n in `ns`
    from the leading n examples (`effective_rank_by_prefix`; nested i.i.d. samples);
  * exact: the kernel at the largest n in `ns` that is ≤ `exact_max_n` (`exact_ntk`), and
    r_eff, r̂_∞ (U-statistic moments) and the moment prediction (ν + (n−1)μ²)/(ν + (n−1)m₂)
    at every n up to it.
Slope: OLS of r_eff on ln n per seed (sketch values: they exist at every n); mean over seeds
± t-interval (95%) across seeds; with one seed the OLS interval, which ignores that the
estimates at different n share sketches. Tables: tables/ntk_rank.parquet (per n),
tables/ntk_rank_fits.parquet (per config, with the paper's numbers beside ours).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
from scipy import stats

from experiments.config import RunConfig, check_positive_int
from experiments.runtime.context import RunContext
from experiments.studies import _ntk_models as ntk_models
from experiments.studies._figures import plt, save
from experiments.studies._ntk_config import ModelSpec, NTKConfig, model_and_inputs, ntk, read_tables
from specjax import kernel_effective_rank
from specjax.ntk import effective_rank_by_prefix, kernel_moments, sketch_gradients

TABLE = "ntk_rank"
FITS_TABLE = "ntk_rank_fits"
# Shukla (arXiv 2512.00860), CIFAR-10, ResNet-20/56 at widths 16/32, n = 1e3…5e4, trace NTK,
# as summarized in issue 15: r_eff ≈ 1.0–1.3, slope ≈ 0 in n, r_∞ close to the fitted constant.
PAPER = {"paper_r_eff_low": 1.0, "paper_r_eff_high": 1.3, "paper_slope": 0.0}


@dataclasses.dataclass
class Config(NTKConfig):
    """NTK effective rank at init vs n (sketch at every n, exact where it fits)."""

    name: str = "ntk_rank"
    output: str = "trace"  # the paper's convention: the sum over the 10 logits
    models: list[ModelSpec] = dataclasses.field(default_factory=lambda: [ModelSpec("resnet20", 16)])
    # cifar10 (downloaded once to the user cache) | cifar10_shaped (Gaussian 32×32×3)
    # | gaussian (8×8×1) | digits (sklearn 8×8, ≤ 1797)
    datasets: list[str] = dataclasses.field(default_factory=lambda: ["cifar10_shaped"])
    # nested: the leading n of the n_max examples; each ≥ 3 (moments need 3)
    ns: list[int] = dataclasses.field(default_factory=lambda: [1000, 5000, 10000, 25000, 50000])
    seeds: int = 1  # seeds 0..seeds-1: init ctx.key("init", seed), inputs ctx.key("data", seed)
    exact_max_n: int = 1000  # exact kernel at the largest n in ns ≤ this (0: sketch only)
    sketch_width: int = 2048  # s, CountSketch buckets (memory M·n·R·s floats: 1.6 GB at 5e4)
    num_probes: int = 1  # R, random output probes per sketch ("trace"; 1 for "logit")
    # M ≥ 3 independent sketches (pairs: bias-free; jackknife SE). Cost is M·R per-example
    # VJPs; M = 3 is 25% cheaper but its 2-dof jackknife SE proved unreliable (0.4 notes)
    num_sketches: int = 4

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
        check_positive_int(self.exact_max_n, "study.exact_max_n", zero_ok=True)
        check_positive_int(self.sketch_width, "study.sketch_width")
        check_positive_int(self.num_probes, "study.num_probes")
        if self.output != "trace" and self.num_probes != 1:
            raise ValueError(f"study.num_probes must be 1 with study.output={self.output!r} "
                             f"(a fixed output direction), got {self.num_probes}")  # fmt: skip
        self.check_at_least(self.num_sketches, "study.num_sketches", 3, "jackknife over sketches")

    def exact_n(self) -> int | None:
        """The largest n in ns the exact kernel is computed at (None: sketch only)."""
        fits = [n for n in self.ns if n <= self.exact_max_n]
        return max(fits) if fits else None


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


def _exact_rows(study: Config, apply_fn, params, x, ns: np.ndarray) -> dict[int, dict]:
    """Exact r_eff, r̂_∞ and the moment prediction at each n ≤ exact_n (one kernel)."""
    n_exact = study.exact_n()
    if n_exact is None:
        return {}
    start = time.perf_counter()
    k = ntk(study, apply_fn, params, x[:n_exact])
    seconds = time.perf_counter() - start
    full = kernel_moments(k)
    rows = {}
    for n in (int(n) for n in ns if n <= n_exact):
        m = kernel_moments(k[:n, :n])
        rows[n] = dict(r_eff_exact=float(kernel_effective_rank(k[:n, :n])),
                       r_inf_exact=float(m.r_inf), r_inf_exact_se=float(m.r_inf_stderr),
                       r_pred=float(full.predicted_effective_rank(n)),
                       exact_time_s=seconds)  # fmt: skip
    return rows


def _one_seed(study: Config, ctx: RunContext, spec: ModelSpec, dataset: str, seed: int,
              ns: np.ndarray) -> list[dict]:  # fmt: skip
    tag = f"{spec.model}_w{spec.width}_{dataset}"
    apply_fn, params, x, ident = model_and_inputs(
        study, spec.model, spec.width, dataset, int(ns[-1]),
        ctx.key("init", seed), ctx.key("data", seed),
    )  # fmt: skip
    ctx.record_dataset(**ident, seed=seed, config=tag)
    start = time.perf_counter()
    z, d = sketch_gradients(apply_fn, params, x, ctx.key("sketch", seed),
                            sketch_width=study.sketch_width, num_probes=study.num_probes,
                            num_sketches=study.num_sketches, output=study.output,
                            block_size=study.block_size)  # fmt: skip
    ests = effective_rank_by_prefix(z, d, [int(n) for n in ns])
    sketch_s = time.perf_counter() - start
    del z, d
    exact = _exact_rows(study, apply_fn, params, x, ns)
    nan = math.nan
    blank = dict(r_eff_exact=nan, r_inf_exact=nan, r_inf_exact_se=nan, r_pred=nan,
                 exact_time_s=nan)  # fmt: skip
    return [
        dict(model=spec.model, width=spec.width, dataset=dataset, seed=seed, n=int(n),
             params=ntk_models.num_params(params), output=study.output,
             r_eff=est.effective_rank, r_eff_se=est.effective_rank_stderr,
             r_inf=est.r_inf, r_inf_se=est.r_inf_stderr, sketch_time_s=sketch_s,
             **exact.get(int(n), blank))
        for n, est in zip(ns, ests, strict=True)
    ]  # fmt: skip


def run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
    study = cfg.study
    study.check_data_files(study.datasets)
    ns = np.array(sorted(set(study.ns)))
    summary: dict[str, float] = {}
    total = len(study.models) * len(study.datasets) * study.seeds
    with ctx.progress(total, "ntk_rank") as bar:
        for spec in study.models:
            for dataset in study.datasets:
                tag = f"{spec.model}_w{spec.width}_{dataset}"
                r_sxn, r_inf_s = [], []
                for seed in range(study.seeds):
                    rows = _one_seed(study, ctx, spec, dataset, seed, ns)
                    ctx.log_table(TABLE, rows)
                    r_sxn.append([r["r_eff"] for r in rows])
                    r_inf_s.append(rows[-1]["r_inf"])
                    bar.update(1, config=tag, r_eff=rows[-1]["r_eff"])
                fit = slope_fit(ns, np.array(r_sxn)) if len(ns) >= 2 else {}
                r_nmax = np.array(r_sxn)[:, -1]
                fit_row = dict(model=spec.model, width=spec.width, dataset=dataset,
                               output=study.output, seeds=study.seeds, n_min=int(ns[0]),
                               n_max=int(ns[-1]), r_eff_nmax=float(r_nmax.mean()),
                               r_eff_nmax_sd=float(r_nmax.std()),
                               r_inf=float(np.mean(r_inf_s)), **fit, **PAPER)  # fmt: skip
                ctx.log_table(FITS_TABLE, [fit_row])
                for key in ("r_eff_nmax", "r_inf", "slope", "slope_ci_low", "slope_ci_high"):
                    if key in fit_row:
                        summary[f"{tag}/{key}"] = float(fit_row[key])
    return summary


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """r_eff vs n (sketch, mean ± sd over seeds), exact points and the moment prediction."""
    df = read_tables(run_dirs, TABLE)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    groups = df.groupby(["model", "width", "dataset"])
    for i, ((model, width, dataset), g) in enumerate(groups):
        agg = g.groupby("n")[["r_eff", "r_eff_exact", "r_pred"]].agg(["mean", "std"]).fillna(0.0)
        color = f"C{i % 10}"
        ax.errorbar(agg.index, agg[("r_eff", "mean")], yerr=agg[("r_eff", "std")], marker="o",
                    color=color, capsize=3, label=f"{model}-{width} {dataset}")  # fmt: skip
        exact = g.dropna(subset=["r_eff_exact"]).groupby("n")[["r_eff_exact", "r_pred"]].mean()
        ax.plot(exact.index, exact["r_eff_exact"], "x", color=color, ms=9)
        ax.plot(exact.index, exact["r_pred"], "--", color=color, alpha=0.7)
    ax.axhspan(PAPER["paper_r_eff_low"], PAPER["paper_r_eff_high"], color="gray", alpha=0.2,
               label="paper (CIFAR-10)")  # fmt: skip
    ax.set(xscale="log", xlabel="n (samples)", ylabel="r_eff = tr(K)² / ‖K‖_F²")
    ax.set_title("NTK effective rank at init (o sketch, x exact, dashed: moments)")
    ax.legend(fontsize=7)
    return [save(fig, out_dir, "ntk_rank_vs_n", dpi=120, bbox_inches=None)]
