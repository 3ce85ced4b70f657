"""Routing parameters to optimizer groups by path or label (never by `ndim` alone).

`optax.contrib.muon` sends every 2-D leaf to Muon (including embeddings and the output head)
and every 3-D/4-D leaf (scanned layers, conv kernels) silently to AdamW. Here a label function
maps each parameter *path* to a group name, and a leaf left without a valid label is an error
at `init`, naming its path. `None` in a parameter tree is an empty subtree (as in optax): it
needs no label and passes through as `None`. When the default (flax) label function finds no
matrix to send to the spectral group of a tree that has matrices (a plain dict or list of
arrays), the optimizers raise at `init` rather than route nothing (`check_default_routing`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import jax
import jax.numpy as jnp

LabelFn = Callable[[Any], Any]

# Path components (lower-cased) that mark embeddings and output heads in flax trees: these are
# matrices, but Muon's theory is for hidden layers, so they go to the Adam group by default.
NON_HIDDEN_COMPONENTS = frozenset(
    {
        "embed",
        "embedding",
        "embeddings",
        "wte",
        "wpe",
        "tok_embed",
        "pos_embed",
        "token_embedding",
        "position_embedding",
        "head",
        "lm_head",
        "unembed",
        "unembedding",
        "logits",
        "readout",
        "classifier",
        "output_head",
    }
)

# Trailing components that name the array inside a flax variable box (nnx states end in "value").
_BOX_SUFFIXES = ("value", "raw_value")


def key_name(entry) -> str:
    """One path entry (DictKey / GetAttrKey / SequenceKey / FlattenedIndexKey) as a string."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def path_str(path) -> str:
    """A `jax.tree_util` key path as 'a/b/0/kernel'."""
    return "/".join(key_name(entry) for entry in path)


def leaves_with_paths(tree) -> list[tuple[str, Any]]:
    """[(path string, leaf)] in flattening order (masked-out `optax.MaskedNode`s have no leaves)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_str(path), leaf) for path, leaf in flat]


def _components(path) -> list[str]:
    names = [key_name(entry) for entry in path]
    while names and names[-1] in _BOX_SUFFIXES:
        names.pop()
    return names


def is_hidden_kernel(path) -> bool:
    """Flax rule: a leaf named `kernel` (Dense, DenseGeneral, Conv, Einsum) outside any
    embedding / output-head module (see `NON_HIDDEN_COMPONENTS`)."""
    names = _components(path)
    if not names or names[-1] != "kernel":
        return False
    return not any(name.lower() in NON_HIDDEN_COMPONENTS for name in names[:-1])


def default_flax_label_fn(matrix_label: str = "muon", other_label: str = "adam") -> LabelFn:
    """Label function for flax (linen or nnx-state) parameter trees.

    Hidden `kernel`s get `matrix_label`; embeddings, output heads, norm scales and biases get
    `other_label`. Override with your own `params -> tree of labels` for other naming schemes.
    """

    def label_fn(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: matrix_label if is_hidden_kernel(path) else other_label, params
        )

    return label_fn


def _is_none(x) -> bool:
    return x is None


def resolve_labels(params, labels, allowed: Collection[str], *, argument: str = "label_fn"):
    """Evaluate `labels` (a tree or `params -> tree`) and check every leaf got an allowed label.

    Returns the label tree (same structure as `params`). `None` in `params` is an empty subtree
    (as in optax and `jax.tree`): it needs no label and gets `None` in the returned tree,
    whatever `labels` put there. Raises `ValueError` naming the first parameter path whose label
    is missing or not in `allowed`.
    """
    tree = labels(params) if callable(labels) else labels
    param_leaves = leaves_with_paths(params)
    # Flatten both with None as a leaf, so a None parameter lines up with its label slot.
    flat_params, param_def = jax.tree.flatten(params, is_leaf=_is_none)
    flat_labels, label_def = jax.tree.flatten(tree, is_leaf=_is_none)
    if label_def != param_def:
        label_paths = {
            path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_none)[0]
        }
        missing = [p for p, _ in param_leaves if p not in label_paths]
        where = f"parameter {missing[0]!r}" if missing else "the parameter tree"
        raise ValueError(
            f"{argument} must return one label per parameter; {where} has no label "
            f"(labels tree {label_def} vs params {jax.tree.structure(params)})"
        )
    kept = [label for p, label in zip(flat_params, flat_labels, strict=True) if p is not None]
    for (path, _), label in zip(param_leaves, kept, strict=True):
        if label not in allowed:
            raise ValueError(
                f"{argument} left parameter {path!r} unassigned: label {label!r}, "
                f"allowed labels {sorted(allowed)}"
            )
    normalized = [
        None if p is None else label for p, label in zip(flat_params, flat_labels, strict=True)
    ]
    return jax.tree.unflatten(param_def, normalized)


def check_default_routing(
    params,
    label_tree,
    matrix_label: str,
    other_label: str,
    *,
    optimizer: str,
    step: str,
    routed_by: str | None = None,
    hint: str = "",
) -> None:
    """Never route nothing silently: raise when the *default* label function labelled no leaf
    `matrix_label` although `params` holds matrices (leaves of ndim ≥ 2).

    That happens for trees without flax names (a plain dict {"w1": ..., "w2": ...}, a list of
    arrays): every matrix would silently take the `other_label` step. Call only when the user
    did not pass `label_fn`. `routed_by` names what labelled the tree when it was not the flax
    default (e.g. a dimension-numbers tree of all None); `hint` adds another way to label.
    """
    labels = jax.tree.leaves(label_tree)
    if matrix_label in labels:
        return
    matrices = [(path, leaf) for path, leaf in leaves_with_paths(params) if jnp.ndim(leaf) >= 2]
    if not matrices:
        return
    path, leaf = matrices[0]
    source = routed_by or (
        "label_fn=None (default: flax naming, leaves called 'kernel' outside "
        "embeddings / output heads)"
    )
    raise ValueError(
        f"{optimizer}: {source} sent no parameter to the {step} step, but params has "
        f"{len(matrices)} matri{'x' if len(matrices) == 1 else 'ces'} (ndim >= 2), e.g. "
        f"{path!r} with shape {tuple(jnp.shape(leaf))}; "
        f"{'it' if len(matrices) == 1 else 'all of them'} would silently take the "
        f"{other_label!r} step. Label the parameters yourself: pass label_fn= a function "
        f"params -> tree of {matrix_label!r} / {other_label!r}, e.g. label_fn=lambda params: "
        f"jax.tree.map(lambda p: {matrix_label!r} if p.ndim == 2 else {other_label!r}, params)"
        f"{hint}"
    )


def validated_label_fn(labels, allowed: Collection[str], *, argument: str = "label_fn") -> LabelFn:
    """Wrap `labels` so that evaluating it (at `optax.partition` init) validates every leaf."""

    def label_fn(params):
        return resolve_labels(params, labels, allowed, argument=argument)

    return label_fn
