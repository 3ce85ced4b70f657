"""`sweep.<key>=[...]`: a grid of nanogpt runs trained as one vmapped program.

Reference: each member against a separate run of the same values (`tests._runs`), metric by
metric; a sweep stopped and resumed against one that was not.
"""

import json

import numpy as np
import pytest

from experiments import rundir, sweep_grid
from experiments.config import compose
from experiments.runtime.trainer import TrainingInterrupted
from experiments.runtime.vmap_sweep import MembersFailed, execute_sweep
from tests._runs import run_experiment
from tests._tiny import tiny_nanogpt

TINY = tiny_nanogpt("muon", {"study.eval_batches": 2, "study.full_eval_windows": 2048,
    "trainer.max_steps": 4, "optim.warmup_steps": 1, "trainer.eval_every": 2,
    "trainer.spectra_every": 0, "trainer.ckpt_every": 0, "trainer.log_every": 1,
    "trainer.async_checkpointing": "false"})  # fmt: skip


def sweep(run_dir, grid, overrides=()):
    overrides = [*TINY, *overrides]
    return execute_sweep(compose(overrides), run_dir, overrides, grid)


def metric_lines(run_dir):
    return [json.loads(line) for line in (run_dir / rundir.METRICS_FILE).read_text().splitlines()]


WALL_CLOCK = ("step_time_s", "tokens_per_s", "mfu")  # differ between any two runs


def assert_same_metrics(member_dir, single_dir):
    member = metric_lines(member_dir)
    single = [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in
              metric_lines(single_dir)]  # fmt: skip
    assert [sorted(r) for r in member] == [sorted(r) for r in single]
    for a, b in zip(member, single, strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, err_msg=f"{name} {a['step']}")


# --- the grid: parsing and refusals (nothing compiles) -----------------------------------------
def test_grid_is_the_cartesian_product_in_command_order():
    rest, grid = sweep_grid.peel(["+exp=x", "sweep.seed=[0,1,2]", "sweep.optim.lr=[1e-3,2e-3]"])
    assert rest == ["+exp=x"] and grid == {"seed": [0, 1, 2], "optim.lr": [1e-3, 2e-3]}
    points = sweep_grid.members(grid)
    assert len(points) == 6 and points[1] == {"seed": 0, "optim.lr": 2e-3}
    assert points[4] == {"seed": 2, "optim.lr": 1e-3}
    configs = sweep_grid.member_configs(compose(TINY), grid)
    assert [(c.seed, c.optim.lr) for c in configs] == [(p["seed"], p["optim.lr"]) for p in points]
    assert configs[0].model.width == 16 and configs[5].optim.momentum == 0.95
    assert sweep_grid.member_overrides(["seed=3", "a=1"], points[1]) == [
        "a=1", "seed=0", "optim.lr=0.002"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ("sweep.seed=3", r"sweep.seed must be a list such as sweep.seed='\[1,2\]'"),
        ("sweep.seed=[]", r"empty list"),
        ("sweep.optim.lr=[1e-3,fast]", r"'fast' is not a number.*-m"),
        ("sweep.optim.nesterov=[true,false]", r"True is not a number.*Hydra's -m"),
        ("sweep.seed", r"sweep.KEY='\[v1,v2,...\]'"),
    ],
)
def test_bad_sweep_arguments_are_refused(arg, match):
    with pytest.raises(ValueError, match=match):
        sweep_grid.peel([arg])


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ({"model.width": [16, 32]}, r"model.width changes the shapes.*-m .* model.width=16,32"),
        ({"study.batch_size": [4, 8]}, r"study.batch_size changes the shapes.*Hydra's -m"),
        ({"trainer.max_steps": [4, 8]}, r"trainer.max_steps changes the shapes.*Hydra's -m"),
        ({"optim.lrr": [1e-3]}, r"unknown key 'lrr'; keys here: \[.*'lr'"),
        ({"optim.method": [1]}, r"optim.method is a str key, not a number.*-m"),
        ({"seed": [0.5]}, r"sweep.seed takes ints, got 0.5"),
        ({"optim.lr": [0.0]}, r"optim.lr must be a finite number in \(0.0, inf\), got 0.0"),
    ],
)
def test_keys_that_change_the_program_or_bad_values_are_refused(grid, match):
    with pytest.raises(ValueError, match=match):
        sweep_grid.member_configs(compose(TINY), grid)


@pytest.mark.parametrize("key", ["optim.warmup_steps", "optim.iters"])
def test_keys_the_optimizer_cannot_trace_are_refused_before_compiling(key, tmp_path):
    with pytest.raises(ValueError, match=rf"sweep.{key}: optim=muon uses .*Hydra's -m"):
        sweep(tmp_path, {key: [1, 2]})
    assert not (tmp_path / "sweep.json").exists()


def test_other_studies_are_refused(tmp_path):
    cfg = compose(["+exp=quickstart"])
    with pytest.raises(ValueError, match=r"study 'quickstart' cannot run a vmapped sweep.*-m"):
        execute_sweep(cfg, tmp_path, [], {"seed": [0, 1]})


def test_a_sweep_uses_the_configured_compilation_cache(tmp_path):
    """The sweep's entry path sets up the process like a single run: the cache is configured
    before the study is even looked up (here a refused study, so nothing compiles)."""
    import jax

    before = jax.config.jax_compilation_cache_dir
    cache = tmp_path / "cache"
    cfg = compose(["+exp=quickstart", f"trainer.compilation_cache_dir={cache}"])
    try:
        with pytest.raises(ValueError, match="cannot run a vmapped sweep"):
            execute_sweep(cfg, tmp_path / "run", [], {"seed": [0, 1]})
        assert jax.config.jax_compilation_cache_dir == str(cache)
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


# --- training ------------------------------------------------------------------------------------
def test_members_equal_separate_runs_and_a_dead_member_does_not_stop_the_others(tmp_path):
    """Seeds and learning rates pair up as in the grid; lr=1e30 members go non-finite alone."""
    grid = {"seed": [0, 1], "optim.lr": [1e-3, 1e30, 3e-3]}
    with pytest.raises(MembersFailed, match=r"2 of 6 members went non-finite: runs/1 \(step"):
        sweep(tmp_path / "sweep", grid)
    run_experiment(tmp_path / "single", [*TINY, "seed=1", "optim.lr=3e-3"])  # the last member
    assert_same_metrics(tmp_path / "sweep" / "runs" / "5", tmp_path / "single")
    statuses = [json.loads((tmp_path / "sweep" / "runs" / str(k) / "summary.json").read_text())
                for k in range(6)]  # fmt: skip
    assert [s["status"] for s in statuses] == ["completed", "non_finite", "completed"] * 2
    assert statuses[1]["step"] >= 2 and statuses[0]["summary"]["val_loss_full"] > 0
    runs = rundir.load_runs(tmp_path / "sweep")  # the members, read like any runs
    assert len(runs.runs) == 6 and set(runs.config_keys) == {"seed", "optim.lr"}
    assert runs.runs[5].config["optim"]["lr"] == 3e-3
    parent = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert parent["completed"] == 4 and len(parent["members"]) == 6


def test_gated_lr_and_spectral_scale_members_equal_separate_runs(tmp_path):
    """The gated optimizer's update needs st(A): the traceability check must pass it too, or
    every gated key is wrongly refused as untraceable (the bug this test was written for)."""
    gated = ["+exp=nanogpt_gated", *TINY[1:]]
    grid = {"optim.lr": [3e-3], "optim.spectral_scale": [0.5, 2.0]}
    execute_sweep(compose(gated), tmp_path / "sweep", gated, grid)
    run_experiment(tmp_path / "single", [*gated, "optim.lr=3e-3", "optim.spectral_scale=2.0"])
    assert_same_metrics(tmp_path / "sweep" / "runs" / "1", tmp_path / "single")

    def losses(run_dir):
        return [row["loss"] for row in metric_lines(run_dir) if "loss" in row]

    assert losses(tmp_path / "sweep" / "runs" / "0")[-1] != losses(tmp_path / "single")[-1]


@pytest.mark.slow
def test_kill_and_resume_is_bitwise_with_spectra(tmp_path):
    grid = {"seed": [0, 1], "optim.momentum": [0.9, 0.95]}
    common = ["trainer.max_steps=6", "trainer.spectra_every=2"]
    sweep(tmp_path / "straight", grid, common)
    with pytest.raises(TrainingInterrupted):
        sweep(tmp_path / "resumed", grid, [*common, "trainer.stop_at_step=3"])
    assert json.loads((tmp_path / "resumed" / "runs" / "2" / "summary.json").read_text())[
        "status"] == "interrupted"  # fmt: skip
    sweep(tmp_path / "resumed", grid, common)
    assert len(json.loads((tmp_path / "resumed" / "sweep.json").read_text())["resumes"]) == 1
    record = json.loads((tmp_path / "resumed" / "runs" / "3" / rundir.RECORD_FILE).read_text())
    assert len(record["resumes"]) == 1  # continued from the checkpoint, not started over
    for k in range(4):
        straight, resumed = (tmp_path / d / "runs" / str(k) for d in ("straight", "resumed"))
        for name in (rundir.METRICS_FILE, rundir.PARAMS_FILE):
            assert (resumed / name).read_bytes() == (straight / name).read_bytes(), (k, name)
        parts = sorted((straight / rundir.SPECTRA_DIR).iterdir())
        assert [p.name for p in parts] == [f"step_{s:09d}.parquet" for s in (0, 2, 4, 6)]
        for part in parts:
            assert (resumed / rundir.SPECTRA_DIR / part.name).read_bytes() == part.read_bytes()


@pytest.mark.slow
def test_spectra_and_momentum_members_equal_separate_runs(tmp_path):
    grid = {"optim.momentum": [0.9, 0.95]}
    sweep(tmp_path / "sweep", grid, ["trainer.spectra_every=2"])
    single = tmp_path / "single"
    run_experiment(single, [*TINY, "trainer.spectra_every=2", "optim.momentum=0.9"])
    member = tmp_path / "sweep" / "runs" / "0"
    assert_same_metrics(member, single)
    a = rundir.load_run(member).spectra.sort_values(["step", "kind", "name"])
    b = rundir.load_run(single).spectra.sort_values(["step", "kind", "name"])
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in ("act_stable_rank", "grad_nuclear_rank", "update_spectral_norm"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-4)


@pytest.mark.slow
def test_runs_axis_split_over_two_devices_gives_the_same_members(tmp_path):
    """The same sweep with the runs axis over 2 (fake CPU) devices, in a fresh process."""
    import os
    import subprocess
    import sys

    grid = {"seed": [0, 1]}
    sweep(tmp_path / "one_device", grid)
    script = (
        "import sys; from tests.test_vmap_sweep import sweep; import jax\n"
        "assert jax.device_count() == 2\n"
        f"sweep(__import__('pathlib').Path(sys.argv[1]), {grid!r})\n"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "two_devices")], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for k in range(2):
        assert_same_metrics(tmp_path / "two_devices" / "runs" / str(k),
                            tmp_path / "one_device" / "runs" / str(k))  # fmt: skip
