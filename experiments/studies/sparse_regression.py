"""Study: 4-layer MLP on y = x₁x₂x₃ with SpecGD on the middle layers (Davis & Drusvyatskiy 2025).

Each entry of `study.variants` trains the same initial network twice, full batch, float64:
`gd` (every layer a GD step) and `specgd` (layers in `spectral_layers` spectral, the rest
GD), each step scaled per layer by n/‖A_{ℓ−1}‖² times the variant's learning rate (see
`specgd.sparse_mlp`). Every `log_every` steps it logs, per method, the loss, st(A_ℓ) of
each hidden post-activation and nr(∇W_ℓ) of layers 1–3. Separately, the SwiGLU network's
st(A_ℓ) at initialisation is measured for each n in `swiglu_batch_sizes` (tables/
swiglu_batch_sweep): with no mean spike it grows with the batch size.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from omegaconf import DictConfig

from experiments.runtime.trainer import NonFiniteLossError
from experiments.studies._specgd import plots, sparse_mlp

METHODS = ("gd", "specgd")


def _check_variant(v: DictConfig) -> None:
    sparse_mlp.check_activation(v.activation)
    for name in ("dim", "num_samples", "num_steps"):
        if not isinstance(v[name], int) or v[name] < 1:
            raise ValueError(f"variant {v.name!r}: {name} must be a positive int, got {v[name]!r}")
    if v.dim < 3:
        raise ValueError(f"variant {v.name!r}: dim must be ≥ 3 for y = x₁x₂x₃, got {v.dim!r}")
    for name in ("lr_gd", "lr_specgd"):
        if not float(v[name]) > 0:
            raise ValueError(f"variant {v.name!r}: {name} must be > 0, got {v[name]!r}")


def _check(study: DictConfig) -> None:
    if not study.variants:
        raise ValueError("study.variants must list at least one variant")
    names = [v.name for v in study.variants]
    if len(set(names)) != len(names) or any("/" in n for n in names):
        raise ValueError(f"study.variants names must be unique and contain no '/', got {names!r}")
    for v in study.variants:
        _check_variant(v)
    layers = list(study.spectral_layers)
    if any(layer not in (1, 2, 3) for layer in layers):
        raise ValueError(f"study.spectral_layers must be a subset of [1, 2, 3], got {layers!r}")
    if not isinstance(study.log_every, int) or study.log_every < 1:
        raise ValueError(f"study.log_every must be a positive int, got {study.log_every!r}")


def run(cfg: DictConfig, ctx) -> dict[str, float]:
    with jax.enable_x64(True):
        return _run(cfg.study, ctx)


def _train(variant, method, weights, X, y, spectral, log_every, bar) -> dict[int, dict]:
    """Full-batch training; diagnostics at every `log_every`-th step and the last."""
    layers = tuple(spectral) if method == "specgd" else ()
    lr = float(variant.lr_specgd if method == "specgd" else variant.lr_gd)
    records = {}
    for step in range(variant.num_steps + 1):
        if step % log_every == 0 or step == variant.num_steps:
            records[step] = {
                k: float(v)
                for k, v in sparse_mlp.diagnostics(
                    weights, X, y, activation=variant.activation
                ).items()
            }
            if not np.isfinite(records[step]["loss"]):
                raise NonFiniteLossError(
                    step, records[step]["loss"], f"{variant.name}/{method}/loss", None
                )
        if step < variant.num_steps:
            weights, _ = sparse_mlp.train_step(
                weights, X, y, lr, activation=variant.activation, spectral_layers=layers
            )
            bar.update(1)
    return records


def _run(study: DictConfig, ctx) -> dict[str, float]:
    _check(study)
    summary: dict[str, float] = {}
    total = sum(2 * v.num_steps for v in study.variants)
    with ctx.progress(total, "sparse regression steps") as bar:
        for index, variant in enumerate(study.variants):
            key_init, key_data = jax.random.split(jax.random.fold_in(ctx.key("init"), index))
            X, y = sparse_mlp.cubic_dataset(
                jax.random.fold_in(ctx.key("data"), index), variant.num_samples, variant.dim
            )
            del key_data
            weights0 = sparse_mlp.init_weights(key_init, variant.dim, variant.activation)
            for method in METHODS:
                records = _train(
                    variant, method, weights0, X, y, study.spectral_layers, study.log_every, bar
                )
                for step, rec in records.items():
                    ctx.log_metrics(
                        step, {f"{variant.name}/{method}/{k}": v for k, v in rec.items()}
                    )
                final = records[variant.num_steps]
                early = records[min(records, key=lambda s: abs(s - study.early_step))]
                prefix = f"{variant.name}/{method}"
                summary[f"{prefix}/loss_initial"] = records[0]["loss"]
                summary[f"{prefix}/loss_early"] = early["loss"]
                summary[f"{prefix}/loss_final"] = final["loss"]
                for layer in (1, 2, 3):
                    st = [r[f"st_A{layer}"] for r in records.values()]
                    nr = [r[f"nr_W{layer}"] for r in records.values()]
                    summary[f"{prefix}/st_A{layer}_max"] = float(np.max(st))
                    summary[f"{prefix}/nr_W{layer}_median"] = float(np.median(nr))

    rows = []
    for n in study.swiglu_batch_sizes:
        weights = sparse_mlp.init_weights(ctx.key("swiglu_init"), study.swiglu_sweep_dim, "swiglu")
        X, _ = sparse_mlp.cubic_dataset(ctx.key("swiglu_data"), int(n), study.swiglu_sweep_dim)
        ranks = np.asarray(sparse_mlp.hidden_stable_ranks(weights, X, activation="swiglu"))
        for layer, value in enumerate(ranks, start=1):
            rows.append({"num_samples": int(n), "layer": layer, "stable_rank": float(value)})
            summary[f"swiglu_init/n{n}/st_A{layer}"] = float(value)
    ctx.log_table("swiglu_batch_sweep", rows)
    return summary


def plot(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Loss, per-layer st(A_ℓ) and nr(∇W_ℓ) per variant; SwiGLU st(A_ℓ) against the batch size."""
    out = []
    for d in run_dirs:
        out.append(plots.sparse_regression_figure(Path(d), Path(out_dir)))
        if (Path(d) / "tables" / "swiglu_batch_sweep.parquet").exists():
            out.append(plots.swiglu_batch_figure(Path(d), Path(out_dir)))
    return out
