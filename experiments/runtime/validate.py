"""Config checks that run before anything is compiled: each raises ValueError naming the key."""

from __future__ import annotations

from typing import Any

import jax
from omegaconf import DictConfig

from experiments.runtime.trainer import TrainerOptions

LOGGER_KINDS = ("local", "wandb")
WANDB_MODES = (None, "online", "offline", "disabled")
PROGRESS_MODES = ("auto", "rich", "plain", "off")


def _batch_sizes(cfg: DictConfig) -> list[tuple[str, Any]]:
    found = []
    for group in ("data", "study"):
        node = cfg.get(group)
        if node is not None and hasattr(node, "get"):
            for key in ("batch_size", "eval_batch_size"):
                if node.get(key) is not None:
                    found.append((f"{group}.{key}", node.get(key)))
    return found


def validate_config(cfg: DictConfig, device_count: int | None = None) -> None:
    """Seed, trainer, logger, optim and batch-size checks (the study checks its own keys)."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    study = cfg.get("study")
    if study is None or not study.get("name"):
        from experiments.studies import available_studies

        raise ValueError(
            "no study selected: pick an experiment with +exp=NAME (configs/exp/) or a study with "
            f"study=NAME; available studies: {available_studies()}"
        )
    trainer = cfg.get("trainer")
    options = TrainerOptions.from_cfg(trainer)
    if options.progress not in PROGRESS_MODES:
        raise ValueError(
            f"trainer.progress must be one of {PROGRESS_MODES}, got {options.progress!r}"
        )
    if trainer is not None and trainer.get("distributed", "auto") not in ("auto", "on", "off"):
        raise ValueError(
            f"trainer.distributed must be auto|on|off, got {trainer.get('distributed')!r}"
        )
    logger = cfg.get("logger") or {}
    if logger.get("kind", "local") not in LOGGER_KINDS:
        raise ValueError(f"logger.kind must be one of {LOGGER_KINDS}, got {logger.get('kind')!r}")
    if logger.get("mode") not in WANDB_MODES:
        raise ValueError(f"logger.mode must be one of {WANDB_MODES}, got {logger.get('mode')!r}")
    if cfg.get("optim") is not None:
        from experiments.optimizers import learning_rate_schedule

        learning_rate_schedule(cfg.optim, total_steps=options.max_steps)
    n = device_count if device_count is not None else jax.device_count()
    for key, value in _batch_sizes(cfg):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
        if value % n:
            raise ValueError(
                f"{key}={value} is not divisible by the device count {n}; use a multiple of {n}"
            )
