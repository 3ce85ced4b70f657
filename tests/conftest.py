"""Test-wide settings: fast compiles on small shapes, deterministic hypothesis runs."""

import os

# Tests use small shapes, where XLA compile time dominates run time.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import jax
from hypothesis import settings

jax.config.update("jax_disable_most_optimizations", True)

# Derandomized so CI and laptops see the same examples; no deadline because the
# first example of a jitted function pays for its compile.
settings.register_profile("specjax", derandomize=True, deadline=None, max_examples=25)
settings.load_profile("specjax")
