"""Benchmark the spectral core against references measured in the same run.

    python benchmarks/bench_linalg.py           # 2048×2048 float32 (the issue's goals)
    python benchmarks/bench_linalg.py --quick   # 512×512, seconds
    python benchmarks/bench_linalg.py --only spectral_norm   # just the σ_max rows
    python benchmarks/bench_linalg.py --only randomized_svd  # rsvd vs jnp svd and sklearn
    python benchmarks/bench_linalg.py --only polar_forms     # Gram vs standard Newton–Schulz

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
from specjax.linalg import MUON_QUINTIC, newton_schulz  # noqa: E402


def decaying_matrix(n: int, seed: int = 0, decay: str = "exp") -> tuple[np.ndarray, np.ndarray]:
    """n×n float32 U diag(σ) Vᵀ with random orthogonal U, V and σᵢ = e^(−i/20) (`decay="exp"`,
    i from 0) or σᵢ = 1/i (`decay="inverse"`, i from 1); returns (x, σ)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    i = np.arange(n)
    sigma = np.exp(-i / 20.0) if decay == "exp" else 1.0 / (i + 1)
    return ((u * sigma) @ v.T).astype(np.float32), sigma


def max_rel_err(s, sigma) -> float:
    """Largest relative error of the computed top singular values `s` against exact `sigma`."""
    s = np.asarray(s, np.float64)
    return float(np.max(np.abs(s - sigma[: s.size]) / sigma[: s.size]))


def randomized_svd_rows(x_np, sigma, x_inv_np, sigma_inv, t_svd, reps) -> list[tuple]:
    """randomized_svd against `jnp.linalg.svd` (time `t_svd`) and scikit-learn's
    randomized_svd at the same sketch size and power iterations, timed interleaved. Accuracy:
    top-16 relative error on σᵢ = e^(−i/20) and on σᵢ = 1/i, max over 5 seeds."""
    rank, oversample, iters = 16, 16, 3  # randomized_svd defaults
    rsvd = jax.jit(lambda a, k: sj.randomized_svd(a, rank, key=k))
    x = jnp.asarray(x_np)
    try:
        from sklearn.utils.extmath import randomized_svd as sk_rsvd
    except ImportError:
        sk_rsvd = None

    def sk(a, seed=0):
        # power_iteration_normalizer "auto" = LU between iterations, scikit-learn's fast choice
        return sk_rsvd(a, rank, n_oversamples=oversample, n_iter=iters, random_state=seed)

    def errors(ours: bool) -> str:
        out = []
        for mat, sig in ((x_np, sigma), (x_inv_np, sigma_inv)):
            if ours:
                s = [rsvd(jnp.asarray(mat), jax.random.PRNGKey(seed))[1] for seed in range(5)]
            else:
                s = [sk(mat, seed)[1] for seed in range(5)]
            out.append(max(max_rel_err(si, sig) for si in s))
        return f"err {out[0]:.1e} / {out[1]:.1e}"

    key = jax.random.PRNGKey(0)
    jax.block_until_ready(rsvd(x, key))  # compile
    samples = {"ours": [], "sklearn": []}
    for _ in range(reps):
        samples["ours"].append(time_fn(rsvd, x, key, repeats=1, warmup=0))
        if sk_rsvd is not None:
            samples["sklearn"].append(time_fn(sk, x_np, repeats=1, warmup=0))
    t_ours = float(np.median(samples["ours"]))
    rows = [
        (
            "randomized_svd r=16 (l=32, q=3)",
            t_ours,
            t_svd,
            t_svd / t_ours,
            errors(True),
            "≥30× vs jnp svd, err ≤1e-3",
        )
    ]
    if sk_rsvd is None:
        rows.append(("sklearn randomized_svd", float("nan"), None, None, "not installed", ""))
    else:
        t_sk = float(np.median(samples["sklearn"]))
        rows.append(
            (
                "sklearn randomized_svd (same l, q)",
                t_sk,
                t_ours,
                t_sk / t_ours,
                errors(False),
                "ours faster and ≤ err",
            )
        )
    return rows


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


GPT_BABY_GROUPS = ((4, 128, 384), (4, 128, 128), (4, 128, 512), (4, 512, 128))


def polar_form_rows(n: int, reps: int) -> list[tuple]:
    """Newton–Schulz (Muon quintic, 5 iterations) in the Gram form (restarted) and "auto",
    against the standard form: gpt_baby's four stacked shape groups (what Muon orthogonalizes
    each step of `+exp=nanogpt_muon`) and an n/4 × n matrix."""
    table = (MUON_QUINTIC,) * 5
    rng = np.random.default_rng(3)
    cases = {
        "gpt_baby's 4 groups": [rng.standard_normal(s).astype(np.float32) for s in GPT_BABY_GROUPS],
        f"{n // 4}×{n}": [rng.standard_normal((n // 4, n)).astype(np.float32)],
    }
    rows = []
    for name, arrays in cases.items():
        arrays = [jnp.asarray(a) for a in arrays]

        def form_fn(form):
            return jax.jit(lambda xs: [newton_schulz(x, table, form=form) for x in xs])

        standard = form_fn("standard")
        t_standard = time_fn(standard, arrays, repeats=reps)
        reference = standard(arrays)
        rows.append((f"NS standard, {name}", t_standard, None, None, "", "reference"))
        for form in ("gram", "auto"):
            fn = form_fn(form)
            t = time_fn(fn, arrays, repeats=reps)
            pairs = zip(fn(arrays), reference, strict=True)
            diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs)
            rows.append((f"NS {form}, {name}", t, t_standard, t_standard / t,
                         f"max|Δ| {diff:.0e}", "ratio > 1"))  # fmt: skip
    return rows


def uptime() -> str:
    """The machine's load averages (1, 5, 15 min), to read the timings against."""
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"
    except OSError:
        return "load average unknown"


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
        "--only",
        choices=("spectral_norm", "randomized_svd", "polar_forms"),
        help="run only these rows (plus the SVD reference)",
    )
    args = parser.parse_args()
    n = 512 if args.quick else 2048
    reps = args.repeats
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, n={n}, float32"
    )
    x_np, sigma = decaying_matrix(n)
    x = jnp.asarray(x_np)
    gauss = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)).astype(np.float32))
    rows = []
    if args.only == "polar_forms":
        print_table(polar_form_rows(n, reps))
        print(f"# load: {uptime()}")
        return
    if args.only:
        # the full SVD takes tens of seconds under load: compile ahead, time two calls
        svd_once = jax.jit(lambda a: jnp.linalg.svd(a, full_matrices=False)).lower(x).compile()
        t_svd = time_fn(svd_once, x, repeats=2, warmup=0)
        rows.append(("jnp.linalg.svd (full, 2 calls)", t_svd, None, None, "", "reference"))
        if args.only == "spectral_norm":
            rows += spectral_norm_rows(x, sigma, gauss, t_svd, reps)
        else:
            x_inv, sigma_inv = decaying_matrix(n, 1, "inverse")
            rows += randomized_svd_rows(x_np, sigma, x_inv, sigma_inv, t_svd, reps)
        print_table(rows)
        print(f"# load: {uptime()}")
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
    rows += randomized_svd_rows(x_np, sigma, *decaying_matrix(n, 1, "inverse"), t_svd, reps)
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
    print(f"# load: {uptime()}")


if __name__ == "__main__":
    main()
