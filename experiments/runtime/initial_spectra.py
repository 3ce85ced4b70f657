"""Step 0's spectra, taken once the first training block has run rather than before it.

    step0_state = init_state()             # a second initial state, made before training
    ...                                    # the first block is dispatched and finishes
    log_initial_spectra(spectra, step0_state, ctx)

The first spectra call traces and compiles (or loads from the persistent cache) a program of
its own; made after the first dispatch, that cost stays out of the start-up time (time to the
first training step). Training donates its state, so the step-0 spectra read a second state
made by the same jitted `init` (bitwise equal). The call is made in the main thread, after the
first block has finished: two XLA:CPU programs in flight at once (a block and the spectra)
deadlocked a vmapped sweep, and several processes must launch their collectives in the same
order. Nothing else is logged meanwhile, so step 0 is logged before any later step's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def log_initial_spectra(
    spectra: Callable[[Any, int], Sequence[Mapping[str, Any]]], initial_state: Any, ctx
) -> None:
    """`ctx.log_spectra(0, spectra(initial_state, 0))`: step 0's rows, of the initial state."""
    ctx.log_spectra(0, spectra(initial_state, 0))
