"""Corpus resolution (file, env, cache, offline fallback, explicit error) and batches."""

import hashlib

import numpy as np
import pytest

from experiments.nanogpt import data


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No Shakespeare anywhere and no network: empty env dir and cache, failing download."""
    monkeypatch.setenv("SPECJAX_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setattr("platformdirs.user_cache_dir", lambda *a, **k: str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    return tmp_path


def test_explicit_shakespeare_never_falls_back(nowhere):
    with pytest.raises(FileNotFoundError) as info:
        data.CharDataConfig("shakespeare_char", fallback=None).load()
    message = str(info.value)
    assert str(nowhere / "env" / "tinyshakespeare.txt") in message
    assert str(nowhere / "cache" / "tinyshakespeare.txt") in message
    assert data.SHAKESPEARE_URL in message and "data.path=" in message


def test_offline_fallback_is_loud_and_recorded(nowhere, capsys):
    with pytest.warns(UserWarning, match="offline corpus"):
        corpus = data.CharDataConfig("shakespeare_char", fallback="stdlib_source").load()
    assert "FALLING BACK" in capsys.readouterr().err
    assert corpus.name == "stdlib_source"
    assert corpus.sha256 == hashlib.sha256(data.stdlib_source_text().encode()).hexdigest()
    assert corpus.num_chars > 500_000
    assert corpus.train_tokens.size == int(0.9 * corpus.num_chars)


def test_found_file_is_checksummed(tmp_path, monkeypatch):
    text = "To be, or not to be: that is the question.\n" * 50
    path = tmp_path / "input.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match="sha256"):
        data.CharDataConfig("shakespeare_char", path=str(path), download=False).load()
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", hashlib.sha256(text.encode()).hexdigest())
    corpus = data.CharDataConfig("shakespeare_char", path=str(path), download=False).load()
    assert corpus.source == str(path) and corpus.chars == "".join(sorted(set(text)))
    assert corpus.decode(np.concatenate([corpus.train_tokens, corpus.val_tokens])) == text


def test_env_dir_is_used(tmp_path, monkeypatch):
    text = "abc\n" * 100
    (tmp_path / "tinyshakespeare.txt").write_text(text)
    monkeypatch.setenv("SPECJAX_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", hashlib.sha256(text.encode()).hexdigest())
    corpus = data.CharDataConfig("shakespeare_char", download=False).load()
    assert corpus.source.startswith(str(tmp_path))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "shakespeare"}, "data.name"),
        ({"name": "shakespeare_char", "fallback": "x"}, "fallback"),
    ],
)
def test_bad_data_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.CharDataConfig(**kwargs).load()


def test_batches_are_pure_functions_of_key_and_step():
    import jax

    tokens = np.arange(1000, dtype=np.int32)
    batch = data.make_batch_fn(tokens, 4, 8)
    key = jax.random.PRNGKey(3)
    x0, y0 = batch(key, 5)
    x1, _ = batch(key, 5)
    x2, _ = batch(key, 6)
    assert np.array_equal(x0, x1) and not np.array_equal(x0, x2)
    assert np.array_equal(np.asarray(y0), np.asarray(x0) + 1)  # targets are the next tokens
    va = data.fixed_validation_batches(tokens, 3, 4, 8)
    vb = data.fixed_validation_batches(tokens, 3, 4, 8)
    assert va[0].shape == (3, 4, 8) and np.array_equal(va[0], vb[0])


def test_full_split_windows_predict_every_token_once():
    tokens = np.arange(103, dtype=np.int32)
    x, y, mask = data.full_split_windows(tokens, 10, 4)
    assert x.shape == (3, 4, 10) and mask.sum() == 10
    targets = y.reshape(-1, 10)[mask.reshape(-1) > 0].ravel()
    assert np.array_equal(targets, np.arange(1, 101))


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_bad_explicit_path_fails_even_when_another_copy_exists(tmp_path, monkeypatch, kind):
    """An explicit data.path is the only place looked: no silent switch to another copy."""
    text = "To be, or not to be: that is the question.\n" * 50
    (tmp_path / "tinyshakespeare.txt").write_text(text)
    monkeypatch.setenv("SPECJAX_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", hashlib.sha256(text.encode()).hexdigest())
    assert data.CharDataConfig(download=False).load().source.startswith(str(tmp_path))
    bad = tmp_path / ("nope.txt" if kind == "missing" else "")
    what = "does not exist" if kind == "missing" else "is a directory"
    with pytest.raises(FileNotFoundError, match=f"data.path=.* {what}"):
        data.CharDataConfig(path=str(bad), download=False).load()
