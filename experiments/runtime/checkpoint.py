"""Orbax checkpoints of the train state plus a small JSON of run metadata, verified on restore.

Each checkpoint step directory holds two items: `state` (the pytree, `StandardSave`) and
`meta` (`{"step", "seed", "fingerprint"}`, `JsonSave`; batches are a function of the step, so
the step is also the data position). `fingerprint` is a per-leaf checksum of the state taken
when it was saved. Saves are atomic (orbax writes to a temporary directory and renames).
Restore walks from the newest step down; a step that fails to restore, whose fingerprint
differs from its restored state, or whose metadata names another step is skipped with a
warning naming it and the step tried next, and moved aside into `checkpoints.corrupt/`. Only
a verified checkpoint is restored, or called good.

The checkpoints directory may be an object-store URI (gs://...; orbax writes through epath and
tensorstore and marks a finished step with a commit file where it cannot rename); local paths
are resolved, URIs kept as they are.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from experiments import run_storage, rundir
from experiments.run_storage import AnyPath
from experiments.runtime.mesh import to_host


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def abstract_with_sharding(abstract_state: Any, sharding) -> Any:
    """`jax.eval_shape` output with every leaf given `sharding` (the restore target)."""
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract_state
    )


def resolve_checkpoint_path(path: str | os.PathLike) -> tuple[AnyPath, int | None]:
    """(checkpoints directory, step or None=latest) for a run dir, checkpoints dir or step dir."""
    path = run_storage.as_path(path, resolve=True)
    if not path.exists():
        raise ValueError(f"trainer.resume={str(path)!r}: no such file or directory")
    if (path / rundir.CHECKPOINT_DIR).is_dir():
        return path / rundir.CHECKPOINT_DIR, None
    if path.name.isdigit() and (path / "state").exists():
        return path.parent, int(path.name)
    if any(p.name.isdigit() for p in path.iterdir()):
        return path, None
    raise ValueError(
        f"trainer.resume={str(path)!r} is not a run directory, a checkpoints directory "
        "or a checkpoint step directory"
    )


def _leaf_checksum(x: jax.Array) -> jax.Array:
    """Σᵢ bitsᵢ·(2i+1) mod 2³² over the leaf's 32-bit words: any single flipped bit changes it."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_ or x.dtype.itemsize == 1:
        words = x.astype(jnp.uint32)
    elif x.dtype.itemsize == 2:
        words = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    else:  # 4 bytes → one word, 8 bytes → two
        words = jax.lax.bitcast_convert_type(x, jnp.uint32)
    words = words.ravel()
    weights = 2 * jnp.arange(words.size, dtype=jnp.uint32) + 1
    return jnp.sum(words * weights, dtype=jnp.uint32)


@jax.jit
def _checksums(state: Any) -> list[jax.Array]:
    return [_leaf_checksum(x) for x in jax.tree_util.tree_leaves(state)]


def state_fingerprint(state: Any) -> list[int]:
    """One uint32 checksum per leaf of `state` (in tree order)."""
    return [int(c) for c in np.asarray(to_host(_checksums(state)), np.uint32).ravel()]


class CorruptCheckpoint(Exception):
    """A checkpoint whose contents do not match what was saved."""


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (full disk, unwritable directory, ...)."""


class Checkpoints:
    """Keep-last-N orbax `CheckpointManager` of (state, meta) with a fault-tolerant restore."""

    def __init__(
        self, directory: str | os.PathLike, keep: int, async_save: bool = True,
        read_only: bool = False,
    ):  # fmt: skip
        self.directory = run_storage.as_path(directory, resolve=True)
        if not read_only and jax.process_index() == 0:  # an unwritable directory fails now
            run_storage.make_dir(self.directory)
            probe = self.directory / ".write_probe"
            probe.write_text("ok")
            probe.unlink()
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=async_save,
        )
        self._open()

    def _open(self) -> None:
        self.manager = ocp.CheckpointManager(
            self.directory, options=self._options, item_names=("state", "meta")
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def last_saved(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, seed: int) -> bool:
        """Start saving `step` (in the background when async); an earlier save's error raises."""
        if step in self.manager.all_steps():
            return False
        meta = {"step": int(step), "seed": int(seed), "fingerprint": state_fingerprint(state)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        with self._save_errors(f"saving checkpoint step {step}"):
            self.manager.check_for_errors()
            return self.manager.save(step, args=args, force=True)

    def check(self) -> None:
        """Raise CheckpointSaveError if a background save has failed."""
        with self._save_errors("a background checkpoint save"):
            self.manager.check_for_errors()

    @contextlib.contextmanager
    def _save_errors(self, what: str):
        try:
            yield
        except CheckpointSaveError:
            raise
        except Exception as err:  # orbax reports a full disk as ValueError(RESOURCE_EXHAUSTED)
            raise CheckpointSaveError(
                f"{what} to {self.directory} failed: {type(err).__name__}: {str(err)[:300]}"
            ) from err

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict] | None:
        """Restore `step` (or the newest restorable one); None when there is nothing to restore."""
        candidates = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
        for candidate in candidates:
            try:
                state, meta = self._restore_verified(candidate, abstract_state)
            except Exception as err:  # orbax raises many types for a damaged directory
                if step is not None:
                    raise ValueError(
                        f"cannot restore checkpoint step {step} from {self.directory}: {err}"
                    ) from err
                older = [c for c in candidates if c < candidate]
                then = f"trying step {older[0]}" if older else "no older checkpoint: starting fresh"
                _warn(f"checkpoint step {candidate} in {self.directory} is incomplete or corrupted "
                      f"({type(err).__name__}: {str(err)[:200]}); {then}")  # fmt: skip
                self._move_aside(candidate)
                continue
            return state, meta
        return None

    def _restore_verified(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        )
        restored = self.manager.restore(step, args=args)
        state, meta = restored["state"], dict(restored["meta"])
        if int(meta.get("step", -1)) != step:
            raise CorruptCheckpoint(f"its metadata names step {meta.get('step')!r}")
        expected = meta.get("fingerprint")
        if expected is None:
            raise CorruptCheckpoint("it has no fingerprint to verify its state against")
        actual = state_fingerprint(state)
        if actual != list(expected):
            bad = [i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b]
            raise CorruptCheckpoint(f"its state differs from what was saved (leaves {bad[:5]})")
        return state, meta

    def _move_aside(self, step: int) -> None:
        if self._options.read_only or jax.process_index() != 0:
            return
        src = self.directory / str(step)
        if src.exists():
            aside = self.directory.parent / rundir.CORRUPT_CHECKPOINT_DIR
            dst = aside / f"{step}-{int(time.time())}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            run_storage.move(src, dst)
        self.manager.close()
        self._open()

    def wait(self) -> None:
        with self._save_errors("a checkpoint save"):
            self.manager.wait_until_finished()
            self.manager.check_for_errors()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


def restore_for_run(ckpts: Checkpoints, resume: str, target: Any, seed: int):
    """(state, step) to continue from, or None to start fresh.

    `resume`: "never"; "auto" (this run directory's newest restorable checkpoint); or a path
    (a run dir, checkpoints dir or step dir), used when this run directory has none yet.
    """
    if resume == "never":
        return None
    restored = ckpts.restore(target)
    if restored is None and resume != "auto":
        directory, step = resolve_checkpoint_path(resume)
        source = Checkpoints(directory, keep=1, read_only=True)
        try:
            restored = source.restore(target, step)
        finally:
            source.close()
        if restored is None:
            raise ValueError(f"trainer.resume={resume!r}: no checkpoint found in {directory}")
    if restored is None:
        return None
    state, meta = restored
    if int(meta.get("seed", seed)) != int(seed):
        raise ValueError(
            f"checkpoint was written with seed={meta['seed']} but this run has seed={seed}; "
            "use the same seed, a new run directory, or trainer.resume=never"
        )
    return state, int(meta["step"])
