"""Step time, tokens/s and model FLOPs utilisation (MFU) for `metrics.jsonl`.

    mfu = flops_per_step / step_time_s / peak_flops

`peak_flops` is the FLOP/s this machine reaches on a large float32 matmul (2·n³ FLOPs per n×n
product, best of a few), measured once per device kind and stored in the user cache directory,
or `trainer.peak_flops` when set. The run record says which (`record.json` → "throughput").
A peak measured while other work shares the machine is too low (an MFU above 100 % shows it):
the stored value only ever rises, and `python benchmarks/bench_peak_flops.py` re-measures it
on a quiet machine.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp

PEAK_FILE = "peak_flops.json"
MATMUL_SIZE = 2048


def seconds_since_process_start() -> float | None:
    """Wall-clock seconds since this process started (Linux `/proc`); None elsewhere."""
    try:
        with open("/proc/self/stat") as f:  # field 22: start time in clock ticks after boot
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def measure_matmul_flops(n: int = MATMUL_SIZE, repeats: int = 3) -> float:
    """FLOP/s of the best of `repeats` float32 n×n matmuls on the default device (2·n³ each)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a))
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def device_label() -> str:
    """`platform:device kind×count`, the key under which a measured peak is stored."""
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}x{jax.device_count()}"


def peak_file() -> pathlib.Path:
    import platformdirs

    return pathlib.Path(platformdirs.user_cache_dir("specjax")) / PEAK_FILE


def stored_peaks(path: pathlib.Path | None = None) -> dict[str, Any]:
    path = path or peak_file()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def store_peak(flops: float, path: pathlib.Path | None = None, *, replace: bool = False
               ) -> dict[str, Any]:  # fmt: skip
    """Measured peak for this device kind, written to the user cache (best effort). A peak is a
    maximum: a lower measurement (taken under load) keeps the stored one unless `replace`."""
    path = path or peak_file()
    peaks = stored_peaks(path)
    stored = peaks.get(device_label())
    if not replace and stored and float(stored.get("flops", 0)) >= flops:
        return stored
    entry = {
        "flops": float(flops),
        "source": f"measured: float32 {MATMUL_SIZE}² matmul",
        "device": device_label(),
        "measured": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    peaks[device_label()] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(peaks, indent=1) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only means measuring again next time
    return entry


def resolve_peak(configured: float | None, path: pathlib.Path | None = None) -> dict[str, Any]:
    """{"flops", "source", ...}: `trainer.peak_flops`, else the stored measurement for this
    device kind, else a fresh measurement (about a second on a CPU), then stored."""
    if configured is not None:
        return {"flops": float(configured), "source": "trainer.peak_flops",
                "device": device_label()}  # fmt: skip
    entry = stored_peaks(path).get(device_label())
    if entry and float(entry.get("flops", 0)) > 0:
        return {**entry, "file": str(path or peak_file())}
    return {**store_peak(measure_matmul_flops(), path), "file": str(path or peak_file())}


def throughput_metrics(
    step_time_s: float,
    tokens_per_step: int | None,
    flops_per_step: float | None,
    peak_flops: float | None,
) -> dict[str, float]:
    """step_time_s, and tokens_per_s / mfu where the study told tokens and FLOPs per step."""
    out = {"step_time_s": step_time_s}
    if tokens_per_step:
        out["tokens_per_s"] = tokens_per_step / step_time_s
    if flops_per_step and peak_flops:
        out["mfu"] = flops_per_step / step_time_s / peak_flops
    return out
