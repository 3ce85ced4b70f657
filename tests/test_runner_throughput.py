"""Several steps per dispatch, the metrics researchers log (lr, step time, tokens/s, MFU), model
FLOPs, the progress rate without compilation, and the persistent compilation cache."""

import io
import json

import jax
import numpy as np
import optax
import pytest

from experiments.config import compose
from experiments.rundir import load_run
from experiments.runtime import compile_cache, progress, step_blocks, throughput
from experiments.runtime.trainer import TrainingInterrupted
from tests._runs import run_experiment
from tests._tiny import tiny_nanogpt

QUICK = ["+exp=quickstart", "trainer.max_steps=14", "trainer.log_every=1", "trainer.eval_every=5",
         "trainer.ckpt_every=0", "trainer.spectra_every=0", "trainer.progress=off",
         "trainer.async_checkpointing=false"]  # fmt: skip
TINY_GPT = tiny_nanogpt("adamw", {"study.eval_batches": 1, "study.full_eval": "false",
    "study.save_params": "false", "trainer.max_steps": 6, "optim.warmup_steps": 2,
    "trainer.eval_every": 3, "trainer.spectra_every": 0, "trainer.ckpt_every": 0,
    "trainer.log_every": 1, "trainer.steps_per_dispatch": 3, "trainer.peak_flops": "1e9",
    "trainer.async_checkpointing": "false"})  # fmt: skip


def test_blocks_of_steps_give_the_losses_of_one_step_per_dispatch(tmp_path):
    """Blocks of 4 (cut at each evaluation) against plain one-step dispatches: same rows, same
    losses, evaluations at the same steps."""
    one = run_experiment(tmp_path / "one", [*QUICK, "trainer.steps_per_dispatch=1"])
    four = run_experiment(tmp_path / "four", [*QUICK, "trainer.steps_per_dispatch=4"])
    a, b = load_run(tmp_path / "one").metrics, load_run(tmp_path / "four").metrics
    assert list(a["step"]) == list(b["step"])
    assert list(b.dropna(subset=["val_loss"])["step"]) == [5, 10, 14]
    train_a, train_b = a.dropna(subset=["loss"]), b.dropna(subset=["loss"])
    assert list(train_b["step"]) == list(range(1, 15))
    np.testing.assert_allclose(train_b["loss"], train_a["loss"], rtol=1e-6)
    np.testing.assert_allclose(four["val_loss"], one["val_loss"], rtol=1e-6)


def test_resume_mid_block_repeats_every_batch_once(tmp_path):
    """Stopped inside what would be a block, resumed: every step saw its own batch, in order."""
    import jax.numpy as jnp

    from experiments.runtime.context import RunContext
    from experiments.runtime.trainer import train

    def init():
        return {"seen": jnp.full((11,), -1, jnp.int32), "t": jnp.zeros((), jnp.int32)}

    def step(state, batch):
        seen = state["seen"].at[state["t"]].set(batch[0])
        return {"seen": seen, "t": state["t"] + 1}, {"loss": jnp.float32(0.0)}

    common = ["+exp=quickstart", "trainer.max_steps=11", "trainer.steps_per_dispatch=4",
              "trainer.progress=off", "trainer.async_checkpointing=false"]  # fmt: skip
    for overrides in ([*common, "trainer.stop_at_step=6"], common):
        ctx = RunContext(tmp_path, compose(overrides))
        try:
            result = train(ctx, init=init, step=step, batch=lambda k: np.full((8,), k, np.int32))
        except TrainingInterrupted as err:
            assert err.step == 6
        finally:
            ctx.close()
    assert np.asarray(result.state["seen"]).tolist() == list(range(11))


def test_next_stop_lands_on_every_cadence():
    assert step_blocks.next_stop(0, 100, (25, 0, 40)) == 25
    assert step_blocks.next_stop(25, 100, (25, 0, 40)) == 40
    assert step_blocks.next_stop(95, 100, (25, 0, 40)) == 100
    assert step_blocks.next_stop(3, 100, (0,), [7]) == 7
    assert step_blocks.next_stop(7, 100, (0,), [7]) == 100


def test_gpt_run_logs_lr_step_time_tokens_and_mfu(tmp_path):
    """lr equals optax's warm-up cosine at each update's count; tokens/s and MFU follow from the
    step time; the first block (which compiled) has no step time."""
    run_experiment(tmp_path, TINY_GPT)
    rows = load_run(tmp_path).metrics.dropna(subset=["loss"]).set_index("step")
    cfg = compose(TINY_GPT)
    lr, steps = cfg.optim.lr, cfg.trainer.max_steps
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, 2, steps, end_value=0.1 * lr)
    expected = [float(schedule(k - 1)) for k in range(1, steps + 1)]
    np.testing.assert_allclose(rows.loc[1:steps, "lr"], expected, rtol=1e-6)
    assert rows.loc[1:3, "step_time_s"].isna().all(), "the compiling block must not be timed"
    later = rows.loc[4:6]
    assert (later["step_time_s"] > 0).all()
    np.testing.assert_allclose(later["tokens_per_s"], 4 * 8 / later["step_time_s"], rtol=1e-9)
    record = json.loads((tmp_path / "record.json").read_text())
    logged = record["throughput"]
    assert logged["peak_flops"] == {"flops": 1e9, "source": "trainer.peak_flops",
                                    "device": throughput.device_label()}  # fmt: skip
    mfu = logged["flops_per_step"] / later["step_time_s"] / 1e9
    np.testing.assert_allclose(later["mfu"], mfu, rtol=1e-9)


def test_model_flops_match_a_matmul_by_matmul_count():
    """6·N + 12·L·D·T against counting each matmul of the forward pass (×3 for fwd + bwd)."""
    from experiments.nanogpt import flops
    from experiments.nanogpt.model import GPT, GPTConfig

    V, T, L, H, D = 11, 8, 2, 2, 16
    cfg = GPTConfig(vocab_size=V, context_length=T, num_layers=L, num_heads=H, width=D)
    params = jax.eval_shape(lambda: GPT(cfg).init(jax.random.PRNGKey(0), np.zeros((1, T), int)))
    params = params["params"]
    # parameters in matmuls: qkv 3D², proj D², fc 4D², mlp proj 4D² per layer, tied head V·D;
    # plus the LayerNorm scales (2 per layer + final), which the PaLM count includes in N.
    n = L * 12 * D * D + V * D + (2 * L + 1) * D
    assert flops.matmul_params(params, cfg) == n
    per_token = 3 * (L * (2 * 12 * D * D + 2 * 2 * T * D) + 2 * D * V)  # 2 FLOPs per MAC
    norms = 6 * (2 * L + 1) * D  # the only difference: LayerNorm scales counted as 6 FLOPs each
    assert flops.flops_per_token(params, cfg) == per_token + norms
    assert flops.flops_per_step(params, cfg, 3) == (per_token + norms) * 3 * T


def test_peak_is_measured_once_and_stored(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(throughput, "measure_matmul_flops", lambda: calls.append(1) or 5e9)
    path = tmp_path / "peak.json"
    first = throughput.resolve_peak(None, path)
    second = throughput.resolve_peak(None, path)
    assert first["flops"] == second["flops"] == 5e9 and len(calls) == 1
    assert "matmul" in second["source"] and second["device"] == throughput.device_label()
    assert throughput.resolve_peak(2e9, path)["source"] == "trainer.peak_flops"
    with pytest.raises(ValueError, match=r"trainer.peak_flops must be a positive FLOP/s"):
        compose(["+exp=quickstart", "trainer.peak_flops=-1"])


def test_a_stored_peak_only_rises_unless_replaced(tmp_path):
    """A measurement under load is lower than the peak: it must not overwrite a quiet one."""
    path = tmp_path / "peak.json"
    assert throughput.store_peak(5e9, path)["flops"] == 5e9
    assert throughput.store_peak(2e9, path)["flops"] == 5e9  # a loaded measurement: kept 5e9
    assert throughput.resolve_peak(None, path)["flops"] == 5e9
    assert throughput.store_peak(8e9, path)["flops"] == 8e9
    assert throughput.store_peak(3e9, path, replace=True)["flops"] == 3e9  # the benchmark's
    assert throughput.resolve_peak(None, path)["flops"] == 3e9


def test_matmul_peak_is_a_flop_rate():
    assert 1e6 < throughput.measure_matmul_flops(n=128, repeats=2) < 1e16


def test_progress_rate_leaves_out_excluded_time(monkeypatch):
    clock = iter([0.0, 0.0, 10.0, 10.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = progress.Progress(100, "train", mode="plain", every_s=0.0, stream=out)
    bar.exclude(6.0)  # e.g. 6 s of compiling
    bar.update(20)  # at t = 10 s: 20 steps in 4 s of training
    assert "[5 it/s, eta 16s]" in out.getvalue()


def test_compilation_cache_reaches_jax_and_the_record(tmp_path, monkeypatch):
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache,
              jax.config.jax_persistent_cache_min_compile_time_secs)  # fmt: skip
    try:
        cache = tmp_path / "cache"
        run_experiment(tmp_path / "run", [*QUICK, "trainer.max_steps=2",
                                          f"trainer.compilation_cache_dir={cache}"])  # fmt: skip
        assert jax.config.jax_compilation_cache_dir == str(cache)
        assert jax.config.jax_enable_compilation_cache
        record = json.loads((tmp_path / "run" / "record.json").read_text())
        assert record["compilation_cache"]["dir"] == str(cache)
        monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "from_env"))
        assert compile_cache.cache_dir(None) == str(tmp_path / "from_env")
        monkeypatch.delenv(compile_cache.ENV_VAR)
        assert compile_cache.cache_dir(None).endswith("jax_compilation_cache")
        assert compile_cache.configure("off")["dir"] is None
        assert not jax.config.jax_enable_compilation_cache
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_enable_compilation_cache", before[1])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[2])


def test_bad_steps_per_dispatch_is_refused():
    with pytest.raises(ValueError, match=r"trainer.steps_per_dispatch must be a positive int"):
        compose(["+exp=quickstart", "trainer.steps_per_dispatch=0"])
