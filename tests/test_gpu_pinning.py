"""One job per GPU: which GPUs job k of a sweep gets, tried on CPU (no GPU needed: only
`CUDA_VISIBLE_DEVICES` and the slot locks are checked, in a dict and a temporary directory)."""

import os
import subprocess
import sys

import pytest

from experiments.runtime import gpus


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test starts as a process that has not pinned yet (and releases its slot lock)."""
    monkeypatch.setattr(gpus, "_claimed", None)
    monkeypatch.setattr(gpus, "_backend_started", lambda: False)  # tests run JAX already
    yield
    if gpus._claimed is not None:
        gpus._claimed[2].close()


@pytest.mark.parametrize(
    ("visible", "per_job", "job", "expected"),
    [
        ("0,1,2,3", 1, 0, "0"),
        ("0,1,2,3", 1, 3, "3"),
        ("0,1,2,3", 1, 6, "2"),  # job k of a longer sweep: slot k mod 4
        ("0,1,2,3,4,5,6,7", 2, 1, "2,3"),
        ("0,1,2,3,4,5,6,7", 2, 5, "2,3"),
        ("3,5,6,7", 1, 1, "5"),  # ids come from the GPUs this machine lets us see
        ("0,1,2", 2, 1, "0,1"),  # 3 GPUs, 2 per job: one slot; GPU 2 idles
    ],
)
def test_job_k_gets_slot_k_mod_n(tmp_path, visible, per_job, job, expected):
    env = {"CUDA_VISIBLE_DEVICES": visible}
    assert gpus.pin_gpus(job, per_job, env, tmp_path) == expected.split(",")
    assert env["CUDA_VISIBLE_DEVICES"] == expected


def test_the_launcher_variable_pins_and_the_config_key_overrides_it(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3", gpus.GPUS_PER_JOB_ENV: "1"}
    assert gpus.pin_gpus(2, 0, env, tmp_path) == ["2"]
    assert gpus.gpus_per_job_from(2, env) == 2 and gpus.gpus_per_job_from(0, {}) == 0
    with pytest.raises(ValueError, match=r"SPECJAX_GPUS_PER_JOB='one'"):
        gpus.gpus_per_job_from(0, {gpus.GPUS_PER_JOB_ENV: "one"})


def test_no_pinning_leaves_the_environment_alone(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert gpus.pin_gpus(1, 0, env, tmp_path) is None and env == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert not any(tmp_path.iterdir())


def test_a_reused_worker_keeps_its_gpu(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    assert gpus.pin_gpus(1, 1, env, tmp_path) == ["1"]
    env["CUDA_VISIBLE_DEVICES"] = "0,1,2,3"  # as a new job in the same joblib worker sees it
    assert gpus.pin_gpus(2, 1, env, tmp_path) == ["1"]  # JAX already runs on GPU 1 here
    assert env["CUDA_VISIBLE_DEVICES"] == "1"


def test_a_slot_held_by_another_process_is_skipped_and_all_held_is_an_error(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, pathlib; from experiments.runtime import gpus; "
         f"held = gpus.claim_slot(0, 2, pathlib.Path({str(tmp_path)!r})); "
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"  # the other worker sits on GPU 0
        env = {"CUDA_VISIBLE_DEVICES": "0,1"}
        assert gpus.pin_gpus(0, 1, env, tmp_path) == ["1"]  # job 0 prefers GPU 0: taken
        mine, gpus._claimed = gpus._claimed, None  # a third worker, while both GPUs are held
        with pytest.raises(RuntimeError, match=r"all 2 GPU slots .* are held"):
            gpus.pin_gpus(3, 1, {"CUDA_VISIBLE_DEVICES": "0,1"}, tmp_path)
        mine[2].close()
    finally:
        holder.communicate("", timeout=30)


def test_more_gpus_per_job_than_the_machine_has_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"trainer.gpus_per_job=3 but this machine shows 2 GPU"):
        gpus.pin_gpus(0, 3, {"CUDA_VISIBLE_DEVICES": "0,1"}, tmp_path)
    with pytest.raises(ValueError, match=r"shows 0 GPU"):
        gpus.pin_gpus(0, 1, {"CUDA_VISIBLE_DEVICES": ""}, tmp_path)


def test_pinning_after_jax_started_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus, "_backend_started", lambda: True)
    with pytest.raises(RuntimeError, match="backend already started"):
        gpus.pin_gpus(0, 1, {"CUDA_VISIBLE_DEVICES": "0"}, tmp_path)


@pytest.mark.slow
def test_the_per_gpu_launcher_gives_each_worker_its_own_gpu(tmp_path):
    """Two quickstart jobs through `hydra/launcher=per_gpu` on a pretend 2-GPU machine (CPU JAX
    ignores CUDA_VISIBLE_DEVICES): both slots are taken, by two different worker processes."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "SPECJAX_NUM_GPUS": "2",
           "JAX_PLATFORMS": "cpu", gpus.SLOT_DIR_ENV: str(tmp_path / "slots")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "experiments.run", "-m", "hydra/launcher=per_gpu",
         "+exp=quickstart", "trainer.max_steps=2", "trainer.progress=off", "seed=0,1",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (slot_dir,) = (tmp_path / "slots").iterdir()
    holders = {p.name: p.read_text() for p in slot_dir.iterdir()}
    assert set(holders) == {"slot-0.lock", "slot-1.lock"}
    assert len(set(holders.values())) == 2  # two processes, one GPU each
