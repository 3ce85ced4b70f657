"""SPECTRA (Jiang, Semenov & Stich 2026): spectrally clipped base-optimizer directions.

    X ← (1 − λη) X − α η H_c(U)

U is the base optimizer's direction (Adam's m̂/(√v̂ + ε), the sign of Nesterov momentum, AdEMAMix's
mix), H_c the soft spectral clip σ ↦ σ/√(1 + σ²/c²) (vectors: g/√(1 + ‖g‖²/c²)), η the learning
rate, λ the decoupled weight decay. α per matrix: "official" (default) is the published code's
√max(1, rows/cols) of the *torch* layout, i.e. √max(1, fan_out/fan_in) for a kernel and
√max(1, vocab/d) for an embedding table (stored (vocab, d) in both frameworks); "muon" is
√max(1, fan_out/fan_in) everywhere; None is 1. Vectors: α = 1. Applied to every parameter. As
c → ∞, H_c(U) → U to float32 rounding, and c = inf gives H_c(U) = U exactly, so with α = 1
SPECTRA is its base optimizer step for step.

Gradient path, in the published order (mlolab/llm-spectral-clipping, `src/optim/base.py`):
`pre_clip=c_pre` soft-clips the raw 2-D gradients, then `global_norm_clip` rescales the whole
gradient to global norm ≤ that value, then the base optimizer. `constant_clr_warmup=W`: for
t < W both clip levels are scaled by η(W)/η(t) (c_t·η(t) and c_pre,t·η(t) held at their
post-warm-up values), as the official code does with its `warmup_steps`.

Deliberate differences from the official code: (1) vectors are clipped smoothly,
g/√(1 + ‖g‖²/c²) for every g; the official returns g unchanged when ‖g‖ ≤ c (a jump at
‖g‖ = c). (2) The matrix clip is iterated to convergence in float32; the official runs 10
bfloat16 Newton–Schulz steps (`ns_float32=False`), which under-clip when σ_max ≫ c. (3) At t = 0
with a warm-up from η = 0 the clip levels are +inf (the official warm-up starts at η_peak/100).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.contrib

from specjax.optim import _validate
from specjax.optim._matrices import resolve_views
from specjax.optim.clip import check_clip_args, clip_tree, init_norm_stats
from specjax.optim.labels import path_str
from specjax.optim.polar_update import shape_scale

ALPHAS = ("official", "muon", None)

# Path components (lower-cased) of embedding tables: stored (num_embeddings, features) by flax
# and torch alike, so the official α = √max(1, rows/cols) is √max(1, vocab/d) on them.
EMBEDDING_COMPONENTS = frozenset(
    {
        "embed", "embedding", "embeddings", "wte", "wpe", "tok_embed", "pos_embed",
        "token_embedding", "position_embedding",
    }
)  # fmt: skip


def is_embedding_table(path: str) -> bool:
    """Default rule for alpha="official": a path with an embedding component (flax `Embed`'s
    `embedding`, nanoGPT's `wte` / `wpe`)."""
    return any(part.lower() in EMBEDDING_COMPONENTS for part in path.split("/"))


class SpectraState(NamedTuple):
    """count: steps taken; base: the base optimizer's state; clip_level: c_t of the last step;
    spectral_norm: {path: ‖U‖₂ of the base direction before clipping (per matrix; ‖U‖ for
    vectors)}; pre_clip_spectral_norm: {path: ‖G‖₂ of the raw gradient} (empty if no pre_clip).
    """

    count: jax.Array
    base: optax.OptState
    decay: optax.OptState
    clip_level: jax.Array
    spectral_norm: dict[str, jax.Array]
    pre_clip_spectral_norm: dict[str, jax.Array]


def _lr_at(learning_rate, count):
    return learning_rate(count) if callable(learning_rate) else learning_rate


def _clip_level(c, learning_rate, count, warmup: int):
    """c, or c·η(W)/η(t) during the first W steps (c·η held constant through warm-up).

    The official code holds c·η_peak; η(W) is the peak of a warm-up-then-decay schedule."""
    c = jnp.asarray(c, jnp.float32)
    if warmup == 0 or not callable(learning_rate):
        return c
    lr_t = jnp.asarray(learning_rate(count), jnp.float32)
    lr_end = jnp.asarray(learning_rate(warmup), jnp.float32)
    held = c * lr_end / jnp.maximum(lr_t, jnp.finfo(jnp.float32).tiny)
    warm = jnp.where(count < warmup, jnp.minimum(held, jnp.finfo(jnp.float32).max), c)
    return jnp.where(jnp.isposinf(c), c, warm)  # c = ∞ (no clipping) stays ∞


def spectra(
    base: optax.GradientTransformation,
    c: float,
    *,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: float = 0.0,
    weight_decay_mask=None,
    pre_clip: float | None = None,
    kind: str = "soft",
    iters: int | None = None,
    alpha: str | None = "official",
    constant_clr_warmup: int = 0,
    global_norm_clip: float | None = None,
    embedding_fn=None,
    reshape=None,
    track_stats: bool = True,
) -> optax.GradientTransformation:
    """SPECTRA around `base` (a direction: no learning rate, no weight decay inside it).

    `c` > 0 (inf: no clipping). `global_norm_clip` > 0 clips the gradient's global norm after
    `pre_clip` and before `base` (the official order; put no global-norm clip before this
    transform). `embedding_fn` (path string -> bool; default `is_embedding_table`) marks the
    embedding tables for alpha="official". `reshape` declares leaves of ndim > 2 ("conv",
    "stack", "vector") as in `scale_by_polar`; `weight_decay_mask` is optax's mask (tree or
    params -> tree of bools; None = all leaves).
    """
    check_clip_args(c, kind, iters)
    _validate.check_learning_rate("learning_rate", learning_rate)
    _validate.check_nonnegative("weight_decay", weight_decay)
    if pre_clip is not None:
        _validate.check_positive("pre_clip", pre_clip, allow_inf=True)
    if global_norm_clip is not None:
        _validate.check_positive("global_norm_clip", global_norm_clip)
    _validate.check_choice("alpha", alpha, ALPHAS)
    if embedding_fn is not None and not callable(embedding_fn):
        raise ValueError(f"embedding_fn must be a callable path -> bool, got {embedding_fn!r}")
    is_embedding = embedding_fn or is_embedding_table
    if (
        isinstance(constant_clr_warmup, bool)
        or not isinstance(constant_clr_warmup, int)
        or (constant_clr_warmup < 0)
    ):
        raise ValueError(f"constant_clr_warmup must be an int >= 0, got {constant_clr_warmup!r}")
    base = optax.with_extra_args_support(base)
    decay = optax.add_decayed_weights(weight_decay, weight_decay_mask)

    def init_fn(params):
        views = resolve_views(params, reshape)
        pre_norms = {}
        if pre_clip is not None and track_stats:
            pre_norms = {
                p: v for p, v in init_norm_stats(views, True).items() if views[p].is_matrix
            }
        return SpectraState(
            count=jnp.zeros([], jnp.int32),
            base=base.init(params),
            decay=decay.init(params),
            clip_level=jnp.asarray(c, jnp.float32),
            spectral_norm=init_norm_stats(views, track_stats),
            pre_clip_spectral_norm=pre_norms,
        )

    def update_fn(updates, state, params=None, **extra_args):
        views = resolve_views(updates, reshape)
        pre_norms = state.pre_clip_spectral_norm
        if pre_clip is not None:
            pre_t = _clip_level(pre_clip, learning_rate, state.count, constant_clr_warmup)
            updates, pre_norms = _clip_matrices_only(
                updates, views, pre_t, iters=iters, track_stats=track_stats
            )
        if global_norm_clip is not None:
            updates = _clip_global_norm(updates, global_norm_clip)
        direction, base_state = base.update(updates, state.base, params, **extra_args)
        c_t = _clip_level(c, learning_rate, state.count, constant_clr_warmup)
        clipped, norms = clip_tree(
            direction, views, c_t, kind=kind, iters=iters, track_stats=track_stats
        )
        if alpha is not None:
            clipped = jax.tree_util.tree_map_with_path(
                lambda p, h: _scale_leaf(h, views[path_str(p)], alpha, is_embedding(path_str(p))),
                clipped,
            )
        clipped, decay_state = decay.update(clipped, state.decay, params)
        lr = _lr_at(learning_rate, state.count)
        out = jax.tree.map(lambda h: (-lr * h).astype(h.dtype), clipped)
        new_state = SpectraState(
            count=optax.safe_increment(state.count),
            base=base_state,
            decay=decay_state,
            clip_level=c_t,
            spectral_norm=norms,
            pre_clip_spectral_norm=pre_norms,
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def spectra_alpha(view, alpha: str | None, embedding: bool) -> float:
    """α of one leaf: 1 for vectors and alpha=None; √max(1, fan_out/fan_in) ("muon", and
    "official" on kernels); √max(1, rows/cols) = √max(1, fan_in/fan_out) on an embedding table
    ("official": the published code reads the stored (vocab, d) shape)."""
    if not view.is_matrix or alpha is None:
        return 1.0
    if alpha == "official" and embedding:
        return shape_scale(view.fan_out, view.fan_in, "muon")
    return shape_scale(view.fan_in, view.fan_out, "muon")


def _scale_leaf(h, view, alpha, embedding: bool):
    a = spectra_alpha(view, alpha, embedding)
    return h if a == 1.0 else h * jnp.asarray(a, h.dtype)


def _clip_global_norm(updates, max_norm: float):
    """g·min(1, max_norm/‖g‖) over the whole tree (torch's clip_grad_norm_ without its 1e-6)."""
    norm = optax.tree.norm(updates)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny))
    return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)


def _clip_matrices_only(updates, views, c, *, iters, track_stats):
    """Soft-clip matrix leaves at c; vectors untouched (pre-clipping of raw gradients)."""
    clipped, norms = clip_tree(updates, views, c, kind="soft", iters=iters, track_stats=track_stats)
    keep = {p for p, v in views.items() if not v.is_matrix}
    restored = jax.tree_util.tree_map_with_path(
        lambda p, new, old: old if path_str(p) in keep else new, clipped, updates
    )
    return restored, {p: n for p, n in norms.items() if p not in keep}


class SignumState(NamedTuple):
    mu: optax.Updates


def scale_by_signum(momentum: float = 0.9, nesterov: bool = True) -> optax.GradientTransformation:
    """sign(β m_t + (1 − β) g_t) (Nesterov) or sign(m_t), with m_t = β m_{t−1} + (1 − β) g_t."""
    _validate.check_unit_interval("momentum", momentum)

    def init_fn(params):
        return SignumState(mu=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda m, g: momentum * m + (1 - momentum) * g, state.mu, updates)
        if nesterov:
            look = jax.tree.map(lambda m, g: momentum * m + (1 - momentum) * g, mu, updates)
        else:
            look = mu
        return jax.tree.map(jnp.sign, look), SignumState(mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


def spectra_adamw(
    learning_rate: optax.ScalarOrSchedule,
    c: float,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    **spectra_kw,
) -> optax.GradientTransformation:
    """SPECTRA with Adam's direction m̂/(√v̂ + ε); c → ∞ (alpha=None) is `optax.adamw`."""
    _validate.check_unit_interval("b1", b1)
    _validate.check_unit_interval("b2", b2)
    _validate.check_positive("eps", eps)
    base = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    return spectra(base, c, learning_rate=learning_rate, weight_decay=weight_decay, **spectra_kw)


def spectra_signum(
    learning_rate: optax.ScalarOrSchedule,
    c: float,
    *,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    **spectra_kw,
) -> optax.GradientTransformation:
    """SPECTRA with the sign of (Nesterov) momentum as direction."""
    base = scale_by_signum(momentum, nesterov)
    return spectra(base, c, learning_rate=learning_rate, weight_decay=weight_decay, **spectra_kw)


def spectra_ademamix(
    learning_rate: optax.ScalarOrSchedule,
    c: float,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: float = 0.9999,
    alpha_mix: float = 5.0,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    **spectra_kw,
) -> optax.GradientTransformation:
    """SPECTRA with AdEMAMix's direction (m̂₁ + α_mix m₂)/(√v̂ + ε) (`optax.contrib`)."""
    for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
        _validate.check_unit_interval(name, value)
    _validate.check_nonnegative("alpha_mix", alpha_mix)
    base = optax.contrib.scale_by_ademamix(b1=b1, b2=b2, b3=b3, alpha=alpha_mix, eps=eps)
    return spectra(base, c, learning_rate=learning_rate, weight_decay=weight_decay, **spectra_kw)
