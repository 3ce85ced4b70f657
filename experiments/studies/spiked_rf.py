"""Study: GD vs SpecGD on spiked random-feature least squares (Davis & Drusvyatskiy 2025, Fig. 1–2).

W ∈ ℝ^{k×k} from zero, A = σ(V X) ∈ ℝ^{k×n}, Y = W♯ A; `num_steps` exact (float64) steps
of GD (1/L_F) and of SpecGD (‖∇L‖_*/L_op), plus SpecGD restarted from the GD iterates
every `restart_every` steps and from the GD iterate of largest nr(∇L).
Logs per step: each method's loss and nr(∇L), and st(A); restarts go to tables/restarts.
`feature: relu` shows the spike (st(A) ≈ 3 while nr climbs to tens: SpecGD wins);
`feature: swiglu` is the counter-example (larger st(A), GD wins).
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
    """Davis & Drusvyatskiy 2025; settings of the official damek/specgd random-feature script."""

    name: str = "spiked_rf"
    feature: str = "relu"  # relu | relu_square | swiglu | tanh | linear
    width: int = 100  # k: W ∈ ℝ^{k×k}, A ∈ ℝ^{k×n}
    input_dim: int = 50  # d: X ∈ ℝ^{d×n}, V ∈ ℝ^{k×d} scaled 1/√d
    num_samples: int = 400  # n
    num_steps: int = 1000
    restart_every: int | None = 100  # SpecGD restarts from GD iterates 100, 200, ... (None: none)
    restart_from_peak: bool = True  # and from the GD iterate of largest nr(∇L)
    loss_target: float = 1e-6  # summary: steps until loss ≤ loss_target · L(W₀)

    def __post_init__(self) -> None:
        check_choice(self.feature, "study.feature", problems.FEATURES)
        for key in ("width", "input_dim", "num_samples", "num_steps"):
            check_positive_int(getattr(self, key), f"study.{key}")
        if self.restart_every is not None:
            check_positive_int(self.restart_every, "study.restart_every")
        if not self.loss_target > 0:
            raise ValueError(f"study.loss_target must be > 0, got {self.loss_target!r}")


def restart_points(num_steps: int, restart_every: int | None, peak_step: int | None) -> list[int]:
    """GD iterates SpecGD restarts from: every `restart_every` steps in (0, T), and the nr peak."""
    points = [] if restart_every is None else list(range(restart_every, num_steps, restart_every))
    if peak_step is not None and 0 < peak_step < num_steps and peak_step not in points:
        points.append(peak_step)
    return sorted(points)


def run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
    with jax.enable_x64(True):
        return _run(cfg.study, ctx)


def _run(study: Config, ctx: RunContext) -> dict[str, float]:
    T = study.num_steps
    problem = problems.random_feature_problem(
        ctx.key("data"),
        width=study.width,
        input_dim=study.input_dim,
        num_samples=study.num_samples,
        feature=study.feature,
    )
    L = steps.smoothness(problem.A_kxn)
    st = float(L.operator / L.frobenius)
    W0 = jnp.zeros((study.width, study.width), jnp.float64)
    runs = {m: steps.trajectory(W0, problem, L, method=m, num_steps=T) for m in steps.METHODS}
    gd_nr = np.asarray(runs["gd"].nuclear_rank)
    peak = int(np.argmax(gd_nr[:T])) if study.restart_from_peak else None
    points = restart_points(T, study.restart_every, peak)

    restarts = {}
    with ctx.progress(len(points), "specgd restarts") as bar:
        for start in points:
            W_start = steps.gd_iterate(W0, problem, L, start)
            traj = steps.trajectory(W_start, problem, L, method="specgd", num_steps=T - start)
            restarts[start] = jax.device_get(traj)  # numpy arrays
            bar.update(1, start=start)

    loss = {m: np.asarray(r.loss) for m, r in runs.items()}
    nr = {m: np.asarray(r.nuclear_rank) for m, r in runs.items()}
    for t in range(T + 1):
        row = {"st_A": st}
        for m in steps.METHODS:
            row[f"{m}/loss"] = loss[m][t]
            row[f"{m}/nr"] = nr[m][t]
        ctx.log_metrics(t, row)
    rows = [
        {"start": start, "from_peak": start == peak, "step": start + i, "loss": value, "nr": rank}
        for start, r in restarts.items()
        for i, (value, rank) in enumerate(zip(r.loss, r.nuclear_rank, strict=True))
    ]
    ctx.log_table("restarts", rows)
    sigma_A = np.linalg.svd(np.asarray(problem.A_kxn), compute_uv=False)
    ctx.log_spectra(0, [{"matrix": "A", "index": i, "sigma": s} for i, s in enumerate(sigma_A)])

    target = study.loss_target * float(loss["gd"][0])
    summary = {
        "st_A": st,
        "nr_gd_step0": float(gd_nr[0]),
        "nr_gd_step1": float(gd_nr[1]),
        "nr_gd_max": float(np.nanmax(gd_nr)),
        "nr_gd_argmax": float(np.nanargmax(gd_nr)),
        "loss_initial": float(loss["gd"][0]),
        "loss_final_gd": float(loss["gd"][-1]),
        "loss_final_specgd": float(loss["specgd"][-1]),
        "final_loss_ratio_gd_over_specgd": float(loss["gd"][-1] / loss["specgd"][-1]),
        "steps_to_target_gd": float(steps.steps_to_reach(loss["gd"], target)),
        "steps_to_target_specgd": float(steps.steps_to_reach(loss["specgd"], target)),
        "steps_gd_nr_above_st": float(np.sum(gd_nr > st)),
    }
    if np.isfinite(problems.spike_limit(study.feature)):
        summary["st_A_limit"] = problems.spike_limit(study.feature)
    if peak is not None:
        peak_loss = restarts[peak].loss[-1] if peak in restarts else np.nan
        summary["loss_final_specgd_from_peak"] = float(peak_loss)
    for start in points:
        summary[f"loss_final_specgd_from_{start}"] = float(restarts[start].loss[-1])
    return summary


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Loss curves (log scale, GD, SpecGD, restarts) and nr(∇L) against the st(A) line."""
    return [plots.spiked_rf_figure(rundir.load_run(d), Path(out_dir)) for d in run_dirs]
