"""Study: predicted vs measured advantage of one SpecGD step over one GD step.

Instance i of family f (feature, target, shape) is drawn from ctx.key("data", f, i); from the
GD iterate W after each t ∈ `gd_steps` steps from zero, one GD and one SpecGD step are taken
(`_specgd.one_step`). Table one_step: per instance nr(∇L), st(A), the predicted ratio nr/st
and the measured ratio (L − L_SD)/(L − L_GD), and the exact facts nr ≥ 2·st ⇒ L(W_SD) ≤ L(W_GD)
and nr/(2 st) ≤ measured ≤ 2 nr/st.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import rundir
from experiments.config import RunConfig, check_choice, check_positive_int
from experiments.runtime.context import RunContext
from experiments.studies._specgd import one_step, plots, problems, steps


@dataclasses.dataclass
class Family:
    """One instance family: random-feature problems of one feature map, target and shape."""

    name: str
    feature: str = "relu"  # relu | relu_square | swiglu | tanh | linear
    target: str = "realizable"  # realizable | teacher_student
    width: int = 100  # k
    input_dim: int = 50  # d
    num_samples: int = 400  # n


def _default_families() -> list[Family]:
    return [
        Family("relu"),
        Family("relu_teacher_student", target="teacher_student"),
        Family("relu_square", feature="relu_square"),
        Family("swiglu", feature="swiglu"),
        Family("tanh", feature="tanh"),
        Family("linear", feature="linear"),
    ]


@dataclasses.dataclass
class Config:
    name: str = "one_step_check"
    num_instances: int = 30  # problem seeds per family
    gd_steps: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 3, 10, 30, 100, 300])
    families: list[Family] = dataclasses.field(default_factory=_default_families)

    def __post_init__(self) -> None:
        check_positive_int(self.num_instances, "study.num_instances")
        if not self.gd_steps or min(self.gd_steps) < 0:
            raise ValueError("study.gd_steps (W = GD iterate after t steps from zero) must be a "
                             f"non-empty list of ints ≥ 0, got {self.gd_steps!r}")  # fmt: skip
        names = [f.name for f in self.families]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"study.families must be non-empty with unique names, got {names!r}")
        for i, f in enumerate(self.families):
            check_choice(f.feature, f"study.families.{i}.feature", problems.FEATURES)
            check_choice(f.target, f"study.families.{i}.target", problems.TARGETS)
            for key in ("width", "input_dim", "num_samples"):
                check_positive_int(getattr(f, key), f"study.families.{i}.{key}")


def spearman(x, y) -> float:
    """Spearman rank correlation (no ties expected in continuous data)."""
    rx = np.argsort(np.argsort(np.asarray(x)))
    ry = np.argsort(np.argsort(np.asarray(y)))
    return float(np.corrcoef(rx, ry)[0, 1])


def family_results(keys: jax.Array, family: Family, gd_steps) -> dict[int, one_step.OneStep]:
    """One-step comparisons for the instance drawn from each of `keys`, at each GD iterate."""
    problem_kwargs = dataclasses.asdict(family)  # every field but `name` is a problem argument
    del problem_kwargs["name"]
    batch = jax.vmap(partial(problems.random_feature_problem, **problem_kwargs))(keys)
    L = jax.vmap(steps.smoothness)(batch.A_kxn)
    W0 = jnp.zeros((len(keys), family.width, family.width))
    iterate = jax.vmap(steps.gd_iterate, in_axes=(0, 0, 0, None))
    compare = jax.vmap(one_step.one_step)
    return {t: compare(iterate(W0, batch, L, t), batch) for t in gd_steps}


def run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
    with jax.enable_x64(True):
        return _run(cfg.study, ctx)


def _run(study: Config, ctx: RunContext) -> dict[str, float]:
    rows = []
    with ctx.progress(len(study.families), "instance families") as bar:
        for index, family in enumerate(study.families):
            keys = jnp.stack([ctx.key("data", index, i) for i in range(study.num_instances)])
            for t, res in family_results(keys, family, study.gd_steps).items():
                holds = np.asarray(one_step.implication_holds(res))
                bracket = np.asarray(one_step.within_bracket(res))
                values = {name: np.asarray(v) for name, v in res._asdict().items()}
                for i in range(study.num_instances):
                    rows.append({"family": family.name, "instance": i, "gd_step": t,
                                 **{name: float(v[i]) for name, v in values.items()},
                                 "implication_holds": bool(holds[i]),
                                 "within_bracket": bool(bracket[i])})  # fmt: skip
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
    return [plots.one_step_figure(rundir.load_run(d), Path(out_dir)) for d in run_dirs]
