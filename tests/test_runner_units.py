"""Runtime pieces on their own: seeds, run-directory files, progress, mesh checks, optimizers."""

import hashlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from experiments import rundir
from experiments.config import compose
from experiments.optimizers import OPTIMIZERS, AdamWConfig, SGDConfig
from experiments.runtime.checkpoint import resolve_checkpoint_path
from experiments.runtime.context import RunContext, stream_key
from experiments.runtime.mesh import check_batch_divisible, make_data_mesh
from experiments.runtime.progress import Progress


def test_stream_names_hash_stably():
    # independent reference: first 4 bytes of sha256, little-endian, top bit cleared
    for name in ("init", "data", "dropout"):
        ref = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") & 0x7FFFFFFF
        np.testing.assert_array_equal(
            stream_key(5, name), jax.random.fold_in(jax.random.PRNGKey(5), ref)
        )
    # golden value: update me only if the stream derivation changes on purpose
    key = stream_key(0, "init")
    np.testing.assert_array_equal(key, jax.random.fold_in(jax.random.PRNGKey(0), 168187067))
    assert not np.array_equal(stream_key(0, "init"), stream_key(0, "data"))
    assert not np.array_equal(stream_key(0, "init"), stream_key(1, "init"))
    with pytest.raises(ValueError, match="stream name"):
        stream_key(0, "")


def test_metrics_round_trip_floats_and_truncate(tmp_path):
    x = np.float32(0.1)
    for step in (1, 2, 3):
        metrics = {"loss": jnp.asarray(x) * step, "vec": np.arange(2.0), "n": np.int32(step)}
        rundir.append_metrics(tmp_path, step, metrics)
    path = tmp_path / rundir.METRICS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[1] == {"step": 2, "loss": float(np.float32(x) * 2), "vec": [0.0, 1.0], "n": 2}
    with path.open("a") as f:
        f.write('{"step": 4, "lo')  # torn by a kill
    rundir.truncate_after(tmp_path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    nan = rundir.to_python(jnp.float32(float("nan")))
    assert nan != nan  # NaN stays NaN
    assert list(rundir.read_metrics(tmp_path)["step"]) == [1, 2]


def test_spectra_parts_read_as_one_frame(tmp_path):
    for step in (0, 10, 20):
        rows = [
            {"layer": "a", "stable_rank": 1, "singular_values": np.ones(3) * step},
            {"layer": "b", "stable_rank": 1.5, "singular_values": [1.0, 2.0]},
        ]
        rundir.write_spectra(tmp_path, step, rows)
    frame = pd.read_parquet(tmp_path / rundir.SPECTRA_DIR)
    assert len(frame) == 6 and frame["stable_rank"].dtype == np.float64
    assert list(frame.loc[frame.step == 10, "singular_values"].iloc[0]) == [10.0, 10.0, 10.0]
    rundir.truncate_after(tmp_path, 10)
    assert sorted(pd.read_parquet(tmp_path / rundir.SPECTRA_DIR)["step"].unique()) == [0, 10]


def test_progress_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    with Progress(4, "train", mode="auto", every_s=0.0, stream=stream) as bar:
        for _ in range(4):
            bar.update(1, loss=0.5)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("train: 4/4") and "loss=0.5" in lines[-1]
    with pytest.raises(ValueError, match="progress mode"):
        Progress(1, "x", mode="fancy")


def test_progress_notes_print_in_plain_mode_and_not_when_off():
    plain, off = io.StringIO(), io.StringIO()
    with Progress(2, "train", mode="plain", every_s=1e9, stream=plain) as bar:
        bar.note("eval step 1: val_loss=1.5")
    with Progress(2, "train", mode="off", stream=off) as bar:
        bar.note("eval step 1: val_loss=1.5")
    assert plain.getvalue() == "eval step 1: val_loss=1.5\n"
    assert off.getvalue() == ""


def test_batch_divisibility_is_checked_per_leaf():
    mesh = make_data_mesh()
    check_batch_divisible({"x": np.zeros((4, 3))}, mesh)
    with pytest.raises(ValueError, match=r"batch leaf \['y'\] has shape \(\)"):
        check_batch_divisible({"x": np.zeros((4, 3)), "y": np.float32(1)}, mesh)


def test_resume_path_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file or directory"):
        resolve_checkpoint_path(tmp_path / "nope")
    with pytest.raises(ValueError, match="not a run directory"):
        resolve_checkpoint_path(tmp_path)


def test_schedule_warmup_then_cosine_matches_closed_form():
    lr, warm, total, floor = 0.1, 10, 110, 0.1
    sched = SGDConfig(lr=lr, schedule="cosine", warmup_steps=warm, min_lr_ratio=floor)
    sched = sched.learning_rate(total)
    for t in (0, 5, 10, 35, 60, 110, 200):
        if t < warm:
            ref = lr * t / warm
        else:
            frac = min(t - warm, total - warm) / (total - warm)
            ref = lr * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * frac)))
        np.testing.assert_allclose(float(sched(t)), ref, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match=r"must exceed optim\.warmup_steps"):
        SGDConfig(lr=lr, schedule="cosine", warmup_steps=10).learning_rate(5)


def test_adamw_and_sgd_match_optax():
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    grads = jax.tree_util.tree_map(lambda p: 0.1 * p + 0.3, params)
    cases = [
        # Default: nanoGPT's rule, decay only leaves of ndim >= 2 ("w", not the vector "b").
        (
            AdamWConfig(lr=1e-2, weight_decay=0.1),
            optax.adamw(1e-2, weight_decay=0.1, mask={"w": True, "b": False}),
        ),
        (
            AdamWConfig(lr=1e-2, weight_decay=0.1, decay_matrices_only=False),
            optax.adamw(1e-2, weight_decay=0.1),
        ),
        (SGDConfig(lr=0.5, momentum=0.9), optax.sgd(0.5, momentum=0.9)),
        (
            SGDConfig(lr=0.5, clip_grad_norm=0.2),
            optax.chain(optax.clip_by_global_norm(0.2), optax.sgd(0.5)),
        ),
    ]
    for cfg, ref in cases:
        ours = cfg.build(total_steps=10)
        s1, s2 = ours.init(params), ref.init(params)
        for _ in range(3):
            u1, s1 = ours.update(grads, s1, params)
            u2, s2 = ref.update(grads, s2, params)
            jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u1, u2)


def test_muon_adam_lr_follows_the_schedule():
    """adam_lr is the AdamW group's peak: it warms up and decays with the Muon group's lr."""
    import specjax.optim as so

    cfg = OPTIMIZERS["muon"](lr=0.02, adam_lr=4e-3, schedule="cosine", warmup_steps=4)
    peak, adam = cfg.learning_rate(20), cfg.learning_rate(20, cfg.adam_lr)
    for t in (0, 2, 4, 12, 20):
        np.testing.assert_allclose(float(adam(t)), float(peak(t)) * 4e-3 / 0.02, rtol=1e-6)
    # the built optimizer uses both schedules: compare with specjax.optim.muon given them
    warm_cos = optax.warmup_cosine_decay_schedule
    ref = so.muon(warm_cos(0.0, 0.02, 4, 20), adam_learning_rate=warm_cos(0.0, 4e-3, 4, 20))
    params = {"dense": {"kernel": jnp.linspace(-1.0, 1.0, 24).reshape(6, 4), "bias": jnp.ones(4)}}
    grads = jax.tree_util.tree_map(lambda p: jnp.cos(p) + 0.1, params)
    ours = cfg.build(20)
    s1, s2 = ours.init(params), ref.init(params)
    for _ in range(6):
        u1, s1 = ours.update(grads, s1, params)
        u2, s2 = ref.update(grads, s2, params)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), u1, u2)
    assert float(jnp.abs(u1["dense"]["bias"]).max()) > 0  # the AdamW group moved too


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_registered_optimizer_takes_a_step(name):
    params = {"dense": {"kernel": jnp.linspace(-1.0, 1.0, 24).reshape(6, 4), "bias": jnp.zeros(4)}}
    grads = jax.tree_util.tree_map(lambda p: jnp.cos(p) + 0.1, params)
    cfg = OPTIMIZERS[name](lr=0.01, schedule="cosine", warmup_steps=2)
    tx = cfg.build(total_steps=20)
    state = tx.init(params)
    extra = {}
    if cfg.needs_activation_stable_ranks:  # the gated optimizer: st(A) of each block's input
        extra = {"activation_stable_ranks": {"dense": {"kernel": jnp.asarray(2.0), "bias": None}}}

    @jax.jit
    def three_steps(params, state):
        for _ in range(3):
            updates, state = tx.update(grads, state, params, **extra)
            params = optax.apply_updates(params, updates)
        return params

    params = three_steps(params, state)
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree_util.tree_leaves(params))
    moved = float(
        jnp.abs(params["dense"]["kernel"] - jnp.linspace(-1.0, 1.0, 24).reshape(6, 4)).max()
    )
    assert moved > 0


def test_only_the_gated_optimizer_needs_activation_stable_ranks():
    needs = {name for name, cls in OPTIMIZERS.items() if cls.needs_activation_stable_ranks}
    assert needs == {"gated_spectral"}


def test_run_context_tables_datasets_and_keys(tmp_path):
    cfg = compose(["+exp=quickstart", "seed=3"])
    ctx = RunContext(tmp_path, cfg)
    ctx.log_table("sweep", [{"n": 8, "rank": 2.5}, {"n": 16, "rank": 3.0}])
    ctx.log_table("sweep", [{"n": 32, "rank": jnp.float32(3.5)}])
    ctx.record_dataset("toy", size=123, sha256="ab" * 32, source="generated")
    np.testing.assert_array_equal(ctx.key("init"), stream_key(3, "init"))
    # the one sub-seed rule: each index folded into the stream key, in order
    np.testing.assert_array_equal(
        ctx.key("data", 7, 2), jax.random.fold_in(jax.random.fold_in(stream_key(3, "data"), 7), 2)
    )
    assert not np.array_equal(ctx.key("data", 7, 2), ctx.key("data", 2, 7))
    assert ctx.figure_dir() == tmp_path.resolve() / "figures" and ctx.figure_dir().is_dir()
    with pytest.raises(ValueError, match="table name"):
        ctx.log_table("a/b", [{"n": 1}])
    run = rundir.load_run(tmp_path)
    assert run.tables["sweep"]["n"].tolist() == [8, 16, 32]
    assert run.tables["sweep"]["rank"].tolist() == [2.5, 3.0, 3.5]
    assert run.record["datasets"] == [
        {"name": "toy", "size": 123, "sha256": "ab" * 32, "source": "generated"}
    ]
    assert run.config["seed"] == 3 and run.summary == {"status": "running"}
    assert run.config["study"]["name"] == "quickstart" and run.study == "quickstart"


def test_run_labels_name_the_overrides_that_differ(tmp_path):
    runs = []
    sweep = (
        ["+exp=quickstart", "optim=sgd", "seed=0", "hydra.run.dir=a"],
        ["+exp=quickstart", "optim=adamw", "seed=0", "hydra.run.dir=b"],
    )
    for i, overrides in enumerate(sweep):
        run = rundir.Run(path=tmp_path / str(i), config={}, overrides=overrides, record={},
                         summary={}, metrics=pd.DataFrame(), spectra=pd.DataFrame(), tables={})
        runs.append(run)
    assert rundir.run_labels(runs) == ["optim=sgd", "optim=adamw"]
    assert rundir.run_labels(runs[:1]) == ["0"]  # nothing differs: the directory name
