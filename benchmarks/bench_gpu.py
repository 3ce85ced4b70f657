"""Issue 16's GPU checks as one prepared script: run it where a GPU is lent.

    python benchmarks/bench_gpu.py [--nanogpt PATH] [--torch-python PY]   # on the GPU machine
    python benchmarks/bench_gpu.py --smoke                                # tiny sizes, any machine

Three sections, each timed against a reference in the same process (or, for nanoGPT, a
subprocess back to back); a section that fails prints its error and the others still run:
1. linalg: `randomized_svd(x, 16)` and `polar` (Newton–Schulz, standard and Gram forms; Polar
   Express) at 4096² against `jnp.linalg.svd` and optax.contrib.muon's orthogonalization.
2. gpt_small: tokens/s of our jitted train step (AdamW and Muon, nanoGPT's GPU recipe: batch 64
   × context 256, 6 layers × 6 heads × 384) against nanoGPT's `train.py` with
   `torch.compile` on the same GPU (needs a checkout and a CUDA PyTorch; else says so).
3. sweep: `benchmarks/bench_sweep.py`, the 6-run vmapped sweep against 6 runs in a row.
Nothing here is needed to build or test specjax; on a CPU `--smoke` checks the script itself.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(1, str(ROOT))
from timing import time_fn  # noqa: E402

import specjax as sj  # noqa: E402
from specjax.linalg import MUON_QUINTIC  # noqa: E402

# nanoGPT's config/train_shakespeare_char.py (its GPU recipe), minus evaluation and logging.
NANOGPT_GPU_ARGS = ["config/train_shakespeare_char.py", "--device=cuda", "--compile=True",
                    "--eval_interval=100000", "--eval_iters=1", "--log_interval=1",
                    "--always_save_checkpoint=False"]  # fmt: skip


def section(name: str, fn, *args) -> None:
    print(f"\n## {name}", flush=True)
    began = time.perf_counter()
    try:
        fn(*args)
    except Exception:  # a failed section must not lose the others' figures
        print(f"{name} FAILED:\n{traceback.format_exc()}")
    print(f"({name}: {time.perf_counter() - began:.0f} s)", flush=True)


def linalg(n: int, repeats: int) -> None:
    from optax.contrib._muon import orthogonalize_via_newton_schulz

    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    sigma = np.exp(-np.arange(n) / 20.0)
    x = jnp.asarray((u * sigma) @ v.T, jnp.float32)
    key = jax.random.PRNGKey(0)
    svd = jax.jit(lambda a: jnp.linalg.svd(a, full_matrices=False))
    t_svd = time_fn(svd, x, repeats=max(2, repeats // 2))
    print(f"jnp.linalg.svd {n}²: {t_svd * 1e3:.1f} ms (reference)")
    rsvd = jax.jit(lambda a: sj.randomized_svd(a, 16, key=key))
    t_rsvd = time_fn(rsvd, x, repeats=repeats)
    s16 = np.asarray(rsvd(x)[1], np.float64)
    err = float(np.max(np.abs(s16 - sigma[:16]) / sigma[:16]))
    print(f"randomized_svd(x, 16): {t_rsvd * 1e3:.2f} ms = {t_svd / t_rsvd:.1f}× faster than "
          f"the SVD; top-16 max rel. error {err:.1e} (goal ≥ 30×, ≤ 1e-3)")  # fmt: skip
    g = jnp.asarray(rng.standard_normal((n, n)), jnp.float32)
    coeffs = jnp.asarray(MUON_QUINTIC)
    optax_ns = jax.jit(lambda a: orthogonalize_via_newton_schulz(a, coeffs, ns_steps=5))
    t_optax = time_fn(optax_ns, g, repeats=repeats)
    print(f"optax orthogonalize_via_newton_schulz {n}²: {t_optax * 1e3:.2f} ms (reference)")
    for shape in ((n, n), (n // 4, n)):
        a = g[: shape[0], : shape[1]]
        for form in ("standard", "auto"):
            ours = jax.jit(lambda a, form=form: sj.polar(a, method="newton_schulz", form=form))
            t = time_fn(ours, a, repeats=repeats)
            versus = f" = {t_optax / t:.2f}× optax's speed" if shape == (n, n) else ""
            print(f"polar NS form={form} {shape[0]}×{shape[1]}: {t * 1e3:.2f} ms{versus}")
    pe = jax.jit(lambda a: sj.polar(a, method="polar_express"))
    t_pe = time_fn(pe, g, repeats=repeats)
    print(f"polar polar_express (8 iterations) {n}²: {t_pe * 1e3:.2f} ms = "
          f"{t_svd / t_pe:.1f}× faster than the SVD")  # fmt: skip


def jax_gpt_tokens_per_s(exp: str, overrides: list[str], tokens: int, steps: int, rounds: int):
    import bench_nanogpt

    run = bench_nanogpt.jax_runner(exp, overrides=overrides)[0]
    return tokens / statistics.median(run(steps) / steps for _ in range(rounds))


def nanogpt_tokens_per_s(checkout: pathlib.Path, python: str, iters: int, smoke: bool) -> float:
    """nanoGPT's tokens/s over the second half of `iters` steps (past torch.compile's warm-up)."""
    from bench_end_to_end import nanogpt_step_ms

    args = [*NANOGPT_GPU_ARGS, f"--max_iters={iters}", f"--lr_decay_iters={iters}",
            "--out_dir=/tmp/bench_gpu_nanogpt"]  # fmt: skip
    if smoke:
        args = [a.replace("cuda", "cpu") for a in args if not a.startswith("--compile")]
        args += ["--compile=False", "--batch_size=2", "--block_size=32", "--n_layer=1",
                 "--n_head=2", "--n_embd=32"]  # fmt: skip
    done = subprocess.run([python, "train.py", *args], cwd=checkout, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"nanoGPT failed ({done.returncode}): {done.stderr[-1500:]}")
    ms = nanogpt_step_ms(done.stdout, from_iter=iters // 2)
    if not ms:
        raise RuntimeError(f"nanoGPT printed no step times: {done.stdout[-800:]}")
    batch, context = (2, 32) if smoke else (64, 256)
    return batch * context / (statistics.median(ms) / 1e3)


def gpt_small(args) -> None:
    batch, context = (2, 32) if args.smoke else (64, 256)
    model = "gpt_baby" if args.smoke else "gpt_small"
    overrides = [f"model={model}", f"study.batch_size={batch}", f"model.context_length={context}"]
    steps, rounds = (3, 2) if args.smoke else (50, 5)
    ours = {exp: jax_gpt_tokens_per_s(exp, overrides, batch * context, steps, rounds)
            for exp in ("adamw", "muon")}  # fmt: skip
    for exp, tokens in ours.items():
        print(f"ours, {exp}, {model} batch {batch} × {context}: {tokens:,.0f} tokens/s")
    if args.nanogpt is None:
        print("nanoGPT: no checkout given (--nanogpt PATH): no reference")
        return
    from bench_end_to_end import DEFAULT_DATA, prepare_nanogpt

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    prepare_nanogpt(args.nanogpt, args.data or DEFAULT_DATA, args.torch_python, work)
    iters = 6 if args.smoke else 200
    theirs = nanogpt_tokens_per_s(args.nanogpt, args.torch_python, iters, args.smoke)
    compiled = "eager, --smoke" if args.smoke else "torch.compile"
    print(f"nanoGPT train.py ({compiled}, AdamW), same shape: {theirs:,.0f} tokens/s")
    print(f"ours / nanoGPT: AdamW {ours['adamw'] / theirs:.2f}×, Muon {ours['muon'] / theirs:.2f}×")


def sweep(args) -> None:
    steps = "20" if args.smoke else str(args.sweep_steps)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_sweep.py"), "--max-steps", steps]
    if args.smoke:
        cmd += ["--seeds", "0", "--lrs", "1e-3,2e-3", "optim.warmup_steps=5"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(done.stdout[-4000:])
    if done.returncode != 0:
        raise RuntimeError(f"bench_sweep failed ({done.returncode}): {done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=pathlib.Path, default=None, help="a nanoGPT checkout")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="a Python with a CUDA PyTorch, for nanoGPT")  # fmt: skip
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="Tiny Shakespeare for nanoGPT (default ../shared/data)")  # fmt: skip
    parser.add_argument("--n", type=int, default=4096, help="matrix size of the linalg section")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sweep-steps", type=int, default=2000)
    parser.add_argument("--only", choices=("linalg", "gpt_small", "sweep"), nargs="+")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the script")
    args = parser.parse_args()
    if args.n < 64:
        parser.error(f"--n must be at least 64, got {args.n}")
    if args.nanogpt is not None and not (args.nanogpt / "train.py").is_file():
        parser.error(f"--nanogpt {args.nanogpt} is not a nanoGPT checkout (no train.py)")
    devices = jax.devices()
    print(f"# jax {jax.__version__}, {devices[0].platform}: {devices[0].device_kind} × "
          f"{len(devices)}; load {os.getloadavg()}")  # fmt: skip
    if devices[0].platform != "gpu" and not args.smoke:
        print("# no GPU here: these are not GPU figures (use --smoke to check the script)")
    only = args.only or ("linalg", "gpt_small", "sweep")
    if "linalg" in only:
        section("linalg", linalg, 256 if args.smoke else args.n, 2 if args.smoke else args.repeats)
    if "gpt_small" in only:
        section("gpt_small", gpt_small, args)
    if "sweep" in only:
        section("sweep", sweep, args)


if __name__ == "__main__":
    main()
