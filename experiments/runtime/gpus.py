"""One job per GPU: pin a sweep job to its own GPUs through `CUDA_VISIBLE_DEVICES`.

With `hydra/launcher=per_gpu` (joblib, one worker process per GPU; it sets
`SPECJAX_GPUS_PER_JOB=1`) or `trainer.gpus_per_job=g` (which takes precedence), the machine's
N GPUs form N // g slots and job k prefers slot k mod (N // g). Each process claims its slot
with an exclusive lock file held for the process's lifetime: a joblib worker that runs several
jobs keeps the GPUs it started on (JAX cannot move once its backend exists), and a slot taken
by a live worker is skipped for the next free one. Must run before JAX's backend starts.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile
from collections.abc import MutableMapping, Sequence

SLOT_DIR_ENV = "SPECJAX_GPU_SLOT_DIR"  # where slot locks live (default: a per-user temp dir)
GPUS_PER_JOB_ENV = "SPECJAX_GPUS_PER_JOB"  # set by configs/hydra/launcher/per_gpu.yaml
_claimed: tuple[int, list[str], object] | None = None  # (slot, GPUs, lock handle) of this process


def machine_gpus(env: MutableMapping[str, str] = os.environ) -> list[str]:
    """GPU ids a job may use: `CUDA_VISIBLE_DEVICES` when set, else those `nvidia-smi` lists."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def slot_gpus(slot: int, gpus_per_job: int, gpus: Sequence[str]) -> list[str]:
    """The GPUs of slot `slot`: gpus[slot·g : (slot+1)·g]."""
    return list(gpus[slot * gpus_per_job : (slot + 1) * gpus_per_job])


def slot_count(gpus_per_job: int, gpus: Sequence[str]) -> int:
    """N // g slots; ValueError when a job needs more GPUs than the machine has."""
    if gpus_per_job > len(gpus):
        raise ValueError(f"trainer.gpus_per_job={gpus_per_job} but this machine shows "
                         f"{len(gpus)} GPU(s) {list(gpus)} (CUDA_VISIBLE_DEVICES / nvidia-smi); "
                         "use at most that many, or 0 for no pinning")  # fmt: skip
    return len(gpus) // gpus_per_job


def gpus_per_job_from(configured: int, env: MutableMapping[str, str] = os.environ) -> int:
    """`trainer.gpus_per_job` when > 0, else $SPECJAX_GPUS_PER_JOB (0 when unset)."""
    if configured > 0:
        return configured
    raw = env.get(GPUS_PER_JOB_ENV, "").strip() or "0"
    if not raw.isdigit():
        raise ValueError(f"{GPUS_PER_JOB_ENV}={raw!r}: expected a GPU count (an int >= 0)")
    return int(raw)


def _try_lock(path: pathlib.Path):
    import fcntl

    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def claim_slot(job: int, slots: int, slot_dir: pathlib.Path):
    """(slot, lock handle): slot job mod `slots` if free, else the next free one after it."""
    slot_dir.mkdir(parents=True, exist_ok=True)
    for offset in range(slots):
        slot = (job + offset) % slots
        handle = _try_lock(slot_dir / f"slot-{slot}.lock")
        if handle is not None:
            return slot, handle
    raise RuntimeError(f"all {slots} GPU slots in {slot_dir} are held by other processes: run "
                       f"at most {slots} jobs at once (hydra.launcher.n_jobs)")  # fmt: skip


def _default_slot_dir(gpus: Sequence[str]) -> pathlib.Path:
    base = os.environ.get(SLOT_DIR_ENV) or tempfile.gettempdir()
    return pathlib.Path(base) / f"specjax-gpu-slots-{os.getuid()}-{'_'.join(gpus)}"


def _backend_started() -> bool:
    try:  # a private JAX function: if it moves, skip the check rather than fail
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:
        return False
    return backends_are_initialized()


def pin_gpus(job: int | None, gpus_per_job: int,
             env: MutableMapping[str, str] = os.environ,
             slot_dir: pathlib.Path | None = None) -> list[str] | None:  # fmt: skip
    """Set `CUDA_VISIBLE_DEVICES` in `env` to this job's GPUs (once per process); returns them,
    or None when `gpus_per_job` is 0 (all visible GPUs, no pinning). `gpus_per_job` is
    `trainer.gpus_per_job`; 0 defers to $SPECJAX_GPUS_PER_JOB."""
    global _claimed
    gpus_per_job = gpus_per_job_from(gpus_per_job, env)
    if gpus_per_job == 0:
        return None
    if _claimed is not None:  # a reused worker process: JAX already runs on these GPUs
        env["CUDA_VISIBLE_DEVICES"] = ",".join(_claimed[1])
        return _claimed[1]
    if _backend_started():
        raise RuntimeError("trainer.gpus_per_job: JAX's backend already started in this "
                           "process, so CUDA_VISIBLE_DEVICES can no longer choose its GPUs; pin "
                           "first")  # fmt: skip
    gpus = machine_gpus(env)
    slots = slot_count(gpus_per_job, gpus)
    slot, handle = claim_slot(job or 0, slots, slot_dir or _default_slot_dir(gpus))
    mine = slot_gpus(slot, gpus_per_job, gpus)
    _claimed = (slot, mine, handle)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
    return mine
