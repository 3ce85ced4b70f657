"""NanoGPT speed and quality benchmarks (gpt_baby, nanoGPT's CPU recipe).

    python benchmarks/bench_nanogpt.py                     # speed table (~3–5 min on 2 cores)
    python benchmarks/bench_nanogpt.py --quality DIR       # summarize finished quality runs in DIR

Speed: median ms/step and tokens/s of the jitted train step (batch 12 × 64 tokens) for AdamW,
Muon, SPECTRA and the gated optimizer (and AdamW, Muon in blocks of `--block` steps per dispatch,
as `trainer.steps_per_dispatch` runs them), against the PyTorch nanoGPT-shaped reference
(`benchmarks/torch_gpt_reference.py`, eager, AdamW) measured in the same process, rounds
interleaved so machine noise hits both; plus the cost of one spectra logging call relative to
`trainer.spectra_every` training steps. Quality runs (long; start them in the background):

    for s in 0 1 2; do for e in adamw muon spectra gated; do
      python -m experiments.run +exp=nanogpt_$e seed=$s hydra.run.dir=DIR/${e}_s$s; done; done
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time
from datetime import datetime

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EXPS = ("adamw", "muon", "spectra", "gated")


def compose(name: str, overrides=()):
    from experiments.config import compose as compose_run

    return compose_run([f"+exp=nanogpt_{name}", *overrides])


def jax_runner(name: str, block: int = 1, overrides=()):
    """(run_n_steps(n) -> seconds, spectra_call() -> seconds, spectra_every) for one optimizer;
    `block` > 1 runs blocks of that many steps per dispatch, as the trainer does; `overrides`
    are Hydra overrides (e.g. model=gpt_small)."""
    from experiments.nanogpt import data as data_lib
    from experiments.nanogpt import step as step_lib
    from experiments.runtime import step_blocks
    from experiments.runtime.mesh import make_data_mesh, replicated
    from experiments.studies import nanogpt

    cfg = compose(name, overrides)
    corpus, gpt, tx = nanogpt.build(cfg)
    needs_st = cfg.optim.needs_activation_stable_ranks
    batch = data_lib.make_batch_fn(
        corpus.train_tokens, cfg.study.batch_size, gpt.config.context_length
    )
    key = jax.random.PRNGKey(0)
    train_step = jax.jit(step_lib.make_train_step(gpt, tx, key, needs_st), donate_argnums=0)
    spectra = step_lib.make_spectra_fn(gpt, tx, needs_st, key, cfg.study.spectra_top_k)
    holder = {"state": step_lib.init_state(gpt, tx, key), "i": 0}
    mesh = make_data_mesh()
    block_step = step_blocks.make_block_step(
        step_lib.make_train_step(gpt, tx, key, needs_st), block, replicated(mesh),
        step_blocks.block_sharded(mesh),
    )  # fmt: skip

    def run(n: int) -> float:
        start = time.perf_counter()
        state = holder["state"]
        for _ in range(n if block == 1 else -(-n // block)):
            if block == 1:
                state, metrics = train_step(state, batch(key, holder["i"]))
            else:
                i = holder["i"]
                batches = [batch(key, j) for j in range(i, i + block)]
                blocked = step_blocks.put_block(batches, block, mesh)
                state, metrics = block_step(state, blocked, np.int32(block))
            holder["i"] += block
        jax.block_until_ready(metrics)
        holder["state"] = state
        return time.perf_counter() - start

    def spectra_call() -> float:
        start = time.perf_counter()
        jax.block_until_ready(spectra(holder["state"], batch(key, 0)))
        return time.perf_counter() - start

    for _ in range(2):  # compile for the fresh state, then for the train step's output state
        run(3)
        spectra_call()
    return run, spectra_call, int(cfg.trainer.spectra_every), corpus.name


def torch_runner():
    try:
        import torch
    except ImportError:
        return None
    from benchmarks.torch_gpt_reference import make_trainer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    step = make_trainer()
    gen = torch.Generator().manual_seed(0)

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            x = torch.randint(0, 65, (12, 64), generator=gen)
            step(x, torch.roll(x, -1, 1))
        return time.perf_counter() - start

    run(3)
    return run


def speed(rounds: int, steps: int, block: int) -> None:
    tokens = 12 * 64
    runners = {name: jax_runner(name) for name in EXPS}
    if block > 1:  # what the trainer runs by default: blocks of trainer.steps_per_dispatch
        for name in ("adamw", "muon"):
            runners[f"{name}×{block}"] = jax_runner(name, block)
    names = list(runners)
    ref = torch_runner()
    times = {name: [] for name in names}
    times["torch"] = []
    spectra_times = {name: [] for name in names}
    for _ in range(rounds):  # interleaved: noise from other processes hits every entry alike
        for name, (run, spectra_call, _, _) in runners.items():
            n = steps if "×" not in name else block * max(1, steps // block)
            times[name].append(run(n) / n)
            spectra_times[name].append(spectra_call())
        if ref is not None:
            times["torch"].append(ref(steps) / steps)
    data_name = runners["adamw"][3]
    print(f"gpt_baby, batch 12×64 = {tokens} tokens/step, data {data_name}, {rounds} rounds × "
          f"{steps} steps, jax {jax.__version__} on {jax.devices()[0].platform}")  # fmt: skip
    torch_ms = statistics.median(times["torch"]) * 1e3 if times["torch"] else float("nan")
    adamw_ms = statistics.median(times["adamw"]) * 1e3
    print(f"{'optimizer':<12}{'ms/step':>9}{'tok/s':>9}{'vs torch':>10}{'vs adamw':>10}"
          f"{'spectra ms':>12}{'log overhead':>14}")  # fmt: skip
    for name in (*names, "torch"):
        if not times[name]:
            print("torch        not installed (pip install torch==2.13.0): no reference")
            continue
        ms = statistics.median(times[name]) * 1e3
        row = f"{name:<12}{ms:>9.2f}{tokens / ms * 1e3:>9.0f}"
        row += f"{torch_ms / ms:>9.2f}×{ms / adamw_ms:>9.2f}×"
        if name in spectra_times:
            every = runners[name][2]
            s_ms = statistics.median(spectra_times[name]) * 1e3
            row += f"{s_ms:>12.1f}{100 * s_ms / (every * ms):>13.2f}%"
        print(row)
    every = runners["adamw"][2]
    print(f"log overhead = one spectra call / ({every} steps) at trainer.spectra_every; "
          "'vs torch' > 1 means faster than the PyTorch reference")  # fmt: skip


def quality(directory: pathlib.Path) -> None:
    """Final val loss per optimizer (mean ± std, min–max), Muon's step to AdamW's final loss."""
    rows = []
    for run in sorted(directory.iterdir()):
        summary_path = run / "summary.json"
        if not summary_path.is_file():
            continue
        record = json.loads((run / "record.json").read_text())
        started = datetime.fromisoformat(record["started"]["time"]).timestamp()
        evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        curve = {r["step"]: r["val_loss"] for r in evals if "val_loss" in r}
        summary = json.loads(summary_path.read_text())["summary"]
        rows.append({
            "optim": run.name.rsplit("_s", 1)[0], "val_loss": summary["val_loss"],
            "val_loss_full": summary.get("val_loss_full", float("nan")), "curve": curve,
            "wall_s": summary_path.stat().st_mtime - started,
        })  # fmt: skip
    by_optim: dict[str, list] = {}
    for r in rows:
        by_optim.setdefault(r["optim"], []).append(r)
    header = ("optimizer", "seeds", "val (fixed)", "range", "val (full split)", "wall s")
    print("{:<10}{:>6}{:>20}{:>16}{:>20}{:>8}".format(*header))
    for optim, rs in by_optim.items():
        v = np.array([r["val_loss"] for r in rs])
        f = np.array([r["val_loss_full"] for r in rs])
        wall = np.mean([r["wall_s"] for r in rs])
        spread = f"{v.min():>8.3f}–{v.max():.3f}"
        print(f"{optim:<10}{len(rs):>6}{v.mean():>12.4f} ± {v.std():.4f}{spread}"
              f"{f.mean():>12.4f} ± {f.std():.4f}{wall:>8.0f}")  # fmt: skip
    if "adamw" in by_optim:
        target = np.mean([r["val_loss"] for r in by_optim["adamw"]])
        final = max(by_optim["adamw"][0]["curve"])
        for optim, rs in by_optim.items():
            steps = [
                min((s for s, v in r["curve"].items() if v <= target), default=None) for r in rs
            ]
            print(f"{optim}: first eval step with val_loss ≤ AdamW's final mean {target:.4f}: "
                  f"{steps} (of {final}; eval every 250 steps)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--quality", type=pathlib.Path, default=None)
    parser.add_argument("--block", type=int, default=50,
                        help="also AdamW, Muon in blocks of N steps (1 = skip)")  # fmt: skip
    args = parser.parse_args()
    if args.quality is not None:
        quality(args.quality)
    else:
        if args.block < 1:
            parser.error(f"--block must be a positive int, got {args.block}")
        speed(args.rounds, args.steps, args.block)


if __name__ == "__main__":
    main()
