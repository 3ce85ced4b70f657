"""Character-level text data: where the corpus comes from, the vocabulary, and batches.

Resolution of `shakespeare_char` (first hit wins): `data.path`, then
`$SPECJAX_DATA_DIR/tinyshakespeare.txt`, then the user cache directory
(`platformdirs.user_cache_dir("specjax")`), then a download from the canonical URL into that
cache. Every copy is checked against the published sha256. When nothing is found and the
data config allows a fallback (`data=shakespeare_char_or_offline`, the headline default), the
run trains on `stdlib_source` instead, an offline corpus present on every Python install
(the source text of a fixed, sorted list of standard-library modules), and says so loudly.
An explicit `data=shakespeare_char` never falls back.

Batches are a pure function of `(data_key, step)`; validation uses a fixed set of batches
drawn from a constant key, identical for every seed and optimizer.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import os
import sys
import urllib.request
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.config import check_choice

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FILENAME = "tinyshakespeare.txt"
# Pure-Python standard-library modules present from 3.11 on; their source is ~1 MB of text.
STDLIB_MODULES = (
    "argparse", "ast", "calendar", "configparser", "contextlib", "dataclasses", "difflib",
    "enum", "fractions", "functools", "gettext", "heapq", "inspect", "locale", "logging",
    "optparse", "pickle", "pprint", "random", "shutil", "statistics", "string", "textwrap",
    "threading", "tokenize", "trace",
)  # fmt: skip
CORPORA = ("shakespeare_char", "stdlib_source")
VALIDATION_SEED = 1729  # the fixed validation batches never depend on the run's seed


@dataclasses.dataclass(frozen=True)
class CharCorpus:
    """A text split into train/validation token arrays with its character vocabulary."""

    name: str
    sha256: str
    chars: str  # vocabulary: sorted distinct characters; token id = index
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    source: str  # where the text came from (a path, a URL, or "python stdlib <version>")

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def num_chars(self) -> int:
        return int(self.train_tokens.size + self.val_tokens.size)

    def encode(self, text: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"characters {unknown!r} are not in this corpus's vocabulary")
        return np.array([index[c] for c in text], dtype=np.int32)

    def decode(self, tokens) -> str:
        return "".join(self.chars[int(t)] for t in tokens)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stdlib_source_text() -> str:
    """The offline corpus: concatenated source of `STDLIB_MODULES`, in that sorted order."""
    parts = []
    for name in sorted(STDLIB_MODULES):
        spec = importlib.util.find_spec(name)
        parts.append(Path(spec.origin).read_text(encoding="utf-8"))
    return "\n".join(parts)


def shakespeare_candidates(path: str | None) -> list[Path]:
    """The places `shakespeare_char` is looked for, in order (the download target is last)."""
    import platformdirs

    candidates = []
    if path:
        candidates.append(Path(path).expanduser())
    if os.environ.get("SPECJAX_DATA_DIR"):
        candidates.append(Path(os.environ["SPECJAX_DATA_DIR"]).expanduser() / SHAKESPEARE_FILENAME)
    candidates.append(Path(platformdirs.user_cache_dir("specjax")) / SHAKESPEARE_FILENAME)
    return candidates


def _checked(raw: bytes, where: str) -> bytes:
    digest = _sha256(raw)
    if digest != SHAKESPEARE_SHA256:
        raise ValueError(
            f"{where} has sha256 {digest}, expected {SHAKESPEARE_SHA256} for Tiny Shakespeare; "
            "point data.path at an unmodified copy of "
            f"{SHAKESPEARE_URL}"
        )
    return raw


def _download(target: Path, timeout_s: float) -> bytes | None:
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=timeout_s) as response:
            raw = response.read()
    except OSError as err:  # URLError, timeouts, DNS failures: treat as "no network"
        print(f"[data] download of {SHAKESPEARE_URL} failed: {err}", file=sys.stderr)
        return None
    raw = _checked(raw, SHAKESPEARE_URL)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(raw)
    return raw


def find_shakespeare(path: str | None, download: bool, timeout_s: float = 20.0):
    """Return `(bytes, source)` for Tiny Shakespeare, or `(None, places_looked)`.

    An explicit `path` is the only place looked: a missing file or a directory is an error,
    never a reason to use another copy."""
    if path:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            what = "is a directory" if explicit.is_dir() else "does not exist"
            raise FileNotFoundError(f"data.path={str(explicit)!r} {what}; it must name the Tiny "
                                    f"Shakespeare text file (sha256 {SHAKESPEARE_SHA256})")
        return _checked(explicit.read_bytes(), str(explicit)), str(explicit)
    candidates = shakespeare_candidates(path)
    for candidate in candidates:
        if candidate.is_file():
            return _checked(candidate.read_bytes(), str(candidate)), str(candidate)
    looked = [str(c) for c in candidates]
    if download:
        raw = _download(candidates[-1], timeout_s)
        if raw is not None:
            return raw, SHAKESPEARE_URL
        looked.append(SHAKESPEARE_URL)
    return None, looked


def split_corpus(name: str, text: str, source: str, train_fraction: float = 0.9) -> CharCorpus:
    """nanoGPT's `prepare.py`: sorted character vocabulary, first 90% train, last 10% val."""
    chars = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    tokens = np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))
    n_train = int(len(tokens) * train_fraction)
    return CharCorpus(
        name=name,
        sha256=_sha256(text.encode("utf-8")),
        chars=chars,
        train_tokens=tokens[:n_train],
        val_tokens=tokens[n_train:],
        source=source,
    )


@dataclasses.dataclass
class CharDataConfig:
    """Which character corpus to train on (`data=shakespeare_char` etc.; see module docstring)."""

    name: str = "shakespeare_char"  # shakespeare_char | stdlib_source
    path: str | None = None  # an explicit file; a missing file is an error, never a fallback
    fallback: str | None = None  # null | stdlib_source: the corpus to use when none is found
    download: bool = True
    train_fraction: float = 0.9

    def __post_init__(self) -> None:
        check_choice(self.name, "data.name", CORPORA)
        check_choice(self.fallback, "data.fallback", (None, "stdlib_source"))
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"data.train_fraction must be in (0, 1), got {self.train_fraction!r}")

    def load(self) -> CharCorpus:
        """Resolve and split the corpus; see the module docstring for the search order."""
        if self.name == "stdlib_source":
            version = f"python stdlib {sys.version_info.major}.{sys.version_info.minor}"
            return split_corpus(self.name, stdlib_source_text(), version, self.train_fraction)
        raw, found = find_shakespeare(self.path, self.download)
        if raw is not None:
            return split_corpus(self.name, raw.decode("utf-8"), found, self.train_fraction)
        how = (
            f"download it from {SHAKESPEARE_URL} (sha256 {SHAKESPEARE_SHA256}) and pass "
            "data.path=/path/to/input.txt, or put it at $SPECJAX_DATA_DIR/"
            f"{SHAKESPEARE_FILENAME}, or at {found[-2] if self.download else found[-1]}"
        )
        if self.fallback is None:
            raise FileNotFoundError(
                f"Tiny Shakespeare not found; looked in: {', '.join(found)}. To provide it: {how}."
            )
        banner = "=" * 78
        message = (
            f"\n{banner}\nTiny Shakespeare NOT FOUND (looked in: {', '.join(found)}).\n"
            f"FALLING BACK to the offline corpus '{self.fallback}' (Python standard-library "
            "source).\n"
            f"Results are NOT comparable to Shakespeare runs. To use Shakespeare: {how}.\n{banner}"
        )
        print(message, file=sys.stderr)
        warnings.warn(f"training on offline corpus {self.fallback!r}: Tiny Shakespeare not found",
                      stacklevel=2)  # fmt: skip
        return CharDataConfig(self.fallback, train_fraction=self.train_fraction).load()


DATASETS = {
    # Tiny Shakespeare (1,115,394 chars, 65 symbols); a missing file is an error.
    "shakespeare_char": CharDataConfig(),
    # The nanogpt experiments' default: Tiny Shakespeare, or with no file and no network the
    # offline corpus, announced in a banner and recorded in record.json.
    "shakespeare_char_or_offline": CharDataConfig(fallback="stdlib_source"),
    # The source text of a fixed list of standard-library modules (≈1 MB, on every Python);
    # its sha256 depends on the Python version.
    "stdlib_source": CharDataConfig(name="stdlib_source", download=False),
}


@functools.partial(jax.jit, static_argnums=(3, 4))
def _random_windows(tokens_N, key, step, batch_size: int, context_length: int):
    starts_B = jax.random.randint(
        jax.random.fold_in(key, step), (batch_size,), 0, tokens_N.size - context_length
    )
    idx_BxT = starts_B[:, None] + jnp.arange(context_length)[None, :]
    return tokens_N[idx_BxT], tokens_N[idx_BxT + 1]


def make_batch_fn(tokens: np.ndarray, batch_size: int, context_length: int):
    """A jitted `(key, step) -> (x_BxT, y_BxT)`: random windows, a pure function of the step."""
    if tokens.size <= context_length + 1:
        raise ValueError(
            f"split of {tokens.size} tokens is too short for context_length={context_length}"
        )
    # An argument, not a closed-over constant: a constant would be baked into every executable
    # (and every persistent-cache entry) that traces `batch`.
    tokens_N = jnp.asarray(tokens)

    def batch(key: jax.Array, step) -> tuple[jax.Array, jax.Array]:
        return _random_windows(tokens_N, key, step, batch_size, context_length)

    return batch


def fixed_validation_batches(
    val_tokens: np.ndarray, num_batches: int, batch_size: int, context_length: int
) -> tuple[jax.Array, jax.Array]:
    """`num_batches` batches `(x_KxBxT, y_KxBxT)` from a constant key, equal across runs."""
    batch = make_batch_fn(val_tokens, batch_size, context_length)
    key = jax.random.key(VALIDATION_SEED)
    xs, ys = zip(*(batch(key, i) for i in range(num_batches)), strict=True)
    return jnp.stack(xs), jnp.stack(ys)


def full_split_windows(
    tokens: np.ndarray, context_length: int, windows_per_batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping windows covering the split, padded to whole batches.

    Returns `(x_KxWxT, y_KxWxT, mask_KxW)`: every token after the first is predicted exactly
    once, from the preceding characters of its window.
    """
    n_windows = (tokens.size - 1) // context_length
    usable = n_windows * context_length
    x_NxT = tokens[:usable].reshape(n_windows, context_length)
    y_NxT = tokens[1 : usable + 1].reshape(n_windows, context_length)
    n_batches = -(-n_windows // windows_per_batch)
    pad = n_batches * windows_per_batch - n_windows
    mask_N = np.concatenate([np.ones(n_windows, np.float32), np.zeros(pad, np.float32)])
    x_NxT = np.concatenate([x_NxT, np.zeros((pad, context_length), np.int32)])
    y_NxT = np.concatenate([y_NxT, np.zeros((pad, context_length), np.int32)])
    shape = (n_batches, windows_per_batch, context_length)
    return x_NxT.reshape(shape), y_NxT.reshape(shape), mask_N.reshape(n_batches, -1)
