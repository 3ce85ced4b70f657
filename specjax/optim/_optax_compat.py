"""`optax.contrib.muon`'s argument spellings, translated to `muon`'s native ones.

Each optax name has a native twin (beta ↔ momentum, ns_steps ↔ iters, ns_coeffs ↔ method,
consistent_rms ↔ scaling, muon_weight_dimension_numbers ↔ label_fn + reshape); either works,
both at once is a `ValueError` naming the two. Dimension numbers route and reshape at once: a
leaf given `MuonDimensionNumbers` takes the Muon step as the matrices it declares, a leaf given
None takes AdamW. The tree may be a prefix of the parameters, or a callable params -> tree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from specjax.linalg.polar import MUON_QUINTIC
from specjax.optim._matrices import is_dimension_numbers

# optax.contrib.muon's presets; "dion": per-iteration quintics of Ahn et al. 2025
# (arXiv:2504.05295), the values optax 0.2.8 ships.
NS_COEFF_PRESETS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "standard": (MUON_QUINTIC,),
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}
PRECONDITIONINGS = ("frobenius",)  # optax also has "spectral", "aol", "schatten"


class Unset:
    """Marks an argument the caller did not pass (where None is itself a meaningful value)."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET = Unset()


def given(value) -> bool:
    return value is not None and not isinstance(value, Unset)


def one_of(native: str, native_value, optax_name: str, optax_value, default):
    """The value of an argument spelled two ways; both spellings at once is an error."""
    if given(native_value) and given(optax_value):
        raise ValueError(
            f"muon: got both {native}={native_value!r} and {optax_name}={optax_value!r}, two "
            f"spellings of the same setting ({native} is specjax's, {optax_name} optax's); "
            "pass one"
        )
    if given(native_value):
        return native_value
    return optax_value if given(optax_value) else default


def coefficient_table(ns_coeffs, ns_steps: int) -> tuple[tuple[float, float, float], ...]:
    """optax's `ns_coeffs` as one (a, b, c) row per Newton–Schulz iteration.

    A preset name or one (a, b, c) triple: that quintic `ns_steps` times. An (n, 3) table: its n
    rows (n ≤ ns_steps, as optax requires; optax then ignores ns_steps).
    """
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in NS_COEFF_PRESETS:
            raise ValueError(
                f"muon: ns_coeffs={ns_coeffs!r} is not a preset; presets: "
                f"{sorted(NS_COEFF_PRESETS)}, or give (a, b, c) or ((a, b, c), ...)"
            )
        rows = NS_COEFF_PRESETS[ns_coeffs]
        table = np.asarray(rows * ns_steps if len(rows) == 1 else rows, np.float64)
    else:
        try:
            table = np.asarray(ns_coeffs, np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"muon: ns_coeffs must be (a, b, c), ((a, b, c), ...) or a preset name, "
                f"got {ns_coeffs!r}"
            ) from err
        if table.ndim == 1 and table.shape == (3,):
            table = np.tile(table, (ns_steps, 1))
    if table.ndim != 2 or table.shape[-1] != 3 or table.shape[0] < 1:
        raise ValueError(
            f"muon: ns_coeffs must have shape (3,) or (n, 3), got shape {table.shape} "
            f"from {ns_coeffs!r}"
        )
    if table.shape[0] > ns_steps:
        raise ValueError(
            f"muon: ns_coeffs has {table.shape[0]} rows (iterations) but ns_steps={ns_steps}; "
            "optax requires rows <= ns_steps (it then runs one iteration per row)"
        )
    if not np.all(np.isfinite(table)):
        raise ValueError(f"muon: ns_coeffs must be finite numbers, got {ns_coeffs!r}")
    return tuple(tuple(float(v) for v in row) for row in table)


def consistent_rms_rule(consistent_rms) -> Callable[[int, int], Any]:
    """(fan_in, fan_out) ↦ c·√max(fan_in, fan_out) (Liu et al. 2025; c = 0.2 matches AdamW)."""

    def rule(fan_in: int, fan_out: int):
        return consistent_rms * math.sqrt(max(fan_in, fan_out))

    return rule


def _is_spec(x) -> bool:
    return x is None or is_dimension_numbers(x)


def full_dimension_numbers(dimension_numbers, params):
    """One `MuonDimensionNumbers` or None per leaf of `params` (a prefix tree is broadcast)."""
    tree = dimension_numbers(params) if callable(dimension_numbers) else dimension_numbers
    try:
        return jax.tree.map(
            lambda spec, sub: jax.tree.map(lambda _: spec, sub), tree, params, is_leaf=_is_spec
        )
    except (ValueError, TypeError) as err:
        raise ValueError(
            "muon: muon_weight_dimension_numbers must be a tree (or params -> tree) with the "
            "structure of params, or a prefix of it, whose leaves are MuonDimensionNumbers or "
            f"None; got {jax.tree.structure(tree, is_leaf=_is_spec)} for params "
            f"{jax.tree.structure(params)}"
        ) from err


def dimension_numbers_labels(dimension_numbers, matrix_label: str, other_label: str):
    """params -> labels: `matrix_label` where dimension numbers are given, else `other_label`."""

    def label_fn(params):
        full = full_dimension_numbers(dimension_numbers, params)
        return jax.tree.map(
            lambda spec: other_label if spec is None else matrix_label, full, is_leaf=_is_spec
        )

    return label_fn


def dimension_numbers_reshape(dimension_numbers):
    """params -> tree of views for `scale_by_polar`'s `reshape` (None leaves: the default)."""

    def reshape(params):
        return full_dimension_numbers(dimension_numbers, params)

    return reshape
