"""Tiny end-to-end runs of every nanogpt experiment, with spectra logged, then sampling."""

import json

import numpy as np
import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException

from experiments.config import compose
from tests._runs import run_experiment

EXPS = ["nanogpt_adamw", "nanogpt_muon", "nanogpt_spectra", "nanogpt_gated"]
TINY = [
    "data=stdlib_source", "model.num_layers=1", "model.width=16", "model.num_heads=2",
    "model.context_length=8", "study.batch_size=4", "study.eval_batches=2",
    "study.full_eval_windows=2048", "trainer.max_steps=4", "optim.warmup_steps=1",
    "trainer.eval_every=2", "trainer.spectra_every=2", "trainer.ckpt_every=0",
    "trainer.log_every=1",
]  # fmt: skip


def compose_exp(name, overrides=()):
    return compose([f"+exp={name}", "trainer.progress=off", *overrides])


def test_default_configs_follow_the_nanogpt_recipe():
    for name in EXPS:
        cfg = compose_exp(name)
        assert cfg.study.name == "nanogpt" and cfg.model.width == 128
        assert cfg.trainer.max_steps == 2000 and cfg.optim.warmup_steps == 100
        assert cfg.optim.clip_grad_norm == 1.0 and cfg.optim.weight_decay == 0.1
        assert cfg.data.fallback == "stdlib_source"
    assert compose_exp("nanogpt_muon", ["data=shakespeare_char"]).data.fallback is None


@pytest.mark.parametrize("name", EXPS)
def test_tiny_run_end_to_end_with_spectra(name, tmp_path):
    summary = run_experiment(tmp_path, [f"+exp={name}", "trainer.progress=off", *TINY])
    assert np.isfinite(summary["val_loss"]) and np.isfinite(summary["val_loss_full"])
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    spectra = pd.read_parquet(tmp_path / "spectra")
    assert sorted(spectra["step"].unique()) == [0, 2, 4]
    weights = spectra[spectra["kind"] == "weight"]
    assert set(weights["name"]) == {
        "wte", "wpe", "block_0/attn/qkv", "block_0/attn/proj", "block_0/mlp/fc", "block_0/mlp/proj"
    }  # fmt: skip
    later = weights[weights["step"] > 0]
    assert (later["update_spectral_norm"] > 0).all(), "updates after warm-up must be non-zero"
    assert np.allclose(later["ratio"], later["grad_nuclear_rank"] / later["act_stable_rank"])
    acts = spectra[spectra["kind"] == "activation"]
    assert (acts["act_stable_rank"] >= 0.999).all()
    assert (acts["act_stable_rank"] <= acts["width"] + 1e-3).all()
    record = json.loads((tmp_path / "record.json").read_text())
    assert "stdlib_source" in json.dumps(record)
    if name == "nanogpt_adamw":  # sampling from the saved model, seeded
        from experiments.sample import main

        assert (tmp_path / "final_params.msgpack").is_file()
        _sample_twice_is_identical(tmp_path, main)


def _sample_twice_is_identical(run_dir, main):
    import contextlib
    import io

    outs = []
    for seed in (0, 0, 1):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main([str(run_dir), "--tokens", "20", "--seed", str(seed), "--top-k", "5"]) == 0
        outs.append(buf.getvalue())
    assert outs[0] == outs[1] and len(outs[0]) == 1 + 20 + 1
    assert outs[0] != outs[2]


def test_sample_needs_a_run_dir(tmp_path, capsys):
    from experiments.sample import main

    with pytest.raises(SystemExit) as exit_info:  # a usage error, before anything loads
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "nanogpt.json not found: RUN_DIR must be the directory" in capsys.readouterr().err


def test_unknown_study_key_and_bad_value_are_rejected():
    with pytest.raises(ConfigCompositionException, match="batchsize"):
        compose_exp("nanogpt_adamw", ["study.batchsize=3"])
    with pytest.raises(ValueError, match=r"study.eval_batches must be a positive int, got 0"):
        compose_exp("nanogpt_adamw", ["study.eval_batches=0"])


def test_only_the_gated_run_passes_activation_stable_ranks():
    needs = {name: compose_exp(name).optim.needs_activation_stable_ranks for name in EXPS}
    assert needs == {"nanogpt_adamw": False, "nanogpt_muon": False, "nanogpt_spectra": False,
                     "nanogpt_gated": True}  # fmt: skip


@pytest.mark.parametrize("name", EXPS)
def test_kill_and_resume_is_bitwise_for_every_optimizer(name, tmp_path):
    """Stopped at step 3 and resumed, every optimizer ends exactly where an unstopped run does:
    optimizer state (moments, momentum, clip levels, gate statistics) and data position restored."""
    from experiments.runtime.trainer import TrainingInterrupted

    common = [f"+exp={name}", "trainer.progress=off", *TINY, "trainer.max_steps=6",
              "trainer.async_checkpointing=false", "trainer.log_throughput=false"]  # fmt: skip
    run_experiment(tmp_path / "straight", common)
    with pytest.raises(TrainingInterrupted):
        run_experiment(tmp_path / "resumed", [*common, "trainer.stop_at_step=3"])
    run_experiment(tmp_path / "resumed", common)
    for name_ in ("metrics.jsonl", "final_params.msgpack"):
        straight = (tmp_path / "straight" / name_).read_bytes()
        assert (tmp_path / "resumed" / name_).read_bytes() == straight, name_
    for part in sorted((tmp_path / "straight" / "spectra").iterdir()):
        assert (tmp_path / "resumed" / "spectra" / part.name).read_bytes() == part.read_bytes()
