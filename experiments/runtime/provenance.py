"""What ran, for record.json: git SHA and dirty flag, package versions, devices, command."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import pathlib
import platform
import subprocess
import sys
from typing import Any

import jax

PACKAGES = (
    "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "hydra-core", "omegaconf",
    "numpy", "pandas", "pyarrow", "wandb", "specjax",
)  # fmt: skip
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def git_state(root: pathlib.Path = REPO_ROOT) -> dict[str, Any]:
    """{"sha": HEAD or None, "dirty": bool or None} of this code's checkout (read-only)."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):  # no git, not a checkout, a failed command
            return None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "sha": sha.strip() if sha else None,
        "dirty": None if status is None else bool(status.strip()),
    }


def start_entry(overrides: list[str]) -> dict[str, Any]:
    """When, where and from which code and command this run (or resume) started."""
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "overrides": list(overrides),
        "argv": list(sys.argv),
        "host": platform.node(),
    }


def environment() -> dict[str, Any]:
    """Package versions and devices, recorded once per run directory."""
    packages: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    # An editable install keeps the metadata of the version it was installed at; the code that
    # ran is the imported package's (its git state is in "started").
    import specjax

    packages["specjax"] = specjax.__version__
    devices = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }
    return {"packages": packages, "devices": devices}
