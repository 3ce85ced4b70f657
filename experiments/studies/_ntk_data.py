"""Inputs for the NTK studies: Gaussian images, sklearn 8×8 digits, CIFAR-10 and its shape.

Every loader returns `(x_NxHxWxC float32, identity)`, identity = {name, size, sha256 of the
float32 bytes used} for `ctx.record_dataset`; draws are a pure function of the key.
  "gaussian"        i.i.d. N(0, 1) 8×8×1 (the digits' shape)
  "digits"          sklearn's 1797 8×8 digits (ship with sklearn: offline)
  "cifar10"         the 50,000 CIFAR-10 training images, per-channel standardized
  "cifar10_shaped"  i.i.d. N(0, 1) 32×32×3: CIFAR-10's shape and scale, not its content
"cifar10_shaped" is only ever used when asked for; a missing CIFAR-10 is an error, never a
silent switch to it. CIFAR-10 is read from `<data_dir>/cifar-10-python.tar.gz` (data_dir:
the config's `cifar.data_dir`, else `$SPECJAX_DATA_DIR`, else the platformdirs user cache
`…/specjax/cifar10`); when absent and `download` is on (the default) the official archive
is fetched there once; the file is checked against the published MD5 either way.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import jax
import numpy as np

from experiments.config import check_choice

DATASETS = ("gaussian", "digits", "cifar10", "cifar10_shaped")
DIGITS_SIZE = 1797
CIFAR10_SIZE = 50_000  # training images
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published by the dataset's authors
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MEMBERS = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
CIFAR10_SHAPE = (32, 32, 3)


class DatasetUnavailable(FileNotFoundError):
    """A data set that is not on this machine and could not be fetched."""


def _identity(name: str, x: np.ndarray) -> dict:
    sha256 = hashlib.sha256(x.tobytes()).hexdigest()
    return {"name": name, "size": int(x.shape[0]), "sha256": sha256}


def _permutation(key: jax.Array, total: int, n: int) -> np.ndarray:
    if not 1 <= n <= total:
        raise ValueError(f"n must be in [1, {total}] for this data set, got {n}")
    return np.asarray(jax.random.permutation(key, total))[:n]


GAUSSIAN_CHUNK = 1024  # examples drawn per XLA program: bounds the generator's peak memory


def gaussian_images(key: jax.Array, n: int, shape=(8, 8, 1)) -> tuple[np.ndarray, dict]:
    """n i.i.d. N(0, I) inputs of the given image shape.

    Example i is drawn from `fold_in(key, i)`, so it depends on the key and i alone: the first
    m of n draws are the m draws, and the chunking below changes no value. One program for all
    n would hold its random bits and counters at once (2.6 GB for 50,000 CIFAR-shaped inputs).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer ≥ 1, got {n!r}")
    draw = jax.jit(jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape)))
    x = np.empty((n, *shape), np.float32)
    for start in range(0, n, GAUSSIAN_CHUNK):
        # a fixed chunk length (the last one padded) keeps one compiled program
        rows = np.arange(start, start + GAUSSIAN_CHUNK, dtype=np.uint32)
        stop = min(start + GAUSSIAN_CHUNK, n)
        x[start:stop] = np.asarray(draw(rows))[: stop - start]
    return x, _identity(f"gaussian{'x'.join(map(str, shape))}", x)


def digits(key: jax.Array, n: int) -> tuple[np.ndarray, dict]:
    """n of the 1797 sklearn 8×8 digits (random subset from key), standardized, (n, 8, 8, 1)."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32)  # ships with sklearn: no network
    images = (images - images.mean()) / images.std()
    x = np.ascontiguousarray(images[_permutation(key, DIGITS_SIZE, n)][..., None])
    return x, _identity("sklearn_digits", x)


def cifar10_dir(data_dir: str | os.PathLike | None = None) -> Path:
    if data_dir:
        return Path(data_dir)
    if os.environ.get("SPECJAX_DATA_DIR"):
        return Path(os.environ["SPECJAX_DATA_DIR"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("specjax")) / "cifar10"


def _provide_hint(path: Path) -> str:
    return (
        f"Provide it: copy {CIFAR10_ARCHIVE} (MD5 {CIFAR10_MD5}, from {CIFAR10_URL}) to {path}, "
        "or put it in a directory named by $SPECJAX_DATA_DIR or study.cifar.data_dir=DIR. "
        "For CIFAR-shaped Gaussian inputs without the file, choose the data set cifar10_shaped."
    )


def cifar10_archive(data_dir=None, download: bool = True) -> Path:
    """Path of the MD5-verified CIFAR-10 archive, fetched once if absent and `download`."""
    root = cifar10_dir(data_dir)
    path = root / CIFAR10_ARCHIVE
    if not path.exists():
        if not download:
            raise DatasetUnavailable(
                f"CIFAR-10 not found at {path} (download is off). " + _provide_hint(path)
            )
        part = path.with_name(CIFAR10_ARCHIVE + ".part")
        try:
            root.mkdir(parents=True, exist_ok=True)
            urllib.request.urlretrieve(CIFAR10_URL, part)
        except OSError as err:
            part.unlink(missing_ok=True)
            raise DatasetUnavailable(
                f"CIFAR-10 not found at {path}, and downloading {CIFAR10_URL} failed ({err}): "
                "this machine may be offline. " + _provide_hint(path)
            ) from err
        part.rename(path)
    with open(path, "rb") as f:
        md5 = hashlib.file_digest(f, "md5").hexdigest()
    if md5 != CIFAR10_MD5:
        raise DatasetUnavailable(
            f"{path} has MD5 {md5}, expected {CIFAR10_MD5}: corrupt or wrong file. "
            "Delete it to download again. " + _provide_hint(path)
        )
    return path


def read_cifar10_archive(path: str | os.PathLike) -> np.ndarray:
    """The training images of an archive in the official python format, (N, 32, 32, 3) uint8.

    Each `cifar-10-batches-py/data_batch_i` is a pickled dict whose b"data" is N×3072 uint8,
    rows laid out channel-major (1024 red, 1024 green, 1024 blue values, each row-major).
    """
    batches = []
    with tarfile.open(path) as tar:
        for name in CIFAR10_MEMBERS:
            try:
                member = tar.extractfile(name)
            except KeyError:
                member = None
            if member is None:
                raise DatasetUnavailable(f"{path} has no {name}: not the python-format archive")
            data = np.asarray(pickle.load(member, encoding="bytes")[b"data"])
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise DatasetUnavailable(
                    f"{path}:{name} b'data' must be uint8 of shape (N, 3072), "
                    f"got {data.dtype} {data.shape}"
                )
            batches.append(data)
    return np.concatenate(batches).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def cifar10(
    key: jax.Array, n: int, data_dir=None, download: bool = True
) -> tuple[np.ndarray, dict]:
    """n CIFAR-10 training images (random subset), per-channel standardized, (n, 32, 32, 3).

    The channel mean and sd are those of all training images (the usual preprocessing).
    """
    images = read_cifar10_archive(cifar10_archive(data_dir, download))
    # one channel at a time in float32 (all three at once would be 600 MB)
    stats = [(ch.mean(), ch.std()) for ch in (images[..., c] / np.float32(255) for c in range(3))]
    mean, sd = (np.array(v, np.float32) for v in zip(*stats, strict=True))
    x = images[_permutation(key, images.shape[0], n)].astype(np.float32) / 255.0
    x = np.ascontiguousarray((x - mean) / sd, np.float32)
    return x, _identity("cifar10_train", x)


def cifar10_shaped(key: jax.Array, n: int) -> tuple[np.ndarray, dict]:
    """n i.i.d. N(0, 1) inputs of CIFAR-10's shape 32×32×3 (standardized CIFAR's scale)."""
    x, _ = gaussian_images(key, n, CIFAR10_SHAPE)
    return x, _identity("cifar10_shaped_gaussian32x32x3", x)


def load(name: str, key: jax.Array, n: int, **cifar_kwargs) -> tuple[np.ndarray, dict]:
    """Dispatch by name (see the module doc); only "cifar10" takes `cifar_kwargs`."""
    check_choice(name, "dataset", DATASETS)
    loaders = {"gaussian": gaussian_images, "digits": digits, "cifar10": cifar10,
               "cifar10_shaped": cifar10_shaped}  # fmt: skip
    loader = loaders[name]
    return loader(key, n, **cifar_kwargs)
