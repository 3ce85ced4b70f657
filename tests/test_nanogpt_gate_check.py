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
from tests._tiny import tiny_nanogpt

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


# --- a vmapped sweep of the gated optimizer: each member's gate check in its own run dir -------
SWEEP_TINY = tiny_nanogpt("gated", {"study.eval_batches": 2, "study.full_eval_windows": 2048,
    "trainer.max_steps": 4, "optim.warmup_steps": 1, "trainer.eval_every": 2,
    "trainer.spectra_every": 2, "trainer.ckpt_every": 0, "trainer.log_every": 1,
    "trainer.async_checkpointing": "false"})  # fmt: skip


@pytest.mark.slow  # ~40 s on a quiet 2-core CPU (a 2-member gated sweep and a separate run)
def test_sweep_members_write_the_gate_check_of_a_separate_run(tmp_path):
    """`sweep.seed=[0,1]` with the gated optimizer: member 1's tables/gate_check.parquet and
    gate metrics equal those of a separate seed=1 run (the sweep once wrote none)."""
    from experiments import rundir
    from experiments.config import compose
    from experiments.runtime.vmap_sweep import execute_sweep
    from tests._runs import run_experiment

    execute_sweep(compose(SWEEP_TINY), tmp_path / "sweep", SWEEP_TINY, {"seed": [0, 1]})
    run_experiment(tmp_path / "single", [*SWEEP_TINY, "seed=1"])
    tables = [rundir.read_table(tmp_path / d, gate_check.TABLE)
              for d in ("sweep/runs/0", "sweep/runs/1", "single")]  # fmt: skip
    member0, member, single = (t.sort_values(["step", "block"], ignore_index=True) for t in tables)
    assert list(member.columns) == list(single.columns)
    assert list(member["step"].unique()) == [0, 2, 4] and len(member) == len(single) == 3 * 4
    assert (member[["step", "block"]] == single[["step", "block"]]).all(axis=None)
    for column in ("took_spectral", "nr_U", "st_A"):
        np.testing.assert_allclose(member[column], single[column], rtol=1e-4, err_msg=column)
    # Δ is a difference of two float32 losses near 4.6, whose spacing is 4.8e-7.
    for column in ("delta_spectral", "delta_euclidean"):
        np.testing.assert_allclose(member[column], single[column], atol=2e-6, err_msg=column)
    assert not np.allclose(member0["nr_U"], member["nr_U"])  # seed 0 is another run
    metrics = [rundir.read_metrics(tmp_path / d).set_index("step")
               for d in ("sweep/runs/1", "single")]  # fmt: skip
    for column in ("gate_spectral_fraction", "gate_agreement"):
        np.testing.assert_allclose(metrics[0][column], metrics[1][column], err_msg=column)


def test_train_step_logs_the_choice_of_this_update_per_block():
    """Reference: the gate decision nr(U) >= st(A) recomputed from the state the update wrote,
    and an independent `tx.update` on the same gradients (the logged choice must be this
    update's, not the previous state's, and each block's value its own)."""
    model, tx, key, state, batch = _setup()
    train_step = jax.jit(step_lib.make_train_step(model, tx, key, True))
    x, y = batch
    for _ in range(3):  # step 0's state holds no decision yet; later ones hold the previous one
        _, grads, extra, _ = step_lib.grads_and_extras(model, True, state["params"], x, y,
                                                       jax.random.fold_in(key, state["step"]),
                                                       capture=False)  # fmt: skip
        _, expected_state = tx.update(grads, state["opt_state"], state["params"], **extra)
        expected = gate_check.gated_state(expected_state)
        state, metrics = train_step(state, batch)
        logged = {k.removeprefix(step_lib.GATE_PREFIX): float(v) for k, v in metrics.items()
                  if k.startswith(step_lib.GATE_PREFIX)}  # fmt: skip
        assert sorted(logged) == sorted(expected.took_spectral) and len(logged) == 8
        for path, took in expected.took_spectral.items():
            decision = float(expected.nuclear_rank[path] >= expected.stable_rank[path])
            assert logged[path] == float(took) == decision, path
        assert float(metrics["spectral_fraction"]) == pytest.approx(np.mean(list(logged.values())))
    plain = AdamWConfig(name="adamw", lr=1e-3).build(10)
    adam_step = step_lib.make_train_step(model, plain, key, False)
    _, metrics = adam_step(step_lib.init_state(model, plain, key), batch)
    assert set(metrics) == {"loss", "grad_norm"}  # no gate, no gate metrics
