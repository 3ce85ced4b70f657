"""Study: GD vs SpecGD on spiked random-feature least squares (Davis & Drusvyatskiy 2025, Fig. 1–2).

W ∈ ℝ^{k×k} from zero, A = σ(V X) ∈ ℝ^{k×n}, Y = W♯ A; `num_steps` exact (float64) steps
of GD (1/L_F) and of SpecGD (‖∇L‖_*/L_op), plus SpecGD restarted from the GD iterates
every `restart_every` steps and from the GD iterate of largest nr(∇L).
Logs per step: each method's loss and nr(∇L), and st(A); restarts go to tables/restarts.
`feature: relu` shows the spike (st(A) ≈ 3 while nr climbs to tens: SpecGD wins);
`feature: swiglu` is the counter-example (larger st(A), GD wins).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig

from experiments.studies._specgd import models, plots, steps


def _check(study: DictConfig) -> None:
    models.check_feature(study.feature)
    for name in ("width", "input_dim", "num_samples", "num_steps"):
        value = study[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"study.{name} must be a positive int, got {value!r}")
    if study.restart_every is not None and (
        not isinstance(study.restart_every, int) or study.restart_every < 1
    ):
        raise ValueError(
            f"study.restart_every must be a positive int or null, got {study.restart_every!r}"
        )


def restart_points(num_steps: int, restart_every: int | None, peak_step: int | None) -> list[int]:
    """GD iterates SpecGD restarts from: every `restart_every` steps in (0, T), and the nr peak."""
    points = [] if restart_every is None else list(range(restart_every, num_steps, restart_every))
    if peak_step is not None and 0 < peak_step < num_steps and peak_step not in points:
        points.append(peak_step)
    return sorted(points)


def run(cfg: DictConfig, ctx) -> dict[str, float]:
    with jax.enable_x64(True):
        return _run(cfg.study, ctx)


def _run(study: DictConfig, ctx) -> dict[str, float]:
    _check(study)
    T = study.num_steps
    problem = models.random_feature_problem(
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
            restarts[start] = steps.trajectory(
                W_start, problem, L, method="specgd", num_steps=T - start
            )
            bar.update(1, start=start)

    loss = {m: np.asarray(r.loss) for m, r in runs.items()}
    nr = {m: np.asarray(r.nuclear_rank) for m, r in runs.items()}
    for t in range(T + 1):
        row = {"st_A": st}
        for m in steps.METHODS:
            row[f"{m}/loss"] = loss[m][t]
            row[f"{m}/nr"] = nr[m][t]
        ctx.log_metrics(t, row)
    rows = []
    for start, r in restarts.items():
        for i, (value, rank) in enumerate(
            zip(np.asarray(r.loss), np.asarray(r.nuclear_rank), strict=True)
        ):
            rows.append(
                {
                    "start": start,
                    "from_peak": start == peak,
                    "step": start + i,
                    "loss": value,
                    "nr": rank,
                }
            )
    ctx.log_table("restarts", rows)
    sigma_A = np.linalg.svd(np.asarray(problem.A_kxn), compute_uv=False)
    ctx.log_spectra(0, [{"matrix": "A", "index": i, "sigma": s} for i, s in enumerate(sigma_A)])

    target = float(study.loss_target) * float(loss["gd"][0])
    summary = {
        "st_A": st,
        "nr_gd_step0": float(gd_nr[0]),
        "nr_gd_step1": float(gd_nr[1]) if T >= 1 else float("nan"),
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
    if np.isfinite(models.spike_limit(study.feature)):
        summary["st_A_limit"] = models.spike_limit(study.feature)
    if peak is not None:
        summary["loss_final_specgd_from_peak"] = (
            float(restarts[peak].loss[-1]) if peak in restarts else float("nan")
        )
    for start in points:
        summary[f"loss_final_specgd_from_{start}"] = float(restarts[start].loss[-1])
    return summary


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Loss curves (log scale, GD, SpecGD, restarts) and nr(∇L) against the st(A) line."""
    return [plots.spiked_rf_figure(Path(d), Path(out_dir)) for d in run_dirs]
