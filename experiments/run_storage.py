"""Where a run's files live: a local directory (`pathlib`) or an object store (`gs://`, `s3://`,
through `etils.epath`), and the few file operations whose guarantees differ between the two.

                     local directory                      object store (gs://, s3://)
    replace a file   temporary sibling + rename           one upload (objects appear whole)
    append a line    append                               rewrite the object (old bytes + line)
    move a tree      rename                               copy every object, then delete
    `.lock`          fcntl lock, refused while held       a note naming the holder (no lock)

Readers therefore never see half a file on either. What an object store cannot give is mutual
exclusion: two jobs writing one bucket run directory would mix. A multi-process run writes
from process 0 only, so one command per run directory is safe; `.lock` there names the last
holder and a run that finds one says so (a preempted run leaves it; a live one is a mistake).
Local paths stay `pathlib.Path` everywhere, so local behaviour is unchanged.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys
import time
from typing import Union

from etils import epath

AnyPath = Union[pathlib.Path, epath.Path]  # noqa: UP007 — a runtime alias, not an annotation


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI (`gs://bucket/run`) rather than a local file name."""
    return "://" in os.fspath(path)


def as_path(path: str | os.PathLike, *, resolve: bool = False) -> AnyPath:
    """A local path as `pathlib.Path` (`~` expanded; absolute with `resolve`), a URI as
    `epath.Path`. Never calls `resolve()` on a URI (it would turn gs://b/x into <cwd>/gs:/b/x)."""
    if is_remote(path):
        return epath.Path(os.fspath(path))
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/(?!/)", os.fspath(path)):  # not C:/ on Windows
        raise ValueError(f"{os.fspath(path)!r} looks like a URI with one slash too few; write "
                         "it as scheme://bucket/path, e.g. gs://my-bucket/runs/x")  # fmt: skip
    local = pathlib.Path(os.fspath(path)).expanduser()
    return local.resolve() if resolve else local


def make_dir(path: AnyPath) -> None:
    """mkdir -p; a URI whose filesystem package is missing fails here, naming what to install."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except ImportError as err:
        raise ValueError(f"cannot open {str(path)!r}: its filesystem needs a package that is not "
                         f"installed ({err}); for gs:// install gcsfs (pip install gcsfs)"
                         ) from err  # fmt: skip


def replace_file(path: AnyPath, data: str | bytes) -> None:
    """Write `path` so that a reader sees the old or the new contents, never half a file."""
    data = data.encode() if isinstance(data, str) else data
    if is_remote(path):  # an object becomes visible only once its upload is complete
        path.write_bytes(data)
        return
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def append_text(path: AnyPath, text: str) -> None:
    """Append `text`; on an object store (no append) the object is rewritten with it added,
    which costs the file's size per call (metrics.jsonl at the default cadence stays small)."""
    if is_remote(path):
        old = path.read_bytes() if path.exists() else b""
        path.write_bytes(old + text.encode())
        return
    with path.open("a") as f:
        f.write(text)


def move(src: AnyPath, dst: AnyPath) -> None:
    """Move a file or a directory tree. Atomic locally; on an object store each object is
    copied and then the source deleted (an interruption leaves both copies, never neither)."""
    if not is_remote(src):
        os.replace(src, dst)
        return
    if not src.is_dir():
        src.copy(dst, overwrite=True)
        src.unlink()
        return
    for relative, files in walk_files(src):
        target = dst / relative
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            (src / relative / name).copy(target / name, overwrite=True)
    src.rmtree()


def walk_files(root: AnyPath):
    """(directory relative to `root`, its file names) for every directory below `root`.

    Relative because epath's `walk` on an object store yields its paths without the `gs://`."""
    bare = os.fspath(root).split("://", 1)[-1].rstrip("/")
    for directory, _, files in root.walk():
        text = os.fspath(directory).split("://", 1)[-1].rstrip("/")
        if text != bare and not text.startswith(bare + "/"):
            raise RuntimeError(f"walking {root} gave {directory}, which is not below it")
        yield text[len(bare) :].lstrip("/"), files


class HolderNote:
    """`.lock` on an object store: names this process while it writes; removed on `close`."""

    def __init__(self, path: AnyPath, holder: str):
        self.path = path
        if path.exists():
            previous = path.read_text().strip() or "an unknown process"
            print(f"WARNING: {path} names {previous}: a run that stopped without closing (e.g. "
                  "preempted), or one still writing here. An object store cannot lock; if that "
                  "run is alive, stop one of them.", file=sys.stderr, flush=True)  # fmt: skip
        path.write_text(holder)

    def close(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:  # the run's files are written; a leftover note only causes a warning
            pass


def holder_text() -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"pid {os.getpid()} on {os.uname().nodename} since {stamp}\n"
