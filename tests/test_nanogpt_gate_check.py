"""gate_check: per-block loss changes of both gated candidates, and the agreement bookkeeping.

Reference: for each block, the candidate update from `force_step` applied to that block alone in
a plain Python loop, the loss difference taken directly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.nanogpt import gate_check
from experiments.nanogpt import step as step_lib
from experiments.nanogpt.model import GPT, GPTConfig
from experiments.optimizers import AdamWConfig, GatedSpectralConfig
from specjax.optim.labels import path_str

TINY = dict(vocab_size=13, context_length=8, num_layers=2, num_heads=2, width=8)


def _setup():
    model = GPT(GPTConfig(**TINY))
    tx = GatedSpectralConfig(
        name="gated_spectral", lr=3e-2, euclidean="adam", momentum=0.95, nesterov=True,
        match_rms=True, clip_grad_norm=1.0, weight_decay=0.1,
    ).build(10)  # fmt: skip
    key = jax.random.PRNGKey(0)
    state = step_lib.init_state(model, tx, key)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 9), 0, 13)
    return model, tx, key, state, (tokens[:, :-1], tokens[:, 1:])


def test_candidate_losses_match_a_block_by_block_reference():
    model, tx, key, state, batch = _setup()
    got = gate_check.make_candidate_losses(model, tx, key)(state, batch)
    params = state["params"]
    x, y = batch

    @jax.jit
    def loss(p):
        return step_lib.cross_entropy(model.apply({"params": p}, x, True), y)

    @jax.jit
    def candidates(state):
        p = state["params"]
        _, grads, extra, _ = step_lib.grads_and_extras(model, True, p, x, y, key, capture=False)
        return {
            f: tx.update(grads, state["opt_state"], p, **extra, force_step=f)[0]
            for f in ("spectral", "euclidean")
        }

    cand = candidates(state)
    base = float(loss(params))
    assert len(got) == 8  # qkv, attn proj, fc, mlp proj in each of the 2 blocks
    for path, (d_spec, d_euc, took, nr, st) in got.items():
        for f, d in (("spectral", d_spec), ("euclidean", d_euc)):
            moved = jax.tree_util.tree_map_with_path(
                lambda p, w, u, path=path: w + u if path_str(p) == path else w, params, cand[f]
            )
            np.testing.assert_allclose(float(d), float(loss(moved)) - base, rtol=1e-3,
                                       atol=1e-6, err_msg=f"{path} {f}")  # fmt: skip
        assert int(took) == int(float(nr) >= float(st)), path
    rows, summary = gate_check.to_rows(6, got)
    assert {r["block"] for r in rows} == set(got) and all(r["step"] == 6 for r in rows)
    for r in rows:
        assert r["agree"] == int(r["took_spectral"] == (r["delta_spectral"] < r["delta_euclidean"]))
    assert summary["gate_agreement"] == pytest.approx(np.mean([r["agree"] for r in rows]))
    assert summary["gate_spectral_fraction"] == pytest.approx(
        np.mean([int(v[2]) for v in got.values()])
    )


def test_to_rows_counts_agreement_and_leaves_ties_out():
    # took spectral and spectral better; took spectral, Euclidean better; took Euclidean and
    # Euclidean better; a tie (η = 0).
    per_block = {
        "a": (-2.0, -1.0, 1, 5.0, 2.0), "b": (-1.0, -2.0, 1, 5.0, 2.0),
        "c": (-1.0, -2.0, 0, 1.0, 2.0), "d": (0.0, 0.0, 1, 5.0, 2.0),
    }  # fmt: skip
    rows, summary = gate_check.to_rows(0, per_block)
    assert [r["agree"] for r in rows[:3]] == [1, 0, 1] and np.isnan(rows[3]["agree"])
    assert summary == {
        "gate_agreement": pytest.approx(2 / 3),
        "gate_spectral_fraction": pytest.approx(3 / 4),
        "gate_spectral_better_fraction": pytest.approx(1 / 3),
    }
    _, tied = gate_check.to_rows(0, {"d": per_block["d"]})
    assert tied == {"gate_spectral_fraction": 1.0}


def test_gate_check_needs_the_gated_optimizer():
    params = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="gated_spectral"):
        gate_check.gated_state(AdamWConfig(name="adamw").build(10).init(params))
    with pytest.raises(ValueError, match="gated_spectral"):
        gate_check.gated_state(optax.sgd(0.1).init(params))
