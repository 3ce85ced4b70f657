"""JAX's persistent compilation cache, so a second start of the same command skips compiling.

`trainer.compilation_cache_dir`: a directory, `off`, or null for `$JAX_COMPILATION_CACHE_DIR`,
else `<user cache dir>/specjax/jax_compilation_cache` (platformdirs). Set before anything
compiles; the run record keeps the directory used (`record.json` → "compilation_cache").
"""

from __future__ import annotations

import os
import pathlib

import jax

ENV_VAR = "JAX_COMPILATION_CACHE_DIR"
# Cache every compile that takes longer than this: the evaluation and batch functions are small
# compiles, but a second start only reaches training in seconds if they are cached too.
MIN_COMPILE_TIME_S = 0.1


def cache_dir(setting: str | None) -> str | None:
    """The directory `setting` (a `trainer.compilation_cache_dir` value) names; None for off."""
    if setting == "off":
        return None
    if setting is not None:
        return str(pathlib.Path(setting).expanduser().resolve())
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    import platformdirs

    return str(pathlib.Path(platformdirs.user_cache_dir("specjax")) / "jax_compilation_cache")


def configure(setting: str | None) -> dict:
    """Point JAX's persistent cache at `cache_dir(setting)`; returns the record entry."""
    path = cache_dir(setting)
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return {"dir": None, "setting": setting}
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    return {"dir": path, "setting": setting, "min_compile_time_s": MIN_COMPILE_TIME_S}
