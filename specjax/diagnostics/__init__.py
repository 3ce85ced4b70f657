"""Spectral diagnostics: per-layer statistics logged during training (`layer_stats`), the
spectra table of any parameter tree (`model_spectra`) and the ESD power-law fit
(`power_law`)."""

from specjax.diagnostics.layer_stats import (
    activation_stable_rank,
    as_token_matrix,
    gradient_summary,
    indicator_stable_rank,
    layer_spectra,
    matrix_summary,
)
from specjax.diagnostics.model_spectra import COLUMNS, VIEWS, spectra_table, tree_matrices
from specjax.diagnostics.power_law import PowerLawFit, esd, fit_power_law

__all__ = [
    "COLUMNS",
    "VIEWS",
    "PowerLawFit",
    "activation_stable_rank",
    "as_token_matrix",
    "esd",
    "fit_power_law",
    "gradient_summary",
    "indicator_stable_rank",
    "layer_spectra",
    "matrix_summary",
    "spectra_table",
    "tree_matrices",
]
