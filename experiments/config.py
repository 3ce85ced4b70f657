"""The typed run config: `RunConfig` and its trainer / logger parts, and their Hydra registration.

Every config group is a dataclass in Hydra's ConfigStore, the single source of its defaults:

    trainer/default     TrainerConfig               (this module)
    logger/{local,wandb} LoggerConfig               (this module)
    optim/<name>        experiments.optimizers.OPTIMIZERS[name]
    model/<name>        experiments.nanogpt.model.MODELS[name]
    data/<name>         experiments.nanogpt.data.DATASETS[name]
    study/<name>        experiments.studies.<name>.Config

A misspelt key or a wrong type fails at composition with Hydra's message; each dataclass's
`__post_init__` checks values (and fields that only make sense together) when `launch` turns
the composed config into objects, before anything is compiled. `configs/exp/*.yaml` hold only
values that differ from these defaults.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any

from hydra.core.config_store import ConfigStore

CONFIG_DIR = str(pathlib.Path(__file__).resolve().parent.parent / "configs")
PROGRESS_MODES = ("auto", "rich", "plain", "off")
DISTRIBUTED_MODES = ("auto", "on", "off")
LOGGER_KINDS = ("local", "wandb")
WANDB_MODES = (None, "online", "offline", "disabled")

# Keys renamed by the "one word for inner iterations" cleanup: old key → new key.
RENAMED_KEYS = {
    "optim.steps": "optim.iters",
    "optim.clip_steps": "optim.clip_iters",
    "optim.ns_steps": "optim.iters",
}
# Whole overrides that no longer work, with what to type instead.
REPLACED_OVERRIDES = {"study.large=null": "study.large.enabled=false"}


def check_positive_int(value: Any, key: str, *, zero_ok: bool = False) -> None:
    """ValueError naming `key` unless `value` is an int > 0 (≥ 0 with `zero_ok`)."""
    low = 0 if zero_ok else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "an int >= 0 (0 = off)" if zero_ok else "a positive int"
        raise ValueError(f"{key} must be {what}, got {value!r}")


def check_choice(value: Any, key: str, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {tuple(choices)}, got {value!r}")


@dataclasses.dataclass
class TrainerConfig:
    """Training-loop cadence, checkpoints and resume. Steps count updates, 1..max_steps."""

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
    steps_per_dispatch: int = 50  # steps per jitted lax.scan block; 1 = one dispatch per step
    compilation_cache_dir: str | None = None  # None: $JAX_COMPILATION_CACHE_DIR or user cache
    log_throughput: bool = True  # step_time_s, tokens_per_s, mfu in metrics.jsonl (not bitwise)
    peak_flops: float | None = None  # FLOP/s for MFU; None: a stored float32-matmul measurement
    gpus_per_job: int = 0  # >0: pin this job to that many GPUs of the machine (one job per GPU)

    def __post_init__(self) -> None:
        check_positive_int(self.gpus_per_job, "trainer.gpus_per_job", zero_ok=True)
        for key in ("max_steps", "log_every", "keep_ckpts", "steps_per_dispatch"):
            check_positive_int(getattr(self, key), f"trainer.{key}")
        for key in ("eval_every", "ckpt_every", "spectra_every"):
            check_positive_int(getattr(self, key), f"trainer.{key}", zero_ok=True)
        if self.stop_at_step is not None:
            check_positive_int(self.stop_at_step, "trainer.stop_at_step")
        if not self.resume:
            raise ValueError("trainer.resume must be 'auto', 'never' or a checkpoint path, got ''")
        check_choice(self.progress, "trainer.progress", PROGRESS_MODES)
        check_choice(self.distributed, "trainer.distributed", DISTRIBUTED_MODES)
        if self.peak_flops is not None and not (0 < self.peak_flops < float("inf")):
            raise ValueError(f"trainer.peak_flops must be a positive FLOP/s or null, "
                             f"got {self.peak_flops!r}")  # fmt: skip
        if self.compilation_cache_dir is not None and not self.compilation_cache_dir.strip():
            raise ValueError("trainer.compilation_cache_dir must be a directory, 'off' or null, "
                             "got ''")  # fmt: skip

    def due(self, every: int, step: int) -> bool:
        """Whether a cadence of `every` steps (0 = off) fires at `step`, or `step` is the last."""
        return (every > 0 and step % every == 0) or step == self.max_steps


@dataclasses.dataclass
class LoggerConfig:
    """Local files are always written; `kind: wandb` mirrors them to wandb."""

    kind: str = "local"  # local | wandb
    project: str = "specjax"
    entity: str | None = None
    group: str | None = None
    name: str | None = None  # wandb run name; None = run directory name
    mode: str | None = None  # online | offline | disabled; None = $WANDB_MODE or online
    tags: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice(self.kind, "logger.kind", LOGGER_KINDS)
        check_choice(self.mode, "logger.mode", WANDB_MODES)


@dataclasses.dataclass
class RunConfig:
    """The whole composed config; `study` selects what runs (`+exp=NAME` picks all groups)."""

    seed: int = 0
    exp_name: str = "default"
    output_dir: str | None = None  # the run directory (gs://... too); None = Hydra's run dir
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)
    optim: Any = None  # an experiments.optimizers.OptimizerConfig
    model: Any = None
    data: Any = None
    study: Any = None

    def __post_init__(self) -> None:
        check_positive_int(self.seed, "seed", zero_ok=True)
        if self.output_dir is not None and not self.output_dir.strip():
            raise ValueError("output_dir must be a directory or a URI such as gs://bucket/run, "
                             "or null for Hydra's run directory; got ''")  # fmt: skip
        if self.optim is not None:  # the schedule needs trainer.max_steps: check them together
            self.optim.learning_rate(self.trainer.max_steps)

    def may_differ_on_resume(self) -> list[str]:
        """Keys a rerun may change and still continue the same run (the rest must match)."""
        keys = [f"trainer.{k}" for k in ("resume", "stop_at_step", "progress", "keep_ckpts",
                                         "async_checkpointing", "distributed",
                                         "gpus_per_job", "compilation_cache_dir",
                                         "log_throughput", "peak_flops")]  # fmt: skip
        keys += [f"logger.{f.name}" for f in dataclasses.fields(LoggerConfig)]
        keys.append("output_dir")  # where the run lives, not what it computes
        schedule_fixed = self.optim is None or self.optim.schedule == "constant"
        if schedule_fixed or self.optim.decay_steps is not None:
            keys.append("trainer.max_steps")  # training longer does not change the past steps
        return keys


def register_configs() -> None:
    """Put every config dataclass into Hydra's ConfigStore (idempotent)."""
    from experiments import optimizers, studies
    from experiments.nanogpt import data, model

    cs = ConfigStore.instance()
    cs.store(name="run_config", node=RunConfig)
    cs.store(group="trainer", name="default", node=TrainerConfig)
    cs.store(group="logger", name="local", node=LoggerConfig)
    cs.store(group="logger", name="wandb", node=LoggerConfig(kind="wandb"))
    for name, node in optimizers.OPTIMIZERS.items():
        cs.store(group="optim", name=name, node=node)
    for name, node in model.MODELS.items():
        cs.store(group="model", name=name, node=node)
    for name, node in data.DATASETS.items():
        cs.store(group="data", name=name, node=node)
    for name in studies.STUDIES:
        cs.store(group="study", name=name, node=studies.config_class(name))


def renamed_key_errors(overrides: Sequence[str]) -> list[str]:
    """Messages for command-line overrides that use a renamed key (`optim.steps=5`)."""
    errors = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in RENAMED_KEYS:
            errors.append(f"{key} was renamed to {RENAMED_KEYS[key]}; use {RENAMED_KEYS[key]}=...")
        if override.lstrip("+~") in REPLACED_OVERRIDES:
            errors.append(f"{override} is no longer accepted; use {REPLACED_OVERRIDES[override]}")
    return errors


def to_run_config(composed) -> RunConfig:
    """The composed DictConfig as a `RunConfig` object: every `__post_init__` check runs here."""
    from omegaconf import OmegaConf

    from experiments.studies import STUDIES, config_class

    if composed.get("study") is None:
        raise ValueError("no study selected: pick an experiment with +exp=NAME (configs/exp/) "
                         f"or a study with study=NAME; studies: {list(STUDIES)}")  # fmt: skip
    cfg = OmegaConf.to_object(composed)
    if type(cfg.study) is not config_class(cfg.study.name):
        raise ValueError(f"study.name={cfg.study.name!r} does not match the study group's config "
                         f"{type(cfg.study).__name__}; choose a study with study=NAME")  # fmt: skip
    return cfg


def compose(overrides: Sequence[str] = ()) -> RunConfig:
    """The `RunConfig` that `python -m experiments.run OVERRIDES` would run (tests, notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return to_run_config(hydra_compose(config_name="config", overrides=list(overrides)))
