"""What a finished run feeds: the wandb mirror, the spectra figures, checkpoint sampling, --help.

One tiny nanogpt run (2 blocks, checkpoints at steps 2 and 4) is made once for the module,
with a recording fake `wandb` module in place of the real one; the run directory's own files
(spectra parquet, metrics.jsonl, orbax checkpoints read back directly) are the references.
"""

import json
import pathlib
import runpy
import subprocess
import sys
import types

import jax
import matplotlib
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from experiments import plot as plot_cli
from experiments import rundir, sample
from experiments.config import LoggerConfig
from experiments.nanogpt import figures
from experiments.runtime import wandb_mirror
from experiments.studies import _figures, quickstart
from tests._runs import run_experiment
from tests._tiny import tiny_nanogpt

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = tiny_nanogpt("muon", {"model.num_layers": 2, "study.eval_batches": 2, "study.full_eval":
    "false", "trainer.max_steps": 4, "optim.warmup_steps": 1, "trainer.eval_every": 2,
    "trainer.spectra_every": 2, "trainer.ckpt_every": 2, "logger": "wandb", "logger.mode":
    "offline"})  # fmt: skip


class FakeRun:
    """Records what the mirror sends to wandb."""

    def __init__(self, **kwargs):
        self.init_kwargs, self.defined, self.logs, self.finished = kwargs, {}, [], None

    def define_metric(self, name, **kwargs):
        self.defined[name] = kwargs

    def log(self, data, step=None, commit=None):
        assert step is None, "the x-axis is trainer/step, not wandb's own step"
        self.logs.append(dict(data))

    def finish(self, exit_code=0):
        self.finished = exit_code


def fake_wandb_module(runs: list):
    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: runs.append(FakeRun(**kwargs)) or runs[-1]
    module.Table = lambda columns, data: ("table", tuple(columns), data)
    module.Image = lambda path: ("image", path)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(run dir, the fake wandb run that mirrored it)."""
    runs: list[FakeRun] = []
    run_dir = tmp_path_factory.mktemp("tiny_nanogpt") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "wandb", fake_wandb_module(runs))
        run_experiment(run_dir, TINY)
    assert len(runs) == 1 and runs[0].finished == 0
    return run_dir, runs[0]


# --- wandb -------------------------------------------------------------------------------------


def test_wandb_gets_per_layer_spectral_scalars_equal_to_the_spectra_files(tiny_run):
    run_dir, fake = tiny_run
    spectra = rundir.load_run(run_dir).spectra
    spectra_logs = [log for log in fake.logs if "spectra_table" in log]
    assert sorted(log["trainer/step"] for log in spectra_logs) == sorted(spectra["step"].unique())
    named = {"act_stable_rank": "stable_rank_A", "grad_nuclear_rank": "nuclear_rank_G",
             "ratio": "nr_G_over_st_A", "weight_spectral_norm": "spectral_norm_W"}  # fmt: skip
    for log in spectra_logs:
        rows = spectra[spectra["step"] == log["trainer/step"]]
        weights = rows[rows["kind"] == "weight"]
        assert len(weights) == 2 * 4 + 2  # 4 matrices per block, wte, wpe (tied head)
        for _, row in weights.iterrows():
            for column, short in named.items():
                assert log[f"spectra/{row['name']}/{short}"] == row[column], (row["name"], short)
        for _, row in rows[rows["kind"] == "activation"].iterrows():
            assert log[f"spectra/{row['name']}/stable_rank_A"] == row["act_stable_rank"]
        layers = {k.split("/", 1)[1].rsplit("/", 1)[0] for k in log if k.startswith("spectra/")}
        assert layers == set(rows["name"])  # a curve per layer, nothing else
        assert not any("top_singular_values" in k for k in log)  # lists stay in the table


def test_wandb_metrics_match_metrics_jsonl_on_the_declared_step_axis(tiny_run):
    run_dir, fake = tiny_run
    lines = [json.loads(line) for line in (run_dir / rundir.METRICS_FILE).read_text().splitlines()]
    metric_logs = [log for log in fake.logs if "spectra_table" not in log]
    for line in lines:
        step = line.pop("step")
        assert any(log.get("trainer/step") == step and all(log.get(k) == v for k, v in
                   line.items()) for log in metric_logs), line  # fmt: skip
    assert fake.defined["trainer/step"].get("hidden") is True
    assert fake.defined["*"]["step_metric"] == "trainer/step"
    assert fake.defined["spectra/*"] == {"step_metric": "trainer/step", "summary": "last"}
    assert "min" in fake.defined["val_loss"]["summary"].split(",")
    assert fake.init_kwargs["mode"] == "offline" and fake.init_kwargs["dir"] == str(run_dir)


def test_a_wandb_run_draws_its_figures_and_uploads_each_one(tiny_run):
    run_dir, fake = tiny_run
    drawn = sorted(p.stem for p in (run_dir / rundir.FIGURES_DIR).glob("*.png"))
    assert drawn, "a nanogpt run with logger=wandb draws its figures before the mirror closes"
    uploaded = [k.removeprefix("figures/") for log in fake.logs for k in log
                if k.startswith("figures/")]  # fmt: skip
    assert sorted(uploaded) == drawn


def test_wandb_uploads_the_run_figures_once_as_images(tmp_path, monkeypatch):
    runs: list[FakeRun] = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb_module(runs))
    mirror = wandb_mirror.WandbMirror(tmp_path, {}, LoggerConfig(kind="wandb", mode="offline"), {})
    (tmp_path / "figures").mkdir()
    for name in ("b_loss", "a_spectra"):
        (tmp_path / "figures" / f"{name}.png").write_bytes(b"png")
    mirror.log_figures([tmp_path / "figures" / "b_loss.png"], step=7)
    mirror.finish()
    images = [log for log in runs[0].logs if any(k.startswith("figures/") for k in log)]
    assert images == [
        {"figures/b_loss": ("image", str(tmp_path / "figures" / "b_loss.png")), "trainer/step": 7},
        {"figures/a_spectra": ("image", str(tmp_path / "figures" / "a_spectra.png"))},
    ]
    assert runs[0].finished == 0


def test_spectra_scalars_skip_unnamed_rows_lists_and_identity_columns():
    rows = [
        {"matrix": "A", "index": 0, "sigma": 3.0},  # a row per singular value: table only
        {"layer": "w", "quantity": "weight", "stable_rank": 2.5, "singular_values": [1.0, 0.5]},
        {"kind": "weight", "name": "b/fc", "layer": 0, "width": 8, "ratio": 4.0, "flag": True,
         "act_stable_rank": float("nan")},
    ]  # fmt: skip
    assert wandb_mirror.spectra_scalars(rows) == {
        "spectra/w/stable_rank": 2.5,
        "spectra/b/fc/nr_G_over_st_A": 4.0,
    }


# --- figures -----------------------------------------------------------------------------------


def _spectra_with_optim(run_dir):
    run = rundir.load_run(run_dir)
    return run.spectra.assign(run=str(run_dir), optim=run.config["optim"]["name"])


BLOCKS = None  # a panel holding block_0/<type> and block_1/<type>
YLABEL = {"activation": "st(A) =", "weight": "nr(G) ="}


@pytest.mark.parametrize(
    ("figure", "kind", "column", "panels"),
    [
        ("activation_stable_ranks", "activation", "act_stable_rank",
         {"embeddings": {"positions", "tokens"}, "attn_in": BLOCKS, "attn_out": BLOCKS,
          "mlp_in": BLOCKS, "mlp_act": BLOCKS, "head_in": {"head_in"}}),
        ("gradient_nuclear_ranks", "weight", "grad_nuclear_rank",
         {"embeddings": {"wpe", "wte"}, "attn/qkv": BLOCKS, "attn/proj": BLOCKS,
          "mlp/fc": BLOCKS, "mlp/proj": BLOCKS}),
    ],
)  # fmt: skip
def test_spectra_figures_are_small_multiples_with_a_line_per_layer(
    tiny_run, figure, kind, column, panels
):
    spectra = _spectra_with_optim(tiny_run[0])
    rows = spectra[spectra["kind"] == kind]
    fig = getattr(figures, figure)(spectra)
    fig.canvas.draw()
    assert [ax.get_title().split(" ")[0] for ax in fig.axes] == list(panels)  # one optimizer row
    for ax, (panel, names) in zip(fig.axes, panels.items(), strict=True):
        names = names or {f"block_{i}/{panel}" for i in (0, 1)}
        by_label = {n.replace(f"/{panel}", "").replace("block_", "block "): n for n in names}
        assert sorted(line.get_label() for line in ax.lines) == sorted(by_label)
        for line in ax.lines:
            ref = rows[rows["name"] == by_label[line.get_label()]].sort_values("step")
            np.testing.assert_array_equal(line.get_xdata(), ref["step"])
            np.testing.assert_array_equal(line.get_ydata(), ref[column])
        colours = {matplotlib.colors.to_hex(line.get_color()) for line in ax.lines}
        assert len(colours) == len(ax.lines)  # layers in a panel are told apart by colour
        assert ax.get_xlabel() == "training step" and ax.get_ylabel().startswith(YLABEL[kind])
        legend = ax.get_legend()
        assert legend is not None
        below = legend.get_window_extent().y1 <= ax.get_window_extent().y0 + 1e-6
        assert below, "the legend must not cover the data"
    plt.close(fig)


def test_plot_cli_writes_every_nanogpt_figure(tiny_run, tmp_path):
    paths = plot_cli.plot_runs([tiny_run[0]], tmp_path)
    names = ("loss", "activation_stable_rank", "gradient_nuclear_rank", "ratio_heatmap",
             "weight_spectral_norm", "gate_choices", "muon_ablation")  # fmt: skip
    assert sorted(p.name for p in paths) == sorted(f"nanogpt_{n}.png" for n in names)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_quickstart_plot_colours_a_setting_alike_for_train_val_and_seeds(tmp_path, monkeypatch):
    settings = [("sgd", 0), ("sgd", 1), ("adamw", 0)]
    dirs = []
    for optim, seed in settings:
        dirs.append(tmp_path / f"{optim}_{seed}")
        run_experiment(dirs[-1], ["+exp=quickstart", f"optim={optim}", f"seed={seed}",
                                  "trainer.max_steps=4", "trainer.eval_every=2",
                                  "trainer.progress=off"])  # fmt: skip
    captured = []
    real_save = _figures.save

    def spy(fig, out_dir, name, **kwargs):  # keep the figure to read it back
        captured.append(fig)
        return real_save(fig, out_dir, name, **kwargs)

    monkeypatch.setattr(_figures, "save", spy)
    assert quickstart.plot(dirs, tmp_path / "figures")[0].exists()
    (ax,) = captured[0].axes
    train = [line for line in ax.lines if line.get_linestyle() == "-"]
    val = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(train) == len(val) == 3  # a train and a val line per run, in run order
    colours = [line.get_color() for line in train]
    assert [line.get_color() for line in val] == colours
    assert colours[0] == colours[1] != colours[2]  # the two sgd seeds alike, adamw apart
    for line, run_dir in zip(val, dirs, strict=True):
        ref = rundir.load_run(run_dir).metrics.dropna(subset=["val_loss"])
        np.testing.assert_array_equal(line.get_ydata(), ref["val_loss"])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["optim=sgd", "optim=adamw", "train (batch)", "val (fixed set)"]
    assert ax.get_xlabel() == "training step" and ax.get_ylabel()


# --- sampling from a checkpoint ------------------------------------------------------------------


def _raw_checkpoint_params(run_dir, step):
    """The params of checkpoint `step` read straight from orbax, without a target tree."""
    raw = ocp.StandardCheckpointer().restore(run_dir / "checkpoints" / str(step) / "state")
    return traverse_util.flatten_dict(raw["params"])


def test_sampling_at_a_step_uses_that_checkpoints_params(tiny_run):
    run_dir = tiny_run[0]
    assert sample.checkpoint_steps(run_dir) == [2, 4]
    gpt, params_2, _ = sample.load_params(run_dir, step=2)
    _, params_4, _ = sample.load_params(run_dir, step=4)
    _, final, _ = sample.load_params(run_dir)
    for path, value in traverse_util.flatten_dict(params_2).items():
        np.testing.assert_array_equal(np.asarray(value), _raw_checkpoint_params(run_dir, 2)[path])
    x = np.arange(8, dtype=np.int32)[None] % gpt.config.vocab_size

    apply = jax.jit(gpt.apply)

    def logits(p):
        return np.asarray(apply({"params": p}, x))

    np.testing.assert_array_equal(logits(params_4), logits(final))  # step 4 is the last step
    assert np.abs(logits(params_2) - logits(final)).max() > 1e-4


def test_sample_cli_is_seeded_and_lists_the_steps_on_a_bad_one(tiny_run, capsys):
    run_dir = str(tiny_run[0])
    texts = []
    for seed in (0, 0, 1):
        assert sample.main([run_dir, "--step", "2", "--tokens", "12", "--seed", str(seed)]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] != texts[2]
    with pytest.raises(SystemExit) as exit_info:
        sample.main([run_dir, "--step", "3"])
    assert exit_info.value.code == 2
    assert "--step 3" in (err := capsys.readouterr().err) and "available steps: [2, 4]" in err


# --- --help --------------------------------------------------------------------------------------


@pytest.mark.parametrize("main", [plot_cli.main, sample.main], ids=["plot", "sample"])
def test_module_clis_have_help(main, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m experiments.") and len(out.splitlines()) > 4


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("bench_*.py")),
                         ids=lambda p: p.stem)  # fmt: skip
def test_benchmark_scripts_have_help(script, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage:") and len(out.splitlines()) > 3


def test_run_help_gives_usage_and_lists_the_experiments():
    # A subprocess: Hydra's --help in-process leaves its logging bound to pytest's streams.
    done = subprocess.run([sys.executable, "-m", "experiments.run", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m experiments.run +exp=NAME")
    exp_line = next(line for line in done.stdout.splitlines() if line.startswith("exp: "))
    listed = set(exp_line[len("exp: ") :].split(", "))
    assert listed == {p.stem for p in (ROOT / "configs" / "exp").glob("*.yaml")}
