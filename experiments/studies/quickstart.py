"""Quickstart: multi-output linear regression trained with the generic trainer (a 10-second demo).

Teacher W*_{D×K} ~ N(0, 1/D); inputs x ~ N(0, I_D); targets y = x W* + σ ε.
Loss ½·mean ‖x W − y‖² over the batch; batches are a pure function of (seed, step).
`study.nan_at_step=k` poisons the k-th update (tests of non-finite-loss handling).

    python -m experiments.run +exp=quickstart
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from experiments.config import RunConfig, check_positive_int
from experiments.runtime.context import RunContext
from experiments.runtime.mesh import to_host
from experiments.runtime.trainer import train
from specjax import stable_rank


@dataclasses.dataclass
class Config:
    name: str = "quickstart"
    dim: int = 16
    outputs: int = 4
    batch_size: int = 32
    noise: float = 0.1
    val_size: int = 256
    nan_at_step: int | None = None  # fault injection: the update numbered k gives a NaN loss

    def __post_init__(self) -> None:
        for key in ("dim", "outputs", "batch_size", "val_size"):
            check_positive_int(getattr(self, key), f"study.{key}")
        if not self.noise >= 0:
            raise ValueError(f"study.noise must be >= 0, got {self.noise!r}")


def _sample(key: jax.Array, n: int, w_star_DxK: jax.Array, noise: float):
    kx, ke = jax.random.split(key)
    x_NxD = jax.random.normal(kx, (n, w_star_DxK.shape[0]))
    y_NxK = x_NxD @ w_star_DxK + noise * jax.random.normal(ke, (n, w_star_DxK.shape[1]))
    return {"x": x_NxD, "y": y_NxK}


def _loss(w_DxK: jax.Array, batch: dict) -> jax.Array:
    return 0.5 * jnp.mean(jnp.sum((batch["x"] @ w_DxK - batch["y"]) ** 2, axis=-1))


def _params(w_DxK: jax.Array) -> dict:
    """The weight under a flax-style name, so spectral optimizers route it as a hidden matrix."""
    return {"linear": {"kernel": w_DxK}}


def make_train_step(tx, nan_at_step: int | None, needs_activation_stable_ranks: bool = False):
    """Pure step: state {"w", "opt", "step"} → (state, {"loss", "grad_norm"})."""

    def train_step(state, batch):
        loss, grad = jax.value_and_grad(_loss)(state["w"], batch)
        if nan_at_step is not None:  # fault injection: the update numbered nan_at_step goes NaN
            poison = jnp.where(state["step"] + 1 == nan_at_step, jnp.nan, 1.0)
            loss, grad = loss * poison, grad * poison
        extra = {}
        if needs_activation_stable_ranks:  # the gated optimizer: st(X) of the layer's input
            extra["activation_stable_ranks"] = _params(stable_rank(batch["x"]))
        updates, opt = tx.update(_params(grad), state["opt"], _params(state["w"]), **extra)
        w = state["w"] + updates["linear"]["kernel"]
        metrics = {"loss": loss, "grad_norm": jnp.linalg.norm(grad)}
        return {"w": w, "opt": opt, "step": state["step"] + 1}, metrics

    return train_step


def run(cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
    o = cfg.study
    w_star_DxK = jax.random.normal(ctx.key("teacher"), (o.dim, o.outputs)) / np.sqrt(o.dim)
    tx = cfg.optim.build(cfg.trainer.max_steps)
    val = _sample(ctx.key("val"), o.val_size, w_star_DxK, o.noise)

    def init():
        w = jnp.zeros((o.dim, o.outputs), jnp.float32)
        return {"w": w, "opt": tx.init(_params(w)), "step": jnp.zeros((), jnp.int32)}

    def batch(step: int):
        return _sample(ctx.key("data", step), o.batch_size, w_star_DxK, o.noise)

    def evaluate(state):
        return {
            "val_loss": _loss(state["w"], val),
            "w_error": jnp.linalg.norm(state["w"] - w_star_DxK),
        }

    def spectra(state, step):
        s = np.linalg.svd(to_host(state["w"]).astype(np.float64), compute_uv=False)
        stable_rank = float((s**2).sum() / s[0] ** 2) if s[0] > 0 else 0.0
        return [
            {"layer": "w", "quantity": "weight", "stable_rank": stable_rank, "singular_values": s}
        ]

    step = make_train_step(tx, o.nan_at_step, cfg.optim.needs_activation_stable_ranks)
    result = train(ctx, init=init, step=step, batch=batch, evaluate=evaluate, spectra=spectra)
    return {k: float(v) for k, v in result.metrics.items()}


def _setting_labels(runs) -> list[str]:
    """Each run's label without its seed: runs differing only in seed share a colour."""
    from experiments.rundir import run_labels

    labels = []
    for run, label in zip(runs, run_labels(runs), strict=True):
        kept = " ".join(t for t in label.split() if not t.startswith("seed="))
        labels.append(kept or str(run.config.get("optim", {}).get("name", run.path.name)))
    return labels


def plot(run_dirs: list[pathlib.Path], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Training (solid) and validation (dashed, circles) loss against step; a colour per setting
    (optimizer, learning rate, ...), shared by its seeds and by its train and val curves."""
    from matplotlib.lines import Line2D

    from experiments.rundir import load_run
    from experiments.studies._figures import plt, save

    runs = [load_run(d) for d in run_dirs]
    settings = _setting_labels(runs)
    colour = {s: f"C{i % 10}" for i, s in enumerate(dict.fromkeys(settings))}
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, setting in zip(runs, settings, strict=True):
        m = run.metrics
        if "loss" in m:
            rows = m.dropna(subset=["loss"])
            ax.plot(rows["step"], rows["loss"], "-", color=colour[setting], alpha=0.8)
        if "val_loss" in m:
            rows = m.dropna(subset=["val_loss"])
            ax.plot(rows["step"], rows["val_loss"], "o--", color=colour[setting], markersize=3)
    handles = [Line2D([], [], color=c, label=s) for s, c in colour.items()]
    handles += [Line2D([], [], color="k", ls="-", label="train (batch)"),
                Line2D([], [], color="k", ls="--", marker="o", markersize=3,
                       label="val (fixed set)")]  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("loss  ½·mean‖xW − y‖²")
    ax.set_yscale("log")
    ax.set_title("quickstart: linear regression")
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return [save(fig, out_dir, "quickstart_loss", dpi=120)]
