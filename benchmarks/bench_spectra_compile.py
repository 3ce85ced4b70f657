"""Cold-start cost of NanoGPT spectra logging: compile CPU-seconds and per-log cost, old vs new.

    python benchmarks/bench_spectra_compile.py                 # nanogpt_adamw (~1–2 min, 2 cores)
    python benchmarks/bench_spectra_compile.py --exp nanogpt_muon --repeats 9

Each part is measured in a fresh process with the persistent compilation cache off, as in a
cold start: trace + lower, then XLA compile, in CPU-seconds (`time.process_time`, all threads)
and wall seconds, then the warm per-log cost (median of `--repeats` calls). Parts:

- `old`: the former jitted spectra function, capture + `specjax.diagnostics.layer_spectra`;
- `old_capture`: (a) its forward/backward with captured activations, st(A) (power iteration,
  at most 50 iterations, tolerance 1e-5) and `tx.update`;
- `old_layer_spectra`: (b) `layer_spectra` alone (randomized SVDs, exact SVD nuclear ranks);
- `new`: `experiments.nanogpt.step.make_spectra_fn` as it is now: the jitted capture (gradient,
  update, Gram matrices of the activations), then every statistic on the host with numpy LAPACK
  ("host": seconds of that per log).

The rows print as one table and, with `--json PATH`, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PARTS = ("old", "old_capture", "old_layer_spectra", "new")
LOG_ST_ITERATION = {"max_iters": 50, "tol": 1e-5}  # the former path's st(A) power iteration


def _setup(exp: str):
    """(cfg, gpt, tx, needs_st, state, batch, key) for `+exp=<exp>`, after two train steps."""
    import jax

    from experiments.config import compose
    from experiments.nanogpt import data as data_lib
    from experiments.nanogpt import step as step_lib
    from experiments.studies import nanogpt

    cfg = compose([f"+exp={exp}", "trainer.compilation_cache_dir=off"])
    corpus, gpt, tx = nanogpt.build(cfg)
    needs_st = cfg.optim.needs_activation_stable_ranks
    batch_fn = data_lib.make_batch_fn(
        corpus.train_tokens, cfg.study.batch_size, gpt.config.context_length
    )
    key = jax.random.PRNGKey(0)
    state = step_lib.init_state(gpt, tx, key)
    return cfg, gpt, tx, needs_st, state, batch_fn(key, 0), key


def _old_functions(gpt, tx, needs_st, key, top_k):
    """The former spectra path, rebuilt from the library: {part: (jitted fn, args builder)}."""
    import jax

    from experiments.nanogpt import layers
    from experiments.nanogpt import step as step_lib
    from specjax import diagnostics

    cfg = gpt.config

    def capture(state, batch):
        x_BxT, y_BxT = batch
        params = state["params"]
        _, grads, extra, acts = step_lib.grads_and_extras(
            gpt, needs_st, params, x_BxT, y_BxT, key, capture=True
        )
        act_st = layers.activation_stable_ranks(acts, x_BxT, cfg, **LOG_ST_ITERATION)
        updates, _ = tx.update(grads, state["opt_state"], params, **extra)
        return grads, updates, act_st

    def stats(params, grads, updates, act_st, step):
        return diagnostics.layer_spectra(
            layers.named_weights(params, cfg),
            layers.named_weights(grads, cfg),
            layers.named_weights(updates, cfg),
            {w: act_st[a] for w, a in layers.feeds(cfg).items()},
            key=jax.random.fold_in(key, step),
            top_k=top_k,
        )

    def old(state, batch):
        grads, updates, act_st = capture(state, batch)
        return stats(state["params"], grads, updates, act_st, state["step"]), act_st

    return capture, stats, old


def _time(fn, *args, repeats: int) -> float:
    import jax

    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def measure(part: str, exp: str, repeats: int) -> dict:
    """Compile (CPU-s, wall) and warm per-log seconds of one part, in this (fresh) process."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    from experiments.nanogpt import step as step_lib

    cfg, gpt, tx, needs_st, state, batch, key = _setup(exp)
    top_k = cfg.study.spectra_top_k
    capture, stats, old = _old_functions(gpt, tx, needs_st, key, top_k)
    host_s = None
    if part == "old":
        fn, args = jax.jit(old), (state, batch)
    elif part == "old_capture":
        fn, args = jax.jit(capture), (state, batch)
    elif part == "old_layer_spectra":
        grads, updates, act_st = jax.jit(capture)(state, batch)  # not timed: an input only
        fn, args = jax.jit(stats), (state["params"], grads, updates, act_st, state["step"])
    elif part == "new":
        spectra_fn = step_lib.make_spectra_fn(gpt, tx, needs_st, key, top_k)
        fn, args = jax.jit(step_lib.spectra_capture(gpt, tx, needs_st, key)), (state, batch)
    else:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    lowered = fn.lower(*args)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    compiled = lowered.compile()
    cpu2, wall2 = time.process_time(), time.perf_counter()
    jax.block_until_ready(compiled(*args))  # first run, then warm calls of the jitted part
    per_log = _time(compiled, *args, repeats=repeats)
    if part == "new":  # the whole logging call: jitted capture, then the host statistics
        spectra_fn(state, batch)  # its own jit of the capture: compiled here, not timed
        per_log = _time(spectra_fn, state, batch, repeats=repeats)
        host_s = per_log - _time(compiled, *args, repeats=repeats)
    return {
        "part": part, "exp": exp,
        "trace_lower_cpu_s": cpu1 - cpu0, "trace_lower_wall_s": wall1 - wall0,
        "compile_cpu_s": cpu2 - cpu1, "compile_wall_s": wall2 - wall1,
        "per_log_s": per_log, "host_s": host_s,
    }  # fmt: skip


def run_part(part: str, exp: str, repeats: int) -> dict:
    """`measure(part)` in a fresh Python process (nothing traced or compiled before it)."""
    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    cmd = [sys.executable, __file__, "--child", part, "--exp", exp, "--repeats", str(repeats)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"part {part!r} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", default="nanogpt_adamw")
    parser.add_argument("--repeats", type=int, default=7, help="warm calls per part (median)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--json", type=pathlib.Path, help="also write the rows here")
    parser.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    sys.path.insert(0, str(ROOT))
    if args.child:
        print(json.dumps(measure(args.child, args.exp, args.repeats)))
        return
    print(f"# {args.exp}, cache off, fresh process per part; load: {os.getloadavg()}")
    rows = {p: run_part(p, args.exp, args.repeats) for p in args.parts}
    print(f"{'part':<18} {'trace+lower':>14} {'compile':>16} {'per log':>9} {'host':>7}")
    for r in rows.values():
        host = "" if r["host_s"] is None else f"{r['host_s']:.3f}"
        print(
            f"{r['part']:<18} {r['trace_lower_cpu_s']:6.2f} / {r['trace_lower_wall_s']:5.2f} s "
            f"{r['compile_cpu_s']:7.2f} / {r['compile_wall_s']:5.2f} s "
            f"{r['per_log_s']:8.3f}s {host:>7}"
        )
    if "old" in rows and "new" in rows:
        old, new = rows["old"], rows["new"]
        for what in ("compile_cpu_s", "compile_wall_s", "trace_lower_cpu_s", "per_log_s"):
            print(f"new/old {what}: {new[what] / old[what]:.2f}")
    print("(CPU-s / wall s; per log: warm median, seconds)")
    if args.json:
        args.json.write_text(json.dumps(list(rows.values()), indent=1))


if __name__ == "__main__":
    main()
