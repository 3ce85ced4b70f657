"""Data-parallel mesh and shardings: one axis "data" over all devices.

Parameters are replicated (`P()`), batches are split along their leading axis (`P("data")`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

def looks_multihost() -> bool:
    """True when the environment says several processes were launched together."""
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts:
        return True
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(os.environ.get(name, "1") or 1) > 1:
            return True
    return any(os.environ.get(n) for n in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS"))


def maybe_initialize_distributed(mode: str) -> bool:
    """Call `jax.distributed.initialize()` for `mode="auto"` (when multi-host env) or `"on"`.

    Must run before anything touches the JAX backend. Returns whether it initialized.
    """
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"trainer.distributed must be 'auto', 'on' or 'off', got {mode!r}")
    if mode == "off" or (mode == "auto" and not looks_multihost()):
        return False
    jax.distributed.initialize()
    return True


def make_data_mesh(devices: list | None = None) -> Mesh:
    """1-D mesh with axis "data" over all (global) devices."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_divisible(batch: Any, mesh: Mesh) -> None:
    """ValueError unless every batch leaf has a leading axis divisible by the device count."""
    n = mesh.devices.size
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        shape = np.shape(leaf)
        if len(shape) == 0 or shape[0] % n != 0:
            name = jax.tree_util.keystr(path) or "batch"
            raise ValueError(
                f"batch leaf {name} has shape {shape}: its leading (batch) axis must be divisible "
                f"by the device count {n}; choose a batch size that is a multiple of {n}"
            )


def put_batch(batch: Any, mesh: Mesh) -> Any:
    """Place a host batch (the same global batch on every process) sharded along "data"."""
    sharding = batch_sharded(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)

    def put(leaf):
        leaf = np.asarray(leaf)
        return jax.make_array_from_callback(leaf.shape, sharding, lambda idx: leaf[idx])

    return jax.tree_util.tree_map(put, batch)
