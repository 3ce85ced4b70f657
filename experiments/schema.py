"""Typed schemas (dataclasses in Hydra's ConfigStore) for the trainer, logger and optim groups.

Each group file starts with `defaults: [/schema/<group>@_here_: <name>, _self_]`, so a misspelt key
(`trainer.max_step=5`) or a wrong type (`trainer.max_steps=abc`) fails at start with Hydra's
message naming the key. Study, model and data groups are free-form: each study validates its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    log_every: int = 10  # train metrics every N steps (and the last step)
    eval_every: int = 0  # 0 = only at the end
    ckpt_every: int = 0  # 0 = only at the end / on SIGTERM
    keep_ckpts: int = 3
    spectra_every: int = 0  # 0 = off
    resume: str = "auto"  # auto | never | <run dir, checkpoints dir or step dir>
    progress: str = "auto"  # auto (rich on a TTY) | rich | plain | off
    distributed: str = "auto"  # auto (multi-host env) | on | off: jax.distributed.initialize()
    stop_at_step: int | None = None  # simulate a preemption after this step (tests, drills)
    async_checkpointing: bool = True


@dataclass
class LoggerConfig:
    kind: str = "local"  # local | wandb (local files are always written)
    project: str = "specjax"
    entity: str | None = None
    group: str | None = None
    name: str | None = None  # wandb run name; None = run directory name
    mode: str | None = None  # online | offline | disabled; None = $WANDB_MODE or online
    tags: list[str] = field(default_factory=list)


@dataclass
class OptimConfig:
    """Keys every optimizer has; `lr` is the peak learning rate of the schedule."""

    name: str = MISSING
    lr: float = MISSING
    schedule: str = "constant"  # constant | cosine | linear (after `warmup_steps` linear warm-up)
    warmup_steps: int = 0
    decay_steps: int | None = None  # None = trainer.max_steps
    min_lr_ratio: float = 0.0  # final lr / peak lr of cosine / linear decay
    clip_grad_norm: float | None = None  # global-norm clipping before the optimizer
    weight_decay: float = 0.0


@dataclass
class AdamWConfig(OptimConfig):
    name: str = "adamw"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    # nanoGPT's rule: decay only parameters of ndim >= 2 (matrices, embeddings), never the
    # norm scales and biases.
    decay_matrices_only: bool = True


@dataclass
class SGDConfig(OptimConfig):
    name: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class MuonConfig(OptimConfig):
    name: str = "muon"
    momentum: float = 0.95
    nesterov: bool = True
    method: str = "newton_schulz"  # newton_schulz | polar_express | svd
    steps: int = 5
    scaling: str | None = "muon"  # muon | rms | spectral | None
    adam_lr: float | None = None  # None = lr
    adam_b1: float = 0.9
    adam_b2: float = 0.95
    adam_eps: float = 1e-8
    adam_weight_decay: float | None = None


@dataclass
class OptaxMuonConfig(OptimConfig):
    """optax.contrib.muon, the reference implementation."""

    name: str = "optax_muon"
    beta: float = 0.95
    ns_steps: int = 5
    nesterov: bool = True
    adam_lr: float | None = None
    adam_b1: float = 0.9
    adam_b2: float = 0.999


@dataclass
class SpectraCommon(OptimConfig):
    """SPECTRA wrapper keys (Jiang, Semenov & Stich 2026): clip level `c` of the spectral clip."""

    c: float = 1.0
    pre_clip: float | None = None
    kind: str = "soft"  # soft | hard
    clip_steps: int | None = None  # Newton–Schulz steps of the soft clip; None = automatic
    alpha: str | None = "muon"  # muon | None
    constant_clr_warmup: int = 0


@dataclass
class SpectraAdamWConfig(SpectraCommon):
    name: str = "spectra_adamw"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


@dataclass
class SpectraSignumConfig(SpectraCommon):
    name: str = "spectra_signum"
    momentum: float = 0.9
    nesterov: bool = True


@dataclass
class SpectraAdEMAMixConfig(SpectraCommon):
    name: str = "spectra_ademamix"
    b1: float = 0.9
    b2: float = 0.999
    b3: float = 0.9999
    alpha_mix: float = 5.0
    eps: float = 1e-8


@dataclass
class GatedSpectralConfig(OptimConfig):
    name: str = "gated_spectral"
    euclidean: str = "sgd"  # sgd | adam
    momentum: float = 0.0
    nesterov: bool = False
    spectral_lr: float | None = None
    method: str = "polar_express"
    steps: int = 8
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8


OPTIM_SCHEMAS: dict[str, type] = {
    "adamw": AdamWConfig,
    "sgd": SGDConfig,
    "muon": MuonConfig,
    "optax_muon": OptaxMuonConfig,
    "spectra_adamw": SpectraAdamWConfig,
    "spectra_signum": SpectraSignumConfig,
    "spectra_ademamix": SpectraAdEMAMixConfig,
    "gated_spectral": GatedSpectralConfig,
}


def register_schemas() -> None:
    """Store the schemas as `schema/{trainer,logger}/default` and `schema/optim/<name>`.

    They live outside the user-facing groups so Hydra's "available options" lists only yaml files.
    A group file pulls its schema in with `defaults: [/schema/<group>@_here_: <name>, _self_]`.
    """
    cs = ConfigStore.instance()
    cs.store(group="schema/trainer", name="default", node=TrainerConfig)
    cs.store(group="schema/logger", name="default", node=LoggerConfig)
    for name, schema in OPTIM_SCHEMAS.items():
        cs.store(group="schema/optim", name=name, node=schema)


def plain(node: Any) -> Any:
    """DictConfig → plain containers (resolved)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
