"""Benchmark the spectral core against references measured in the same run.

    python benchmarks/bench_linalg.py           # 2048×2048 float32 (the issue's goals)
    python benchmarks/bench_linalg.py --quick   # 512×512, seconds
    python benchmarks/bench_linalg.py --only spectral_norm   # just the σ_max rows

Prints one table: median wall time, the reference's time, the ratio, the accuracy, and
the goal from issue 2. References: jnp.linalg.svd, numpy.linalg.svd,
sklearn.utils.extmath.randomized_svd, optax.contrib's Newton–Schulz
(`orthogonalize_via_newton_schulz`, the function optax's muon uses), and this machine's
float32 matmul FLOP rate (jitted x @ y at the same size).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # benchmarks/timing.py
sys.path.insert(1, os.path.dirname(_HERE))  # the repo root, when specjax is not installed
from timing import time_fn  # noqa: E402

import specjax as sj  # noqa: E402
from specjax.linalg import MUON_QUINTIC  # noqa: E402


def decaying_matrix(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n×n float32 U diag(e^(−i/20)) Vᵀ with random orthogonal U, V; returns (x, σ)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    sigma = np.exp(-np.arange(n) / 20.0)
    return ((u * sigma) @ v.T).astype(np.float32), sigma


def spectral_norm_rows(x, sigma, gauss, t_svd: float, reps: int) -> list[tuple]:
    """spectral_norm (Lanczos, default) and its block-power method on a decaying and a
    Gaussian matrix (clustered top σ, the hard case), timed interleaved: one call of each
    in turn per repeat, so load spikes on the shared machine hit both alike."""
    methods = {
        "lanczos": jax.jit(lambda a: sj.spectral_norm(a, method="lanczos")),
        "power (8-vector block)": jax.jit(lambda a: sj.spectral_norm(a, method="power")),
    }
    rows = []
    for name, mat in (("decaying", x), ("gaussian", gauss)):
        exact = sigma[0] if name == "decaying" else None
        if exact is None:
            exact = float(np.linalg.svd(np.asarray(mat, np.float64), compute_uv=False)[0])
        samples = {m: [] for m in methods}
        for fn in methods.values():
            jax.block_until_ready(fn(mat))  # compile
        for _ in range(reps):
            for m, fn in methods.items():
                samples[m].append(time_fn(fn, mat, repeats=1, warmup=0))
        for m, fn in methods.items():
            t = float(np.median(samples[m]))
            err = abs(float(fn(mat)) - exact) / exact
            rows.append(
                (
                    f"spectral_norm {m} ({name})",
                    t,
                    t_svd,
                    t_svd / t,
                    f"rel err {err:.1e}",
                    "≥50× vs jnp svd, err ≤1e-3",
                )
            )
    return rows


def print_table(rows: list[tuple]) -> None:
    print(
        f"| {'what':36s} | {'time s':>9s} | {'ref s':>9s} | {'ratio':>7s} "
        f"| {'accuracy/rate':>20s} | goal |"
    )
    print(f"|{'-' * 38}|{'-' * 11}|{'-' * 11}|{'-' * 9}|{'-' * 22}|------|")
    for what, t, ref, ratio, acc, goal in rows:
        ref_s = "" if ref is None else f"{ref:.4f}"
        ratio_s = "" if ratio is None else f"{ratio:.2f}"
        print(f"| {what:36s} | {t:9.4f} | {ref_s:>9s} | {ratio_s:>7s} | {acc:>20s} | {goal} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512×512 instead of 2048×2048")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--only", choices=("spectral_norm",), help="run only these rows (plus the SVD reference)"
    )
    args = parser.parse_args()
    n = 512 if args.quick else 2048
    reps = args.repeats
    rank, oversample, iters = 16, 10, 4  # randomized_svd defaults
    key = jax.random.PRNGKey(0)

    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, n={n}, float32"
    )
    x_np, sigma = decaying_matrix(n)
    x = jnp.asarray(x_np)
    gauss = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)).astype(np.float32))
    rows = []
    if args.only == "spectral_norm":
        # the full SVD takes tens of seconds under load: compile ahead, time one call
        svd_once = jax.jit(lambda a: jnp.linalg.svd(a, full_matrices=False)).lower(x).compile()
        t_svd = time_fn(svd_once, x, repeats=1, warmup=0)
        rows.append(("jnp.linalg.svd (full, 1 call)", t_svd, None, None, "", "reference"))
        rows += spectral_norm_rows(x, sigma, gauss, t_svd, reps)
        print_table(rows)
        return

    # float32 matmul rate: the physical limit for Newton–Schulz
    matmul = jax.jit(lambda a, b: a @ b)
    t_mm = time_fn(matmul, x, gauss, repeats=reps)
    flops_rate = 2 * n**3 / t_mm
    rows.append(("matmul n×n (float32)", t_mm, None, None, f"{flops_rate / 1e9:.1f} GFLOP/s", ""))

    # full SVD references (slow: fewer repeats)
    svd_jnp = jax.jit(lambda a: jnp.linalg.svd(a, full_matrices=False))
    t_svd = time_fn(svd_jnp, x, repeats=max(1, reps // 2))
    # numpy needs no compile, so no warm-up call (a 2048² SVD takes minutes under load)
    t_np = time_fn(
        lambda a: np.linalg.svd(a, full_matrices=False), x_np, repeats=max(1, reps // 2), warmup=0
    )
    rows.append(("jnp.linalg.svd (full)", t_svd, None, None, "", "reference"))

    rows.append(("numpy.linalg.svd (full)", t_np, t_svd, t_svd / t_np, "", "reference"))
    s_top = sigma[:rank]

    # randomized SVD
    rsvd = jax.jit(lambda a, k: sj.randomized_svd(a, rank, key=k))
    t_rsvd = time_fn(rsvd, x, key, repeats=reps)
    err_rsvd = np.max(np.abs(np.asarray(rsvd(x, key)[1], np.float64) - s_top) / s_top)
    rows.append(
        (
            "randomized_svd r=16",
            t_rsvd,
            t_svd,
            t_svd / t_rsvd,
            f"rel err {err_rsvd:.1e}",
            "≥30× vs jnp svd, err ≤1e-3",
        )
    )
    try:
        from sklearn.utils.extmath import randomized_svd as sk_rsvd

        def sk(a):
            return sk_rsvd(a, rank, n_oversamples=oversample, n_iter=iters, random_state=0)

        t_sk = time_fn(sk, x_np, repeats=reps)
        err_sk = np.max(np.abs(sk(x_np)[1].astype(np.float64) - s_top) / s_top)
        rows.append(
            (
                "sklearn randomized_svd (same l, q)",
                t_sk,
                t_rsvd,
                t_sk / t_rsvd,
                f"rel err {err_sk:.1e}",
                "ours faster and ≤ err",
            )
        )
    except ImportError:
        rows.append(("sklearn randomized_svd", float("nan"), None, None, "not installed", ""))

    rows += spectral_norm_rows(x, sigma, gauss, t_svd, reps)

    # polar by Newton–Schulz vs optax; FLOP rate vs the matmul rate
    from optax.contrib._muon import orthogonalize_via_newton_schulz

    coeffs = jnp.asarray(MUON_QUINTIC)
    ours = jax.jit(lambda a: sj.polar(a, method="newton_schulz"))
    theirs = jax.jit(lambda a: orthogonalize_via_newton_schulz(a, coeffs, ns_steps=5))
    for shape in ((n, n), (n // 2, 2 * n)):
        a = jnp.asarray(np.random.default_rng(2).standard_normal(shape).astype(np.float32))
        m_small, m_big = min(shape), max(shape)
        flops = 5 * (4 * m_small**2 * m_big + 2 * m_small**3)
        t_ours = time_fn(ours, a, repeats=reps)
        t_optax = time_fn(theirs, a, repeats=reps)
        diff = float(jnp.max(jnp.abs(ours(a) - theirs(a))))
        rows.append(
            (
                f"polar NS {shape[0]}×{shape[1]} vs optax",
                t_ours,
                t_optax,
                t_optax / t_ours,
                f"max|Δ| {diff:.0e}",
                "ratio ≥ 1",
            )
        )
        rows.append(
            (
                f"polar NS {shape[0]}×{shape[1]} FLOP rate",
                t_ours,
                None,
                flops / t_ours / flops_rate,
                f"{flops / t_ours / 1e9:.1f} GFLOP/s",
                "≥ 0.80 of matmul",
            )
        )
    pe = jax.jit(lambda a: sj.polar(a, method="polar_express"))
    t_pe = time_fn(pe, x, repeats=reps)
    rows.append(("polar polar_express (8 iters)", t_pe, t_svd, t_svd / t_pe, "", "vs jnp svd"))
    soft = jax.jit(lambda a: sj.soft_spectral_clip(a, 0.5))
    t_soft = time_fn(soft, x, repeats=reps)
    rows.append(
        ("soft_spectral_clip NS (adaptive)", t_soft, t_svd, t_svd / t_soft, "", "vs jnp svd")
    )

    print_table(rows)


if __name__ == "__main__":
    main()
