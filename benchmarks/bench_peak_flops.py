"""The float32 matmul FLOP/s that MFU is measured against, stored for later runs.

    python benchmarks/bench_peak_flops.py [--repeats 20] [--no-store]

Times jitted n×n float32 matmuls (2·n³ FLOPs each, best of `--repeats`) at n = 1024, 2048 and
4096 on the default device, prints them with the load average, and stores the 2048² figure as
this device kind's peak in the user cache (`experiments.runtime.throughput.peak_file()`),
replacing any earlier value. Run it on a quiet machine: MFU in `metrics.jsonl` divides by it.
"""

from __future__ import annotations

import argparse
import os

from experiments.runtime import throughput


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed matmuls per size")
    parser.add_argument("--no-store", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    print(f"# {throughput.device_label()}, load average {os.getloadavg()}")
    rates = {}
    for n in (1024, throughput.MATMUL_SIZE, 4096):
        rates[n] = throughput.measure_matmul_flops(n, repeats=args.repeats)
        print(f"float32 {n}x{n} matmul: {rates[n] / 1e9:.1f} GFLOP/s")
    if not args.no_store:
        entry = throughput.store_peak(rates[throughput.MATMUL_SIZE], replace=True)
        print(f"stored {entry['flops'] / 1e9:.1f} GFLOP/s in {throughput.peak_file()}")


if __name__ == "__main__":
    main()
