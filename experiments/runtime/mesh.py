"""Data-parallel mesh (one axis "data" over all devices): replicated parameters, split batches."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def looks_multihost() -> bool:
    """True when the environment says several processes were launched together."""
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        return True
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(os.environ.get(name, "1") or 1) > 1:
            return True
    return any(os.environ.get(n) for n in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS"))


def _cluster_detects_itself() -> bool:
    """TPU pods and SLURM / Open MPI jobs, where `jax.distributed.initialize()` finds its peers."""
    keys = ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "SLURM_NTASKS",
            "OMPI_COMM_WORLD_SIZE")  # fmt: skip
    return any(os.environ.get(k) for k in keys)


def maybe_initialize_distributed(mode: str) -> bool:
    """Whether it ran `jax.distributed.initialize()`: for "on", or "auto" in a multi-host env
    (`mode` is `trainer.distributed`, checked by `TrainerConfig`).

    Once per process (a second call, e.g. the next job of a Hydra sweep, does nothing). Outside
    TPU pods and SLURM, `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` name
    the peers. CPU collectives go through gloo. Must run before anything touches the backend.
    """
    if jax.distributed.is_initialized():
        return False
    if mode == "off" or (mode == "auto" and not looks_multihost()):
        return False
    explicit = {}
    if not _cluster_detects_itself():
        names = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise ValueError(
                f"multi-process run outside a TPU pod or SLURM: set {', '.join(names)}"
                f" (missing: {', '.join(missing)}), or trainer.distributed=off"
            )
        explicit = {"coordinator_address": os.environ["JAX_COORDINATOR_ADDRESS"],
                    "num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
                    "process_id": int(os.environ["JAX_PROCESS_ID"])}  # fmt: skip
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**explicit)
    return True


def to_host(tree: Any) -> Any:
    """Device values as numpy, also for replicated arrays spanning other processes' devices."""

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))  # replicated: every shard holds the value
        return np.asarray(jax.device_get(x))

    return jax.tree_util.tree_map(fetch, tree)


def make_data_mesh() -> Mesh:
    """1-D mesh with axis "data" over all (global) devices."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


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
