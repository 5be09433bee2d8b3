"""Speed and memory of `livegate evaluate` at scale, next to the floor (and obp where it installs).

Usage: python benchmarks/bench_evaluate.py [--n-rows 10000000] [--workdir benchmarks/data]

Data: n logged rows over 50 streams, two candidate policies listing 3 actions per decision
(long-format Parquet), and q-hat predictions for every (decision, action) any policy lists plus
the logged action. Measured:
  floor      pyarrow reads the same columns + one NumPy weighted mean (IPS of one policy), as a
             process of its own like livegate (start-up, imports, reads, mean), and, for reference,
             the second of two runs inside this process (warm: memory already mapped)
  livegate   `livegate evaluate` end to end (ips, snips, dr; normal intervals; two policies; q-hat
             given; JSON written) in a subprocess, wall time and peak RSS
  bootstrap  1,000 Poisson-bootstrap resamples of ips, snips, dr for two policies at 1e6 rows
Each process is run once unmeasured, then --repeat times (default 3), alternating livegate and floor;
medians are shown (on a shared virtual machine single runs vary by +-20%, and the first process after
a pause is the slowest).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]

N_ACTIONS, K = 50, 3


def make_data(n: int, workdir: Path, seed: int = 0) -> None:
    """Synthetic logs: uniform-ish logging over 50 streams; candidates put mass on 3 streams each."""
    rng = np.random.default_rng(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    decision = np.arange(n, dtype=np.int64)
    action = rng.integers(0, N_ACTIONS, n)
    propensity = np.full(n, 1.0 / N_ACTIONS)
    mean = 20 + 2 * (action % 7)
    reward = rng.exponential(mean)
    pq.write_table(pa.table({"decision_id": decision, "action": action, "propensity": propensity,
                             "watch_seconds": reward}), workdir / "logs.parquet", row_group_size=1 << 20)
    q_actions = [action[:, None]]
    for name, shift in (("cand_a", 1), ("cand_b", 2)):
        # three distinct streams per decision, chosen from the (unlogged) context, not the logged action
        base = rng.integers(0, N_ACTIONS, n)
        acts = (base[:, None] + np.arange(K)[None, :] * shift) % N_ACTIONS
        probs = np.tile(np.array([0.6, 0.3, 0.1]), (n, 1))
        pq.write_table(pa.table({"decision_id": np.repeat(decision, K), "action": acts.ravel(),
                                 "prob": probs.ravel()}), workdir / f"{name}.parquet", row_group_size=1 << 20)
        q_actions.append(acts)
    allq = np.concatenate(q_actions, axis=1)  # (n, 7) with repeats
    allq.sort(axis=1)
    keep = np.ones_like(allq, dtype=bool)
    keep[:, 1:] = allq[:, 1:] != allq[:, :-1]
    rows = np.repeat(decision, allq.shape[1])[keep.ravel()]
    acts = allq.ravel()[keep.ravel()]
    q = 20 + 2 * (acts % 7) + 0.0
    pq.write_table(pa.table({"decision_id": rows, "action": acts, "q_hat": q}), workdir / "q_hat.parquet",
                   row_group_size=1 << 20)


def make_compact(workdir: Path) -> None:
    """The compact form of the same data: pi_<NAME>, qpi_<NAME> and q_hat as columns of the logs."""
    logs = pq.read_table(workdir / "logs.parquet")
    logged = logs.column("action").to_numpy()
    n = len(logged)
    q_of = lambda a: 20 + 2 * (a % 7) + 0.0  # noqa: E731 - the q-hat of make_data
    columns = {"q_hat": q_of(logged)}
    for name in ("cand_a", "cand_b"):
        pol = pq.read_table(workdir / f"{name}.parquet")
        acts = pol.column("action").to_numpy().reshape(n, K)
        probs = pol.column("prob").to_numpy().reshape(n, K)
        columns[f"pi_{name}"] = np.sum(np.where(acts == logged[:, None], probs, 0.0), axis=1)
        columns[f"qpi_{name}"] = np.sum(probs * q_of(acts), axis=1)
    for key, values in columns.items():
        logs = logs.append_column(key, pa.array(values))
    pq.write_table(logs, workdir / "logs_compact.parquet", row_group_size=1 << 20)


def floor_compact(workdir: Path) -> tuple[float, int]:
    start = time.perf_counter()
    cols = ["propensity", "watch_seconds", "q_hat", "pi_cand_a", "qpi_cand_a", "pi_cand_b", "qpi_cand_b"]
    logs = pq.read_table(workdir / "logs_compact.parquet", columns=cols)
    w = logs.column("pi_cand_a").to_numpy() / logs.column("propensity").to_numpy()
    value = float(np.mean(w * logs.column("watch_seconds").to_numpy()))
    assert np.isfinite(value)
    return time.perf_counter() - start, logs.nbytes


def floor(workdir: Path) -> tuple[float, int]:
    start = time.perf_counter()
    logs = pq.read_table(workdir / "logs.parquet", columns=["decision_id", "action", "propensity", "watch_seconds"])
    nbytes = logs.nbytes
    for name in ("cand_a", "cand_b"):
        pol = pq.read_table(workdir / f"{name}.parquet", columns=["decision_id", "action", "prob"])
        nbytes += pol.nbytes
    qh = pq.read_table(workdir / "q_hat.parquet", columns=["decision_id", "action", "q_hat"])
    nbytes += qh.nbytes
    # plain NumPy: this file lists K rows per decision in order, so the logged action's prob is a compare
    acts = pol.column("action").to_numpy().reshape(-1, K)
    probs = pol.column("prob").to_numpy().reshape(-1, K)
    logged = logs.column("action").to_numpy()
    pi = np.sum(np.where(acts == logged[:, None], probs, 0.0), axis=1)
    w = pi / logs.column("propensity").to_numpy()
    value = float(np.mean(w * logs.column("watch_seconds").to_numpy()))
    assert np.isfinite(value)
    return time.perf_counter() - start, nbytes


def floor_process(workdir: Path, compact: bool = False) -> float:
    """Wall time of the floor as a process of its own (Python start-up included, as for livegate)."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); from pathlib import Path; "
            f"import bench_evaluate as b; b.{'floor_compact' if compact else 'floor'}(Path({str(workdir)!r}))")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def run_livegate(workdir: Path, compact: bool = False) -> tuple[float, float]:
    """Wall time and peak RSS of one `livegate evaluate` process (GNU time's maximum resident set)."""
    if compact:
        data = ["--logs", str(workdir / "logs_compact.parquet"), "--policy", "cand_a", "--policy", "cand_b"]
    else:
        data = ["--logs", str(workdir / "logs.parquet"), "--policy", f"cand_a={workdir / 'cand_a.parquet'}",
                "--policy", f"cand_b={workdir / 'cand_b.parquet'}", "--q-hat", str(workdir / "q_hat.parquet")]
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "livegate", "--quiet", "evaluate", *data,
           "--reward", "watch_seconds", "--estimators", "ips,snips,dr", "--ci", "normal",
           "--out", str(workdir / "result.json")]
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return wall, peak_kib * 1024


def bench_bootstrap(n: int = 1_000_000, n_boot: int = 1000) -> float:
    from livegate.ope.estimators import RowInputs, dr, ips, snips
    from livegate.ope.inference import bootstrap_replicates
    rng = np.random.default_rng(1)
    terms = []
    for _ in range(2):
        w = rng.exponential(size=n)
        r = rng.exponential(30, size=n)
        q = np.full(n, 30.0)
        x = RowInputs(reward=r, weight=w, q_logged=q, q_pi=q)
        terms += [ips(x), snips(x), dr(x)]
    start = time.perf_counter()
    bootstrap_replicates(terms, n_boot, seed=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-rows", type=int, default=10_000_000)
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "data"))
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if not args.skip_generate:
        t = time.perf_counter()
        make_data(args.n_rows, workdir)
        make_compact(workdir)
        print(f"generated {args.n_rows:,} rows in {time.perf_counter() - t:.1f}s")
    for compact, label in ((False, "long format"), (True, "compact form")):
        warm_s, nbytes = (floor_compact if compact else floor)(workdir)
        warm_s = min(warm_s, (floor_compact if compact else floor)(workdir)[0])
        run_livegate(workdir, compact=compact)  # one unmeasured run of each: both then start from the same
        floor_process(workdir, compact=compact)  # state of the machine's memory and file cache
        runs, floors = [], []
        for _ in range(args.repeat):
            runs.append(run_livegate(workdir, compact=compact))
            floors.append(floor_process(workdir, compact=compact))
        lg_s, peak = statistics.median(r[0] for r in runs), max(r[1] for r in runs)
        floor_s = statistics.median(floors)
        print(f"{label}: columns read {nbytes / 2**30:.2f} GiB")
        print(f"  floor, own process (pyarrow read + NumPy IPS)   {floor_s:7.2f} s   "
              f"(warm, inside this process: {warm_s:.2f} s)")
        print(f"  livegate evaluate end to end                   {lg_s:7.2f} s   ({lg_s / floor_s:.1f}x floor, "
              f"{lg_s / warm_s:.1f}x warm floor)   peak RSS {peak / 2**30:.2f} GiB ({peak / nbytes:.1f}x columns)")
        print(f"  runs: livegate {', '.join(f'{r[0]:.2f}' for r in runs)} s; floor {', '.join(f'{f:.2f}' for f in floors)} s")
    try:
        import obp  # noqa: F401
        print("obp installed: compare with benchmarks/README (not automated)")
    except ImportError:
        print("obp: not installable here (obp 0.5.7 requires Python < 3.11 and torch 1.12); not run")
    print(f"bootstrap 1,000 resamples x 6 estimators at 1e6 rows  {bench_bootstrap():.2f} s")


if __name__ == "__main__":
    main()
