"""The training loop every training-style study hands its pure functions to.

    result = train(ctx, init=..., step=..., batch=..., evaluate=None, spectra=None)

- `init() -> state`: a pytree; `jax.eval_shape(init)` is the orbax restore target.
- `step(state, batch) -> (state, metrics)`: pure; jitted once here, the state donated and
  replicated, the batch sharded along "data" over `ctx.mesh`.
- `batch(k) -> batch`: deterministic in k, the number of updates already done, so a
  checkpoint at step k resumes exactly.
- `evaluate(state) -> dict`: every `trainer.eval_every` steps and at the end.
- `spectra(state, k) -> rows`: every `trainer.spectra_every` steps (0 = off), at step 0 of a
  fresh run and at the end.

Steps count updates, 1..max_steps. The metrics of step k are fetched after step k+1 has been
dispatched, so the host never waits on the device inside a stretch of plain steps. A
non-finite loss raises `NonFiniteLossError` naming the step and the last good checkpoint;
SIGTERM / SIGINT (or `trainer.stop_at_step`) save a checkpoint and raise `TrainingInterrupted`.
On resume the metrics and spectra logged after the restored step are dropped first, so an
interrupted and resumed run writes the same files as an uninterrupted one.
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

from experiments import rundir
from experiments.runtime.checkpoint import Checkpoints, abstract_with_sharding, restore_for_run
from experiments.runtime.mesh import (
    batch_sharded,
    check_batch_divisible,
    put_batch,
    replicated,
    to_host,
)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float, loss_key: str, last_checkpoint: int | None):
        self.step, self.loss = step, loss
        where = f"step {last_checkpoint}" if last_checkpoint is not None else "none saved"
        super().__init__(f"non-finite {loss_key}={loss} at step {step}; "
                         f"last good checkpoint: {where}")  # fmt: skip


class TrainingInterrupted(Exception):
    """Training stopped early by SIGTERM / SIGINT or `trainer.stop_at_step`, after saving."""

    def __init__(self, step: int, signum: int | None, cause: str | None = None):
        self.step, self.signum = step, signum
        if cause is None:
            cause = signal.Signals(signum).name if signum else "trainer.stop_at_step"
        super().__init__(f"{cause}: stopped after step {step}; checkpoint saved, re-run to resume")

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)


@dataclasses.dataclass
class TrainResult:
    state: Any
    metrics: dict[str, float]  # the last logged train metrics and the last evaluation
    step: int


class _StopSignals:
    """The first SIGTERM / SIGINT becomes a flag (checked after each step); a second SIGINT
    interrupts at once."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: saving a checkpoint and stopping",
              file=sys.stderr, flush=True)  # fmt: skip

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _to_host(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.item() if np.size(v) == 1 else v for k, v in to_host(dict(metrics)).items()}


def _any_process(flag: bool) -> bool:
    """Whether `flag` is set in any process: all processes then stop at the same step."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def _is_finite(value: Any) -> bool:
    return value is None or math.isfinite(float(value))


def train(
    ctx,
    *,
    init: Callable[[], Any],
    step: Callable[[Any, Any], tuple[Any, Mapping[str, Any]]],
    batch: Callable[[int], Any],
    evaluate: Callable[[Any], Mapping[str, Any]] | None = None,
    spectra: Callable[[Any, int], Sequence[Mapping[str, Any]]] | None = None,
    loss_key: str = "loss",
) -> TrainResult:
    """Run (or resume) training to `trainer.max_steps`; see the module docstring."""
    cfg = ctx.cfg.trainer
    state_sharding, batch_sharding = replicated(ctx.mesh), batch_sharded(ctx.mesh)
    target = abstract_with_sharding(jax.eval_shape(init), state_sharding)
    ckpts = Checkpoints(ctx.dir / rundir.CHECKPOINT_DIR, keep=cfg.keep_ckpts,
                        async_save=cfg.async_checkpointing)  # fmt: skip
    try:
        restored = restore_for_run(ckpts, cfg.resume, target, seed=ctx.cfg.seed)
        start = 0 if restored is None else restored[1]
        if start > cfg.max_steps:
            raise ValueError(f"the checkpoint is at step {start}, beyond trainer.max_steps="
                             f"{cfg.max_steps}; raise max_steps or use a new run directory")
        if start < cfg.max_steps:  # a bad batch size fails here, before anything compiles
            check_batch_divisible(batch(start), ctx.mesh)
        if restored is None:
            ctx.truncate_after(-1)  # files of an earlier attempt with no usable checkpoint
            state = jax.jit(init, out_shardings=state_sharding)()
        else:
            state = restored[0]
            ctx.truncate_after(start)
            print(f"resumed from checkpoint at step {start}", file=sys.stderr, flush=True)
        train_step = jax.jit(step, in_shardings=(state_sharding, batch_sharding),
                             out_shardings=(state_sharding, state_sharding), donate_argnums=0)
        spectra_every = cfg.spectra_every if spectra is not None else 0
        if start == 0 and spectra_every:
            ctx.log_spectra(0, spectra(state, 0))

        last_train: dict[str, Any] = {}
        last_eval: dict[str, Any] = {}
        in_flight: tuple[int, Any] | None = None  # (step, device metrics) not yet read back

        def read_back(progress) -> None:
            """Fetch the in-flight step's metrics; log them when due; stop on a non-finite loss."""
            nonlocal in_flight, last_train
            if in_flight is None:
                return
            k, metrics = in_flight
            in_flight, last_train = None, _to_host(metrics)
            loss = last_train.get(loss_key)
            if not _is_finite(loss) or cfg.due(cfg.log_every, k):
                ctx.log_metrics(k, last_train)
            if not _is_finite(loss):
                raise NonFiniteLossError(k, loss, loss_key, ckpts.last_saved())
            if loss is not None:
                progress.postfix[loss_key] = float(loss)

        with _StopSignals() as signals, ctx.progress(cfg.max_steps, "train", start) as progress:
            for k in range(start + 1, cfg.max_steps + 1):
                state, metrics = train_step(state, put_batch(batch(k - 1), ctx.mesh))
                read_back(progress)  # step k-1's metrics, now that step k is dispatched
                ckpts.check()  # a failed background save stops the run now, not at the end
                in_flight = (k, metrics)
                progress.update(1)
                signalled = _any_process(signals.signum is not None)  # a collective when multi-host
                stop = signalled or k == cfg.stop_at_step
                cadences = (cfg.eval_every, cfg.ckpt_every, spectra_every)
                if not (stop or k == cfg.max_steps or any(e and k % e == 0 for e in cadences)):
                    continue
                read_back(progress)
                if spectra_every and cfg.due(spectra_every, k):
                    ctx.log_spectra(k, spectra(state, k))
                if evaluate is not None and cfg.due(cfg.eval_every, k):
                    last_eval = _to_host(evaluate(state))
                    ctx.log_metrics(k, last_eval)
                    shown = " ".join(f"{n}={float(v):.4g}" for n, v in last_eval.items()
                                     if np.ndim(v) == 0)  # fmt: skip
                    progress.note(f"eval step {k}: {shown}")
                if stop or cfg.due(cfg.ckpt_every, k):
                    ckpts.save(k, state, seed=ctx.cfg.seed)
                if stop:
                    ckpts.wait()
                    elsewhere = signalled and signals.signum is None
                    cause = "another process was signalled" if elsewhere else None
                    raise TrainingInterrupted(k, signals.signum, cause)
            read_back(progress)
        if evaluate is not None and not last_eval:  # resumed at max_steps: nothing ran
            last_eval = _to_host(evaluate(state))
        return TrainResult(state=state, metrics={**last_train, **last_eval}, step=cfg.max_steps)
    finally:
        ckpts.close()
