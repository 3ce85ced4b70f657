"""Study: sketched NTK effective rank (probes + CountSketch) against the exact value.

For one model/data/n, the exact r_eff (`exact_ntk`) is the reference. For every sketch width s
and probe count R, `repeats` estimates (`sketched_effective_rank`, M = `num_sketches` sketches
each) give relative error, bias over seeds (mean − exact, with its standard error) and the mean
jackknife standard error. Wall times include each call's compile. Memory is what each method
keeps: the sketch M·n·R·s floats; the exact Jacobian features n·R_out·P floats (R_out = C for
"trace") plus K (n²). Optionally one `large` configuration, too big for the exact computation
here, is estimated by the sketch alone, with the exact cost stated.
Tables: tables/ntk_sketch.parquet (per estimate), tables/ntk_sketch_large.parquet.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from experiments.config import RunConfig, check_choice, check_positive_int
from experiments.runtime.context import RunContext
from experiments.studies import _ntk_models as ntk_models
from experiments.studies._figures import plt, save
from experiments.studies._ntk_config import OUTPUTS, NTKConfig, model_and_inputs, ntk, read_tables
from specjax import kernel_effective_rank
from specjax.ntk import sketched_effective_rank

TABLE = "ntk_sketch"
LARGE_TABLE = "ntk_sketch_large"
MB = 2**20


@dataclasses.dataclass
class LargeConfig:
    """One sketch-only configuration, too big for the exact method here (~73 GiB of features),
    with the study's depth, norm, block_size and cifar. `enabled: false` skips it (a flag, not
    `large: null`: OmegaConf cannot override into a None)."""

    enabled: bool = True
    model: str = "resnet"
    width: int = 32
    dataset: str = "digits"
    n: int = 1797
    output: str = "trace"  # trace | logit (logit: num_probes must be 1)
    sketch_width: int = 2048
    num_probes: int = 2
    num_sketches: int = 4


@dataclasses.dataclass
class Config(NTKConfig):
    """Sketched vs exact NTK effective rank of one model on one set of n inputs."""

    name: str = "ntk_sketch"
    output: str = "trace"  # trace: random output probes matter; logit: probe count fixed to 1
    block_size: int = 100
    model: str = "resnet"  # mlp (width = hidden units) | resnet (+ depth) | resnet20 | resnet56
    width: int = 16
    dataset: str = "digits"  # gaussian | digits | cifar10 (downloaded once) | cifar10_shaped
    n: int = 300
    sketch_widths: list[int] = dataclasses.field(default_factory=lambda: [128, 1024, 8192])
    num_probes: list[int] = dataclasses.field(default_factory=lambda: [1, 4])
    num_sketches: int = 4  # M ≥ 2; M ≥ 3 gives a jackknife standard error
    # independent estimates per (s, R), key ctx.key("sketch", s, R, repeat): bias over seeds
    repeats: int = 3
    large: LargeConfig = dataclasses.field(default_factory=LargeConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_model(self.model, self.width)
        self.check_data(self.dataset, self.n, "study.dataset", "study.n")
        for key in ("sketch_widths", "num_probes"):
            self.check_nonempty(getattr(self, key), f"study.{key}", "positive ints")
            for i, value in enumerate(getattr(self, key)):
                check_positive_int(value, f"study.{key}[{i}]")
        check_positive_int(self.repeats, "study.repeats")
        large = self.large
        self.check_model(large.model, large.width, "study.large.")
        self.check_data(large.dataset, large.n, "study.large.dataset", "study.large.n")
        check_choice(large.output, "study.large.output", OUTPUTS)
        for key in ("sketch_width", "num_probes"):
            check_positive_int(getattr(large, key), f"study.large.{key}")
        if large.output != "trace" and large.num_probes != 1:
            raise ValueError(
                f"study.large.num_probes must be 1 with study.large.output={large.output!r} "
                f"(a fixed probe), got {large.num_probes}"
            )
        why = "independent pairs of sketches"
        self.check_at_least(self.num_sketches, "study.num_sketches", 2, why)
        self.check_at_least(large.num_sketches, "study.large.num_sketches", 2, why)


def _sketch(study: Config, apply_fn, params, x, key, s: int, r: int, m: int, output: str):
    start = time.perf_counter()
    est = sketched_effective_rank(apply_fn, params, x, key, sketch_width=s, num_probes=r,
                                  num_sketches=m, output=output,
                                  block_size=study.block_size)  # fmt: skip
    return est, time.perf_counter() - start


def run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
    study = cfg.study
    study.check_data_files([study.dataset, *([study.large.dataset] if study.large.enabled else [])])
    apply_fn, params, x, ident = model_and_inputs(
        study, study.model, study.width, study.dataset, study.n, ctx.key("init"), ctx.key("data")
    )
    ctx.record_dataset(**ident)
    p = ntk_models.num_params(params)
    c = 10 if study.output == "trace" else 1
    start = time.perf_counter()
    exact = float(kernel_effective_rank(ntk(study, apply_fn, params, x)))
    exact_s = time.perf_counter() - start
    exact_mb = (study.n * c * p + study.n**2) * 4 / MB
    summary = {"exact_r_eff": exact, "exact_time_s": exact_s, "exact_memory_mb": exact_mb}
    grid = [(s, r) for s in study.sketch_widths for r in study.num_probes]
    if study.output != "trace":
        grid = [(s, 1) for s in sorted({s for s, _ in grid})]
    with ctx.progress(len(grid) * study.repeats, "ntk_sketch") as bar:
        for s, r in grid:
            rows = []
            for rep in range(study.repeats):
                est, secs = _sketch(study, apply_fn, params, x, ctx.key("sketch", s, r, rep), s, r,
                                    study.num_sketches, study.output)  # fmt: skip
                rows.append(dict(sketch_width=s, num_probes=r, repeat=rep, n=study.n,
                                 params=p, r_hat=est.effective_rank,
                                 stderr=est.effective_rank_stderr, r_exact=exact,
                                 rel_err=abs(est.effective_rank - exact) / exact, time_s=secs,
                                 exact_time_s=exact_s,
                                 memory_mb=study.num_sketches * study.n * r * s * 4 / MB,
                                 exact_memory_mb=exact_mb))  # fmt: skip
                bar.update(1, s=s, r=r, rel_err=rows[-1]["rel_err"])
            ctx.log_table(TABLE, rows)
            r_hat = np.array([row["r_hat"] for row in rows])
            tag = f"s{s}_r{r}"
            summary[f"{tag}/rel_err"] = float(np.mean([row["rel_err"] for row in rows]))
            summary[f"{tag}/bias"] = float(r_hat.mean() - exact)
            if len(r_hat) > 1:
                summary[f"{tag}/bias_se"] = float(r_hat.std(ddof=1) / np.sqrt(len(r_hat)))
    if study.large.enabled:
        summary.update(_large(study, ctx))
    return summary


def _large(study: Config, ctx: RunContext) -> dict[str, float]:
    """Sketch-only estimate for a configuration whose exact NTK does not fit this machine."""
    large = study.large
    apply_fn, params, x, ident = model_and_inputs(
        study, large.model, large.width, large.dataset, large.n,
        ctx.key("large_init"), ctx.key("large_data"),
    )  # fmt: skip
    ctx.record_dataset(**ident, config="large")
    p = ntk_models.num_params(params)
    c = 10 if large.output == "trace" else 1
    est, secs = _sketch(study, apply_fn, params, x, ctx.key("large_sketch"), large.sketch_width,
                        large.num_probes, large.num_sketches, large.output)  # fmt: skip
    memory_mb = large.num_sketches * large.n * large.num_probes * large.sketch_width * 4 / MB
    row = dict(model=large.model, width=large.width, n=large.n, params=p,
               output=large.output, r_hat=est.effective_rank, stderr=est.effective_rank_stderr,
               r_inf_hat=est.r_inf, r_inf_stderr=est.r_inf_stderr, time_s=secs,
               memory_mb=memory_mb, exact_features_gb=large.n * c * p * 4 / 2**30,
               exact_gram_tflop=2 * large.n**2 * c * p / 1e12)  # fmt: skip
    ctx.log_table(LARGE_TABLE, [row])
    return {f"large/{k}": float(v) for k, v in row.items() if isinstance(v, int | float)}


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Relative error of the sketched r_eff vs sketch width, one line per probe count."""
    df = read_tables(run_dirs, TABLE)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (r, g) in enumerate(df.groupby("num_probes")):
        agg = g.groupby("sketch_width").agg(
            err=("rel_err", "mean"), se=("stderr", "mean"), exact=("r_exact", "first"),
            bias=("r_hat", "mean"))  # fmt: skip
        ax0.loglog(agg.index, agg["err"], "o-", color=f"C{i}", label=f"R={r}: |r̂−r|/r")
        ax0.loglog(agg.index, agg["se"] / agg["exact"], ":", color=f"C{i}", label=f"R={r}: SE/r")
        ax1.semilogx(agg.index, (agg["bias"] - agg["exact"]) / agg["exact"], "o-", color=f"C{i}",
                     label=f"R={r}")  # fmt: skip
    s = np.sort(df["sketch_width"].unique())
    ax0.loglog(s, df["rel_err"].max() * np.sqrt(s[0] / s), "k:", label="∝ s^(-1/2)")
    ax0.axhline(0.05, color="gray", lw=0.8)
    ax0.set(xlabel="sketch width s", ylabel="relative error")
    ax0.legend(fontsize=7)
    ax1.axhline(0, color="gray", lw=0.8)
    ax1.set(xlabel="sketch width s", ylabel="relative bias (mean over repeats)")
    ax1.legend(fontsize=7)
    fig.suptitle("Sketched vs exact NTK effective rank")
    return [save(fig, out_dir, "ntk_sketch_error", dpi=120, bbox_inches=None)]
