"""Progress reporting: a rich bar on a terminal, periodic plain lines otherwise.

`Progress(total, desc, mode).update(n=1, **postfix)`, mode auto (rich on a TTY)|rich|plain|off.
`exclude(seconds)` leaves time out of the rate and ETA (the trainer passes compilation time, so
the first line's ETA is not inflated by compiling).
"""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Context manager over `total` units of work (steps, sweep points)."""

    def __init__(
        self,
        total: int,
        desc: str,
        mode: str = "auto",
        initial: int = 0,
        every_s: float = 10.0,
        stream=None,
    ):
        if mode not in ("auto", "rich", "plain", "off"):
            raise ValueError(f"progress mode must be auto|rich|plain|off, got {mode!r}")
        self.total, self.desc, self.done = int(total), desc, int(initial)
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.mode, self.every_s = mode, every_s
        self._bar = self._task = None
        self._start = self._last_print = time.perf_counter()
        self._start_done = self.done
        self._excluded_s = 0.0
        self.postfix: dict[str, Any] = {}

    def __enter__(self) -> Progress:
        if self.mode == "rich":
            from rich import progress as rich

            self._bar = rich.Progress(
                rich.TextColumn("{task.description}"),
                rich.BarColumn(),
                rich.MofNCompleteColumn(),
                rich.TimeElapsedColumn(),
                rich.TimeRemainingColumn(),
                rich.TextColumn("{task.fields[postfix]}"),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.desc, total=self.total, completed=self.done, postfix=""
            )
        return self

    def _postfix_text(self) -> str:
        shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in self.postfix.items()}
        return " ".join(f"{k}={v}" for k, v in shown.items())

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start - self._excluded_s
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        head = f"{self.desc}: {self.done}/{self.total} [{rate:.3g} it/s, eta {eta:.0f}s]"
        return f"{head} {self._postfix_text()}".rstrip()

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        self.postfix.update(postfix)
        if self.mode == "rich":
            self._bar.update(self._task, advance=n, postfix=self._postfix_text())
        elif self.mode == "plain":
            now = time.perf_counter()
            if now - self._last_print >= self.every_s or self.done >= self.total:
                self._last_print = now
                print(self._line(), file=self.stream, flush=True)

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (e.g. compiling) out of the rate and ETA; a rich bar's own rate only
        counts time between updates, so it needs nothing."""
        self._excluded_s += max(0.0, float(seconds))

    def note(self, text: str) -> None:
        """A one-off line (e.g. evaluation results): above the bar, or as a plain line."""
        if self.mode == "rich" and self._bar is not None:
            self._bar.console.print(text, highlight=False)
        elif self.mode == "plain":
            print(text, file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self.mode == "rich" and self._bar is not None:
            self._bar.__exit__(*exc)
