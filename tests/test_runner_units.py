"""Runtime pieces on their own: seeds, metric files, progress, mesh checks, optimizer registry."""

import hashlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from experiments.optimizers import BUILDERS, build_optimizer, make_schedule
from experiments.runtime.checkpoint import resolve_checkpoint_path
from experiments.runtime.mesh import check_batch_divisible, make_data_mesh
from experiments.runtime.metrics import JsonlWriter, SpectraWriter, to_python
from experiments.runtime.progress import Progress
from experiments.runtime.seeds import stable_name_hash, stream_key


def test_stream_names_hash_stably():
    # independent reference: first 4 bytes of sha256, little-endian, top bit cleared
    for name in ("init", "data", "dropout"):
        ref = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") & 0x7FFFFFFF
        assert stable_name_hash(name) == ref
    # golden value: update me only if the stream derivation changes on purpose
    assert stable_name_hash("init") == 168187067
    key = stream_key(0, "init")
    np.testing.assert_array_equal(key, jax.random.fold_in(jax.random.PRNGKey(0), 168187067))
    assert not np.array_equal(stream_key(0, "init"), stream_key(0, "data"))
    assert not np.array_equal(stream_key(0, "init"), stream_key(1, "init"))
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        stream_key(-1, "init")
    with pytest.raises(ValueError, match="stream name"):
        stream_key(0, "")


def test_jsonl_round_trips_floats_and_truncates(tmp_path):
    writer = JsonlWriter(tmp_path / "m.jsonl")
    x = np.float32(0.1)
    for step in (1, 2, 3):
        writer.write(
            step, {"loss": jnp.asarray(x) * step, "vec": np.arange(2.0), "n": np.int32(step)}
        )
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert rows[1] == {"step": 2, "loss": float(np.float32(x) * 2), "vec": [0.0, 1.0], "n": 2}
    with (tmp_path / "m.jsonl").open("a") as f:
        f.write('{"step": 4, "lo')  # torn by a kill
    assert writer.truncate_after(2) == 2
    assert [
        json.loads(line)["step"] for line in (tmp_path / "m.jsonl").read_text().splitlines()
    ] == [1, 2]
    assert to_python(jnp.float32(float("nan"))) != to_python(
        jnp.float32(float("nan"))
    )  # NaN stays NaN


def test_spectra_parts_read_as_one_frame(tmp_path):
    writer = SpectraWriter(tmp_path / "spectra")
    for step in (0, 10, 20):
        rows = [
            {"layer": "a", "stable_rank": 1, "singular_values": np.ones(3) * step},
            {"layer": "b", "stable_rank": 1.5, "singular_values": [1.0, 2.0]},
        ]
        writer.write(step, rows)
    frame = pd.read_parquet(tmp_path / "spectra")
    assert len(frame) == 6 and frame["stable_rank"].dtype == np.float64
    assert list(frame.loc[frame.step == 10, "singular_values"].iloc[0]) == [10.0, 10.0, 10.0]
    assert writer.truncate_after(10) == 1
    assert sorted(pd.read_parquet(tmp_path / "spectra")["step"].unique()) == [0, 10]


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
    sched = make_schedule(lr, "cosine", warm, None, floor, total_steps=total)
    for t in (0, 5, 10, 35, 60, 110, 200):
        if t < warm:
            ref = lr * t / warm
        else:
            frac = min(t - warm, total - warm) / (total - warm)
            ref = lr * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * frac)))
        np.testing.assert_allclose(float(sched(t)), ref, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match=r"must exceed optim\.warmup_steps"):
        make_schedule(lr, "cosine", 10, None, 0.0, total_steps=5)


def test_adamw_and_sgd_match_optax():
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    grads = jax.tree_util.tree_map(lambda p: 0.1 * p + 0.3, params)
    cases = [
        # Default: nanoGPT's rule, decay only leaves of ndim >= 2 ("w", not the vector "b").
        (
            {"name": "adamw", "lr": 1e-2, "weight_decay": 0.1},
            optax.adamw(1e-2, weight_decay=0.1, mask={"w": True, "b": False}),
        ),
        (
            {"name": "adamw", "lr": 1e-2, "weight_decay": 0.1, "decay_matrices_only": False},
            optax.adamw(1e-2, weight_decay=0.1),
        ),
        ({"name": "sgd", "lr": 0.5, "momentum": 0.9}, optax.sgd(0.5, momentum=0.9)),
    ]
    for cfg, ref in cases:
        ours = build_optimizer(cfg, total_steps=10)
        s1, s2 = ours.init(params), ref.init(params)
        for _ in range(3):
            u1, s1 = ours.update(grads, s1, params)
            u2, s2 = ref.update(grads, s2, params)
            jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u1, u2)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_registered_optimizer_takes_a_step(name):
    params = {"dense": {"kernel": jnp.linspace(-1.0, 1.0, 24).reshape(6, 4), "bias": jnp.zeros(4)}}
    grads = jax.tree_util.tree_map(lambda p: jnp.cos(p) + 0.1, params)
    tx = build_optimizer(
        {"name": name, "lr": 0.01, "schedule": "cosine", "warmup_steps": 2}, total_steps=20
    )
    state = tx.init(params)
    extra = {}
    if name == "gated_spectral":  # needs the stable rank of each block's input activations
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


def test_registry_rejects_unknown_names_and_typos():
    with pytest.raises(ValueError, match=r"optim.name must be one of \['adamw'"):
        build_optimizer({"name": "adam", "lr": 0.1})
    with pytest.raises(Exception, match="lrr"):
        build_optimizer({"name": "adamw", "lr": 0.1, "lrr": 0.2})
    with pytest.raises(ValueError, match="clip_grad_norm must be positive"):
        build_optimizer({"name": "sgd", "lr": 0.1, "clip_grad_norm": -1.0})


def test_run_context_tables_datasets_and_keys(tmp_path):
    from omegaconf import OmegaConf

    from experiments.runtime.context import RunContext
    from specjax.runs import load_run

    cfg = OmegaConf.create({"seed": 3, "study": {"name": "x"}, "logger": {"kind": "local"}})
    ctx = RunContext(tmp_path, cfg)
    ctx.log_table("sweep", [{"n": 8, "rank": 2.5}, {"n": 16, "rank": 3.0}])
    ctx.log_table("sweep", [{"n": 32, "rank": jnp.float32(3.5)}])
    ctx.record_dataset("toy", size=123, sha256="ab" * 32, source="generated")
    np.testing.assert_array_equal(ctx.key("init"), stream_key(3, "init"))
    assert ctx.figure_dir() == tmp_path.resolve() / "figures" and ctx.figure_dir().is_dir()
    with pytest.raises(ValueError, match="table name"):
        ctx.log_table("a/b", [{"n": 1}])
    run = load_run(tmp_path)
    assert run.tables["sweep"]["n"].tolist() == [8, 16, 32]
    assert run.tables["sweep"]["rank"].tolist() == [2.5, 3.0, 3.5]
    assert run.record["datasets"] == [
        {"name": "toy", "size": 123, "sha256": "ab" * 32, "source": "generated"}
    ]
    assert run.config["seed"] == 3 and run.summary == {"status": "running"}
