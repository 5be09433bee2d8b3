"""Benchmark: time ``simulate`` and ``write_simulation`` and report peak memory.

    python benchmarks/bench_simulate.py --n-rounds 1000000

Prints the wall seconds of each stage, the total, the size of the written files and the peak
resident set size of the process (``resource.getrusage``; kilobytes on Linux, bytes on macOS).
Output goes to a temporary directory unless ``--out`` is given.
"""
from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import tempfile
import time

from livegate.datasets.simulator import SimulationConfig, simulate, write_simulation


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-rounds", type=int, default=1_000_000)
    parser.add_argument("--n-streams", type=int, default=200)
    parser.add_argument("--n-positions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="keep the files here")
    args = parser.parse_args(argv)

    config = SimulationConfig(n_rounds=args.n_rounds, n_streams=args.n_streams,
                              n_positions=args.n_positions, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="livegate-bench-") as tmp:
        out = args.out or pathlib.Path(tmp)
        t0 = time.perf_counter()
        sim = simulate(config)
        t1 = time.perf_counter()
        paths = write_simulation(sim, out)
        t2 = time.perf_counter()
        size = sum(p.stat().st_size for p in paths.values())
    print(f"n_rounds={config.n_rounds:,} n_rows={config.n_rows:,} n_streams={config.n_streams} "
          f"slate_size={config.slate_size}")
    print(f"simulate:         {t1 - t0:8.2f} s")
    print(f"write_simulation: {t2 - t1:8.2f} s  ({size / 2**20:.1f} MiB in {len(paths)} files)")
    print(f"total:            {t2 - t0:8.2f} s")
    print(f"peak RSS:         {peak_rss_mib():8.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
