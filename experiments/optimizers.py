"""Optimizer configs: one dataclass per optimizer, the single source of its defaults.

    optim=muon optim.lr=2e-3      →  MuonConfig(lr=2e-3, ...).build(total_steps)
                                  →  specjax.optim.muon(schedule, ...)

`OPTIMIZERS` maps the name a user types (`optim=NAME`) to its dataclass; `experiments.config`
stores each in Hydra's ConfigStore, so unknown keys and wrong types fail at composition and
`__post_init__` checks the values before anything compiles. `lr` is the peak of the schedule:
linear warm-up from 0 over `warmup_steps`, then `constant`, `cosine` (to `min_lr_ratio·lr` at
`decay_steps`, default the run's `total_steps`) or `linear` decay. `clip_grad_norm` prepends
global-norm clipping. `needs_activation_stable_ranks` tells the training step to pass
`activation_stable_ranks=` to `update` (the gated optimizer's st(A)).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

import specjax.optim as so
from experiments.config import check_choice, check_positive_int
from specjax.linalg.polar import NS_FORMS
from specjax.optim.labels import is_hidden_kernel, key_name
from specjax.optim.spectra import ALPHAS as SPECTRA_ALPHAS

SCHEDULES = ("constant", "cosine", "linear")
POLAR_METHODS = ("newton_schulz", "polar_express", "svd")


def _check_number(value: Any, key: str, low: float, high: float, *, low_open=False, high_open=True):
    """ValueError naming `optim.<key>` unless `value` is a finite number in the interval."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"optim.{key} must be a finite number in {interval}, got {value!r}")


def _matrices_only(params):
    """nanoGPT's weight-decay rule: decay leaves of ndim ≥ 2, never norm scales and biases."""
    return jax.tree_util.tree_map(lambda x: jnp.ndim(x) >= 2, params)


@dataclasses.dataclass
class OptimizerConfig:
    """Keys every optimizer has; subclasses add theirs and implement `transform(lr)`."""

    name: str = ""
    lr: float = 1e-3
    schedule: str = "constant"  # constant | cosine | linear, after the linear warm-up
    warmup_steps: int = 0
    decay_steps: int | None = None  # None = trainer.max_steps
    min_lr_ratio: float = 0.0  # final lr / peak lr of cosine / linear decay
    clip_grad_norm: float | None = None  # global-norm clipping before the optimizer
    weight_decay: float = 0.0

    needs_activation_stable_ranks: ClassVar[bool] = False
    # Value checks by kind (None = unset is allowed for every optional key).
    positive: ClassVar[tuple[str, ...]] = ("lr", "clip_grad_norm")  # finite, > 0
    fractions: ClassVar[tuple[str, ...]] = ()  # momenta and β: in [0, 1)
    non_negative: ClassVar[tuple[str, ...]] = ("weight_decay",)  # finite, ≥ 0
    counts: ClassVar[tuple[str, ...]] = ()  # iteration counts: int ≥ 1
    choices: ClassVar[dict[str, tuple]] = {"schedule": SCHEDULES}

    def __post_init__(self) -> None:
        expected = next(k for k, v in OPTIMIZERS.items() if isinstance(self, v))
        if self.name != expected:
            raise ValueError(f"optim.name={self.name!r} does not match optim={expected}")
        given = {k: getattr(self, k) for k in self.__dataclass_fields__}
        given = {k: v for k, v in given.items() if v is not None}
        for key in (k for k in self.positive if k in given):
            _check_number(given[key], key, 0.0, math.inf, low_open=True)
        for key in (k for k in self.fractions if k in given):
            _check_number(given[key], key, 0.0, 1.0)
        for key in (k for k in self.non_negative if k in given):
            _check_number(given[key], key, 0.0, math.inf)
        for key in (k for k in self.counts if k in given):
            check_positive_int(given[key], f"optim.{key}")
        for key, allowed in self.choices.items():
            check_choice(getattr(self, key), f"optim.{key}", allowed)
        check_positive_int(self.warmup_steps, "optim.warmup_steps", zero_ok=True)
        if self.decay_steps is not None:
            check_positive_int(self.decay_steps, "optim.decay_steps")
        _check_number(self.min_lr_ratio, "min_lr_ratio", 0.0, 1.0, high_open=False)

    def learning_rate(self, total_steps: int | None = None, peak: float | None = None):
        """The schedule: warm-up to `peak` (default `lr`), then constant / cosine / linear."""
        peak = self.lr if peak is None else peak
        decay_steps = self.decay_steps if self.decay_steps is not None else total_steps
        if self.schedule == "constant":
            main = optax.constant_schedule(peak)
        else:
            if decay_steps is None or decay_steps <= self.warmup_steps:
                raise ValueError(
                    f"optim.decay_steps (or trainer.max_steps)={decay_steps!r} must exceed "
                    f"optim.warmup_steps={self.warmup_steps} for schedule={self.schedule!r}"
                )
            span = decay_steps - self.warmup_steps
            if self.schedule == "cosine":
                main = optax.cosine_decay_schedule(peak, span, alpha=self.min_lr_ratio)
            else:
                main = optax.linear_schedule(peak, peak * self.min_lr_ratio, span)
        if self.warmup_steps == 0:
            return main
        warmup = optax.linear_schedule(0.0, peak, self.warmup_steps)
        return optax.join_schedules([warmup, main], [self.warmup_steps])

    def build(self, total_steps: int | None = None) -> optax.GradientTransformation:
        """The optax transform, global-norm clipping first when `clip_grad_norm` is set."""
        tx = self.transform(self.learning_rate(total_steps), total_steps)
        if self.clip_grad_norm is None:
            return tx
        return optax.chain(optax.clip_by_global_norm(self.clip_grad_norm), tx)

    def transform(self, lr: optax.Schedule, total_steps: int | None):
        raise NotImplementedError


@dataclasses.dataclass
class AdamWConfig(OptimizerConfig):
    """optax.adamw (decoupled weight decay)."""

    name: str = "adamw"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    decay_matrices_only: bool = True  # False decays every leaf, norm scales included

    positive = (*OptimizerConfig.positive, "eps")
    fractions = ("b1", "b2")

    def transform(self, lr, total_steps):
        mask = _matrices_only if self.decay_matrices_only else None
        return optax.adamw(
            lr, b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=self.weight_decay, mask=mask
        )


@dataclasses.dataclass
class SGDConfig(OptimizerConfig):
    """optax.sgd with optional (Nesterov) momentum; weight_decay adds λW to the gradient."""

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.0
    nesterov: bool = False

    fractions = ("momentum",)

    def transform(self, lr, total_steps):
        tx = optax.sgd(lr, momentum=self.momentum or None, nesterov=self.nesterov)
        if self.weight_decay:
            tx = optax.chain(optax.add_decayed_weights(self.weight_decay), tx)
        return tx


# Muon ablation (Davis & Drusvyatskiy Table 2): which hidden kernels take Muon's step, by the
# path components they must contain in order (experiments/nanogpt/model.py names); the rest
# of the hidden kernels, embeddings, head and norms take AdamW.
MUON_BLOCKS: dict[str, tuple[str, ...] | None] = {
    "all": None,  # every hidden kernel (the default flax routing)
    "mlp_out": ("mlp", "proj"),  # W_out of each MLP
    "attention": ("attn",),  # qkv and output projection of each attention
}


def muon_block_labels(blocks: str):
    """params -> tree of "muon"/"adam": hidden kernels whose path contains MUON_BLOCKS[blocks]
    as consecutive components get "muon"; None for "all" (the library's default routing)."""
    pattern = MUON_BLOCKS[blocks]
    if pattern is None:
        return None

    def has_pattern(path) -> bool:
        names = [key_name(entry) for entry in path]
        k = len(pattern)
        return any(tuple(names[i : i + k]) == pattern for i in range(len(names) - k + 1))

    def label_fn(params):
        return jax.tree_util.tree_map_with_path(
            lambda p, _: "muon" if is_hidden_kernel(p) and has_pattern(p) else "adam", params
        )

    return label_fn


@dataclasses.dataclass
class MuonConfig(OptimizerConfig):
    """specjax.optim.muon: orthogonalized momentum on hidden matrices, AdamW elsewhere."""

    name: str = "muon"
    lr: float = 0.02
    momentum: float = 0.95
    nesterov: bool = True
    method: str = "newton_schulz"  # newton_schulz | polar_express | svd
    iters: int = 5
    # standard | gram | auto. auto: Newton–Schulz on the Gram matrix where that needs fewer
    # FLOPs (aspect ≥ ~2): 28 % fewer on gpt_baby's hidden matrices, same result to 3e-6.
    ns_form: str = "auto"
    scaling: str | None = "muon"  # muon | rms | spectral | None
    adam_lr: float | None = None  # peak of the AdamW group's schedule; None = lr
    adam_b1: float = 0.9
    adam_b2: float = 0.95
    adam_eps: float = 1e-8
    adam_weight_decay: float | None = None  # None = weight_decay
    spectral_blocks: str = "all"  # all | mlp_out | attention: which hidden kernels take Muon

    positive = (*OptimizerConfig.positive, "adam_lr", "adam_eps")
    fractions = ("momentum", "adam_b1", "adam_b2")
    non_negative = ("weight_decay", "adam_weight_decay")
    counts = ("iters",)
    choices: ClassVar[dict[str, tuple]] = {
        **OptimizerConfig.choices, "method": POLAR_METHODS, "scaling": so.SCALINGS,
        "spectral_blocks": tuple(MUON_BLOCKS), "ns_form": NS_FORMS,
    }  # fmt: skip

    def transform(self, lr, total_steps):
        adam_lr = None if self.adam_lr is None else self.learning_rate(total_steps, self.adam_lr)
        return so.muon(
            lr, momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay,
            method=self.method, iters=self.iters, ns_form=self.ns_form, scaling=self.scaling,
            adam_learning_rate=adam_lr, adam_b1=self.adam_b1, adam_b2=self.adam_b2,
            adam_eps=self.adam_eps, adam_weight_decay=self.adam_weight_decay,
            label_fn=muon_block_labels(self.spectral_blocks),
        )  # fmt: skip


@dataclasses.dataclass
class OptaxMuonConfig(OptimizerConfig):
    """optax.contrib.muon, the reference implementation (same schedule and clipping keys)."""

    name: str = "optax_muon"
    lr: float = 0.02
    beta: float = 0.95
    iters: int = 5  # optax's ns_steps
    nesterov: bool = True
    adam_lr: float | None = None
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    # c: updates scaled by c·√max(fan_in, fan_out) (Moonlight); 0.2 = specjax muon scaling=rms.
    # None: optax's √max(1, fan_out/fan_in), = specjax muon scaling=muon.
    consistent_rms: float | None = None

    positive = (*OptimizerConfig.positive, "adam_lr", "consistent_rms")
    fractions = ("beta", "adam_b1", "adam_b2")
    counts = ("iters",)

    def transform(self, lr, total_steps):
        from optax.contrib import muon

        adam_lr = None if self.adam_lr is None else self.learning_rate(total_steps, self.adam_lr)
        return muon(
            lr, ns_steps=self.iters, beta=self.beta, weight_decay=self.weight_decay,
            nesterov=self.nesterov, adam_b1=self.adam_b1, adam_b2=self.adam_b2,
            adam_learning_rate=adam_lr, consistent_rms=self.consistent_rms,
        )  # fmt: skip


def _hidden_kernels_only(params):
    """The official SPECTRA code's weight-decay rule: Linear weights only (hidden kernels), never
    embeddings, the output head, norm scales or biases."""
    return jax.tree_util.tree_map_with_path(lambda p, _: is_hidden_kernel(p), params)


SPECTRA_DECAY_MASKS = {"hidden": _hidden_kernels_only, "matrices": _matrices_only, "all": None}


@dataclasses.dataclass
class SpectraConfig(OptimizerConfig):
    """SPECTRA (Jiang, Semenov & Stich 2026) as published: pre-clip → global-norm clip → base
    direction → spectral clip at `c` → α·lr (specjax.optim.spectra)."""

    c: float = 1.0
    pre_clip: float | None = None
    kind: str = "soft"  # soft | hard
    clip_iters: int | None = None  # Newton–Schulz iterations of the soft clip; None = automatic
    alpha: str | None = "official"  # official | muon | None
    constant_clr_warmup: int | None = None  # None = warmup_steps (official); 0 = off
    decay_mask: str = "hidden"  # hidden (official) | matrices (nanoGPT's) | all

    positive = (*OptimizerConfig.positive, "c", "pre_clip")
    counts = ("clip_iters",)
    choices: ClassVar[dict[str, tuple]] = {
        **OptimizerConfig.choices, "kind": ("soft", "hard"), "alpha": SPECTRA_ALPHAS,
        "decay_mask": tuple(SPECTRA_DECAY_MASKS),
    }  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.constant_clr_warmup is not None:
            check_positive_int(self.constant_clr_warmup, "optim.constant_clr_warmup", zero_ok=True)

    def build(self, total_steps: int | None = None) -> optax.GradientTransformation:
        """`clip_grad_norm` goes inside SPECTRA, after its pre-clip (the official order)."""
        return self.transform(self.learning_rate(total_steps), total_steps)

    def spectra_kwargs(self) -> dict[str, Any]:
        warmup = self.warmup_steps if self.constant_clr_warmup is None else self.constant_clr_warmup
        return {
            "weight_decay": self.weight_decay, "pre_clip": self.pre_clip, "kind": self.kind,
            "iters": self.clip_iters, "alpha": self.alpha, "constant_clr_warmup": warmup,
            "global_norm_clip": self.clip_grad_norm,
            "weight_decay_mask": SPECTRA_DECAY_MASKS[self.decay_mask],
        }  # fmt: skip


@dataclasses.dataclass
class SpectraAdamWConfig(SpectraConfig):
    name: str = "spectra_adamw"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    positive = (*SpectraConfig.positive, "eps")
    fractions = ("b1", "b2")

    def transform(self, lr, total_steps):
        return so.spectra_adamw(
            lr, self.c, b1=self.b1, b2=self.b2, eps=self.eps, **self.spectra_kwargs()
        )


@dataclasses.dataclass
class SpectraSignumConfig(SpectraConfig):
    name: str = "spectra_signum"
    momentum: float = 0.9
    nesterov: bool = True

    fractions = ("momentum",)

    def transform(self, lr, total_steps):
        return so.spectra_signum(
            lr, self.c, momentum=self.momentum, nesterov=self.nesterov, **self.spectra_kwargs()
        )


@dataclasses.dataclass
class SpectraAdEMAMixConfig(SpectraConfig):
    name: str = "spectra_ademamix"
    b1: float = 0.9
    b2: float = 0.999
    b3: float = 0.9999
    alpha_mix: float = 5.0
    eps: float = 1e-8

    positive = (*SpectraConfig.positive, "eps")
    fractions = ("b1", "b2", "b3")
    non_negative = ("weight_decay", "alpha_mix")

    def transform(self, lr, total_steps):
        return so.spectra_ademamix(
            lr, self.c, b1=self.b1, b2=self.b2, b3=self.b3, alpha_mix=self.alpha_mix,
            eps=self.eps, **self.spectra_kwargs(),
        )  # fmt: skip


@dataclasses.dataclass
class GatedSpectralConfig(OptimizerConfig):
    """specjax.optim.gated_spectral: spectral step where nr(G) ≥ st(A), Euclidean elsewhere."""

    name: str = "gated_spectral"
    lr: float = 0.05
    euclidean: str = "sgd"  # sgd | adam
    momentum: float = 0.0
    nesterov: bool = False
    spectral_lr: float | None = None  # None = lr·‖U‖_*/st(A), the same smoothness model as SGD
    match_rms: bool = False  # spectral step at the Euclidean step's RMS (Muon vs AdamW, one scale)
    spectral_scale: float = 1.0  # κ: spectral step length / Euclidean step length (match_rms)
    method: str = "polar_express"
    iters: int = 8
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8

    needs_activation_stable_ranks: ClassVar[bool] = True
    positive = (*OptimizerConfig.positive, "spectral_lr", "spectral_scale", "adam_eps")
    fractions = ("momentum", "adam_b1", "adam_b2")
    counts = ("iters",)
    choices: ClassVar[dict[str, tuple]] = {
        **OptimizerConfig.choices, "euclidean": ("sgd", "adam"), "method": POLAR_METHODS,
        "match_rms": (False, True),
    }  # fmt: skip

    def transform(self, lr, total_steps):
        return so.gated_spectral(
            lr, euclidean=self.euclidean, momentum=self.momentum, nesterov=self.nesterov,
            spectral_learning_rate=self.spectral_lr, match_rms=self.match_rms,
            spectral_scale=self.spectral_scale, method=self.method, iters=self.iters,
            weight_decay=self.weight_decay, adam_b1=self.adam_b1, adam_b2=self.adam_b2,
            adam_eps=self.adam_eps,
        )  # fmt: skip


OPTIMIZERS: dict[str, type[OptimizerConfig]] = {
    "adamw": AdamWConfig,
    "sgd": SGDConfig,
    "muon": MuonConfig,
    "optax_muon": OptaxMuonConfig,
    "spectra_adamw": SpectraAdamWConfig,
    "spectra_signum": SpectraSignumConfig,
    "spectra_ademamix": SpectraAdEMAMixConfig,
    "gated_spectral": GatedSpectralConfig,
}
