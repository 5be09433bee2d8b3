"""The default causal check (identify, LinearDML, three DoWhy refuters, sensitivity) on 100k confounded rows.

Usage: python benchmarks/bench_causal.py [--n-rows 100000] [--seed 0]

Prints wall time per step and the error of the naive, IPW and adjusted estimates against the
simulator's exact average effect. Target: at most 2 minutes on the 2-core reference machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causal import CausalConfig, run_causal_check  # noqa: E402
from datasets.causal_simulator import simulate_causal  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outcome", default="watch_seconds")
    args = parser.parse_args()
    data, truth = simulate_causal(n_rows=args.n_rows, seed=args.seed)
    start = time.perf_counter()
    result = run_causal_check(data, CausalConfig(treatment="recommended", outcome=args.outcome, seed=args.seed))
    wall = time.perf_counter() - start
    true_ate = truth["ate"][args.outcome]
    print(f"{args.n_rows:,} rows, outcome {args.outcome}, true ATE {true_ate:.3f}")
    for name, est in (("naive", result.naive), ("ipw", result.ipw), ("adjusted", result.ate)):
        error = abs(est["value"] - true_ate) / abs(true_ate) if true_ate else float("nan")
        covers = est["ci_low"] <= true_ate <= est["ci_high"]
        print(f"  {name:<9} {est['value']:9.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]  "
              f"error {error:6.1%}  covers {covers}")
    for r in result.refutations:
        print(f"  refuter {r.name:<20} passed={r.passed}  new effect {r.new_effect}")
    print("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    print(f"total wall time {wall:.1f} s (target <= 120 s)")


if __name__ == "__main__":
    main()
