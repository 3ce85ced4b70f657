"""Study: sketched NTK effective rank (probes + CountSketch) against the exact value.

For one model/data/n, the exact r_eff (`exact_ntk`) is the reference. For every sketch
width s and probe count R, `repeats` independent estimates (`sketched_effective_rank`,
M = `num_sketches` sketches each) give relative error, bias over seeds (mean − exact,
with its standard error) and the mean jackknife standard error. Wall times include each
call's compile. Memory is the analytic size of what each method keeps: the sketch
M·n·R·s floats; the exact method's Jacobian features n·R_out·P floats (R_out = C for
"trace") plus K (n²). Optionally one `large` configuration, too big for the exact
computation here, is estimated by the sketch alone, with the exact cost stated.
Tables: tables/ntk_sketch.parquet (per estimate), tables/ntk_sketch_large.parquet.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from experiments.studies import _ntk_models as ntk_models
from experiments.studies.ntk_rank import model_and_inputs, ntk
from specjax import kernel_effective_rank
from specjax.ntk import sketched_effective_rank

TABLE = "ntk_sketch"
LARGE_TABLE = "ntk_sketch_large"
MB = 2**20


def _check(study: DictConfig) -> None:
    ntk_models.make_model(study.model, study.width, depth=study.get("depth"), norm=study.norm)
    for name in ("sketch_widths", "num_probes"):
        if not study[name] or any(isinstance(v, bool) or int(v) != v or v < 1 for v in study[name]):
            raise ValueError(
                f"study.{name} must be a non-empty list of ints ≥ 1, got {study[name]}"
            )
    if study.num_sketches < 2 or study.repeats < 1:
        raise ValueError("study.num_sketches must be ≥ 2 and study.repeats ≥ 1")


def _sketch(study, apply_fn, params, x, key, s: int, r: int, m: int, output: str):
    start = time.perf_counter()
    est = sketched_effective_rank(apply_fn, params, x, key, sketch_width=s, num_probes=r,
                                  num_sketches=m, output=output,
                                  block_size=study.block_size)  # fmt: skip
    return est, time.perf_counter() - start


def run(cfg: DictConfig, ctx) -> dict[str, float]:
    study = cfg.study
    _check(study)
    spec = SimpleNamespace(model=study.model, width=study.width)
    apply_fn, params, x, ident = model_and_inputs(
        study, spec, study.dataset, study.n, ctx.key("init"), ctx.key("data")
    )
    ctx.record_dataset(**ident)
    p = ntk_models.num_params(params)
    c = 10 if study.output == "trace" else 1
    start = time.perf_counter()
    exact = float(kernel_effective_rank(ntk(study, apply_fn, params, x)))
    exact_s = time.perf_counter() - start
    exact_mb = (study.n * c * p + study.n**2) * 4 / MB
    summary = {"exact_r_eff": exact, "exact_time_s": exact_s, "exact_memory_mb": exact_mb}
    grid = [(int(s), int(r)) for s in study.sketch_widths for r in study.num_probes]
    if study.output != "trace":
        grid = [(s, 1) for s in sorted({s for s, _ in grid})]
    with ctx.progress(len(grid) * study.repeats, "ntk_sketch") as bar:
        for s, r in grid:
            rows = []
            for rep in range(study.repeats):
                key = jax.random.fold_in(jax.random.fold_in(ctx.key("sketch"), s * 131 + r), rep)
                est, secs = _sketch(study, apply_fn, params, x, key, s, r, study.num_sketches,
                                    study.output)  # fmt: skip
                rows.append(dict(sketch_width=s, num_probes=r, repeat=rep, n=int(study.n),
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
    if study.get("large"):
        summary.update(_large(study.large, study, ctx))
    return summary


def _large(large: DictConfig, study: DictConfig, ctx) -> dict[str, float]:
    """Sketch-only estimate for a configuration whose exact NTK does not fit this machine."""
    spec = SimpleNamespace(model=large.model, width=large.width)
    apply_fn, params, x, ident = model_and_inputs(
        study, spec, large.dataset, large.n, ctx.key("large_init"), ctx.key("large_data")
    )
    ctx.record_dataset(**ident, config="large")
    p = ntk_models.num_params(params)
    c = 10 if large.output == "trace" else 1
    est, secs = _sketch(study, apply_fn, params, x, ctx.key("large_sketch"), large.sketch_width,
                        large.num_probes, large.num_sketches, large.output)  # fmt: skip
    row = dict(model=large.model, width=int(large.width), n=int(large.n), params=p,
               output=large.output, r_hat=est.effective_rank, stderr=est.effective_rank_stderr,
               r_inf_hat=est.r_inf, r_inf_stderr=est.r_inf_stderr, time_s=secs,
               memory_mb=large.num_sketches * large.n * large.num_probes * large.sketch_width
               * 4 / MB,
               exact_features_gb=large.n * c * p * 4 / 2**30,
               exact_gram_tflop=2 * large.n**2 * c * p / 1e12)  # fmt: skip
    ctx.log_table(LARGE_TABLE, [row])
    return {f"large/{k}": float(v) for k, v in row.items() if isinstance(v, int | float)}


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Relative error of the sketched r_eff vs sketch width, one line per probe count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [Path(d) / "tables" / f"{TABLE}.parquet" for d in run_dirs]
    df = pd.concat([pd.read_parquet(t) for t in tables if t.exists()], ignore_index=True)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (r, g) in enumerate(df.groupby("num_probes")):
        agg = g.groupby("sketch_width").agg(
            err=("rel_err", "mean"), se=("stderr", "mean"), exact=("r_exact", "first"),
            bias=("r_hat", "mean"), t=("time_s", "median"))  # fmt: skip
        ax0.loglog(agg.index, agg["err"], "o-", color=f"C{i}", label=f"R={r}: |r̂−r|/r")
        ax0.loglog(agg.index, agg["se"] / agg["exact"], ":", color=f"C{i}", label=f"R={r}: SE/r")
        ax1.semilogx(agg.index, (agg["bias"] - agg["exact"]) / agg["exact"], "o-", color=f"C{i}",
                     label=f"R={r}")  # fmt: skip
    m = df["sketch_width"].unique()
    ax0.loglog(
        np.sort(m), df["rel_err"].max() * np.sqrt(m.min() / np.sort(m)), "k:", label="∝ s^(-1/2)"
    )
    ax0.axhline(0.05, color="gray", lw=0.8)
    ax0.set_xlabel("sketch width s")
    ax0.set_ylabel("relative error")
    ax0.legend(fontsize=7)
    ax1.axhline(0, color="gray", lw=0.8)
    ax1.set_xlabel("sketch width s")
    ax1.set_ylabel("relative bias (mean over repeats)")
    ax1.legend(fontsize=7)
    fig.suptitle("Sketched vs exact NTK effective rank")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ntk_sketch_error.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
