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
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "sha": sha.strip() if sha else None,
        "dirty": None if status is None else bool(status.strip()),
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info() -> dict[str, Any]:
    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def start_entry(overrides: list[str]) -> dict[str, Any]:
    """When, where and from which code and command this run (or resume) started."""
    return {"time": now(), "git": git_state(), "overrides": list(overrides),
            "argv": list(sys.argv), "host": platform.node()}  # fmt: skip


def environment() -> dict[str, Any]:
    """Package versions and devices, recorded once per run directory."""
    return {"packages": package_versions(), "devices": device_info()}
