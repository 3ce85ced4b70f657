"""Spectra of every matrix in any parameter tree (flax, haiku, equinox, plain dicts), one row each.

For each 2-D leaf (and each >2-D leaf through a declared view) and each captured activation:
its singular values, spectral and Frobenius norms, stable rank ‖W‖_F²/‖W‖₂², nuclear rank
‖W‖_*²/‖W‖_F² (`specjax.linalg.ranks`' formulas) and the power-law fit of its empirical
spectral density (the eigenvalues σᵢ² of WᵀW; `power_law.fit_power_law`, WeightWatcher's α).

Matrices whose smaller side is at most `full_svd_max_dim` get every singular value (from the
eigenvalues of the float64 Gram on the host); larger ones the top `top_k` by `randomized_svd`,
stable rank by power iteration, no nuclear rank (it needs every σ; NaN), and α fitted to those
top-k eigenvalues only (`spectrum` says which). Non-finite matrices give NaN rows. Leaves
with ndim ≤ 1 (biases, norm scales) and non-float leaves (step counters) are skipped. Leaves
with ndim > 2 follow `view`, as in `specjax.optim`'s `reshape=`:

- "conv": (*window, c_in, c_out) → (prod(window)·c_in, c_out), the matrix that multiplies an
  im2col patch; also right for flax's (..., in, out) multi-head Dense kernels.
- "stack": (*batch, m, n) → one row per matrix, named `path[i]` (scanned layers).
- "skip": leave them out.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from specjax.diagnostics.layer_stats import as_token_matrix
from specjax.diagnostics.power_law import esd, fit_power_law
from specjax.linalg import randomized_svd, stable_rank

VIEWS = ("conv", "stack", "skip")
COLUMNS = (
    "name", "kind", "shape", "view", "rows", "cols", "spectrum", "singular_values",
    "spectral_norm", "frobenius_norm", "stable_rank", "nuclear_rank",
    "alpha", "xmin", "ks_distance", "n_tail", "esd_size",
)  # fmt: skip


def _full_spectrum(w) -> tuple[np.ndarray, float, float, float]:
    """(σ descending, ‖w‖_F, stable rank, nuclear rank) from the float64 Gram on the host.

    σᵢ² are the eigenvalues of the Gram of the smaller side (the ESD itself): an eigh of that
    k×k matrix is several times faster than an SVD of w, and float64 keeps σᵢ accurate down to
    ~1e-6·σ₁. One decomposition serves every column (calling `stable_rank` and `nuclear_rank`
    would take two more); the formulas and conventions are those of `specjax.linalg.ranks`:
    divided by max|w| first, a zero matrix has ranks 0.
    """
    w = np.asarray(w, np.float64)
    if not np.all(np.isfinite(w)):  # a diverged run: NaN row, as specjax.linalg returns
        nan = float("nan")
        return np.full(min(w.shape), nan), nan, nan, nan
    scale = float(np.max(np.abs(w)))
    w_hat = w / (scale if scale > 0 else 1.0)
    gram = w_hat.T @ w_hat if w.shape[0] >= w.shape[1] else w_hat @ w_hat.T
    s_hat = np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0, None))
    sq = float(np.sum(s_hat**2))
    if s_hat[0] == 0:
        return s_hat * scale, 0.0, 0.0, 0.0
    return s_hat * scale, np.sqrt(sq) * scale, sq / s_hat[0] ** 2, np.sum(s_hat) ** 2 / sq


@functools.partial(jax.jit, static_argnums=2)
def _top_spectrum(w, key, top_k):
    frob = jnp.sqrt(jnp.sum(jnp.square(w)))
    _, s, _ = randomized_svd(w, top_k, key=key)
    return s, frob, stable_rank(w, method="power", key=key), jnp.float32(jnp.nan)


def _path_name(path) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def tree_matrices(tree, *, view: str = "conv") -> dict[str, tuple[jax.Array, str, tuple]]:
    """`{name: (matrix, view, original shape)}` for every float leaf with ndim ≥ 2 of `tree`;
    names join the tree path with "/" (flax: `block_0/attn/qkv/kernel`)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = tuple(np.shape(leaf))
        dtype = getattr(leaf, "dtype", np.asarray(leaf).dtype)
        if len(shape) < 2 or not jnp.issubdtype(dtype, jnp.floating):
            continue
        name = _path_name(path)
        leaf = jnp.asarray(leaf, jnp.float32)
        if len(shape) == 2:
            out[name] = (leaf, "matrix", shape)
        elif view == "conv":
            out[name] = (leaf.reshape(-1, shape[-1]), "conv", shape)
        elif view == "stack":
            stacked = leaf.reshape(-1, *shape[-2:])
            for i in range(stacked.shape[0]):
                out[f"{name}[{i}]"] = (stacked[i], "stack", shape)
    return out


def _row(name, kind, w, view, shape, *, full_svd_max_dim, top_k, key) -> dict[str, Any]:
    m, n = w.shape
    if min(m, n) <= full_svd_max_dim:
        spectrum, outs = "full", _full_spectrum(jax.device_get(w))
    else:
        spectrum = "top_k"
        outs = _top_spectrum(w, key, min(top_k, m, n))
    s, frob, st, nr = (np.asarray(v, np.float64) for v in jax.device_get(outs))
    fit = fit_power_law(esd(s))
    return {
        "name": name, "kind": kind, "shape": shape, "view": view, "rows": m, "cols": n,
        "spectrum": spectrum, "singular_values": s,
        "spectral_norm": float(s[0]), "frobenius_norm": float(frob),
        "stable_rank": float(st), "nuclear_rank": float(nr),
        "alpha": fit.alpha, "xmin": fit.xmin, "ks_distance": fit.ks_distance,
        "n_tail": fit.n_tail, "esd_size": fit.n,
    }  # fmt: skip


def spectra_table(
    params,
    activations: Mapping[str, Any] | None = None,
    *,
    view: str = "conv",
    full_svd_max_dim: int = 1024,
    top_k: int = 256,
    key: jax.Array | None = None,
) -> dict[str, list]:
    """One row per matrix of `params` (kind "weight") and per activation (kind "activation",
    `(..., d)` taken as the (tokens, d) matrix): a dict of equal-length columns, `COLUMNS`.

    `pandas.DataFrame(spectra_table(params))` is the table (pandas is not a dependency of the
    core library, so it is not imported here). `key` (default PRNGKey(0)) seeds the randomized
    SVD and power iteration of matrices above `full_svd_max_dim`, folded with the row index.
    """
    for value, arg in ((full_svd_max_dim, "full_svd_max_dim"), (top_k, "top_k")):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if activations is not None and not isinstance(activations, Mapping):
        raise ValueError(f"activations must be a mapping name → array, got {type(activations)}")
    matrices = [(name, "weight", *rest) for name, rest in tree_matrices(params, view=view).items()]
    for name, a in (activations or {}).items():
        a = as_token_matrix(a)
        matrices.append((name, "activation", a.astype(jnp.float32), "tokens", tuple(a.shape)))
    if not matrices:
        shapes = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(params)]
        raise ValueError(
            f"no matrices to analyse: params has no float leaf with ndim ≥ 2 under "
            f"view={view!r} (leaf shapes {shapes[:10]}) and no activations"
        )
    key = jax.random.PRNGKey(0) if key is None else key
    limits = {"full_svd_max_dim": full_svd_max_dim, "top_k": top_k}
    rows = [
        _row(name, kind, w, v, shape, key=jax.random.fold_in(key, i), **limits)
        for i, (name, kind, w, v, shape) in enumerate(matrices)
    ]
    return {c: [r[c] for r in rows] for c in COLUMNS}
