"""NTK study inputs and models: the CIFAR-10 loader on a small archive in the official python
format, the offline/corrupt-file messages, cifar10_shaped, and the ResNet parameter counts."""

import hashlib
import io
import pickle
import tarfile

import jax
import numpy as np
import pytest

from experiments.studies import _ntk_data as ntk_data
from experiments.studies import _ntk_models as ntk_models

PER_BATCH = 4  # images per data_batch_i in the fake archive: 5 batches → 20 images


def write_fake_cifar10(path, rng):
    """A tar.gz laid out like cifar-10-python.tar.gz: pickled dicts of N×3072 uint8 + labels."""
    images = rng.integers(0, 256, size=(5 * PER_BATCH, 32, 32, 3), dtype=np.uint8)
    with tarfile.open(path, "w:gz") as tar:
        for i in range(5):
            batch = images[i * PER_BATCH : (i + 1) * PER_BATCH]
            # the official rows: 1024 red, then green, then blue values, each image row-major
            rows = batch.transpose(0, 3, 1, 2).reshape(PER_BATCH, 3072)
            blob = pickle.dumps({b"data": rows, b"labels": list(range(PER_BATCH))})
            info = tarfile.TarInfo(f"cifar-10-batches-py/data_batch_{i + 1}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return images


@pytest.fixture
def fake_archive(tmp_path, monkeypatch):
    path = tmp_path / ntk_data.CIFAR10_ARCHIVE
    images = write_fake_cifar10(path, np.random.default_rng(0))
    monkeypatch.setattr(ntk_data, "CIFAR10_MD5", hashlib.md5(path.read_bytes()).hexdigest())
    return path, images


def test_reader_recovers_images_in_hwc_order(fake_archive):
    path, images = fake_archive
    np.testing.assert_array_equal(ntk_data.read_cifar10_archive(path), images)


def test_cifar10_is_a_standardized_random_subset(fake_archive):
    path, images = fake_archive
    x, ident = ntk_data.cifar10(jax.random.PRNGKey(3), 7, data_dir=path.parent, download=False)
    assert x.shape == (7, 32, 32, 3) and x.dtype == np.float32 and ident["size"] == 7
    # float64 reference: per-channel statistics of all training images, then the subset
    ref = images.astype(np.float64) / 255
    ref = (ref - ref.mean(axis=(0, 1, 2))) / ref.std(axis=(0, 1, 2))
    rows = [int(np.argmin(((ref - xi) ** 2).sum(axis=(1, 2, 3)))) for xi in x]
    assert len(set(rows)) == 7
    np.testing.assert_allclose(x, ref[rows], atol=1e-5)
    again, _ = ntk_data.cifar10(jax.random.PRNGKey(3), 7, data_dir=path.parent, download=False)
    np.testing.assert_array_equal(x, again)


def test_download_fetches_once_into_the_data_dir(fake_archive, tmp_path, monkeypatch):
    source, _ = fake_archive
    monkeypatch.setattr(ntk_data, "CIFAR10_URL", source.as_uri())  # file:// stands in for https
    cache = tmp_path / "cache"
    got = ntk_data.cifar10_archive(cache, download=True)
    assert got == cache / ntk_data.CIFAR10_ARCHIVE and got.read_bytes() == source.read_bytes()
    assert not list(cache.glob("*.part"))


def test_offline_without_a_copy_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(ntk_data, "CIFAR10_URL", (tmp_path / "unreachable.tar.gz").as_uri())
    where = tmp_path / "none"
    with pytest.raises(ntk_data.DatasetUnavailable) as err:
        ntk_data.cifar10_archive(where, download=True)
    message = str(err.value)
    for needed in (str(where / ntk_data.CIFAR10_ARCHIVE), "SPECJAX_DATA_DIR",
                   "study.cifar.data_dir", ntk_data.CIFAR10_MD5, "cifar10_shaped"):  # fmt: skip
        assert needed in message
    assert not list(where.glob("*"))  # no partial file left behind
    with pytest.raises(ntk_data.DatasetUnavailable, match="download is off"):
        ntk_data.cifar10_archive(where, download=False)


def test_env_var_and_wrong_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECJAX_DATA_DIR", str(tmp_path))
    assert ntk_data.cifar10_dir() == tmp_path
    (tmp_path / ntk_data.CIFAR10_ARCHIVE).write_bytes(b"not the archive")
    with pytest.raises(
        ntk_data.DatasetUnavailable, match="expected c58f30108f718f92721af3b95e74349a"
    ):
        ntk_data.cifar10_archive()


def test_cifar10_shaped_is_its_own_gaussian_choice():
    x, ident = ntk_data.load("cifar10_shaped", jax.random.PRNGKey(0), 300)
    assert x.shape == (300, 32, 32, 3) and "cifar10_shaped" in ident["name"]
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01


def test_gaussian_draw_i_is_normal_of_fold_in_key_i_whatever_the_chunking(monkeypatch):
    # reference: example i drawn alone from fold_in(key, i); the loader draws in chunks, so a
    # chunk offset (rows numbered from 0 in every chunk), padding kept or a shared key shows
    key = jax.random.PRNGKey(3)
    monkeypatch.setattr(ntk_data, "GAUSSIAN_CHUNK", 4)
    x, _ = ntk_data.gaussian_images(key, 10, (2, 3, 1))
    reference = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), (2, 3, 1)))
                          for i in range(10)])  # fmt: skip
    np.testing.assert_array_equal(x, reference)
    monkeypatch.setattr(ntk_data, "GAUSSIAN_CHUNK", 1024)
    prefix, _ = ntk_data.gaussian_images(key, 7, (2, 3, 1))
    np.testing.assert_array_equal(prefix, reference[:7])
    with pytest.raises(ValueError, match=r"n must be an integer ≥ 1, got 2\.5"):
        ntk_data.gaussian_images(key, 2.5)


@pytest.mark.parametrize(
    ("name", "width", "low", "high"),
    # He et al. 2016, Table 6: 0.27 M (ResNet-20) and 0.85 M (ResNet-56) at width 16; our
    # 1×1 projection shortcuts add 2.6 k (w = 16); width 32 has ≈ 4× the weights.
    [("resnet20", 16, 0.26e6, 0.28e6), ("resnet56", 16, 0.84e6, 0.87e6),
     ("resnet20", 32, 1.05e6, 1.11e6), ("resnet56", 32, 3.35e6, 3.5e6)],
)  # fmt: skip
def test_resnet_parameter_counts(name, width, low, high):
    x = np.zeros((1, 32, 32, 3), np.float32)
    params = jax.eval_shape(ntk_models.make_model(name, width).init, jax.random.PRNGKey(0), x)
    assert low < ntk_models.num_params(params) < high


def test_resnet56_has_nine_blocks_per_stage():
    x = np.zeros((1, 32, 32, 3), np.float32)
    params = jax.eval_shape(ntk_models.make_model("resnet56", 16).init, jax.random.PRNGKey(0), x)
    blocks = [k for k in params["params"] if k.startswith("BasicBlock")]
    assert len(blocks) == 27
    with pytest.raises(ValueError, match="has depth 56"):
        ntk_models.make_model("resnet56", 16, depth=20)
