"""A fast start: step 0's spectra taken after the first block, the start-up time in the record,
and the entry point leaving plotting and statistics modules unloaded until they are used."""

import json
import subprocess
import sys
import threading

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from experiments.config import compose
from experiments.runtime.context import RunContext
from experiments.runtime.trainer import NonFiniteLossError, train

COMMON = ["+exp=quickstart", "trainer.max_steps=6", "trainer.spectra_every=3",
          "trainer.steps_per_dispatch=1", "trainer.log_every=1", "trainer.ckpt_every=0",
          "trainer.progress=off", "trainer.async_checkpointing=false"]  # fmt: skip


def _toy(nan_at_step=None):
    """w starts at [0, 1, 2, 3] and grows by 1 per step; the loss is sum(w) before the step.
    `second_batch` is set once the trainer prepares the batch of step 2, i.e. training runs."""
    second_batch = threading.Event()

    def init():
        return {"w": jnp.arange(4.0), "t": jnp.zeros((), jnp.int32)}

    def step(state, batch):
        loss = jnp.sum(state["w"]) + batch[0]
        if nan_at_step is not None:
            loss = jnp.where(state["t"] + 1 == nan_at_step, jnp.nan, loss)
        return {"w": state["w"] + 1.0, "t": state["t"] + 1}, {"loss": loss}

    def batch(k):
        if k >= 1:
            second_batch.set()
        return np.zeros((8,), np.float32)

    return init, step, batch, second_batch


def _run(run_dir, init, step, batch, spectra):
    ctx = RunContext(run_dir, compose(COMMON))
    try:
        return train(ctx, init=init, step=step, batch=batch, spectra=spectra)
    finally:
        ctx.close()


def test_step0_spectra_are_the_initial_states_and_follow_the_first_dispatch(tmp_path):
    """Step 0's spectra come after the first block (so they do not delay the start), but not
    concurrently with it: two XLA:CPU programs in flight at once deadlocked a vmapped sweep."""
    init, toy_step, batch, second_batch = _toy()
    traced, seen_by_spectra = [], []

    def step(state, batch):
        traced.append(True)  # at trace time: the first dispatch traces the step
        return toy_step(state, batch)

    def spectra(state, k):
        if k == 0:
            seen_by_spectra.append((bool(traced), second_batch.is_set()))
        return [{"name": "w", "w_sum": float(np.asarray(state["w"]).sum())}]

    _run(tmp_path, init, step, batch, spectra)
    ((first_dispatched, second_block_started),) = seen_by_spectra
    assert first_dispatched, "step 0's spectra ran before the first training dispatch"
    assert not second_block_started, "step 0's spectra overlapped later training blocks"
    logged = pd.read_parquet(tmp_path / "spectra").sort_values("step")
    # sum(w) at step k = 6 + 4k: step 0's rows are of the initial state, not a trained one
    assert logged["step"].tolist() == [0, 3, 6] and logged["w_sum"].tolist() == [6.0, 18.0, 30.0]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # held rows written, in order
    assert [r["loss"] for r in rows] == [6.0 + 4 * k for k in range(6)]
    startup = json.loads((tmp_path / "record.json").read_text())["startup"]
    assert 0 < startup["first_step_s"] < 3600


def test_a_non_finite_loss_after_step0_spectra_still_writes_both(tmp_path):
    init, step, batch, _ = _toy(nan_at_step=2)

    def spectra(state, k):
        return [{"name": "w", "w_sum": float(np.asarray(state["w"]).sum())}]

    with pytest.raises(NonFiniteLossError, match="at step 2"):
        _run(tmp_path, init, step, batch, spectra)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["loss"] == 6.0
    assert pd.read_parquet(tmp_path / "spectra")["w_sum"].tolist() == [6.0]


def test_entry_point_leaves_heavy_modules_unloaded_until_used():
    """`import experiments.run` composes nothing heavy; the stand-ins load on first use."""
    code = (
        "import sys, experiments.run\n"
        "heavy = ['pandas.core', 'matplotlib.figure', 'scipy.stats._stats_py', "
        "'scipy.optimize._minimize', 'wandb']\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "import pandas as pd\n"
        "from scipy import stats\n"
        "import matplotlib.pyplot as plt\n"
        "print(pd.DataFrame({'a': [1, 2]})['a'].sum(), stats.norm.cdf(0.0), plt.figure().dpi > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, used = out.stdout.splitlines()
    assert loaded == "[]", f"imported before training needs them: {loaded}"
    assert used == "3 0.5 True"
