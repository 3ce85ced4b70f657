"""Our AdamW against nanoGPT's `train.py` on its CPU recipe: seed spread, evaluation noise, gap.

    SPECJAX_DATA_DIR=/work/shared/data python benchmarks/compare_nanogpt_recipe.py \
        --nanogpt /tmp/nanogpt --torch-python /tmp/torch-venv/bin/python --out /tmp/cmp

1. nanoGPT: trains a copy of the checkout (seed made a config key) once per `--nanogpt-seeds`
   with the README's CPU command, keeping the step-2000 checkpoint and its printed val loss.
2. Ours: `+exp=nanogpt_adamw optim.lr=1e-3` over `--our-seeds` as one vmapped sweep, once per
   `--variants` (`base`; `nanogpt_choices` = LayerNorm ε 1e-5 and nanoGPT's warm-up formula,
   monkeypatched, the only recipe differences left; see `docs/notes/nanogpt.md`).
3. Every final model, nanoGPT's converted to our flax tree, is scored by one code path: our 20
   fixed validation batches, the whole validation split, and `--noise-batches` random 12×64
   validation batches, whose per-batch sd σ gives the noise of nanoGPT's 20-random-batch
   estimate, σ/√20.
4. Lockstep: both trainers from nanoGPT's initial weights on the same `--lockstep-steps`
   batches; with nanoGPT's two choices our losses and weights must equal torch's to float error.

Each stage reuses what an earlier call left in `--out`, so a rerun only prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# nanoGPT's CPU command for the baby GPT (its README), plus what this comparison needs: the
# step-2000 checkpoint even when val did not improve.
NANOGPT_CPU_ARGS = (
    "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
    "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
    "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0",
    "--always_save_checkpoint=True",
)  # fmt: skip
SEED_LINE = "torch.manual_seed(1337 + seed_offset)"
CONFIG_KEYS_LINE = "config_keys = ["
FINAL_EVAL = re.compile(r"step 2000: train loss ([\d.]+), val loss ([\d.]+)")
OUR_OVERRIDES = (
    "+exp=nanogpt_adamw", "optim.lr=1e-3", "trainer.ckpt_every=0", "trainer.spectra_every=0",
    "trainer.progress=plain",
)  # fmt: skip
VARIANTS = ("base", "nanogpt_choices")
NOISE_KEY = 31337  # the random evaluation batches: one constant key, the same for every model

# Runs inside the torch interpreter: the step-2000 weights as float32 arrays, and torch's loss on
# the first 8 non-overlapping 64-character windows of val.bin (the conversion check).
EXPORT_SCRIPT = """
import sys, numpy as np, torch
from torch.nn import functional as F
sys.path.insert(0, sys.argv[1])
from model import GPT, GPTConfig
ckpt = torch.load(sys.argv[2], map_location="cpu", weights_only=False)
model = GPT(GPTConfig(**ckpt["model_args"]))
model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
model.eval()
val = np.memmap(sys.argv[4], dtype=np.uint16, mode="r")
T = ckpt["model_args"]["block_size"]
x = torch.from_numpy(val[: 8 * T].astype(np.int64)).view(8, T)
y = torch.from_numpy(val[1 : 8 * T + 1].astype(np.int64)).view(8, T)
with torch.no_grad():
    _, loss = model(x, y)
arrays = {k: v.float().numpy() for k, v in model.state_dict().items()}
np.savez(sys.argv[3], iter_num=ckpt["iter_num"], check_loss=loss.item(), **arrays)
"""


# Runs inside the torch interpreter: nanoGPT's model and optimizer (configure_optimizers, its
# get_lr, clip 1.0) from torch seed 1337 for K steps on given train windows; saves the initial
# weights, the windows, the per-step losses and the final weights.
LOCKSTEP_SCRIPT = """
import math, sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from model import GPT, GPTConfig
K, out, train_bin = int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(1337)
model = GPT(GPTConfig(block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128,
                      dropout=0.0, bias=False))
init = {"init/" + k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
train = np.memmap(train_bin, dtype=np.uint16, mode="r")
starts = np.random.default_rng(0).integers(0, len(train) - 64, (K, 12))
idx = starts[..., None] + np.arange(64)
X = torch.from_numpy(train[idx].astype(np.int64))
Y = torch.from_numpy(train[idx + 1].astype(np.int64))
def lr_at(it, peak=1e-3, warmup=100, decay=2000, low=1e-4):
    if it < warmup:
        return peak * (it + 1) / (warmup + 1)
    return low + 0.5 * (1 + math.cos(math.pi * (it - warmup) / (decay - warmup))) * (peak - low)
losses = []
for it in range(K):
    for group in opt.param_groups:
        group["lr"] = lr_at(it)
    _, loss = model(X[it], Y[it])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    losses.append(loss.item())
final = {"final/" + k: v.detach().numpy() for k, v in model.state_dict().items()}
np.savez(out, x=X.numpy(), y=Y.numpy(), losses=np.array(losses), **init, **final)
"""


# --- nanoGPT side ------------------------------------------------------------------------


def prepare_nanogpt_copy(checkout: Path, torch_python: str, dest: Path) -> Path:
    """A copy of `checkout` whose seed is a config key (`--seed=S`, default 1337) and data ready.

    The data is nanoGPT's own `prepare.py` output from the same sha256-checked Tiny Shakespeare.
    """
    from experiments.nanogpt import data as data_lib

    if not (checkout / "train.py").is_file():
        raise FileNotFoundError(f"--nanogpt={str(checkout)!r} has no train.py; expected a "
                                "karpathy/nanoGPT checkout")  # fmt: skip
    if dest.exists():
        return dest
    shutil.copytree(checkout, dest, ignore=shutil.ignore_patterns("*.ipynb", "out*", ".git"))
    train_py = dest / "train.py"
    source = train_py.read_text()
    if SEED_LINE not in source or CONFIG_KEYS_LINE not in source:
        raise ValueError(f"{checkout}/train.py lacks {SEED_LINE!r} or {CONFIG_KEYS_LINE!r}; this "
                         "script patches nanoGPT's train.py as of 2023-2025 (master)")  # fmt: skip
    source = source.replace(SEED_LINE, "torch.manual_seed(seed + seed_offset)")
    source = source.replace(CONFIG_KEYS_LINE, f"seed = 1337\n{CONFIG_KEYS_LINE}", 1)
    train_py.write_text(source)
    data_dir = dest / "data" / "shakespeare_char"
    raw, found = data_lib.find_shakespeare(None, download=False)
    if raw is None:
        raise FileNotFoundError(
            f"Tiny Shakespeare not found (looked in {found}); set "
            "SPECJAX_DATA_DIR to the folder holding tinyshakespeare.txt"
        )
    (data_dir / "input.txt").write_bytes(raw)  # checked against the published sha256
    for stale in ("train.bin", "val.bin", "meta.pkl"):
        (data_dir / stale).unlink(missing_ok=True)
    subprocess.run([torch_python, "prepare.py"], cwd=data_dir, check=True, capture_output=True)
    return dest


def run_nanogpt(copy: Path, torch_python: str, seed: int, out: Path, threads: int) -> dict:
    """Train nanoGPT once (skipped if done); {"val_2000": its printed val loss, "weights": npz}.

    `threads` sets OMP_NUM_THREADS: eager torch with 2 OpenMP threads on 2 shared, loaded cores
    spin-waits (measured 5-6 s per step at load 13, against 0.15 s with 1 thread)."""
    run_dir = out / f"seed_{seed}"
    log = run_dir / "train.log"
    weights = run_dir / "weights.npz"
    if not weights.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [torch_python, "train.py", *NANOGPT_CPU_ARGS, f"--seed={seed}",
               f"--out_dir={run_dir}"]  # fmt: skip
        print(f"[nanogpt] seed {seed}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        with log.open("w") as f:
            subprocess.run(cmd, cwd=copy, stdout=f, stderr=subprocess.STDOUT, check=True, env=env)
        val_bin = copy / "data" / "shakespeare_char" / "val.bin"
        subprocess.run([torch_python, "-c", EXPORT_SCRIPT, str(copy), str(run_dir / "ckpt.pt"),
                        str(weights), str(val_bin)], check=True)  # fmt: skip
        (run_dir / "ckpt.pt").unlink()  # 10 MB with the optimizer state; weights.npz is enough
    return finished_nanogpt(run_dir)


def finished_nanogpt(run_dir: Path) -> dict:
    """{"val_2000": the val loss nanoGPT printed at step 2000, "weights": its weights.npz}."""
    log = run_dir / "train.log"
    match = FINAL_EVAL.search(log.read_text())
    if match is None:
        raise RuntimeError(f"{log} has no 'step 2000: ... val loss' line; the run did not finish")
    return {"val_2000": float(match.group(2)), "weights": run_dir / "weights.npz"}


def flax_params_from_nanogpt(arrays, num_layers: int) -> dict:
    """nanoGPT's state dict as our `GPT` parameter tree (torch Linear weights are (out, in))."""
    import numpy as np

    def kernel(name):
        return np.asarray(arrays[name]).T

    params = {
        "wte": {"embedding": arrays["transformer.wte.weight"]},
        "wpe": arrays["transformer.wpe.weight"],
        "ln_f": {"scale": arrays["transformer.ln_f.weight"]},
    }
    for i in range(num_layers):
        h = f"transformer.h.{i}."
        params[f"block_{i}"] = {
            "ln_attn": {"scale": arrays[h + "ln_1.weight"]},
            "attn": {"qkv": {"kernel": kernel(h + "attn.c_attn.weight")},
                     "proj": {"kernel": kernel(h + "attn.c_proj.weight")}},
            "ln_mlp": {"scale": arrays[h + "ln_2.weight"]},
            "mlp": {"fc": {"kernel": kernel(h + "mlp.c_fc.weight")},
                    "proj": {"kernel": kernel(h + "mlp.c_proj.weight")}},
        }  # fmt: skip
    return params


# --- our side ----------------------------------------------------------------------------


def nanogpt_schedule(peak: float, warmup: int, decay: int, min_ratio: float):
    """nanoGPT's `get_lr` (train.py:231-242) as an optax schedule of the update count k:
    peak·(k+1)/(W+1) for k < W, then min + ½(1 + cos(π (k−W)/(D−W)))(peak − min), min after D."""
    import jax.numpy as jnp

    if not 0 <= warmup < decay:
        raise ValueError(f"need 0 <= warmup ({warmup}) < decay ({decay}) steps")
    low = peak * min_ratio

    def schedule(count):
        k = jnp.asarray(count, jnp.float32)
        ratio = jnp.clip((k - warmup) / (decay - warmup), 0.0, 1.0)
        cosine = low + 0.5 * (1.0 + jnp.cos(jnp.pi * ratio)) * (peak - low)
        return jnp.where(k < warmup, peak * (k + 1) / (warmup + 1), cosine)

    return schedule


@contextlib.contextmanager
def torch_layernorm_eps():
    """Within the block our GPT's LayerNorms use torch's ε = 1e-5 (flax's default is 1e-6).

    `experiments.nanogpt.model` looks `nn.LayerNorm` up when a model is traced, so the swap acts
    on everything traced inside the block."""
    import types

    import flax.linen as nn

    from experiments.nanogpt import model

    class TorchEpsLayerNorm(nn.LayerNorm):
        epsilon: float = 1e-5

    saved = model.nn
    model.nn = types.SimpleNamespace(**{**vars(nn), "LayerNorm": TorchEpsLayerNorm})
    try:
        yield
    finally:
        model.nn = saved


@contextlib.contextmanager
def nanogpt_choices():
    """Within the block, the two recipe differences left take nanoGPT's choices: LayerNorm ε 1e-5
    (`torch_layernorm_eps`) and AdamW's schedule = nanoGPT's `get_lr`, lr·(k+1)/(W+1) for the
    first W updates (ours: lr·k/W, so our first update is 0), then the same cosine."""
    from experiments import optimizers

    def nanogpt_learning_rate(self, total_steps=None, peak=None):
        peak = self.lr if peak is None else peak
        decay = self.decay_steps if self.decay_steps is not None else total_steps
        return nanogpt_schedule(peak, self.warmup_steps, decay, self.min_lr_ratio)

    saved = optimizers.AdamWConfig.learning_rate
    optimizers.AdamWConfig.learning_rate = nanogpt_learning_rate
    try:
        with torch_layernorm_eps():
            yield
    finally:
        optimizers.AdamWConfig.learning_rate = saved


def run_ours(variant: str, seeds: list[int], out: Path) -> Path:
    """One vmapped run over `seeds` of our AdamW at lr 1e-3 (skipped if done); its directory."""
    run_dir = out / f"ours_{variant}"
    if (run_dir / "sweep.json").is_file() and all(
        (run_dir / "runs" / str(k) / "final_params.msgpack").is_file() for k in range(len(seeds))
    ):
        return run_dir
    overrides = [*OUR_OVERRIDES, f"sweep.seed=[{','.join(map(str, seeds))}]",
                 f"hydra.run.dir={run_dir}"]  # fmt: skip
    cmd = [sys.executable, __file__, "_run_ours", variant, *overrides]
    print(f"[ours] {variant}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    return run_dir


def _run_ours_in_process(variant: str, overrides: list[str]) -> None:
    import runpy

    # As `python -m experiments.run`, whose __main__ block peels the sweep.* arguments.
    sys.argv = ["experiments.run", *overrides]
    with nanogpt_choices() if variant == "nanogpt_choices" else contextlib.nullcontext():
        runpy.run_module("experiments.run", run_name="__main__", alter_sys=True)


def lockstep(copy: Path, torch_python: str, out: Path, steps: int) -> dict[str, tuple]:
    """Both trainers from nanoGPT's initial weights on the same `steps` batches.

    Returns {our schedule: (max |loss difference| over the steps, max relative difference of the
    final weights)}, for our `nanogpt_adamw` recipe at lr 1e-3 as it is and with nanoGPT's
    warm-up formula and LayerNorm ε. Equal trajectories leave no recipe difference but the seed.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from experiments.config import compose
    from experiments.nanogpt import step as step_lib
    from experiments.nanogpt.model import GPT, GPTConfig

    saved = out / f"lockstep_{steps}.npz"
    if not saved.is_file():
        train_bin = copy / "data" / "shakespeare_char" / "train.bin"
        subprocess.run([torch_python, "-c", LOCKSTEP_SCRIPT, str(copy), str(steps), str(saved),
                        str(train_bin)], check=True, capture_output=True)  # fmt: skip
    ref = np.load(saved)
    arrays = {k.split("/", 1)[1]: ref[k] for k in ref.files if k.startswith("init/")}
    final = {k.split("/", 1)[1]: ref[k] for k in ref.files if k.startswith("final/")}
    final_tree = flax_params_from_nanogpt(final, 4)
    results = {}
    cfg = compose(["+exp=nanogpt_adamw", "optim.lr=1e-3"])
    for label, choices in (("ours as is", False), ("nanoGPT warm-up and ε", True)):
        with nanogpt_choices() if choices else contextlib.nullcontext():
            tx = cfg.optim.build(cfg.trainer.max_steps)
            gpt = GPT(GPTConfig(vocab_size=65))
            params = jax.tree.map(jnp.asarray, flax_params_from_nanogpt(arrays, 4))
            state = {"step": jnp.zeros((), jnp.int32), "params": params,
                     "opt_state": tx.init(params)}  # fmt: skip
            train_step = jax.jit(step_lib.make_train_step(gpt, tx, jax.random.key(0), False))
            losses = []
            for k in range(steps):
                state, metrics = train_step(state, (ref["x"][k], ref["y"][k]))
                losses.append(float(metrics["loss"]))
        loss_diff = float(np.max(np.abs(np.array(losses) - ref["losses"])))
        rel = jax.tree.map(
            lambda a, b: float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)),
            state["params"],
            final_tree,
        )
        results[label] = (loss_diff, max(jax.tree.leaves(rel)))
    return results


# --- one evaluation for every model ------------------------------------------------------


def make_scorer(noise_batches: int):
    """`score(params) -> {fixed20, full, batch_sd, noise_mean}` on the validation split."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from experiments.nanogpt import data as data_lib
    from experiments.nanogpt import step as step_lib
    from experiments.nanogpt.model import GPT, GPTConfig

    corpus = data_lib.DATASETS["shakespeare_char"].load()
    gpt = GPT(GPTConfig(vocab_size=corpus.vocab_size))
    B, T = 12, gpt.config.context_length
    eval_loss = step_lib.make_eval_loss(gpt)
    fixed_x, fixed_y = data_lib.fixed_validation_batches(corpus.val_tokens, 20, B, T)
    full = data_lib.full_split_windows(corpus.val_tokens, T, 256)
    random_batch = data_lib.make_batch_fn(corpus.val_tokens, B, T)
    key = jax.random.key(NOISE_KEY)
    noise_x, noise_y = (
        jnp.stack(a)
        for a in zip(*(random_batch(key, i) for i in range(noise_batches)), strict=True)
    )

    @jax.jit
    def per_batch_losses(params, x_KxBxT, y_KxBxT):
        def one(batch):
            logits = gpt.apply({"params": params}, batch[0]).astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

        return jax.lax.map(one, (x_KxBxT, y_KxBxT))

    def score(params) -> dict[str, float]:
        losses = np.asarray(per_batch_losses(params, noise_x, noise_y), np.float64)
        return {
            "fixed20": float(eval_loss(params, fixed_x, fixed_y)),
            "full": float(eval_loss(params, *full)),
            "noise_mean": float(losses.mean()),
            "batch_sd": float(losses.std(ddof=1)),
        }

    return gpt, score


def conversion_check(weights: Path) -> tuple[float, float]:
    """(torch loss, our loss) of the converted nanoGPT model on the same 8 windows of val."""
    import jax.numpy as jnp
    import numpy as np

    from experiments.nanogpt import data as data_lib
    from experiments.nanogpt import step as step_lib
    from experiments.nanogpt.model import GPT, GPTConfig

    corpus = data_lib.DATASETS["shakespeare_char"].load()
    gpt = GPT(GPTConfig(vocab_size=corpus.vocab_size))
    arrays = np.load(weights)
    params = flax_params_from_nanogpt(arrays, gpt.config.num_layers)
    T = gpt.config.context_length
    val = corpus.val_tokens
    x = jnp.asarray(val[: 8 * T].reshape(8, T))
    y = jnp.asarray(val[1 : 8 * T + 1].reshape(8, T))
    ours = float(step_lib.cross_entropy(gpt.apply({"params": params}, x), y))
    return float(arrays["check_loss"]), ours


def mean_sd(values) -> str:
    import numpy as np

    v = np.asarray(values, np.float64)
    sd = v.std(ddof=1) if v.size > 1 else math.nan
    return f"{v.mean():.4f} ± {sd:.4f}"


def welch_p(a, b) -> float:
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def seed_list(parser, flag: str, text: str) -> list[int]:
    """Comma-separated non-negative integers, or a usage error naming the flag and the value."""
    seeds = text.split(",")
    if not all(s.strip().isdigit() for s in seeds):
        parser.error(f"{flag}={text!r}: expected comma-separated non-negative integers")
    return [int(s) for s in seeds]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="karpathy/nanoGPT checkout")
    parser.add_argument("--torch-python", required=True, help="a python that imports torch")
    parser.add_argument("--out", type=Path, required=True, help="work and results directory")
    parser.add_argument("--nanogpt-seeds", default="1337,0,1,2")
    parser.add_argument("--our-seeds", default="0,1,2,3,4")
    parser.add_argument("--variants", default="base", help="base and/or nanogpt_choices")
    parser.add_argument("--noise-batches", type=int, default=400)
    parser.add_argument("--lockstep-steps", type=int, default=100, help="0 skips the check")
    parser.add_argument("--torch-threads", type=int, default=1, help="OMP_NUM_THREADS for torch")
    parser.add_argument("--stage", choices=("nanogpt", "ours", "report", "all"), default="all",
                        help="train one side, or report on the finished runs")  # fmt: skip
    args = parser.parse_args(argv)
    ng_seeds = seed_list(parser, "--nanogpt-seeds", args.nanogpt_seeds)
    our_seeds = seed_list(parser, "--our-seeds", args.our_seeds)
    variants = args.variants.split(",")
    bad = sorted(set(variants) - set(VARIANTS))
    if bad:
        parser.error(f"--variants: unknown {bad}; expected a comma list of {VARIANTS}")
    if args.noise_batches < 20:
        parser.error(f"--noise-batches={args.noise_batches}: need at least 20")
    if shutil.which(args.torch_python) is None:
        parser.error(f"--torch-python={args.torch_python!r} is not an executable")
    args.out.mkdir(parents=True, exist_ok=True)

    copy = prepare_nanogpt_copy(args.nanogpt, args.torch_python, args.out / "nanogpt_copy")
    if args.stage in ("nanogpt", "all"):
        for seed in ng_seeds:
            run_nanogpt(copy, args.torch_python, seed, args.out / "nanogpt", args.torch_threads)
    if args.stage in ("ours", "all"):
        for variant in variants:
            run_ours(variant, our_seeds, args.out)
    if args.stage in ("nanogpt", "ours"):
        return
    # The report covers every finished run in --out, whatever seeds each call trained.
    nanogpt_runs = {
        int(d.name.removeprefix("seed_")): finished_nanogpt(d)
        for d in sorted((args.out / "nanogpt").glob("seed_*"))
        if (d / "weights.npz").is_file()
    }
    our_dirs = {v: args.out / f"ours_{v}" for v in VARIANTS}
    our_dirs = {v: d for v, d in our_dirs.items() if (d / "sweep.json").is_file()}
    rows = score_models(args.noise_batches, nanogpt_runs, our_dirs)
    (args.out / "scores.json").write_text(json.dumps(rows, indent=1))
    conversion = {}
    if nanogpt_runs:
        weights = next(iter(nanogpt_runs.values()))["weights"]
        conversion["1e-6 (flax)"] = conversion_check(weights)
        with torch_layernorm_eps():
            conversion["1e-5 (torch)"] = conversion_check(weights)
    report(rows, conversion, args.noise_batches)
    if args.lockstep_steps:
        print(f"\nlockstep: nanoGPT's initial weights (torch seed 1337), the same "
              f"{args.lockstep_steps} train batches, nanoGPT's trainer against ours")  # fmt: skip
        for label, (loss_diff, weight_diff) in lockstep(
            copy, args.torch_python, args.out, args.lockstep_steps
        ).items():
            print(f"  {label:22s} max |Δloss| {loss_diff:.1e}, final weights max rel. diff "
                  f"{weight_diff:.1e}")  # fmt: skip


def score_models(noise_batches: int, nanogpt_runs: dict, our_dirs: dict) -> list:
    """One row per final model: side, seed, its own printed val loss, and `make_scorer`'s scores.

    nanoGPT's models and ours trained with nanoGPT's choices are scored with torch's LayerNorm ε,
    the architecture they were trained with."""
    import jax
    import numpy as np
    from flax import serialization

    def ours(variant, run_dir, score, template):
        for entry in json.loads((run_dir / "sweep.json").read_text())["members"]:
            member, seed = run_dir / entry["dir"], entry["values"]["seed"]
            if not (member / "final_params.msgpack").is_file():
                continue  # an unfinished or failed member
            params = serialization.from_bytes(
                template, (member / "final_params.msgpack").read_bytes()
            )
            val = json.loads((member / "summary.json").read_text())["summary"]["val_loss"]
            yield {"side": f"ours {variant}", "seed": seed, "own": val, **score(params)}

    rows = []
    gpt, score = make_scorer(noise_batches)
    template = gpt.init(jax.random.key(0), np.zeros((1, 64), np.int32))["params"]
    if "base" in our_dirs:
        rows += ours("base", our_dirs["base"], score, template)
    with torch_layernorm_eps():
        gpt, score = make_scorer(noise_batches)
        for seed, run in nanogpt_runs.items():
            params = flax_params_from_nanogpt(np.load(run["weights"]), gpt.config.num_layers)
            rows.append({"side": "nanoGPT", "seed": seed, "own": run["val_2000"], **score(params)})
        if "nanogpt_choices" in our_dirs:
            rows += ours("nanogpt_choices", our_dirs["nanogpt_choices"], score, template)
    return rows


def report(rows: list, conversion: dict, noise_batches: int) -> None:
    import numpy as np

    for eps, (torch_loss, our_loss) in conversion.items():
        print(f"conversion check, LayerNorm ε {eps} (8 val windows): torch {torch_loss:.6f}, "
              f"ours {our_loss:.6f}, |diff| {abs(torch_loss - our_loss):.1e}")  # fmt: skip
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    print(f"\nper model; rand = {noise_batches} random 12×64 validation batches (key {NOISE_KEY})")
    print(f"{'side':22s} {'seed':>5s} {'own val':>8s} {'fixed20':>8s} {'full':>8s} "
          f"{'rand mean':>9s} {'batch sd':>8s} {'sd of 20':>8s}")  # fmt: skip
    for r in rows:
        print(f"{r['side']:22s} {r['seed']:5d} {r['own']:8.4f} {r['fixed20']:8.4f} "
              f"{r['full']:8.4f} {r['noise_mean']:9.4f} {r['batch_sd']:8.4f} "
              f"{r['batch_sd'] / math.sqrt(20):8.4f}")  # fmt: skip
    print("\nmean ± sd over seeds (own val: nanoGPT's 20 random batches; ours: 20 fixed batches)")
    sides = list(dict.fromkeys(r["side"] for r in rows))
    col = {(side, key): [r[key] for r in rows if r["side"] == side]
           for side in sides for key in ("own", "fixed20", "full")}  # fmt: skip
    for side in sides:
        print(
            f"{side:22s} n={len(col[side, 'full'])}  own val {mean_sd(col[side, 'own'])}  "
            f"fixed20 {mean_sd(col[side, 'fixed20'])}  full {mean_sd(col[side, 'full'])}"
        )
    sd20 = [r["batch_sd"] / math.sqrt(20) for r in rows]
    offset = [r["fixed20"] - r["full"] for r in rows]
    print("\nevaluation noise")
    print(f"  sd of a 20-random-batch estimate, σ_batch/√20: {np.mean(sd20):.4f} "
          f"(range {min(sd20):.4f}–{max(sd20):.4f} over the {len(rows)} models)")  # fmt: skip
    print(f"  our 20 fixed batches − full split: {mean_sd(offset)} (a shared offset, not noise)")
    errors = [r["own"] - r["full"] for r in rows if r["side"] == "nanoGPT"]
    if errors:
        print(f"  nanoGPT's printed val − full split: {', '.join(f'{e:+.4f}' for e in errors)}")
    if "nanoGPT" in sides:
        print("\ngap, mean full-split loss minus nanoGPT's (Welch's t-test)")
        for side in (s for s in sides if s != "nanoGPT"):
            gap = np.mean(col[side, "full"]) - np.mean(col["nanoGPT", "full"])
            p = welch_p(col[side, "full"], col["nanoGPT", "full"])
            print(f"  {side}: {gap:+.4f} (p = {p:.2g})")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_run_ours":
        _run_ours_in_process(sys.argv[2], sys.argv[3:])
    else:
        main()
