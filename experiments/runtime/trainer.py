"""The training loop every training-style study hands its pure functions to.

    result = train(ctx, init=..., step=..., batch=..., evaluate=None, spectra=None)

- `init() -> state`: a pytree; `jax.eval_shape(init)` is the orbax restore target.
- `step(state, batch) -> (state, metrics)`: pure; jitted once here, the state donated and
  replicated, the batch sharded along "data" over `ctx.mesh`.
- `batch(k) -> batch`: deterministic in k, the number of updates already done, so a
  checkpoint at step k resumes exactly.
- `evaluate(state) -> dict`: every `trainer.eval_every` steps and at the end.
- `spectra(state, k) -> rows`: every `trainer.spectra_every` steps (0 = off), at step 0 of a
  fresh run and at the end; step 0's once the first block has run, so they do not delay the
  first step.

Steps count updates, 1..max_steps. `trainer.steps_per_dispatch` steps run as one jitted
`lax.scan` (`experiments.runtime.step_blocks`; 1 = one plain jitted step per dispatch); blocks end
early at every evaluation, checkpoint, spectra and stop step, so those cadences stay exact. A
block's metrics are fetched after the next block has been dispatched, so the host never waits
on the device between evaluations. With `trainer.log_throughput` and a study that gives
`tokens_per_step`, each logged row also gets `step_time_s` (device time per step of its block,
compilation left out), `tokens_per_s` and, with `flops_per_step`, `mfu`; `record.json` →
"startup" → "first_step_s" is the seconds from process start to the first training dispatch.
A non-finite loss raises `NonFiniteLossError` naming the first such step and the last good
checkpoint; SIGTERM / SIGINT (checked once per block) or `trainer.stop_at_step` save a
checkpoint and raise `TrainingInterrupted`.
On resume the metrics and spectra logged after the restored step are dropped first, so an
interrupted and resumed run writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from experiments import rundir
from experiments.runtime import step_blocks, throughput
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


def _row(metrics: Mapping[str, Any], i: int | None) -> dict[str, Any]:
    """Row `i` of a block's stacked host metrics (None: the metrics of a single step)."""
    row = {}
    for name, value in metrics.items():
        value = np.asarray(value if i is None else value[i])
        row[name] = value.item() if value.size == 1 else value
    return row


@dataclasses.dataclass
class _Block:
    """A dispatched block not yet read back: steps first..first+count-1."""

    first: int
    count: int
    metrics: Any
    stacked: bool
    began: float  # when the host handed it over (after any compilation)
    timed: bool  # False when its dispatch compiled: its step time would be wrong


def _timed_call(fn, *args) -> tuple[Any, float, bool]:
    """(fn(*args), seconds the call blocked the host, whether it compiled)."""
    before = fn._cache_size() if hasattr(fn, "_cache_size") else None
    start = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - start
    compiled = before is not None and fn._cache_size() > before
    return out, seconds, compiled


def train(
    ctx,
    *,
    init: Callable[[], Any],
    step: Callable[[Any, Any], tuple[Any, Mapping[str, Any]]],
    batch: Callable[[int], Any],
    evaluate: Callable[[Any], Mapping[str, Any]] | None = None,
    spectra: Callable[[Any, int], Sequence[Mapping[str, Any]]] | None = None,
    loss_key: str = "loss",
    tokens_per_step: int | None = None,
    flops_per_step: float | None = None,
) -> TrainResult:
    """Run (or resume) training to `trainer.max_steps`; see the module docstring.

    `tokens_per_step` and `flops_per_step` (model FLOPs of one update) turn the logged step time
    into tokens/s and MFU."""
    cfg = ctx.cfg.trainer
    # Wall-clock metrics make metrics.jsonl differ between otherwise identical runs: only studies
    # that declare their work per step (tokens) get them.
    log_throughput = getattr(cfg, "log_throughput", False) and tokens_per_step is not None
    block_len = getattr(cfg, "steps_per_dispatch", 1)
    state_sharding, batch_sharding = replicated(ctx.mesh), batch_sharded(ctx.mesh)
    target = abstract_with_sharding(jax.eval_shape(init), state_sharding)
    ckpts = Checkpoints(ctx.dir / rundir.CHECKPOINT_DIR, keep=cfg.keep_ckpts,
                        async_save=cfg.async_checkpointing)  # fmt: skip
    step0_state = None  # a second initial state: step 0's spectra, after the first block
    try:
        restored = restore_for_run(ckpts, cfg.resume, target, seed=ctx.cfg.seed)
        start = 0 if restored is None else restored[1]
        if start > cfg.max_steps:
            raise ValueError(
                f"the checkpoint is at step {start}, beyond trainer.max_steps="
                f"{cfg.max_steps}; raise max_steps or use a new run directory"
            )
        if start < cfg.max_steps:  # a bad batch size fails here, before anything compiles
            check_batch_divisible(batch(start), ctx.mesh)
        peak = None
        if log_throughput and flops_per_step and start < cfg.max_steps:
            peak = throughput.resolve_peak(cfg.peak_flops)
            if hasattr(ctx, "record_entry"):
                ctx.record_entry("throughput", {"peak_flops": peak,
                                                "flops_per_step": float(flops_per_step),
                                                "tokens_per_step": tokens_per_step})  # fmt: skip
        init_state = jax.jit(init, out_shardings=state_sharding)
        if restored is None:
            ctx.truncate_after(-1)  # files of an earlier attempt with no usable checkpoint
            state = init_state()
        else:
            state = restored[0]
            ctx.truncate_after(start)
            print(f"resumed from checkpoint at step {start}", file=sys.stderr, flush=True)
        if block_len == 1:
            train_step = jax.jit(step, in_shardings=(state_sharding, batch_sharding),
                                 out_shardings=(state_sharding, state_sharding),
                                 donate_argnums=0)  # fmt: skip
        else:
            train_block = step_blocks.make_block_step(
                step, block_len, state_sharding, step_blocks.block_sharded(ctx.mesh)
            )
        spectra_every = cfg.spectra_every if spectra is not None else 0
        first_call = {"evaluate": True, "spectra": True}

        def call_once_timed(name, fn, *args, progress=None):
            """The first evaluation / spectra call compiles: keep it out of the progress rate."""
            began = time.perf_counter()
            out = fn(*args)
            if first_call[name]:
                first_call[name] = False
                if progress is not None and hasattr(progress, "exclude"):
                    progress.exclude(time.perf_counter() - began)
            return out

        # Step 0's spectra are taken once training runs (`reached_training`), from a second
        # initial state made by the same jitted `init` (bitwise equal): the first is donated to
        # the first block.
        if start == 0 and spectra_every:
            step0_state = init_state()
            first_call["spectra"] = False  # its compile is timed below

        last_train: dict[str, Any] = {}
        last_eval: dict[str, Any] = {}
        in_flight: _Block | None = None
        last_ready = 0.0  # when the host last saw a block finish

        def read_back(progress) -> None:
            """Fetch the in-flight block's metrics; log the rows due; stop at a non-finite loss."""
            nonlocal in_flight, last_train, last_ready
            if in_flight is None:
                return
            block, in_flight = in_flight, None
            host = to_host(block.metrics)
            ready = time.perf_counter()
            timing = {}
            if log_throughput and block.timed:
                step_time = (ready - max(block.began, last_ready)) / block.count
                timing = throughput.throughput_metrics(
                    step_time, tokens_per_step, flops_per_step, peak and peak["flops"]
                )
            last_ready = ready
            for i in range(block.count):
                k = block.first + i
                row = _row(host, i if block.stacked else None)
                last_train = {**row, **timing}
                loss = row.get(loss_key)
                if not _is_finite(loss) or cfg.due(cfg.log_every, k):
                    ctx.log_metrics(k, last_train)
                if not _is_finite(loss):
                    progress.update(i + 1)
                    raise NonFiniteLossError(k, loss, loss_key, ckpts.last_saved())
            progress.update(block.count)
            loss = last_train.get(loss_key)
            if loss is not None and np.size(loss) == 1:
                progress.postfix[loss_key] = float(loss)

        def dispatch(state, k: int, n: int, progress):
            """Dispatch steps k+1..k+n; returns the new state and the in-flight block."""
            batches = [batch(j) for j in range(k, k + n)]
            if block_len == 1:
                args = (state, put_batch(batches[0], ctx.mesh))
                (state, metrics), seconds, compiled = _timed_call(train_step, *args)
            else:
                blocked = step_blocks.put_block(batches, block_len, ctx.mesh)
                args = (state, blocked, np.int32(n))
                (state, metrics), seconds, compiled = _timed_call(train_block, *args)
            if compiled and hasattr(progress, "exclude"):
                progress.exclude(seconds)
            began = time.perf_counter()
            return state, _Block(k + 1, n, metrics, block_len > 1, began, not compiled)

        cadences = (cfg.eval_every, cfg.ckpt_every, spectra_every)

        def reached_training(progress) -> None:
            """The first block is running: note the start-up time, log step 0's spectra."""
            nonlocal step0_state
            seconds = throughput.seconds_since_process_start()
            if seconds is not None and hasattr(ctx, "record_entry"):
                ctx.record_entry("startup", {"first_step_s": round(seconds, 3)})
            if step0_state is not None:
                # After the first block has finished, in the main thread: two XLA:CPU programs in
                # flight at once (a block and the spectra) deadlocked a vmapped sweep, and several
                # processes must launch their collectives in the same order.
                jax.block_until_ready(state)
                began = time.perf_counter()
                ctx.log_spectra(0, spectra(step0_state, 0))
                step0_state = None  # needed by nothing else
                if hasattr(progress, "exclude"):  # computed here: not training
                    progress.exclude(time.perf_counter() - began)

        with _StopSignals() as signals, ctx.progress(cfg.max_steps, "train", start) as progress:
            k = start
            while k < cfg.max_steps:
                stop_step = step_blocks.next_stop(k, cfg.max_steps, cadences, [cfg.stop_at_step])
                n = min(block_len, stop_step - k)
                state, dispatched = dispatch(state, k, n, progress)
                if k == start:
                    reached_training(progress)
                read_back(progress)  # the previous block's metrics, now that this one is queued
                ckpts.check()  # a failed background save stops the run now, not at the end
                in_flight, k = dispatched, k + n
                signalled = _any_process(signals.signum is not None)  # a collective when multi-host
                stop = signalled or k == cfg.stop_at_step
                if not (stop or k == stop_step):
                    continue
                read_back(progress)
                if spectra_every and cfg.due(spectra_every, k):
                    ctx.log_spectra(k, call_once_timed("spectra", spectra, state, k,
                                                       progress=progress))  # fmt: skip
                if evaluate is not None and cfg.due(cfg.eval_every, k):
                    last_eval = _to_host(call_once_timed("evaluate", evaluate, state,
                                                         progress=progress))  # fmt: skip
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
