"""Study: predicted vs measured advantage of one SpecGD step over one GD step.

For each instance family (feature, target, shape) and each of `num_instances` problem
seeds, W is the GD iterate after t ∈ `gd_steps` steps from zero; from it one GD step and
one SpecGD step are taken (`specgd.one_step`). Per instance the table one_step records
nr(∇L), st(A), the predicted ratio nr/st of guaranteed decreases and the measured ratio
(L − L_SD)/(L − L_GD). Exact facts checked on every instance: nr ≥ 2·st ⇒ L(W_SD) ≤ L(W_GD),
and nr/(2 st) ≤ measured ≤ 2 nr/st.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig

from experiments.studies._specgd import models, one_step, plots, steps


def _check(study: DictConfig) -> None:
    if not isinstance(study.num_instances, int) or study.num_instances < 1:
        raise ValueError(f"study.num_instances must be a positive int, got {study.num_instances!r}")
    gd_steps = list(study.gd_steps)
    if not gd_steps or any(not isinstance(t, int) or t < 0 for t in gd_steps):
        raise ValueError(f"study.gd_steps must be a non-empty list of ints ≥ 0, got {gd_steps!r}")
    names = [f.name for f in study.families]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"study.families must be non-empty with unique names, got {names!r}")
    for f in study.families:
        models.check_feature(f.feature)
        if f.target not in models.TARGETS:
            raise ValueError(
                f"family {f.name!r}: target must be in {models.TARGETS}, got {f.target!r}"
            )


def spearman(x, y) -> float:
    """Spearman rank correlation (no ties expected in continuous data)."""
    rx = np.argsort(np.argsort(np.asarray(x)))
    ry = np.argsort(np.argsort(np.asarray(y)))
    return float(np.corrcoef(rx, ry)[0, 1])


def family_results(key, family, num_instances: int, gd_steps) -> dict[int, one_step.OneStep]:
    """One-step comparisons for every instance of `family` at each GD iterate index."""
    make = partial(
        models.random_feature_problem,
        width=family.width,
        input_dim=family.input_dim,
        num_samples=family.num_samples,
        feature=family.feature,
        target=family.target,
    )
    problems = jax.vmap(make)(jax.random.split(key, num_instances))
    L = jax.vmap(steps.smoothness)(problems.A_kxn)
    W0 = jnp.zeros((num_instances, family.width, family.width))
    iterate = jax.vmap(steps.gd_iterate, in_axes=(0, 0, 0, None))
    compare = jax.vmap(one_step.one_step)
    return {t: compare(iterate(W0, problems, L, t), problems) for t in gd_steps}


def run(cfg: DictConfig, ctx) -> dict[str, float]:
    with jax.enable_x64(True):
        return _run(cfg.study, ctx)


def _run(study: DictConfig, ctx) -> dict[str, float]:
    _check(study)
    rows = []
    with ctx.progress(len(study.families), "instance families") as bar:
        for index, family in enumerate(study.families):
            key = jax.random.fold_in(ctx.key("data"), index)
            for t, res in family_results(
                key, family, study.num_instances, list(study.gd_steps)
            ).items():
                holds = np.asarray(one_step.implication_holds(res))
                bracket = np.asarray(one_step.within_bracket(res))
                for i in range(study.num_instances):
                    rows.append(
                        {
                            "family": family.name,
                            "instance": i,
                            "gd_step": t,
                            **{
                                name: float(np.asarray(getattr(res, name))[i])
                                for name in res._fields
                            },
                            "implication_holds": bool(holds[i]),
                            "within_bracket": bool(bracket[i]),
                        }
                    )
            bar.update(1, family=family.name)
    ctx.log_table("one_step", rows)

    pred = np.array([r["predicted_ratio"] for r in rows])
    meas = np.array([r["measured_ratio"] for r in rows])
    premise = np.array([r["nuclear_rank"] >= 2 * r["stable_rank"] for r in rows])
    sd_wins = np.array([r["loss_sd"] <= r["loss_gd"] for r in rows])
    summary = {
        "num_instances": float(len(rows)),
        "fraction_premise_nr_ge_2st": float(premise.mean()),
        "fraction_implication_holds": float(np.mean([r["implication_holds"] for r in rows])),
        "fraction_within_bracket": float(np.mean([r["within_bracket"] for r in rows])),
        "fraction_specgd_wins": float(sd_wins.mean()),
        "fraction_specgd_wins_given_premise": float(sd_wins[premise].mean())
        if premise.any()
        else float("nan"),
        "sign_agreement_pred_gt1_vs_measured_gt1": float(np.mean((pred > 1) == (meas > 1))),
        "spearman_predicted_vs_measured": spearman(pred, meas),
        "median_measured_over_predicted": float(np.median(meas / pred)),
    }
    for family in study.families:
        part = [r for r in rows if r["family"] == family.name]
        summary[f"{family.name}/st_A_mean"] = float(np.mean([r["stable_rank"] for r in part]))
        summary[f"{family.name}/fraction_specgd_wins"] = float(
            np.mean([r["loss_sd"] <= r["loss_gd"] for r in part])
        )
    return summary


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Measured against predicted ratio (log–log) with the ×½/×2 bracket and the nr = 2 st line."""
    return [plots.one_step_figure(Path(d), Path(out_dir)) for d in run_dirs]
