"""Optimizer registry: an `optim` config → `optax.GradientTransformation`.

    tx = build_optimizer(cfg.optim, total_steps=cfg.trainer.max_steps, label_fn=..., reshape=...)

`lr` is the peak of a schedule: linear warm-up over `warmup_steps` from 0, then `constant`,
`cosine` (to `min_lr_ratio * lr` at `decay_steps`, default `total_steps`) or `linear` decay.
`clip_grad_norm` prepends global-norm clipping. Study-specific routing arguments
(`label_fn`, `reshape`, `mesh`) are passed through to the `specjax.optim` builders that take them.
`specjax.optim` is imported inside the builders so adamw / sgd work without it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine", "linear")


def make_schedule(
    lr: float, schedule: str = "constant", warmup_steps: int = 0, decay_steps: int | None = None,
    min_lr_ratio: float = 0.0, total_steps: int | None = None,
) -> optax.Schedule:  # fmt: skip
    """Warm-up then constant / cosine / linear decay; ValueError on bad values."""
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(f"optim.lr must be a positive number, got {lr!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {schedule!r}")
    if warmup_steps < 0:
        raise ValueError(f"optim.warmup_steps must be >= 0, got {warmup_steps!r}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
    decay_steps = decay_steps if decay_steps is not None else total_steps
    if schedule == "constant":
        main = optax.constant_schedule(lr)
    else:
        if decay_steps is None or decay_steps <= warmup_steps:
            raise ValueError(
                f"optim.decay_steps (or trainer.max_steps)={decay_steps!r} must exceed "
                f"optim.warmup_steps={warmup_steps} for schedule={schedule!r}"
            )
        span = decay_steps - warmup_steps
        if schedule == "cosine":
            main = optax.cosine_decay_schedule(lr, span, alpha=min_lr_ratio)
        else:
            main = optax.linear_schedule(lr, lr * min_lr_ratio, span)
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def _matrices_mask(params):
    return jax.tree_util.tree_map(lambda x: jnp.ndim(x) >= 2, params)


def _adamw(o, lr, extra):
    mask = _matrices_mask if o.get("decay_matrices_only", True) else None
    return optax.adamw(
        lr, b1=o["b1"], b2=o["b2"], eps=o["eps"], weight_decay=o["weight_decay"], mask=mask
    )


def _sgd(o, lr, extra):
    tx = optax.sgd(lr, momentum=o["momentum"] or None, nesterov=o["nesterov"])
    if o["weight_decay"]:
        tx = optax.chain(optax.add_decayed_weights(o["weight_decay"]), tx)
    return tx


def _pass(builder: Callable, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The routing extras (`label_fn`, `reshape`, `mesh`, ...) the builder accepts."""
    accepted = inspect.signature(builder).parameters
    return {k: v for k, v in extra.items() if k in accepted and v is not None}


def _muon(o, lr, extra):
    from specjax.optim import muon

    return muon(
        lr, momentum=o["momentum"], nesterov=o["nesterov"], weight_decay=o["weight_decay"],
        method=o["method"], steps=o["steps"], scaling=o["scaling"], adam_learning_rate=o["adam_lr"],
        adam_b1=o["adam_b1"], adam_b2=o["adam_b2"], adam_eps=o["adam_eps"],
        adam_weight_decay=o["adam_weight_decay"], **_pass(muon, extra),
    )  # fmt: skip


def _optax_muon(o, lr, extra):
    from optax.contrib import muon

    return muon(
        lr, ns_steps=o["ns_steps"], beta=o["beta"], weight_decay=o["weight_decay"],
        nesterov=o["nesterov"], adam_b1=o["adam_b1"], adam_b2=o["adam_b2"],
        adam_learning_rate=o["adam_lr"], **_pass(muon, extra),
    )  # fmt: skip


def _spectra_kw(o) -> dict[str, Any]:
    return {
        "weight_decay": o["weight_decay"], "pre_clip": o["pre_clip"], "kind": o["kind"],
        "steps": o["clip_steps"], "alpha": o["alpha"],
        "constant_clr_warmup": o["constant_clr_warmup"],
    }  # fmt: skip


def _spectra_adamw(o, lr, extra):
    from specjax.optim import spectra_adamw

    kw = _spectra_kw(o) | _pass(spectra_adamw, extra)
    return spectra_adamw(lr, o["c"], b1=o["b1"], b2=o["b2"], eps=o["eps"], **kw)


def _spectra_signum(o, lr, extra):
    from specjax.optim import spectra_signum

    kw = _spectra_kw(o) | _pass(spectra_signum, extra)
    return spectra_signum(lr, o["c"], momentum=o["momentum"], nesterov=o["nesterov"], **kw)


def _spectra_ademamix(o, lr, extra):
    from specjax.optim import spectra_ademamix

    kw = _spectra_kw(o) | _pass(spectra_ademamix, extra)
    return spectra_ademamix(
        lr, o["c"], b1=o["b1"], b2=o["b2"], b3=o["b3"], alpha_mix=o["alpha_mix"], eps=o["eps"], **kw
    )


def _gated_spectral(o, lr, extra):
    from specjax.optim import gated_spectral

    return gated_spectral(
        lr, euclidean=o["euclidean"], momentum=o["momentum"], nesterov=o["nesterov"],
        spectral_learning_rate=o["spectral_lr"], method=o["method"], steps=o["steps"],
        weight_decay=o["weight_decay"], adam_b1=o["adam_b1"], adam_b2=o["adam_b2"],
        adam_eps=o["adam_eps"], **_pass(gated_spectral, extra),
    )  # fmt: skip


BUILDERS: dict[str, Callable] = {
    "adamw": _adamw,
    "sgd": _sgd,
    "muon": _muon,
    "optax_muon": _optax_muon,
    "spectra_adamw": _spectra_adamw,
    "spectra_signum": _spectra_signum,
    "spectra_ademamix": _spectra_ademamix,
    "gated_spectral": _gated_spectral,
}


def optimizer_options(optim_cfg: Any) -> dict[str, Any]:
    """The optim config as a plain dict with the schema's defaults filled in."""
    from omegaconf import OmegaConf

    from experiments.schema import OPTIM_SCHEMAS

    values = (
        OmegaConf.to_container(optim_cfg, resolve=True)
        if OmegaConf.is_config(optim_cfg)
        else dict(optim_cfg)
    )
    name = values.get("name")
    if name not in BUILDERS:
        raise ValueError(f"optim.name must be one of {sorted(BUILDERS)}, got {name!r}")
    merged = OmegaConf.merge(
        OmegaConf.structured(OPTIM_SCHEMAS[name]), values
    )  # typo → error naming the key
    return OmegaConf.to_container(merged, resolve=True)


def build_optimizer(
    optim_cfg: Any, total_steps: int | None = None, **extra: Any
) -> optax.GradientTransformation:
    """`optax` transform for `optim_cfg` (a DictConfig or dict with `name`, `lr`, ...)."""
    o = optimizer_options(optim_cfg)
    lr = make_schedule(
        o["lr"], o["schedule"], o["warmup_steps"], o["decay_steps"], o["min_lr_ratio"], total_steps
    )
    tx = BUILDERS[o["name"]](o, lr, extra)
    if o["clip_grad_norm"] is not None:
        if not o["clip_grad_norm"] > 0:
            raise ValueError(
                f"optim.clip_grad_norm must be positive or null, got {o['clip_grad_norm']!r}"
            )
        tx = optax.chain(optax.clip_by_global_norm(o["clip_grad_norm"]), tx)
    return tx


def learning_rate_schedule(optim_cfg: Any, total_steps: int | None = None) -> optax.Schedule:
    """The schedule `build_optimizer` uses (for logging the lr per step)."""
    o = optimizer_options(optim_cfg)
    return make_schedule(
        o["lr"], o["schedule"], o["warmup_steps"], o["decay_steps"], o["min_lr_ratio"], total_steps
    )
