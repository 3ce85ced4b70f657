"""Step 0's spectra, taken while training starts rather than before it.

    first = InitialSpectra(spectra, initial_state, ctx, background=True)
    first.start()                    # once the first block of steps has been dispatched
    first.log_metrics(k, row)        # the trainer's metric rows, held back until step 0 is logged
    first.poll()                     # logs step 0 (then the held rows) if the worker has finished
    first.settle()                   # waits for it: before any other spectra, evaluation or save

The first spectra call traces, compiles (or loads from the persistent cache) and runs the largest
program of a run; before the first training step that cost every start pays in full. Training
donates its state, so the step-0 spectra read a second state made by the same jitted `init`
(bitwise equal). With `background`, a worker thread makes the call while the main thread trains,
so its compile overlaps training; the trainer's metric rows wait until the step-0 spectra are
logged, and a study's own logging from inside `spectra` (tables) runs while nothing else logs:
every file is written in the order of a run that logged step 0 first. Several processes must
launch their collectives in the same order, so there the call is made in the main thread, right
after the first dispatch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class InitialSpectra:
    """The step-0 spectra of `initial_state`, logged through `ctx` once computed."""

    def __init__(
        self,
        spectra: Callable[[Any, int], Sequence[Mapping[str, Any]]],
        initial_state: Any,
        ctx,
        *,
        background: bool,
    ):
        self._spectra, self._state, self._ctx = spectra, initial_state, ctx
        self._background = background
        self._thread: threading.Thread | None = None
        self._rows: Sequence[Mapping[str, Any]] | None = None
        self._error: BaseException | None = None
        self._held: list[tuple[int, dict]] = []
        self.started = self.done = False

    def _compute(self) -> None:
        try:
            self._rows = self._spectra(self._state, 0)
        except BaseException as err:  # re-raised in the main thread by settle()
            self._error = err
        finally:
            self._state = None  # the second state is needed by nothing else

    def start(self) -> None:
        """Begin the step-0 call: in a worker thread, or now (then logged at once)."""
        self.started = True
        if self._background:
            self._thread = threading.Thread(target=self._compute, name="step0-spectra",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        else:
            self._compute()
            self.settle()

    def log_metrics(self, step: int, row: Mapping[str, Any]) -> None:
        """`ctx.log_metrics`, held back while the step-0 spectra are not yet logged."""
        if self.done:
            self._ctx.log_metrics(step, row)
        else:
            self._held.append((step, dict(row)))

    def poll(self) -> None:
        """Log step 0 and the held rows if the worker has finished; never waits."""
        if not self.done and self._thread is not None and not self._thread.is_alive():
            self.settle()

    def settle(self) -> None:
        """Wait for the step-0 spectra, log them, then the held metric rows; raise its error."""
        if self.done:
            return
        if self._thread is not None:
            self._thread.join()
        self.done = True
        try:
            if not self.started:  # training stopped before its first dispatch: nothing to log
                return
            if self._error is not None:
                raise self._error
            self._ctx.log_spectra(0, self._rows)
        finally:
            held, self._held = self._held, []
            for step, row in held:
                self._ctx.log_metrics(step, row)
