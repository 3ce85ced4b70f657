"""Study: nr(∇L) along GD against the width k (Davis & Drusvyatskiy 2025, random-feature sweep).

Per target (realizable Y = W♯A, teacher–student Y = W̄σ(V̄X)), width k and problem seed s
(ctx.key("data", s)): A = σ(V X) ∈ ℝ^{k×2k} with input dimension k/2, GD (1/L_F) from zero
for `num_steps`, nr(∇L(W_t)) recorded where `record_mask` says. The paper: nr(∇L(W₀)) is
O(1) in k, nr(∇L(W₁)) grows about linearly in k. Tables: nr_curves (every record), fits
(nr ≈ slope·k + intercept at steps 0 and 1, with R²), windows (per width, the steps t ≥ 1
where the seed-mean nr stays ≥ window_constant·k).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import rundir
from experiments.config import RunConfig, check_choice, check_positive_int
from experiments.runtime.context import RunContext
from experiments.studies._specgd import plots, problems, steps


@dataclasses.dataclass
class Config:
    name: str = "spiked_rf_sweep"
    feature: str = "relu"  # relu | relu_square | swiglu | tanh | linear
    widths: list[int] = dataclasses.field(default_factory=lambda: [64, 128, 256, 512])  # k; n = 2k
    seeds: int = 3  # problem seeds 0..seeds-1, each folded into the "data" stream
    targets: list[str] = dataclasses.field(default_factory=lambda: list(problems.TARGETS))
    num_steps: int = 1024
    dense_steps: int = 32  # nr at every step t ≤ dense_steps ...
    nr_every: int = 8  # ... then every nr_every-th step (an SVD per record)
    window_constant: float = 0.3  # window: steps t ≥ 1 where the seed-mean nr ≥ window_constant·k

    def __post_init__(self) -> None:
        check_choice(self.feature, "study.feature", problems.FEATURES)
        if len(set(self.widths)) < 2 or min(self.widths) < 4:
            raise ValueError("study.widths must list ≥ 2 distinct widths ≥ 4 (for the fit), "
                             f"got {self.widths!r}")  # fmt: skip
        if not self.targets:
            raise ValueError(f"study.targets must list at least one of {problems.TARGETS}, got []")
        for target in self.targets:
            check_choice(target, "study.targets entries", problems.TARGETS)
        for key in ("seeds", "num_steps", "dense_steps", "nr_every"):
            check_positive_int(getattr(self, key), f"study.{key}")
        if not self.window_constant > 0:
            raise ValueError(f"study.window_constant must be > 0, got {self.window_constant!r}")


def linear_fit(x, y) -> tuple[float, float, float]:
    """Least-squares line y ≈ slope·x + intercept and its R² = 1 − SS_res/SS_tot."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError(f"linear_fit needs ≥ 2 distinct x values, got {x.tolist()}")
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - np.sum(residual**2) / total if total > 0 else 1.0
    return float(slope), float(intercept), float(r2)


def window_above(step, value, threshold: float, first_step: int = 1) -> tuple[int, int]:
    """(first, last) step of the first run of consecutive records ≥ `threshold` among the
    records at steps ≥ `first_step` (in step order); (-1, -1) if there is none."""
    order = np.argsort(step)
    step, value = np.asarray(step)[order], np.asarray(value, float)[order]
    above = (value >= threshold) & (step >= first_step)
    if not above.any():
        return -1, -1
    start = int(np.argmax(above))
    run_length = int(np.argmin(np.append(above[start:], False)))  # up to the first record below
    return int(step[start]), int(step[start + run_length - 1])


def record_mask(num_steps: int, dense_steps: int, nr_every: int) -> np.ndarray:
    """Which iterates t = 0..T get nr(∇L): t ≤ dense_steps, every nr_every-th, and T."""
    t = np.arange(num_steps + 1)
    return (t <= dense_steps) | (t % nr_every == 0) | (t == num_steps)


def run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
    with jax.enable_x64(True):
        return _run(cfg.study, ctx)


def _run(study: Config, ctx: RunContext) -> dict[str, float]:
    T = study.num_steps
    mask = jnp.asarray(record_mask(T, study.dense_steps, study.nr_every))
    recorded = np.nonzero(np.asarray(mask))[0].tolist()
    rows = []
    runs = [(t, k, s) for t in study.targets for k in study.widths for s in range(study.seeds)]
    with ctx.progress(len(runs), "GD runs") as bar:
        for target, k, seed in runs:
            problem = problems.random_feature_problem(
                ctx.key("data", seed),
                width=k,
                input_dim=max(1, k // 2),
                num_samples=2 * k,
                feature=study.feature,
                target=target,
            )
            L = steps.smoothness(problem.A_kxn)
            st = float(L.operator / L.frobenius)
            traj = steps.trajectory(
                jnp.zeros((k, k)), problem, L, method="gd", num_steps=T, record=mask
            )
            loss, nr = np.asarray(traj.loss), np.asarray(traj.nuclear_rank)
            labels = {"target": target, "width": k, "seed": seed}
            for t in recorded:
                rows.append({**labels, "step": t, "nr": nr[t], "loss": loss[t], "st_A": st})
            bar.update(1, target=target, k=k, seed=seed, nr1=float(nr[1]))
    ctx.log_table("nr_curves", rows)

    summary, fit_rows, window_rows = {}, [], []
    for target in study.targets:
        part = [r for r in rows if r["target"] == target]
        for step in (0, 1):
            at = [r for r in part if r["step"] == step]
            slope, intercept, r2 = linear_fit([r["width"] for r in at], [r["nr"] for r in at])
            fit_rows.append(dict(target=target, step=step, slope=slope, intercept=intercept, r2=r2))
            summary[f"{target}/nr_step{step}_slope"] = slope
            summary[f"{target}/nr_step{step}_r2"] = r2
        for k in study.widths:
            rows_k = [r for r in part if r["width"] == k]
            nr_k = [float(np.mean([r["nr"] for r in rows_k if r["step"] == t])) for t in recorded]
            first, last = window_above(recorded, nr_k, study.window_constant * k)
            window_rows.append(
                {
                    "target": target,
                    "width": k,
                    "threshold": study.window_constant * k,
                    "first_step": first,
                    "last_step": last,
                    "nr_step0": nr_k[0],
                    "nr_step1": nr_k[1],
                    "nr_max": max(nr_k),
                    "st_A": float(np.mean([r["st_A"] for r in rows_k])),
                }
            )
            summary[f"{target}/k{k}/nr_step0"] = nr_k[0]
            summary[f"{target}/k{k}/nr_step1"] = nr_k[1]
            summary[f"{target}/k{k}/window_last_step"] = float(last)
            summary[f"{target}/k{k}/st_A"] = window_rows[-1]["st_A"]
    ctx.log_table("fits", fit_rows)
    ctx.log_table("windows", window_rows)
    return summary


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """nr over GD steps per width, and nr at steps 0 and 1 against k with the fitted line."""
    return [plots.sweep_figure(rundir.load_run(d), Path(out_dir)) for d in run_dirs]
