"""Accuracy and interval coverage of the session estimators against the exact truth, over seeds.

Usage: python benchmarks/bench_session_accuracy.py [--n-sessions 40000] [--seeds 0,1,2,3,4]
           [--estimators drl,wdr,dr,fqe,mis,pdis] [--ci normal] [--out-json FILE]

For every seed: `simulate_sessions` (what `livegate simulate --sessions --seed S` writes, in memory),
then `livegate.evaluate(..., sessions=True)` on its logs with the three candidates (myopic, longterm,
qlearning), 95% intervals (--ci: normal by default; `robust`, the library's default, also counts the
ends it set by Cantelli's inequality or left open), evaluation seed 0. Each estimate is compared with
truth["logged_starts"][policy]["watch_seconds"], the exact expected session return averaged over the logged
sessions' initial states (the estimand). Prints one table per seed and a summary per estimator and candidate:
how many intervals cover the truth, how many estimates are within 10% of it, the mean absolute and the mean
signed relative error, the mean interval half-width, and the root mean square of the z-scores
(estimate - truth) / se, which is about 1 when the standard errors are right (and the estimator unbiased).
The issue's target (#11): the gate's default session estimator within 10% of the truth at 4e4 sessions,
with covering intervals. With `--ci robust` and drl among the estimators, it also prints the gate's verdict
on each candidate with the session defaults (drl, robust intervals, the effective-sample floor on drl's
marginal weights, Holm) and the criterion "watch time per session improves on logging", next to the
right answer. Timing: wall and CPU seconds of each evaluate call (simulation not included).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

CANDIDATES = ("myopic", "longterm", "qlearning")
METRIC = "watch_seconds"


def run_seed(n_sessions: int, seed: int, estimators: str, ci: str) -> dict:
    from livegate import api
    from livegate.datasets.session_simulator import SessionSimulationConfig, simulate_sessions

    sim = simulate_sessions(SessionSimulationConfig(n_sessions=n_sessions, seed=seed))
    policies = {name: sim.policies[name] for name in CANDIDATES}
    wall, cpu = time.perf_counter(), time.process_time()
    result = api.evaluate(sim.logs, policies, METRIC, estimators, sessions=True, actions=sim.actions, seed=0, ci=ci)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    doc = result.to_dict()
    gate = gate_verdicts(result, sim.truth) if ci == "robust" and "drl" in estimators.split(",") else None
    rows = []
    for policy in CANDIDATES:
        truth = sim.truth["logged_starts"][policy][METRIC]
        entry = doc["metrics"][METRIC]["policies"][policy]
        for est, e in entry["estimates"].items():
            se = e.get("se")
            low = e["ci_low"] if e["ci_low"] is not None else -math.inf      # an open end is null in JSON
            high = e["ci_high"] if e["ci_high"] is not None else math.inf
            rows.append({"seed": seed, "policy": policy, "estimator": est, "estimate": e["value"], "se": se,
                         "ci_low": low, "ci_high": high, "truth": truth,
                         "rel_error": (e["value"] - truth) / truth,
                         "half_width": (high - low) / 2 / truth,
                         "z": (e["value"] - truth) / se if se else math.nan,
                         "covers": bool(low <= truth <= high),
                         "ci_open": e.get("ci_open"), "ci_cantelli": e.get("ci_cantelli"),
                         "ess": entry.get("diagnostics", {}).get("ess")})
    return {"seed": seed, "n_rows": int(len(sim.logs)), "wall_s": wall, "cpu_s": cpu, "rows": rows, "gate": gate}


def gate_verdicts(result, truth: dict) -> list[dict]:
    """The gate's verdict on each candidate with its session defaults (drl, robust intervals, the
    effective-sample floor, Holm over the candidates) and one criterion, watch time per session improves
    on logging (min_effect 0), next to the right answer: pass when the candidate is truly better."""
    from livegate.datasets.gate_config import parse_gate_config
    from livegate.ope.gate import decide

    cfg = parse_gate_config({"data": {"logs": "logs.parquet"}, "evaluation": {"level": "session"},
                             "candidate": [{"name": c, "policy": f"{c}.parquet"} for c in CANDIDATES],
                             "criterion": [{"metric": METRIC, "rule": "improves", "min_effect": 0.0}]},
                            Path("bench-gate.toml"))
    decision = decide(result, cfg).to_dict()
    base = truth["logged_starts"]["logging"][METRIC]
    return [{"policy": c["name"], "decision": c["decision"], "ess": c["diagnostics"]["ess"],
             "diagnostics_ok": c["diagnostics"]["ok"],
             "truly": "better" if truth["logged_starts"][c["name"]][METRIC] > base else "worse"}
            for c in decision["candidates"]]


def seed_table(run: dict) -> str:
    lines = [f"\n### seed {run['seed']}: {run['n_rows']:,} steps; evaluate {run['wall_s']:.1f} s wall, "
             f"{run['cpu_s']:.1f} s CPU\n",
             "| policy | estimator | estimate | 95% interval | truth | rel. error | covers |",
             "|---|---|---:|---|---:|---:|:---:|"]
    for r in run["rows"]:
        lines.append(f"| {r['policy']} | {r['estimator']} | {r['estimate']:,.1f} | [{r['ci_low']:,.1f}, "
                     f"{r['ci_high']:,.1f}] | {r['truth']:,.1f} | {100 * r['rel_error']:+.1f}% | "
                     f"{'yes' if r['covers'] else 'NO'} |")
    return "\n".join(lines)


def summary(runs: list[dict], estimators: list[str]) -> str:
    lines = ["| estimator | candidate | covering | within 10% | mean abs. error | mean error | mean half-width "
             "| RMS z | Cantelli / open ends |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for est in estimators:
        for policy in (*CANDIDATES, "all"):
            sel = [r for run in runs for r in run["rows"]
                   if r["estimator"] == est and (policy == "all" or r["policy"] == policy)]
            if not sel:
                continue
            err = np.array([r["rel_error"] for r in sel])
            z = np.array([r["z"] for r in sel], dtype=float)
            lines.append(f"| {est} | {policy} | {sum(r['covers'] for r in sel)}/{len(sel)} | "
                         f"{int(np.sum(np.abs(err) <= 0.10))}/{len(sel)} | {100 * np.mean(np.abs(err)):.1f}% | "
                         f"{100 * np.mean(err):+.1f}% | {100 * np.mean([r['half_width'] for r in sel]):.1f}% | "
                         f"{math.sqrt(np.nanmean(z ** 2)):.2f} | {sum(bool(r['ci_cantelli']) for r in sel)} / "
                         f"{sum(bool(r['ci_open']) for r in sel)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-sessions", type=int, default=40_000)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--estimators", default="drl,wdr,dr,fqe,mis,pdis")
    parser.add_argument("--ci", default="normal", help="interval method (default normal; the library's is robust)")
    parser.add_argument("--out-json", default=None)
    args = parser.parse_args()

    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"## Session estimators against the exact truth: {args.n_sessions:,} sessions, seeds {args.seeds}, "
          f"{args.ci} intervals, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    runs = []
    for seed in seeds:
        runs.append(run_seed(args.n_sessions, seed, ",".join(estimators), args.ci))
        print(seed_table(runs[-1]), flush=True)
    print(f"\n### summary over {len(seeds)} seeds x {len(CANDIDATES)} candidates\n")
    print(summary(runs, estimators))
    if any(run["gate"] for run in runs):
        print("\n### the gate's verdicts (session defaults: drl, robust, effective-sample floor; improves on logging)\n")
        print("| seed | " + " | ".join(CANDIDATES) + " |\n|---|" + "---|" * len(CANDIDATES))
        for run in runs:
            print(f"| {run['seed']} | " + " | ".join(f"{g['decision']} (truly {g['truly']}; drl ESS {g['ess']:,.0f})"
                                                       for g in run["gate"]) + " |")
    if args.out_json:
        Path(args.out_json).write_text(json.dumps({"n_sessions": args.n_sessions, "seeds": seeds, "ci": args.ci,
                                                   "estimators": estimators, "runs": runs}, indent=1))
        print(f"\nwrote {args.out_json}")


if __name__ == "__main__":
    main()
