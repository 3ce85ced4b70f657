"""Inputs for the NTK studies: i.i.d. Gaussian images, sklearn 8×8 digits, CIFAR-10 (local).

Every loader returns `(x_NxHxWxC float32, identity)`, identity = {name, size, sha256 of the
float32 bytes used} for `ctx.record_dataset`; draws are a pure function of the key.
CIFAR-10 is never fetched implicitly: `<data_dir>/cifar-10-python.tar.gz` (data_dir default
`$SPECJAX_DATA_DIR`, else the platformdirs user cache `…/specjax/cifar10`) is checked against
the published MD5; `download=True` tries the official URL once (a clear error when offline).
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

DATASETS = ("gaussian", "digits", "cifar10")
DIGITS_SIZE = 1797
CIFAR10_SIZE = 50_000  # training images
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published by the dataset's authors
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"


class DatasetUnavailable(FileNotFoundError):
    """A data set that is not on this machine and could not be fetched."""


def _identity(name: str, x: np.ndarray) -> dict:
    sha256 = hashlib.sha256(x.tobytes()).hexdigest()
    return {"name": name, "size": int(x.shape[0]), "sha256": sha256}


def _permutation(key: jax.Array, total: int, n: int) -> np.ndarray:
    if not 1 <= n <= total:
        raise ValueError(f"n must be in [1, {total}] for this data set, got {n}")
    return np.asarray(jax.random.permutation(key, total))[:n]


def gaussian_images(key: jax.Array, n: int, shape=(8, 8, 1)) -> tuple[np.ndarray, dict]:
    """n i.i.d. N(0, I) inputs of the given image shape."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    x = np.asarray(jax.random.normal(key, (n, *shape)), np.float32)
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


def cifar10_archive(data_dir=None, download: bool = False) -> Path:
    """Path of the verified CIFAR-10 archive; fetch it once if `download`, else explain."""
    root = cifar10_dir(data_dir)
    path = root / CIFAR10_ARCHIVE
    if not path.exists():
        if not download:
            raise DatasetUnavailable(
                f"CIFAR-10 not found at {path}. Place {CIFAR10_ARCHIVE} (MD5 {CIFAR10_MD5}, "
                f"from {CIFAR10_URL}) there, set SPECJAX_DATA_DIR, or pass download=true "
                "(needs network). The sklearn digits run offline: study.datasets=[digits]."
            )
        root.mkdir(parents=True, exist_ok=True)
        try:
            urllib.request.urlretrieve(CIFAR10_URL, path.with_suffix(".part"))
        except OSError as err:
            raise DatasetUnavailable(
                f"could not download CIFAR-10 from {CIFAR10_URL} ({err}); this machine may "
                f"be offline. Place {CIFAR10_ARCHIVE} in {root} by hand."
            ) from err
        path.with_suffix(".part").rename(path)
    with open(path, "rb") as f:
        md5 = hashlib.file_digest(f, "md5").hexdigest()
    if md5 != CIFAR10_MD5:
        raise DatasetUnavailable(
            f"{path} has MD5 {md5}, expected {CIFAR10_MD5}: corrupt or wrong file"
        )
    return path


def cifar10(
    key: jax.Array, n: int, data_dir=None, download: bool = False
) -> tuple[np.ndarray, dict]:
    """n CIFAR-10 training images (random subset), per-channel standardized, (n, 32, 32, 3)."""
    path = cifar10_archive(data_dir, download)
    with tarfile.open(path) as tar:
        batches = []
        for i in range(1, 6):
            member = tar.extractfile(f"cifar-10-batches-py/data_batch_{i}")
            batches.append(pickle.load(member, encoding="bytes")[b"data"])
    data = np.concatenate(batches).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    x = data[_permutation(key, data.shape[0], n)].astype(np.float32) / 255.0
    x = (x - x.mean(axis=(0, 1, 2))) / x.std(axis=(0, 1, 2))
    x = np.ascontiguousarray(x, np.float32)
    return x, _identity("cifar10_train", x)


def load(name: str, key: jax.Array, n: int, **cifar_kwargs) -> tuple[np.ndarray, dict]:
    """Dispatch by name: "gaussian" (8×8×1 like the digits), "digits", "cifar10"."""
    check_choice(name, "dataset", DATASETS)
    loader = {"gaussian": gaussian_images, "digits": digits, "cifar10": cifar10}[name]
    return loader(key, n, **cifar_kwargs)
