"""The generic training loop every training-style study hands its pure functions to.

    train(ctx, init_fn=..., train_step=..., batch_for_step=..., eval_fn=None, spectra_fn=None)

- `init_fn() -> state`: pytree; `jax.eval_shape(init_fn)` is the orbax restore target.
- `train_step(state, batch) -> (state, metrics)`: pure; jitted once here with the state donated,
  state replicated and batch sharded along "data" over `ctx.mesh`.
- `batch_for_step(k) -> batch`: deterministic in `k`, the number of updates already done
  (the data position), so a checkpoint at step k resumes exactly.
- `eval_fn(state) -> dict`: logged every `trainer.eval_every` steps and at the end.
- `spectra_fn(state, step) -> rows`: logged every `trainer.spectra_every` steps (0 = off),
  at step 0 of a fresh run and at the end.

Steps are counted 1..max_steps: the metrics of the k-th update are logged with `step=k`, and a
checkpoint at step k holds the state after k updates. Metrics of step k are fetched after step k+1
has been dispatched (no host sync per step). A non-finite `metrics[loss_key]` raises
`NonFiniteLossError` naming the step (the last good checkpoint and the metrics so far stay).
SIGTERM/SIGINT (or `trainer.stop_at_step`) save a checkpoint and raise `TrainingInterrupted`.
On resume the metrics/spectra logged after the restored step are dropped first, so an
interrupted-and-resumed run writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from experiments.runtime.checkpoint import (
    Checkpoints,
    abstract_with_sharding,
    resolve_checkpoint_path,
)
from experiments.runtime.mesh import batch_sharded, check_batch_divisible, put_batch, replicated


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float, loss_key: str, last_checkpoint: int | None):
        self.step, self.loss = step, loss
        where = f"step {last_checkpoint}" if last_checkpoint is not None else "none saved"
        super().__init__(
            f"non-finite {loss_key}={loss} at step {step}; last good checkpoint: {where}"
        )


class TrainingInterrupted(Exception):
    """Training stopped early by SIGTERM/SIGINT or `trainer.stop_at_step`, after saving."""

    def __init__(self, step: int, signum: int | None):
        self.step, self.signum = step, signum
        cause = signal.Signals(signum).name if signum else "trainer.stop_at_step"
        super().__init__(f"{cause}: stopped after step {step}; checkpoint saved, re-run to resume")

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)


@dataclasses.dataclass
class TrainResult:
    state: Any
    metrics: dict[str, float]
    step: int
    resumed_from: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainerOptions:
    max_steps: int = 1000
    log_every: int = 10
    eval_every: int = 0
    ckpt_every: int = 0
    keep_ckpts: int = 3
    spectra_every: int = 0
    resume: str = "auto"
    progress: str = "auto"
    stop_at_step: int | None = None
    async_checkpointing: bool = True

    @classmethod
    def from_cfg(cls, trainer_cfg: Mapping[str, Any] | None) -> TrainerOptions:
        trainer_cfg = trainer_cfg or {}
        values = {f.name: trainer_cfg.get(f.name, f.default) for f in dataclasses.fields(cls)}
        options = cls(**values)
        options.validate()
        return options

    def validate(self) -> None:
        if not isinstance(self.max_steps, int) or self.max_steps <= 0:
            raise ValueError(f"trainer.max_steps must be a positive int, got {self.max_steps!r}")
        for name in ("log_every", "keep_ckpts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"trainer.{name} must be a positive int, got {value!r}")
        for name in ("eval_every", "ckpt_every", "spectra_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"trainer.{name} must be an int >= 0 (0 = off), got {value!r}")
        if self.stop_at_step is not None and self.stop_at_step <= 0:
            raise ValueError(
                f"trainer.stop_at_step must be positive or null, got {self.stop_at_step!r}"
            )
        if not self.resume:
            raise ValueError(
                "trainer.resume must be 'auto', 'never' or a checkpoint path, got an empty value"
            )

    def due(self, every: int, step: int) -> bool:
        return every > 0 and step % every == 0


class _StopSignals:
    """Turns the first SIGTERM/SIGINT into a flag; a second SIGINT interrupts immediately."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name} received: saving a checkpoint and stopping",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _format_scalars(values: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={float(v):.4g}" for k, v in values.items() if np.ndim(v) == 0)


def _is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def _restore(ctx, options: TrainerOptions, ckpts: Checkpoints, target: Any):
    """(state, step) from this run's checkpoints or `trainer.resume=<path>`, or None."""
    if options.resume == "never":
        return None
    restored = ckpts.restore(target)
    if restored is None and options.resume != "auto":
        directory, step = resolve_checkpoint_path(options.resume)
        source = Checkpoints(directory, keep=options.keep_ckpts, read_only=True)
        try:
            restored = source.restore(target, step)
        finally:
            source.close()
        if restored is None:
            raise ValueError(
                f"trainer.resume={options.resume!r}: no checkpoint found in {directory}"
            )
    if restored is None:
        return None
    state, meta = restored
    if int(meta.get("seed", ctx.cfg.seed)) != int(ctx.cfg.seed):
        raise ValueError(
            f"checkpoint was written with seed={meta['seed']} "
            f"but this run has seed={ctx.cfg.seed}; "
            "use the same seed, a new run directory, or trainer.resume=never"
        )
    return state, int(meta["step"])


def train(
    ctx,
    *,
    init_fn: Callable[[], Any],
    train_step: Callable[[Any, Any], tuple[Any, Mapping[str, Any]]],
    batch_for_step: Callable[[int], Any],
    eval_fn: Callable[[Any], Mapping[str, Any]] | None = None,
    spectra_fn: Callable[[Any, int], Sequence[Mapping[str, Any]]] | None = None,
    loss_key: str = "loss",
) -> TrainResult:
    """Run (or resume) training to `trainer.max_steps`; see the module docstring."""
    options = TrainerOptions.from_cfg(ctx.cfg.get("trainer"))
    mesh = ctx.mesh
    state_sharding, data_sharding = replicated(mesh), batch_sharded(mesh)
    target = abstract_with_sharding(jax.eval_shape(init_fn), state_sharding)

    ckpts = Checkpoints(
        ctx.checkpoint_dir(), keep=options.keep_ckpts, async_save=options.async_checkpointing
    )
    try:
        restored = _restore(ctx, options, ckpts, target)
        start = 0 if restored is None else restored[1]
        if start > options.max_steps:
            raise ValueError(
                f"the checkpoint is at step {start}, beyond trainer.max_steps={options.max_steps}; "
                "raise max_steps or use a new run directory"
            )
        if start < options.max_steps:  # validate before compiling anything
            check_batch_divisible(batch_for_step(start), mesh)
        if restored is None:
            state = jax.jit(init_fn, out_shardings=state_sharding)()
        else:
            state = restored[0]
            ctx.truncate_after(start)
            print(f"resumed from checkpoint at step {start}", file=sys.stderr, flush=True)
        step_fn = jax.jit(
            train_step,
            in_shardings=(state_sharding, data_sharding),
            out_shardings=(state_sharding, state_sharding),
            donate_argnums=0,
        )
        return _loop(
            ctx,
            options,
            ckpts,
            step_fn,
            state,
            start,
            restored is not None,
            batch_for_step,
            eval_fn,
            spectra_fn,
            loss_key,
        )
    finally:
        ckpts.close()


def _loop(
    ctx,
    options,
    ckpts,
    step_fn,
    state,
    start,
    resumed,
    batch_for_step,
    eval_fn,
    spectra_fn,
    loss_key,
):
    mesh = ctx.mesh
    pending: list = []  # [(step, device metrics)] of the last dispatched step
    last_train: dict[str, Any] = {}
    last_eval: dict[str, Any] = {}
    saved: list[int] = list(ckpts.steps())

    def meta(step: int) -> dict:
        return {"step": step, "data_position": step, "seed": int(ctx.cfg.seed)}

    def flush(progress) -> None:
        nonlocal last_train
        if not pending:
            return
        step, device_metrics = pending.pop()
        host = {
            k: v.item() if hasattr(v, "item") and getattr(v, "size", 2) == 1 else v
            for k, v in jax.device_get(dict(device_metrics)).items()
        }
        loss = host.get(loss_key)
        finite = loss is None or _is_finite(loss)
        if not finite or options.due(options.log_every, step) or step == options.max_steps:
            ctx.log_metrics(step, host)
        if not finite:
            raise NonFiniteLossError(step, loss, loss_key, saved[-1] if saved else None)
        last_train = host
        if loss is not None:
            progress.postfix[loss_key] = float(loss)

    def boundary(step: int, stop: bool) -> None:
        nonlocal last_eval
        spectra_on = spectra_fn is not None and options.spectra_every > 0
        if spectra_on and (options.due(options.spectra_every, step) or step == options.max_steps):
            ctx.log_spectra(step, spectra_fn(state, step))
        if eval_fn is not None and (
            options.due(options.eval_every, step) or step == options.max_steps
        ):
            last_eval = {k: v for k, v in jax.device_get(dict(eval_fn(state))).items()}
            ctx.log_metrics(step, last_eval)
            progress.note(f"eval step {step}: {_format_scalars(last_eval)}")
        if options.due(options.ckpt_every, step) or step == options.max_steps or stop:
            if ckpts.save(step, state, meta(step)):
                saved.append(step)

    if start == 0 and spectra_fn is not None and options.spectra_every > 0:
        ctx.log_spectra(0, spectra_fn(state, 0))

    with (
        _StopSignals() as signals,
        ctx.progress(options.max_steps, "train", initial=start) as progress,
    ):
        step = start
        while step < options.max_steps:
            batch = put_batch(batch_for_step(step), mesh)
            state, device_metrics = step_fn(state, batch)
            flush(progress)
            step += 1
            pending.append((step, device_metrics))
            progress.update(1)
            stop = signals.signum is not None or step == options.stop_at_step
            if (
                stop
                or step == options.max_steps
                or options.due(options.eval_every, step)
                or options.due(options.ckpt_every, step)
                or options.due(options.spectra_every, step)
            ):
                flush(progress)
                boundary(step, stop)
            if stop:
                ckpts.wait()
                raise TrainingInterrupted(step, signals.signum)
        flush(progress)
    if eval_fn is not None and not last_eval:
        last_eval = dict(jax.device_get(dict(eval_fn(state))))
    final = {**last_train, **last_eval}
    return TrainResult(
        state=state, metrics=final, step=step, resumed_from=start if resumed else None
    )
