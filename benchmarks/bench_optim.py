"""Optimizer step time (jitted update + apply, median) on two GPT parameter trees.

    python benchmarks/bench_optim.py           # 4-layer 128-wide GPT and GPT-2-small shapes
    python benchmarks/bench_optim.py --quick   # the small tree only

References measured in the same run: `optax.adamw` and `optax.contrib.muon` (given the same
hidden-matrix routing as specjax's muon, so both orthogonalize the same matrices). Ratios are
against those references; absolute seconds on a shared CPU mean little.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers
from optax.contrib import muon as optax_muon

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from timing import time_stats

import specjax.optim as so
from specjax.optim.labels import is_hidden_kernel


def gpt_params(n_layer: int, d: int, vocab: int, ctx: int, seed: int = 0):
    """A flax-named GPT parameter tree of normal arrays (no model needed)."""
    key = jax.random.PRNGKey(seed)
    counter = iter(range(10_000))

    def normal(*shape):
        return 0.02 * jax.random.normal(jax.random.fold_in(key, next(counter)), shape)

    params = {"wte": {"embedding": normal(vocab, d)}, "wpe": {"embedding": normal(ctx, d)}}
    for i in range(n_layer):
        params[f"block_{i}"] = {
            "ln_1": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
            "attn": {
                "qkv": {"kernel": normal(d, 3 * d), "bias": jnp.zeros(3 * d)},
                "proj": {"kernel": normal(d, d), "bias": jnp.zeros(d)},
            },
            "ln_2": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
            "mlp": {
                "fc": {"kernel": normal(d, 4 * d), "bias": jnp.zeros(4 * d)},
                "proj": {"kernel": normal(4 * d, d), "bias": jnp.zeros(d)},
            },
        }
    params["ln_f"] = {"scale": jnp.ones(d), "bias": jnp.zeros(d)}
    params["head"] = {"kernel": normal(d, vocab)}
    return params


def hidden_stable_ranks(params):
    return jax.tree_util.tree_map_with_path(
        lambda p, _: 4.0 if is_hidden_kernel(p) else None, params
    )


def optimizers(params):
    dims = jax.tree_util.tree_map_with_path(
        lambda p, _: MuonDimensionNumbers() if is_hidden_kernel(p) else None, params
    )
    return {
        "optax.adamw": (optax.adamw(1e-3, weight_decay=0.1), {}),
        "optax.contrib.muon": (
            optax_muon(0.02, weight_decay=0.1, muon_weight_dimension_numbers=dims),
            {},
        ),
        "specjax.muon": (so.muon(0.02, weight_decay=0.1), {}),
        "specjax.muon (no stats)": (so.muon(0.02, weight_decay=0.1, track_stats=False), {}),
        "specjax.spectra_adamw": (so.spectra_adamw(1e-3, 1.0, weight_decay=0.1), {}),
        "specjax.gated_spectral": (
            so.gated_spectral(0.02, momentum=0.9),
            {"activation_stable_ranks": hidden_stable_ranks(params)},
        ),
    }


def bench_tree(name, params, repeats, only=None):
    """Compile every optimizer's step, then time them interleaved (round-robin) so that load
    from other processes on the shared machine hits every optimizer alike."""
    grads = jax.tree.map(lambda x: jnp.sin(x * 50.0 + 1.0), params)
    steps = {}
    for label, (tx, extra) in optimizers(params).items():
        if only and label not in only and label not in ("optax.adamw", "optax.contrib.muon"):
            continue
        state = tx.init(params)

        @jax.jit
        def step(p, s, g, tx=tx, extra=extra):
            u, s = tx.update(g, s, p, **extra)
            return optax.apply_updates(p, u), s

        jax.block_until_ready(step(params, state, grads))  # compile
        steps[label] = (step, state)
    samples = {label: [] for label in steps}
    for _ in range(repeats):
        for label, (step, state) in steps.items():
            samples[label].append(
                time_stats(step, params, state, grads, repeats=1, warmup=0)["median"]
            )
    rows = {label: statistics.median(ts) for label, ts in samples.items()}
    adamw, ref_muon = rows["optax.adamw"], rows["optax.contrib.muon"]
    print(f"\n{name}: step time (median of {repeats}, interleaved) and ratios")
    print("| optimizer | ms/step | × optax.adamw | × optax.contrib.muon |\n|---|---|---|---|")
    for label, t in rows.items():
        print(f"| {label} | {t * 1e3:.1f} | {t / adamw:.2f} | {t / ref_muon:.2f} |")
    print(flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small tree only")
    parser.add_argument("--gpt2-only", action="store_true", help="GPT-2-small tree only")
    parser.add_argument(
        "--only", default="", help="comma-separated optimizer labels (references always run)"
    )
    args = parser.parse_args()
    print(f"jax {jax.__version__}, devices {jax.devices()}")
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    if not args.gpt2_only:
        bench_tree("gpt-4x128", gpt_params(4, 128, 65, 256), repeats=15, only=only)
    if not args.quick:
        bench_tree("gpt2-small", gpt_params(12, 768, 50304, 1024), repeats=3, only=only)


if __name__ == "__main__":
    main()
