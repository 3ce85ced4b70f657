"""Spectral updates and spectral clipping as optax `GradientTransformation`s.

Everything here composes like optax's own transforms (`optax.chain`, `optax.masked`,
schedules for learning rates, `optax.inject_hyperparams`) and keeps its state as plain arrays
that orbax can checkpoint. Parameters are routed by *path / label*, never by `ndim` alone.
Bad arguments raise `ValueError` (naming the argument or the parameter path and the value)
when the transform is built or at `init`, never mid-training.

Matrix convention: a kernel of shape (fan_in, fan_out) (flax's `x @ W`); parameters of ndim > 2
need a declared view `reshape=`: "conv" ((*window, c_in, c_out) → (prod(window)·c_in, c_out)),
"stack" ((*stack, fan_in, fan_out), scanned layers, each matrix separately) or "vector".

Public API (signatures with defaults)
-------------------------------------
scale_by_polar(*, method="newton_schulz", iters=5, orthogonalizer=None, ns_dtype=None,
               ns_form="standard", eps=1e-7, scaling="muon", reshape=None, track_stats=True,
               mesh=None, stack_axis=None) -> GradientTransformation
    U ↦ s(fan_in, fan_out) · polar(U) per matrix; same-shaped matrices orthogonalized in one
    batched call. scaling: "muon" √max(1, fan_out/fan_in) | "rms" 0.2·√max(fan_in, fan_out)
    (Moonlight, matches AdamW's update RMS) | "spectral" √(fan_out/fan_in) (μP) | None (1).
    method: "newton_schulz" (Muon quintic) | "polar_express" | "svd"; `orthogonalizer`
    (any (..., m, n) -> (..., m, n) callable) overrides it. Vectors / scalars pass unchanged.
    ns_form: "standard" | "gram" (Newton–Schulz on the Gram matrix, restarted every 3
    iterations) | "auto" (Gram where it needs fewer FLOPs): see `specjax.polar`.
    State `ScaleByPolarState.nuclear_rank`: {path: nr estimate ⟨U, polar(U)⟩²/‖U‖_F² per matrix}.

muon(learning_rate, ns_coeffs=None, ns_steps=None, beta=None, eps=1e-8, weight_decay=0.0,
     weight_decay_mask=None, mu_dtype=None, *, nesterov=True, adaptive=False,
     preconditioning="frobenius", adam_b1=0.9, adam_b2=0.95, adam_eps_root=0.0,
     adam_weight_decay=None, adam_learning_rate=None, muon_weight_dimension_numbers=None,
     consistent_rms=None, momentum=None, method=None, iters=None, scaling="muon",
     ns_dtype=None, ns_form="standard", adam_eps=None, adam_nesterov=False, label_fn=None,
     reshape=None, mesh=None, stack_axis=None, track_stats=True)
    -> GradientTransformation
    Hidden matrices (label "muon"): momentum (Nesterov) → scale_by_polar → decoupled weight
    decay → −learning_rate. Everything else (label "adam"): AdamW. `learning_rate` may be a
    float or an optax schedule. label_fn: params -> tree of "muon"/"adam" (default
    `default_flax_label_fn()`: hidden `kernel`s, not embeddings / heads; a tree with matrices
    but no such kernel, e.g. a plain dict, is a ValueError at init: pass label_fn).
    adam_learning_rate None → learning_rate; adam_weight_decay None → weight_decay on Adam
    leaves of ndim ≥ 2 (embeddings, head), 0 on vectors (norm scales, biases).
    Takes optax.contrib.muon's names and positional order too (beta ↔ momentum, ns_steps ↔
    iters, ns_coeffs ↔ method, consistent_rms ↔ scaling, muon_weight_dimension_numbers ↔
    label_fn + reshape; both spellings at once is a ValueError). Defaults that differ from
    optax: see `specjax/optim/muon.py` and docs/notes/optim.md.

clip_by_spectral_norm(c, *, kind="soft", iters=None, reshape=None, track_stats=True)
    -> GradientTransformation
    Matrices: soft σ ↦ σ/√(1+σ²/c²) (Newton–Schulz, no SVD) or hard σ ↦ min(σ, c) (SVD).
    Vectors: soft g/√(1+(‖g‖/c)²), hard g·min(1, c/‖g‖). c = inf: updates unchanged.
    iters=None picks the Newton–Schulz
    iteration count from the spectrum's scale (see `specjax.soft_spectral_clip`).
    State `ClipBySpectralNormState.spectral_norm`: {path: ‖U‖₂ before clipping (per matrix;
    ‖g‖₂ for vectors)}.

spectra(base, c, *, learning_rate, weight_decay=0.0, weight_decay_mask=None, pre_clip=None,
        kind="soft", iters=None, alpha="official", constant_clr_warmup=0,
        global_norm_clip=None, embedding_fn=None, reshape=None, track_stats=True)
    -> GradientTransformation
    SPECTRA (Jiang, Semenov & Stich 2026): X ← (1 − λη) X − α η H_c(U), U = `base`'s direction
    (base must NOT include the learning rate), H_c the spectral clip, applied to every
    parameter. α: "official" √max(1, fan_out/fan_in) on kernels, √max(1, vocab/d) on embedding
    tables; "muon" √max(1, fan_out/fan_in) everywhere; None 1. c → ∞ (c = inf allowed) reduces
    to the base optimizer (exactly for α = 1). Official order: pre_clip=c_pre soft-clips raw 2-D
    gradients, then global_norm_clip, then `base`. constant_clr_warmup=W: for the first W steps
    c and c_pre are scaled by η(W)/η(t) so that c·lr stays constant.
spectra_adamw(learning_rate, c, *, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, **spectra_kw)
spectra_signum(learning_rate, c, *, momentum=0.9, nesterov=True, weight_decay=0.0, **spectra_kw)
spectra_ademamix(learning_rate, c, *, b1=0.9, b2=0.999, b3=0.9999, alpha_mix=5.0, eps=1e-8,
                 weight_decay=0.0, **spectra_kw)

gated_spectral(learning_rate, *, euclidean="sgd", momentum=0.0, nesterov=False,
               spectral_learning_rate=None, match_rms=False, spectral_scale=1.0,
               method="polar_express", iters=8,
               weight_decay=0.0, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8,
               label_fn=None, reshape=None) -> GradientTransformationExtraArgs
    Per weight block (label "block"): take the spectral step where nr(U) ≥ st(A) (Davis &
    Drusvyatskiy 2025), the Euclidean ("sgd": U; "adam": Adam direction) step elsewhere.
    `update(updates, state, params=None, *, activation_stable_ranks=tree)`: a tree matching
    params (None / absent for non-block leaves) of st(A) of each block's incoming activations.
    Spectral step (spectral_learning_rate None): −η (‖U‖_*/st(A)) polar(U), the steepest step
    under the same smoothness model as −η U; else −η_s √max(1, fan_out/fan_in) polar(U);
    match_rms: −η κ (‖E‖_F/‖polar(U)‖_F) polar(U), the Euclidean step's length (κ =
    spectral_scale). `update(..., force_step="spectral"|"euclidean")` overrides the gate.
    U = momentum trace m_t = β m_{t−1} + g_t (Nesterov: g_t + β m_t); weight decay −ηλX on
    every leaf (needs params). Default labels: as muon's (a ValueError at init if they find
    no block in a tree with matrices).
    State `GatedSpectralState`: nuclear_rank, stable_rank, took_spectral ({path: per matrix}).

Routing helpers: `default_flax_label_fn`, `resolve_labels`, `path_str`. `None` leaves in
params / updates are empty subtrees, as in optax: every transform passes them through as None.

`optax.inject_hyperparams` works (learning rates may then be injected arrays); `iters` and
`eps` size the unrolled Newton–Schulz loop, so pass `static_args=("iters", "eps")`.
"""

from specjax.optim.clip import ClipBySpectralNormState, clip_by_spectral_norm
from specjax.optim.gated import GatedSpectralState, gated_spectral
from specjax.optim.labels import default_flax_label_fn, path_str, resolve_labels
from specjax.optim.muon import muon, scale_by_nesterov_momentum
from specjax.optim.polar_update import SCALINGS, ScaleByPolarState, scale_by_polar, shape_scale
from specjax.optim.spectra import (
    SpectraState,
    spectra,
    spectra_adamw,
    spectra_ademamix,
    spectra_signum,
)

__all__ = [
    "SCALINGS",
    "ClipBySpectralNormState",
    "GatedSpectralState",
    "ScaleByPolarState",
    "SpectraState",
    "clip_by_spectral_norm",
    "default_flax_label_fn",
    "gated_spectral",
    "muon",
    "path_str",
    "resolve_labels",
    "scale_by_nesterov_momentum",
    "scale_by_polar",
    "shape_scale",
    "spectra",
    "spectra_adamw",
    "spectra_ademamix",
    "spectra_signum",
]
