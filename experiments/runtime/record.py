"""The run directory as a record of what ran.

Files written at start (process 0 only):
- `config.yaml`: the resolved config; `overrides.yaml`: the command-line overrides;
- `record.json`: git SHA + dirty flag, package versions, JAX devices, command, time, datasets;
  a re-run in the same directory (resume) appends an entry to `record.json["resumes"]`.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys
from typing import Any

import jax
from omegaconf import DictConfig, OmegaConf

RECORD_FILE = "record.json"
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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _atomic_write_text(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_start_record(run_dir: pathlib.Path, cfg: DictConfig, overrides: list[str]) -> dict:
    """Write config/overrides/record at start; on a re-run append a "resumes" entry instead."""
    run_dir = pathlib.Path(run_dir)
    entry = {
        "time": _now(),
        "git": git_state(),
        "overrides": list(overrides),
        "argv": list(sys.argv),
        "host": platform.node(),
    }
    path = run_dir / RECORD_FILE
    if path.exists():
        record = json.loads(path.read_text())
        record.setdefault("resumes", []).append(entry)
    else:
        record = {
            "started": entry,
            "packages": package_versions(),
            "devices": device_info(),
            "datasets": [],
            "resumes": [],
        }
        _atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        _atomic_write_text(
            run_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides)))
        )
    _atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return record


def add_dataset(run_dir: pathlib.Path, dataset: dict[str, Any]) -> None:
    """Record a dataset's identity (replacing an entry with the same name)."""
    path = pathlib.Path(run_dir) / RECORD_FILE
    record = json.loads(path.read_text()) if path.exists() else {"datasets": []}
    others = [d for d in record.get("datasets", []) if d.get("name") != dataset["name"]]
    record["datasets"] = [*others, dataset]
    _atomic_write_text(path, json.dumps(record, indent=1) + "\n")
