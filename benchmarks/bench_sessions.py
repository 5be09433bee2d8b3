"""Session-level evaluation at scale: `livegate evaluate --sessions` end to end against the exact truth.

Usage: python benchmarks/bench_sessions.py [--n-sessions 100000] [--seed 0] [--out-json FILE]

Steps (each a process of its own, OMP_WAIT_POLICY=PASSIVE so that idle OpenMP threads do not spin on a
shared machine):
  simulate   `livegate simulate --sessions` (logs, the four policy files, truth.json), timed on its own
  evaluate   `livegate evaluate --sessions` with three candidates (myopic, longterm, qlearning), normal
             intervals, once with pdis,dr,fqe,mis,drl and once with drl (the gate's default for sessions);
             wall time and peak RSS of that process alone (os.wait4's rusage of the child)
Each estimate is compared with truth["logged_starts"][policy]["watch_seconds"]: the exact expected return
per session averaged over the logged sessions' initial states (what the estimators target). Prints
Markdown tables; --out-json keeps every number.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ("myopic", "longterm", "qlearning")
METRIC = "watch_seconds"


def child_env() -> dict:
    env = dict(os.environ)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def run_measured(cmd: list[str], log: Path) -> dict:
    """Run one process; its wall time, CPU time and peak RSS (this child alone, not all children)."""
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{' '.join(cmd[:5])} ... exited {proc.returncode} (log: {log})")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024}  # ru_maxrss is in KiB on Linux


def machine_info() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_gib, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def simulate(workdir: Path, n: int, seed: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "livegate", "--quiet", "simulate", "--sessions", "--out", str(workdir),
           "--n-sessions", str(n), "--seed", str(seed)]
    return run_measured(cmd, workdir / "simulate.log")


def evaluate(workdir: Path, estimators: str, tag: str) -> tuple[dict, dict]:
    out = workdir / f"result-{tag}.json"
    cmd = [sys.executable, "-m", "livegate", "--quiet", "evaluate", "--sessions",
           "--logs", str(workdir / "logs.parquet"),
           *[a for p in CANDIDATES for a in ("--policy", f"{p}={workdir / 'policies' / f'{p}.parquet'}")],
           "--reward", METRIC, "--estimators", estimators, "--ci", "normal", "--seed", "0", "--out", str(out)]
    load_before = os.getloadavg()
    measured = run_measured(cmd, workdir / f"evaluate-{tag}.log")
    measured["load_before"] = [round(x, 2) for x in load_before]
    measured["load_after"] = [round(x, 2) for x in os.getloadavg()]
    measured["command"] = " ".join(cmd[1:])
    return measured, json.loads(out.read_text())


def score(result: dict, truth: dict) -> list[dict]:
    rows = []
    for policy in ("logging", *CANDIDATES):
        entry = result["policies"][policy]
        true = truth["logged_starts"][policy][METRIC]
        diag = entry.get("diagnostics", {})
        for est, e in entry["estimates"].items():
            rows.append({
                "policy": policy, "estimator": est, "estimate": e["value"], "se": e.get("se"),
                "ci_low": e["ci_low"], "ci_high": e["ci_high"], "truth": true,
                "rel_error": (e["value"] - true) / true,
                "covers": bool(e["ci_low"] <= true <= e["ci_high"]),
                "ess": diag.get("ess"), "collapse_step": diag.get("collapse_step"),
            })
    return rows


def fmt(x: float) -> str:
    return f"{x:,.1f}"


def markdown(rows: list[dict]) -> str:
    lines = ["| policy | estimator | estimate | 95% interval (normal) | truth | rel. error | covers |",
             "|---|---|---:|---|---:|---:|:---:|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['estimator']} | {fmt(r['estimate'])} | "
                     f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] | {fmt(r['truth'])} | "
                     f"{100 * r['rel_error']:+.1f}% | {'yes' if r['covers'] else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-sessions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--estimators", default="pdis,dr,fqe,mis,drl")
    parser.add_argument("--gate-estimators", default="drl", help="second run: the gate's default for sessions")
    parser.add_argument("--workdir", default=None,
                        help="data directory (default: benchmarks/data/sessions-N-sSEED)")
    parser.add_argument("--reuse", action="store_true", help="reuse the simulated data in --workdir if present")
    parser.add_argument("--out-json", default=None)
    args = parser.parse_args()

    workdir = Path(args.workdir or ROOT / "benchmarks" / "data" / f"sessions-{args.n_sessions}-s{args.seed}")
    info = {"machine": machine_info(), "load_at_start": [round(x, 2) for x in os.getloadavg()],
            "n_sessions": args.n_sessions, "seed": args.seed, "workdir": str(workdir)}
    if args.reuse and (workdir / "truth.json").exists():
        info["simulate"] = None
    else:
        info["simulate"] = simulate(workdir, args.n_sessions, args.seed)
    truth = json.loads((workdir / "truth.json").read_text())
    info["n_steps"] = truth.get("n_rows")

    runs = []
    for tag, estimators in (("main", args.estimators), ("gate", args.gate_estimators)):
        if not estimators:
            continue
        measured, result = evaluate(workdir, estimators, tag)
        runs.append({"tag": tag, "estimators": estimators, **measured, "rows": score(result, truth)})
    info["runs"] = runs

    m = info["machine"]
    print(f"\n## livegate evaluate --sessions: {args.n_sessions:,} sessions, {info['n_steps']:,} steps, "
          f"seed {args.seed}\n")
    print(f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB; load average at start "
          f"{info['load_at_start']}\n")
    print("| step | wall s | CPU s | peak RSS MiB | load avg (1 min) before → after |")
    print("|---|---:|---:|---:|---|")
    if info["simulate"]:
        s = info["simulate"]
        print(f"| simulate --sessions | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | {s['peak_rss_mib']:,.0f} | |")
    for r in runs:
        print(f"| evaluate --sessions ({r['estimators']}; 3 candidates) | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
              f"{r['peak_rss_mib']:,.0f} | {r['load_before'][0]} → {r['load_after'][0]} |")
    for r in runs:
        print(f"\n### estimators {r['estimators']} (truth: exact value over the logged initial states)\n")
        print(markdown(r["rows"]))
    # which estimator is closest, over the three candidates
    print("\n| estimator | mean abs. rel. error (3 candidates) | intervals covering (3 candidates) |")
    print("|---|---:|---:|")
    for r in runs:
        for est in r["estimators"].split(","):
            name = est.split(":")[0]
            sel = [x for x in r["rows"] if x["estimator"] == name and x["policy"] in CANDIDATES]
            if sel:
                mare = sum(abs(x["rel_error"]) for x in sel) / len(sel)
                print(f"| {name} | {100 * mare:.1f}% | {sum(x['covers'] for x in sel)}/{len(sel)} |")
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(info, indent=1))
        print(f"\nwrote {args.out_json}")


if __name__ == "__main__":
    main()
