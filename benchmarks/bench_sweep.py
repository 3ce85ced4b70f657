"""A vmapped sweep against the same runs one after another (issue 16, goal: ratio ≤ 0.5).

    python benchmarks/bench_sweep.py                      # 6 gpt_baby runs of 2000 steps
    python benchmarks/bench_sweep.py --max-steps 200      # a quick look
    python benchmarks/bench_sweep.py --sweep-devices 1,2  # the sweep also on 2 CPU devices

Both sides are the real command line, timed end to end as subprocesses, back to back in this
script: six `python -m experiments.run +exp=nanogpt_muon seed=S optim.lr=LR` runs in a row,
then one `python -m experiments.run +exp=nanogpt_muon sweep.seed='[...]' sweep.optim.lr='[...]'`.
Every run keeps the experiment's evaluations, spectra and checkpoints. Afterwards each member's
final val_loss is checked against its separate run (they should agree to float rounding).
`--sweep-devices 1,2` times the sweep once per count of XLA host devices
(`--xla_force_host_platform_device_count`), its runs axis sharded over them: on a CPU that
splits the runs between the cores as whole programs instead of splitting each matmul.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_command(args: list[str], run_dir: pathlib.Path, host_devices: int | None = None) -> float:
    """Wall-clock seconds of `python -m experiments.run ARGS hydra.run.dir=RUN_DIR`."""
    command = [sys.executable, "-m", "experiments.run", *args, f"hydra.run.dir={run_dir}",
               "trainer.progress=off"]  # fmt: skip
    env = dict(os.environ)
    if host_devices is not None:
        flag = f"--xla_force_host_platform_device_count={host_devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def final_val_loss(run_dir: pathlib.Path) -> float:
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary["summary"]["val_loss"]


def median_step_seconds(run_dir: pathlib.Path) -> float | None:
    """Median `step_time_s` logged by the run: the steady-state step, without compile or I/O.
    None when the run logged none (all its steps fell in the block that compiled)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = sorted(row["step_time_s"] for row in rows if "step_time_s" in row)
    return times[len(times) // 2] if times else None


def report_where_the_time_goes(singles, sweep_dir, sequential, vmapped) -> None:
    """Split the ratio into its two causes: per-step compute, and everything else.

    On a compute-bound CPU the vmapped step does R runs' FLOPs, so it cannot beat R single steps
    by much; the sweep saves only the R-1 extra starts, compiles, evaluations' dispatch, etc.
    """
    single_steps = [median_step_seconds(s) for s in singles]
    sweep_step = median_step_seconds(sweep_dir)
    if sweep_step is None or None in single_steps:
        print("steady-state step: not logged (every step fell in a compiling block; run more "
              "steps than trainer.steps_per_dispatch)")  # fmt: skip
        return
    single_step = sum(single_steps) / len(singles)
    runs = len(singles)
    print(f"steady-state step: single {1e3 * single_step:.1f} ms; vmapped {1e3 * sweep_step:.1f} "
          f"ms for {runs} runs = {1e3 * sweep_step / runs:.1f} ms per run-step "
          f"({sweep_step / (runs * single_step):.2f}x of {runs} single steps)")  # fmt: skip
    rows = (sweep_dir / "metrics.jsonl").read_text().splitlines()
    steps = max(json.loads(line)["step"] for line in rows)
    if steps:
        train_single, train_sweep = runs * steps * single_step, steps * sweep_step
        print(f"time outside the steady-state steps: sequential {sequential - train_single:.1f} s, "
              f"vmapped {vmapped - train_sweep:.1f} s; with no overhead at all the ratio would "
              f"be {train_sweep / train_single:.2f}")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", default="nanogpt_muon")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lrs", default="1e-3,2e-3")
    parser.add_argument("--max-steps", type=int, default=None, help="default: the experiment's")
    parser.add_argument("--out", default=None, help="directory for the runs (default: a temp dir)")
    parser.add_argument("--sweep-devices", default="1",
                        help="comma-separated XLA host device counts for the sweep")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="more overrides for every run")
    args = parser.parse_args(argv)
    seeds, lrs = args.seeds.split(","), args.lrs.split(",")
    try:
        device_counts = [int(n) for n in args.sweep_devices.split(",")]
    except ValueError:
        parser.error(f"--sweep-devices must be comma-separated ints, got {args.sweep_devices!r}")
    if any(n < 1 for n in device_counts):
        parser.error(f"--sweep-devices must be positive, got {args.sweep_devices!r}")
    common = [f"+exp={args.exp}", *args.overrides]
    if args.max_steps is not None:
        common.append(f"trainer.max_steps={args.max_steps}")
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="bench_sweep_"))
    print(f"{len(seeds) * len(lrs)} runs of {' '.join(common)} in {out}")
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average)", flush=True)

    sequential, singles = 0.0, []
    for seed in seeds:
        for lr in lrs:
            run_dir = out / f"single_s{seed}_lr{lr}"
            seconds = run_command([*common, f"seed={seed}", f"optim.lr={lr}"], run_dir)
            print(f"  seed={seed} optim.lr={lr}: {seconds:.1f} s", flush=True)
            sequential += seconds
            singles.append(run_dir)
    grid = [f"sweep.seed=[{args.seeds}]", f"sweep.optim.lr=[{args.lrs}]"]
    for count in device_counts:
        sweep_dir = out / ("sweep" if count == 1 else f"sweep_{count}dev")
        vmapped = run_command([*common, *grid], sweep_dir, host_devices=count)
        print(f"\nsweep on {count} host device(s): sequential {sequential:.1f} s   vmapped "
              f"{vmapped:.1f} s   ratio {vmapped / sequential:.2f} (goal <= 0.5)")  # fmt: skip
        worst = max(abs(final_val_loss(s) - final_val_loss(sweep_dir / "runs" / str(k)))
                    for k, s in enumerate(singles))  # fmt: skip
        report_where_the_time_goes(singles, sweep_dir, sequential, vmapped)
        print(f"largest |val_loss(member) - val_loss(separate run)|: {worst:.2e}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min average)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
