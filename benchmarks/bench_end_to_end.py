"""The headline job end to end against nanoGPT's own `train.py`, back to back in one script.

    python benchmarks/bench_end_to_end.py /path/to/nanoGPT --torch-python /path/to/python
    python benchmarks/bench_end_to_end.py --max-iters 300          # a quick check of the script

Runs, one after another on the same machine:
1. nanoGPT's CPU "baby GPT" command (`config/train_shakespeare_char.py`, `--device=cpu
   --compile=False`, batch 12, context 64, 4 layers × 4 heads × 128, dropout 0, evaluation of 20
   batches every 250 steps including step 0), its data prepared by its own `prepare.py` from our
   local copy of Tiny Shakespeare (written as its `input.txt` first, so nothing is downloaded);
2. `python -m experiments.run +exp=nanogpt_adamw` and `+exp=nanogpt_muon` on the same text,
   each in a fresh compilation-cache directory (a first run: compiling included); with `--warm`
   each again with its cache warm (a repeated run);
3. the AdamW command with `trainer.spectra_every=0` (cold; with `--warm` also warm), for the
   cost of spectra logging at the default interval;
4. two starts of the AdamW command in a fresh compilation-cache directory (cold, then warm),
   each timed from launch until it dispatches its first training step (the run records that
   moment in `record.json` → "startup"), then killed;

With `--rounds R` the whole sequence (nanoGPT first, then ours) is repeated R times, each of ours
in a fresh cache per round, and every ratio is taken against the nanoGPT run of its own round:
this machine's speed drifts by up to 20 % over minutes, so interleaved pairs are compared and
the goals judged on the median of the per-round ratios (all printed).

It prints the wall-clock of each, the ratios to nanoGPT, and the issue's goals met or missed:
(1) each of ours ≤ 1.0× nanoGPT, (2) a second (warm-cache) start reaches training in ≤ 5 s,
(3) spectra logging ≤ 5 % of the run's wall-clock, cold and warm. Without a nanoGPT checkout the
baseline is `benchmarks/torch_gpt_reference.py` run for as many steps (an eager PyTorch GPT of the
same shape; no evaluation). `--torch-python` is a Python with torch (`pip install torch==2.13.0
numpy requests`); by default this one. Get a checkout with `git clone` of karpathy/nanoGPT.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
                "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12",
                "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0"]  # fmt: skip


def timed(cmd: list[str], cwd: pathlib.Path, log: pathlib.Path, env=None) -> float:
    """Wall-clock seconds of `cmd`; its output goes to `log`; a failure stops the benchmark."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})})  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return seconds


def prepare_nanogpt(checkout: pathlib.Path, data: pathlib.Path, python: str, work: pathlib.Path):
    """nanoGPT's shakespeare_char data, made by its prepare.py from our copy of the text."""
    folder = checkout / "data" / "shakespeare_char"
    if not (folder / "prepare.py").is_file():
        sys.exit(f"{checkout} is not a nanoGPT checkout (no data/shakespeare_char/prepare.py)")
    if not (folder / "input.txt").is_file():
        shutil.copyfile(data, folder / "input.txt")
    timed([python, "prepare.py"], folder, work / "nanogpt_prepare.log")


def warmup_steps(iters: int) -> int:
    """The recipe's 100 warm-up steps; a short check run (≤ 100 steps) warms up for half."""
    return 100 if iters > 100 else max(1, iters // 2)


def nanogpt_step_ms(log_text: str, from_iter: int = 0) -> list[float]:
    """The per-step times nanoGPT's `train.py` prints (`--log_interval=1`), from `from_iter` on."""
    found = re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", log_text)
    return [float(ms) for it, ms in found if int(it) >= from_iter]


def run_nanogpt(checkout, python, iters, work, tag="") -> tuple[float, dict]:
    out_dir = work / f"nanogpt_out{tag}"
    cmd = [python, "train.py", *NANOGPT_ARGS, f"--max_iters={iters}",
           f"--lr_decay_iters={iters}", f"--warmup_iters={warmup_steps(iters)}",
           f"--out_dir={out_dir}"]  # fmt: skip
    log = work / f"nanogpt_train{tag}.log"
    seconds = timed(cmd, checkout, log)
    text = log.read_text()
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", text)
    step_ms = nanogpt_step_ms(text)
    return seconds, {
        "evals": len(evals),
        "val_loss": float(evals[-1][2]) if evals else float("nan"),
        "median_step_ms": sorted(step_ms)[len(step_ms) // 2] if step_ms else float("nan"),
        "steps": len(step_ms),
    }


def run_torch_reference(python, iters, work, tag="") -> tuple[float, dict]:
    code = (f"import sys, torch; sys.path.insert(0, {str(ROOT)!r})\n"
            "from benchmarks.torch_gpt_reference import make_trainer\n"
            "step = make_trainer(); g = torch.Generator().manual_seed(0)\n"
            f"for _ in range({iters}):\n"
            "    x = torch.randint(0, 65, (12, 64), generator=g)\n"
            "    step(x, torch.roll(x, -1, 1))\n")  # fmt: skip
    return timed([python, "-c", code], ROOT, work / f"torch_reference{tag}.log"), {"evals": 0}


def ours_cmd(exp: str, data: pathlib.Path, iters: int, run_dir: pathlib.Path, *extra: str):
    return [sys.executable, "-m", "experiments.run", f"+exp=nanogpt_{exp}",
            "data=shakespeare_char", f"data.path={data}", f"trainer.max_steps={iters}",
            f"optim.warmup_steps={warmup_steps(iters)}", "trainer.progress=plain",
            f"hydra.run.dir={run_dir}", *extra]  # fmt: skip


def run_ours(exp, data, iters, work, name, cache) -> tuple[float, dict]:
    """Our command; `cache` is its compilation cache directory (a fresh one: a cold start)."""
    run_dir = work / f"ours_{name}"
    extra = [f"trainer.compilation_cache_dir={cache}"]
    if name.endswith("no_spectra"):
        extra.append("trainer.spectra_every=0")
    seconds = timed(ours_cmd(exp, data, iters, run_dir, *extra), ROOT, work / f"{run_dir.name}.log")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    times = [r["step_time_s"] for r in rows if "step_time_s" in r]
    return seconds, {
        "evals": len(evals),
        "val_loss": evals[-1]["val_loss"] if evals else float("nan"),
        "median_step_ms": 1e3 * sorted(times)[len(times) // 2] if times else float("nan"),
        "mfu": next((r["mfu"] for r in reversed(rows) if "mfu" in r), float("nan")),
    }


def _started_training(record: pathlib.Path) -> bool:
    try:
        return "startup" in json.loads(record.read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-replace
        return False


def time_to_first_step(data, cache: pathlib.Path, work: pathlib.Path, name: str) -> float:
    """Seconds from launching the AdamW command until it dispatches its first training step
    (its record.json gains "startup"); then it is killed."""
    run_dir = work / f"startup_{name}"
    cmd = ours_cmd("adamw", data, 2000, run_dir, f"trainer.compilation_cache_dir={cache}")
    record = run_dir / "record.json"
    with (work / f"startup_{name}.log").open("w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None and not _started_training(record):
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if not _started_training(record):
        sys.exit(f"the start-up run ended before training: see {work / f'startup_{name}.log'}")
    return seconds


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def run_round(args, work: pathlib.Path, base: str, tag: str) -> dict[str, tuple[float, dict]]:
    """One round: the baseline, then each of ours cold (a fresh cache), warm and the extras."""
    results: dict[str, tuple[float, dict]] = {}
    if base == "nanogpt":
        results[base] = run_nanogpt(args.nanogpt, args.torch_python, args.max_iters, work, tag)
    else:
        results[base] = run_torch_reference(args.torch_python, args.max_iters, work, tag)
    for exp in args.exps:  # cold: each in a fresh compilation cache, as a first run would be
        cache = work / f"cache_{exp}{tag}"
        results[exp] = run_ours(exp, args.data, args.max_iters, work, f"{exp}{tag}", cache)
        if args.warm:
            results[f"{exp}_warm"] = run_ours(exp, args.data, args.max_iters, work,
                                              f"{exp}_warm{tag}", cache)  # fmt: skip
    if not args.no_extras:
        cache = work / f"cache_no_spectra{tag}"
        results["adamw_no_spectra"] = run_ours("adamw", args.data, args.max_iters, work,
                                               f"adamw_no_spectra{tag}", cache)  # fmt: skip
        if args.warm:
            results["adamw_no_spectra_warm"] = run_ours(
                "adamw", args.data, args.max_iters, work, f"adamw_no_spectra_warm{tag}", cache
            )
    base_s = results[base][0]
    print(f"\n{args.max_iters} steps, gpt_baby, batch 12×64, round {tag.lstrip('_r') or 1}; "
          f"load after: {os.getloadavg()}")  # fmt: skip
    print(f"{'run':<22}{'wall s':>8}{'vs ' + base:>14}{'evals':>7}{'val loss':>10}"
          f"{'step ms':>9}{'mfu':>8}")  # fmt: skip
    for name, (seconds, info) in results.items():
        print(f"{name:<22}{seconds:>8.1f}{seconds / base_s:>13.2f}×{info.get('evals', 0):>7}"
              f"{info.get('val_loss', float('nan')):>10.4f}"
              f"{info.get('median_step_ms', float('nan')):>9.1f}"
              f"{100 * info.get('mfu', float('nan')):>7.1f}%", flush=True)  # fmt: skip
    print("evals: nanoGPT evaluates at every multiple of 250 including step 0 and trains steps "
          "0..max_iters; ours evaluates at 250, 500, ... and the last step, then once on the "
          "whole validation split.")  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nanogpt", nargs="?", type=pathlib.Path, default=None,
                        help="a nanoGPT checkout (else the PyTorch reference)")  # fmt: skip
    parser.add_argument("--torch-python", default=sys.executable,
                        help="a Python interpreter with torch, numpy (and requests)")  # fmt: skip
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--max-iters", type=int, default=2000,
                        help="steps (≤ 100: warm-up shortened to half, in both)")  # fmt: skip
    parser.add_argument("--exps", nargs="+", default=["adamw", "muon"])
    parser.add_argument("--no-extras", action="store_true",
                        help="skip the spectra-off and cold/warm start runs")  # fmt: skip
    parser.add_argument("--warm", action="store_true",
                        help="also rerun each of ours with its compilation cache warm")  # fmt: skip
    parser.add_argument("--work", type=pathlib.Path, default=None, help="keep logs and runs here")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat nanoGPT, then ours, this many times")  # fmt: skip
    args = parser.parse_args()
    if args.max_iters < 1:
        parser.error(f"--max-iters must be a positive int, got {args.max_iters}")
    if args.rounds < 1:
        parser.error(f"--rounds must be a positive int, got {args.rounds}")
    if not args.data.is_file():
        parser.error(f"--data {args.data} not found (Tiny Shakespeare, 1,115,394 chars)")
    if args.nanogpt is not None and not (args.nanogpt / "train.py").is_file():
        parser.error(f"{args.nanogpt} is not a nanoGPT checkout (no train.py)")
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load before: {os.getloadavg()}; logs in {work}", flush=True)

    if args.nanogpt is not None:
        prepare_nanogpt(args.nanogpt, args.data, args.torch_python, work)
    base = "nanogpt" if args.nanogpt is not None else "torch_ref"
    rounds = [run_round(args, work, base, "" if args.rounds == 1 else f"_r{r + 1}")
              for r in range(args.rounds)]  # fmt: skip
    ratios = {name: [results[name][0] / results[base][0] for results in rounds]
              for name in rounds[0]}  # fmt: skip
    if args.rounds > 1:
        print(f"\nmedian over {args.rounds} rounds of each run's ratio to the {base} run of its "
              "own round (min–max):")  # fmt: skip
        for name, values in ratios.items():
            print(f"  {name:<22}{statistics.median(values):>6.2f}×  "
                  f"({min(values):.2f}–{max(values):.2f}×)")  # fmt: skip
    print("\ngoals (issue 16), on the median ratio over rounds:")
    for name, values in ratios.items():
        if name != base and not name.startswith("adamw_no_spectra"):
            ratio = statistics.median(values)
            print(f"  1. {name}: {ratio:.2f}× {base} (≤ 1.00×): {verdict(ratio <= 1.0)}")
    for suffix in ("", "_warm"):
        with_spectra = ratios.get(f"adamw{suffix}")
        without = ratios.get(f"adamw_no_spectra{suffix}")
        if with_spectra and without:
            share = statistics.median(1 - w / s for w, s in zip(without, with_spectra, strict=True))
            print(f"  3. spectra logging (trainer.spectra_every default), "
                  f"{'warm' if suffix else 'cold'}: {100 * share:.1f}% of the AdamW run's "
                  f"wall-clock (≤ 5%): {verdict(share <= 0.05)}")  # fmt: skip
    if not args.no_extras:
        cache = work / "fresh_compilation_cache"
        cold = time_to_first_step(args.data, cache, work, "cold")
        warm = time_to_first_step(args.data, cache, work, "warm")
        print(
            f"  2. start to first training step: cold cache {cold:.1f} s, warm cache "
            f"{warm:.1f} s (warm ≤ 5 s): {verdict(warm <= 5.0)}"
        )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
