"""Study: 4-layer MLP on y = x₁x₂x₃ with SpecGD on the middle layers (Davis & Drusvyatskiy 2025).

Variant i (data ctx.key("data", i), init ctx.key("init", i)) trains the same initial network
twice, full batch, float64: `gd` (a GD step on every layer) and `specgd` (spectral steps on
`spectral_layers`), per-layer steps as in `_specgd.sparse_mlp`. Every `log_every` steps: the
loss, st(A_ℓ) of each hidden post-activation and nr(∇W_ℓ) of layers 1–3, per method; per
variant, method and layer, st(A_ℓ) at the first and last step and its range over training
(tables/trained_stable_ranks: variants that differ only in n give st(A_ℓ) against the batch
size during training). Separately, the SwiGLU network's st(A_ℓ) at initialisation for each n in
`swiglu_batch_sizes` (tables/swiglu_batch_sweep): with no mean spike it grows with the batch size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from experiments import rundir
from experiments.config import RunConfig, check_choice, check_positive_int
from experiments.runtime.context import RunContext
from experiments.runtime.trainer import NonFiniteLossError
from experiments.studies._specgd import plots, sparse_mlp, steps


@dataclasses.dataclass
class Variant:
    """One network trained by both methods; defaults: the official squared-ReLU settings."""

    name: str
    activation: str = "relu_square"  # relu_square | swiglu
    dim: int = 128  # d ≥ 3; hidden width 4d
    num_samples: int = 512
    num_steps: int = 400
    lr_gd: float = 0.081
    lr_specgd: float = 0.1

    def check(self, key: str) -> None:
        """ValueError naming `key`.<field> (e.g. study.variants.0.dim) for a bad value."""
        if not self.name or "/" in self.name:
            raise ValueError(f"{key}.name must be non-empty without '/', got {self.name!r}")
        check_choice(self.activation, f"{key}.activation", sparse_mlp.ACTIVATIONS)
        for field in ("dim", "num_samples", "num_steps"):
            check_positive_int(getattr(self, field), f"{key}.{field}")
        if self.dim < 3:
            raise ValueError(f"{key}.dim must be ≥ 3 for y = x₁x₂x₃, got {self.dim!r}")
        for field in ("lr_gd", "lr_specgd"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{key}.{field} must be > 0, got {getattr(self, field)!r}")


@dataclasses.dataclass
class Config:
    """Learning rates are the official damek/specgd ones (relu_square: 0.081 / 0.1; SwiGLU
    n=512: 0.01 / 0.025). The paper runs 2000 steps, its scripts 400, as here (two exact
    512×512 SVDs per SpecGD step).

    `lr_multipliers` tunes each method's step on its own: every variant and method trains at
    lr × m for each m (a non-finite loss ends that run as diverged, instead of the study);
    the run with the lowest loss at the last step is the one logged (tables/lr_grid).
    """

    name: str = "sparse_regression"
    spectral_layers: list[int] = dataclasses.field(default_factory=lambda: [2, 3])
    log_every: int = 5
    early_step: int = 50  # summary: loss at this step ("SpecGD drops the loss much faster early")
    variants: list[Variant] = dataclasses.field(default_factory=lambda: [Variant("relu_square")])
    # SwiGLU st(A_ℓ) at initialisation against the batch size n
    swiglu_batch_sizes: list[int] = dataclasses.field(
        default_factory=lambda: [128, 256, 512, 1024, 2048, 4096]
    )
    swiglu_sweep_dim: int = 128
    lr_multipliers: list[float] = dataclasses.field(default_factory=lambda: [1.0])

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"study.variants must list variants with unique names, got {names!r}")
        for i, variant in enumerate(self.variants):
            variant.check(f"study.variants.{i}")
        layers = self.spectral_layers
        if not set(layers) <= {1, 2, 3}:
            raise ValueError(f"study.spectral_layers must be a subset of [1, 2, 3], got {layers!r}")
        check_positive_int(self.log_every, "study.log_every")
        check_positive_int(self.early_step, "study.early_step", zero_ok=True)
        for n in self.swiglu_batch_sizes:
            check_positive_int(n, "study.swiglu_batch_sizes entries")
        if self.swiglu_sweep_dim < 3:
            raise ValueError(f"study.swiglu_sweep_dim must be ≥ 3, got {self.swiglu_sweep_dim!r}")
        grid = self.lr_multipliers
        if not grid or len(set(grid)) != len(grid) or not all(0 < m < np.inf for m in grid):
            raise ValueError(
                f"study.lr_multipliers must be distinct finite values > 0, got {list(grid)!r}"
            )


def run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
    with jax.enable_x64(True):
        return _run(cfg.study, ctx)


def _train(study, variant, method, lr, weights, X, y, bar) -> dict[int, dict]:
    """Full-batch training; diagnostics at every `study.log_every`-th step and the last.

    A non-finite loss raises, or, when the learning rate is tuned over a grid, ends the run
    early (its last record holds the non-finite loss)."""
    layers = tuple(study.spectral_layers) if method == "specgd" else ()
    records = {}
    for step in range(variant.num_steps + 1):
        if step % study.log_every == 0 or step == variant.num_steps:
            metrics = sparse_mlp.diagnostics(weights, X, y, activation=variant.activation)
            records[step] = {k: float(v) for k, v in metrics.items()}
            loss = records[step]["loss"]
            if not np.isfinite(loss):
                if len(study.lr_multipliers) == 1:
                    raise NonFiniteLossError(step, loss, f"{variant.name}/{method}/loss", None)
                bar.update(variant.num_steps - step)
                return records
        if step < variant.num_steps:
            weights, _ = sparse_mlp.train_step(
                weights, X, y, lr, activation=variant.activation, spectral_layers=layers
            )
            bar.update(1)
    return records


def stable_rank_rows(variant: Variant, method: str, records: dict[int, dict]) -> list[dict]:
    """One row per hidden layer: st(A_ℓ) at the first and last logged step, its min and max."""
    rows = []
    for layer in (1, 2, 3):
        st = [records[step][f"st_A{layer}"] for step in sorted(records)]
        rows.append(
            {
                "variant": variant.name,
                "activation": variant.activation,
                "num_samples": variant.num_samples,
                "num_steps": variant.num_steps,
                "method": method,
                "layer": layer,
                "st_initial": st[0],
                "st_final": st[-1],
                "st_min": float(np.min(st)),
                "st_max": float(np.max(st)),
            }
        )
    return rows


def best_learning_rate(runs: dict[float, dict[int, dict]], num_steps: int) -> float | None:
    """The lr whose run reached `num_steps` with the lowest finite loss (None: all diverged)."""
    finished = {
        lr: r[num_steps]["loss"]
        for lr, r in runs.items()
        if num_steps in r and np.isfinite(r[num_steps]["loss"])
    }
    return min(finished, key=finished.get) if finished else None


def _tune(study, variant, method, weights0, X, y, bar) -> tuple[float, dict, list[dict]]:
    """Train at every lr of the grid; the best lr, its records and one lr_grid row per lr."""
    base = variant.lr_specgd if method == "specgd" else variant.lr_gd
    runs = {
        base * m: _train(study, variant, method, base * m, weights0, X, y, bar)
        for m in study.lr_multipliers
    }
    best = best_learning_rate(runs, variant.num_steps)
    if best is None:
        last = max(runs[base * study.lr_multipliers[-1]].items())
        raise NonFiniteLossError(last[0], last[1]["loss"], f"{variant.name}/{method}/loss", None)
    rows = []
    for m in study.lr_multipliers:
        r = runs[base * m]
        finished = variant.num_steps in r and np.isfinite(r[variant.num_steps]["loss"])
        row = {"variant": variant.name, "num_samples": variant.num_samples, "method": method}
        row |= {"lr": base * m, "multiplier": m, "best": base * m == best}
        row["loss_final"] = r[variant.num_steps]["loss"] if finished else np.nan
        row["diverged_at"] = -1 if finished else max(r)  # the step of the non-finite loss
        rows.append(row)
    return best, runs[best], rows


def _run(study: Config, ctx: RunContext) -> dict[str, float]:
    summary: dict[str, float] = {}
    trained_rows: list[dict] = []
    grid_rows: list[dict] = []
    total = sum(2 * v.num_steps * len(study.lr_multipliers) for v in study.variants)
    with ctx.progress(total, "sparse regression steps") as bar:
        for index, variant in enumerate(study.variants):
            key_data, key_init = ctx.key("data", index), ctx.key("init", index)
            X, y = sparse_mlp.cubic_dataset(key_data, variant.num_samples, variant.dim)
            weights0 = sparse_mlp.init_weights(key_init, variant.dim, variant.activation)
            for method in steps.METHODS:
                prefix = f"{variant.name}/{method}"
                lr, records, rows = _tune(study, variant, method, weights0, X, y, bar)
                grid_rows += rows
                summary[f"{prefix}/lr"] = lr
                if len(study.lr_multipliers) > 1:
                    grid = [row["lr"] for row in rows]
                    at_edge = lr in (min(grid), max(grid))
                    summary[f"{prefix}/lr_at_grid_edge"] = float(at_edge)
                for step, rec in records.items():
                    ctx.log_metrics(step, {f"{prefix}/{k}": v for k, v in rec.items()})
                early = min(records, key=lambda s: abs(s - study.early_step))
                for when, step in (("initial", 0), ("early", early), ("final", variant.num_steps)):
                    summary[f"{prefix}/loss_{when}"] = records[step]["loss"]
                for layer in (1, 2, 3):
                    st = [r[f"st_A{layer}"] for r in records.values()]
                    nr = [r[f"nr_W{layer}"] for r in records.values()]
                    summary[f"{prefix}/st_A{layer}_max"] = float(np.max(st))
                    summary[f"{prefix}/st_A{layer}_final"] = st[-1]
                    summary[f"{prefix}/nr_W{layer}_median"] = float(np.median(nr))
                trained_rows += stable_rank_rows(variant, method, records)
    ctx.log_table("trained_stable_ranks", trained_rows)
    ctx.log_table("lr_grid", grid_rows)

    rows = []
    weights = sparse_mlp.init_weights(ctx.key("swiglu_init"), study.swiglu_sweep_dim, "swiglu")
    for n in study.swiglu_batch_sizes:
        X, _ = sparse_mlp.cubic_dataset(ctx.key("swiglu_data"), n, study.swiglu_sweep_dim)
        ranks = np.asarray(sparse_mlp.hidden_stable_ranks(weights, X, activation="swiglu"))
        for layer, value in enumerate(ranks, start=1):
            rows.append({"num_samples": n, "layer": layer, "stable_rank": float(value)})
            summary[f"swiglu_init/n{n}/st_A{layer}"] = float(value)
    ctx.log_table("swiglu_batch_sweep", rows)
    return summary


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Loss, per-layer st(A_ℓ) and nr(∇W_ℓ) per variant; SwiGLU st(A_ℓ) against the batch size
    at initialisation and, when the variants differ in n, before and after training."""
    out = []
    for d in run_dirs:
        run_ = rundir.load_run(d)
        out.append(plots.sparse_regression_figure(run_, Path(out_dir)))
        if "swiglu_batch_sweep" in run_.tables:
            out.append(plots.swiglu_batch_figure(run_, Path(out_dir)))
        trained = run_.tables.get("trained_stable_ranks")
        if trained is not None and trained["num_samples"].nunique() > 1:
            out.append(plots.trained_stable_rank_figure(run_, Path(out_dir)))
    return out
