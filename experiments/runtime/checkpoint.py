"""Orbax checkpoints of the train state plus a small JSON of run metadata.

Each checkpoint step directory holds two items: `state` (the pytree, `StandardSave`) and
`meta` (`{"step", "seed"}`, `JsonSave`; batches are a function of the step, so the step is
also the data position). Saves are atomic (orbax writes to a
temporary directory and renames); restore walks from the newest step down and skips, with a
warning, any step that fails to restore (half-written or corrupted), moving it aside into
`checkpoints.corrupt/` so the step can be written again.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import time
from typing import Any

import jax
import orbax.checkpoint as ocp


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def abstract_with_sharding(abstract_state: Any, sharding) -> Any:
    """`jax.eval_shape` output with every leaf given `sharding` (the restore target)."""
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract_state
    )


def resolve_checkpoint_path(path: str | pathlib.Path) -> tuple[pathlib.Path, int | None]:
    """(checkpoints directory, step or None=latest) for a run dir, checkpoints dir or step dir."""
    path = pathlib.Path(path).expanduser().resolve()
    if not path.exists():
        raise ValueError(f"trainer.resume={str(path)!r}: no such file or directory")
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", None
    if path.name.isdigit() and (path / "state").exists():
        return path.parent, int(path.name)
    if any(p.name.isdigit() for p in path.iterdir()):
        return path, None
    raise ValueError(
        f"trainer.resume={str(path)!r} is not a run directory, a checkpoints directory "
        "or a checkpoint step directory"
    )


class Checkpoints:
    """Keep-last-N orbax `CheckpointManager` of (state, meta) with a fault-tolerant restore."""

    def __init__(
        self, directory: pathlib.Path, keep: int, async_save: bool = True, read_only: bool = False
    ):
        self.directory = pathlib.Path(directory).resolve()
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
        if step in self.manager.all_steps():
            return False
        meta = {"step": int(step), "seed": int(seed)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        return self.manager.save(step, args=args, force=True)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict] | None:
        """Restore `step` (or the newest restorable one); None when there is nothing to restore."""
        candidates = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
        for candidate in candidates:
            try:
                restored = self.manager.restore(
                    candidate,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                    ),
                )
            except Exception as err:  # orbax raises many types for a damaged directory
                if step is not None:
                    raise ValueError(
                        f"cannot restore checkpoint step {step} from {self.directory}: {err}"
                    ) from err
                _warn(
                    f"checkpoint step {candidate} in {self.directory} is incomplete or corrupted "
                    f"({type(err).__name__}: {str(err)[:200]}); falling back to the previous one"
                )
                self._move_aside(candidate)
                continue
            return restored["state"], dict(restored["meta"])
        return None

    def _move_aside(self, step: int) -> None:
        if self._options.read_only or jax.process_index() != 0:
            return
        src = self.directory / str(step)
        if src.exists():
            dst = self.directory.parent / "checkpoints.corrupt" / f"{step}-{int(time.time())}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
        self.manager.close()
        self._open()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
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
