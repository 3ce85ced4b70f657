"""What the NTK studies (ntk_rank, ntk_width, ntk_sketch) share: config fields and helpers.

`NTKConfig` holds the fields all three have; each study's `Config` subclasses it, re-declaring
`name` (which stays the first field) and any default it changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import jax
import pandas as pd

from experiments import rundir
from experiments.config import check_choice, check_positive_int
from experiments.studies import _ntk_data as ntk_data
from experiments.studies import _ntk_models as ntk_models
from specjax.ntk import exact_ntk

OUTPUTS = ("logit", "trace")
# gaussian, cifar10_shaped: unbounded
MAX_N = {"digits": ntk_data.DIGITS_SIZE, "cifar10": ntk_data.CIFAR10_SIZE}


@dataclasses.dataclass
class CifarConfig:
    """Where CIFAR-10 is read from, and whether a missing archive is fetched (see _ntk_data)."""

    data_dir: str | None = None  # None = $SPECJAX_DATA_DIR, else the user cache …/specjax/cifar10
    download: bool = True  # fetch the archive once from the official URL if absent (network)


@dataclasses.dataclass
class ModelSpec:
    model: str = "mlp"  # mlp (width = hidden units) | resnet20 | resnet56 | resnet (+ depth)
    width: int = 256


@dataclasses.dataclass
class NTKConfig:
    """The fields every NTK study has."""

    name: str = ""
    output: str = "logit"  # NTK output convention: logit (logit 0) | trace (sum over the 10 logits)
    depth: int | None = None  # mlp hidden layers (None = 3) / model=resnet depth 6k+2 (None = 20)
    norm: str = "bn_eval"  # resnet normalization: bn_eval | layer | none (see _ntk_models.py)
    block_size: int = 128  # examples per Jacobian block
    cache_gb: float = 4.0  # Jacobian blocks kept in memory; beyond this they are recomputed
    cifar: CifarConfig = dataclasses.field(default_factory=CifarConfig)

    def __post_init__(self) -> None:
        check_choice(self.output, "study.output", OUTPUTS)
        if self.depth is not None:
            check_positive_int(self.depth, "study.depth")
        check_choice(self.norm, "study.norm", ntk_models.NORMS)
        check_positive_int(self.block_size, "study.block_size")
        if not (isinstance(self.cache_gb, int | float) and 0 <= self.cache_gb < math.inf):
            raise ValueError(f"study.cache_gb must be a finite number ≥ 0 (GiB; 0 = no cache), "
                             f"got {self.cache_gb!r}")  # fmt: skip

    def check_model(self, model: str, width: int, prefix: str = "study.") -> None:
        """ValueError naming `<prefix>model` / `<prefix>width` / `study.depth` if unbuildable."""
        check_choice(model, f"{prefix}model", ntk_models.MODEL_NAMES)
        check_positive_int(width, f"{prefix}width")
        depth = self.depth
        fixed = ntk_models.RESNET_DEPTHS.get(model)
        if fixed is not None and depth is not None and depth != fixed:
            raise ValueError(f"study.depth={depth} contradicts {prefix}model={model} (depth "
                             f"{fixed}); leave study.depth unset (null)")  # fmt: skip
        if model == "resnet" and depth is not None and (depth < 8 or (depth - 2) % 6):
            raise ValueError(f"study.depth must be 6k + 2 with k ≥ 1 (20, 32, 56, ...) for a "
                             f"resnet ({prefix}model), got {depth}")  # fmt: skip

    def check_data(self, dataset: str, n: int, key: str, n_key: str) -> None:
        """ValueError naming `key` for an unknown data set, `n_key` for n beyond its size."""
        check_choice(dataset, key, ntk_data.DATASETS)
        check_positive_int(n, n_key)
        if dataset in MAX_N and n > MAX_N[dataset]:
            raise ValueError(f"{n_key} must be ≤ {MAX_N[dataset]} (the size of {dataset}), "
                             f"got {n}")  # fmt: skip

    @staticmethod
    def check_nonempty(values: Sequence, key: str, what: str) -> None:
        if not values:
            raise ValueError(f"{key} must be a non-empty list of {what}, got []")

    @staticmethod
    def check_at_least(value: int, key: str, low: int, why: str) -> None:
        """`check_positive_int`, then ValueError naming `key` unless value ≥ low (for `why`)."""
        check_positive_int(value, key)
        if value < low:
            raise ValueError(f"{key} must be ≥ {low} ({why}), got {value}")

    def check_data_files(self, datasets: Sequence[str]) -> None:
        """Fail before any compute if a data set on disk is missing (with what to do)."""
        if "cifar10" in datasets:
            ntk_data.cifar10_archive(self.cifar.data_dir, self.cifar.download)


def model_and_inputs(study: NTKConfig, model: str, width: int, dataset: str, n: int,
                     init_key: jax.Array, data_key: jax.Array):  # fmt: skip
    """(apply_fn, params, x, dataset identity) for one model, data set and pair of keys."""
    cifar = {"data_dir": study.cifar.data_dir, "download": study.cifar.download}
    x, ident = ntk_data.load(dataset, data_key, n, **(cifar if dataset == "cifar10" else {}))
    net = ntk_models.make_model(model, width, depth=study.depth, norm=study.norm)
    params = net.init(init_key, x[:1])
    return net.apply, params, x, ident


def ntk(study: NTKConfig, apply_fn, params, x) -> jax.Array:
    """The exact (n, n) NTK with the study's output convention, block size and cache."""
    return exact_ntk(apply_fn, params, x, output=study.output, block_size=study.block_size,
                     cache_bytes=int(study.cache_gb * 2**30))  # fmt: skip


def read_tables(run_dirs: Sequence[Path], name: str) -> pd.DataFrame:
    """Table `name` of every run that has one, stacked (a run that failed early has none)."""
    frames = []
    for run_dir in run_dirs:
        with contextlib.suppress(FileNotFoundError):
            frames.append(rundir.read_table(run_dir, name))
    if not frames:
        raise ValueError(f"none of the runs {[str(d) for d in run_dirs]} has a {name!r} table")
    return pd.concat(frames, ignore_index=True)
