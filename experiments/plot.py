"""`python -m experiments.plot RUN_DIR [RUN_DIR ...] [--out DIR]`: the studies' standard figures.

Run directories (or sweep directories holding them) are grouped by `study.name`; each study
module's `plot(run_dirs, out_dir) -> list[Path]` writes PNGs. Default `out_dir`: the run's
`figures/` for one run, else `figures/` in the runs' common parent directory. A figure whose
data the runs lack is skipped with one line on stderr saying why (e.g. the spectra figures of
runs made with trainer.spectra_every=0); the others are still drawn.

    python -m experiments.plot outputs/nanogpt_muon/<time>     # → <time>/figures/*.png
    python -m experiments.plot multirun/quickstart/<time>      # every job of a sweep
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence

from experiments.rundir import find_run_dirs, load_run


def plot_runs(
    paths: Sequence[str | pathlib.Path], out_dir: pathlib.Path | None = None
) -> list[pathlib.Path]:
    """Call each study's `plot` on its runs; returns the written figure paths."""
    from experiments.studies import study_module

    run_dirs = find_run_dirs(paths)
    by_study: dict[str, list[pathlib.Path]] = {}
    for run_dir in run_dirs:
        name = load_run(run_dir).study
        if name is None:
            raise ValueError(f"{run_dir} has no study.name in its config.yaml")
        by_study.setdefault(name, []).append(run_dir)
    written: list[pathlib.Path] = []
    for name, dirs in by_study.items():
        module = study_module(name)
        if not callable(getattr(module, "plot", None)):
            print(f"study {name!r} defines no plot(run_dirs, out_dir); skipped", file=sys.stderr)
            continue
        if out_dir is not None:
            target = pathlib.Path(out_dir)
        elif len(dirs) == 1:
            target = dirs[0] / "figures"
        else:
            target = pathlib.Path(os.path.commonpath([p.resolve() for p in dirs])) / "figures"
        target.mkdir(parents=True, exist_ok=True)
        written.extend(pathlib.Path(p) for p in module.plot(dirs, target))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.plot",
        description=__doc__.split("\n", 1)[1].strip(),  # the docstring after its usage line
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run directories or sweep directories")  # fmt: skip
    parser.add_argument("--out", type=pathlib.Path, default=None, metavar="DIR",
                        help="where to write the PNGs (default: see above)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        paths = plot_runs(args.runs, args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
