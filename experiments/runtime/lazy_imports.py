"""Heavy modules that a run does not need before its first training step, imported lazily.

    defer_heavy_imports()   # in the entry point, before anything imports them

Composing the config imports every study (each registers its `Config`), and with them plotting
and statistics modules (matplotlib.pyplot, scipy.stats, pandas: about 3 s of a 2-core CPU's
start) that a run touches only when it writes tables or draws figures, after training has begun.
Each module in `DEFERRED` is entered in `sys.modules` as a stand-in: `import x` and
`from pkg import x` succeed at once, and the first attribute read imports the real module and
copies its namespace into the stand-in. (`importlib.util.LazyLoader` cannot do this here: the
import statement itself reads `__spec__`, which makes it load at once.) Only the entry point
calls this; library code and tests import normally.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types

DEFERRED = ("pandas", "matplotlib.pyplot", "scipy.stats", "scipy.optimize")
_LOCK = threading.RLock()  # a worker thread may touch a stand-in while the main thread does


class _StandIn(types.ModuleType):
    """Takes the real module's place in `sys.modules` until one of its attributes is read."""

    def __getattr__(self, attr: str):  # only called for names the stand-in does not hold
        name = self.__name__
        with _LOCK:
            if sys.modules.get(name) is self:
                del sys.modules[name]  # let the import system run the real module
                try:
                    real = importlib.import_module(name)
                except BaseException:
                    sys.modules[name] = self
                    raise
                self.__dict__.update(real.__dict__)
        return getattr(sys.modules[name], attr)


def defer(name: str) -> None:
    """Make `import name` lazy (a no-op when it is already imported or not installed)."""
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)  # imports the parent package, not the module
    except ImportError:
        return
    if spec is None:
        return
    stand_in = _StandIn(name)
    stand_in.__spec__ = spec
    # No `__path__`: importing a submodule first reads it, which runs the real package.
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, stand_in)  # what `import parent.child` would do


def defer_heavy_imports() -> None:
    # The studies select matplotlib's Agg backend when imported (`matplotlib.use("Agg")`), which
    # switches pyplot's backend, loading it, unless Agg is already the configured one.
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in DEFERRED:
        defer(name)
